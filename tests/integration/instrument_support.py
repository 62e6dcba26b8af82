"""Helpers for the instrumentation tests: in-memory SDK providers handed to ``instrument_all``.

``instrument_all`` takes the providers of the current init; giving it in-memory SDK providers
(instead of going through the global proxies) keeps these tests independent of the OTel globals
that other test modules in the same process configure.
"""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit import _instrument, _scrub
from otelkit._config import resolve


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    statuses: list[_instrument.IntegrationStatus] = field(default_factory=list)

    def spans(self, scope: str | None = None) -> list[ReadableSpan]:
        spans = list(self.exporter.get_finished_spans())
        if scope is not None:
            spans = [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name.endswith(scope)]
        return spans

    def points(self, name: str) -> list[tuple[dict[str, Any], Any, str]]:
        """(attributes, data point, unit) of every point of metric ``name``."""
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend((dict(p.attributes), p, metric.unit) for p in metric.data.data_points)
        return out

    def status(self, name: str) -> _instrument.IntegrationStatus:
        return next(s for s in self.statuses if s.name == name)


@contextmanager
def instrumented(**settings: Any) -> Iterator[Telemetry]:
    """Instrument with in-memory providers; uninstrument on exit."""
    settings.setdefault("system_metrics", False)
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = Telemetry(tracer_provider, meter_provider, exporter, reader)
    resolved = resolve(**settings)
    # What init() does before it instruments: scrubbing follows these settings, not a previous test's.
    _scrub.configure(resolved.scrub.enabled, resolved.scrub.extra_patterns)
    telemetry.statuses = _instrument.instrument_all(resolved, tracer_provider, meter_provider)
    try:
        yield telemetry
    finally:
        _instrument.uninstrument_all()
        tracer_provider.shutdown()
        meter_provider.shutdown()


T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.01, what: str = "condition") -> T:
    """The first truthy ``predicate()``, polled every ``interval`` until ``timeout`` (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(interval)


class _Handler(http.server.BaseHTTPRequestHandler):

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))  # type: ignore[attr-defined]
        status = 500 if "/fail" in self.path else 200
        body = b"boom" if status == 500 else b"ok"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "session=OTK-CANARY-SETCOOKIE")
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler], path: str = "") -> Iterator[tuple[str, list[Any]]]:
    """``handler`` served on a free 127.0.0.1 port by a thread: yields (base URL + ``path``, ``seen``).

    ``seen`` is ``server.seen``, an empty list the handler appends what it received to.
    """
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def http_server() -> AbstractContextManager[tuple[str, list[dict[str, str]]]]:
    """A local HTTP server on a free port: ``/fail`` answers 500, anything else 200."""
    return serve_http(_Handler)


# Contrib releases before the stable database conventions (0.61b0 for redis/dbapi) name span attributes
# the old way; otelkit's own metrics use the new names on every release.
_OLD_SPAN_NAMES = {"db.query.text": "db.statement", "db.system.name": "db.system", "db.namespace": "db.name",
                   "server.address": "net.peer.name", "server.port": "net.peer.port"}


def span_attr(attributes: Any, name: str) -> Any:
    """A contrib span attribute by its current semconv name, or by its pre-stable name on older contrib."""
    if name in attributes or name not in _OLD_SPAN_NAMES:
        return attributes[name]
    return attributes[_OLD_SPAN_NAMES[name]]


@contextmanager
def pg_table(dsn: str, prefix: str, columns: str) -> Iterator[str]:
    """A fresh PostgreSQL table ``<prefix><random>`` with ``columns`` (made with psycopg2, uninstrumented
    connection of its own), dropped afterwards: unique per test, so parallel workers never share one."""
    import psycopg2

    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} ({columns})")
        yield name
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {name}")
    finally:
        conn.close()
