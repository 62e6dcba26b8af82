"""pika and aio-pika producer/consumer programs for test_instrument_amqp.py (run as subprocesses).

    python amqp_apps.py ROLE '{"json": "arguments"}'

Each calls ``otelkit.init()`` only: no pipeline call, the integration does the rest. The consumer
declares the queue, prints ``READY``, handles ``deliveries`` messages (``"mode": "get"``: pulled with
``basic_get`` / aio-pika ``queue.get()`` in a loop, or ``"mode": "iterator"``: aio-pika ``queue.iterator()``,
instead of pushed to a ``basic_consume`` / ``queue.consume`` callback) (message behaviours:
``nack-once`` requeues the first delivery, ``reject`` rejects without requeue), then stops
consuming and closes its channel (unacknowledged prefetched messages go back to the queue), so the
queue-depth sample taken at shutdown sees the messages left. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import otelkit

log = logging.getLogger("amqpapp")
DEADLINE = 40.0


def _init(args: dict[str, Any]) -> Any:
    """otelkit.init(), or (``"peer": "contrib"``) the contrib instrumentation on an SDK provider; returns shutdown."""
    if args.get("peer") != "contrib":
        otelkit.init()
        return otelkit.shutdown
    import os

    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": os.environ["OTEL_SERVICE_NAME"]}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.pika import PikaInstrumentor

    PikaInstrumentor().instrument(tracer_provider=provider)
    return provider.shutdown


def _behaviour(args: dict[str, Any], i: int) -> str | None:
    value = args.get("behaviour", {}).get(str(i))
    return str(value) if value is not None else None


def pika_producer(args: dict[str, Any]) -> None:
    import pika

    shutdown = _init(args)
    connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
    channel = connection.channel()
    for i in range(args["count"]):
        log.info("publishing %d", i)
        channel.basic_publish(exchange="", routing_key=args["queue"], body=json.dumps({"i": i}).encode(),
                              properties=pika.BasicProperties(correlation_id=f"amqp-cid-{i}", message_id=f"m-{i}"))
    connection.close()
    shutdown()
    print(json.dumps({"sent": args["count"]}), flush=True)


def pika_consumer(args: dict[str, Any]) -> None:
    import pika

    shutdown = _init(args)
    connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
    channel = connection.channel()
    channel.queue_declare(queue=args["queue"], durable=False)
    channel.basic_qos(prefetch_count=1)
    seen: list[dict[str, Any]] = []

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        i = json.loads(body)["i"]
        seen.append({"i": i, "redelivered": bool(method.redelivered), "correlation_id": otelkit.correlation_id()})
        log.info("handling %d", i)
        behaviour = _behaviour(args, i)
        if behaviour == "nack-once" and not method.redelivered:
            ch.basic_nack(method.delivery_tag, requeue=True)
        elif behaviour == "reject":
            ch.basic_reject(method.delivery_tag, requeue=False)
        else:
            ch.basic_ack(method.delivery_tag)
        if len(seen) >= args["deliveries"] and args.get("mode") != "get":
            ch.stop_consuming()

    if args.get("mode") == "get":  # the pull path: basic_get until enough deliveries or the deadline
        print("READY", flush=True)
        deadline = time.monotonic() + DEADLINE
        while len(seen) < args["deliveries"] and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(args["queue"])
            if method is None:
                connection.process_data_events(time_limit=0.05)  # the queue is empty for now: ask again shortly
                continue
            on_message(channel, method, properties, body)
            _settled_context_is_over()
    else:
        channel.basic_consume(args["queue"], on_message)
        print("READY", flush=True)
        connection.call_later(DEADLINE, channel.stop_consuming)
        channel.start_consuming()
    channel.close()  # prefetched, unacknowledged messages return to the queue
    shutdown()  # the last metric collection samples the queue depth
    connection.close()
    print(json.dumps({"seen": seen}), flush=True)


def _settled_context_is_over() -> None:
    """A pulled message's context ends with its settle: nothing of it may leak into what runs next."""
    if otelkit.correlation_id() is not None:
        raise AssertionError(f"correlation ID {otelkit.correlation_id()} still current after the settle")


def aio_producer(args: dict[str, Any]) -> None:
    import aio_pika

    otelkit.init()

    async def main() -> None:
        connection = await aio_pika.connect(args["rabbitmq_url"])
        async with connection:
            channel = await connection.channel()
            for i in range(args["count"]):
                log.info("publishing %d", i)
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"i": i}).encode(), correlation_id=f"amqp-cid-{i}",
                                     message_id=f"m-{i}"), routing_key=args["queue"])

    asyncio.run(main())
    otelkit.shutdown()
    print(json.dumps({"sent": args["count"]}), flush=True)


def aio_consumer(args: dict[str, Any]) -> None:
    import aio_pika

    otelkit.init()
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        connection = await aio_pika.connect(args["rabbitmq_url"])
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(args["queue"], durable=False)
        done = asyncio.Event()
        tags: list[Any] = []

        async def on_message(message: Any) -> None:
            i = json.loads(message.body)["i"]
            seen.append({"i": i, "redelivered": bool(message.redelivered),
                         "correlation_id": otelkit.correlation_id()})
            log.info("handling %d", i)
            if len(seen) >= args["deliveries"] and tags:
                await queue.cancel(tags[0])  # before settling: with prefetch 1 nothing else gets delivered
            behaviour = _behaviour(args, i)
            if behaviour == "nack-once" and not message.redelivered:
                await message.nack(requeue=True)
            elif behaviour == "reject":
                await message.reject(requeue=False)
            else:
                await message.ack()
            if len(seen) >= args["deliveries"]:
                done.set()

        mode = args.get("mode", "consume")
        if mode == "get":  # the pull path: queue.get() until enough deliveries or the deadline
            print("READY", flush=True)
            deadline = time.monotonic() + DEADLINE
            while len(seen) < args["deliveries"] and time.monotonic() < deadline:
                message = await queue.get(fail=False, timeout=5)
                if message is None:
                    await asyncio.sleep(0.05)  # the queue is empty for now: ask again shortly (polled, deadline)
                    continue
                await on_message(message)
                _settled_context_is_over()
        elif mode == "iterator":  # queue.iterator(): each message settled inside message.process()
            async with queue.iterator(timeout=DEADLINE) as messages:
                print("READY", flush=True)
                async for message in messages:
                    async with message.process(requeue=True, ignore_processed=True):
                        await on_message(message)
                    _settled_context_is_over()
                    if len(seen) >= args["deliveries"]:
                        break
        else:
            tags.append(await queue.consume(on_message))
            print("READY", flush=True)
            try:
                await asyncio.wait_for(done.wait(), DEADLINE)
            except asyncio.TimeoutError:
                pass
            if len(seen) < args["deliveries"]:
                await queue.cancel(tags[0])
        await channel.close()  # prefetched, unacknowledged messages return to the queue
        # The last metric collection samples the queue depth on this loop: shut down from a thread.
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await connection.close()

    asyncio.run(main())
    print(json.dumps({"seen": seen}), flush=True)


if __name__ == "__main__":
    {"pika_producer": pika_producer, "pika_consumer": pika_consumer, "aio_producer": aio_producer,
     "aio_consumer": aio_consumer}[sys.argv[1]](json.loads(sys.argv[2]))
