"""A small instrumented program for reliability tests (run as a subprocess).

Usage: python emit_app.py SPANS [--explicit-shutdown]

Configured only through the environment (OTEL_*, OTELKIT_*). Emits SPANS spans (each with a log
record and a counter increment), prints ``EMITTED <n>`` on stderr when done, then exits: through
the atexit hook, or after ``otelkit.shutdown()`` whose report it prints on stdout as ``REPORT <text>``.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import metrics, trace

import otelkit


def main() -> None:
    count = int(sys.argv[1])
    # Like most services: warnings (otelkit's included) go to stderr.
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    otelkit.init()
    tracer = trace.get_tracer("emit_app")
    counter = metrics.get_meter("emit_app").create_counter("emit_app.items")
    log = logging.getLogger("emit_app")
    log.setLevel(logging.INFO)
    for i in range(count):
        with tracer.start_as_current_span("work", attributes={"seq": i}):
            log.info("item %d", i)
            counter.add(1)
    sys.stderr.write(f"EMITTED {count}\n")
    sys.stderr.flush()
    if "--explicit-shutdown" in sys.argv:
        report = otelkit.shutdown()
        sys.stdout.write(f"REPORT {report}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
