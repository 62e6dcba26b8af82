"""A foreign AMQP producer feeds an otelkit consumer on the real RabbitMQ; its retry is re-published after receive.

The producer is not otelkit: a bare pika publish (in this test process) carrying what a plain
OpenTelemetry producer sends (a W3C ``traceparent`` header) and the AMQP ``correlation_id`` and
``message_id`` properties. The consumer (a subprocess running ``otelkit.init()``, exporting to the
real rotel collector) adopts the correlation ID, fails its first attempt, re-publishes the message
with ``emit(retry_of=msg)`` after its ``receive`` block, and succeeds on the second attempt.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGE_END_TO_END, MESSAGE_TIME_IN_QUEUE
from otelkit.testing._receiver import RotelCollector

APPS = str(Path(__file__).with_name("pipeline_interop_apps.py"))
PROCESS_TIMEOUT = 90
FOREIGN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FOREIGN_SPAN = "00f067aa0ba902b7"


def run_app(role: str, args: dict[str, Any], collector: RotelCollector, service: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false"})
    proc = subprocess.run([sys.executable, APPS, role, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, f"{role} failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture
def queue(rabbitmq_url: str) -> Iterator[str]:
    name = f"otelkit-interop-{uuid.uuid4().hex[:12]}"
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.queue_declare(queue=name)
    yield name
    channel.queue_delete(queue=name)  # only the queue this test declared
    connection.close()


def test_foreign_amqp_correlation_id_adopted_and_kept_across_a_retry(
        otelkit_collector: RotelCollector, rabbitmq_url: str, queue: str) -> None:
    cid = f"order-{uuid.uuid4().hex[:8]}"
    sent = int(time.time()) - 600  # the AMQP timestamp property: seconds; sent ten minutes ago
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    connection.channel().basic_publish(
        exchange="", routing_key=queue, body=b'{"token": "tok-foreign"}',
        properties=pika.BasicProperties(correlation_id=cid, message_id="foreign-1", timestamp=sent,
                                        headers={"traceparent": f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01"}))
    connection.close()

    result = run_app("rabbit_retrying_consumer", {"rabbitmq_url": rabbitmq_url, "queue": queue}, otelkit_collector,
                     "interop-consumer")
    first, second = result["attempts"]
    assert first["correlation_id"] == second["correlation_id"] == cid
    assert (first["attempt"], first["outcome"]) == (None, "retry")
    assert (second["attempt"], second["outcome"]) == (2, "ack")
    assert first["message_id"] == "foreign-1"  # the AMQP message_id property

    receiver = otelkit_collector.receiver
    name = f"process {queue}"
    receiver.wait_for(lambda: len([s for s in receiver.spans(name)]) == 2 and receiver.spans(f"send {queue}"),
                      timeout=60)
    process = sorted(receiver.spans(name), key=lambda s: s.start_time_unix_nano)
    (send,) = receiver.spans(f"send {queue}")
    # attempt 1 continues the foreign producer by a link; the re-publication is a child of the failed attempt
    assert [(link.trace_id, link.span_id) for link in process[0].links] == [(FOREIGN_TRACE, FOREIGN_SPAN)]
    assert (send.trace_id, send.parent_span_id) == (first["trace_id"], first["span_id"])
    assert [(link.trace_id, link.span_id) for link in process[1].links] == [(send.trace_id, send.span_id)]
    for span in (*process, send):
        assert span.attributes[CORRELATION_ATTRIBUTE] == cid
        assert span.attributes["messaging.message.conversation_id"] == cid
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == 5672
        assert span.attributes["messaging.rabbitmq.destination.routing_key"] == queue
    assert [s.attributes["messaging.rabbitmq.message.delivery_tag"] for s in process] == [1, 2]
    assert send.attributes["otelkit.message.attempt"] == 2
    assert process[1].attributes["otelkit.message.attempt"] == 2

    # every log line, the failure line written after receive exited included, carries the ID
    def lines() -> list[Any]:
        return [r for r in receiver.logs() if "processing" in str(r.body) or "re-published" in str(r.body)]

    receiver.wait_for(lambda: len(lines()) == 3, timeout=60)
    assert {r.attributes[CORRELATION_ATTRIBUTE] for r in lines()} == {cid}

    # outcomes and the end-to-end latency of the retried message, counted from the first emission
    settled = receiver.wait_for(lambda: [p for p in receiver.metrics("otelkit.messaging.settled.messages")
                                         if p.attributes.get("messaging.destination.name") == queue], timeout=60)
    assert {p.attributes["otelkit.outcome"]: p.value for p in settled} == {"retry": 1, "ack": 1}
    e2e = [p for p in receiver.metrics(MESSAGE_END_TO_END.name)
           if p.attributes.get("messaging.destination.name") == queue]
    in_queue = [p for p in receiver.metrics(MESSAGE_TIME_IN_QUEUE.name)
                if p.attributes.get("messaging.destination.name") == queue]
    assert sum(p.count or 0 for p in e2e) == 2 and sum(p.count or 0 for p in in_queue) == 2
    # both attempts count from the foreign emission ten minutes ago: the retry kept the first send time ...
    assert sum(p.sum or 0.0 for p in e2e) >= 2 * 600
    # ... while its time in queue starts at its re-publication
    assert sum(p.sum or 0.0 for p in in_queue) < 2 * 600


def test_emit_message_id_reaches_the_consumer_span(otelkit_collector: RotelCollector, redis_url: str) -> None:
    args = {"redis_url": redis_url, "list": f"otelkit-msgid-{uuid.uuid4().hex[:12]}",
            "message_id": f"evt-{uuid.uuid4().hex[:8]}"}
    produced = run_app("list_producer", args, otelkit_collector, "msgid-producer")
    consumed = run_app("list_consumer", args, otelkit_collector, "msgid-consumer")
    assert consumed["message_id"] == args["message_id"]
    receiver = otelkit_collector.receiver
    name = f"process {args['list']}"
    (process,) = receiver.wait_for(lambda: receiver.spans(name), timeout=60)
    (send,) = receiver.wait_for(lambda: receiver.spans(f"send {args['list']}"), timeout=60)
    assert process.attributes["messaging.message.id"] == send.attributes["messaging.message.id"] == args["message_id"]
    assert process.attributes[CORRELATION_ATTRIBUTE] == produced["correlation_id"]
    assert [(link.trace_id, link.span_id) for link in process.links] == [(produced["trace_id"], produced["span_id"])]


def test_foreign_nats_correlation_header_adopted(otelkit_capture: Any, nats_url: str) -> None:
    """A bare nats-py publisher (not otelkit) sends HTTP-style ``X-Correlation-Id`` and ``traceparent`` headers."""
    import asyncio

    import nats

    from otelkit import pipeline

    subject = f"otelkit.interop.{uuid.uuid4().hex[:12]}"
    cid = f"nats-{uuid.uuid4().hex[:8]}"

    async def main() -> tuple[str | None, str | None]:
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.subscribe(subject)
            await nc.publish(subject, b"{}", headers={"X-Correlation-Id": cid,
                                                      "traceparent": f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01"})
            received = await sub.next_msg(timeout=30)
            with pipeline.receive(subject, received.headers, system="nats") as msg:
                inside = pipeline.correlation_id()
            return msg.correlation_id, inside
        finally:
            await nc.close()

    adopted, inside = asyncio.run(main())
    assert adopted == inside == cid
    (span,) = [s for s in otelkit_capture.spans if s.name == f"process {subject}"]
    assert span.attributes[CORRELATION_ATTRIBUTE] == cid
    assert [(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
            for link in span.links] == [(FOREIGN_TRACE, FOREIGN_SPAN)]
