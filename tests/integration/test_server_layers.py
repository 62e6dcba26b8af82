"""Flask's and FastAPI's one layer (``_flask_layer``, ``_asgi_middleware``) record what their fallbacks record.

Each request set goes once through the one layer and once through the fallback (the contrib's own per-request
pieces with otelkit's edge around them), in process; spans (name, kind, attributes, status, events, parent)
and metric points (attributes, counts, values) must be the same (attribute order aside: the contrib's request
hook sets the correlation ID before the contrib sets the request attributes a second time, which moves them after
it; the layers give them once, at the start). Two routes alternate so that
an attribute set kept for one route (``_web.kept``) showing up in another request's span or point would be seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otelkit._instrument import _web
from tests.integration.instrument_support import Telemetry, instrumented

HEADERS = {"X-Correlation-ID": "same-1", "User-Agent": "ua", "baggage": "k=v", "X-Custom": "c"}
METRICS = ("http.server.request.duration", "http.server.active_requests", "http.server.response.body.size",
           "http.server.request.body.size")


def _spans(t: Telemetry) -> list[tuple[Any, ...]]:
    return [(s.name, s.kind, dict(s.attributes or {}), s.status.status_code, s.status.description,
             [(e.name, {k: v for k, v in (e.attributes or {}).items() if k != "exception.stacktrace"})
              for e in s.events], s.parent is not None) for s in t.spans()]


def _points(t: Telemetry) -> list[tuple[Any, ...]]:
    """Every point of the server metrics, from one collection (a collection takes the exemplars it reports). The
    active-request count's exemplars too: the contrib adds it outside the span (none without a sampled remote
    parent); the duration's depend on the timing (one per bucket hit)."""
    data = t.reader.get_metrics_data()
    return sorted((metric.name, sorted(p.attributes.items()), getattr(p, "count", None), getattr(p, "value", None),
                   getattr(p, "sum", None) if metric.name.endswith("size") else None,
                   len(p.exemplars) if metric.name == "http.server.active_requests" else None)
                  for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
                  for metric in sm.metrics if metric.name in METRICS for p in metric.data.data_points)


# --- Flask -----------------------------------------------------------------------------------------------------

def _flask_app() -> Any:
    import flask

    app = flask.Flask("layers")

    @app.url_value_preprocessor
    def refuse(endpoint: str | None, values: dict[str, Any] | None) -> None:
        if values and values.get("item_id") == 13:  # before any before_request function: no span is started
            raise RuntimeError("unlucky")

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.route("/users/<name>")
    def user(name: str) -> flask.Response:
        response = flask.make_response(name)
        response.headers["X-Reply"] = "r"
        return response

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("bad")

    @app.route("/healthz")
    def health() -> str:
        return "ok"

    return app


def _flask_recorded(t: Telemetry) -> tuple[list[Any], list[Any], list[Any]]:
    app = _flask_app()
    client = app.test_client()
    replies = []
    for url in ("/items/7?token=QS", "/users/ann", "/boom", "/healthz", "/missing", "/items/13", "/items/8",
                "/users/bob?x=1"):
        response = client.get(url, headers=HEADERS)
        replies.append((url, response.status_code, response.headers.get("X-Correlation-ID")))
    return _spans(t), _points(t), replies


@pytest.mark.parametrize("capture", [False, True])
def test_flask_layer_records_what_the_contrib_pieces_record(monkeypatch: pytest.MonkeyPatch, capture: bool) -> None:
    from otelkit._instrument import _flask_layer

    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Custom")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "X-Reply")
    installed: list[bool] = []
    install = _flask_layer.install

    def spy(app: Any, request_hook: Any) -> bool:
        installed.append(install(app, request_hook))
        return installed[-1]

    monkeypatch.setattr(_flask_layer, "install", spy)
    with instrumented(instrument=["flask"]) as t:
        layer = _flask_recorded(t)
    assert installed == [True]
    monkeypatch.setattr(_flask_layer, "install", lambda app, request_hook: False)
    with instrumented(instrument=["flask"]) as t:
        fallback = _flask_recorded(t)
    assert layer == fallback
    spans, points, replies = layer
    assert [r[1] for r in replies] == [200, 200, 500, 200, 404, 500, 200, 200]
    assert all(r[2] == "same-1" for r in replies)
    assert [s[0] for s in spans] == ["GET /items/<int:item_id>", "GET /users/<name>", "GET /boom", "GET /missing",
                                     "GET /items/<int:item_id>", "GET /users/<name>"]  # /healthz excluded; 13: none
    routes = [s[2].get("http.route") for s in spans]
    assert routes == ["/items/<int:item_id>", "/users/<name>", "/boom", None, "/items/<int:item_id>",
                      "/users/<name>"]
    assert [s[2]["url.path"] for s in spans] == ["/items/7", "/users/ann", "/boom", "/missing", "/items/8",
                                                      "/users/bob"]
    assert ("http.request.header.x_custom" in dict(spans[0][2])) is capture
    assert ("http.response.header.x_reply" in dict(spans[1][2])) is capture
    duration = [dict(p[1]) for p in points if p[0] == "http.server.request.duration"]
    # /items/13: no span (no status on it, so none in the point either, as the contrib)
    assert sorted((str(d.get("http.route")), d.get("http.response.status_code", 0)) for d in duration) == sorted(
        [("/items/<int:item_id>", 200), ("/users/<name>", 200), ("/boom", 500), ("None", 404),
         ("/items/<int:item_id>", 0)])
    assert all(p[3] == 0 for p in points if p[0] == "http.server.active_requests")


def test_flask_layer_is_removed_by_uninstrument_and_runs_the_apps_teardown() -> None:
    import flask

    from otelkit._instrument import flask as otelkit_flask

    app = flask.Flask("teardown")
    torn: list[BaseException | None] = []

    @app.teardown_request
    def mine(exc: BaseException | None) -> None:
        torn.append(exc)

    @app.route("/boom")
    def boom() -> str:
        raise ValueError("bad")

    with instrumented(instrument=["flask"]) as t:
        client = app.test_client()
        assert client.get("/boom").status_code == 500
        assert app.__dict__.get("_otelkit_flask") is otelkit_flask.LEAN
        assert len(app.teardown_request_funcs[None]) == 2
        (span,) = t.spans()
        assert span.end_time is not None and [e.name for e in span.events] == ["exception"]
    assert app.teardown_request_funcs[None] == [mine] and app.before_request_funcs.get(None, []) == []
    assert len(torn) == 1 and isinstance(torn[0], ValueError)


# --- FastAPI ---------------------------------------------------------------------------------------------------

def _scope(path: str, query: bytes = b"", method: str = "GET", body: bytes = b"") -> dict[str, Any]:
    headers = [(name.lower().encode(), value.encode()) for name, value in HEADERS.items()]
    headers.append((b"host", b"testserver"))
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}


def _channel(body: bytes) -> tuple[Any, list[dict[str, Any]], Any]:
    """A request's ``receive`` (its body, then the disconnect), the messages sent, and its ``send``."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return receive, sent, send


def _fastapi_recorded(t: Telemetry, lean: bool) -> tuple[list[Any], list[Any], list[Any]]:
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    from otelkit._instrument._asgi_middleware import OtelkitMiddleware

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.post("/users/{name}")
    async def user(name: str) -> PlainTextResponse:
        return PlainTextResponse(name, headers={"X-Reply": "r"})

    @app.get("/boom")
    async def boom() -> None:
        raise ValueError("bad")

    @app.get("/healthz")
    async def health() -> str:
        return "ok"

    replies: list[Any] = []

    async def run() -> None:
        for path, query, method, body in (("/items/7", b"token=QS", "GET", b""), ("/users/ann", b"", "POST", b"hi"),
                                          ("/boom", b"", "GET", b""), ("/healthz", b"", "GET", b""),
                                          ("/missing", b"", "GET", b""), ("/items/8", b"", "GET", b""),
                                          ("/users/bob", b"x=1", "POST", b"hey")):
            receive, sent, send = _channel(body)
            try:
                await app(_scope(path, query, method, body), receive, send)
            except ValueError:
                pass
            start = next(m for m in sent if m["type"] == "http.response.start")
            replies.append((path, start["status"], dict(start["headers"]).get(b"x-correlation-id")))
            middleware = app.middleware_stack.app  # type: ignore[union-attr]
            assert type(middleware) is OtelkitMiddleware and middleware._otelkit_lean is lean

    asyncio.run(run())
    return _spans(t), _points(t), replies


@pytest.mark.parametrize("capture", [False, True])
def test_fastapi_layer_records_what_the_contrib_middleware_records(monkeypatch: pytest.MonkeyPatch,
                                                                   capture: bool) -> None:
    if capture:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Custom")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "X-Reply")
    with instrumented(instrument=["fastapi"]) as t:
        layer = _fastapi_recorded(t, lean=True)
    from otelkit._instrument import _asgi_middleware

    with instrumented(instrument=["fastapi"]) as t:
        # the contrib's own __call__, the edge around it
        monkeypatch.setattr(_asgi_middleware, "_lean_capable", lambda middleware: False)
        fallback = _fastapi_recorded(t, lean=False)
    spans, points, replies = layer
    assert [r[1] for r in replies] == [200, 200, 500, 200, 404, 200, 200]
    assert all(r[2] == b"same-1" for r in replies)
    assert spans == fallback[0]
    assert {p[0] for p in points} == set(METRICS)
    assert [s[2].get("http.route") for s in spans] == ["/items/{item_id}", "/users/{name}", "/boom", None,
                                                      "/items/{item_id}", "/users/{name}"]  # /healthz excluded
    assert ("http.request.header.x_custom" in spans[0][2]) is capture
    assert ("http.response.header.x_reply" in spans[1][2]) is capture
    assert points == fallback[1]


# --- the kept attribute sets -------------------------------------------------------------------------------------

def test_kept_gives_one_object_per_distinct_set_and_tells_types_apart() -> None:
    first = {"http.request.method": "GET", "http.response.status_code": 200}
    same = {"http.request.method": "GET", "http.response.status_code": 200}
    other = {"http.request.method": "GET", "http.response.status_code": 404}
    assert _web.kept(first) is first and _web.kept(same) is first
    assert _web.kept(other) is other
    flag, one = {"x": True}, {"x": 1}  # equal and hashed alike, but not the same attribute
    assert _web.kept(flag) is flag and _web.kept(one) is one
    listed = {"x": ["a"]}  # unhashable: itself, every time
    assert _web.kept(listed) is listed and _web.kept({"x": ["a"]}) is not listed
