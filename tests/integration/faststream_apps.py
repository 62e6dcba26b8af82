"""FastStream producer and consumer programs for test_instrument_faststream.py (run as subprocesses).

    python faststream_apps.py ROLE '{"json": "arguments"}'

``mode`` ``otelkit``: ``otelkit.init()`` only (the middleware is installed on the broker by itself).
``mode`` ``fs-otel``: FastStream's own ``TelemetryMiddleware`` on an SDK tracer provider exporting
OTLP/HTTP to the same collector (the foreign peer of the interop tests). The consumer prints
``READY`` once subscribed, then one JSON line with what it saw; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger("fsapp")
DEADLINE = 40.0


def _setup(mode: str) -> Any:
    """Telemetry of this process; returns a shutdown callable."""
    if mode == "otelkit":
        import otelkit

        otelkit.init()
        return otelkit.shutdown
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ["OTEL_SERVICE_NAME"]}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    logging.basicConfig(level=logging.INFO)
    return provider.shutdown


def _broker(args: dict[str, Any]) -> Any:
    kind, mode = args["kind"], args["mode"]
    middlewares: list[Any] = []
    if kind == "redis":
        from faststream.redis import RedisBroker as Broker

        if mode == "fs-otel":
            from faststream.redis.opentelemetry import RedisTelemetryMiddleware as Telemetry
        url = args["redis_url"]
    elif kind == "rabbit":
        from faststream.rabbit import RabbitBroker as Broker  # type: ignore[assignment]

        if mode == "fs-otel":
            from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware as Telemetry  # type: ignore
        url = args["rabbitmq_url"]
    else:
        from faststream.nats import NatsBroker as Broker  # type: ignore[assignment]

        if mode == "fs-otel":
            from faststream.nats.opentelemetry import NatsTelemetryMiddleware as Telemetry  # type: ignore
        url = args["nats_url"]
    if mode == "fs-otel":
        middlewares.append(Telemetry())
    # graceful_timeout: stopping the broker waits for the message in flight (its middleware exit included)
    return Broker(url, middlewares=middlewares, logger=None, graceful_timeout=15)


def _subscribe_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    if args["kind"] == "redis":
        return {"list": args["destination"]}
    if args["kind"] == "rabbit":
        from faststream.rabbit import RabbitQueue

        return {"queue": RabbitQueue(args["destination"], durable=False, auto_delete=False)}
    return {"subject": args["destination"]}


def _publish_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    if args["kind"] == "redis":
        return {"list": args["destination"]}
    if args["kind"] == "rabbit":
        return {"queue": args["destination"]}
    return {"subject": args["destination"]}


def producer(args: dict[str, Any]) -> None:
    shutdown = _setup(args["mode"])
    broker = _broker(args)
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        async with broker:
            for i in range(args["count"]):
                log.info("publishing %d", i)
                await broker.publish({"i": i}, correlation_id=f"fs-cid-{i}", **_publish_kwargs(args))
                sent.append({"i": i})

    asyncio.run(main())
    shutdown()
    print(json.dumps({"sent": len(sent)}), flush=True)


def consumer(args: dict[str, Any]) -> None:
    shutdown = _setup(args["mode"])
    from faststream import AckPolicy, Context
    from faststream.exceptions import NackMessage, RejectMessage

    broker = _broker(args)
    seen: list[dict[str, Any]] = []
    done = asyncio.Event()
    expected = args["deliveries"]
    kwargs = _subscribe_kwargs(args)
    if args["kind"] == "rabbit":
        kwargs["ack_policy"] = AckPolicy.REJECT_ON_ERROR

    def reply(handler: Any) -> Any:  # with "reply": the handler's return value is published to that list
        return broker.publisher(list=args["reply"])(handler) if args.get("reply") else handler

    @broker.subscriber(**kwargs)
    @reply
    async def handle(body: dict[str, Any], message: Any = Context("message")) -> dict[str, Any]:  # noqa: B008
        import otelkit

        i = body["i"]
        cid = otelkit.correlation_id() if args["mode"] == "otelkit" else None
        redelivered = bool(getattr(message.raw_message, "redelivered", False))
        seen.append({"i": i, "correlation_id": cid, "redelivered": redelivered})
        log.info("handling %d", i)
        if len(seen) >= expected:
            done.set()
        behaviour = args.get("behaviour", {}).get(str(i))
        if behaviour == "nack-once" and not redelivered:
            raise NackMessage()
        if behaviour == "reject":
            raise RejectMessage()
        if behaviour == "fail":
            raise ValueError("permanent failure")
        return {"done": i}

    async def main() -> None:
        async with broker:
            await broker.start()
            print("READY", flush=True)
            try:
                await asyncio.wait_for(done.wait(), DEADLINE)
            except asyncio.TimeoutError:
                pass

    asyncio.run(main())
    shutdown()
    print(json.dumps({"seen": seen}), flush=True)


def plain_producer(args: dict[str, Any]) -> None:
    """otelkit without FastStream: ``pipeline.emit`` + LPUSH of ``msg.wrap(payload)``."""
    import redis

    import otelkit
    from otelkit import pipeline

    otelkit.init()
    client = redis.Redis.from_url(args["redis_url"])
    for i in range(args["count"]):
        with pipeline.emit(args["destination"], system="redis", correlation_id=f"fs-cid-{i}") as msg:
            client.lpush(args["destination"], msg.wrap(json.dumps({"i": i})))
    otelkit.shutdown()
    print(json.dumps({"sent": args["count"]}), flush=True)


def plain_consumer(args: dict[str, Any]) -> None:
    """otelkit without FastStream: BRPOP + ``pipeline.receive(queue, raw)`` reads FastStream's binary frame."""
    import time

    import redis

    import otelkit
    from otelkit import pipeline

    otelkit.init()
    client = redis.Redis.from_url(args["redis_url"])
    print("READY", flush=True)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE
    while len(seen) < args["deliveries"] and time.monotonic() < deadline:
        popped = client.brpop([args["destination"]], timeout=1)
        if popped is None:
            continue
        with pipeline.receive(args["destination"], popped[1], system="redis") as msg:
            body = json.loads(msg.payload)
            log.info("handling %d", body["i"])
            seen.append({"i": body["i"], "correlation_id": msg.correlation_id})
    otelkit.shutdown()
    print(json.dumps({"seen": seen}), flush=True)


if __name__ == "__main__":
    {"producer": producer, "consumer": consumer, "plain_consumer": plain_consumer,
     "plain_producer": plain_producer}[sys.argv[1]](json.loads(sys.argv[2]))
