"""pika and aio-pika through otelkit's integrations, on the real RabbitMQ, producer and consumer in two processes.

The consumers run pushed (``basic_consume`` / ``queue.consume``) and pulled (pika ``basic_get``, aio-pika
``queue.get()`` and ``queue.iterator()``). Neither program
calls ``otelkit.pipeline``: ``init()`` alone gives the spans, links, correlation IDs (the AMQP
``correlation_id`` property adopted), outcomes (nack with requeue → retry, reject without → dead letter),
attempts (``redelivered``) and the queue depth (passive declare) checked here at the real rotel collector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGE_END_TO_END, MESSAGES_SETTLED, QUEUE_LENGTH
from otelkit.testing._receiver import ReceivedSpan, RotelCollector

APPS = str(Path(__file__).with_name("amqp_apps.py"))
TIMEOUT = 90


def _env(collector: RotelCollector, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false"})
    return env


def _run_pair(collector: RotelCollector, library: str, args: dict[str, Any],
              consumer_args: dict[str, Any] | None = None,
              producer_args: dict[str, Any] | None = None) -> dict[str, Any]:
    prefix = "pika" if library == "pika" else "aio"
    consumer = subprocess.Popen([sys.executable, APPS, f"{prefix}_consumer",
                                 json.dumps({**args, **(consumer_args or {})})],
                                env=_env(collector, f"{library}-consumer"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None and consumer.stderr is not None
        ready = consumer.stdout.readline()
        assert ready.strip() == "READY", f"consumer did not start: {ready!r} {consumer.stderr.read()[-3000:]}"
        produced = subprocess.run([sys.executable, APPS, f"{prefix}_producer",
                                   json.dumps({**args, **(producer_args or {})})],
                                  env=_env(collector, f"{library}-producer"), capture_output=True, text=True,
                                  timeout=TIMEOUT)
        assert produced.returncode == 0, produced.stderr[-3000:]
        stdout, stderr = consumer.communicate(timeout=TIMEOUT)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()
    assert consumer.returncode == 0, stderr[-3000:]
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def _spans(collector: RotelCollector, service: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans() if s.resource.get("service.name") == service]


@pytest.mark.parametrize(("library", "mode"), [("pika", "consume"), ("pika", "get"), ("aio-pika", "consume"),
                                               ("aio-pika", "get"), ("aio-pika", "iterator")])
def test_rabbitmq_library_end_to_end(library: str, mode: str, otelkit_collector: RotelCollector,
                                     rabbitmq_url: str) -> None:
    """Push (``basic_consume`` / ``queue.consume`` callbacks) and pull (pika ``basic_get``, aio-pika
    ``queue.get()`` and ``queue.iterator()``) consumers."""
    import pika

    queue = f"otelkit-test-{library}-{mode}-{uuid.uuid4().hex[:10]}"
    # 6 messages: 1 is nacked with requeue once (then acked), 2 is rejected without requeue; the consumer
    # stops after 5 deliveries, so 2 messages stay in the queue for the depth sample.
    args = {"rabbitmq_url": rabbitmq_url, "queue": queue, "count": 6, "deliveries": 5,
            "behaviour": {"1": "nack-once", "2": "reject"}}
    try:
        consumed = _run_pair(otelkit_collector, library, args, consumer_args={"mode": mode})
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        connection.channel().queue_delete(queue=queue)
        connection.close()
    seen = consumed["seen"]
    assert len(seen) == 5
    delivered = {s["i"] for s in seen}
    assert {0, 1, 2} <= delivered and (1, True) in {(s["i"], s["redelivered"]) for s in seen}
    # The AMQP correlation_id property became the correlation ID of the handler's code.
    assert all(s["correlation_id"] == f"amqp-cid-{s['i']}" for s in seen)

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, f"{library}-consumer")
                                   if s.name == f"process {queue}"]) >= 5
                      and len([s for s in _spans(otelkit_collector, f"{library}-producer")
                               if s.name == f"send {queue}"]) >= 6
                      and [p for p in receiver.metrics(QUEUE_LENGTH.name)
                           if p.attributes.get("messaging.destination.name") == queue], timeout=60)
    sends = {s.span_id: s for s in _spans(otelkit_collector, f"{library}-producer") if s.name == f"send {queue}"}
    consumer_spans = _spans(otelkit_collector, f"{library}-consumer")
    processes = [s for s in consumer_spans if s.name == f"process {queue}"]
    assert len(sends) == 6 and len(processes) == 5
    for send in sends.values():
        assert send.kind == "PRODUCER"
        assert send.attributes["messaging.rabbitmq.destination.routing_key"] == queue
        assert send.attributes["server.address"] == "127.0.0.1" and send.attributes["server.port"] == 5672
    for process in processes:
        assert process.kind == "CONSUMER" and process.parent_span_id is None and len(process.links) == 1
        send = sends[process.links[0].span_id]
        assert send.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
        i = int(process.attributes["messaging.message.id"].split("-")[1])
        assert process.attributes[CORRELATION_ATTRIBUTE] == f"amqp-cid-{i}" == send.attributes[CORRELATION_ATTRIBUTE]
        assert process.attributes["messaging.rabbitmq.message.delivery_tag"] >= 1
    # One layer: no other span than otelkit's send/process (the contrib instrumentations are installed here).
    assert [s.name for s in consumer_spans if s not in processes] == []

    outcomes: dict[str, list[ReceivedSpan]] = {}
    for process in processes:
        outcomes.setdefault(process.attributes["otelkit.outcome"], []).append(process)
    expected = {"ack": 3, "retry": 1, "dead_letter": 1}
    assert {k: len(v) for k, v in outcomes.items()} == expected
    assert [s.attributes["messaging.message.id"] for s in outcomes["retry"]] == ["m-1"]
    assert [s.attributes["messaging.message.id"] for s in outcomes["dead_letter"]] == ["m-2"]
    assert outcomes["dead_letter"][0].status == "ERROR"
    assert sorted(s.attributes["otelkit.message.attempt"] for s in processes
                  if s.attributes["messaging.message.id"] == "m-1") == [1, 2]
    settled = {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
               if p.attributes.get("messaging.destination.name") == queue}
    assert settled == expected
    assert sum(p.count for p in receiver.metrics(MESSAGE_END_TO_END.name)
               if p.attributes.get("messaging.destination.name") == queue) == 5
    # Depth: the queue holds the 6 messages minus 3 acked, 1 rejected: 2, sampled at the consumer's shutdown.
    depth = [p for p in receiver.metrics(QUEUE_LENGTH.name) if p.attributes.get("messaging.destination.name") == queue]
    assert [p.value for p in depth] == [2]
    # Every handler log record carries its message's correlation ID.
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "amqpapp"
                                   and r.resource.get("service.name") == f"{library}-consumer"]) >= 5, timeout=60)
    for record in receiver.logs():
        if record.scope == "amqpapp" and record.resource.get("service.name") == f"{library}-consumer":
            i = int(str(record.body).split()[-1])
            assert record.attributes.get(CORRELATION_ATTRIBUTE) == f"amqp-cid-{i}"


@pytest.mark.parametrize("contrib_side", ["producer", "consumer"])
def test_pika_interop_with_the_contrib_instrumentation(contrib_side: str, otelkit_collector: RotelCollector,
                                                       rabbitmq_url: str) -> None:
    """A plain-OTel peer (opentelemetry-instrumentation-pika) on one side: the trace continues both ways."""
    import pika

    queue = f"otelkit-test-pika-interop-{uuid.uuid4().hex[:10]}"
    args = {"rabbitmq_url": rabbitmq_url, "queue": queue, "count": 3, "deliveries": 3}
    contrib = {"peer": "contrib"}
    try:
        consumed = _run_pair(otelkit_collector, "pika", args,
                             consumer_args=contrib if contrib_side == "consumer" else None,
                             producer_args=contrib if contrib_side == "producer" else None)
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        connection.channel().queue_delete(queue=queue)
        connection.close()
    assert len(consumed["seen"]) == 3
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, "pika-consumer") if s.kind == "CONSUMER"]) >= 3
                      and len([s for s in _spans(otelkit_collector, "pika-producer") if s.kind == "PRODUCER"]) >= 3,
                      timeout=60)
    producers = {s.span_id: s for s in _spans(otelkit_collector, "pika-producer") if s.kind == "PRODUCER"}
    consumers = [s for s in _spans(otelkit_collector, "pika-consumer") if s.kind == "CONSUMER"]
    # opentelemetry-instrumentation-pika makes two nested PRODUCER spans per BlockingChannel.basic_publish (it
    # wraps the BlockingChannel and its pika.channel.Channel); otelkit makes one.
    assert len(producers) == (6 if contrib_side == "producer" else 3) and len(consumers) == 3
    for span in consumers:
        if contrib_side == "producer":  # otelkit consumes: linked to the contrib producer span, its ID adopted
            assert span.parent_span_id is None and len(span.links) == 1
            assert span.links[0].trace_id == producers[span.links[0].span_id].trace_id
        else:  # the contrib consumer parents its span to otelkit's send span
            assert span.trace_id == producers[span.parent_span_id].trace_id
    if contrib_side == "producer":
        assert all(s["correlation_id"] == f"amqp-cid-{s['i']}" for s in consumed["seen"])
