"""Queue depth: one observable gauge (``otelkit.messaging.queue.length``) fed by probes.

A probe is any ``() -> int | None`` callable; :func:`redis_probe` builds one for
Redis lists (LLEN), streams (XLEN), sets (SCARD) and sorted sets (ZCARD).

Probes never run on the metric reader's thread: that thread exports *every* metric, and one
probe against a hung Redis (redis-py has no socket timeout by default) would stop them all and
make shutdown wait out its whole deadline. At each collection every idle probe starts on its own
daemon thread (instrumentation suppressed, so the probe's Redis command is not traced every
interval); the reader waits at most :data:`PROBE_BUDGET` seconds for them, all in parallel, and
reports the values sampled in this round. A probe still running from an earlier round is
skipped at once (its value would be stale) and warned about once on the ``otelkit`` logger; it
is not started again until it returns, so a hung probe holds one thread, not one per interval.
A failing probe skips that observation (debug log), never the others.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otelkit import _fork, _names
from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_INSTRUMENTATION_KEY
from otelkit._export import stats as _stats
from otelkit._internal_log import logger, warn_once
from otelkit._pipeline.instruments import SCHEMA_URL, SCOPE

Probe = Callable[[], "int | float | None"]
RedisKind = Literal["list", "stream", "set", "zset"]

PROBE_BUDGET = 1.0
"""Seconds one collection waits for the queue probes (which run in parallel) before reporting without them."""

_lock = threading.Lock()
_done = threading.Condition(_lock)
_ids = itertools.count(1)
_probes: dict[int, _ProbeState] = {}
_gauge_provider: object = None


class _ProbeState:
    """One probe and its latest sample; fields are written under :data:`_lock`."""

    __slots__ = ("probe", "attributes", "running_since", "pid", "value", "sampled_at", "warned")

    def __init__(self, probe: Probe, attributes: dict[str, str]) -> None:
        self.probe = probe
        self.attributes = attributes
        self.running_since: float | None = None  # monotonic start of the call in flight
        self.pid = 0  # process that started that call (a forked child never sees it finish)
        self.value: int | float | None = None
        self.sampled_at = -1.0  # monotonic start of the call that produced ``value``
        self.warned = False

    def busy(self) -> bool:
        return self.running_since is not None and self.pid == os.getpid()


def _reinit_locks_in_child() -> None:
    # A probe thread of the parent may have held the lock at the instant of fork; it does not exist here.
    global _lock, _done
    _lock = threading.Lock()
    _done = threading.Condition(_lock)


_fork.at_fork(after_in_child=_reinit_locks_in_child)


def _destination(state: _ProbeState) -> str | None:
    return state.attributes.get(_names.MESSAGING_DESTINATION)


def _run_probe(state: _ProbeState, started: float) -> None:
    value: int | float | None = None
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        result = state.probe()
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            value = result
    except Exception as error:
        logger.debug("otelkit: queue probe for %s failed: %r", _destination(state), error)
    finally:
        otel_context.detach(token)
    with _done:
        state.running_since = None
        state.value = value
        state.sampled_at = started
        if state.warned:
            state.warned = False
            logger.info("otelkit: the queue probe for %s answers again", _destination(state))
        _done.notify_all()


class QueueObservation:
    """Handle returned by :func:`observe_queue`; ``close()`` stops observing the queue."""

    __slots__ = ("attributes", "_id")

    def __init__(self, key: int, attributes: dict[str, str]) -> None:
        self._id = key
        self.attributes = attributes

    def close(self) -> None:
        """Stop reporting this queue (idempotent)."""
        with _lock:
            _probes.pop(self._id, None)

    def __enter__(self) -> QueueObservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _observe(options: CallbackOptions) -> Iterable[Observation]:
    """The gauge callback, on the metric reader's thread: never blocks longer than :data:`PROBE_BUDGET`."""
    round_start = time.monotonic()
    deadline = round_start + PROBE_BUDGET
    to_start: list[_ProbeState] = []
    hung: list[_ProbeState] = []
    with _lock:
        entries = list(_probes.values())
        if not entries:
            return []
        pid = os.getpid()
        for state in entries:
            if not state.busy():
                state.running_since, state.pid = round_start, pid
                to_start.append(state)
    for state in to_start:
        thread = threading.Thread(target=_run_probe, args=(state, round_start), daemon=True,
                                  name=f"otelkit-queue-probe[{_destination(state)}]")
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no new threads; skip this sample
            with _lock:
                state.running_since = None
    observations: list[Observation] = []
    with _done:
        # Wait for the calls started in this round, or by a concurrent round of another reader, within the budget.
        def pending() -> bool:
            return any(s.busy() and s.running_since is not None and s.running_since >= round_start - PROBE_BUDGET
                       for s in entries)

        while pending():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _done.wait(remaining)
        for state in entries:
            if state.busy():
                if not state.warned:
                    state.warned = True
                    hung.append(state)
                continue
            # Only a sample taken in this round (or a concurrent one): an older one would be stale.
            if state.value is not None and state.sampled_at >= round_start - PROBE_BUDGET:
                observations.append(Observation(state.value, state.attributes))
    for state in hung:
        _stats.warn("otelkit: the queue probe for %s (%s) did not answer within %.1fs; its queue length is not "
                    "reported until it does (give its Redis client a socket_timeout)",
                    _destination(state), getattr(state.probe, "__qualname__", "probe"), PROBE_BUDGET)
    return observations


def _ensure_gauge() -> None:
    """Create the gauge once per global meter provider (it follows otelkit's proxy across re-init)."""
    global _gauge_provider
    provider = metrics.get_meter_provider()
    if _gauge_provider is provider:
        return
    meter = provider.get_meter(SCOPE, schema_url=SCHEMA_URL)
    meter.create_observable_gauge(_names.QUEUE_LENGTH.name, callbacks=[_observe], unit=_names.QUEUE_LENGTH.unit,
                                  description=_names.QUEUE_LENGTH.description)
    _gauge_provider = provider


def observe_queue(destination: str, probe: Probe, *, system: str, state: str | None = None,
                  attributes: Mapping[str, str] | None = None) -> QueueObservation:
    """Report the length of ``destination`` as ``otelkit.messaging.queue.length``, sampled by ``probe``.

    ``probe()`` returns the current number of messages (or None to skip a
    sample). ``state`` labels what is counted (``ready``, ``in_flight``,
    ``dead_letter``...) when one queue has several probes. Returns a handle whose
    ``close()`` stops the reporting.
    """
    attrs = {_names.MESSAGING_SYSTEM: system, _names.MESSAGING_DESTINATION: destination}
    if state is not None:
        attrs[_names.ATTR_QUEUE_STATE] = state
    if attributes:
        attrs.update(attributes)
    with _lock:
        _ensure_gauge()
        key = next(_ids)
        _probes[key] = _ProbeState(probe, attrs)
    return QueueObservation(key, attrs)


_REDIS_COMMANDS: dict[str, str] = {"list": "llen", "stream": "xlen", "set": "scard", "zset": "zcard"}

_LAG_SCAN_LIMIT = 10_000
"""Older Redis (< 7) has no ``lag``: undelivered entries are counted with XRANGE up to this many;
a larger backlog skips the sample (a capped number would be a number that did not happen)."""


def _field(info: Any, name: str) -> Any:
    if not isinstance(info, dict):
        return None
    value = info.get(name)
    if value is None:
        value = info.get(name.encode())
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def _group_backlog(client: Any, key: str, info: Any) -> int | None:
    """Entries of one consumer group not yet acknowledged: pending (delivered, unacked) + lag (undelivered)."""
    pending = _field(info, "pending")
    if not isinstance(pending, int):
        return None
    lag = _field(info, "lag")
    if isinstance(lag, int):
        return pending + lag
    # Redis < 7, or a lag Redis cannot tell (entries deleted inside the range): count what is after
    # the group's last delivered ID, bounded.
    last = _text(_field(info, "last-delivered-id"))
    if last is None:
        return None
    entries = client.xrange(key, min="(" + last, max="+", count=_LAG_SCAN_LIMIT + 1)
    if len(entries) > _LAG_SCAN_LIMIT:
        logger.debug("otelkit: stream %s has more than %d undelivered entries and no lag field; sample skipped",
                     key, _LAG_SCAN_LIMIT)
        return None
    return pending + len(entries)


def _stream_probe(client: Any, key: str, group: str | None) -> Probe:
    def probe() -> int | None:
        try:
            groups = client.xinfo_groups(key)
        except Exception as error:
            # No such key yet: nothing queued. Anything else (a wrong type, a dead server) skips the sample.
            if "no such key" in str(error).lower():
                return 0
            raise
        if group is not None:
            groups = [info for info in groups if _text(_field(info, "name")) == group]
        if not groups:
            # No consumer group (yet): entries are never acknowledged, so no count here is a queue depth.
            return None
        backlogs = [_group_backlog(client, key, info) for info in groups]
        known = [b for b in backlogs if b is not None]
        return max(known) if known and len(known) == len(backlogs) else None

    probe.__qualname__ = f"redis_probe[XINFO GROUPS {key}{' ' + group if group else ''}]"
    return probe


def redis_probe(client: Any, key: str, kind: RedisKind, *, group: str | None = None) -> Probe:
    """A probe reading the size of a Redis key: LLEN (list), SCARD (set), ZCARD (zset), or a stream's backlog.

    A stream's entries stay in it after they are acknowledged, so XLEN is not a queue depth. For
    ``kind="stream"`` the probe reads XINFO GROUPS and reports, for consumer group ``group`` (default:
    the group furthest behind), ``pending`` (delivered, not acknowledged) + ``lag`` (not delivered
    yet). On Redis < 7 (no ``lag``), undelivered entries are counted with XRANGE after the group's
    last delivered ID, up to 10,000 (beyond it the sample is skipped). A stream without that consumer
    group (or any) reports nothing: without acknowledgements there is no depth to tell; a stream
    that does not exist reports 0.

    ``client`` is a synchronous redis-py client. Give it a short ``socket_timeout``: a probe
    that hangs never holds up metric collection (see the module docstring), but its queue is
    not reported until it answers.
    """
    if kind not in _REDIS_COMMANDS:
        # Set-up, like init(): a configuration mistake. ConfigError (a ValueError) under strict mode; otherwise one
        # warning and a probe that reports nothing (its queue stays off the dashboards until fixed).
        from otelkit._config import ConfigError

        message = (f"otelkit.pipeline.redis_probe: kind={kind!r:.60} is not valid: expected one of "
                   f"{', '.join(sorted(_REDIS_COMMANDS))}")
        # Through the registry, not otelkit._init: that import would close a cycle (otelkit._init ->
        # integrations -> queue probes -> otelkit._init).
        from otelkit import _active

        settings = _active.settings()
        if settings is None or settings.strict:
            raise ConfigError(message)
        warn_once(f"redis_probe-kind-{kind!r:.60}", "%s; this probe reports nothing", message)

        def nothing() -> int | None:
            return None

        return nothing
    if kind == "stream":
        return _stream_probe(client, key, group)
    method = getattr(client, _REDIS_COMMANDS[kind])

    def probe() -> int:
        return int(method(key))

    probe.__qualname__ = f"redis_probe[{_REDIS_COMMANDS[kind].upper()} {key}]"
    return probe
