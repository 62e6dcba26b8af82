"""FastStream through otelkit's middleware, on the real Redis, RabbitMQ and NATS, across processes.

Producer and consumer are separate processes (faststream_apps.py) exporting through the real rotel
collector. ``otelkit.init()`` alone installs the middleware on each broker. Checked at the collector:
span counts, links (exactly one per consumer span, no parent), the correlation ID on the consumer spans
and log records, outcome counts for injected nack/reject, and no trace of the carrying broker commands.
The interop tests put FastStream's own OpenTelemetry middleware on the other side, on Redis: its binary
frame hides the headers from everything but a middleware.
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

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGE_END_TO_END, MESSAGES_SETTLED
from otelkit.testing._receiver import ReceivedSpan, RotelCollector

pytest.importorskip("faststream")

APPS = str(Path(__file__).with_name("faststream_apps.py"))
TIMEOUT = 90


def _env(collector: RotelCollector, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false"})
    return env


def run_pair(collector: RotelCollector, args: dict[str, Any], producer_mode: str, consumer_mode: str,
             service: str, consumer_role: str = "consumer", producer_role: str = "producer") -> dict[str, Any]:
    """Start the consumer, wait for READY, run the producer, return the consumer's report."""
    consumer = subprocess.Popen([sys.executable, APPS, consumer_role, json.dumps({**args, "mode": consumer_mode})],
                                env=_env(collector, f"{service}-consumer"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None
        ready = consumer.stdout.readline()
        assert ready.strip() == "READY", f"consumer did not start: {ready!r} {consumer.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        produced = subprocess.run([sys.executable, APPS, producer_role, json.dumps({**args, "mode": producer_mode})],
                                  env=_env(collector, f"{service}-producer"), capture_output=True, text=True,
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


def _args(kind: str, redis_url: str, rabbitmq_url: str, nats_url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "redis_url": redis_url, "rabbitmq_url": rabbitmq_url, "nats_url": nats_url,
            "destination": f"otelkit-test-fs-{kind}-{uuid.uuid4().hex[:10]}", **extra}


def _cleanup(args: dict[str, Any]) -> None:
    if args["kind"] == "redis":
        import redis

        redis.Redis.from_url(args["redis_url"]).delete(args["destination"])
    elif args["kind"] == "rabbit":
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(args["rabbitmq_url"]))
        try:
            connection.channel().queue_delete(queue=args["destination"])
        finally:
            connection.close()


@pytest.mark.parametrize("kind", ["redis", pytest.param("rabbit", marks=pytest.mark.slow), "nats"])
def test_otelkit_on_both_sides(kind: str, otelkit_collector: RotelCollector, redis_url: str, rabbitmq_url: str,
                               nats_url: str) -> None:
    count = 3
    args = _args(kind, redis_url, rabbitmq_url, nats_url, count=count, deliveries=count)
    if kind == "redis":  # the handler's return value is published to a reply list, from FastStream's polling task
        args["reply"] = args["destination"] + "-reply"
    service = f"fs-{kind}"
    try:
        consumed = run_pair(otelkit_collector, args, "otelkit", "otelkit", service)
    finally:
        _cleanup(args)
        if kind == "redis":
            import redis

            redis.Redis.from_url(redis_url).delete(args["reply"])
    destination = args["destination"]
    assert sorted(s["i"] for s in consumed["seen"]) == list(range(count))
    # FastStream's correlation_id (fs-cid-N here) is adopted: the handler runs under it.
    assert {s["correlation_id"] for s in consumed["seen"]} == {f"fs-cid-{i}" for i in range(count)}

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, f"{service}-consumer")
                                   if s.name == f"process {destination}"]) >= count
                      and len(receiver.metrics(MESSAGE_END_TO_END.name)) >= 1, timeout=60)
    sends = {s.span_id: s for s in _spans(otelkit_collector, f"{service}-producer") if s.name == f"send {destination}"}
    consumer_spans = _spans(otelkit_collector, f"{service}-consumer")
    processes = [s for s in consumer_spans if s.name == f"process {destination}"]
    assert len(sends) == count and len(processes) == count
    for process in processes:
        assert process.kind == "CONSUMER" and process.parent_span_id is None
        assert len(process.links) == 1
        send = sends[process.links[0].span_id]
        assert send.kind == "PRODUCER" and process.links[0].trace_id == send.trace_id
        cid = send.attributes["messaging.message.conversation_id"]
        assert cid.startswith("fs-cid-")
        assert process.attributes["messaging.message.conversation_id"] == cid
        assert process.attributes[CORRELATION_ATTRIBUTE] == cid
        assert process.attributes["messaging.system"] == {"redis": "redis", "rabbit": "rabbitmq",
                                                          "nats": "nats"}[kind]
    # One layer: no span of the broker commands that carried the messages (LPUSH, BLPOP, basic.publish...).
    others = [s.name for s in consumer_spans + list(_spans(otelkit_collector, f"{service}-producer"))
              if not s.name.startswith(("send ", "process "))]
    assert others == [], others
    if kind == "redis":  # each reply: a send span inside its process span, under the message's correlation ID
        by_span = {s.span_id: s for s in processes}
        replies = [s for s in consumer_spans if s.name == f"send {args['reply']}"]
        assert len(replies) == count
        for span in replies:
            assert span.kind == "PRODUCER" and span.parent_span_id in by_span
            assert span.attributes[CORRELATION_ATTRIBUTE] == by_span[span.parent_span_id].attributes[
                CORRELATION_ATTRIBUTE]
    # Every handler log record carries its message's correlation ID.
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "fsapp"
                                   and r.resource.get("service.name") == f"{service}-consumer"]) >= count,
                      timeout=60)
    records = [r for r in receiver.logs() if r.scope == "fsapp"
               and r.resource.get("service.name") == f"{service}-consumer"]
    assert {str(r.body): r.attributes.get(CORRELATION_ATTRIBUTE) for r in records} == {
        f"handling {i}": f"fs-cid-{i}" for i in range(count)}
    settled = [p for p in receiver.metrics(MESSAGES_SETTLED.name)
               if p.attributes.get("messaging.destination.name") == destination]
    assert {p.attributes["otelkit.outcome"]: p.value for p in settled} == {"ack": count}
    latency = [p for p in receiver.metrics(MESSAGE_END_TO_END.name)
               if p.attributes.get("messaging.destination.name") == destination]
    assert sum(p.count for p in latency) == count


def test_rabbit_outcomes_nack_and_reject(otelkit_collector: RotelCollector, redis_url: str, rabbitmq_url: str,
                                         nats_url: str) -> None:
    # message 0: acked; 1: nacked once (requeued, redelivered, then acked); 2: rejected; 3: fails (REJECT_ON_ERROR)
    args = _args("rabbit", redis_url, rabbitmq_url, nats_url, count=4, deliveries=5,
                 behaviour={"1": "nack-once", "2": "reject", "3": "fail"})
    try:
        consumed = run_pair(otelkit_collector, args, "otelkit", "otelkit", "fs-outcome")
    finally:
        _cleanup(args)
    assert sorted((s["i"], s["redelivered"]) for s in consumed["seen"]) == [
        (0, False), (1, False), (1, True), (2, False), (3, False)]
    destination = args["destination"]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, "fs-outcome-consumer")
                                   if s.name == f"process {destination}"]) >= 5
                      and receiver.metrics(MESSAGES_SETTLED.name), timeout=60)
    processes = [s for s in _spans(otelkit_collector, "fs-outcome-consumer") if s.name == f"process {destination}"]
    by_outcome: dict[str, list[ReceivedSpan]] = {}
    for span in processes:
        by_outcome.setdefault(span.attributes["otelkit.outcome"], []).append(span)
    assert {k: len(v) for k, v in by_outcome.items()} == {"ack": 2, "retry": 1, "dead_letter": 2}
    assert sorted(s.attributes["otelkit.message.attempt"] for s in by_outcome["ack"]) == [1, 2]
    assert [s.status for s in by_outcome["retry"]] != ["ERROR"]  # a nack is not a failure
    assert all(s.status == "ERROR" for s in by_outcome["dead_letter"])
    settled = {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
               if p.attributes.get("messaging.destination.name") == destination}
    assert settled == {"ack": 2, "retry": 1, "dead_letter": 2}


_SLOW = pytest.mark.slow  # RabbitMQ and NATS: the same middleware path as Redis, other carriers


@pytest.mark.parametrize(("kind", "producer_mode", "consumer_mode"), [
    ("redis", "fs-otel", "otelkit"), ("redis", "otelkit", "fs-otel"),
    pytest.param("rabbit", "fs-otel", "otelkit", marks=_SLOW),
    pytest.param("rabbit", "otelkit", "fs-otel", marks=_SLOW),
    pytest.param("nats", "fs-otel", "otelkit", marks=_SLOW), pytest.param("nats", "otelkit", "fs-otel", marks=_SLOW)])
def test_interop_with_faststream_telemetry(kind: str, producer_mode: str, consumer_mode: str,
                                           otelkit_collector: RotelCollector, redis_url: str, rabbitmq_url: str,
                                           nats_url: str) -> None:
    count = 3
    args = _args(kind, redis_url, rabbitmq_url, nats_url, count=count, deliveries=count)
    service = f"fs-interop-{kind}-{producer_mode}"
    try:
        consumed = run_pair(otelkit_collector, args, producer_mode, consumer_mode, service)
    finally:
        _cleanup(args)
    assert len(consumed["seen"]) == count
    receiver = otelkit_collector.receiver
    producer_service, consumer_service = f"{service}-producer", f"{service}-consumer"

    def consumer_spans() -> list[ReceivedSpan]:
        # FastStream names its spans "{destination} process"; otelkit "process {destination}".
        return [s for s in _spans(otelkit_collector, consumer_service) if s.kind == "CONSUMER" and "process" in s.name]

    receiver.wait_for(lambda: len(consumer_spans()) >= count
                      and len([s for s in _spans(otelkit_collector,
                                                 producer_service) if s.kind == "PRODUCER"]) >= count,
                      timeout=60)
    producer_spans = {s.span_id: s for s in _spans(otelkit_collector, producer_service) if s.kind == "PRODUCER"}
    processes = consumer_spans()
    assert len(processes) == count
    for process in processes:
        if consumer_mode == "otelkit":  # otelkit links (its rule); the producer is FastStream's publish span
            assert process.parent_span_id is None and len(process.links) == 1
            producer = producer_spans[process.links[0].span_id]
            assert process.attributes[CORRELATION_ATTRIBUTE] == process.attributes[
                "messaging.message.conversation_id"]
        else:  # FastStream parents its process span to the producer's
            producer = producer_spans[process.parent_span_id]
        assert producer.trace_id == (process.links[0].trace_id if consumer_mode == "otelkit" else process.trace_id)
    if consumer_mode == "otelkit":
        assert {s["correlation_id"] for s in consumed["seen"]} == {f"fs-cid-{i}" for i in range(count)}


def test_redis_faststream_telemetry_producer_to_plain_otelkit_consumer(otelkit_collector: RotelCollector,
                                                                       redis_url: str,
                                                                      rabbitmq_url: str, nats_url: str) -> None:
    """No FastStream on the consumer: ``pipeline.receive`` reads the headers inside FastStream's binary frame."""
    count = 3
    args = _args("redis", redis_url, rabbitmq_url, nats_url, count=count, deliveries=count)
    try:
        consumed = run_pair(otelkit_collector, args, "fs-otel", "otelkit", "fs-plain", consumer_role="plain_consumer")
    finally:
        _cleanup(args)
    assert sorted(s["i"] for s in consumed["seen"]) == list(range(count))
    assert {s["correlation_id"] for s in consumed["seen"]} == {f"fs-cid-{i}" for i in range(count)}
    destination = args["destination"]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, "fs-plain-consumer")
                                   if s.name == f"process {destination}"]) >= count
                      and len([s for s in _spans(otelkit_collector,
                                                 "fs-plain-producer") if s.kind == "PRODUCER"]) >= count,
                      timeout=60)
    producers = {s.span_id: s for s in _spans(otelkit_collector, "fs-plain-producer") if s.kind == "PRODUCER"}
    processes = [s for s in _spans(otelkit_collector, "fs-plain-consumer") if s.name == f"process {destination}"]
    assert len(processes) == count
    for process in processes:
        assert len(process.links) == 1 and process.links[0].span_id in producers
        assert process.links[0].trace_id == producers[process.links[0].span_id].trace_id


def test_redis_plain_otelkit_producer_to_faststream_consumer(otelkit_collector: RotelCollector, redis_url: str,
                                                             rabbitmq_url: str, nats_url: str) -> None:
    """``pipeline.emit`` + ``LPUSH msg.wrap(payload)`` into a FastStream list subscriber: the handler gets the
    payload, the process span links to the send span, the correlation ID crosses over."""
    count = 3
    args = _args("redis", redis_url, rabbitmq_url, nats_url, count=count, deliveries=count)
    try:
        consumed = run_pair(otelkit_collector, args, "otelkit", "otelkit", "fs-envelope",
                            producer_role="plain_producer")
    finally:
        _cleanup(args)
    assert sorted(s["i"] for s in consumed["seen"]) == list(range(count))  # the payload, not the envelope
    assert {s["correlation_id"] for s in consumed["seen"]} == {f"fs-cid-{i}" for i in range(count)}
    destination = args["destination"]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(otelkit_collector, "fs-envelope-consumer")
                                   if s.name == f"process {destination}"]) >= count
                      and len([s for s in _spans(otelkit_collector, "fs-envelope-producer")
                               if s.name == f"send {destination}"]) >= count, timeout=60)
    sends = {s.span_id: s for s in _spans(otelkit_collector, "fs-envelope-producer") if s.name == f"send {destination}"}
    processes = [s for s in _spans(otelkit_collector, "fs-envelope-consumer") if s.name == f"process {destination}"]
    assert len(sends) == count and len(processes) == count
    for process in processes:
        assert len(process.links) == 1 and process.links[0].span_id in sends
        assert process.attributes[CORRELATION_ATTRIBUTE] == sends[process.links[0].span_id].attributes[
            CORRELATION_ATTRIBUTE]
