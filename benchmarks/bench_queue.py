"""otelkit's own span queue against the SDK's ``BatchSpanProcessor`` carrying otelkit's exporter (issue 20, part 2).

Both sides encode with otelkit's encoder and send with otelkit's sender (``otelkit._export.transport``) to
the real ``rotel`` collector (blackhole exporter), with the same sizes (queue 8192, batch 2048, delay 1 s)
and no scrubbing; only the queue differs:

* **otelkit** (the "otelkit" column): ``otelkit.init()`` with ``OTELKIT_SCRUB=false``, i.e. otelkit's own
  batch pipeline (``otelkit/_export/batching.py``);
* **sdkbsp** (the "raw" column): ``TracerProvider`` + the SDK's ``BatchSpanProcessor`` + a 10-line
  ``SpanExporter`` calling ``encode_spans`` and ``Sender.send`` (no retry, no split, no spool).

Rows: spans/s delivered (first span to end of shutdown), the export thread's CPU per delivered span (CPU
of every non-application thread / delivered), quiet and with two CPU-hog processes; gRPC and HTTP. The
notes give the spans dropped per run on each side.

Run: ``.venv/bin/python benchmarks/run.py --only queue`` or ``.venv/bin/python benchmarks/bench_queue.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_export import SPANS, SPANS_FAST, _run


def custom(fast: bool) -> list[dict[str, Any]]:
    count = SPANS_FAST if fast else SPANS
    rounds = 1 if fast else 3
    sides = ("otelkit-noscrub", "sdkbsp")
    rows: list[dict[str, Any]] = []
    for protocol, hog in (("grpc", False), ("http", False), ("grpc", True), ("http", True)):
        rates: dict[str, list[float]] = {s: [] for s in sides}
        lost: dict[str, list[float]] = {s: [] for s in sides}
        per_span: dict[str, list[float]] = {s: [] for s in sides}
        for i in range(rounds):
            for side in (sides if i % 2 == 0 else tuple(reversed(sides))):
                result = _run(side, protocol, count, hog)
                rates[side].append(result["exported"] / result["elapsed"])
                lost[side].append(result["count"] - result["exported"])
                per_span[side].append(result["other_cpu"] / max(1, result["exported"]) * 1e6)
        under = ", 2 CPU hogs" if hog else ""
        rows.append({
            "label": f"own queue vs SDK BatchSpanProcessor, both otelkit's encoder+sender, spans/s, {protocol}{under}",
            "unit": "spans/s", "otelkit": rates["otelkit-noscrub"], "raw": rates["sdkbsp"], "target": None,
            "higher_is_better": True,
            "note": (f"queue, {protocol}{under}: {count} spans per run; dropped per run: own queue "
                     f"{statistics.median(lost['otelkit-noscrub']):.0f}, SDK BatchSpanProcessor "
                     f"{statistics.median(lost['sdkbsp']):.0f}"),
        })
        rows.append({
            "label": f"own queue vs SDK BatchSpanProcessor, export thread CPU per span, {protocol}{under}",
            "unit": "µs/span", "otelkit": per_span["otelkit-noscrub"], "raw": per_span["sdkbsp"], "target": None,
            "note": "CPU of every non-application thread / spans delivered",
        })
    return rows


if __name__ == "__main__":
    fast = "--fast" in sys.argv
    for row in custom(fast):
        print(f"{row['label']}: own {statistics.median(row['otelkit']):,.1f} vs sdk "
              f"{statistics.median(row['raw']):,.1f} {row['unit']} -> "
              f"{statistics.median(row['otelkit']) / statistics.median(row['raw']):.2f}x; {row['note']}")
