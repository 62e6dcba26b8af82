"""What otelkit exported and dropped, per signal and reason; its self-metrics; the shutdown report.

Counts are per process (a forked child starts from zero) and cumulative across re-``init()``.
Every drop is counted here and summarised in at most one ``otelkit`` warning per interval, so a
burst never drops silently and never floods the log either (the ``otelkit`` logger is never
exported, so these warnings cannot loop back into the pipeline that is failing).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from otelkit import _cardinality, _names
from otelkit._internal_log import logger

SIGNALS = ("traces", "metrics", "logs")
ITEM_NAMES = {"traces": "spans", "metrics": "metric points", "logs": "log records"}
_ONE = {"traces": "span", "metrics": "metric point", "logs": "log record"}


def items(signal: str, count: int) -> str:
    """``"1 span"``, ``"3 spans"``..."""
    return f"{count} {(_ONE if count == 1 else ITEM_NAMES).get(signal, 'items')}"

# Why an item was dropped. Values of the ``otelkit.reason`` attribute on TELEMETRY_DROPPED.
QUEUE_FULL = "queue_full"
"""The export queue was full (collector slower than the application, or down for longer than the queue lasts)."""
EXPORT_FAILED = "export_failed"
"""The collector answered with a permanent error (HTTP 400/401/..., a non-retryable gRPC code), or was
unreachable / kept failing when shutdown gave up on it before the deadline (the cause is in the report)."""
REJECTED = "rejected"
"""The collector accepted the request but rejected these items (OTLP partial success)."""
TOO_LARGE = "too_large"
"""An item alone is larger than a request may be, or the collector refused it as too large after splitting."""
SHUTDOWN_TIMEOUT = "shutdown_timeout"
"""Still queued when the shutdown deadline passed (the collector was slow or hung, or retries used the budget)."""
ALREADY_SHUTDOWN = "already_shutdown"
"""Emitted after the pipeline was shut down."""
SPOOL_FULL = "spool_full"
"""The collector was unavailable and the disk spool (``OTELKIT_SPOOL_DIR``) already held ``spool_max_bytes``."""
REFUSED = "refused"
"""The collector kept refusing under load (gRPC RESOURCE_EXHAUSTED without a size text, HTTP 429/503) until
shutdown: never delivered, never split (a memory limiter's answer is not "too large")."""
REASONS = (QUEUE_FULL, EXPORT_FAILED, REJECTED, TOO_LARGE, SHUTDOWN_TIMEOUT, ALREADY_SHUTDOWN, SPOOL_FULL, REFUSED)

def warn(message: str, *args: object) -> None:
    """A warning on the ``otelkit`` logger; its fallback handler (``_internal_log``) makes sure a person
    sees it even when the application configured no logging of its own."""
    logger.warning(message, *args)


WARN_INTERVAL = 60.0
"""Seconds between two drop warnings (the first drop is reported at once)."""


class Stats:
    """Thread-safe counters. One process-wide instance: :data:`STATS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exported: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._spooled: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._unanswered: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._resent: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._bad_files: dict[str, int] = dict.fromkeys(SIGNALS, 0)
        self._dropped: dict[tuple[str, str], int] = {}
        self._unwarned: dict[tuple[str, str], int] = {}
        self._causes: dict[tuple[str, str], str] = {}
        self._last_warning = 0.0
        self._queue_probes: list[tuple[str, Callable[[], int]]] = []

    def reset(self) -> None:
        """Forget every count (a forked child, tests).

        Takes a fresh lock instead of the old one: in a forked child, another thread of the parent may
        have held it at the instant of the fork, and would never release it here."""
        self._lock = threading.Lock()
        self._exported = dict.fromkeys(SIGNALS, 0)
        self._spooled = dict.fromkeys(SIGNALS, 0)
        self._unanswered = dict.fromkeys(SIGNALS, 0)
        self._resent = dict.fromkeys(SIGNALS, 0)
        self._bad_files = dict.fromkeys(SIGNALS, 0)
        self._dropped = {}
        self._unwarned = {}
        self._causes = {}
        self._last_warning = 0.0
        _cardinality.reset()

    def exported(self, signal: str, count: int) -> None:
        if count:
            with self._lock:
                self._exported[signal] = self._exported.get(signal, 0) + count

    def spooled(self, signal: str, count: int) -> None:
        """Count ``count`` items written to the disk spool (delivered later, by whichever process replays them)."""
        if count:
            with self._lock:
                self._spooled[signal] = self._spooled.get(signal, 0) + count

    def spooled_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._spooled)

    def unanswered(self, signal: str, count: int, detail: str = "") -> None:
        """Count ``count`` items whose last request got no answer and was not retried (shutdown deadline,
        attempts used up): neither exported nor dropped, the collector may or may not hold them."""
        if count:
            with self._lock:
                self._unanswered[signal] = self._unanswered.get(signal, 0) + count
                if detail:
                    self._causes[(signal, "unanswered")] = detail

    def resent(self, signal: str, count: int) -> None:
        """Count ``count`` items sent again after a request that got no answer (possible duplicates)."""
        if count:
            with self._lock:
                self._resent[signal] = self._resent.get(signal, 0) + count

    def spool_bad_file(self, signal: str, detail: str) -> None:
        """Count one spool file that was not sent: corrupt (deleted) or not a regular file (skipped)."""
        with self._lock:
            self._bad_files[signal] = self._bad_files.get(signal, 0) + 1
            self._causes[(signal, "spool_bad_file")] = detail

    def unanswered_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._unanswered)

    def resent_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._resent)

    def bad_file_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bad_files)

    def dropped(self, signal: str, reason: str, count: int, detail: str = "", *, warn: bool = True) -> None:
        """Count ``count`` items of ``signal`` dropped for ``reason``; warn now if the interval allows.

        ``warn=False`` on the application's thread (the export thread calls :meth:`maybe_warn`)."""
        if count <= 0:
            return
        key = (signal, reason)
        with self._lock:
            self._dropped[key] = self._dropped.get(key, 0) + count
            self._unwarned[key] = self._unwarned.get(key, 0) + count
            if detail:
                self._causes[key] = detail
        if warn:
            self.maybe_warn(detail)

    def maybe_warn(self, detail: str = "", *, force: bool = False) -> None:
        """Log one warning summarising drops since the last one, at most once per :data:`WARN_INTERVAL`."""
        now = time.monotonic()
        with self._lock:
            if not self._unwarned or (not force and self._last_warning and now - self._last_warning < WARN_INTERVAL):
                return
            pending, self._unwarned = self._unwarned, {}
            self._last_warning = now
        parts = [f"{items(s, n)} ({r})" for (s, r), n in sorted(pending.items())]
        warn("otelkit dropped telemetry: %s%s. Totals are in the %s metric and the shutdown report.",
                       ", ".join(parts), f"; last cause: {detail}" if detail else "", _names.TELEMETRY_DROPPED.name)

    def exported_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._exported)

    def dropped_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._dropped)

    def dropped_for(self, signal: str) -> dict[str, int]:
        with self._lock:
            return {r: n for (s, r), n in self._dropped.items() if s == signal}

    def causes_for(self, signal: str) -> dict[str, str]:
        """The last cause given for each drop reason of ``signal`` (and for ``unanswered``, ``spool_bad_file``)."""
        with self._lock:
            return {r: c for (s, r), c in self._causes.items() if s == signal}

    def add_queue_probe(self, signal: str, probe: Callable[[], int]) -> None:
        """Register a callable returning a queue length (weakly held by the caller's closure)."""
        with self._lock:
            self._queue_probes.append((signal, probe))

    def remove_queue_probe(self, probe: Callable[[], int]) -> None:
        with self._lock:
            self._queue_probes = [(s, p) for s, p in self._queue_probes if p is not probe]

    def queue_sizes(self) -> dict[str, int]:
        with self._lock:
            probes = list(self._queue_probes)
        sizes = dict.fromkeys(SIGNALS, 0)
        for signal, probe in probes:
            try:
                sizes[signal] += probe()
            except Exception:  # a probe of a dead processor: ignore
                continue
        return sizes


STATS = Stats()
"""The process-wide counters."""


_self_metrics_registered = False


def register_self_metrics(meter_provider: Any = None) -> None:
    """Create otelkit's own health instruments (dropped, exported, queue size, cardinality overflows).

    Without an argument: once per process, on otelkit's proxy meter provider, so the instruments
    follow every re-``init()`` (``_export.build_metric_readers`` calls this). With a provider: on
    that provider (tests, users wiring SDK providers by hand). Observable instruments read
    :data:`STATS` at each collection, so they cost nothing on the hot path.
    """
    global _self_metrics_registered
    from opentelemetry.metrics import CallbackOptions, Observation

    if meter_provider is None:
        if _self_metrics_registered:
            return
        from otelkit import _proxy

        meter_provider = _proxy.meter_provider()
        _self_metrics_registered = True
    meter = meter_provider.get_meter("otelkit")

    def dropped(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_names.ATTR_SIGNAL: s, _names.ATTR_REASON: r})
                for (s, r), n in STATS.dropped_counts().items()]

    def exported(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_names.ATTR_SIGNAL: s}) for s, n in STATS.exported_counts().items()]

    def queued(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_names.ATTR_SIGNAL: s}) for s, n in STATS.queue_sizes().items()]

    meter.create_observable_counter(_names.TELEMETRY_DROPPED.name, [dropped], _names.TELEMETRY_DROPPED.unit,
                                    _names.TELEMETRY_DROPPED.description)
    meter.create_observable_counter(_names.TELEMETRY_EXPORTED.name, [exported], _names.TELEMETRY_EXPORTED.unit,
                                    _names.TELEMETRY_EXPORTED.description)
    def overflows(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {_names.ATTR_METRIC_NAME: name}) for name, n in _cardinality.overflows().items()]

    meter.create_observable_counter(_names.TELEMETRY_METRIC_OVERFLOWS.name, [overflows],
                                    _names.TELEMETRY_METRIC_OVERFLOWS.unit,
                                    _names.TELEMETRY_METRIC_OVERFLOWS.description)
    meter.create_observable_gauge(_names.TELEMETRY_QUEUE_SIZE.name, [queued], _names.TELEMETRY_QUEUE_SIZE.unit,
                                  _names.TELEMETRY_QUEUE_SIZE.description)


@dataclass(frozen=True)
class SignalReport:
    """One signal's line of the shutdown report."""

    exported: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    timed_out: bool = False
    spooled: int = 0
    """Items this process wrote to the disk spool (``OTELKIT_SPOOL_DIR``): neither exported nor lost yet."""
    unanswered: int = 0
    """Items sent in requests that got no answer (timeout, shutdown deadline) and were not retried: the
    collector may hold them or not. Neither exported nor dropped."""
    resent: int = 0
    """Items sent again after a request without an answer: the collector may have received them twice."""
    spool_bad_files: int = 0
    """Spool files not sent: corrupt (deleted) or not regular files (skipped). Their item counts are unknown."""
    error: str | None = None
    metric_overflows: Mapping[str, int] = field(default_factory=dict)
    """Metrics only: measurements that went to a stream's ``otel.metric.overflow=true`` series because the stream
    reached ``OTELKIT_METRIC_CARDINALITY_LIMIT`` attribute sets (aggregated, not lost), per stream."""
    causes: Mapping[str, str] = field(default_factory=dict)
    """The last cause recorded for each drop reason (shown in ``str()`` for ``export_failed``)."""

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(frozen=True)
class ShutdownReport:
    """What ``otelkit.shutdown()`` achieved, per signal (``traces``, ``metrics``, ``logs``).

    ``exported`` and ``dropped`` (by reason) are totals for this process since start-up; ``timed_out``
    says whether that signal's flush was cut short by the deadline. ``str(report)`` is one readable line.
    """

    signals: Mapping[str, SignalReport] = field(default_factory=dict)
    duration: float = 0.0
    deadline: float = 0.0

    @property
    def timed_out(self) -> bool:
        """True if any signal did not finish flushing before the deadline."""
        return any(s.timed_out for s in self.signals.values())

    @property
    def dropped(self) -> int:
        """Items dropped over all signals."""
        return sum(s.dropped_total for s in self.signals.values())

    @property
    def exported(self) -> int:
        """Items exported over all signals."""
        return sum(s.exported for s in self.signals.values())

    def __getitem__(self, signal: str) -> SignalReport:
        return self.signals[signal]

    def __str__(self) -> str:
        parts = []
        for name, s in self.signals.items():
            text = f"{name}: {items(name, s.exported)} exported"
            if s.spooled:
                text += f", {s.spooled} spooled to disk"
            if s.unanswered:
                text += f", {s.unanswered} sent without an answer (delivery unknown)"
            if s.resent:
                text += f", {s.resent} resent after no answer (possible duplicates)"
            if s.spool_bad_files:
                text += f", {s.spool_bad_files} unusable spool file(s) skipped"
            if s.dropped_total:
                text += ", " + ", ".join(f"{n} dropped ({_reason_text(r, s.causes)})"
                                         for r, n in sorted(s.dropped.items()) if n)
            if s.metric_overflows:
                streams = sorted(s.metric_overflows)
                text += (f", {sum(s.metric_overflows.values())} measurements over the cardinality limit in "
                         f"{len(streams)} stream(s) ({', '.join(streams[:3])}{', ...' if len(streams) > 3 else ''})")
            if s.timed_out:
                text += ", timed out"
            if s.error:
                text += f", error: {s.error}"
            parts.append(text)
        body = "; ".join(parts) if parts else "nothing to shut down"
        return f"otelkit shutdown in {self.duration:.2f}s (deadline {self.deadline:.2f}s): {body}"


def _reason_text(reason: str, causes: Mapping[str, str]) -> str:
    cause = causes.get(reason) if reason in (EXPORT_FAILED, SHUTDOWN_TIMEOUT, REFUSED) else None
    if not cause:
        return reason
    cause = cause.replace("(", "[").replace(")", "]")
    return f"{reason}: {cause[:117] + '...' if len(cause) > 120 else cause}"


def report_from_stats(timed_out: Mapping[str, bool], errors: Mapping[str, str | None], duration: float,
                      deadline: float, signals: Iterable[str] = SIGNALS) -> ShutdownReport:
    """Build a :class:`ShutdownReport` from :data:`STATS` and per-signal outcomes."""
    exported = STATS.exported_counts()
    spooled = STATS.spooled_counts()
    unanswered = STATS.unanswered_counts()
    resent = STATS.resent_counts()
    bad_files = STATS.bad_file_counts()
    overflows = _cardinality.overflows()
    return ShutdownReport(
        signals={s: SignalReport(exported=exported.get(s, 0), dropped=STATS.dropped_for(s), spooled=spooled.get(s, 0),
                                 unanswered=unanswered.get(s, 0), resent=resent.get(s, 0),
                                 spool_bad_files=bad_files.get(s, 0),
                                 metric_overflows=overflows if s == "metrics" else {},
                                 timed_out=bool(timed_out.get(s)), error=errors.get(s),
                                 causes=STATS.causes_for(s)) for s in signals},
        duration=duration, deadline=deadline)
