"""The Redis Streams queue probe reports a consumer group's backlog (pending + lag), not XLEN, on the real Redis.

A stream keeps its entries after they are acknowledged: XLEN of a fully processed stream is
still its length. The probe must say 0 there.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from otelkit import pipeline


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, socket_timeout=10)
    yield r
    r.close()


@pytest.fixture
def stream(client: redis.Redis) -> Iterator[str]:
    key = f"otelkit-depth-{uuid.uuid4().hex}"
    yield key
    client.delete(key)  # only the stream this test created


def _read(client: redis.Redis, key: str, group: str, count: int) -> list[bytes]:
    got = client.xreadgroup(group, "c1", {key: ">"}, count=count)
    return [entry_id for _, entries in got for entry_id, _ in entries]


def test_acknowledged_entries_are_not_depth(client: redis.Redis, stream: str) -> None:
    client.xgroup_create(stream, "workers", id="0", mkstream=True)
    for i in range(100):
        client.xadd(stream, {"n": str(i)})
    probe = pipeline.redis_probe(client, stream, "stream", group="workers")
    assert probe() == 100  # all undelivered: lag 100, pending 0
    ids = _read(client, stream, "workers", 100)
    assert len(ids) == 100
    assert probe() == 100  # delivered, none acknowledged: pending 100
    client.xack(stream, "workers", *ids[:60])
    assert probe() == 40
    client.xack(stream, "workers", *ids[60:])
    assert client.xlen(stream) == 100  # what the XLEN probe used to report
    assert probe() == 0
    assert pipeline.redis_probe(client, stream, "stream")() == 0  # no group named: the furthest behind


def test_pending_plus_lag_and_the_slowest_group(client: redis.Redis, stream: str) -> None:
    client.xgroup_create(stream, "fast", id="0", mkstream=True)
    client.xgroup_create(stream, "slow", id="0")
    for i in range(10):
        client.xadd(stream, {"n": str(i)})
    fast = _read(client, stream, "fast", 10)
    client.xack(stream, "fast", *fast)
    _read(client, stream, "slow", 4)  # 4 pending, 6 not delivered
    assert pipeline.redis_probe(client, stream, "stream", group="fast")() == 0
    assert pipeline.redis_probe(client, stream, "stream", group="slow")() == 10
    assert pipeline.redis_probe(client, stream, "stream")() == 10


class _NoLagClient:
    """The real client, with ``lag`` removed from XINFO GROUPS: what Redis < 7 answers (named as such)."""

    def __init__(self, real: redis.Redis) -> None:
        self._real = real

    def xinfo_groups(self, key: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in info.items() if k not in ("lag", "entries-read")}
                for info in self._real.xinfo_groups(key)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_without_a_lag_field_undelivered_entries_are_counted(client: redis.Redis, stream: str) -> None:
    client.xgroup_create(stream, "workers", id="0", mkstream=True)
    for i in range(30):
        client.xadd(stream, {"n": str(i)})
    ids = _read(client, stream, "workers", 12)
    client.xack(stream, "workers", *ids[:2])
    probe = pipeline.redis_probe(_NoLagClient(client), stream, "stream", group="workers")
    assert probe() == 10 + 18


def test_no_group_reports_nothing_and_a_missing_stream_zero(client: redis.Redis, stream: str) -> None:
    assert pipeline.redis_probe(client, stream, "stream")() == 0  # the key does not exist
    client.xadd(stream, {"n": "1"})
    assert pipeline.redis_probe(client, stream, "stream")() is None  # no consumer group: no depth to tell
    client.xgroup_create(stream, "workers", id="$")
    assert pipeline.redis_probe(client, stream, "stream", group="other")() is None
    assert pipeline.redis_probe(client, stream, "stream", group="workers")() == 0
