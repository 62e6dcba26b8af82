"""Programs for the interop / retry tests (run as subprocesses): ``python pipeline_interop_apps.py ROLE JSON``.

Each role calls ``otelkit.init()`` (the test points it at the real rotel collector), works with
``otelkit.pipeline`` and prints one JSON line. Loops are bounded in count and time.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import otelkit
from otelkit import pipeline

log = logging.getLogger("interop.app")
DEADLINE = 30.0


def _out(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def _hex(span: Any) -> dict[str, str]:
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def rabbit_retrying_consumer(args: dict[str, Any]) -> None:
    """Consume a foreign AMQP message; the first attempt fails, is re-published for a retry after ``receive``."""
    import pika

    params = pika.URLParameters(args["rabbitmq_url"])
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = args["queue"]
    deadline = time.monotonic() + DEADLINE
    attempts: list[dict[str, Any]] = []
    while len(attempts) < 2 and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is None:
            connection.sleep(0.05)  # pika's own bounded event-loop wait
            continue
        msg = pipeline.receive(queue, properties.headers, system="rabbitmq", properties=properties,
                               routing_key=method.routing_key, delivery_tag=method.delivery_tag,
                               server_address=params.host, server_port=params.port, max_attempts=3)
        try:
            with msg:
                log.info("processing %s", body.decode())
                if len(attempts) == 0:
                    raise TimeoutError("the enrichment API timed out")
        except TimeoutError:
            # After receive exited: the failure line and the re-publication keep the message's ID.
            headers: dict[str, Any] = {}
            with pipeline.emit(queue, headers, system="rabbitmq", retry_of=msg, routing_key=queue,
                               server_address=params.host, server_port=params.port):
                log.warning("attempt %s failed; re-published for a retry", msg.attempt or 1)
                channel.basic_publish(exchange="", routing_key=queue, body=body,
                                      properties=pika.BasicProperties(headers=headers,
                                                                      correlation_id=properties.correlation_id))
        finally:
            channel.basic_ack(method.delivery_tag)
        attempts.append({"correlation_id": msg.correlation_id, "attempt": msg.attempt, "outcome": msg.outcome,
                         "message_id": msg.message_id, **_hex(msg.span)})
    connection.close()
    _out({"attempts": attempts})


# --- emit(message_id=...) reaches the consumer (Redis list, envelope) ---------------------------------

def list_producer(args: dict[str, Any]) -> None:
    import redis

    client = redis.Redis.from_url(args["redis_url"])
    with pipeline.emit(args["list"], system="redis", message_id=args["message_id"]) as msg:
        client.lpush(args["list"], msg.wrap({"token": "tok-id"}))
    _out({"correlation_id": msg.correlation_id, **_hex(msg.span)})


def list_consumer(args: dict[str, Any]) -> None:
    import redis

    client = redis.Redis.from_url(args["redis_url"])
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        popped = client.brpop([args["list"]], timeout=1)
        if popped is None:
            continue
        with pipeline.receive(args["list"], popped[1], system="redis") as msg:
            log.info("consumed %s", msg.payload["token"])
        _out({"message_id": msg.message_id, "correlation_id": msg.correlation_id, **_hex(msg.span)})
        return
    _out({})


# --- BullMQ (PyPI bullmq), instrumented by otelkit.init() alone ------------------------------------------

def bullmq_producer(args: dict[str, Any]) -> None:
    import asyncio

    from bullmq import Queue

    async def main() -> dict[str, Any]:
        queue = Queue(args["queue"], {"connection": args["redis_url"]})
        with pipeline.correlate() as cid:
            log.info("queueing a job")
            job = await queue.add("enrich", {"token": "tok-py"}, {"attempts": 2})
        await queue.close()
        return {"correlation_id": cid, "job_id": job.id}

    _out(asyncio.run(main()))


def bullmq_batch_producer(args: dict[str, Any]) -> None:
    """``Queue.addBulk`` of 3 jobs, then a ``FlowProducer`` flow (a parent and 2 children), under one span."""
    import asyncio

    from bullmq import FlowProducer, Queue
    from opentelemetry import trace

    async def main() -> dict[str, Any]:
        queue = Queue(args["queue"], {"connection": args["redis_url"]})
        flows = FlowProducer({"connection": args["redis_url"]})
        with trace.get_tracer("bullmq-app").start_as_current_span("batch"):
            bulk = await queue.addBulk([{"name": "enrich", "data": {"token": f"tok-b{i}"}} for i in range(3)])
            tree = await flows.add({"name": "report", "queueName": args["queue"], "data": {"token": "tok-parent"},
                                    "children": [{"name": "part", "queueName": args["queue"],
                                                  "data": {"token": f"tok-c{i}"}} for i in range(2)]})
        await queue.close()
        await flows.close()
        return {"bulk": [job.id for job in bulk], "flow": [tree["job"].id] + [c["job"].id for c in tree["children"]]}

    _out(asyncio.run(main()))


def bullmq_consumer(args: dict[str, Any]) -> None:
    import asyncio

    from bullmq import Worker
    from opentelemetry import trace

    async def main() -> dict[str, Any]:
        seen: list[dict[str, Any]] = []
        done = asyncio.Event()

        async def process(job: Any, token: str) -> str:
            log.info("processing job %s", job.id)
            ctx = trace.get_current_span().get_span_context()
            seen.append({"job_id": job.id, "correlation_id": otelkit.correlation_id(),
                         "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")})
            if len(seen) >= args["count"]:
                done.set()
            if args.get("fail_first") and len(seen) == 1:
                raise RuntimeError("the first attempt fails")
            return "ok"

        worker = Worker(args["queue"], process, {"connection": args["redis_url"]})
        try:
            await asyncio.wait_for(done.wait(), DEADLINE)
        except asyncio.TimeoutError:
            pass
        await worker.close()
        return {"jobs": seen}

    _out(asyncio.run(main()))


ROLES = {"rabbit_retrying_consumer": rabbit_retrying_consumer, "list_producer": list_producer,
         "list_consumer": list_consumer, "bullmq_producer": bullmq_producer,
         "bullmq_batch_producer": bullmq_batch_producer,
         "bullmq_consumer": bullmq_consumer}


if __name__ == "__main__":
    otelkit.init()
    try:
        ROLES[sys.argv[1]](json.loads(sys.argv[2]))
    finally:
        otelkit.shutdown()
