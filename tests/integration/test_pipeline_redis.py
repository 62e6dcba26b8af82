"""The pipeline against real Redis, through ``otelkit.init()`` (the ``otelkit_capture`` fixture).

* queue-depth probes: LLEN / XLEN / SCARD / ZCARD feeding ``otelkit.messaging.queue.length``,
  and the probe's own Redis command is not traced;
* a Redis Streams consumer group: an unacknowledged message is reclaimed (XAUTOCLAIM) and
  processed again with its delivery count from XPENDING as the attempt; the first attempt
  is a retry, the second is acked;
* a batch read (XREADGROUP COUNT n) processed as one span linked to every producer;
* instruments survive a re-``init()`` (they follow otelkit's proxy providers);
* pub/sub with the JSON envelope next to a legacy (un-enveloped) publisher;
* a de-duplicating set with its context in a side hash (the pattern docs/pipeline.md gives).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis

from otelkit import pipeline
from otelkit._names import ATTR_ATTEMPT, ATTR_OUTCOME, CORRELATION_ATTRIBUTE, QUEUE_LENGTH
from otelkit.testing import CapturedTelemetry, capture_telemetry


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    keys: list[str] = []
    client.test_keys = keys  # type: ignore[attr-defined]
    yield client
    if keys:
        client.delete(*keys)
    client.close()


def key(r: redis.Redis, kind: str) -> str:
    name = f"otelkit-test:{kind}:{uuid.uuid4().hex[:12]}"
    r.test_keys.append(name)  # type: ignore[attr-defined]
    return name


@pytest.mark.otelkit(instrument=["redis"])
def test_queue_depth_probes_on_real_redis(otelkit_capture: CapturedTelemetry, r: redis.Redis) -> None:
    lst, stream, st, zs = key(r, "list"), key(r, "stream"), key(r, "set"), key(r, "zset")
    r.rpush(lst, *range(3))
    for i in range(4):
        r.xadd(stream, {"i": i})
    r.xgroup_create(stream, "enrichers", id="0")  # a stream's depth is its group's backlog: 4 not delivered yet
    r.sadd(st, *range(5))
    r.zadd(zs, {f"m{i}": i for i in range(6)})
    handles = [pipeline.observe_queue(lst, pipeline.redis_probe(r, lst, "list"), system="redis"),
               pipeline.observe_queue(stream, pipeline.redis_probe(r, stream, "stream"), system="redis"),
               pipeline.observe_queue(st, pipeline.redis_probe(r, st, "set"), system="redis", state="discovered"),
               pipeline.observe_queue(zs, pipeline.redis_probe(r, zs, "zset"), system="redis", state="delayed")]
    otelkit_capture.clear()
    try:
        points = otelkit_capture.metric_points(QUEUE_LENGTH.name)
        depth = {p.attributes["messaging.destination.name"]: p for p in points}
    finally:
        for handle in handles:
            handle.close()
    assert {name: depth[name].value for name in (lst, stream, st, zs)} == {lst: 3, stream: 4, st: 5, zs: 6}
    assert depth[st].attributes["otelkit.messaging.queue.state"] == "discovered"
    assert depth[lst].unit == "{message}"
    # The redis instrumentation is on, yet the probes' LLEN/XINFO/SCARD/ZCARD made no spans.
    assert not [s for s in otelkit_capture.spans if s.name.split()[0] in ("LLEN", "XINFO", "SCARD", "ZCARD")], \
        otelkit_capture.spans.names()


def test_consumer_group_redelivery_counts_attempts(otelkit_capture: CapturedTelemetry, r: redis.Redis) -> None:
    stream, group = key(r, "stream"), "enrichers"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    fields = {"token": "abc"}
    with pipeline.emit(stream, fields, system="redis") as sent:
        sent.message_id = r.xadd(stream, fields)  # type: ignore[arg-type]

    def deliveries(entry_id: bytes) -> int:
        pending = r.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"])

    # Worker A reads the message and fails on a transient error: no XACK, so it stays pending.
    [(_, [(entry_id, received)])] = r.xreadgroup(group, "worker-a", {stream: ">"}, count=1)
    with pytest.raises(TimeoutError):
        with pipeline.receive(stream, received, system="redis", message_id=entry_id, group=group,
                              attempt=deliveries(entry_id), max_attempts=5):
            raise TimeoutError("price API timed out")
    # Worker B reclaims it (XAUTOCLAIM increments the delivery count) and succeeds.
    _, claimed, *_ = r.xautoclaim(stream, group, "worker-b", min_idle_time=0, start_id="0-0")
    [(claimed_id, claimed_fields)] = claimed
    assert claimed_id == entry_id
    with pipeline.receive(stream, claimed_fields, system="redis", message_id=claimed_id, group=group,
                          attempt=deliveries(claimed_id), max_attempts=5) as msg:
        r.xack(stream, group, claimed_id)
    assert msg.correlation_id == sent.correlation_id

    first, second = otelkit_capture.spans.named(f"process {stream}")
    assert (first.attributes[ATTR_ATTEMPT], first.attributes[ATTR_OUTCOME]) == (1, "retry")
    assert (second.attributes[ATTR_ATTEMPT], second.attributes[ATTR_OUTCOME]) == (2, "ack")
    producer = otelkit_capture.spans.span(f"send {stream}")
    assert [link.context.span_id for link in second.links] == [producer.context.span_id]
    assert first.context.trace_id != second.context.trace_id  # each delivery is its own trace
    assert second.attributes["messaging.message.id"] == entry_id.decode()
    settled = {p.attributes[ATTR_OUTCOME]: p.value for p in otelkit_capture.metric_points(
        "otelkit.messaging.settled.messages", **{"messaging.destination.name": stream})}
    assert settled == {"retry": 1, "ack": 1}


def test_batch_read_is_one_span_linked_to_each_producer(otelkit_capture: CapturedTelemetry, r: redis.Redis) -> None:
    stream, group = key(r, "stream"), "batchers"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    for i in range(5):
        fields = {"n": str(i)}
        with pipeline.emit(stream, fields, system="redis") as sent:
            r.xadd(stream, fields)  # type: ignore[arg-type]
    [(_, entries)] = r.xreadgroup(group, "w", {stream: ">"}, count=10)
    with pipeline.receive_batch(stream, [f for _, f in entries], system="redis", message_ids=[i for i, _ in entries],
                                group=group) as batch:
        r.xack(stream, group, *[i for i, _ in entries])
    assert len(batch.messages) == 5
    span = otelkit_capture.spans.span(f"process {stream}")
    producers = {s.context.span_id for s in otelkit_capture.spans.named(f"send {stream}")}
    assert {link.context.span_id for link in span.links} == producers
    assert span.attributes["messaging.batch.message_count"] == 5
    assert span.attributes[CORRELATION_ATTRIBUTE] == batch.correlation_id  # five different IDs: a fresh batch ID
    assert {link.attributes["messaging.message.conversation_id"] for link in span.links} == \
           {m.correlation_id for m in batch.messages}
    assert sent.correlation_id in {m.correlation_id for m in batch.messages}
    [size] = otelkit_capture.metric_points("otelkit.messaging.batch.size")
    assert size.sum == 5
    [e2e] = otelkit_capture.metric_points("otelkit.messaging.message.end_to_end.duration")
    assert e2e.count == 5


def test_instruments_follow_reinit() -> None:
    with capture_telemetry() as first:
        with pipeline.emit("reinit", {}, system="redis"):
            pass
    with capture_telemetry() as second:
        with pipeline.emit("reinit", {}, system="redis"):
            pass
        [point] = second.metric_points("messaging.client.sent.messages")
        assert point.value == 1
        assert second.spans.names() == ["send reinit"]
    assert first.spans.names() == ["send reinit"]


def test_pubsub_envelope_and_legacy_publisher(otelkit_capture: CapturedTelemetry, r: redis.Redis) -> None:
    channel = f"otelkit-test:events:{uuid.uuid4().hex[:12]}"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    try:
        with pipeline.emit(channel, system="redis") as sent:
            r.publish(channel, sent.wrap(b'{"token": "abc"}'))
        r.publish(channel, b'{"token": "legacy"}')  # a producer not yet on otelkit
        received = []
        for _ in range(50):  # bounded: 50 polls of at most 0.1 s
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                with pipeline.receive(channel, message["data"], system="redis") as msg:
                    received.append((msg.payload, msg.correlation_id, msg.producer is not None))
            if len(received) == 2:
                break
    finally:
        pubsub.close()
    assert received[0] == (b'{"token": "abc"}', sent.correlation_id, True)
    assert received[1][0] == b'{"token": "legacy"}' and received[1][2] is False
    assert received[1][1] != sent.correlation_id


def test_dedup_set_with_side_hash(otelkit_capture: CapturedTelemetry, r: redis.Redis) -> None:
    """The pattern docs/pipeline.md gives for Redis sets: the member stays the bare ID, context sits beside it."""
    tokens, contexts = key(r, "set"), key(r, "hash")
    for _ in range(2):  # discovered twice: SADD still de-duplicates
        with pipeline.emit(tokens, system="redis") as sent:
            if r.sadd(tokens, "tok-1"):
                r.hset(contexts, "tok-1", json.dumps(sent.headers))
                r.expire(contexts, 3600)
                first = sent
    assert r.scard(tokens) == 1
    member = r.spop(tokens)
    raw_headers = r.hget(contexts, member)
    r.hdel(contexts, member)
    assert raw_headers is not None
    with pipeline.receive(tokens, json.loads(raw_headers), system="redis", message_id=member) as msg:
        assert msg.correlation_id == first.correlation_id
    process = otelkit_capture.spans.span(f"process {tokens}")
    assert process.links[0].context.span_id == first.span.get_span_context().span_id
