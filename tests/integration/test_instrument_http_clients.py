"""requests and urllib3 instrumentation against a local http.server on a free port.

One span per request when requests runs over urllib3 (the outermost client wins), scrubbed URLs,
``http.client.request.duration`` and the trace context + correlation ID in the outgoing headers.
"""

from __future__ import annotations

import http.server
from contextlib import AbstractContextManager

import pytest
import requests
import urllib3
from opentelemetry.trace import SpanKind, StatusCode

from otelkit import _names
from otelkit._correlation import correlate
from otelkit.testing._receiver import free_port
from tests.integration.instrument_support import Telemetry, instrumented, serve_http


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/fail`` answers 500, anything else 200; records ``traceparent`` and every ``baggage`` header joined
    (sentry-sdk's stdlib integration, once some code in this process initialised it, adds its own)."""

    def do_GET(self) -> None:
        self.server.seen.append({"traceparent": self.headers.get("traceparent", ""),  # type: ignore[attr-defined]
                                 "baggage": ",".join(self.headers.get_all("baggage") or [])})
        status = 500 if "/fail" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def http_server() -> AbstractContextManager[tuple[str, list[dict[str, str]]]]:
    return serve_http(_Handler)

CLIENTS = ["requests", "urllib3"]


def _points(t: Telemetry) -> list:
    return t.points(_names.HTTP_CLIENT_DURATION.name)


def _client_spans(t: Telemetry) -> list:
    return [s for s in t.spans() if s.kind is SpanKind.CLIENT]


def test_requests_one_span_over_urllib3_scrubbed_metric_and_correlation() -> None:
    with http_server() as (base, seen), instrumented(instrument=CLIENTS) as t:
        assert t.status("requests").state == "enabled" and t.status("urllib3").state == "enabled"
        tracer = t.tracer_provider.get_tracer("test")
        with requests.Session() as session, tracer.start_as_current_span("outer") as outer, \
                correlate("order-42") as cid:
            response = session.get(base + "/ok?page=2&api_key=OTK-CANARY-KEY")
            assert response.status_code == 200
        (span,) = _client_spans(t)  # not a second urllib3 span under it
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.requests"
        assert span.name == "GET"
        assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
        url = span.attributes["url.full"]
        assert "OTK-CANARY-KEY" not in url and url.startswith(base + "/ok?page=2&api_key=")
        assert span.attributes["http.response.status_code"] == 200
        headers = seen[0]
        assert headers["traceparent"].split("-")[2] == format(span.context.span_id, "016x")
        assert f"correlation_id={cid}" in headers["baggage"]
        points = _points(t)
        assert sum(p.count for _a, p, _u in points) == 1  # one duration point: urllib3 stepped aside
        ((attributes, _point, unit),) = points
        assert unit == "s"
        assert attributes["http.request.method"] == "GET"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["http.response.status_code"] == 200


def test_requests_failure_without_response_is_recorded() -> None:
    with instrumented(instrument=CLIENTS) as t:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{free_port()}/x?token=OTK-CANARY-TOKEN", timeout=5)
        (span,) = _client_spans(t)
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "ConnectionError"
        assert "OTK-CANARY-TOKEN" not in span.attributes["url.full"]
        ((attributes, _point, _unit),) = _points(t)
        assert attributes["error.type"] == "ConnectionError"


def test_urllib3_alone_span_metric_scrubbing_and_correlation() -> None:
    pool = urllib3.PoolManager()  # made before init(): the class is patched, so it is traced
    with http_server() as (base, seen), instrumented(instrument=CLIENTS) as t:
        with correlate("batch-7"):
            response = pool.request("GET", base + "/fail?password=OTK-CANARY-PW")
        assert response.status == 500
        (span,) = _client_spans(t)
        assert span.instrumentation_scope.name == "opentelemetry.instrumentation.urllib3"
        assert "OTK-CANARY-PW" not in span.attributes["url.full"]
        assert span.status.status_code is StatusCode.ERROR
        assert "correlation_id=batch-7" in seen[0]["baggage"]
        ((attributes, point, _unit),) = _points(t)
        assert point.count == 1 and attributes["http.response.status_code"] == 500


def test_disabled_and_uninstrumented_leave_no_spans() -> None:
    with http_server() as (base, _seen):
        with instrumented(instrument=["requests"]) as t:
            assert t.status("urllib3").state == "disabled"
            urllib3.PoolManager().request("GET", base + "/a")
            assert _client_spans(t) == []
            requests.get(base + "/b", timeout=5)
            assert len(_client_spans(t)) == 1
        with instrumented(instrument=["httpx"]) as t:  # requests uninstrumented again
            requests.get(base + "/c", timeout=5)
            assert _client_spans(t) == []


def test_aiohttp_sessions_created_before_init_are_traced() -> None:
    """A session made before init() (and one given its own trace config list) gets upstream's trace config once."""
    import asyncio

    import aiohttp

    async def main(base: str, seen: list[dict[str, str]]) -> None:
        own_configs = [aiohttp.TraceConfig()]
        early = aiohttp.ClientSession()
        early_own = aiohttp.ClientSession(trace_configs=own_configs)
        try:
            with instrumented(instrument=["aiohttp-client"]) as t:
                assert "before init() are traced" in t.status("aiohttp-client").reason
                with correlate("aio-pre"):
                    for session in (early, early, early_own):
                        async with session.get(base + "/pre?access_token=OTK-CANARY-AIOPRE") as response:
                            assert response.status == 200
                spans = _client_spans(t)
                assert len(spans) == 3  # one per request: the second request does not add a second config
                assert all("OTK-CANARY-AIOPRE" not in s.attributes["url.full"] for s in spans)
                assert all("correlation_id=aio-pre" in h["baggage"] for h in seen)
                assert [h["traceparent"].split("-")[2] for h in seen] == [
                    format(s.context.span_id, "016x") for s in spans]
                assert sum(p.count for _a, p, _u in _points(t)) == 3
                assert len(own_configs) == 1  # the application's list is not changed
            assert not hasattr(aiohttp.ClientSession._request, "_otelkit_original")  # restored
        finally:
            await early.close()
            await early_own.close()

    with http_server() as (base, seen):
        asyncio.run(main(base, seen))


def test_aiohttp_client_span_metric_scrubbing_and_correlation() -> None:
    import asyncio

    import aiohttp

    async def main(base: str) -> None:
        async with aiohttp.ClientSession() as session:
            with correlate("aio-1"):
                async with session.get(base + "/ok?access_token=OTK-CANARY-AIO") as response:
                    assert response.status == 200
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"http://127.0.0.1:{free_port()}/x")

    with http_server() as (base, seen), instrumented(instrument=["aiohttp-client", *CLIENTS]) as t:
        assert "before init()" in t.status("aiohttp-client").reason
        asyncio.run(main(base))
        ok, refused = _client_spans(t)
        assert ok.instrumentation_scope.name == "opentelemetry.instrumentation.aiohttp_client"
        assert "OTK-CANARY-AIO" not in ok.attributes["url.full"]
        assert ok.attributes["http.response.status_code"] == 200
        assert refused.status.status_code is StatusCode.ERROR
        assert "correlation_id=aio-1" in seen[0]["baggage"]
        assert seen[0]["traceparent"].split("-")[2] == format(ok.context.span_id, "016x")
        points = {a.get("error.type"): p.count for a, p, _u in _points(t)}
        assert points[None] == 1 and sum(points.values()) == 2  # the refused request is recorded too
