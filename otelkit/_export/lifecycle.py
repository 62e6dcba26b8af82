"""Process-wide export state: live pipelines, flushing them all, and resetting them in a forked child."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import (
    PeriodicExportingMetricReader,
)

from otelkit import _compat, _fork
from otelkit._export.batching import _LIVE, _LIVE_READERS, _BatchPipeline
from otelkit._export.metrics import OtlpMetricExporter
from otelkit._export.stats import STATS
from otelkit._internal_log import logger


def live_pipelines() -> list[_BatchPipeline[Any]]:
    return list(_LIVE)


def after_fork_in_child(*, forked_at: int | None = None) -> None:
    """Called by :mod:`otelkit._fork` in a forked child, before anything else runs there.

    ``forked_at`` (``time.time_ns()``): spans started before it belong to the parent; ``0`` when
    the fork time is unknown (detected late), then no span is treated as inherited."""
    STATS.reset()
    for pipeline in list(_LIVE):
        try:
            pipeline._after_fork_in_child(time.time_ns() if forked_at is None else forked_at)
        except Exception:
            logger.debug("otelkit: resetting an export pipeline after fork failed", exc_info=True)
    for reader in list(_LIVE_READERS):
        exporter = _compat.reader_exporter(reader)
        if isinstance(exporter, OtlpMetricExporter):
            try:
                exporter._after_fork_in_child()
            except Exception:
                logger.debug("otelkit: resetting a metric exporter after fork failed", exc_info=True)


def abandon_stuck_metric_exporters() -> None:
    """At the shutdown deadline, for a metrics shutdown still stuck in a request: account for its points."""
    for reader in list(_LIVE_READERS):
        exporter = _compat.reader_exporter(reader)
        if isinstance(exporter, OtlpMetricExporter):
            exporter.abandon()


def flush_all(timeout: float) -> bool:
    """Flush every live pipeline and metric reader of this process within ``timeout`` seconds, concurrently."""
    deadline = time.monotonic() + timeout
    results: list[bool] = []
    threads = []

    def run(fn: Callable[[], bool]) -> None:
        try:
            results.append(bool(fn()))
        except Exception:
            results.append(False)

    for pipeline in list(_LIVE):
        threads.append(threading.Thread(target=run, args=(lambda p=pipeline: p.force_flush(timeout * 1000),),
                                        daemon=True))
    for reader in list(_LIVE_READERS):
        if isinstance(reader, PeriodicExportingMetricReader):
            threads.append(threading.Thread(
                target=run, args=(lambda r=reader: r.force_flush(timeout_millis=timeout * 1000),), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return len(results) == len(threads) and all(results)


def _iter_processors(tracer_provider: Any) -> Iterable[Any]:
    return _compat.span_processors(tracer_provider)


def _reset_in_child(forked_at: int | None) -> None:
    after_fork_in_child(forked_at=forked_at)


# Fork handling calls back into the export path; it does not import it.
_fork.register(child_reset=_reset_in_child, exit_flush=flush_all)
