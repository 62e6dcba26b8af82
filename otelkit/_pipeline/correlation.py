"""Which correlation ID a received message carries: otelkit's own, or one a foreign producer set.

:func:`carried_correlation_id` is the one function every consumer-side integration (Celery,
pika, FastStream, BullMQ...) calls to read it. Precedence, first valid value wins:

1. otelkit's own: the ``correlation_id`` baggage entry, then the ``otelkit-correlation-id`` header;
2. the AMQP ``correlation_id`` message property (pika ``BasicProperties``, aio-pika messages, kombu's
   ``properties`` dict), when the caller passes ``properties``;
3. the headers named by ``OTELKIT_CORRELATION_HEADERS`` (default: ``correlation_id``,
   ``correlation-id``, ``x-correlation-id``, ``messaging.message.conversation_id``), in that order;
   an exact name first, then the same names case-insensitively (``X-Correlation-Id``).

A foreign value is never trusted: anything that is not a valid correlation ID (1-128 characters of
``A-Z a-z 0-9 . _ : / @ + = -``; no whitespace, no control characters, no kilobytes) is skipped with a
debug log, so the caller falls back to the enclosing ``correlate()`` scope or a fresh ID. Nothing here
raises: a hostile carrier or property object reads as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from otelkit import _active, _names
from otelkit._config import DEFAULT_CORRELATION_HEADERS
from otelkit._correlation import MAX_CORRELATION_ID_LENGTH, get_correlation_id, is_valid_correlation_id
from otelkit._internal_log import logger
from otelkit._pipeline import carriers

__all__ = ["carried_correlation_id", "correlation_headers", "foreign_correlation_id", "property_value"]

_BAGGAGE = W3CBaggagePropagator()
_settings_seen: object = None
_headers: tuple[str, ...] = DEFAULT_CORRELATION_HEADERS


def correlation_headers() -> tuple[str, ...]:
    """The header names of ``OTELKIT_CORRELATION_HEADERS`` of the current ``init()`` (the default before it)."""
    global _settings_seen, _headers
    # Through the registry, not otelkit._init, which (re)imports the integrations that import this module.
    settings = _active.settings()
    if settings is _settings_seen:
        return _headers
    headers = DEFAULT_CORRELATION_HEADERS if settings is None else settings.correlation_headers
    _settings_seen, _headers = settings, headers
    return headers


_mapping_types: dict[type, bool] = {}


def property_value(properties: object, name: str) -> object:
    """``properties[name]`` of a mapping, else ``properties.name``; None when absent or unreadable."""
    if properties is None:
        return None
    try:
        cls = type(properties)
        mapping = _mapping_types.get(cls)
        if mapping is None:  # the ABC check once per type (pika's BasicProperties, aio-pika's message...)
            mapping = isinstance(properties, Mapping)
            if len(_mapping_types) < 64:
                _mapping_types[cls] = mapping
        if mapping:
            return properties.get(name)  # type: ignore[attr-defined]
        return getattr(properties, name, None)
    except Exception:  # a property object whose accessor raises: read as absent
        return None


def _adopt(value: object, where: str) -> str | None:
    if value is None:
        return None
    text = carriers._decode(value) if not isinstance(value, str) else value
    if text is not None and len(text) <= MAX_CORRELATION_ID_LENGTH and is_valid_correlation_id(text):
        return text
    try:
        size = len(value)  # type: ignore[arg-type]
    except Exception:
        size = -1
    logger.debug("otelkit: the foreign correlation ID in %s is not a valid ID (%s, %d long); not adopted",
                 where, type(value).__name__, size)
    return None


_wanted_cache: tuple[tuple[str, ...], dict[str, int]] | None = None


def _wanted(names: tuple[str, ...]) -> dict[str, int]:
    """{lower-case header name: rank} of ``names``, built once per setting rather than per message."""
    global _wanted_cache
    cached = _wanted_cache
    if cached is not None and cached[0] is names:
        return cached[1]
    wanted = {name.lower(): rank for rank, name in enumerate(names)}
    _wanted_cache = (names, wanted)
    return wanted


def foreign_correlation_id(carrier: Any, properties: object = None) -> str | None:
    """A valid correlation ID set by a non-otelkit producer (steps 2-3 of the module docstring), or None."""
    try:
        found = _adopt(property_value(properties, "correlation_id"), "the correlation_id property")
        if found is not None:
            return found
        if carrier is None or isinstance(carrier, (str, bytes, bytearray, memoryview)):
            return None
        if not carrier:  # no headers at all (an empty dict or list): nothing to adopt, nothing to scan
            return None
        names = correlation_headers()
        for name in names:
            raw = carriers.get_raw(carrier, name)
            if raw is not None:
                found = _adopt(raw, f"header {name[:64]}")
                if found is not None:
                    return found
        if names:
            # Header names are case-insensitive where they come from (HTTP, NATS, AMQP tables written by
            # HTTP-minded code): X-Correlation-Id must match x-correlation-id. Only foreign messages get here.
            wanted = _wanted(names)
            best: tuple[int, str] | None = None
            for key in carriers.GETTER.keys(carrier):
                rank = wanted.get(key.lower())
                if rank is not None and (best is None or rank < best[0]):
                    found = _adopt(carriers.get_raw(carrier, key), f"header {key[:64]}")
                    if found is not None:
                        best = (rank, found)
            if best is not None:
                return best[1]
    except Exception as error:  # never raises into the consumer
        logger.debug("otelkit: reading a foreign correlation ID failed: %r", error)
    return None


def carried_correlation_id(carrier: Any, properties: object = None, *, extracted: Context | None = None) -> str | None:
    """The correlation ID a received message carries, by the precedence of the module docstring, or None.

    ``carrier`` is the message's headers (mapping or ``(key, value)`` list); ``properties`` the broker's
    message properties when it has them (AMQP). ``extracted`` is the context already extracted from the
    carrier by the caller (saves a second extraction); without it only the headers are read.
    """
    try:
        if extracted is not None:
            cid = get_correlation_id(extracted)
            if cid is not None:
                return cid
        if carrier is not None:
            own = carriers.get_str(carrier, _names.CORRELATION_HEADER)
            if own is not None and is_valid_correlation_id(own):
                return own
            if extracted is None and carriers.get_raw(carrier, "baggage") is not None:
                cid = get_correlation_id(_BAGGAGE.extract(carrier, Context(), getter=carriers.GETTER))
                if cid is not None:
                    return cid
    except Exception as error:
        logger.debug("otelkit: reading the correlation ID failed: %r", error)
    return foreign_correlation_id(carrier, properties)
