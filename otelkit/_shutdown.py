"""Flush and shut down traces, metrics and logs concurrently under ONE deadline; never raise.

Upstream shuts the providers down one after the other, each waiting up to 30 s on a dead
collector (37-50 s measured for three signals). Here each provider shuts down on its own thread,
otelkit's processors and metric exporter read the shared deadline (``_export.set_shutdown_deadline``)
so no request outlives it, and whatever is still queued at the deadline is counted as
``shutdown_timeout`` in the report instead of holding the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from otelkit import _export
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS, ShutdownReport
from otelkit._internal_log import logger


def _cut_count(signal: str) -> int:
    """Items the deadline cut off: dropped as ``shutdown_timeout`` or left without an answer."""
    return STATS.dropped_for(signal).get(_stats.SHUTDOWN_TIMEOUT, 0) + STATS.unanswered_counts().get(signal, 0)


def _shutdown_one(signal: str, provider: Any, deadline: float) -> None:
    remaining_ms = max(0.0, deadline - time.monotonic()) * 1000
    if signal == "metrics":
        # MeterProvider.shutdown collects and exports once more; its readers take a timeout.
        provider.shutdown(timeout_millis=remaining_ms)
    else:
        provider.shutdown()


def shutdown_providers(tracer_provider: Any, meter_provider: Any, logger_provider: Any, timeout: float, *,
                       extra: Mapping[str, Callable[[float], object]] | None = None) -> ShutdownReport:
    """Shut the given SDK providers down concurrently within ``timeout`` seconds and report.

    ``None`` providers are skipped. ``extra`` maps a name to a callable taking the remaining seconds
    (e.g. ``{"sentry": sentry_sdk.flush}``); it runs under the same deadline and is not reported.
    Never raises; returns at the deadline (plus a few ms) even if an exporter is stuck.
    """
    start = time.monotonic()
    timeout = max(0.0, float(timeout))
    deadline = start + timeout
    providers = {"traces": tracer_provider, "metrics": meter_provider, "logs": logger_provider}
    active = {s: p for s, p in providers.items() if p is not None}
    before = {s: _cut_count(s) for s in active}
    errors: dict[str, str | None] = dict.fromkeys(active)
    threads: dict[str, threading.Thread] = {}
    _export.set_shutdown_deadline(deadline)
    try:
        for signal, provider in active.items():

            def run(signal: str = signal, provider: Any = provider) -> None:
                try:
                    _shutdown_one(signal, provider, deadline)
                except Exception as exc:
                    errors[signal] = f"{type(exc).__name__}: {exc}"
                    logger.debug("otelkit: shutting down %s failed", signal, exc_info=True)

            threads[signal] = threading.Thread(target=run, name=f"otelkit-shutdown-{signal}", daemon=True)
        for name, fn in (extra or {}).items():
            def run_extra(name: str = name, fn: Callable[[float], object] = fn) -> None:
                try:
                    fn(max(0.0, deadline - time.monotonic()))
                except Exception:
                    logger.debug("otelkit: shutdown step %s failed", name, exc_info=True)

            threads[f"extra:{name}"] = threading.Thread(target=run_extra, name=f"otelkit-shutdown-{name}",
                                                        daemon=True)
        for thread in threads.values():
            thread.start()
        for thread in threads.values():
            # A little grace past the deadline for processors that finish exactly at it.
            thread.join(max(0.0, deadline - time.monotonic()) + 0.1)
    except Exception:  # thread creation at interpreter exit can fail: report instead of raising
        logger.debug("otelkit: shutdown failed", exc_info=True)
    finally:
        _export.set_shutdown_deadline(None)
    metrics_thread = threads.get("metrics")
    if metrics_thread is not None and metrics_thread.is_alive():
        try:
            _export.abandon_stuck_metric_exporters()  # its points are counted, not left out of the report
        except Exception:
            logger.debug("otelkit: accounting for stuck metric exports failed", exc_info=True)
    timed_out = {}
    for signal in active:
        worker = threads.get(signal)
        cut = _cut_count(signal) > before[signal]
        timed_out[signal] = cut or worker is None or worker.is_alive()
    report = _stats.report_from_stats(timed_out, errors, time.monotonic() - start, timeout, signals=tuple(active))
    if report.timed_out or report.dropped or any(r.unanswered for r in report.signals.values()):
        _stats.warn("%s", report)
    else:
        logger.debug("%s", report)
    return report
