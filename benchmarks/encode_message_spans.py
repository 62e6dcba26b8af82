"""Export-thread cost of message spans: ``scrub_spans`` + ``encode_spans`` over 800 ``pipeline`` spans, ROUNDS times.

400 messages go through ``pipeline.emit`` + ``msg.wrap`` / ``pipeline.receive`` on an SDK provider with an in-memory
exporter (a send and a process span each, as in ``bench_message.py``); then the export thread's own work on them
(scrubbing, then OTLP encoding) is repeated ROUNDS times. Under callgrind, (instructions at 4 rounds − at 1) / 3 /
800 is the cost per span of that work (after the first round the scrub caches hold the correlation IDs, as they
would not in a real run where each ID is seen once per process):

    PYTHONPATH=. valgrind --tool=callgrind python benchmarks/encode_message_spans.py ROUNDS
"""

from __future__ import annotations

import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit import _scrub, pipeline
from otelkit._export import encoding


def main(rounds: int) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _scrub.configure()
    for i in range(400):
        with pipeline.emit("q", system="redis") as msg:
            raw = msg.wrap(json.dumps({"i": i}))
        with pipeline.receive("q", raw, system="redis"):
            pass
    spans = exporter.get_finished_spans()
    for _ in range(rounds):
        encoding.encode_spans(_scrub.scrub_spans(spans))


if __name__ == "__main__":
    main(int(sys.argv[1]))
