"""Per-call cost of the client and database integrations vs the contrib instrumentations alone (issue 14.7).

Calls: requests GET, urllib3 GET, aiohttp GET (keep-alive HTTP server in a child process), psycopg 3
SELECT, asyncpg fetchval (PostgreSQL 127.0.0.1:5432) and a SQLAlchemy SELECT on an in-memory sqlite
engine (SQLAlchemy's own span: no driver integration under it). Three sides per call, each in its own
process: ``none`` (the library uninstrumented), ``contrib`` (the contrib instrumentation alone, plus
what a user adds to get the same metric) and ``otelkit`` (``instrument_all`` with that one
integration). Both instrumented sides record the same telemetry per call, into the same
``BatchSpanProcessor`` (null exporter) and ``InMemoryMetricReader``:

* requests / urllib3 / aiohttp: one CLIENT span with the stable HTTP attributes and
  ``http.client.request.duration`` (urllib3 also its request/response body-size histograms), both
  sides through the contrib instrumentation's own recording (otelkit builds on it; its addition is
  the URL scrubbing in place of upstream's ``redact_url``/``url_filter``).
* psycopg: one CLIENT span with the stable database attributes, ``db.client.operation.duration`` and
  ``db.client.response.returned_rows`` (contrib side: the dbapi integration's own, database opt-in).
* asyncpg: one CLIENT span + ``db.client.operation.duration`` (contrib side:
  ``AsyncPGInstrumentor`` + a user wrapper recording the histogram, as contrib records none).
* SQLAlchemy: one CLIENT span + ``db.client.operation.duration`` (contrib side:
  ``SQLAlchemyInstrumentor`` + ``before/after_cursor_execute`` listeners recording the histogram).

Run: ``.venv/bin/python benchmarks/run.py --callgrind --only clients_db``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

POSTGRES_DSN = os.environ.get("OTELKIT_BENCH_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")
POSTGRES_URL = os.environ.get("OTELKIT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Both sides use the stable database/http conventions (otelkit's default).
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")

_SERVER = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""

_DURATION_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider]:
    from opentelemetry import metrics

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    metrics.set_meter_provider(mp)  # the dbapi integration (psycopg) records through the global one
    return tp, mp


@functools.cache
def _db_histogram() -> Any:
    return _providers()[1].get_meter("bench.contrib").create_histogram(
        "db.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS)


@functools.cache
def _base_url() -> str:
    import atexit

    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    atexit.register(proc.kill)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"http://127.0.0.1:{port}/x?token=abc&page=1"


_loop = asyncio.new_event_loop()

# --- contrib side: what a user wires up to get the same telemetry ---------------------------------------


def _asyncpg_duration(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    async def run() -> Any:
        start = time.perf_counter()
        error = None
        try:
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            query = args[0] if args else ""
            attributes = {"db.system.name": "postgresql", "db.operation.name": query.split(None, 1)[0].upper(),
                          "db.namespace": instance._params.database, "server.address": instance._addr[0],
                          "server.port": instance._addr[1]}
            if error is not None:
                attributes["error.type"] = type(error).__qualname__
            _db_histogram().record(time.perf_counter() - start, attributes)
    return run()


def _sqlalchemy_before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
    context._bench_start = time.perf_counter()


def _sqlalchemy_after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
    attributes = {"db.system.name": conn.engine.dialect.name, "db.operation.name": statement.split(None, 1)[0].upper()}
    _db_histogram().record(time.perf_counter() - context._bench_start, attributes)


def _contrib_on(library: str) -> None:
    tp, mp = _providers()
    if library == "requests":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        RequestsInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif library == "urllib3":
        from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

        URLLib3Instrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif library == "aiohttp":
        from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

        AioHttpClientInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif library == "psycopg":
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        PsycopgInstrumentor().instrument(tracer_provider=tp, skip_dep_check=True)
    elif library == "asyncpg":
        import asyncpg
        import wrapt
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        AsyncPGInstrumentor().instrument(tracer_provider=tp)
        wrapt.wrap_function_wrapper(asyncpg.Connection, "fetchval", _asyncpg_duration)
    elif library == "sqlalchemy":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        SQLAlchemyInstrumentor().instrument(tracer_provider=tp, meter_provider=mp, skip_dep_check=True)
        event.listen(Engine, "before_cursor_execute", _sqlalchemy_before)
        event.listen(Engine, "after_cursor_execute", _sqlalchemy_after)


_INTEGRATION = {"aiohttp": "aiohttp-client"}
_side: dict[str, str] = {}


def _switch(library: str, side: str) -> None:
    """Put ``library`` in ``side`` ("none", "contrib", "otelkit"); each process measures one side of one call."""
    if _side.get(library) == side:
        return
    assert library not in _side, "one side per process"
    if side == "contrib":
        _contrib_on(library)
    elif side == "otelkit":
        from otelkit import _instrument
        from otelkit._config import resolve

        tp, mp = _providers()
        _instrument.instrument_all(resolve(instrument=[_INTEGRATION.get(library, library)], system_metrics=False),
                                   tp, mp)
    _side[library] = side


# --- the calls ----------------------------------------------------------------------------------


@functools.cache
def _requests_session() -> Any:
    import requests

    return requests.Session()


def _requests_get(loops: int, side: str) -> float:
    _switch("requests", side)
    session, url = _requests_session(), _base_url()
    t0 = time.perf_counter()
    for _ in range(loops):
        session.get(url)
    return time.perf_counter() - t0


@functools.cache
def _urllib3_pool() -> Any:
    import urllib3

    return urllib3.PoolManager()


def _urllib3_get(loops: int, side: str) -> float:
    _switch("urllib3", side)
    pool, url = _urllib3_pool(), _base_url()
    t0 = time.perf_counter()
    for _ in range(loops):
        pool.request("GET", url)
    return time.perf_counter() - t0


_aiohttp_session: list[Any] = []


def _aiohttp_get(loops: int, side: str) -> float:
    _switch("aiohttp", side)
    import aiohttp

    url = _base_url()

    async def run() -> float:
        if not _aiohttp_session:  # made after instrumenting: contrib adds its trace config at __init__
            _aiohttp_session.append(aiohttp.ClientSession())
        session = _aiohttp_session[0]
        t0 = time.perf_counter()
        for _ in range(loops):
            async with session.get(url) as response:
                await response.read()
        return time.perf_counter() - t0

    return _loop.run_until_complete(run())


_psycopg_conn: list[Any] = []


def _psycopg_select(loops: int, side: str) -> float:
    _switch("psycopg", side)
    import psycopg

    if not _psycopg_conn:
        _psycopg_conn.append(psycopg.connect(POSTGRES_DSN, autocommit=True))
    conn = _psycopg_conn[0]
    t0 = time.perf_counter()
    for i in range(loops):
        with conn.cursor() as cur:
            cur.execute("SELECT %s, 'literal'", (i,))
            cur.fetchone()
    return time.perf_counter() - t0


_asyncpg_conn: list[Any] = []


def _asyncpg_fetchval(loops: int, side: str) -> float:
    _switch("asyncpg", side)
    import asyncpg

    async def run() -> float:
        if not _asyncpg_conn:
            _asyncpg_conn.append(await asyncpg.connect(POSTGRES_URL))
        conn = _asyncpg_conn[0]
        t0 = time.perf_counter()
        for i in range(loops):
            await conn.fetchval("SELECT $1::int + 1, 'literal'", i)
        return time.perf_counter() - t0

    return _loop.run_until_complete(run())


_sqlite: list[Any] = []


def _sqlalchemy_select(loops: int, side: str) -> float:
    _switch("sqlalchemy", side)
    import sqlalchemy as sa

    if not _sqlite:  # made after instrumenting: contrib instruments engines at create_engine
        engine = sa.create_engine("sqlite://")
        _sqlite.extend([engine, engine.connect(), sa.text("SELECT 1, 'literal'")])
    _engine, conn, statement = _sqlite
    t0 = time.perf_counter()
    for _ in range(loops):
        conn.execute(statement).fetchone()
    return time.perf_counter() - t0


CALLS = {"requests GET": _requests_get, "urllib3 GET": _urllib3_get, "aiohttp GET": _aiohttp_get,
         "psycopg SELECT": _psycopg_select, "asyncpg fetchval": _asyncpg_fetchval,
         "SQLAlchemy SELECT (sqlite)": _sqlalchemy_select}
for _call_name, _fn in CALLS.items():
    for _s in ("none", "contrib", "otelkit"):
        globals()[f"{_fn.__name__.lstrip('_')}_{_s}"] = functools.partial(_fn, side=_s)


def custom(fast: bool) -> list[dict[str, Any]]:
    """Instructions per call added by otelkit vs added by the contrib instrumentation (+ same metrics)."""
    import _callgrind

    if not _callgrind.available():
        return []
    lo, hi = (10, 30) if fast else (10, 50)  # instruction counts are repeatable: 40 calls' difference is enough
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(label, side): pool.submit(_callgrind.per_op, f"bench_clients_db:{fn.__name__.lstrip('_')}_{side}",
                                              lo, hi)
                   for label, fn in CALLS.items() for side in ("none", "contrib", "otelkit")}
        results = {key: future.result() for key, future in futures.items()}
    rows = []
    for label in CALLS:
        counts = {side: results[(label, side)] for side in ("none", "contrib", "otelkit")}
        ours, theirs = counts["otelkit"] - counts["none"], counts["contrib"] - counts["none"]
        rows.append({"label": f"{label}: instructions added per call, otelkit vs contrib + same metrics (callgrind)",
                     "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs], "target": 1.0,
                     "extra": {"instructions": {"otelkit": ours, "raw": theirs}, "per_call": counts},
                     "note": (f"uninstrumented {counts['none']:,.0f}, contrib {counts['contrib']:,.0f}, "
                              f"otelkit {counts['otelkit']:,.0f} instructions per call")})
    return rows


def _vs_contrib(fn: Any) -> tuple[Any, Any]:
    # A library is instrumented one way per process: each side of a wall-time pair runs in its own
    # long-lived worker process (_subprocess_sample), timed back to back by the harness as usual.
    def ours(loops: int) -> float:
        return _subprocess_sample(fn.__name__, "otelkit", loops)

    def contrib(loops: int) -> float:
        return _subprocess_sample(fn.__name__, "contrib", loops)

    ours.__name__ = f"{fn.__name__}_otelkit"
    contrib.__name__ = f"{fn.__name__}_contrib"
    return ours, contrib


_workers: dict[tuple[str, str], subprocess.Popen[str]] = {}
_WORKER = r"""
import sys
sys.path[:0] = [{here!r}, {root!r}]
import bench_clients_db as b
fn = getattr(b, {name!r})
for line in sys.stdin:
    print(repr(fn(int(line), {side!r})), flush=True)
"""


def _subprocess_sample(name: str, side: str, loops: int) -> float:
    """Time ``loops`` calls in a long-lived worker process that has only ``side`` instrumented."""
    import atexit
    from pathlib import Path

    key = (name, side)
    proc = _workers.get(key)
    if proc is None:
        here = Path(__file__).resolve().parent
        code = _WORKER.format(here=str(here), root=str(here.parent), name=name, side=side)
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        atexit.register(proc.kill)
        _workers[key] = proc
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{loops}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


_NO_CG = {"callgrind": False}
PAIRS: list[tuple[Any, ...]] = [
    (f"{label}: otelkit vs contrib + same metrics (wall)", *_vs_contrib(fn), 1.0, _NO_CG)
    for label, fn in CALLS.items()
]


if __name__ == "__main__":  # quick look: python benchmarks/bench_clients_db.py
    import statistics

    for label, ours_fn, theirs_fn, *_rest in PAIRS:
        a = [ours_fn(200) / 200 * 1e6 for _ in range(5)]
        b = [theirs_fn(200) / 200 * 1e6 for _ in range(5)]
        print(f"{label}: otelkit {statistics.median(a):.1f} µs, contrib {statistics.median(b):.1f} µs, "
              f"ratio {statistics.median(a) / statistics.median(b):.2f}")
