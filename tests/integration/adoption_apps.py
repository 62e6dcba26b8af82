"""Consumers that wrap a pulled message in their own ``pipeline.receive`` (for test_pipeline_adoption_pulled.py).

    python adoption_apps.py ROLE '{"json": "arguments"}'

Roles: ``aio_get`` (aio-pika ``queue.get()``), ``aio_iterator`` (aio-pika ``queue.iterator()`` with
``message.process()`` around the block) and ``nats_fetch`` (JetStream pull ``fetch(batch=3)``). Each calls
``otelkit.init()`` (so the integration traces the pulled message) and handles messages the way code written
for earlier releases does: ``pipeline.receive(..., attempt=, max_attempts=2, properties=)`` around each one.
Message behaviours (by the ``i`` of the body): 0 completes and is acked after the block; 1 raises
``TimeoutError`` on every delivery (requeued/nak'd after the first, rejected/term'd after the second);
2 is rejected/term'd inside the block. Prints ``READY`` when consuming, then one JSON line: each delivery's
``i``, attempt, the outcome and correlation ID the application saw, and whether a correlation ID was still
current after its handling. Every loop is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import otelkit
from otelkit import pipeline

log = logging.getLogger("adoptionapp")
DEADLINE = 40.0
MAX_ATTEMPTS = 2


def _record(seen: list[dict[str, Any]], i: int, attempt: int, msg: Any, inside: str | None) -> None:
    ctx = msg.span.get_span_context()
    seen.append({"i": i, "attempt": attempt, "outcome": msg.outcome, "app_attempt": msg.attempt,
                 "correlation_id": inside, "span_id": format(ctx.span_id, "016x"),
                 "leaked": otelkit.correlation_id()})


async def _aio_handle(message: Any, queue: str, seen: list[dict[str, Any]]) -> None:
    """The application's handling of one aio-pika message (``queue.get()`` mode: it settles it itself)."""
    i = json.loads(message.body)["i"]
    attempt = 2 if message.redelivered else 1
    inside = None
    msg = pipeline.receive(queue, message.headers, system="rabbitmq", properties=message, attempt=attempt,
                           max_attempts=MAX_ATTEMPTS)
    try:
        async with msg:
            inside = otelkit.correlation_id()
            log.info("handling %d attempt %d", i, attempt)
            if i == 1:
                raise TimeoutError("the enrichment API timed out")
            if i == 2:
                await message.reject(requeue=False)
    except TimeoutError:
        await message.nack(requeue=attempt < MAX_ATTEMPTS)
    else:
        if i == 0:
            await message.ack()
    _record(seen, i, attempt, msg, inside)


def aio_get(args: dict[str, Any]) -> None:
    import aio_pika

    seen: list[dict[str, Any]] = []

    async def main() -> None:
        connection = await aio_pika.connect(args["rabbitmq_url"])
        channel = await connection.channel()
        queue = await channel.declare_queue(args["queue"], passive=True)
        print("READY", flush=True)
        deadline = time.monotonic() + DEADLINE
        while len(seen) < args["deliveries"] and time.monotonic() < deadline:
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(0.05)  # the queue is empty for now (the nack'd one is on its way back)
                continue
            await _aio_handle(message, args["queue"], seen)
        await channel.close()
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await connection.close()

    asyncio.run(main())
    print(json.dumps({"seen": seen}), flush=True)


def aio_iterator(args: dict[str, Any]) -> None:
    import aio_pika

    seen: list[dict[str, Any]] = []

    async def main() -> None:
        connection = await aio_pika.connect(args["rabbitmq_url"])
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(args["queue"], passive=True)
        async with queue.iterator(timeout=DEADLINE) as messages:
            print("READY", flush=True)
            async for message in messages:
                i = json.loads(message.body)["i"]
                attempt = 2 if message.redelivered else 1
                inside = None
                msg = pipeline.receive(args["queue"], message.headers, system="rabbitmq", properties=message,
                                       attempt=attempt, max_attempts=MAX_ATTEMPTS)
                try:
                    # message.process() settles after the application's block: ack, or on the exception a
                    # requeue (first attempt) or a reject (the last one)
                    async with message.process(requeue=attempt < MAX_ATTEMPTS, ignore_processed=True):
                        async with msg:
                            inside = otelkit.correlation_id()
                            log.info("handling %d attempt %d", i, attempt)
                            if i == 1:
                                raise TimeoutError("the enrichment API timed out")
                            if i == 2:
                                await message.reject(requeue=False)
                except TimeoutError:
                    pass
                _record(seen, i, attempt, msg, inside)
                if len(seen) >= args["deliveries"]:
                    break
        await channel.close()
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await connection.close()

    asyncio.run(main())
    print(json.dumps({"seen": seen}), flush=True)


def aio_two_queues(args: dict[str, Any]) -> None:
    """No application receive: a message pulled from a second queue while the first one's is current."""
    import aio_pika

    out: dict[str, Any] = {}

    async def main() -> None:
        connection = await aio_pika.connect(args["rabbitmq_url"])
        channel = await connection.channel()
        first = await channel.declare_queue(args["queues"][0], passive=True)
        second = await channel.declare_queue(args["queues"][1], passive=True)
        print("READY", flush=True)
        a = await first.get(timeout=10)
        out["in_a"] = otelkit.correlation_id()
        b = await second.get(timeout=10)
        out["in_b"] = otelkit.correlation_id()
        log.info("handling %s", "b")
        await b.reject(requeue=False)
        out["after_b"] = otelkit.correlation_id()
        log.info("handling %s", "a")
        await a.ack()
        out["after_a"] = otelkit.correlation_id()
        await channel.close()
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await connection.close()

    asyncio.run(main())
    print(json.dumps(out), flush=True)


def pika_get_then_consume(args: dict[str, Any]) -> None:
    """No application receive: a ``basic_consume`` callback runs while a ``basic_get`` message is current."""
    import pika

    out: dict[str, Any] = {}
    connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
    channel = connection.channel()
    print("READY", flush=True)
    method = None
    deadline = time.monotonic() + DEADLINE
    while method is None and time.monotonic() < deadline:
        method, _properties, _body = channel.basic_get(args["queues"][0])
        if method is None:
            connection.process_data_events(time_limit=0.05)  # not there yet: ask again (bounded by the deadline)
    assert method is not None, "the first queue's message never came"
    out["in_a"] = otelkit.correlation_id()

    def on_message(ch: Any, delivery: Any, _props: Any, _body: bytes) -> None:
        out["in_b"] = otelkit.correlation_id()
        log.info("handling %s", "b")
        ch.basic_reject(delivery.delivery_tag, requeue=False)

    channel.basic_consume(args["queues"][1], on_message)
    while "in_b" not in out and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.1)  # the callback runs in here, in this thread's context
    out["after_b"] = otelkit.correlation_id()
    log.info("handling %s", "a")
    channel.basic_ack(method.delivery_tag)
    out["after_a"] = otelkit.correlation_id()
    channel.close()
    otelkit.shutdown()
    connection.close()
    print(json.dumps(out), flush=True)


def nats_fetch(args: dict[str, Any]) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    seen: list[dict[str, Any]] = []
    batches: list[int] = []

    async def main() -> None:
        nc = await nats.connect(args["nats_url"])
        js = nc.jetstream()
        pull = await js.pull_subscribe(args["subject"], durable=args["durable"],
                                       config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
        print("READY", flush=True)
        deadline = time.monotonic() + DEADLINE
        while len(seen) < args["deliveries"] and time.monotonic() < deadline:
            try:
                msgs = await pull.fetch(batch=3, timeout=1)
            except (NatsTimeout, asyncio.TimeoutError):
                continue  # the nak'd message is not back yet: fetch again (the deadline bounds it)
            batches.append(len(msgs))
            for m in msgs:
                i = json.loads(m.data)["i"]
                attempt = m.metadata.num_delivered
                inside = None
                msg = pipeline.receive(args["subject"], m.headers, system="nats", properties=m.metadata,
                                       attempt=attempt, max_attempts=MAX_ATTEMPTS)
                try:
                    async with msg:
                        inside = otelkit.correlation_id()
                        log.info("handling %d attempt %d", i, attempt)
                        if i == 1:
                            raise TimeoutError("the enrichment API timed out")
                        if i == 2:
                            await m.term()
                except TimeoutError:
                    await (m.nak() if attempt < MAX_ATTEMPTS else m.term())
                else:
                    if i == 0:
                        await m.ack()
                record_leak = m is msgs[-1]  # inside a batch the next message is current by design
                _record(seen, i, attempt, msg, inside)
                if not record_leak:
                    seen[-1]["leaked"] = None
        await nc.flush()
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await nc.close()

    asyncio.run(main())
    print(json.dumps({"seen": seen, "batches": batches}), flush=True)


if __name__ == "__main__":
    role, raw = sys.argv[1], json.loads(sys.argv[2])
    otelkit.init()
    logging.getLogger().setLevel(logging.INFO)
    {"aio_get": aio_get, "aio_iterator": aio_iterator, "aio_two_queues": aio_two_queues,
     "pika_get_then_consume": pika_get_then_consume, "nats_fetch": nats_fetch}[role](raw)
