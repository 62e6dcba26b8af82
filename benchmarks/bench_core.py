"""Core hot paths and start-up, each against its raw-SDK counterpart (issue 8 targets 1, 3 and 5).

* ``otelkit.span`` as a context manager / decorator vs ``tracer.start_as_current_span``
  on the same ``TracerProvider`` with the same ``BatchSpanProcessor`` (target 1: ≤ 1.0×);
* the same through ``otelkit.init()`` (proxy provider + correlation processor) vs a
  hand-built provider (informational: what a user of ``init()`` pays per span);
* a log call inside a span with a correlation ID in baggage, through otelkit's record
  factory, handler and OTLP log pipeline, vs the SDK ``LoggingHandler`` with its
  ``BatchLogRecordProcessor(OTLPLogExporter)`` (target 3: ≤ 1.1×); both encode on their export
  thread, neither touches the network (each side's HTTP send is stubbed to "accepted");
* the same log call into a ``BatchLogRecordProcessor`` passed to ``init(log_processors=...)``
  (informational: otelkit scrubs what such a processor gets on the caller's thread, since it
  may export on its own). The raw sides run with the stdlib record factory
  (otelkit's is swapped out while it is timed), so they pay nothing of otelkit's;
* ``import otelkit`` + ``init()`` wall time and RSS vs importing and wiring the same SDK
  pieces (gRPC exporters, three providers, batch processors, logging handler) by hand,
  each in fresh subprocesses (target 5: ≤ 1.2×).

Exporters discard everything (``Null*Exporter``): the export path is ``bench_export.py``'s.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

# Captured before otelkit is imported anywhere in this process.
_STDLIB_FACTORY = logging.getLogRecordFactory()
_STDLIB_MAKE_RECORD = logging.Logger.makeRecord


class NullSpanExporter(SpanExporter):
    """Accepts and discards spans."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class NullLogExporter(LogRecordExporter):
    """Accepts and discards log records."""

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _otelkit_init(**extra: Any) -> None:
    import otelkit

    otelkit.init(service_name="bench", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                 instrument=(), system_metrics=False, **extra)


# --- spans -------------------------------------------------------------------------------------------


@functools.cache
def _shared_provider() -> trace.Tracer:
    """One SDK provider set as the global: otelkit.span and the raw tracer both use it."""
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    trace.set_tracer_provider(tp)
    return tp.get_tracer("bench")


def span_cm_otelkit(loops: int) -> float:
    _shared_provider()
    from otelkit import span

    t0 = time.perf_counter()
    for _ in range(loops):
        with span("op"):
            pass
    return time.perf_counter() - t0


def span_cm_raw(loops: int) -> float:
    tracer = _shared_provider()
    t0 = time.perf_counter()
    for _ in range(loops):
        with tracer.start_as_current_span("op"):
            pass
    return time.perf_counter() - t0


def span_attrs_otelkit(loops: int) -> float:
    _shared_provider()
    from otelkit import span

    t0 = time.perf_counter()
    for i in range(loops):
        with span("op", job="import", attempt=i, ok=True):
            pass
    return time.perf_counter() - t0


def span_attrs_raw(loops: int) -> float:
    tracer = _shared_provider()
    t0 = time.perf_counter()
    for i in range(loops):
        with tracer.start_as_current_span("op", attributes={"job": "import", "attempt": i, "ok": True}):
            pass
    return time.perf_counter() - t0


@functools.cache
def _decorated() -> tuple[Callable[[], None], Callable[[], None]]:
    tracer = _shared_provider()
    from otelkit import span

    @span("op")
    def with_otelkit() -> None:
        pass

    @tracer.start_as_current_span("op")
    def with_raw() -> None:
        pass

    return with_otelkit, with_raw


def span_decorator_otelkit(loops: int) -> float:
    fn = _decorated()[0]
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return time.perf_counter() - t0


def span_decorator_raw(loops: int) -> float:
    fn = _decorated()[1]
    t0 = time.perf_counter()
    for _ in range(loops):
        fn()
    return time.perf_counter() - t0


@functools.cache
def _init_pipeline() -> trace.Tracer:
    """otelkit.init() with a discarding batch processor, and a raw provider with the same one."""
    _otelkit_init(span_processors=[BatchSpanProcessor(NullSpanExporter())])
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    return tp.get_tracer("bench")


def init_span_otelkit(loops: int) -> float:
    _init_pipeline()
    from otelkit import span

    t0 = time.perf_counter()
    for _ in range(loops):
        with span("op"):
            pass
    return time.perf_counter() - t0


def init_span_raw(loops: int) -> float:
    tracer = _init_pipeline()
    t0 = time.perf_counter()
    for _ in range(loops):
        with tracer.start_as_current_span("op"):
            pass
    return time.perf_counter() - t0


# --- logs --------------------------------------------------------------------------------------------


@functools.cache
def _log_setup() -> tuple[logging.Logger, logging.Logger, trace.Tracer, Callable[..., logging.LogRecord]]:
    _otelkit_init(span_processors=[BatchSpanProcessor(NullSpanExporter())],
                  log_processors=[BatchLogRecordProcessor(NullLogExporter())])
    otelkit_factory = logging.getLogRecordFactory()
    app = logging.getLogger("bench.otelkit")
    app.setLevel(logging.INFO)

    lp = LoggerProvider()
    lp.add_log_record_processor(BatchLogRecordProcessor(NullLogExporter()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK handler is deprecated, still the baseline
        from opentelemetry.sdk._logs import LoggingHandler

        handler = LoggingHandler(logger_provider=lp)
    raw = logging.getLogger("bench.raw")
    raw.setLevel(logging.INFO)
    raw.propagate = False
    raw.addHandler(handler)
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    return app, raw, tp.get_tracer("bench"), otelkit_factory


def _with_correlation() -> object:
    return context.attach(baggage.set_baggage("correlation_id", "order-1234"))


def _time_otelkit_logs(setup: Callable[[], tuple[Any, ...]], loops: int) -> float:
    app, _, _, _ = setup()
    from otelkit import span

    token = _with_correlation()
    try:
        with span("request"):
            t0 = time.perf_counter()
            for i in range(loops):
                app.info("processed order %s", i)
            return time.perf_counter() - t0
    finally:
        context.detach(token)  # type: ignore[arg-type]


def _time_raw_logs(setup: Callable[[], tuple[Any, ...]], loops: int) -> float:
    _, raw, tracer, otelkit_factory = setup()
    otelkit_make_record = logging.Logger.makeRecord
    logging.setLogRecordFactory(_STDLIB_FACTORY)
    logging.Logger.makeRecord = _STDLIB_MAKE_RECORD  # type: ignore[method-assign]
    token = _with_correlation()
    try:
        with tracer.start_as_current_span("request"):
            t0 = time.perf_counter()
            for i in range(loops):
                raw.info("processed order %s", i)
            return time.perf_counter() - t0
    finally:
        context.detach(token)  # type: ignore[arg-type]
        logging.setLogRecordFactory(otelkit_factory)
        logging.Logger.makeRecord = otelkit_make_record  # type: ignore[method-assign]


def log_otelkit(loops: int) -> float:
    return _time_otelkit_logs(_log_setup, loops)


def log_raw(loops: int) -> float:
    return _time_raw_logs(_log_setup, loops)


class _Accepted:
    """What the SDK's OTLP HTTP client returns for an accepted request (no network in these rows)."""

    success = True
    error = None
    status_code = 200


@functools.cache
def _otlp_log_setup() -> tuple[logging.Logger, logging.Logger, trace.Tracer, Callable[..., logging.LogRecord]]:
    """Each side's real OTLP log pipeline (encoding on its export thread), the network send stubbed out.

    otelkit: ``init(logs_exporter="otlp")`` with its HTTP sender accepting every request in-process
    (scrubbing and encoding happen on the export thread, as in production). Raw: the SDK
    ``LoggingHandler`` + ``BatchLogRecordProcessor(OTLPLogExporter())`` with the exporter's HTTP
    client accepting every request.
    """
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    from otelkit import _export

    class AcceptingSender(_export.Sender):
        def __init__(self, signal: str, *args: Any, **kwargs: Any) -> None:
            self.signal, self.target = signal, "in-process"

        def send(self, payload: bytes, timeout: float) -> Any:
            return _export.SendResult(_export.OK)

    _export.HttpSender = AcceptingSender  # type: ignore[misc]  # this benchmark process only
    import otelkit

    otelkit.init(service_name="bench", traces_exporter="none", metrics_exporter="none", logs_exporter="otlp",
                 protocol="http/protobuf", endpoint="http://127.0.0.1:9",
                 instrument=(), system_metrics=False, span_processors=[BatchSpanProcessor(NullSpanExporter())])
    otelkit_factory = logging.getLogRecordFactory()
    app = logging.getLogger("bench.otelkit.otlp")
    app.setLevel(logging.INFO)

    exporter = OTLPLogExporter(endpoint="http://127.0.0.1:9/v1/logs")
    exporter._client.export = lambda *args, **kwargs: _Accepted()  # type: ignore[method-assign]
    lp = LoggerProvider()
    lp.add_log_record_processor(BatchLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from opentelemetry.sdk._logs import LoggingHandler

        handler = LoggingHandler(logger_provider=lp)
    raw = logging.getLogger("bench.raw.otlp")
    raw.setLevel(logging.INFO)
    raw.propagate = False
    raw.addHandler(handler)
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    return app, raw, tp.get_tracer("bench"), otelkit_factory


def log_otlp_otelkit(loops: int) -> float:
    return _time_otelkit_logs(_otlp_log_setup, loops)


def log_otlp_raw(loops: int) -> float:
    return _time_raw_logs(_otlp_log_setup, loops)


# --- start-up ----------------------------------------------------------------------------------------

_RSS = """
def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
"""

_STARTUP_OTELKIT = _RSS + """
import json, os, time
t0 = time.perf_counter()
import otelkit
otelkit.init(service_name="bench", endpoint=ENDPOINT, protocol="grpc", instrument=INSTRUMENT, system_metrics=False)
t1 = time.perf_counter()
print(json.dumps({"ms": (t1 - t0) * 1e3, "rss": _rss_mb()}), flush=True)
os._exit(0)  # skip atexit: nothing to measure there, and the endpoint is refused
"""

_STARTUP_RAW = _RSS + """
import json, os, time
t0 = time.perf_counter()
import logging
from opentelemetry import _logs, metrics, trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
LOGGING_HANDLER_IMPORT
resource = Resource.create({"service.name": "bench"})
tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=ENDPOINT, insecure=True)))
trace.set_tracer_provider(tp)
mp = MeterProvider(resource=resource, metric_readers=[
    PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=ENDPOINT, insecure=True))])
metrics.set_meter_provider(mp)
lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=ENDPOINT, insecure=True)))
_logs.set_logger_provider(lp)
logging.getLogger().addHandler(LoggingHandler(logger_provider=lp))
for name in INSTRUMENT:
    if name == "redis":
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        RedisInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif name == "psycopg2":
        from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor
        Psycopg2Instrumentor().instrument(tracer_provider=tp, meter_provider=mp, skip_dep_check=True)
    elif name == "httpx":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        HTTPXClientInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
t1 = time.perf_counter()
print(json.dumps({"ms": (t1 - t0) * 1e3, "rss": _rss_mb()}), flush=True)
os._exit(0)
"""


# The hand-wired baselines differ only in the stdlib logging handler that feeds the OTLP log pipeline.
_HANDLERS = {
    # the SDK's own handler: the leanest honest baseline
    "sdk": "from opentelemetry.sdk._logs import LoggingHandler",
    # opentelemetry-instrumentation-logging's handler (imports the instrumentation package)
    "contrib": "from opentelemetry.instrumentation.logging.handler import LoggingHandler",
}


def _raw_script(handler: str) -> str:
    return _STARTUP_RAW.replace("LOGGING_HANDLER_IMPORT", _HANDLERS[handler])


def _refused_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _run_startup(script: str, endpoint: str, instrument: tuple[str, ...]) -> dict[str, float]:
    code = f"ENDPOINT = {endpoint!r}\nINSTRUMENT = {instrument!r}\n" + script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    # An installed wheel has its bytecode compiled by pip; a source tree run with
    # PYTHONDONTWRITEBYTECODE=1 (as this repository's environment is) would recompile
    # every otelkit module on every start, ~190 ms that no user pays. Cache bytecode
    # outside the tree; the warm-up run fills the cache for both sides.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "otelkit-bench-pycache")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            return {k: float(v) for k, v in json.loads(line).items()}
    raise RuntimeError(f"start-up script failed: {proc.stderr.strip()[-500:]}")


def _startup_instructions(script: str, endpoint: str, instrument: tuple[str, ...]) -> int:
    """Instructions of the whole start-up (main thread) under callgrind: repeatable on a busy machine."""
    import _callgrind

    code = f"ENDPOINT = {endpoint!r}\nINSTRUMENT = {instrument!r}\n" + script
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tempfile.gettempdir(), "otelkit-bench-pycache")
    return _callgrind.instructions_of_command([sys.executable, "-c", code], env)


def _startup_rows(label: str, instrument: tuple[str, ...], runs: int, target: float | None,
                  handler: str = "sdk", callgrind: bool = False) -> list[dict[str, Any]]:
    endpoint = _refused_endpoint()
    raw_script = _raw_script(handler)
    # Warm the OS page cache for both, so the first measured run is not the cold one.
    _run_startup(_STARTUP_OTELKIT, endpoint, instrument)
    _run_startup(raw_script, endpoint, instrument)
    ours: list[dict[str, float]] = []
    theirs: list[dict[str, float]] = []
    for i in range(runs):
        order = [(_STARTUP_OTELKIT, ours), (raw_script, theirs)]
        for script, sink in order if i % 2 == 0 else reversed(order):
            sink.append(_run_startup(script, endpoint, instrument))
    wall: dict[str, Any] = {"label": f"{label}: wall time", "unit": "ms", "otelkit": [r["ms"] for r in ours],
                            "raw": [r["ms"] for r in theirs], "target": target}
    if callgrind:
        import _callgrind

        if _callgrind.available():
            wall["extra"] = {"instructions": {"otelkit": _startup_instructions(_STARTUP_OTELKIT, endpoint, instrument),
                                              "raw": _startup_instructions(raw_script, endpoint, instrument)}}
    return [
        wall,
        {"label": f"{label}: RSS after init", "unit": "MB", "otelkit": [r["rss"] for r in ours],
         "raw": [r["rss"] for r in theirs], "target": target},
    ]


def custom(fast: bool) -> list[dict[str, Any]]:
    """Start-up rows: minimal pieces (target 5), and with the default instrumentations (informational)."""
    runs = 3 if fast else 12
    # Baselines (both hand-wire the same SDK pieces: TracerProvider + BatchSpanProcessor + OTLP gRPC span
    # exporter, MeterProvider + PeriodicExportingMetricReader + OTLP gRPC metric exporter, LoggerProvider +
    # BatchLogRecordProcessor + OTLP gRPC log exporter, a Resource with service.name, the three globals set,
    # and a stdlib logging handler on the root logger); they differ only in that handler:
    rows = _startup_rows("import + init vs hand-wired SDK pieces with the SDK's LoggingHandler (leanest), gRPC", (),
                         runs, 1.2, handler="sdk", callgrind=True)
    rows += _startup_rows("import + init vs hand-wired SDK pieces with opentelemetry-instrumentation-logging's "
                          "handler, gRPC", (), runs, None, handler="contrib")
    rows += _startup_rows("import + init + redis/psycopg2/httpx instrumentation (SDK LoggingHandler baseline)",
                          ("redis", "psycopg2", "httpx"), max(3, runs // 2), None, handler="sdk")
    return rows


# --- peer: Logfire ---------------------------------------------------------------------------------
# Logfire's span on its own provider (configured not to send, no console) with the same discarding batch
# processor. Same span name and no attributes on both sides; Logfire adds what it always records: its
# message template and message, the span type, and the caller's source location (code.filepath,
# code.lineno, code.function), plus its own pending-span machinery.


@functools.cache
def _logfire() -> Any:
    import logfire

    logfire.configure(send_to_logfire=False, console=False, service_name="bench", inspect_arguments=False,
                      metrics=False, additional_span_processors=[BatchSpanProcessor(NullSpanExporter())])
    return logfire


def span_logfire(loops: int) -> float:
    logfire = _logfire()
    t0 = time.perf_counter()
    for _ in range(loops):
        with logfire.span("op"):
            pass
    return time.perf_counter() - t0


def span_raw_own_provider(loops: int) -> float:
    """The raw SDK span for the Logfire row: same discarding processor, its own global provider."""
    tracer = _shared_provider()
    t0 = time.perf_counter()
    for _ in range(loops):
        with tracer.start_as_current_span("op"):
            pass
    return time.perf_counter() - t0


PAIRS = [
    ("span: context manager, same provider", span_cm_otelkit, span_cm_raw, 1.0),
    ("span: context manager, 3 attributes", span_attrs_otelkit, span_attrs_raw, 1.0),
    ("span: decorator, same provider", span_decorator_otelkit, span_decorator_raw, 1.0),
    ("span: via init() (proxy + correlation processor)", init_span_otelkit, init_span_raw, None),
    ("log call in span, trace+correlation fields, OTLP pipeline", log_otlp_otelkit, log_otlp_raw, 1.1),
    ("log call in span, into a processor passed to init() (scrubbed on the caller's thread)", log_otelkit, log_raw,
     None),
    ("peer: Logfire span (logfire.span, discarding processor) vs raw SDK span; 'otelkit' column = Logfire",
     span_logfire, span_raw_own_provider, None),
]


if __name__ == "__main__":  # quick look without the harness
    for label, ours_fn, raw_fn, _target in PAIRS:
        a = [ours_fn(20000) / 20000 * 1e6 for _ in range(5)]
        b = [raw_fn(20000) / 20000 * 1e6 for _ in range(5)]
        print(f"{label}: otelkit {statistics.median(a):.2f} µs, raw {statistics.median(b):.2f} µs")
