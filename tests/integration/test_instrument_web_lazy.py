"""The web-framework integrations: nothing imported by init(), statuses, the edge's header handling, re-init."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from otelkit._instrument import _web

_PROBE = r"""
import json, sys
import otelkit
otelkit.init(service_name="x", system_metrics=False, traces_exporter="none", metrics_exporter="none",
             logs_exporter="none")
frameworks = sorted(m for m in ("fastapi", "starlette", "flask", "django", "opentelemetry.instrumentation.fastapi",
                                "opentelemetry.instrumentation.flask", "opentelemetry.instrumentation.django",
                                "opentelemetry.instrumentation.asgi") if m in sys.modules)
status = {s.name: [s.state, s.reason] for s in otelkit.integration_status()}
import flask  # imported after init(): patched then
app = flask.Flask("probe")
@app.route("/items/<int:i>")
def item(i):
    return otelkit.correlation_id() or ""
client = app.test_client()
echo = client.get("/items/1", headers={"X-Correlation-ID": "lazy-1"}).get_data(as_text=True)
header = client.get("/items/2", headers={"X-Correlation-ID": "lazy-2"}).headers["X-Correlation-ID"]
print(json.dumps({"loaded": frameworks, "status": status, "echo": echo, "header": header}))
"""


def test_init_imports_no_framework_and_patches_one_imported_later() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    for name in ("fastapi", "starlette", "flask", "django"):
        state, reason = result["status"][name]
        assert state == "enabled", (name, reason)
        assert "instrumented when imported" in reason
    assert result["echo"] == "lazy-1" and result["header"] == "lazy-2"


_ASGI_ONLY_DJANGO = r"""
import asyncio, json, sys
import otelkit
otelkit.init(service_name="x", system_metrics=False, traces_exporter="none", metrics_exporter="none",
             logs_exporter="none", instrument=["django"])
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path
settings.configure(ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="x", MIDDLEWARE=[], INSTALLED_APPS=[],
                   LOGGING_CONFIG=None)
django.setup()
urlpatterns = [path("items/<int:i>", lambda request, i: HttpResponse(otelkit.correlation_id() or ""))]
from django.core.asgi import get_asgi_application  # what asgi.py does: the WSGI handler is never imported
app = get_asgi_application()
sent = []
async def receive():
    if not sent:
        sent.append(None)
        return {"type": "http.request", "body": b"", "more_body": False}
    await asyncio.Event().wait()
async def send(message):
    sent.append(message)
scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
         "path": "/items/1", "raw_path": b"/items/1", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"x"), (b"x-correlation-id", b"asgi-only-1")], "client": ("127.0.0.1", 1),
         "server": ("x", 80)}
asyncio.run(app(scope, receive, send))
start = next(m for m in sent[1:] if m["type"] == "http.response.start")
body = b"".join(m.get("body", b"") for m in sent[1:] if m["type"] == "http.response.body")
print(json.dumps({"wsgi": "django.core.handlers.wsgi" in sys.modules, "layer": app._otelkit_django,
                  "headers": [[k.decode().lower(), v.decode()] for k, v in start["headers"]], "body": body.decode()}))
"""


def test_asgi_only_django_project_is_instrumented() -> None:
    """A project served by uvicorn imports only Django's ASGI handler: it is instrumented all the same (before,
    otelkit patched Django when its WSGI handler was imported, so such a project got no span, ID or header)."""
    proc = subprocess.run([sys.executable, "-c", _ASGI_ONLY_DJANGO], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["wsgi"] is False and result["layer"] == "one layer"
    assert ["x-correlation-id", "asgi-only-1"] in result["headers"] and result["body"] == "asgi-only-1"


@pytest.mark.parametrize("raw", [None, b"", "x" * 129, "a b", "a;b=c", "x\r\nSet-Cookie: a=b", b"\xff\xfe", 42,
                                 "correlation_id=1,other=2"])
def test_malformed_or_missing_header_is_replaced_never_trusted(raw: object) -> None:
    cid, trusted = _web.incoming(raw)
    assert trusted is False and len(cid) == 32 and int(cid, 16) >= 0


@pytest.mark.parametrize("raw", ["order-42", b"order-42", "a" * 128, "urn:uuid:1234", "user@example.com"])
def test_valid_header_is_kept(raw: object) -> None:
    cid, trusted = _web.incoming(raw)
    assert trusted is True and cid == (raw.decode() if isinstance(raw, bytes) else raw)


def test_asgi_header_lookup_is_case_insensitive_and_configurable() -> None:
    from otelkit._config import resolve

    try:
        _web.configure(resolve(environ={"OTELKIT_CORRELATION_HEADER": "X-Request-ID"}))
        assert _web.from_asgi_headers([(b"X-Request-Id", b"req-1")]) == ["req-1", True]
        assert _web.from_asgi_headers([(b"x-correlation-id", b"other")])[1] is False
        assert _web.edge().wsgi_key == "HTTP_X_REQUEST_ID"
    finally:
        _web.configure(resolve(environ={}))
    assert _web.edge().header == "X-Correlation-ID"


def test_bad_correlation_header_setting_is_a_clear_error() -> None:
    from otelkit._config import ConfigError, resolve

    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTELKIT_CORRELATION_HEADER": "X Bad Header"})
    assert "OTELKIT_CORRELATION_HEADER" in str(info.value) and "X-Request-ID" in str(info.value)


def test_mounted_sub_app_and_app_built_before_init_give_one_server_span() -> None:
    from fastapi import FastAPI
    from opentelemetry.trace import SpanKind
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tests.integration.instrument_support import instrumented

    def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    sub = Starlette(routes=[Route("/hello", hello)])
    app = FastAPI()  # built before the instrumentation below
    app.mount("/sub", sub)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    with instrumented(instrument=["fastapi", "starlette"]) as t:
        with TestClient(app) as client:
            r = client.get("/sub/hello", headers={"X-Correlation-ID": "mount-1"})
            assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "mount-1"
            assert client.get("/items/3").status_code == 200
            assert client.get("/healthz").status_code == 404  # excluded: no span
        spans = t.spans()
        assert [s.kind for s in spans] == [SpanKind.SERVER, SpanKind.SERVER], [(s.name, s.kind) for s in spans]
        assert spans[0].attributes["otelkit.correlation_id"] == "mount-1"
        assert spans[1].attributes["http.route"] == "/items/{item_id}"
        points = t.points("http.server.request.duration")
        assert {p[0].get("http.route") for p in points} >= {"/items/{item_id}"}
        assert not [p for p in points if "health" in str(p[0].get("http.route"))]


@pytest.mark.parametrize("variable", ["OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"])
def test_excluded_urls_variable_replaces_the_default(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from tests.integration.instrument_support import instrumented

    monkeypatch.setenv(variable, "/private")
    app = FastAPI()

    @app.get("/health")
    async def health() -> str:
        return "ok"

    @app.get("/private/{x}")
    async def private(x: str) -> str:
        return x

    with instrumented(instrument=["fastapi"]) as t:
        with TestClient(app) as client:
            assert client.get("/health").status_code == 200
            assert client.get("/private/a").headers["X-Correlation-ID"]  # excluded, still answered with an ID
        assert [s.attributes["http.route"] for s in t.spans()] == ["/health"]


def test_events_emitted_while_handling_a_request_carry_its_correlation_id() -> None:
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from otelkit import pipeline
    from tests.integration.instrument_support import instrumented

    app = FastAPI()

    @app.post("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, str]:
        carrier: dict[str, str] = {}
        with pipeline.emit("orders", carrier=carrier, system="redis"):
            pass
        return carrier

    with instrumented(instrument=["fastapi"]), TestClient(app) as client:
        sent = client.post("/orders/7", headers={"X-Correlation-ID": "order-7"}).json()
        fresh = client.post("/orders/8")
    assert sent["otelkit-correlation-id"] == "order-7" and "correlation_id=order-7" in sent["baggage"]
    assert fresh.json()["otelkit-correlation-id"] == fresh.headers["X-Correlation-ID"]


def test_flask_one_layer_keeps_spans_metrics_errors_exclusions_and_correlation() -> None:
    """The Flask app's one-layer path (otelkit/_instrument/_flask_layer.py), in process.

    One SERVER span per traced request with the route, status and correlation ID; the application's own
    ``before_request`` runs inside the span and the correlation scope; an unhandled error is recorded on the
    span (ERROR, exception event) and in the duration metric's status; an excluded URL has no span but keeps
    the correlation (scope and response header); an ID from an upstream otelkit service's baggage is adopted.
    """
    import flask
    from opentelemetry.trace import SpanKind, StatusCode

    from otelkit import _correlation
    from otelkit._instrument import flask as otelkit_flask
    from tests.integration.instrument_support import instrumented

    app = flask.Flask("one_layer")  # made before the instrumentation below
    seen: dict[str, object] = {}

    @app.before_request
    def remember() -> None:
        from opentelemetry import trace

        seen["before_span"] = trace.get_current_span().get_span_context().is_valid
        seen["before_id"] = _correlation.get_correlation_id()

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, object]:
        return {"item": item_id, "id": _correlation.get_correlation_id()}

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("bad")

    @app.route("/healthz")
    def health() -> dict[str, object]:
        return {"id": _correlation.get_correlation_id()}

    with instrumented(instrument=["flask"]) as t:
        client = app.test_client()
        r = client.get("/items/7?token=QS", headers={"X-Correlation-ID": "flask-one-1"})
        assert app.__dict__.get("_otelkit_flask") is otelkit_flask.LEAN
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "flask-one-1"
        assert r.json == {"item": 7, "id": "flask-one-1"}
        assert seen == {"before_span": True, "before_id": "flask-one-1"}
        assert client.get("/boom").status_code == 500
        h = client.get("/healthz")
        assert h.status_code == 200 and h.headers["X-Correlation-ID"] == h.json["id"]  # excluded: an ID, no span
        upstream = client.get("/items/8", headers={"baggage": "correlation_id=up-8"})
        assert upstream.headers["X-Correlation-ID"] == "up-8" and upstream.json["id"] == "up-8"
        spans = t.spans()
        assert [(s.name, s.kind) for s in spans] == [("GET /items/<int:item_id>", SpanKind.SERVER),
                                                     ("GET /boom", SpanKind.SERVER),
                                                     ("GET /items/<int:item_id>", SpanKind.SERVER)]
        ok, err, up = spans
        assert ok.attributes["http.route"] == "/items/<int:item_id>"
        assert ok.attributes["http.response.status_code"] == 200
        assert ok.attributes["otelkit.correlation_id"] == "flask-one-1"
        assert up.attributes["otelkit.correlation_id"] == "up-8"
        assert err.status.status_code is StatusCode.ERROR and err.attributes["http.response.status_code"] == 500
        assert [e.name for e in err.events] == ["exception"]
        points = t.points("http.server.request.duration")
        by_route = {(p[0].get("http.route"), p[0].get("http.response.status_code")): p[1].count for p in points}
        assert by_route == {("/items/<int:item_id>", 200): 2, ("/boom", 500): 1}
        active = t.points("http.server.active_requests")
        assert active and all(p[1].value == 0 for p in active)
    # uninstrumented again: the app's own wsgi_app and before_request functions
    assert "_otelkit_flask" not in app.__dict__ and not hasattr(app.wsgi_app, "_otelkit_layer")
    assert app.before_request_funcs[None] == [remember]


def test_flask_one_layer_runs_blueprint_hooks_inside_the_span_with_the_blueprint_route() -> None:
    """A blueprint's ``before_request`` / ``after_request`` run inside the span and the correlation scope of
    Flask's one layer (its ``before_request`` is the first of the app's, which run before the blueprint's), and
    the span and duration metric have the blueprint route (its URL prefix included)."""
    import flask
    from opentelemetry import trace

    from otelkit import _correlation
    from otelkit._instrument import flask as otelkit_flask
    from tests.integration.instrument_support import instrumented

    app = flask.Flask("blueprints")
    shop = flask.Blueprint("shop", __name__, url_prefix="/shop")
    seen: dict[str, object] = {}

    def where() -> tuple[str, str | None]:
        return format(trace.get_current_span().get_span_context().span_id, "016x"), _correlation.get_correlation_id()

    @shop.before_request
    def shop_before() -> None:
        seen["before"] = where()

    @shop.after_request
    def shop_after(response: flask.Response) -> flask.Response:
        seen["after"] = where()
        return response

    @shop.route("/items/<int:item_id>")
    def shop_item(item_id: int) -> dict[str, object]:
        return {"item": item_id}

    app.register_blueprint(shop)
    with instrumented(instrument=["flask"]) as t:
        client = app.test_client()
        r = client.get("/shop/items/3", headers={"X-Correlation-ID": "bp-3"})
        assert app.__dict__.get("_otelkit_flask") is otelkit_flask.LEAN
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "bp-3"
        (span,) = t.spans()
        span_id = format(span.context.span_id, "016x")
        assert seen == {"before": (span_id, "bp-3"), "after": (span_id, "bp-3")}
        assert span.name == "GET /shop/items/<int:item_id>" and span.attributes is not None
        assert span.attributes["http.route"] == "/shop/items/<int:item_id>"
        routes = {p[0].get("http.route") for p in t.points("http.server.request.duration")}
        assert routes == {"/shop/items/<int:item_id>"}


def test_fastapi_own_telemetry_stands_aside_from_the_first_request_without_lifespan() -> None:
    """FastAPI's own telemetry (0.12x+) traces a request unless the app's stack holds the contrib middleware.

    Its ``__call__`` builds the stack at the first request, before ``Starlette.__call__`` (where otelkit
    instrumented the app): without a lifespan first (httpx's ASGITransport, a test client outside ``with``),
    that request was traced twice (FastAPI's SERVER span and ``fastapi.*`` spans, otelkit's span inside).
    """
    import fastapi.applications
    from fastapi import Depends, FastAPI
    from opentelemetry.trace import SpanKind
    from starlette.testclient import TestClient

    from tests.integration.instrument_support import instrumented

    if not hasattr(fastapi.applications, "_legacy_otel"):
        pytest.skip("this FastAPI has no telemetry of its own")

    def dep() -> int:
        return 1

    with instrumented(instrument=["fastapi"]) as t:
        app = FastAPI(telemetry={"tracer_provider": t.tracer_provider})  # type: ignore[call-arg,unused-ignore]

        @app.get("/items/{item_id}")
        def item(item_id: int, x: int = Depends(dep)) -> dict[str, int]:
            return {"item": item_id + x}

        client = TestClient(app)  # not entered: no lifespan before the first request
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
        spans = t.spans()
        assert [(s.name, s.kind, s.instrumentation_scope.name) for s in spans] == [
            ("GET /items/{item_id}", SpanKind.SERVER, "opentelemetry.instrumentation.fastapi")] * 2
