"""Follow one event from emission to reception, across processes and brokers.

Wrap the place a message is emitted and the place it is received; otelkit
carries the trace context, the baggage and a business correlation ID inside the
message, and records the spans and metrics of the pipeline::

    from otelkit import pipeline

    # producer: Redis stream (fields are the carrier)
    fields = {"token": "abc"}
    with pipeline.emit("tokens", fields, system="redis") as msg:
        msg.message_id = r.xadd("tokens", fields)

    # producer: Redis list (payload only: send a JSON envelope)
    with pipeline.emit("enrich", system="redis") as msg:
        r.lpush("enrich", msg.wrap(json.dumps(token)))

    # consumer
    for message_id, fields in entries:
        with pipeline.receive("tokens", fields, system="redis", message_id=message_id) as msg:
            ...                      # spans, logs and HTTP calls here carry msg.correlation_id
    raw = r.brpop("enrich")[1]
    with pipeline.receive("enrich", raw, system="redis") as msg:
        token = json.loads(msg.payload)   # legacy, un-enveloped payloads come back unchanged

Carriers (``carrier=``): a dict of headers (str or bytes keys/values, e.g. redis-py
stream fields, pika/NATS headers); a Kafka-style list of ``(str, bytes)`` tuples;
or, on the receiving side, the raw payload (str/bytes) of an envelope made by
``msg.wrap``. Nothing here raises on a malformed, missing or foreign carrier: the
message starts a fresh trace with a fresh correlation ID.

Every helper is a context manager (``with`` / ``async with``) and a decorator
(sync and async functions). As a decorator, ``carrier`` names the parameter that
holds the carrier (or is a callable of the function's arguments)::

    @pipeline.receive("orders", carrier="headers", system="nats")
    async def handle(data: bytes, headers: dict[str, str]) -> None: ...

Spans follow the messaging conventions (v1.44): ``send {destination}``
(PRODUCER) and ``process {destination}`` (CONSUMER). The consumer span is a root
span **linked** to the producer by default, so a consumer loop running forever
never grows one endless trace, even inside a long-lived outer span; pass
``parent="producer"`` to make a single message's span a child of its producer
instead. Metric names live in ``otelkit._names`` (see docs/pipeline.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from otelkit._correlation import correlate, correlation_id
from otelkit._pipeline.carriers import unwrap, wrap
from otelkit._pipeline.failures import FailureClass, classify_failure, set_failure_classifier
from otelkit._pipeline.queues import QueueObservation, observe_queue, redis_probe
from otelkit._pipeline.scopes import (
    DEFAULT_MAX_LINKS,
    BatchReception,
    Emission,
    Message,
    Parent,
    Reception,
    Stage,
    current_message,
    discovered,
)

__all__ = [
    "BatchReception",
    "Emission",
    "FailureClass",
    "Message",
    "QueueObservation",
    "Reception",
    "Stage",
    "classify_failure",
    "correlate",
    "correlation_id",
    "current_message",
    "discovered",
    "emit",
    "observe_queue",
    "receive",
    "receive_batch",
    "redis_probe",
    "set_failure_classifier",
    "stage",
    "unwrap",
    "wrap",
]


def emit(destination: str, carrier: Any = None, *, system: str, message_id: object = None,
         correlation_id: str | None = None, attempt: int | None = None,
         attributes: Mapping[str, Any] | None = None, retry_of: Reception | Message | None = None,
         server_address: str | None = None, server_port: int | None = None,
         routing_key: str | None = None) -> Emission:
    """Emit one message: a PRODUCER span ``send {destination}`` and context injected into ``carrier``.

    Args:
        destination: queue, stream, topic or subject name (low cardinality: it labels metrics).
        carrier: a dict (headers, or Redis stream fields for XADD) or a list of ``(str, bytes)``
            header tuples, written in place; None gives a new dict as ``msg.headers`` (use
            ``msg.wrap(payload)`` for payload-only transports). As a decorator: the name of the
            parameter holding the carrier, or a callable of the function's arguments.
        system: ``messaging.system``: ``redis``, ``rabbitmq``, ``nats``, ``kafka``...
        message_id: ``messaging.message.id`` when known up front (it travels to the consumer in
            ``otelkit-message-id``); or set ``msg.message_id`` later (then only the producer span has it,
            unless set before ``msg.wrap``).
        correlation_id: force an ID; by default the current one, or a fresh one at the first emission.
        attempt: delivery attempt written to the carrier when re-publishing for a retry (1-based).
        attributes: extra span attributes.
        retry_of: re-publish this received message for another attempt (the ``receive`` scope, also
            after its block ended, or a batch's :class:`Message`): keeps its correlation ID, writes
            attempt + 1 and its first emission time (end-to-end latency covers every attempt; time in
            queue starts now), and continues the failed attempt's trace.
        server_address, server_port: ``server.address`` / ``server.port`` of the broker (a redis
            ``emit`` gets them from the carrying command by itself).
        routing_key: ``messaging.rabbitmq.destination.routing_key`` (``system="rabbitmq"`` only).

    Injects ``traceparent``/``tracestate``, ``baggage`` (with the correlation ID), the
    correlation ID in clear and the emission time. Records ``messaging.client.sent.messages``
    and ``messaging.client.operation.duration``.
    """
    return Emission(destination, carrier, system=system, message_id=message_id, correlation_id=correlation_id,
                    attempt=attempt, attributes=attributes, retry_of=retry_of, server_address=server_address,
                    server_port=server_port, routing_key=routing_key)


def receive(destination: str, carrier: Any = None, *, system: str, message_id: object = None,
            attempt: int | None = None, group: str | None = None, parent: Parent = "none",
            max_attempts: int | None = None, attributes: Mapping[str, Any] | None = None,
            correlation_id: str | None = None, properties: object = None,
            server_address: str | None = None, server_port: int | None = None,
            routing_key: str | None = None, delivery_tag: int | None = None) -> Reception:
    """Process one received message: a CONSUMER span ``process {destination}`` linked to its producer.

    Args:
        destination: queue, stream, topic or subject name.
        carrier: headers dict (str or bytes), ``(key, bytes)`` list, or the raw envelope payload
            (str/bytes) of a payload-only transport; ``msg.payload`` then holds the unwrapped body.
            As a decorator: a parameter name or a callable of the function's arguments.
        system: ``messaging.system``.
        message_id: broker message ID (bytes accepted; a Redis stream ID also dates the message);
            default: the ID the producer gave ``emit(message_id=...)``, else ``properties.message_id``.
        attempt: delivery attempt, 1-based (XPENDING delivery count, ``x-delivery-count``...);
            default: the ``otelkit-attempt`` header written by ``emit(attempt=...)``. As a decorator,
            a callable of the function's arguments.
        group: consumer group (``messaging.consumer.group.name``).
        parent: ``"none"`` (default: a root span linked to the producer), ``"producer"`` (child of
            the producer, still linked), ``"current"`` (child of the ambient span, linked).
        max_attempts: with a transient failure, the outcome is ``retry`` below this attempt and
            ``dead_letter`` at it.
        attributes: extra span attributes.
        correlation_id: adopt this ID (a valid one; an invalid one is ignored). Without it: the ID
            the message carries (otelkit's, else a foreign one: ``properties.correlation_id``, then the
            ``OTELKIT_CORRELATION_HEADERS`` headers), else the enclosing ``correlate()`` scope's, else fresh.
        properties: the broker's message properties (pika ``BasicProperties``, an aio-pika message,
            a dict): ``correlation_id`` and ``message_id`` are read from them.
        server_address, server_port: ``server.address`` / ``server.port`` of the broker.
        routing_key, delivery_tag: ``messaging.rabbitmq.destination.routing_key`` and
            ``messaging.rabbitmq.message.delivery_tag`` (``system="rabbitmq"`` only).

    The message's baggage (and so its correlation ID) is current inside the block: child spans,
    log records, outgoing HTTP calls and further ``emit`` calls carry it. On exit records
    ``messaging.client.consumed.messages``, ``messaging.process.duration``, the outcome
    (``otelkit.messaging.settled.messages``: ``msg.ack()``, ``msg.retry(reason)``, ``msg.dead_letter(reason)``,
    ``msg.drop(reason)``) and the end-to-end latency from the emission time.
    An exception is recorded on the span, classified transient/permanent, reported once to
    ``otelkit._errors.report_exception`` and re-raised.
    """
    scope = Reception(destination, carrier, system=system, message_id=message_id, attempt=attempt, group=group,
                      parent=parent, max_attempts=max_attempts, attributes=attributes, correlation_id=correlation_id,
                      properties=properties, server_address=server_address, server_port=server_port,
                      routing_key=routing_key, delivery_tag=delivery_tag)
    scope._adoptive = True  # the application's receive: adopts a pulled message's scope (Reception._adopt)
    return scope


def receive_batch(destination: str, carriers: Iterable[Any], *, system: str,
                  message_ids: Iterable[object] | None = None, group: str | None = None,
                  parent: Literal["none", "current"] = "none", max_links: int = DEFAULT_MAX_LINKS,
                  attributes: Mapping[str, Any] | None = None, correlation_id: str | None = None) -> BatchReception:
    """Process a batch as one unit: one CONSUMER span linked to each message's producer.

    Sets ``messaging.batch.message_count``, links at most ``max_links`` messages (the
    number left out goes to ``otelkit.messaging.links.dropped``), records the batch size and
    each message's end-to-end latency. ``msg.messages`` lists the extracted messages.
    The batch's correlation ID: ``correlation_id`` when given and valid, else the one every message
    shares, else the enclosing ``correlate()`` scope's, else a fresh one.
    """
    return BatchReception(destination, carriers, system=system, message_ids=message_ids, group=group,
                          parent=parent, max_links=max_links, attributes=attributes, correlation_id=correlation_id)


def stage(name: str, *, source: str | None = None, variant: str | None = None,
          attributes: Mapping[str, Any] | None = None) -> Stage:
    """A pipeline step that is not messaging (discover, enrich, persist): a span and per-stage metrics.

    ``source`` names where the items come from (an API, a chain); ``variant`` labels an
    experiment arm (A/B comparison of processing parameters on one dashboard). Records
    ``otelkit.pipeline.stage.duration`` and ``otelkit.pipeline.processed.items`` by stage,
    source, variant and outcome; ``st.count(n, outcome=...)`` counts a batch's items.
    """
    return Stage(name, source=source, variant=variant, attributes=attributes)
