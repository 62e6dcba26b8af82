"""Async clients created (and already used) BEFORE ``otelkit.init()`` are traced after it.

Real parts: ``httpx.AsyncClient`` against a local ``http.server`` on a free port, ``redis.asyncio.Redis``
against the real Redis on 127.0.0.1:6379. Each client opens its connection before ``init()`` (so the
connection pool predates the instrumentation), then ``init()`` runs through
``otelkit.testing.capture_telemetry`` and every later request yields exactly one CLIENT span.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis.asyncio
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from otelkit.testing import capture_telemetry
from tests.integration.instrument_support import http_server, span_attr

SECRET = "otk-async-secret-value"


pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def _client_spans(spans: object, scope_suffix: str) -> list:
    return [s for s in spans  # type: ignore[attr-defined]
            if s.instrumentation_scope is not None and s.instrumentation_scope.name.endswith(scope_suffix)]


def test_httpx_async_client_created_before_init_is_traced() -> None:
    async def scenario(base: str) -> None:
        client = httpx.AsyncClient()
        try:
            assert (await client.get(base + "/warmup")).status_code == 200  # pool connection opened pre-init
            with capture_telemetry(instrument=["httpx"]) as cap:
                with trace.get_tracer("test").start_as_current_span("outer") as outer:
                    response = await client.get(base + "/items?page=2")
                assert response.status_code == 200
                spans = _client_spans(cap.spans, "httpx")
                assert len(spans) == 1, cap.spans.tree()
                (span,) = spans
                assert span.kind is SpanKind.CLIENT
                assert span.name == "GET"
                assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
                assert span.attributes["http.request.method"] == "GET"
                assert span.attributes["http.response.status_code"] == 200
                assert span.attributes["url.full"] == base + "/items?page=2"
                assert span_attr(span.attributes, "server.address") == "127.0.0.1"
                assert span_attr(span.attributes, "server.port") == int(base.rsplit(":", 1)[1])
                # the pre-init client propagates the trace to the server
                assert seen[-1]["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
                assert "traceparent" not in seen[0]  # the warm-up request was not instrumented
        finally:
            await client.aclose()

    with http_server() as (base, seen):
        asyncio.run(scenario(base))


def test_redis_asyncio_client_created_before_init_is_traced(redis_url: str) -> None:
    key = f"otelkit-async-preinit-{uuid.uuid4().hex}"

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            assert await client.ping()  # pool connection opened pre-init
            with capture_telemetry(instrument=["redis"]) as cap:
                with trace.get_tracer("test").start_as_current_span("outer") as outer:
                    await client.set(key, SECRET, ex=60)
                    assert await client.get(key) == SECRET.encode()
                spans = _client_spans(cap.spans, "redis")
                assert [s.name for s in spans] == ["SET", "GET"], cap.spans.tree()
                for span in spans:
                    assert span.kind is SpanKind.CLIENT
                    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
                    assert span_attr(span.attributes, "db.system.name") == "redis"
                    assert span_attr(span.attributes, "server.address") == "127.0.0.1"
                    assert span_attr(span.attributes, "server.port") == 6379
                    assert SECRET not in repr(dict(span.attributes))
                assert span_attr(spans[0].attributes, "db.query.text") == "SET ? ? ? ?"
                assert span_attr(spans[1].attributes, "db.query.text") == "GET ?"
        finally:
            await client.delete(key)
            await client.aclose()

    asyncio.run(scenario())
