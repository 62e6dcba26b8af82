"""redis instrumentation against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from opentelemetry.trace import SpanKind, StatusCode

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented, span_attr

SECRET = "OTK-CANARY-REDIS-VALUE"


@pytest.fixture
def key() -> Iterator[str]:
    name = f"otelkit-test-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.delete(name, name + ":h", name + ":l")
    client.close()


def _redis_spans(t: Telemetry) -> list:
    return t.spans("redis")


def test_commands_are_client_spans_under_the_outer_span_without_values(redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with instrumented(instrument=["redis"]) as t:
        assert t.status("redis").state == "enabled"
        tracer = t.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer:
            client.set(key, SECRET)
            assert client.get(key) == SECRET.encode()
            client.hset(key + ":h", mapping={"field": SECRET})
        spans = _redis_spans(t)
        assert [s.name for s in spans] == ["SET", "GET", "HSET"]
        for span in spans:
            assert span.kind is SpanKind.CLIENT
            assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
            assert span.context.trace_id == outer.get_span_context().trace_id
            assert span_attr(span.attributes, "db.system.name") == "redis"
            assert span_attr(span.attributes, "server.address") == "127.0.0.1"
            assert span_attr(span.attributes, "server.port") == 6379
        assert span_attr(spans[0].attributes, "db.query.text") == "SET ? ?"
        assert span_attr(spans[1].attributes, "db.query.text") == "GET ?"
        for span in spans:
            assert SECRET not in repr(dict(span.attributes))
            assert key not in repr(dict(span.attributes))

        points = t.points(_names.DB_CLIENT_DURATION.name)
        operations = sorted(a["db.operation.name"] for a, _p, _u in points)
        assert operations == ["GET", "HSET", "SET"]
        for attributes, point, unit in points:
            assert unit == "s"
            assert point.count == 1
            assert attributes["db.system.name"] == "redis"
            assert attributes["server.address"] == "127.0.0.1"
            assert "error.type" not in attributes
    client.close()


def test_client_created_before_instrumentation_is_traced(redis_url: str, key: str) -> None:
    early = redis.Redis.from_url(redis_url)  # like a module-level client made at import time
    early.ping()
    with instrumented(instrument=["redis"]) as t:
        early.set(key, "v")
        assert [s.name for s in _redis_spans(t)] == ["SET"]
    early.close()


def test_command_error_is_recorded_on_span_and_metric(redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(key, "not a list")
    with instrumented(instrument=["redis"]) as t:
        with pytest.raises(redis.ResponseError):
            client.lpush(key, "x")  # WRONGTYPE
        (span,) = _redis_spans(t)
        assert span.status.status_code is StatusCode.ERROR
        assert any(e.name == "exception" for e in span.events)
        ((attributes, _point, _unit),) = t.points(_names.DB_CLIENT_DURATION.name)
        assert attributes["error.type"] == "ResponseError"
        assert attributes["db.operation.name"] == "LPUSH"
    client.close()


def test_refused_connection_is_an_error_span(key: str) -> None:
    from otelkit.testing._receiver import free_port

    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1, retry=None)
    with instrumented(instrument=["redis"]) as t:
        with pytest.raises(redis.ConnectionError):
            client.get(key)
        spans = _redis_spans(t)
        assert spans and spans[-1].status.status_code is StatusCode.ERROR
        errors = {a.get("error.type") for a, _p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
        assert "ConnectionError" in errors


def test_pipeline_is_one_span_and_one_measurement(redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with instrumented(instrument=["redis"]) as t:
        with client.pipeline() as pipe:
            pipe.set(key, SECRET).get(key).execute()
        (span,) = _redis_spans(t)
        assert SECRET not in repr(dict(span.attributes))
        ((attributes, _p, _u),) = t.points(_names.DB_CLIENT_DURATION.name)
        assert attributes["db.operation.name"] == "MULTI"
    client.close()


def test_per_client_instrumentation_on_top_of_global_gives_one_span(redis_url: str, key: str) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    client = redis.Redis.from_url(redis_url)
    with instrumented(instrument=["redis"]) as t:
        RedisInstrumentor.instrument_client(client, tracer_provider=t.tracer_provider)
        try:
            client.set(key, "v")
            with client.pipeline() as pipe:
                pipe.get(key).execute()
        finally:
            RedisInstrumentor.uninstrument_client(client)
        assert len(_redis_spans(t)) == 2
        assert sum(p.count for _a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)) == 2
    client.close()


def test_instrumenting_twice_gives_one_span(redis_url: str, key: str) -> None:
    from otelkit import _instrument
    from otelkit._config import resolve

    client = redis.Redis.from_url(redis_url)
    with instrumented(instrument=["redis"]) as t:
        again = _instrument.instrument_all(resolve(instrument=["redis"], system_metrics=False),
                                           t.tracer_provider, t.meter_provider)
        assert [s for s in again if s.name == "redis"][0].state == "enabled"
        client.set(key, "v")
        assert len(_redis_spans(t)) == 1
        assert sum(p.count for _a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)) == 1
    client.close()


def test_asyncio_client(redis_url: str, key: str) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            await client.set(key, SECRET)
            assert await client.get(key) == SECRET.encode()
            async with client.pipeline() as pipe:
                await pipe.get(key).execute()
        finally:
            # redis 5.0.0 (the extra's floor) has close() only; aclose() arrived in 5.0.1
            await (client.aclose() if hasattr(client, "aclose") else client.close())

    with instrumented(instrument=["redis"]) as t:
        tracer = t.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("outer") as outer:
            asyncio.run(run())
        spans = _redis_spans(t)
        assert [s.name for s in spans][:2] == ["SET", "GET"]
        assert len(spans) == 3
        assert all(s.parent is not None and s.parent.span_id == outer.get_span_context().span_id for s in spans)
        assert all(SECRET not in repr(dict(s.attributes)) for s in spans)
        assert sum(p.count for _a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)) == 3


def test_uninstrument_stops_tracing(redis_url: str, key: str) -> None:
    client = redis.Redis.from_url(redis_url)
    with instrumented(instrument=["redis"]) as t:
        pass
    client.set(key, "v")
    assert _redis_spans(t) == []
    assert not getattr(redis.Redis.execute_command, "__wrapped__", None)
    client.close()
