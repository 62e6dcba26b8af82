"""Memory stays bounded while the collector is down; the excess is dropped, counted and reported.

CI emits 50 000 spans and log records against a refused collector; the 1 000 000-span run of
issue 7 is marked slow. RSS is measured inside the child (peak over the run minus a warmed-up
baseline), the drop counts come from the child's own shutdown report.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from otelkit.testing._receiver import refused_endpoint

APP = Path(__file__).parent / "apps" / "memory_app.py"
QUEUE = 8192  # otelkit's default OTEL_BSP_MAX_QUEUE_SIZE / OTEL_BLRP_MAX_QUEUE_SIZE


def run(count: int) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({
        "OTEL_SERVICE_NAME": "memory-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{refused_endpoint()}",
        "OTEL_METRICS_EXPORTER": "none",
        "OTELKIT_SHUTDOWN_TIMEOUT": "1000",
        "OTELKIT_SYSTEM_METRICS": "false",
    })
    result = subprocess.run([sys.executable, str(APP), str(count)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    growth = float(re.search(r"RSS_GROWTH_MB ([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    report = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    return growth, report


def check(count: int) -> None:
    growth, report = run(count)
    assert growth < 50, f"RSS grew {growth} MB for {count} spans + log records with the collector down"
    for signal, noun in (("traces", "spans"), ("logs", "log records")):
        part = re.search(rf"{signal}: 0 {noun} exported, ([^;]*)", report)
        assert part, report
        drops = {reason: int(n) for n, reason in re.findall(r"(\d+) dropped \((\w+)", part.group(1))}
        queue_full = drops.pop("queue_full", 0)
        # Left at shutdown: export_failed when the circuit was open (collector known down, given up at once),
        # shutdown_timeout when retrying used the whole deadline.
        at_shutdown = drops.pop("export_failed", 0) + drops.pop("shutdown_timeout", 0)
        assert queue_full and not drops, report
        # Every item is accounted for: warm-up + run = dropped because full + still queued at the deadline.
        assert queue_full + at_shutdown == count + 2000, report
        assert at_shutdown <= QUEUE, report


def test_memory_is_bounded_with_the_collector_down() -> None:
    check(50_000)


@pytest.mark.slow
def test_memory_is_bounded_for_a_million_spans() -> None:
    check(1_000_000)
