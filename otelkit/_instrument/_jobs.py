"""Shared machinery of the job-queue integrations (RQ, arq, Dramatiq).

* **Lazy.** ``_lazy.when_imported`` patches a library when the application imports it (at once when it
  already has): ``init()`` never imports a job library the application does not use.
* **The queue's own Redis commands are not traced.** A job queue talks to Redis all the time for itself
  (BLPOP/BZPOPMIN in the worker loop, heartbeats, registries, Lua scripts). The enqueue and the job are
  already described by the PRODUCER span ``send {queue}`` and the CONSUMER span ``process {queue}``;
  :func:`quiet` marks the library's own code as suppressed (``suppress_instrumentation``), and
  :func:`loud` lifts that mark around the job's own function, whose Redis, HTTP and SQL calls are traced.
* **Carrier.** The trace context, baggage, correlation ID, emission time and attempt travel in a dict
  stored under :data:`CARRIER_KEY` in a job-level field of the library (RQ ``job.meta``, Dramatiq
  ``message.options``, arq: see :mod:`otelkit._instrument.arq`), never in the job's arguments.
* **Queue depth.** :func:`observe` registers a probe once per (system, queue, state) and process.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY
from otelkit._instrument import _common, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

CARRIER_KEY = "otelkit"
"""Where the carrier dict lives in a job's metadata (RQ meta, Dramatiq options, arq job field)."""

MAX_OBSERVED_QUEUES = 256
"""Queues whose depth one process reports (bounded: a queue name per tenant must not grow memory)."""

_lock = threading.Lock()
_observed: dict[tuple[str, str, str | None], Any] = {}


def quiet() -> object:
    """Attach a context in which otelkit's and contrib's instrumentations only call through."""
    return otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True))


def loud() -> object:
    """Attach a context that lifts :func:`quiet` (the job's own code is traced)."""
    return otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, False))


def detach(token: object) -> None:
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:
        pass


def is_quiet() -> bool:
    return bool(otel_context.get_value(SUPPRESS_INSTRUMENTATION_KEY))


def epoch(value: Any) -> float | None:
    """A datetime (naive means UTC, as the job libraries write them) or epoch milliseconds as epoch seconds."""
    try:
        if isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=_dt.timezone.utc)
            return float(value.timestamp())
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value) / 1000.0
    except Exception:
        return None
    return None


def observed(system: str, queue: str, state: str | None) -> bool:
    """Whether :func:`observe` already reports this queue (or gave up: the cap is reached)."""
    return (system, queue, state) in _observed or len(_observed) >= MAX_OBSERVED_QUEUES


def observe(system: str, queue: str, probe: Callable[[], int | None], state: str | None = None) -> None:
    """Report ``queue``'s depth through ``probe`` (once per system, queue and state in this process)."""
    key = (system, queue, state)
    if key in _observed:
        return
    with _lock:
        if key in _observed or len(_observed) >= MAX_OBSERVED_QUEUES:
            return
        try:
            from otelkit._pipeline.queues import observe_queue

            _observed[key] = observe_queue(queue, probe, system=system, state=state)
        except Exception as exc:
            logger.debug("otelkit: cannot observe the %s queue %s: %r", system, queue, exc)


def stop_observing(system: str) -> None:
    """Stop every queue-depth probe of ``system`` (uninstrument)."""
    with _lock:
        for key in [k for k in _observed if k[0] == system]:
            handle = _observed.pop(key)
            try:
                handle.close()
            except Exception:
                pass


def enable(name: str, dist: str, min_version: tuple[int, ...], min_text: str, state: dict[str, Any],
           patches: Callable[[], object]) -> IntegrationStatus:
    """The shared ``instrument()`` of the job-queue integrations: check the installed version, mark the
    integration wanted, let ``patches()`` register its import hooks (``_lazy.when_imported``), and report."""
    found = _common.supported_dist(name, (dist,), min_version, min_text, dist)
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    state["wanted"] = True
    state["name"] = name  # for unpatch(): its import hooks are keyed by the integration's name
    patches()
    when = "" if state["patched"] else f" (patched when {dist} is imported)"
    return IntegrationStatus(name, "enabled", f"{dist} {version}{when}", version=version)


def unpatch(state: dict[str, Any], system: str) -> None:
    """The shared ``uninstrument()``: undo every ``(owner, attribute, ...)`` patch and stop the depth probes."""
    state["wanted"] = False
    _lazy.cancel(state.get("name", system))
    for owner, attribute, *_rest in state["patched"]:
        _common.unwrap(owner, attribute)
    state["patched"] = []
    stop_observing(system)
