"""PLACEHOLDER (owner: export/reliability). Concurrent flush + shutdown under one deadline."""

from __future__ import annotations

from typing import Any

from otelkit._stats import ShutdownReport


def shutdown_providers(tracer_provider: Any, meter_provider: Any, logger_provider: Any, timeout: float) -> ShutdownReport:
    for p in (tracer_provider, meter_provider, logger_provider):
        if p is not None:
            p.shutdown()
    return ShutdownReport()
