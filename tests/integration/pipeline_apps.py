"""Producer and consumer programs for the cross-process pipeline tests (run as subprocesses).

Each role calls ``otelkit.init()`` (configured by the ``OTEL_*`` variables the test
sets: the real rotel collector), does its work with ``otelkit.pipeline`` and prints
one JSON line with what it did on stdout. Every loop is bounded in count and time.

    python pipeline_apps.py ROLE '{"json": "arguments"}'
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

log = logging.getLogger("pipeline.app")
DEADLINE = 20.0


def _out(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


# --- Redis stream + list -----------------------------------------------------------------------------

def redis_producer(args: dict[str, Any]) -> None:
    import redis

    client = redis.Redis.from_url(args["redis_url"])
    result: dict[str, Any] = {}
    # A stream message: the fields dict is the carrier; XADD takes it as is.
    with pipeline.correlate() as cid:
        with pipeline.stage("discover", source="test-chain"):
            log.info("discovered %s", "tok-stream")
            fields = {"token": "tok-stream"}
            with pipeline.emit(args["stream"], fields, system="redis") as msg:
                msg.message_id = client.xadd(args["stream"], fields)  # type: ignore[arg-type]
        result["stream"] = {"correlation_id": cid, "message_id": msg.message_id.decode(),
                            "trace_id": format(msg.span.get_span_context().trace_id, "032x")}
    # A list message: payload only, so it travels in an envelope.
    with pipeline.emit(args["list"], system="redis") as msg:
        log.info("queued %s", "tok-list")
        client.lpush(args["list"], msg.wrap(json.dumps({"token": "tok-list"})))
    result["list"] = {"correlation_id": msg.correlation_id,
                      "trace_id": format(msg.span.get_span_context().trace_id, "032x")}
    _out(result)


def _handle(client_http: Any, conn: Any, args: dict[str, Any], token: str) -> None:
    log.info("processing %s", token)
    with pipeline.stage("enrich", source="local-api"):
        response = client_http.get(f"{args['api_url']}/price", params={"token": token})
        response.raise_for_status()
        price = response.json()["price"]
    with pipeline.stage("persist", source="postgres"), conn.cursor() as cur:
        cur.execute(f"INSERT INTO {args['table']} (token, price, correlation_id) VALUES (%s, %s, %s)",
                    (token, price, otelkit.correlation_id()))
        conn.commit()
    log.info("stored %s", token)


def redis_consumer(args: dict[str, Any]) -> None:
    import httpx
    import psycopg2
    import redis

    client = redis.Redis.from_url(args["redis_url"])  # bytes in, bytes out: the carrier is raw fields
    conn = psycopg2.connect(args["postgres_dsn"])
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + DEADLINE
    with httpx.Client(timeout=5) as http:
        last_id = "0"
        while "stream" not in seen and time.monotonic() < deadline:
            for _stream, entries in client.xread({args["stream"]: last_id}, count=10, block=1000) or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    with pipeline.receive(args["stream"], fields, system="redis", message_id=entry_id,
                                          group="enrichers") as msg:
                        _handle(http, conn, args, fields[b"token"].decode())
                    seen["stream"] = {"correlation_id": msg.correlation_id,
                                      "trace_id": format(msg.span.get_span_context().trace_id, "032x")}
        while "list" not in seen and time.monotonic() < deadline:
            popped = client.brpop([args["list"]], timeout=1)
            if popped is None:
                continue
            with pipeline.receive(args["list"], popped[1], system="redis") as msg:
                _handle(http, conn, args, json.loads(msg.payload)["token"])
            seen["list"] = {"correlation_id": msg.correlation_id,
                            "trace_id": format(msg.span.get_span_context().trace_id, "032x")}
    conn.close()
    _out(seen)


# --- RabbitMQ (pika): AMQP message properties.headers --------------------------------------------------

def rabbit_producer(args: dict[str, Any]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
    channel = connection.channel()
    channel.queue_declare(queue=args["queue"], auto_delete=False)
    with pipeline.emit(args["queue"], system="rabbitmq", message_id="rmq-1") as msg:
        log.info("publishing to rabbitmq")
        channel.basic_publish(exchange="", routing_key=args["queue"], body=b'{"token": "tok-rmq"}',
                              properties=pika.BasicProperties(headers=msg.headers, message_id="rmq-1"))
    connection.close()
    _out({"correlation_id": msg.correlation_id, "trace_id": format(msg.span.get_span_context().trace_id, "032x")})


def rabbit_consumer(args: dict[str, Any]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
    channel = connection.channel()
    deadline = time.monotonic() + DEADLINE
    result: dict[str, Any] = {}
    while not result and time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue=args["queue"], auto_ack=False)
        if method is None:
            connection.sleep(0.05)  # pika's own event-loop wait, bounded by the deadline
            continue
        with pipeline.receive(args["queue"], properties.headers, system="rabbitmq",
                              message_id=properties.message_id,
                              attempt=2 if method.redelivered else 1) as msg:
            log.info("consumed %s", json.loads(body)["token"])
            channel.basic_ack(method.delivery_tag)
        result = {"correlation_id": msg.correlation_id,
                  "trace_id": format(msg.span.get_span_context().trace_id, "032x"),
                  "header_types": sorted({type(v).__name__ for v in properties.headers.values()})}
    channel.queue_delete(queue=args["queue"])
    connection.close()
    _out(result)


# --- NATS (nats-py, asyncio): message headers ---------------------------------------------------------------

def nats_consumer(args: dict[str, Any]) -> None:
    import nats

    async def main() -> dict[str, Any]:
        nc = await nats.connect(args["nats_url"])
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        @pipeline.receive(args["subject"], carrier=lambda m: m.headers, system="nats")
        async def handle(m: Any) -> None:
            log.info("nats message %s", m.data.decode())
            current = pipeline.current_message()
            assert current is not None
            if not done.done():
                done.set_result({"correlation_id": otelkit.correlation_id(),
                                 "trace_id": format(current.span.get_span_context().trace_id, "032x")})

        await nc.subscribe(args["subject"], cb=handle)
        await nc.flush()
        print("READY", flush=True)
        try:
            return await asyncio.wait_for(done, DEADLINE)
        finally:
            await nc.drain()

    _out(asyncio.run(main()))


def nats_producer(args: dict[str, Any]) -> None:
    import nats

    async def main() -> dict[str, Any]:
        nc = await nats.connect(args["nats_url"])
        async with pipeline.emit(args["subject"], system="nats") as msg:
            log.info("publishing to nats")
            await nc.publish(args["subject"], b"tok-nats", headers=msg.headers)
        await nc.flush()
        await nc.close()
        return {"correlation_id": msg.correlation_id,
                "trace_id": format(msg.span.get_span_context().trace_id, "032x")}

    _out(asyncio.run(main()))


ROLES = {f.__name__: f for f in (redis_producer, redis_consumer, rabbit_producer, rabbit_consumer,
                                 nats_producer, nats_consumer)}

if __name__ == "__main__":
    role, raw_args = sys.argv[1], json.loads(sys.argv[2])
    otelkit.init()
    logging.getLogger().setLevel(logging.INFO)
    try:
        ROLES[role](raw_args)
    finally:
        report = otelkit.shutdown()
        print(f"shutdown: {report}", file=sys.stderr)
