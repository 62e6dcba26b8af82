"""Per-request cost of otelkit's web-framework integrations against the contrib instrumentations alone (issue 14/17).

Each request is driven in-process (no socket: the server's own work is the same on every side and only adds
noise): a FastAPI route through the ASGI interface, a Flask route and a Django route through WSGI, the same
Django route through ASGI (``get_asgi_application()``, as under uvicorn). Four sides,
each in its own process under callgrind:

* ``none``: the app uninstrumented;
* ``contrib``: ``FastAPIInstrumentor.instrument_app(app)`` / ``FlaskInstrumentor.instrument_app(app)`` /
  ``DjangoInstrumentor().instrument()`` with their defaults (Django: the SERVER span and
  ``http.server.request.duration``/``http.server.active_requests``, exactly what otelkit records), what a
  contrib user gets: for FastAPI that is the SERVER span plus an INTERNAL span per ASGI
  message (``http send`` x2, the request body ``http receive``) and the duration/size/active-request metrics;
* ``contrib_same`` (FastAPI only): the contrib middleware with ``exclude_spans=["receive", "send"]``: exactly
  the spans and metrics otelkit records (the SERVER span, ``http.server.request.duration``,
  ``http.server.active_requests``, the size histograms);
* ``otelkit``: ``instrument_all(instrument=[...])``: the same spans and metrics plus what otelkit adds per
  request: the class-level entry-point wrapper, the correlation ID (read from ``X-Correlation-ID`` or
  generated, set on the span, attached to the context for logs and outgoing calls, returned in the response
  header). For FastAPI the contrib middleware is otelkit's subclass of it, which does the edge in the same
  layer (``otelkit/_instrument/_asgi_middleware.py``); for Flask and Django the same in one layer
  (``_flask_layer.py``, ``_django_layer.py``).

Spans go to a ``BatchSpanProcessor`` with a null exporter, metrics to an ``InMemoryMetricReader``; stable HTTP
semantic conventions on every side. Requests carry no correlation header (the costlier path: an ID is
generated).

Run: ``.venv/bin/python benchmarks/run.py --only servers`` (``--fast`` for a smoke pass).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider]:
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    return tp, MeterProvider(metric_readers=[InMemoryMetricReader()])


_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
          "path": "/items/42", "raw_path": b"/items/42", "query_string": b"q=1", "root_path": "",
          "headers": [(b"host", b"bench"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
          "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    return None


@functools.cache
def _fastapi(side: str) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    tp, mp = _providers()
    if side in ("contrib", "contrib_same"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        extra: dict[str, Any] = {"exclude_spans": ["receive", "send"]} if side == "contrib_same" else {}
        FastAPIInstrumentor.instrument_app(app, tracer_provider=tp, meter_provider=mp, **extra)
    elif side == "otelkit":
        from otelkit import _instrument
        from otelkit._config import resolve

        _instrument.instrument_all(resolve(instrument=["fastapi"], system_metrics=False), tp, mp)
    return app


def _fastapi_requests(loops: int, side: str) -> float:
    import time

    app = _fastapi(side)
    loop = asyncio.new_event_loop()

    async def run() -> None:
        for _ in range(loops):
            await app(dict(_SCOPE), _receive, _send)

    try:
        t0 = time.perf_counter()
        loop.run_until_complete(run())
        return time.perf_counter() - t0
    finally:
        loop.close()


@functools.cache
def _flask(side: str) -> tuple[Any, dict[str, Any]]:
    from flask import Flask
    from werkzeug.test import EnvironBuilder

    tp, mp = _providers()
    if side == "otelkit":
        from otelkit import _instrument
        from otelkit._config import resolve

        _instrument.instrument_all(resolve(instrument=["flask"], system_metrics=False), tp, mp)
    app = Flask("bench")

    @app.route("/items/<int:item_id>")
    def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    if side == "contrib":
        from opentelemetry.instrumentation.flask import FlaskInstrumentor

        FlaskInstrumentor.instrument_app(app, tracer_provider=tp, meter_provider=mp)
    environ = EnvironBuilder(path="/items/42", query_string="q=1", headers={"User-Agent": "bench"}).get_environ()
    return app, environ


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def _wsgi_requests(app: Any, environ: dict[str, Any], loops: int) -> float:
    """``loops`` requests through a WSGI ``app``, each body read and closed as a server does; seconds taken."""
    import time

    t0 = time.perf_counter()
    for _ in range(loops):
        body = app(dict(environ), _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return time.perf_counter() - t0


def _flask_requests(loops: int, side: str) -> float:
    return _wsgi_requests(*_flask(side), loops)


urlpatterns: list[Any] = []  # Django's ROOT_URLCONF is this module (filled by _django)


@functools.cache
def _django_project(side: str) -> None:
    """A one-route Django project configured in-process and the side's instrumentation; the handler is built
    after it (the contrib adds its middleware to settings.MIDDLEWARE, which Django reads when the handler is
    built)."""
    import django
    from django.conf import settings
    from django.http import JsonResponse
    from django.urls import path

    tp, mp = _providers()
    settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="bench", MIDDLEWARE=[],
                       USE_TZ=True, INSTALLED_APPS=[], LOGGING_CONFIG=None)
    django.setup()

    def item(request: Any, item_id: int) -> Any:
        return JsonResponse({"item": item_id})

    urlpatterns.append(path("items/<int:item_id>", item))
    if side == "contrib":
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif side == "otelkit":
        from otelkit import _instrument
        from otelkit._config import resolve

        _instrument.instrument_all(resolve(instrument=["django"], system_metrics=False), tp, mp)


@functools.cache
def _django(side: str) -> tuple[Any, dict[str, Any]]:
    """The project's WSGI handler (``get_wsgi_application()``) and a GET's environ."""
    from werkzeug.test import EnvironBuilder

    _django_project(side)
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()
    environ = EnvironBuilder(path="/items/42", query_string="q=1", headers={"User-Agent": "bench"}).get_environ()
    return app, environ


def _django_requests(loops: int, side: str) -> float:
    return _wsgi_requests(*_django(side), loops)


@functools.cache
def _django_asgi(side: str) -> Any:
    """The same project's ASGI handler (``get_asgi_application()``, what uvicorn / daphne run)."""
    _django_project(side)
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def _django_receive() -> Any:
    """A request's ``receive``: the (empty) body, then waiting for the client's disconnect, as a server does.
    Django listens for that disconnect while the view runs and cancels the wait once it has responded."""
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable: cancelled")

    return receive


def _django_asgi_requests(loops: int, side: str) -> float:
    """``loops`` GETs through the ASGI interface. The sync view runs in asgiref's thread for the request (a new
    one per request, as under uvicorn), and the contrib's sync-only middleware in one as well: the instructions
    of every thread are counted (``callgrind_threads``), the span processor's too (both sides export one span
    per request to the null exporter)."""
    import time

    app = _django_asgi(side)
    loop = asyncio.new_event_loop()

    async def run() -> None:
        for _ in range(loops):
            await app(dict(_SCOPE), _django_receive(), _send)

    try:
        t0 = time.perf_counter()
        loop.run_until_complete(run())
        return time.perf_counter() - t0
    finally:
        loop.close()


SIDES = {"FastAPI GET (ASGI, in-process)": (_fastapi_requests, ("none", "contrib", "contrib_same", "otelkit")),
         "Flask GET (WSGI, in-process)": (_flask_requests, ("none", "contrib", "otelkit")),
         "Django GET (WSGI, in-process)": (_django_requests, ("none", "contrib", "otelkit")),
         "Django GET (ASGI, in-process)": (_django_asgi_requests, ("none", "contrib", "otelkit"))}
# Callgrind targets: bench_servers:fastapi_requests_otelkit ...
for _label, (_fn, _sides) in SIDES.items():
    for _side in _sides:
        _target = functools.partial(_fn, side=_side)
        if _fn is _django_asgi_requests:  # the request's work is on asgiref's threads too (_callgrind)
            _target.callgrind_threads = "all threads"  # type: ignore[attr-defined]
        globals()[f"{_fn.__name__.lstrip('_')}_{_side}"] = _target


def custom(fast: bool) -> list[dict[str, Any]]:
    """Instructions per request added by otelkit vs by the contrib instrumentation, on the application thread."""
    import _callgrind

    if not _callgrind.available():
        return []
    lo, hi = (10, 40) if fast else (20, 120)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(label, side): pool.submit(_callgrind.per_op, f"bench_servers:{fn.__name__.lstrip('_')}_{side}",
                                              lo, hi)
                   for label, (fn, sides) in SIDES.items() for side in sides}
        results = {key: future.result() for key, future in futures.items()}
    rows = []
    for label, (_fn, sides) in SIDES.items():
        counts = {side: results[(label, side)] for side in sides}
        ours = counts["otelkit"] - counts["none"]
        for base in [s for s in sides if s.startswith("contrib")]:
            theirs = counts[base] - counts["none"]
            what = "contrib defaults" if base == "contrib" else "contrib with the same spans"
            rows.append({"label": f"{label}: instructions added per request, otelkit vs {what} (callgrind)",
                         "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs],
                         "target": 1.0,
                         "extra": {"instructions": {"otelkit": ours, "raw": theirs}, "per_call": counts},
                         "note": ", ".join(f"{side} {value:,.0f}" for side, value in counts.items())
                         + " instructions per request"})
    return rows


def _vs(fn: Any, theirs: str) -> tuple[Any, Any]:
    def ours(loops: int) -> float:
        return float(fn(loops, "otelkit"))

    def contrib(loops: int) -> float:
        return float(fn(loops, theirs))

    ours.__name__ = f"{fn.__name__}_otelkit"
    contrib.__name__ = f"{fn.__name__}_{theirs}"
    return ours, contrib


_NO_CG = {"callgrind": False}

PAIRS: list[tuple[Any, ...]] = [
    ("FastAPI GET: otelkit vs contrib defaults (wall)", *_vs(_fastapi_requests, "contrib"), 1.0, _NO_CG),
    ("FastAPI GET: otelkit vs contrib with the same spans (wall)", *_vs(_fastapi_requests, "contrib_same"), None,
     _NO_CG),
    ("Flask GET: otelkit vs contrib (wall)", *_vs(_flask_requests, "contrib"), None, _NO_CG),
    ("Django GET: otelkit vs contrib (wall)", *_vs(_django_requests, "contrib"), None, _NO_CG),
    ("Django ASGI GET: otelkit vs contrib (wall)", *_vs(_django_asgi_requests, "contrib"), None, _NO_CG),
]
