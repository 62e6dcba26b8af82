"""Bounded metric cardinality: at most N attribute sets per metric stream, the rest in one overflow series.

The OpenTelemetry Python SDK has no cardinality limit (opentelemetry-python#3234), so one unbounded
attribute value (a user ID, a URL) grows memory and the Prometheus series count without end. otelkit
applies the limit the metrics specification defines: each metric stream keeps ``limit - 1`` distinct
attribute sets; a measurement with a new set beyond that is aggregated into the series
``otel.metric.overflow=true`` (nothing is lost: sums and counts stay right, only the breakdown goes).
Each overflowed measurement is counted per stream, for the shutdown report and ``otelkit doctor``.

``OTELKIT_METRIC_CARDINALITY_LIMIT`` (default 2000, the spec's default) sets the limit; it applies to
every stream of every SDK ``MeterProvider`` in the process once ``init()`` ran.
"""

from __future__ import annotations

import threading

from otelkit import _compat
from otelkit._internal_log import logger

__all__ = ["DEFAULT_LIMIT", "OVERFLOW_ATTRIBUTE", "configure", "overflows", "reset"]

DEFAULT_LIMIT = 2000
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"


class _State:
    limit: int = DEFAULT_LIMIT


_state = _State()
_lock = threading.Lock()
_overflows: dict[str, int] = {}
_warned: set[str] = set()
_installed = False


def _overflowed(stream: str) -> None:
    with _lock:
        _overflows[stream] = _overflows.get(stream, 0) + 1
        first = stream not in _warned
        _warned.add(stream)
    if first:
        logger.warning("otelkit: metric %r reached its cardinality limit (%d attribute sets); further new sets go "
                       "to the %s=true series. An attribute probably carries an unbounded value (an ID, a URL); "
                       "raise OTELKIT_METRIC_CARDINALITY_LIMIT only if the sets are truly bounded",
                       stream, _state.limit, OVERFLOW_ATTRIBUTE)


def configure(limit: int) -> bool:
    """Apply ``limit`` (>= 2) to every metric stream; True when the SDK could be wrapped."""
    global _installed
    _state.limit = limit
    if not _installed:
        _installed = _compat.limit_attribute_sets(_state, {OVERFLOW_ATTRIBUTE: True}, _overflowed)
        if not _installed:
            logger.warning("otelkit: this opentelemetry-sdk has an unknown metrics shape; metric cardinality is "
                           "not limited")
    return _installed


def overflows() -> dict[str, int]:
    """Measurements sent to the overflow series, per metric stream, since start-up."""
    with _lock:
        return dict(_overflows)


def reset() -> None:
    """Forget the counts (a forked child, tests): with a fresh lock, as a parent thread may hold the old one."""
    global _lock
    _lock = threading.Lock()
    _overflows.clear()
    _warned.clear()
