"""An application's own ``pipeline.receive`` around a message an integration pulled adopts its scope.

aio-pika (``queue.get()``, ``queue.iterator()``) and NATS JetStream (``fetch(batch=3)``) on the real brokers: a
foreign producer (bare pika / nats-py in this test process, not otelkit) sends 3 messages carrying a W3C
``traceparent`` and a correlation ID; a consumer subprocess runs ``otelkit.init()`` (the integration traces each
pulled message) and wraps each message in ``pipeline.receive(..., attempt=, max_attempts=2, properties=)`` as
code written for earlier releases does (adoption_apps.py). Checked at the real rotel collector: one span per
delivery, nothing else; the application's outcome (an exception → retry, then dead letter at ``max_attempts``;
a reject/term inside the block stands); its attempt; the emission time from ``properties=`` (the AMQP
``timestamp`` / JetStream's store time): end-to-end latency and time in queue recorded once per delivery.
The converse: a message the integration pulls while another pulled message is current (a second queue) is its
own operation, never adopted into the current one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGE_END_TO_END, MESSAGE_TIME_IN_QUEUE, MESSAGES_SETTLED
from otelkit.testing._receiver import ReceivedSpan, RotelCollector

APPS = str(Path(__file__).with_name("adoption_apps.py"))
TIMEOUT = 90
FOREIGN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENT_AGO = 600  # the AMQP timestamp property of the foreign messages: sent ten minutes ago
# 3 messages, 4 deliveries: 0 → ack; 1 → retry (requeued), then dead letter (max_attempts=2); 2 → dead letter
EXPECTED = {"ack": 1, "retry": 1, "dead_letter": 2}


def _span_id(i: int) -> str:
    return f"{i + 1:016x}"


def _run_consumer(collector: RotelCollector, role: str, args: dict[str, Any], service: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false"})
    proc = subprocess.Popen([sys.executable, APPS, role, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def _check(collector: RotelCollector, service: str, destination: str, result: dict[str, Any],
           cid_of: dict[int, str], e2e_floor: float) -> None:
    seen = result["seen"]
    # What the application saw: its own outcome, attempt and the message's correlation ID; nothing left current.
    assert sorted((s["i"], s["attempt"], s["outcome"]) for s in seen) == [
        (0, 1, "ack"), (1, 1, "retry"), (1, 2, "dead_letter"), (2, 1, "dead_letter")]
    assert all(s["app_attempt"] == s["attempt"] for s in seen)
    assert all(s["correlation_id"] == cid_of[s["i"]] for s in seen), seen
    assert [s["leaked"] for s in seen] == [None] * 4

    receiver = collector.receiver
    name = f"process {destination}"

    def spans() -> list[ReceivedSpan]:
        return [s for s in receiver.spans() if s.resource.get("service.name") == service]

    receiver.wait_for(lambda: len([s for s in spans() if s.name == name]) >= 4 and [
        p for p in receiver.metrics(MESSAGES_SETTLED.name) if p.attributes.get("messaging.destination.name")
        == destination], timeout=60)
    processes = [s for s in spans() if s.name == name]
    # One span per delivery, nothing else: the application's receive made no second span.
    assert len(processes) == 4 and [s.name for s in spans() if s not in processes] == []
    assert sorted(s.span_id for s in processes) == sorted(s["span_id"] for s in seen)
    by_span = {s["span_id"]: s for s in seen}
    for process in processes:
        delivery = by_span[process.span_id]
        i = delivery["i"]
        assert process.kind == "CONSUMER" and process.parent_span_id is None
        assert [(link.trace_id, link.span_id) for link in process.links] == [(FOREIGN_TRACE, _span_id(i))]
        assert process.attributes[CORRELATION_ATTRIBUTE] == cid_of[i]
        assert process.attributes["otelkit.message.attempt"] == delivery["attempt"]
        assert process.attributes["otelkit.outcome"] == delivery["outcome"]
        assert (process.status == "ERROR") == (delivery["outcome"] != "ack"), (process.status, delivery)
    settled = {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
               if p.attributes.get("messaging.destination.name") == destination}
    assert settled == EXPECTED
    e2e = [p for p in receiver.metrics(MESSAGE_END_TO_END.name)
           if p.attributes.get("messaging.destination.name") == destination]
    in_queue = [p for p in receiver.metrics(MESSAGE_TIME_IN_QUEUE.name)
                if p.attributes.get("messaging.destination.name") == destination]
    # The foreign messages carry no otelkit emission time: both come from the application's properties=,
    # once per delivery (not once by the integration and again by the application).
    assert sum(p.count or 0 for p in e2e) == 4 and sum(p.count or 0 for p in in_queue) == 4
    assert sum(p.sum or 0.0 for p in e2e) >= 4 * e2e_floor
    assert sum(p.sum or 0.0 for p in in_queue) >= 4 * e2e_floor
    # Every handling log record carries its message's correlation ID, in the span of its delivery.
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "adoptionapp"
                                   and r.resource.get("service.name") == service]) >= 4, timeout=60)
    records = [r for r in receiver.logs() if r.scope == "adoptionapp" and r.resource.get("service.name") == service]
    assert len(records) == 4
    for record in records:
        i = int(str(record.body).split()[1])
        assert record.attributes.get(CORRELATION_ATTRIBUTE) == cid_of[i]
        assert by_span[record.span_id or ""]["i"] == i


@pytest.mark.parametrize("role", ["aio_get", "aio_iterator"])
def test_aio_pika_pulled_message_adopted(role: str, otelkit_collector: RotelCollector, rabbitmq_url: str) -> None:
    import pika

    queue = f"otelkit-adopt-{role}-{uuid.uuid4().hex[:10]}"
    cid_of = {i: f"order-{uuid.uuid4().hex[:8]}" for i in range(3)}
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.queue_declare(queue=queue)
    try:
        for i in range(3):
            channel.basic_publish(exchange="", routing_key=queue, body=json.dumps({"i": i}).encode(),
                                  properties=pika.BasicProperties(
                                      correlation_id=cid_of[i], message_id=f"foreign-{i}",
                                      timestamp=int(time.time()) - SENT_AGO,
                                      headers={"traceparent": f"00-{FOREIGN_TRACE}-{_span_id(i)}-01"}))
        result = _run_consumer(otelkit_collector, role, {"rabbitmq_url": rabbitmq_url, "queue": queue,
                                                         "deliveries": 4}, f"adopt-{role}")
    finally:
        channel.queue_delete(queue=queue)
        connection.close()
    _check(otelkit_collector, f"adopt-{role}", queue, result, cid_of, SENT_AGO)
    processes = [s for s in otelkit_collector.receiver.spans(f"process {queue}")]
    assert sorted(s.attributes["messaging.message.id"] for s in processes) == [
        "foreign-0", "foreign-1", "foreign-1", "foreign-2"]


def test_nats_fetched_message_adopted(otelkit_collector: RotelCollector, nats_url: str) -> None:
    import nats

    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"OTELKIT_ADOPT_{suffix}", f"otelkit-adopt.{suffix}"
    cid_of = {i: f"order-{uuid.uuid4().hex[:8]}" for i in range(3)}

    async def publish() -> list[int]:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        sequences = []
        for i in range(3):
            ack = await js.publish(subject, json.dumps({"i": i}).encode(), headers={
                "X-Correlation-Id": cid_of[i], "traceparent": f"00-{FOREIGN_TRACE}-{_span_id(i)}-01"})
            sequences.append(ack.seq)
        await nc.close()
        return sequences

    async def delete() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()

    try:
        sequences = asyncio.run(publish())
        result = _run_consumer(otelkit_collector, "nats_fetch", {"nats_url": nats_url, "subject": subject,
                                                                 "durable": f"adopt-{suffix}", "deliveries": 4},
                               "adopt-nats")
    finally:
        asyncio.run(delete())
    # The 3 messages came in one batch, so the adoption is exercised inside a batch (the hand-over to the next).
    assert result["batches"][0] == 3 and sum(result["batches"]) == 4
    # JetStream's store time (metadata.timestamp) dates the foreign messages: at or after the publish above.
    _check(otelkit_collector, "adopt-nats", subject, result, cid_of, 0.0)
    processes = otelkit_collector.receiver.spans(f"process {subject}")
    assert sorted(s.attributes["messaging.message.id"] for s in processes) == sorted(
        str(n) for n in (*sequences, sequences[1]))


@pytest.mark.parametrize("role", ["aio_two_queues", "pika_get_then_consume"])
def test_a_second_message_while_a_pulled_one_is_current_is_its_own(role: str, otelkit_collector: RotelCollector,
                                                                    rabbitmq_url: str) -> None:
    """Integration only: an aio-pika ``get()`` on a second queue, or a pika ``basic_consume`` callback, while the
    first queue's pulled message is current makes the second message's own span (it does not adopt the current
    one); settling it gives the first one's context back."""
    import pika

    queues = [f"otelkit-adopt-two-{n}-{uuid.uuid4().hex[:10]}" for n in ("a", "b")]
    cids = [f"order-{uuid.uuid4().hex[:8]}" for _ in queues]
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    try:
        for queue, cid in zip(queues, cids, strict=True):
            channel.queue_declare(queue=queue)
            channel.basic_publish(exchange="", routing_key=queue, body=b"{}",
                                  properties=pika.BasicProperties(correlation_id=cid))
        result = _run_consumer(otelkit_collector, role, {"rabbitmq_url": rabbitmq_url, "queues": queues},
                               f"adopt-{role}")
    finally:
        for queue in queues:
            channel.queue_delete(queue=queue)
        connection.close()
    assert result == {"in_a": cids[0], "in_b": cids[1], "after_b": cids[0], "after_a": None}
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: all(receiver.spans(f"process {q}") for q in queues), timeout=60)
    (a,), (b,) = (receiver.spans(f"process {q}") for q in queues)
    assert (a.attributes[CORRELATION_ATTRIBUTE], a.attributes["otelkit.outcome"]) == (cids[0], "ack")
    assert (b.attributes[CORRELATION_ATTRIBUTE], b.attributes["otelkit.outcome"]) == (cids[1], "dead_letter")
    assert a.span_id != b.span_id and a.trace_id != b.trace_id
    records = receiver.wait_for(lambda: (r if len(r := [x for x in receiver.logs() if x.scope == "adoptionapp" and
                                                        x.resource.get("service.name") == f"adopt-{role}"]) >= 2
                                         else None), timeout=60)
    assert {str(r.body): (r.attributes.get(CORRELATION_ATTRIBUTE), r.span_id) for r in records} == {
        "handling b": (cids[1], b.span_id), "handling a": (cids[0], a.span_id)}
