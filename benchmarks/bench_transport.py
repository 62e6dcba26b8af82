"""Where the export thread's time goes, per request (issue 17 part 3): encoding vs the transport, gRPC vs HTTP.

One batch of 2048 finished SDK spans (two attributes each, like ``bench_export``) is exported over and over
to the real ``rotel`` collector (blackhole exporter), in one process:

* **otelkit**: ``encode_spans`` (``otelkit/_export/encoding.py``) then ``Sender.send`` (``GrpcSender`` /
  ``HttpSender``, ``otelkit/_export/transport.py``);
* **raw**: the SDK's ``OTLPSpanExporter.export`` (its encoder, then its gRPC stub / ``requests`` session).

Rows (CPU per span, from ``time.process_time``: the calling thread plus gRPC's own C threads): the whole
export call; for otelkit also its parts (encode, and send alone), to show which part is the cost. Wall time
of a request is the collector's round trip and holds no GIL, so it is not a cost to the application.

Run: ``.venv/bin/python benchmarks/run.py --only transport`` or ``.venv/bin/python benchmarks/bench_transport.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_export import _rotel

BATCH = 2048


def _spans() -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    kept: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            kept.extend(spans)
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = tp.get_tracer("bench")
    for i in range(BATCH):
        with tracer.start_as_current_span("op", attributes={"i": i, "k": "v"}):
            pass
    return kept


def _cpu_per_span(fn: Any, calls: int) -> float:
    fn()  # connect, warm up
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls / BATCH * 1e6


def custom(fast: bool) -> list[dict[str, Any]]:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    from otelkit._export.encoding import encode_spans
    from otelkit._export.transport import OK, GrpcSender, HttpSender, Sender

    spans = _spans()
    payload = encode_spans(spans)
    calls = 10 if fast else 40
    rounds = 1 if fast else 3
    collector = _rotel().start()
    rows: list[dict[str, Any]] = []
    try:
        for protocol in ("grpc", "http"):
            sender: Sender
            if protocol == "grpc":
                sender = GrpcSender("traces", collector.grpc_endpoint)
                exporter: Any = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True)
            else:
                sender = HttpSender("traces", collector.http_endpoint + "/v1/traces")
                exporter = HttpExporter(endpoint=collector.http_endpoint + "/v1/traces")

            def ours(sender: Sender = sender) -> None:
                assert sender.send(encode_spans(spans), 10.0).kind == OK

            def send_only(sender: Sender = sender) -> None:
                assert sender.send(payload, 10.0).kind == OK

            def theirs(exporter: Any = exporter) -> None:
                exporter.export(spans)

            whole: dict[str, list[float]] = {"otelkit": [], "raw": []}
            encode: list[float] = []
            send: list[float] = []
            for _ in range(rounds):
                whole["otelkit"].append(_cpu_per_span(ours, calls))
                whole["raw"].append(_cpu_per_span(theirs, calls))
                send.append(_cpu_per_span(send_only, calls))
                encode.append(_cpu_per_span(lambda: encode_spans(spans), calls))
            sender.close()
            exporter.shutdown()
            note = (f"transport, {protocol}: {BATCH} spans per request ({len(payload):,} bytes); otelkit's split: "
                    f"encode {statistics.median(encode):.2f} µs/span, send {statistics.median(send):.2f} µs/span")
            rows.append({"label": f"export one {BATCH}-span request, CPU per span, {protocol} (encode+send vs SDK "
                                  "exporter)", "unit": "µs/span", "otelkit": whole["otelkit"], "raw": whole["raw"],
                         "target": None, "note": note})
            rows.append({"label": f"send alone (encoded request), CPU per span, {protocol}, vs encode alone",
                         "unit": "µs/span", "otelkit": send, "raw": encode, "target": None,
                         "note": f"transport, {protocol}: 'raw' column here = otelkit's encoder alone"})
    finally:
        collector.close()
    return rows


if __name__ == "__main__":
    for row in custom("--fast" in sys.argv):
        print(f"{row['label']}: otelkit {statistics.median(row['otelkit']):.2f} vs raw "
              f"{statistics.median(row['raw']):.2f} {row['unit']}; {row['note']}")
