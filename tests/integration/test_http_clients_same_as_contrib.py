"""requests and aiohttp-client: otelkit's leaner helpers record what the contrib instrumentation alone records.

otelkit replaces upstream's per-request helpers (URL parses and duration attribute sets cached, context
managers as classes, the histogram through ``_compat.record_point``). The same requests (two hosts, two
ports, 200 and 500 answers, a refused connection, a method other than GET) are sent once under otelkit and
once under the contrib instrumentor alone: the spans (name, kind, scope, status, attributes, events) and the
duration points (attribute sets and counts) must be the same, so no cached value of one URL reaches another
request's span or point. The URLs carry no secret, so otelkit's URL rules leave them as upstream does.
"""

from __future__ import annotations

import asyncio
import http.server
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit import _names
from otelkit._instrument import _http_clients
from otelkit.testing._receiver import free_port
from tests.integration.instrument_support import Telemetry, instrumented, serve_http


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        status = 500 if "/fail" in self.path else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _two_servers() -> Iterator[list[str]]:
    with serve_http(_Handler) as (first, _seen1), serve_http(_Handler) as (second, _seen2):
        port = second.rsplit(":", 1)[1]
        yield [first + "/ok?page=1", first + "/ok?page=2", first + "/fail", f"http://localhost:{port}/ok",
               f"http://localhost:{port}/fail?x=1", first + "/ok?page=1", f"http://127.0.0.1:{free_port()}/refused"]


def _span_shape(span: ReadableSpan) -> tuple[Any, ...]:
    return (span.name, span.kind, span.instrumentation_scope.name if span.instrumentation_scope else None,
            span.status.status_code, span.status.description, sorted(dict(span.attributes or {}).items()),
            [(e.name, sorted((k, v) for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"))
             for e in span.events])


_HTTP_METRICS = (_names.HTTP_CLIENT_DURATION.name, "http.client.request.body.size", "http.client.response.body.size")


def _points(reader: InMemoryMetricReader) -> Counter[tuple[Any, ...]]:
    found: Counter[tuple[Any, ...]] = Counter()
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in _HTTP_METRICS:
                    for point in metric.data.data_points:
                        found[(sm.scope.name, metric.name, metric.unit,
                               tuple(sorted(point.attributes.items())))] += point.count
    return found


def _contrib_alone(instrumentor: Any, send: Callable[[], None]) -> tuple[list[tuple[Any, ...]], Counter[Any]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        send()
    finally:
        instrumentor.uninstrument()
    return [_span_shape(s) for s in exporter.get_finished_spans()], _points(reader)


def _otelkit(integration: str, send: Callable[[], None]) -> tuple[list[tuple[Any, ...]], Counter[Any]]:
    t: Telemetry
    with instrumented(instrument=[integration]) as t:
        assert t.status(integration).state == "enabled"
        send()
        send()  # the second time from the caches
        spans = [_span_shape(s) for s in t.spans()]
        points = _points(t.reader)
    half = len(spans) // 2
    assert spans[:half] == spans[half:]
    return spans[:half], Counter({key: count // 2 for key, count in points.items()})


def test_requests_same_spans_and_points_as_contrib() -> None:
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    with _two_servers() as urls:
        def send() -> None:
            with requests.Session() as session:
                for url in urls:
                    try:
                        session.get(url)
                    except requests.ConnectionError:
                        pass
                session.post(urls[0], data=b"x")
                session.request("delete", urls[3])  # a lower-case method: upstream's own sanitising

        ours = _otelkit("requests", send)
        theirs = _contrib_alone(RequestsInstrumentor(), send)
    assert len(ours[0]) == len(urls) + 2
    assert ours == theirs


def test_urllib3_same_spans_and_points_as_contrib() -> None:
    """Duration, request and response size points: upstream's three histograms through record_point."""
    import urllib3
    from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

    with _two_servers() as urls:
        def send() -> None:
            pool = urllib3.PoolManager()
            for url in urls:
                try:
                    pool.request("GET", url, retries=False)
                except urllib3.exceptions.HTTPError:
                    pass
            pool.request("POST", urls[0], body=b"xyz")
            pool.clear()

        def every_point(run: Callable[[], tuple[list[Any], Counter[Any]]]) -> tuple[list[Any], Counter[Any]]:
            return run()

        ours = every_point(lambda: _otelkit("urllib3", send))
        theirs = every_point(lambda: _contrib_alone(URLLib3Instrumentor(), send))
    assert len(ours[0]) == len(urls) + 1
    assert ours == theirs


def test_aiohttp_same_spans_and_points_as_contrib() -> None:
    import aiohttp
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    with _two_servers() as urls:
        def send() -> None:
            async def main() -> None:
                async with aiohttp.ClientSession() as session:
                    for url in urls:
                        try:
                            async with session.get(url) as response:
                                await response.read()
                        except aiohttp.ClientConnectionError:
                            pass
                    async with session.post(urls[0], data=b"x") as response:
                        await response.read()

            asyncio.run(main())

        ours = _otelkit("aiohttp-client", send)
        theirs = _contrib_alone(AioHttpClientInstrumentor(), send)
    assert len(ours[0]) == len(urls) + 1
    assert ours == theirs


def test_helpers_equal_upstream() -> None:
    """Each replacement returns what upstream's helper returns, cached or not."""
    from urllib.parse import urlparse

    from opentelemetry.util.http import detect_synthetic_user_agent, sanitize_method

    for url in ["http://a.example:8080/x?q=1", "https://b.example/y", "http://[::1]:9/z", "http://u:p@h/",
                "http://a.example:8080/x?q=1"]:
        found, expected = _http_clients._urlparse(url), urlparse(url)
        assert found == expected and (found.hostname, found.port) == (expected.hostname, expected.port)
    with pytest.raises(ValueError):
        _ = _http_clients._urlparse("http://h:99999/").port  # out of range: raised on every read, as upstream
    with pytest.raises(ValueError):
        _ = _http_clients._urlparse("http://h:99999/").port
    assert _http_clients._urlparse(b"http://h/") == urlparse(b"http://h/")
    lean_sanitize = _http_clients._sanitize_method_of(sanitize_method)
    for method in ["GET", "get", "Post", "FOO", "QUERY"]:
        assert lean_sanitize(method) == sanitize_method(method)
    lean_detect = _http_clients._synthetic_of(detect_synthetic_user_agent)
    for agent in ["python-requests/2.32", "Googlebot/2.1", "alwayson-test", "", None, "Googlebot/2.1"]:
        assert lean_detect(agent) == detect_synthetic_user_agent(agent)


def test_duration_attribute_sets_by_content() -> None:
    """The cached filtered set is shared by equal contents only: another status or host gets its own."""
    from opentelemetry.instrumentation._semconv import (
        _client_duration_attrs_new,
        _client_duration_attrs_old,
        _filter_semconv_duration_attrs,
        _StabilityMode,
    )

    lean = _http_clients._filter_duration_of(_filter_semconv_duration_attrs)
    base = {"http.request.method": "GET", "server.address": "a", "server.port": 80, "network.peer.address": "a"}
    ok = {**base, "http.response.status_code": 200}
    fail = {**base, "http.response.status_code": 500, "error.type": "500"}
    other_host = {**ok, "server.address": "b"}
    for mode in (_StabilityMode.HTTP, _StabilityMode.DEFAULT):
        results = []
        for attrs in (ok, fail, other_host, dict(ok)):
            found = lean(attrs, _client_duration_attrs_old, _client_duration_attrs_new, mode)
            assert found == _filter_semconv_duration_attrs(attrs, _client_duration_attrs_old,
                                                           _client_duration_attrs_new, mode)
            results.append(found)
        assert results[0] is results[3]  # the same content: the same dict (record_point remembers it)
        assert results[0] is not results[1] and results[0] is not results[2]
    unhashable = {**ok, "x": ["list"]}
    assert lean(unhashable, _client_duration_attrs_old, _client_duration_attrs_new, _StabilityMode.HTTP) == (
        _filter_semconv_duration_attrs(unhashable, _client_duration_attrs_old, _client_duration_attrs_new,
                                       _StabilityMode.HTTP))


def test_uninstrument_restores_upstream_helpers() -> None:
    import opentelemetry.instrumentation.aiohttp_client as aiohttp_contrib
    import opentelemetry.instrumentation.requests as requests_contrib
    from opentelemetry.instrumentation._semconv import _filter_semconv_duration_attrs

    names = ("urlparse", "_filter_semconv_duration_attrs", "suppress_http_instrumentation")
    before = {name: getattr(requests_contrib, name) for name in names}
    with instrumented(instrument=["requests", "aiohttp-client"]):
        assert requests_contrib._filter_semconv_duration_attrs is not _filter_semconv_duration_attrs
        assert aiohttp_contrib._filter_semconv_duration_attrs is not _filter_semconv_duration_attrs
        assert hasattr(aiohttp_contrib.create_trace_config, "_otelkit_original")
    assert {name: getattr(requests_contrib, name) for name in names} == before
    assert aiohttp_contrib._filter_semconv_duration_attrs is _filter_semconv_duration_attrs
    assert not hasattr(aiohttp_contrib.create_trace_config, "_otelkit_original")


@pytest.mark.parametrize("capture", [False, True], ids=["no-headers", "captured-headers"])
def test_httpx_same_spans_as_contrib(capture: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx: otelkit's spans (upstream's, with leaner helpers) are contrib's; its own duration metric is tested in
    test_instrument_httpx. Also with an explicit transport and a client created twice (new URL objects), and with
    every header captured (the headers are normalised by upstream's function then, at either of its shapes)."""
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    with _two_servers() as urls:
        def send() -> None:
            for client in (httpx.Client(), httpx.Client(transport=httpx.HTTPTransport())):
                with client:
                    for url in urls:
                        try:
                            client.get(url, headers={"x-n": url})
                        except httpx.ConnectError:
                            pass
                    client.post(urls[0], content=b"x")
                    client.request("delete", urls[3])

        def spans_only(run: Callable[[], tuple[list[Any], Counter[Any]]]) -> list[Any]:
            return run()[0]

        if capture:  # read by upstream at instrument(); not the response's Date (the two runs' differ)
            monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
            monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", "content-length")
        ours = spans_only(lambda: _otelkit("httpx", send))
        theirs = spans_only(lambda: _contrib_alone(HTTPXClientInstrumentor(), send))
    assert len(ours) == 2 * (len(urls) + 2)
    assert ours == theirs
    captured = {k for shape in ours for k, _v in shape[5] if k.startswith(("http.request.header.x_n",
                                                                          "http.response.header.content_length"))}
    assert len(captured) == (2 if capture else 0)


def test_httpx_cached_span_attributes_follow_the_scrubbing_rules() -> None:
    """The span attributes cached per URL are keyed on the scrubbing rules: turned off, the same URL is not
    reported with the earlier redaction (nor, turned back on, without it)."""
    import httpx

    from otelkit import _scrub

    with _two_servers() as urls, instrumented(instrument=["httpx"]) as t, httpx.Client() as client:
        url = urls[0] + "&token=OTK-CANARY-HTTPX"
        client.get(url)
        _scrub.configure(False, ())
        try:
            client.get(url)
        finally:
            _scrub.configure(True, ())
        client.get(url)
        first, off, again = (s.attributes["url.full"] for s in t.spans())
    assert "OTK-CANARY-HTTPX" not in first and first == again
    assert off == url  # upstream's own rules keep a "token" query value


def _parameter_names(function: Any) -> list[tuple[str, Any]]:
    import inspect

    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


def test_every_installed_replacement_takes_upstreams_parameters() -> None:
    """At the installed contrib release, each helper otelkit put in a contrib module takes the parameters of the
    upstream helper it stands in for (contrib calls it with those), and each one it did not put there is upstream's.
    (httpx 0.61b0's helpers take no ``module``: a replacement taking it broke every request there.)"""
    import aiohttp  # noqa: F401  (the lazy integrations instrument when their library is imported)
    import requests  # noqa: F401
    import urllib3  # noqa: F401

    from otelkit._instrument import aiohttp_client, httpx
    from otelkit._instrument import requests as requests_integration
    from otelkit._instrument import urllib3 as urllib3_integration

    integrations = (httpx, requests_integration, aiohttp_client, urllib3_integration)
    with instrumented(instrument=[i.NAME for i in integrations]) as t:
        for integration in integrations:
            assert t.status(integration.NAME).state == "enabled"
            contrib = __import__(integration.SCOPE, fromlist=["_"])
            replaced = integration._state.get("helpers", {})
            assert replaced, integration.NAME  # at least the helpers every release shares
            for name, upstream in replaced.items():
                current = getattr(contrib, name)
                assert current is not upstream
                assert _parameter_names(current) == _parameter_names(upstream), (integration.NAME, name)
            own = httpx._HTTPX_HELPERS if integration is httpx else {}
            for name in set(own) - set(replaced):
                assert not getattr(getattr(contrib, name), "__module__", "").startswith("otelkit"), name


def test_a_replacement_with_other_parameters_is_not_installed() -> None:
    """A contrib release whose helper takes other parameters keeps it; a helper that needs another's replacement
    is put back when that one was not replaced."""
    import types

    def upstream_two(args: Any, kwargs: Any) -> str:
        return "upstream"

    def upstream_one(headers: Any) -> str:
        return "upstream"

    def make_three(_original: Any) -> Any:
        def replacement(args: Any, kwargs: Any, module: Any) -> str:
            return "lean"
        return replacement

    def make_same(_original: Any) -> Any:
        def replacement(headers: Any) -> str:
            return "lean"
        return replacement

    contrib = types.ModuleType("fake_contrib")
    contrib._extract = upstream_two  # type: ignore[attr-defined]
    contrib._normalize = upstream_one  # type: ignore[attr-defined]
    contrib._headers = upstream_one  # type: ignore[attr-defined]
    state: dict[str, Any] = {}
    _http_clients.lean_helpers(contrib, state, {"_extract": make_three, "_normalize": make_same},
                               {"_normalize": "_extract"})
    assert contrib._extract is upstream_two and contrib._normalize is upstream_one  # type: ignore[attr-defined]
    assert state["helpers"] == {}
    _http_clients.lean_helpers(contrib, state, {"_headers": make_same})
    assert contrib._headers((),) == "lean"  # type: ignore[attr-defined]
    _http_clients.restore_helpers(contrib, state)
    assert contrib._headers is upstream_one  # type: ignore[attr-defined]


_CAPTURE_ALL = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"  # upstream's switch: every method as is


def test_sanitize_method_knows_what_upstream_knows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The known methods are upstream's own at each release (0.61b0 has no QUERY), and nothing is learnt while
    upstream's capture-all switch is set (it would make every method look known)."""
    def without_query(method: Any) -> Any:  # 0.61b0's list
        import os

        if method is None:
            return None
        method = method.upper()
        known = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
        return method if os.environ.get(_CAPTURE_ALL) or method in known else "_OTHER"

    lean = _http_clients._sanitize_method_of(without_query)
    for method in ["GET", "QUERY", "query", "FOO", None]:
        assert lean(method) == without_query(method)
    monkeypatch.setenv(_CAPTURE_ALL, "true")
    learnt_meanwhile = _http_clients._sanitize_method_of(without_query)
    monkeypatch.delenv(_CAPTURE_ALL)
    for method in ["GET", "QUERY", "FOO"]:
        assert learnt_meanwhile(method) == without_query(method)
