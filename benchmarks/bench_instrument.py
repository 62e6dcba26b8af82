"""Per-operation overhead of otelkit's redis, psycopg2 and httpx instrumentation (issue 3).

Each pair times the same client call against the real servers on this machine (Redis
127.0.0.1:6379, PostgreSQL 127.0.0.1:5432, and a keep-alive HTTP server in a child
process on a free port) with otelkit's instrumentation on (``otelkit`` side) and with it
removed (``raw`` side: ``uninstrument_all()``, so the call is the library's own code, not a
suppressed wrapper). Instrumenting/uninstrumenting happens before the timer starts. The
ratio is instrumented/uninstrumented time per call; the absolute overhead per call is
(ratio - 1) x the raw time shown.

The instrumented side records what a service gets by default: a CLIENT span (sanitized
statement/URL) into a ``BatchSpanProcessor`` with a null exporter, and the duration
histogram (plus contrib's upstream work). Targets are informational (``None``): the
overhead is a fixed few tens of microseconds per call, so the ratio depends on how fast
the server answers over loopback.

Run: ``.venv/bin/python benchmarks/run.py --only instrument`` (``--fast`` for a smoke pass).
"""

from __future__ import annotations

import functools
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("OTELKIT_BENCH_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")

_SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # one write per response: no Nagle / delayed-ACK stall
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class NullSpanExporter(SpanExporter):
    """Accepts and discards spans."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider]:
    from opentelemetry import metrics

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    # Psycopg2Instrumentor.instrument() takes no meter_provider: its histograms use the global one.
    metrics.set_meter_provider(mp)
    return tp, mp


_state = "none"

# Both sides use the stable database/http conventions (otelkit's default), so the contrib
# instrumentations record the same attribute names and their own duration histograms.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")


def _contrib_redis_duration(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a user adds to contrib's redis instrumentation to get otelkit's duration histogram."""
    start = time.perf_counter()
    error = None
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        error = exc
        raise
    finally:
        conn = instance.connection_pool.connection_kwargs
        attributes = {"db.system.name": "redis", "db.operation.name": str(args[0]).upper(),
                      "server.address": conn.get("host", "localhost"), "server.port": conn.get("port", 6379),
                      "db.namespace": str(conn.get("db") or 0)}
        if error is not None:
            attributes["error.type"] = type(error).__qualname__
        _contrib_histogram().record(time.perf_counter() - start, attributes)


@functools.cache
def _contrib_histogram() -> Any:
    return _providers()[1].get_meter("bench.contrib").create_histogram(
        "db.client.operation.duration", unit="s",
        explicit_bucket_boundaries_advisory=[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
                                             5.0, 10.0])


def _contrib(on: bool) -> None:
    import wrapt
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    tp, mp = _providers()
    if on:
        import redis

        RedisInstrumentor().instrument(tracer_provider=tp)
        wrapt.wrap_function_wrapper(redis.Redis, "execute_command", _contrib_redis_duration)
        Psycopg2Instrumentor().instrument(tracer_provider=tp, meter_provider=mp, skip_dep_check=True)
        HTTPXClientInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    else:
        import redis

        if hasattr(redis.Redis.execute_command, "__wrapped__"):
            redis.Redis.execute_command = redis.Redis.execute_command.__wrapped__  # type: ignore[method-assign]
        RedisInstrumentor().uninstrument()
        Psycopg2Instrumentor().uninstrument()
        HTTPXClientInstrumentor().uninstrument()


def _instrumented(on: bool | str) -> None:
    """Switch to "none", "contrib" (contrib instrumentations + the same metrics) or "otelkit"."""
    global _state
    wanted = {True: "otelkit", False: "none"}.get(on, on) if isinstance(on, bool) else on
    if wanted == _state:
        return
    from otelkit import _instrument
    from otelkit._config import resolve

    if _state == "otelkit":
        _instrument.uninstrument_all()
    elif _state == "contrib":
        _contrib(False)
    if wanted == "otelkit":
        tp, mp = _providers()
        _instrument.instrument_all(resolve(instrument=["redis", "psycopg2", "httpx"], system_metrics=False), tp, mp)
    elif wanted == "contrib":
        _contrib(True)
    _state = wanted


# --- redis ----------------------------------------------------------------------------------------

@functools.cache
def _redis() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    key = f"otelkit-bench-{uuid.uuid4().hex}"
    client.set(key, "v", ex=600)
    return client, key


def _redis_get(loops: int, on: bool | str) -> float:
    _instrumented(on)
    client, key = _redis()
    t0 = time.perf_counter()
    for _ in range(loops):
        client.get(key)
    return time.perf_counter() - t0


def _redis_pipeline(loops: int, on: bool | str) -> float:
    _instrumented(on)
    client, key = _redis()
    t0 = time.perf_counter()
    for _ in range(loops):
        with client.pipeline(transaction=False) as pipe:
            pipe.get(key).get(key).get(key).execute()
    return time.perf_counter() - t0


# --- psycopg2 -------------------------------------------------------------------------------------

_pg: dict[Any, Any] = {}


def _pg_conn(on: bool | str) -> Any:
    # psycopg2.connect is what the instrumentation patches: each side keeps the connection it made.
    if on not in _pg:
        import psycopg2

        conn = psycopg2.connect(POSTGRES_DSN)
        conn.autocommit = True
        _pg[on] = conn
    return _pg[on]


def _pg_select(loops: int, on: bool | str) -> float:
    _instrumented(on)
    conn = _pg_conn(on)
    t0 = time.perf_counter()
    for i in range(loops):
        with conn.cursor() as cur:
            cur.execute("SELECT %s, 'literal'", (i,))
            cur.fetchone()
    return time.perf_counter() - t0


def _pg_transaction(loops: int, on: bool | str) -> float:
    _instrumented(on)
    import psycopg2

    key = ("tx", on)
    if key not in _pg:
        _pg[key] = psycopg2.connect(POSTGRES_DSN)
    conn = _pg[key]
    t0 = time.perf_counter()
    for _ in range(loops):
        with conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    return time.perf_counter() - t0


# --- httpx ----------------------------------------------------------------------------------------

@functools.cache
def _http() -> tuple[Any, str]:
    import atexit

    import httpx

    # stderr to /dev/null: an inherited stderr pipe would keep a capturing parent (callgrind runs) waiting.
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
    client = httpx.Client()
    return client, f"http://127.0.0.1:{port}/x?token=abc&page=1"


def _httpx_get(loops: int, on: bool | str) -> float:
    _instrumented(on)
    client, url = _http()
    t0 = time.perf_counter()
    for _ in range(loops):
        client.get(url)
    return time.perf_counter() - t0


def _pair(fn: Any) -> tuple[Any, Any]:
    def ours(loops: int) -> float:
        return float(fn(loops, True))

    def raw(loops: int) -> float:
        return float(fn(loops, False))

    ours.__name__ = f"{fn.__name__}_otelkit"
    raw.__name__ = f"{fn.__name__}_raw"
    return ours, raw


def _vs_contrib(fn: Any) -> tuple[Any, Any]:
    def ours(loops: int) -> float:
        return float(fn(loops, "otelkit"))

    def contrib(loops: int) -> float:
        return float(fn(loops, "contrib"))

    ours.__name__ = f"{fn.__name__}_otelkit"
    contrib.__name__ = f"{fn.__name__}_contrib"
    return ours, contrib


# Callgrind targets (``bench_instrument:redis_get_none`` ...), one side each.
CALLS = {"redis GET": _redis_get, "psycopg2 SELECT": _pg_select, "httpx GET": _httpx_get}
for _call_name, _fn in CALLS.items():
    for _side in ("none", "contrib", "otelkit"):
        globals()[f"{_fn.__name__.lstrip('_')}_{_side}"] = functools.partial(_fn, on=_side)

CONTRIB_NOTE = (
    "Both instrumented sides record the same telemetry per call: one CLIENT span with the stable "
    "database/http attributes into a BatchSpanProcessor (null exporter), and the same histograms into an "
    "InMemoryMetricReader: redis db.client.operation.duration (contrib side: RedisInstrumentor + a user "
    "wrapper recording it); psycopg2 db.client.operation.duration + db.client.response.returned_rows "
    "(contrib side: Psycopg2Instrumentor's own, database opt-in); httpx http.client.request.duration "
    "(contrib side: HTTPXClientInstrumentor's own, http opt-in). 'none' is the library uninstrumented."
)


def custom(fast: bool) -> list[dict[str, Any]]:
    """Instructions per call added by otelkit vs added by the contrib pieces, on the application thread."""
    import _callgrind

    if not _callgrind.available():
        return []
    rows = []
    lo, hi = (10, 40) if fast else (20, 120)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:  # valgrind runs are single-threaded: 2 cores, 2 at once
        futures = {(label, side): pool.submit(_callgrind.per_op, f"bench_instrument:{fn.__name__.lstrip('_')}_{side}",
                                              lo, hi)
                   for label, fn in CALLS.items() for side in ("none", "contrib", "otelkit")}
        results = {key: future.result() for key, future in futures.items()}
    for label in CALLS:
        counts = {side: results[(label, side)] for side in ("none", "contrib", "otelkit")}
        ours, theirs = counts["otelkit"] - counts["none"], counts["contrib"] - counts["none"]
        rows.append({"label": f"{label}: instructions added per call, otelkit vs contrib + same metrics (callgrind)",
                     "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs],
                     "target": 1.0,
                     "extra": {"instructions": {"otelkit": ours, "raw": theirs}, "per_call": counts},
                     "note": (f"uninstrumented {counts['none']:,.0f}, contrib {counts['contrib']:,.0f}, "
                              f"otelkit {counts['otelkit']:,.0f} instructions per call")})
    rows[-1]["note"] += ". " + CONTRIB_NOTE
    return rows


# Instruction counts of these calls come from custom() (three sides: none, contrib, otelkit).
_NO_CG = {"callgrind": False}

PAIRS: list[tuple[Any, ...]] = [
    ("redis GET: otelkit vs contrib + same metric (wall)", *_vs_contrib(_redis_get), 1.0, _NO_CG),
    ("psycopg2 SELECT: otelkit vs contrib + same metrics (wall)", *_vs_contrib(_pg_select), 1.0, _NO_CG),
    ("httpx GET: otelkit vs contrib + same metric (wall)", *_vs_contrib(_httpx_get), 1.0, _NO_CG),
    ("redis GET (real server)", *_pair(_redis_get), None, _NO_CG),
    ("redis pipeline of 3 GETs (real server)", *_pair(_redis_pipeline), None, _NO_CG),
    ("psycopg2 SELECT with a parameter (real server)", *_pair(_pg_select), None, _NO_CG),
    ("psycopg2 `with conn:` transaction, 1 statement", *_pair(_pg_transaction), None, _NO_CG),
    ("httpx GET, keep-alive (local server process)", *_pair(_httpx_get), None, _NO_CG),
]


if __name__ == "__main__":  # quick look without the harness
    for label, ours_fn, raw_fn, *_rest in PAIRS:
        n = 300
        a = [ours_fn(n) / n * 1e6 for _ in range(5)]
        b = [raw_fn(n) / n * 1e6 for _ in range(5)]
        print(f"{label}: instrumented {statistics.median(a):.1f} µs, uninstrumented {statistics.median(b):.1f} µs, "
              f"ratio {statistics.median(a) / statistics.median(b):.2f}")
