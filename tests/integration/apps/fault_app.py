"""One side of the export fault matrix (run as a subprocess by ``tests/integration/fault_matrix.py``).

Usage: python fault_app.py otelkit|sdk SPANS LOGS SECONDS [BLOB_BYTES]

Emits SPANS spans (attribute ``seq``) and LOGS log records (body ``log <seq>``), paced evenly over SECONDS
(0: as fast as possible), each span with a ``blob`` attribute of BLOB_BYTES bytes when given, then shuts
down and prints one ``RESULT {json}`` line on stdout.

* ``otelkit``: ``otelkit.init()`` configured only by the environment (OTEL_*, OTELKIT_*), then
  ``otelkit.shutdown()``; the JSON holds its shutdown report, number by number.
* ``sdk``: the raw OpenTelemetry SDK as its documentation sets it up: ``BatchSpanProcessor`` /
  ``BatchLogRecordProcessor`` around the OTLP exporters of ``OTEL_EXPORTER_OTLP_PROTOCOL``, with the same
  endpoint and the same timeout (given in seconds, as the exporters take it), then the providers'
  ``shutdown()``. The SDK reports nothing: the JSON only holds the time it took.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

from opentelemetry._logs import LogRecord


def _otelkit() -> tuple[Any, Any, Any]:
    import otelkit

    otelkit.init(service_name="fault-matrix", instrument=(), system_metrics=False, metrics_exporter="none")
    from opentelemetry import _logs, trace

    def shutdown() -> dict[str, Any]:
        report = otelkit.shutdown()
        return {"report": str(report), "signals": {
            name: {"exported": s.exported, "dropped": dict(s.dropped), "unanswered": s.unanswered,
                   "resent": s.resent, "spooled": s.spooled, "spool_bad_files": s.spool_bad_files,
                   "timed_out": s.timed_out, "causes": dict(s.causes)}
            for name, s in report.signals.items()}}

    return trace.get_tracer("fault-matrix"), _logs.get_logger("fault-matrix"), shutdown


def _sdk() -> tuple[Any, Any, Any]:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]
    timeout = float(os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")) / 1000
    span_exporter: Any
    log_exporter: Any
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        span_exporter = GrpcSpans(endpoint=endpoint, insecure=True, timeout=timeout)
        log_exporter = GrpcLogs(endpoint=endpoint, insecure=True, timeout=timeout)
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

        span_exporter = HttpSpans(endpoint=f"{endpoint}/v1/traces", timeout=timeout)
        log_exporter = HttpLogs(endpoint=f"{endpoint}/v1/logs", timeout=timeout)
    resource = Resource.create({"service.name": "fault-matrix"})
    tp = TracerProvider(resource=resource, shutdown_on_exit=False)
    tp.add_span_processor(BatchSpanProcessor(span_exporter))
    lp = LoggerProvider(resource=resource, shutdown_on_exit=False)
    lp.add_log_record_processor(BatchLogRecordProcessor(log_exporter))

    def shutdown() -> dict[str, Any]:
        tp.shutdown()
        lp.shutdown()
        return {}

    return tp.get_tracer("fault-matrix"), lp.get_logger("fault-matrix"), shutdown


def main() -> None:
    mode, spans, logs, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    blob = "b" * int(sys.argv[5]) if len(sys.argv) > 5 else ""
    offset = int(os.environ.get("FAULT_SEQ_OFFSET", "0"))  # a second run's items stay apart from the first's
    tracer, otel_logger, shutdown = _otelkit() if mode == "otelkit" else _sdk()
    pace = threading.Event()
    start = time.monotonic()
    total = max(spans, logs)
    for i in range(total):
        if i < spans:
            attributes: dict[str, Any] = {"seq": offset + i}
            if blob:
                attributes["blob"] = blob
            with tracer.start_as_current_span("fault-span", attributes=attributes):
                pass
        if i < logs:
            otel_logger.emit(LogRecord(body=f"log {offset + i}", severity_text="INFO"))
        if seconds and i % 50 == 49:
            pace.wait(max(0.0, start + seconds * (i + 1) / total - time.monotonic()))
    emitted = time.monotonic()
    result = shutdown()
    result["shutdown_seconds"] = round(time.monotonic() - emitted, 2)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
