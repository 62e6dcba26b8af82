"""Queue depth: one observable gauge (``otelkit.messaging.queue.length``) fed by probes.

A probe is any ``() -> int | None`` callable; :func:`redis_probe` builds one for
Redis lists (LLEN), streams (XLEN), sets (SCARD) and sorted sets (ZCARD). Probes
run on the metric reader's thread at each collection, with instrumentation
suppressed so the probe's own Redis command does not become a trace every
interval. A failing probe skips that observation (debug log), never the others.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from otelkit import _names
from otelkit._internal_log import logger
from otelkit._pipeline.instruments import SCHEMA_URL, SCOPE

try:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
except ImportError:  # pragma: no cover
    _SUPPRESS_INSTRUMENTATION_KEY = "suppress_instrumentation"

Probe = Callable[[], "int | float | None"]
RedisKind = Literal["list", "stream", "set", "zset"]

_lock = threading.Lock()
_ids = itertools.count(1)
_probes: dict[int, tuple[Probe, dict[str, str]]] = {}
_gauge_provider: object = None


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
    with _lock:
        entries = list(_probes.values())
    if not entries:
        return []
    observations: list[Observation] = []
    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        for probe, attributes in entries:
            try:
                value = probe()
            except Exception as error:
                logger.debug("otelkit: queue probe for %s failed: %r",
                             attributes.get(_names.MESSAGING_DESTINATION), error)
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                observations.append(Observation(value, attributes))
    finally:
        otel_context.detach(token)
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
        _probes[key] = (probe, attrs)
    return QueueObservation(key, attrs)


_REDIS_COMMANDS: dict[str, str] = {"list": "llen", "stream": "xlen", "set": "scard", "zset": "zcard"}


def redis_probe(client: Any, key: str, kind: RedisKind) -> Probe:
    """A probe reading the size of a Redis key: LLEN (list), XLEN (stream), SCARD (set), ZCARD (zset).

    ``client`` is a synchronous redis-py client; give it a short ``socket_timeout``
    so a slow Redis cannot hold up metric collection.
    """
    try:
        method = getattr(client, _REDIS_COMMANDS[kind])
    except KeyError:
        raise ValueError(f"otelkit.pipeline.redis_probe: kind={kind!r} is not one of "
                         f"{', '.join(sorted(_REDIS_COMMANDS))}") from None

    def probe() -> int:
        return int(method(key))

    probe.__qualname__ = f"redis_probe[{_REDIS_COMMANDS[kind].upper()} {key}]"
    return probe
