"""Malformed context as it really arrives: a foreign producer writes junk into a real Redis stream and list.

Fields come back from redis-py as bytes keys and values, exactly as a consumer sees them. Each
malformed message is processed in a fresh trace with a fresh correlation ID; the well-formed ones
(written by ``otelkit.pipeline.emit``) in between stay linked to their producers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from otelkit import pipeline
from otelkit._correlation import is_valid_correlation_id
from otelkit._names import CORRELATION_HEADER, ENVELOPE_MARKER
from otelkit.testing import CapturedTelemetry

JUNK_FIELDS: list[dict[bytes, bytes]] = [
    {b"traceparent": b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01", b"body": b"all-zero trace id"},
    {b"traceparent": b"\xff\xfe\x00", b"baggage": b"\x00\xff", b"body": b"binary"},
    {b"traceparent": b"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"body": b"version ff"},
    {b"traceparent": b"00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", b"body": b"upper case"},
    {CORRELATION_HEADER.encode(): b"c" * 10_240, b"baggage": b"correlation_id=" + b"a" * 10_240, b"body": b"10 KB"},
    {b"baggage": b";;;,,,==%%%" * 100, b"body": b"junk baggage"},
    {b"otelkit-sent-at": b"1e309", b"otelkit-attempt": b"-5", b"body": b"junk numbers"},
]

JUNK_PAYLOADS: list[bytes] = [
    b"{not json",
    b"[1, 2, 3]",
    b'{"' + ENVELOPE_MARKER.encode() + b'":1,"headers":',
    b'{"' + ENVELOPE_MARKER.encode() + b'":1,"headers":{"traceparent":5},"payload":"p"}',
    b"\x00\xff" * 50,
]


class _Redis:
    """A real Redis client plus the unique keys this test created (deleted afterwards)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.keys: list[str] = []

    def key(self, kind: str) -> str:
        key = f"otelkit-test:bad-input:{kind}:{uuid.uuid4().hex}"
        self.keys.append(key)
        return key


@pytest.fixture
def rds(redis_url: str) -> Iterator[_Redis]:
    r = _Redis(redis_url)
    try:
        yield r
    finally:
        if r.keys:
            r.client.delete(*r.keys)
        r.client.close()


def test_junk_stream_entries_start_fresh_traces_good_ones_stay_linked(otelkit_capture: CapturedTelemetry,
                                                                      rds: _Redis) -> None:
    client, stream = rds.client, rds.key("stream")
    good_ids = []
    for i, fields in enumerate(JUNK_FIELDS):
        client.xadd(stream, fields)
        good: dict[str, str] = {"body": f"good {i}"}
        with pipeline.emit("bad-input", good, system="redis") as out:
            out.message_id = client.xadd(stream, good)
        good_ids.append(out.correlation_id)
    otelkit_capture.clear()

    entries = client.xrange(stream)
    assert len(entries) == 2 * len(JUNK_FIELDS)
    seen: list[tuple[bytes, Any]] = []
    for message_id, fields in entries:
        with pipeline.receive("bad-input", fields, system="redis", message_id=message_id) as msg:
            assert pipeline.correlation_id() == msg.correlation_id
        seen.append((fields[b"body"], msg))

    spans = otelkit_capture.spans.named("process bad-input")
    assert len(spans) == len(entries)
    for (body, msg), span in zip(seen, spans, strict=True):
        assert is_valid_correlation_id(msg.correlation_id), body
        if body.startswith(b"good"):
            assert msg.producer is not None and len(span.links) == 1, body
        else:
            assert msg.producer is None and not span.links and span.parent is None, body
            assert msg.correlation_id not in good_ids
    assert [m.correlation_id for b, m in seen if b.startswith(b"good")] == good_ids


def test_junk_list_payloads_come_back_unchanged_in_fresh_traces(otelkit_capture: CapturedTelemetry,
                                                                rds: _Redis) -> None:
    client, queue = rds.client, rds.key("list")
    for payload in JUNK_PAYLOADS:
        client.rpush(queue, payload)
    with pipeline.emit("bad-input", system="redis") as out:
        client.rpush(queue, out.wrap(json.dumps({"order": 1})))
    otelkit_capture.clear()

    results = []
    while (raw := client.lpop(queue)) is not None:
        with pipeline.receive("bad-input", raw, system="redis") as msg:
            pass
        results.append((raw, msg))
    assert len(results) == len(JUNK_PAYLOADS) + 1
    for raw, msg in results[:-1]:
        assert msg.producer is None and is_valid_correlation_id(msg.correlation_id)
        if not raw.startswith(b'{"' + ENVELOPE_MARKER.encode()) or raw.endswith(b":"):
            assert msg.payload == raw  # legacy and truncated payloads are handed back untouched
    last = results[-1][1]
    assert last.producer is not None and json.loads(last.payload) == {"order": 1}
    assert last.correlation_id == out.correlation_id
