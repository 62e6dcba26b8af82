"""Django's one-layer middleware (otelkit/_instrument/_django_layer.py) and its fallback, in process.

The handler is driven through its WSGI / ASGI interface (what gunicorn / uvicorn call); the server tests
(test_instrument_servers.py) run the same under real servers.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest

django = pytest.importorskip("django")

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.utils.decorators import sync_and_async_middleware  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from otelkit import _correlation  # noqa: E402
from otelkit._instrument import _django_layer  # noqa: E402
from otelkit._instrument import django as otelkit_django  # noqa: E402
from tests.integration.instrument_support import instrumented  # noqa: E402

APP_MIDDLEWARE = f"{__name__}.remember"
SYNC_APP_MIDDLEWARE = f"{__name__}.remember_sync_only"
SEEN: list[tuple[bool, str | None]] = []


def _seen() -> None:
    SEEN.append((trace.get_current_span().get_span_context().is_valid, _correlation.get_correlation_id()))


@sync_and_async_middleware
def remember(get_response: Any) -> Any:
    """The application's own middleware (sync and async capable, as Django's own): what it sees of the request's
    span and correlation ID."""
    if iscoroutinefunction(get_response):
        async def amiddleware(request: HttpRequest) -> HttpResponse:
            _seen()
            return await get_response(request)  # type: ignore[no-any-return]

        return amiddleware

    def middleware(request: HttpRequest) -> HttpResponse:
        _seen()
        return get_response(request)  # type: ignore[no-any-return]

    return middleware


def remember_sync_only(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """A sync-only application middleware: under ASGI, the middleware before it runs sync, in a thread."""

    def middleware(request: HttpRequest) -> HttpResponse:
        _seen()
        return get_response(request)

    return middleware


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    return JsonResponse({"item": item_id, "id": _correlation.get_correlation_id()})


def boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("bad")


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"id": _correlation.get_correlation_id()})


def own_header(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("ok")
    response["X-Correlation-ID"] = "set-by-the-app"
    return response


async def async_item(request: HttpRequest, item_id: int) -> HttpResponse:
    """An async view: the correlation ID and span in it and in a task it creates."""

    async def in_task() -> tuple[str | None, bool]:
        return _correlation.get_correlation_id(), trace.get_current_span().get_span_context().is_valid

    task_id, task_span = await asyncio.create_task(in_task())
    return JsonResponse({"item": item_id, "id": _correlation.get_correlation_id(), "task": task_id,
                         "task_span": task_span})


FOREVER_STARTED: list[asyncio.Event] = []


async def forever(request: HttpRequest) -> HttpResponse:
    for started in FOREVER_STARTED:
        started.set()
    await asyncio.Event().wait()  # until the client disconnects: Django cancels the request's task
    raise AssertionError("unreachable")


urlpatterns = [path("items/<int:item_id>", item), path("boom", boom), path("healthz", health),
               path("own", own_header), path("async/<int:item_id>", async_item), path("forever", forever)]


@pytest.fixture(autouse=True)
def _django_settings() -> Iterator[None]:
    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test-only",
                           MIDDLEWARE=[APP_MIDDLEWARE], USE_TZ=True, INSTALLED_APPS=[], LOGGING_CONFIG=None)
        django.setup()
    if settings.ROOT_URLCONF != __name__:
        pytest.skip("Django is configured by another test module in this process")
    SEEN.clear()
    yield
    settings.MIDDLEWARE = [APP_MIDDLEWARE]


def wsgi_get(app: Any, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    """(status, headers by lower-case name, body) of a GET through the WSGI interface, as a server calls it."""
    target, _, query = url.partition("?")
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": target, "QUERY_STRING": query, "RAW_URI": url,
                               "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": io.StringIO(),
                               "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False,
                               "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1"}
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    got: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        got["status"] = int(status.split()[0])
        got["headers"] = {}
        for name, value in response_headers:
            got["headers"].setdefault(name.lower(), []).append(value)

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return got["status"], got["headers"], data


def asgi_get(app: Any, url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    """(status, headers by lower-case name, body) of a GET through the ASGI interface, as uvicorn calls it: the
    body, then the connection kept open until Django has responded (it listens for a disconnect meanwhile)."""
    target, _, query = url.partition("?")
    raw = [(b"host", b"testserver")] if "Host" not in (headers or {}) else []
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": target, "raw_path": target.encode(), "query_string": query.encode(), "root_path": "",
             "headers": raw, "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}
    incoming = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await asyncio.Event().wait()  # the client stays connected: Django cancels this when it has responded
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    got: dict[str, list[str]] = {}
    for name, value in start["headers"]:
        got.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], got, body


def test_one_layer_keeps_spans_metrics_errors_exclusions_and_correlation() -> None:
    """One SERVER span per traced request with the route, status and correlation ID, in one middleware; the
    application's middleware runs inside the span and the correlation scope; an error is on the span and in the
    metric's status; an excluded URL has no span but the correlation; an upstream baggage ID is adopted."""
    import json

    from django.core.wsgi import get_wsgi_application

    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        assert app._otelkit_django is otelkit_django.LAYER
        # the settings keep the contrib's path (its uninstrument removes it); the handler has otelkit's
        assert settings.MIDDLEWARE[0].endswith("otel_middleware._DjangoMiddleware")
        assert settings.MIDDLEWARE[1:] == [APP_MIDDLEWARE]
        status, headers, body = wsgi_get(app, "/items/7?token=QS", {"X-Correlation-ID": "dj-one-1"})
        assert status == 200 and headers["x-correlation-id"] == ["dj-one-1"]
        assert json.loads(body) == {"item": 7, "id": "dj-one-1"}
        assert SEEN == [(True, "dj-one-1")]
        assert trace.get_current_span() is trace.INVALID_SPAN and _correlation.get_correlation_id() is None
        assert wsgi_get(app, "/boom")[0] == 500
        status, headers, body = wsgi_get(app, "/healthz")
        assert status == 200 and headers["x-correlation-id"] == [json.loads(body)["id"]]  # excluded: an ID, no span
        assert SEEN[-1] == (False, json.loads(body)["id"])
        status, headers, body = wsgi_get(app, "/items/8", {"baggage": "correlation_id=up-8"})
        assert headers["x-correlation-id"] == ["up-8"] and json.loads(body)["id"] == "up-8"
        status, headers, _ = wsgi_get(app, "/own")
        assert headers["x-correlation-id"] == ["set-by-the-app"]
        spans = t.spans()
        assert [(s.name, s.kind) for s in spans] == [("GET items/<int:item_id>", SpanKind.SERVER),
                                                     ("GET boom", SpanKind.SERVER),
                                                     ("GET items/<int:item_id>", SpanKind.SERVER),
                                                     ("GET own", SpanKind.SERVER)]
        ok, err, up, own = spans
        assert ok.attributes is not None and err.attributes is not None and up.attributes is not None
        assert ok.attributes["http.route"] == "items/<int:item_id>"
        assert ok.attributes["http.request.method"] == "GET"
        assert ok.attributes["http.response.status_code"] == 200
        assert ok.attributes["otelkit.correlation_id"] == "dj-one-1"
        assert up.attributes["otelkit.correlation_id"] == "up-8"
        assert err.status.status_code is StatusCode.ERROR and err.attributes["http.response.status_code"] == 500
        assert [e.name for e in err.events] == ["exception"]
        points = t.points("http.server.request.duration")
        by_route = {(p[0].get("http.route"), p[0].get("http.response.status_code")): p[1].count for p in points}
        assert by_route == {("items/<int:item_id>", 200): 2, ("boom", 500): 1, ("own", 200): 1}
        active = t.points("http.server.active_requests")
        assert active and all(p[1].value == 0 for p in active)
    assert not any(path.startswith("otelkit") for path in settings.MIDDLEWARE)


def _assert_same_recording(layer: tuple[list[Any], list[Any]], contrib: tuple[list[Any], list[Any]]) -> None:
    """Span by span (events without their stack traces, which name different frames) and point by point."""
    for ours, theirs in zip(layer[0], contrib[0], strict=True):
        for recorded in (ours, theirs):
            recorded[5][:] = [(name, {k: v for k, v in attrs.items() if k != "exception.stacktrace"})
                              for name, attrs in recorded[5]]
        assert ours == theirs
    assert layer[1] == contrib[1]


def _recorded(app: Any, t: Any, get: Any = wsgi_get) -> tuple[list[Any], list[Any]]:
    for url in ("/items/7?token=QS", "/boom", "/healthz", "/items/8"):
        get(app, url, {"X-Correlation-ID": "same-1", "User-Agent": "ua", "baggage": "k=v", "X-Custom": "c"})
    status, headers, _ = get(app, "/items/9", {"Host": "bad host!", "X-Correlation-ID": "host-9"})
    assert status == 400 and headers["x-correlation-id"] == ["host-9"]  # Django's DisallowedHost response
    spans = [(s.name, s.kind, dict(s.attributes or {}), s.status.status_code, s.status.description,
              [(e.name, dict(e.attributes or {})) for e in s.events], s.parent is not None) for s in t.spans()]
    points = sorted((sorted(p[0].items()), p[2], getattr(p[1], "count", None), getattr(p[1], "value", None))
                    for name in ("http.server.request.duration", "http.server.active_requests")
                    for p in t.points(name))
    return spans, points


@pytest.mark.parametrize("capture", [False, True])
def test_the_layer_records_what_the_contrib_middleware_and_second_layer_record(
        monkeypatch: pytest.MonkeyPatch, capture: bool) -> None:
    """Span by span (name, kind, attributes, status, events) and point by point, the one layer and the
    fallback (the contrib middleware with otelkit's wrapper and request hook) record the same; also with
    request and response headers captured (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_*``)."""
    from django.core.wsgi import get_wsgi_application

    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Custom")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "Content-Type")

    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        assert app._otelkit_django is otelkit_django.LAYER
        layer = _recorded(app, t)
    monkeypatch.setattr(_django_layer, "usable", lambda request_hook: False)
    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        assert app._otelkit_django is True
        contrib = _recorded(app, t)
    assert len(layer[0]) == 3 and len(layer[1]) == 3
    first = layer[0][0][2]
    assert first["url.path"] == "/items/7" and "url.query" in first
    assert ("http.request.header.x_custom" in first and "http.response.header.content_type" in first) is capture
    _assert_same_recording(layer, contrib)


def test_a_request_inside_a_span_gets_a_child_not_a_second_server_span() -> None:
    """As the contrib: a request handled inside a span already (a handler called in-process) is an INTERNAL
    child of that span, in its trace; the correlation ID still reaches the app and the response."""
    from django.core.wsgi import get_wsgi_application

    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        with t.tracer_provider.get_tracer("test").start_as_current_span("outer") as outer:
            status, headers, _ = wsgi_get(app, "/items/3", {"X-Correlation-ID": "inner-3"})
        assert status == 200 and headers["x-correlation-id"] == ["inner-3"]
        inner = next(s for s in t.spans() if s.name == "GET items/<int:item_id>")
        assert inner.kind is SpanKind.INTERNAL and inner.parent is not None
        assert inner.parent.span_id == outer.get_span_context().span_id
        assert SEEN == [(True, "inner-3")]


def test_unexpected_contrib_shape_falls_back_to_the_contrib_middleware_and_the_edge(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the layer cannot reproduce the contrib's configuration, the handler keeps the contrib middleware and
    otelkit's second layer: still one span per request, the correlation ID on it, in the app and the header."""
    from django.core.wsgi import get_wsgi_application

    monkeypatch.setattr(_django_layer, "usable", lambda request_hook: False)
    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        assert app._otelkit_django is True
        status, headers, _ = wsgi_get(app, "/items/5", {"X-Correlation-ID": "fallback-5"})
        assert status == 200 and headers["x-correlation-id"] == ["fallback-5"]
        assert SEEN == [(True, "fallback-5")]
        (span,) = t.spans()
        assert span.name == "GET items/<int:item_id>" and span.attributes is not None
        assert span.attributes["otelkit.correlation_id"] == "fallback-5"
        assert span.attributes["http.route"] == "items/<int:item_id>"


def test_contrib_middleware_not_outermost_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION`` puts the contrib middleware after the app's: the layer would
    leave the app's middleware outside the correlation scope, so the handler keeps the second layer."""
    from django.core.wsgi import get_wsgi_application

    monkeypatch.setenv("OTEL_PYTHON_DJANGO_MIDDLEWARE_POSITION", "1")
    with instrumented(instrument=["django"]) as t:
        app = get_wsgi_application()
        assert app._otelkit_django is True
        status, headers, _ = wsgi_get(app, "/items/6", {"X-Correlation-ID": "pos-6"})
        assert status == 200 and headers["x-correlation-id"] == ["pos-6"]
        assert SEEN == [(False, "pos-6")]  # the app's middleware is outside the span, inside the scope
        (span,) = t.spans()
        assert span.attributes is not None and span.attributes["otelkit.correlation_id"] == "pos-6"


def _layer_instance(app: Any) -> Any:
    """The handler's OtelkitDjangoMiddleware (its process_view is in the handler's view middleware)."""
    (layer,) = [m.__self__ for m in app._view_middleware
                if isinstance(getattr(m, "__self__", None), _django_layer.OtelkitDjangoMiddleware)]
    return layer


@pytest.mark.parametrize("app_middleware", [APP_MIDDLEWARE, SYNC_APP_MIDDLEWARE])
def test_asgi_requests_take_the_one_layer(app_middleware: str) -> None:
    """Under ASGI (uvicorn) the layer does the edge and the contrib's ASGI-request work in one middleware: async
    before an async-capable middleware (no thread for it or its process_view), sync before a sync-only one. The
    span, route, status, error and correlation ID; the app's middleware, an async view and a task it creates
    inside the span and the correlation scope; an excluded URL with the ID and no span; the header; an upstream
    baggage ID adopted; Django's DisallowedHost response with the header; nothing left attached after."""
    import json

    from django.core.asgi import get_asgi_application

    settings.MIDDLEWARE = [app_middleware]
    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert app._otelkit_django is otelkit_django.LAYER
        layer = _layer_instance(app)
        assert layer._async is (app_middleware == APP_MIDDLEWARE)
        # async: its own coroutine process_view, awaited as is; sync: Django's sync_to_async of the sync one
        assert (app._view_middleware[0] == layer._process_view_async) is layer._async
        status, headers, body = asgi_get(app, "/items/9?token=QS", {"X-Correlation-ID": "asgi-9"})
        assert status == 200 and headers["x-correlation-id"] == ["asgi-9"]  # once: the wrapper left it to the layer
        assert json.loads(body) == {"item": 9, "id": "asgi-9"}
        assert SEEN == [(True, "asgi-9")]
        status, headers, body = asgi_get(app, "/async/3", {"X-Correlation-ID": "async-3"})
        assert status == 200 and headers["x-correlation-id"] == ["async-3"]
        assert json.loads(body) == {"item": 3, "id": "async-3", "task": "async-3", "task_span": True}
        assert asgi_get(app, "/boom", {"X-Correlation-ID": "boom-1"})[0] == 500
        status, headers, body = asgi_get(app, "/healthz")
        assert status == 200 and headers["x-correlation-id"] == [json.loads(body)["id"]]  # excluded: an ID, no span
        assert SEEN[-1] == (False, json.loads(body)["id"])
        status, headers, body = asgi_get(app, "/items/8", {"baggage": "correlation_id=up-8"})
        assert headers["x-correlation-id"] == ["up-8"] and json.loads(body)["id"] == "up-8"
        assert asgi_get(app, "/own")[1]["x-correlation-id"] == ["set-by-the-app"]
        status, headers, _ = asgi_get(app, "/items/1", {"Host": "bad host!", "X-Correlation-ID": "host-1"})
        assert status == 400 and headers["x-correlation-id"] == ["host-1"]
        assert trace.get_current_span() is trace.INVALID_SPAN and _correlation.get_correlation_id() is None
        spans = t.spans()
        assert [(s.name, s.kind) for s in spans] == [("GET items/<int:item_id>", SpanKind.SERVER),
                                                     ("GET async/<int:item_id>", SpanKind.SERVER),
                                                     ("GET boom", SpanKind.SERVER),
                                                     ("GET items/<int:item_id>", SpanKind.SERVER),
                                                     ("GET own", SpanKind.SERVER)]
        ok, in_async, err, up, _own = spans
        assert ok.attributes is not None and err.attributes is not None and up.attributes is not None
        assert in_async.attributes is not None
        assert ok.attributes["http.route"] == "items/<int:item_id>" and ok.attributes["url.query"] == "token=QS"
        assert ok.attributes["http.response.status_code"] == 200 and ok.attributes["client.address"] == "127.0.0.1"
        assert ok.attributes["otelkit.correlation_id"] == "asgi-9"
        assert in_async.attributes["otelkit.correlation_id"] == "async-3"
        assert up.attributes["otelkit.correlation_id"] == "up-8"
        assert err.status.status_code is StatusCode.ERROR and err.attributes["http.response.status_code"] == 500
        assert [e.name for e in err.events] == ["exception"]
        points = t.points("http.server.request.duration")
        by_route = {(p[0].get("http.route"), p[0].get("http.response.status_code")): p[1].count for p in points}
        assert by_route == {("items/<int:item_id>", 200): 2, ("async/<int:item_id>", 200): 1, ("boom", 500): 1,
                            ("own", 200): 1}
        active = t.points("http.server.active_requests")
        assert active and all(p[1].value == 0 for p in active)


@pytest.mark.parametrize(("app_middleware", "capture"), [(APP_MIDDLEWARE, False), (APP_MIDDLEWARE, True),
                                                         (SYNC_APP_MIDDLEWARE, False)])
def test_the_asgi_layer_records_what_the_contrib_middleware_and_second_layer_record(
        monkeypatch: pytest.MonkeyPatch, app_middleware: str, capture: bool) -> None:
    """Under ASGI too, span by span and point by point, the one layer (async, or sync before a sync-only
    middleware) and the fallback (the contrib middleware with otelkit's ASGI wrapper and request hook) record the
    same, also with request and response headers captured."""
    from django.core.asgi import get_asgi_application

    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Custom")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "Content-Type")
    settings.MIDDLEWARE = [app_middleware]
    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert app._otelkit_django is otelkit_django.LAYER
        layer = _recorded(app, t, asgi_get)
    monkeypatch.setattr(_django_layer, "usable", lambda request_hook: False)
    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert app._otelkit_django is True
        contrib = _recorded(app, t, asgi_get)
    assert len(layer[0]) == 3 and len(layer[1]) == 3
    first = layer[0][0][2]
    assert first["url.path"] == "/items/7" and first["url.query"] == "token=QS" and "client.port" in first
    assert ("http.request.header.x_custom" in first and "http.response.header.content_type" in first) is capture
    _assert_same_recording(layer, contrib)


def test_asgi_requests_without_the_layer_take_the_contrib_path_with_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the layer cannot be used, ASGI requests take the contrib middleware with the ASGI handler wrapper
    doing the edge: one SERVER span with the route and correlation ID, and the header (once)."""
    from django.core.asgi import get_asgi_application

    monkeypatch.setattr(_django_layer, "usable", lambda request_hook: False)
    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert app._otelkit_django is True
        status, headers, _ = asgi_get(app, "/items/9", {"X-Correlation-ID": "asgi-9"})
        assert status == 200 and headers["x-correlation-id"] == ["asgi-9"]
        assert SEEN == [(True, "asgi-9")]
        (span,) = t.spans()
        assert span.name == "GET items/<int:item_id>" and span.kind is SpanKind.SERVER
        assert span.attributes is not None and span.attributes["http.route"] == "items/<int:item_id>"
        assert span.attributes["otelkit.correlation_id"] == "asgi-9"


def test_an_asgi_layer_built_before_uninstrument_takes_the_contrib_path_after_it() -> None:
    """uninstrument() stops the edge of a handler built while instrumented; its (async) middleware then runs the
    contrib's own methods, which still trace, as the contrib middleware left in a built handler does."""
    from django.core.asgi import get_asgi_application

    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert _layer_instance(app)._async
        otelkit_django.uninstrument()
        status, headers, _ = asgi_get(app, "/items/2", {"X-Correlation-ID": "after-2"})
        assert status == 200 and "x-correlation-id" not in headers
        assert SEEN == [(True, None)]
        (span,) = t.spans()
        assert span.name == "GET items/<int:item_id>" and span.attributes is not None
        assert span.attributes["http.route"] == "items/<int:item_id>"
        assert "otelkit.correlation_id" not in span.attributes
        assert trace.get_current_span() is trace.INVALID_SPAN


def test_asgi_client_disconnect_ends_the_span_without_a_response() -> None:
    """A client gone before the response: Django cancels the request's task; the span ends there, with no status
    code and no duration point (no response happened), the active-requests count goes back to 0, and nothing is
    left attached."""
    from django.core.asgi import get_asgi_application

    with instrumented(instrument=["django"]) as t:
        app = get_asgi_application()
        assert _layer_instance(app)._async
        incoming = [{"type": "http.disconnect"}, {"type": "http.request", "body": b"", "more_body": False}]
        sent: list[dict[str, Any]] = []

        started = asyncio.Event()
        FOREVER_STARTED[:] = [started]

        async def receive() -> dict[str, Any]:
            if len(incoming) == 1:  # the disconnect once the view is waiting
                await asyncio.wait_for(started.wait(), 60)
            return incoming.pop()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/forever", "raw_path": b"/forever", "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"x-correlation-id", b"gone-1")],
                 "client": ("127.0.0.1", 40000), "server": ("testserver", 80)}
        asyncio.run(app(scope, receive, send))
        assert sent == [] and SEEN == [(True, "gone-1")]
        (span,) = t.spans()
        assert span.name == "GET forever" and span.end_time is not None and span.attributes is not None
        assert "http.response.status_code" not in span.attributes
        assert span.attributes["otelkit.correlation_id"] == "gone-1"
        assert t.points("http.server.request.duration") == []
        active = t.points("http.server.active_requests")
        assert active and all(p[1].value == 0 for p in active)
        assert trace.get_current_span() is trace.INVALID_SPAN and _correlation.get_correlation_id() is None


def test_django_async_test_client_gets_the_edge_through_the_layer() -> None:
    """Django's ``AsyncClient`` builds its own async handler (not an ``ASGIHandler``): with the layer its ASGI
    requests get the correlation too, into an async view and its task."""
    from django.test import AsyncClient

    async def get() -> Any:
        return await AsyncClient().get("/async/4", headers={"X-Correlation-ID": "aclient-4"})

    with instrumented(instrument=["django"]) as t:
        r = asyncio.run(get())
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "aclient-4"
        assert r.json() == {"item": 4, "id": "aclient-4", "task": "aclient-4", "task_span": True}
        (span,) = t.spans()
        assert span.attributes is not None and span.attributes["otelkit.correlation_id"] == "aclient-4"


def test_django_test_client_gets_the_edge_through_the_layer() -> None:
    """Django's test ``Client`` builds its own handler (not a ``WSGIHandler``, whose ``__call__`` otelkit wraps):
    with the layer its requests get the correlation too (before: the span alone, no ID, no header)."""
    from django.test import Client

    with instrumented(instrument=["django"]) as t:
        r = Client().get("/items/4", HTTP_X_CORRELATION_ID="client-4")
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "client-4"
        assert r.json() == {"item": 4, "id": "client-4"}
        (span,) = t.spans()
        assert span.attributes is not None and span.attributes["otelkit.correlation_id"] == "client-4"
