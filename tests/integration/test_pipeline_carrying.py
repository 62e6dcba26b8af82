"""The broker command that carries a message inside emit/receive is not traced twice (real Redis).

Inside ``pipeline.emit(..., system="redis")`` the LPUSH gets no redis span and no
``db.client.operation.duration`` point; the BRPOP whose message ``pipeline.receive`` then gets is
folded into the CONSUMER span. Every other command still has its own span and point, and a pop
whose message is not received (or that returns nothing) is still traced.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from otelkit import pipeline
from otelkit._names import DB_CLIENT_DURATION
from otelkit._pipeline import carrying
from otelkit.testing import CapturedTelemetry


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def queue(r: redis.Redis) -> Iterator[str]:
    name = f"otelkit-test:carrying:{uuid.uuid4().hex[:12]}"
    yield name
    r.delete(name, name + ":other")


def _redis_spans(t: CapturedTelemetry) -> list[str]:
    return [s.name for s in t.spans if s.instrumentation_scope and "redis" in s.instrumentation_scope.name]


def _db_operations(t: CapturedTelemetry) -> dict[str, int]:
    counts: dict[str, int] = {}
    for point in t.metric_points(DB_CLIENT_DURATION.name):
        name = str(point.attributes.get("db.operation.name"))
        counts[name] = counts.get(name, 0) + int(point.count or 0)
    return counts


@pytest.mark.otelkit(instrument=["redis"])
def test_carrying_lpush_and_brpop_have_no_span_of_their_own(otelkit_capture: CapturedTelemetry, r: redis.Redis,
                                                            queue: str) -> None:
    for i in range(2):
        with pipeline.emit(queue, system="redis") as msg:
            r.lpush(queue, msg.wrap(f"job-{i}"))
            r.set(queue + ":other", "x")  # another command inside the scope keeps its span
    for i in range(2):
        raw = r.brpop([queue], timeout=5)
        assert raw is not None
        with pipeline.receive(queue, raw[1], system="redis") as got:
            assert got.payload == f"job-{i}"
            r.get(queue + ":other")

    assert _redis_spans(otelkit_capture) == ["SET", "SET", "GET", "GET"]
    sends = otelkit_capture.spans.named(f"send {queue}")
    assert len(sends) == 2
    for span in sends:
        assert span.attributes[carrying.ATTR_COMMAND] == "LPUSH"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == 6379
    processes = otelkit_capture.spans.named(f"process {queue}")
    assert len(processes) == 2
    for span in processes:
        assert span.attributes[carrying.ATTR_COMMAND] == "BRPOP"
        assert span.attributes[carrying.ATTR_DURATION] >= 0.0
        assert span.attributes["server.port"] == 6379
    operations = _db_operations(otelkit_capture)
    assert "LPUSH" not in operations and "BRPOP" not in operations
    assert operations["SET"] == 2 and operations["GET"] == 2
    receives = otelkit_capture.metric_points("messaging.client.operation.duration",
                                             **{"messaging.operation.name": "receive"})
    assert sum(p.count or 0 for p in receives) == 2


@pytest.mark.otelkit(instrument=["redis"])
def test_commands_outside_a_flow_are_still_traced(otelkit_capture: CapturedTelemetry, r: redis.Redis,
                                                  queue: str) -> None:
    with pipeline.emit(queue, system="redis") as msg:  # makes this thread a redis pipeline thread
        r.lpush(queue, msg.wrap("a"))
    r.lpush(queue, "plain")  # outside emit: its own span
    with pipeline.emit(queue, system="redis") as msg:
        r.lpush(queue, msg.wrap("b"))
        r.lpush(queue, "second push")  # only the first push carries the message
    with pipeline.receive(queue, r.rpop(queue), system="redis"):
        pass
    popped = r.rpop(queue)  # a message this thread never passes to receive()
    assert popped is not None
    assert r.brpop([queue + ":empty"], timeout=1) is None  # nothing popped: traced at once
    r.get(queue + ":other")  # the next command first emits the deferred RPOP's span

    names = _redis_spans(otelkit_capture)
    assert names == ["LPUSH", "LPUSH", "RPOP", "BRPOP", "GET"], names
    operations = _db_operations(otelkit_capture)
    assert operations["LPUSH"] == 2 and operations["RPOP"] == 1 and operations["BRPOP"] == 1
    deferred = [s for s in otelkit_capture.spans if s.name == "RPOP"][0]
    assert deferred.end_time is not None and deferred.start_time is not None
    assert deferred.end_time >= deferred.start_time


@pytest.mark.otelkit(instrument=["redis"])
def test_a_receive_of_another_object_emits_the_deferred_pop(otelkit_capture: CapturedTelemetry,
                                                            r: redis.Redis, queue: str) -> None:
    with pipeline.emit(queue, system="redis") as msg:
        r.lpush(queue, msg.wrap("x"))
    raw = r.brpop([queue], timeout=5)
    assert raw is not None
    with pipeline.receive(queue, raw[1].decode(), system="redis"):  # a copy, not the popped object
        pass
    assert _redis_spans(otelkit_capture) == ["BRPOP"]
    process = otelkit_capture.spans.named(f"process {queue}")[0]
    assert carrying.ATTR_COMMAND not in process.attributes
