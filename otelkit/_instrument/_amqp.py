"""What the pika and aio-pika integrations share: AMQP attributes, attempt, correlation ID, outcomes."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from otelkit import _active
from otelkit._names import CORRELATION_HEADER
from otelkit._pipeline import carriers

SYSTEM = "rabbitmq"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
EXCHANGE = "messaging.rabbitmq.exchange.name"

_attrs: dict[tuple[str, str, str, int], dict[str, Any]] = {}


def attributes(routing_key: str, exchange: str, host: str, port: int) -> dict[str, Any]:
    """Span attributes of one (routing key, exchange, server), built once and shared (never mutated)."""
    key = (routing_key, exchange, host, port)
    found = _attrs.get(key)
    if found is None:
        found = {ROUTING_KEY: routing_key}
        if exchange:
            found[EXCHANGE] = exchange
        if host:
            found["server.address"] = host
            if port:
                found["server.port"] = port
        if len(_attrs) < 4096:
            _attrs[key] = found
    return found


def destination(exchange: str, routing_key: str) -> str:
    """The destination of a publish and of a delivery: the routing key (the queue on the default exchange)."""
    return routing_key or exchange or "amq.default"


def attempt(headers: Mapping[str, Any] | None, redelivered: bool) -> int:
    """1-based delivery attempt: quorum queues' ``x-delivery-count`` + 1, else 2 when redelivered, else 1."""
    count = headers.get("x-delivery-count") if isinstance(headers, Mapping) else None
    if isinstance(count, int) and not isinstance(count, bool) and 0 <= count < 1_000_000:
        return count + 1
    return 2 if redelivered else 1


def carrier(headers: Any, correlation_id: object) -> Any:
    """The headers to extract from; the AMQP ``correlation_id`` property adopted when otelkit's is absent."""
    if not isinstance(headers, Mapping):
        headers = {}
    if correlation_id is not None and carriers.get_raw(headers, CORRELATION_HEADER) is None:
        from otelkit._correlation import is_valid_correlation_id

        text = correlation_id.decode("utf-8", "replace") if isinstance(correlation_id, bytes) else correlation_id
        if is_valid_correlation_id(text):
            return {**headers, CORRELATION_HEADER: text}  # a copy: the message is never changed
    return headers


def delivery(headers: Any, correlation_id: object, redelivered: bool) -> tuple[Any, int]:
    """(:func:`carrier`, :func:`attempt`) of one delivery; a message without headers or correlation ID (the
    common plain message: pika's ``None``, aio-pika's ``{}``) gives ``(None, 1 or 2)`` without the look-ups."""
    if not headers and correlation_id is None:
        return None, 2 if redelivered else 1
    return carrier(headers, correlation_id), attempt(headers, redelivered)


def adopted_correlation_id(correlation_id: object) -> str | None:
    """For a publish: the message's ``correlation_id`` property when it is valid and no ID is current."""
    if correlation_id is None:
        return None
    from otelkit._correlation import get_correlation_id, is_valid_correlation_id

    if get_correlation_id() is not None:
        return None
    text = correlation_id.decode("utf-8", "replace") if isinstance(correlation_id, bytes) else correlation_id
    return text if isinstance(text, str) and is_valid_correlation_id(text) else None


# The delivery being handled in this context: (scope, delivery tag, channel key), so that basic_ack/nack/reject
# called by the handler settle its span.
current: contextvars.ContextVar[tuple[Any, int, int] | None] = contextvars.ContextVar("otelkit_amqp_delivery",
                                                                                    default=None)


def settle(channel_key: int, delivery_tag: int, multiple: bool, outcome: str, reason: str) -> None:
    """A handler settled a delivery: record the outcome on its scope when it is the one being handled."""
    entry = current.get()
    if entry is None:
        return
    scope, tag, key = entry
    if key != channel_key or not (tag == delivery_tag or (multiple and (delivery_tag == 0 or tag <= delivery_tag))):
        return
    try:
        scope._set_outcome(outcome, reason)
    except Exception:  # telemetry never breaks the settle
        pass


def depth_enabled(library: str) -> bool:
    """Whether the queue-depth probes of ``library`` ("pika" or "nats") are on in the settings of this ``init()``
    (``OTELKIT_PIKA_QUEUE_DEPTH`` / ``OTELKIT_NATS_QUEUE_DEPTH``; on before any ``init()``)."""
    settings = _active.settings()
    if settings is None:
        return True
    return settings.nats_queue_depth if library == "nats" else settings.pika_queue_depth
