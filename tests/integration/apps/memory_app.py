"""Emit many spans and log records while the collector is down; print RSS growth and the report.

Usage: python memory_app.py COUNT   (configured through OTEL_* variables)
Prints ``RSS_GROWTH_MB <float>`` and ``REPORT <shutdown report>`` on stdout.
"""

from __future__ import annotations

import gc
import logging
import sys

import psutil
from opentelemetry import trace

import otelkit


def main() -> None:
    count = int(sys.argv[1])
    otelkit.init()
    tracer = trace.get_tracer("memory_app")
    log = logging.getLogger("memory_app")
    log.setLevel(logging.INFO)
    log.propagate = True
    process = psutil.Process()
    # Warm-up: imports, first exports and allocator arenas settle before the baseline.
    for i in range(2000):
        with tracer.start_as_current_span("warmup", attributes={"i": i}):
            log.info("warm %d", i)
    gc.collect()
    baseline = process.memory_info().rss
    peak = baseline
    for i in range(count):
        with tracer.start_as_current_span("work", attributes={"seq": i, "user.id": "u-12345", "path": "/orders/1"}):
            log.info("item %d", i)
        if i % 10_000 == 0:
            peak = max(peak, process.memory_info().rss)
    gc.collect()
    peak = max(peak, process.memory_info().rss)
    sys.stdout.write(f"RSS_GROWTH_MB {(peak - baseline) / 2**20:.1f}\n")
    sys.stdout.write(f"REPORT {otelkit.shutdown()}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
