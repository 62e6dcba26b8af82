"""Through ``otelkit.init()``: status, re-init follows the provider swap, no duplicate after re-init."""

from __future__ import annotations

import uuid

import pytest
import redis

import otelkit
from otelkit.testing import capture_telemetry

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def test_reinit_keeps_instrumentation_and_follows_the_new_providers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)  # created before any init
    key = f"otelkit-init-{uuid.uuid4().hex}"
    with capture_telemetry(instrument=["redis"]) as first:
        status = {s.name: s for s in otelkit.integration_status()}
        assert status["redis"].state == "enabled"
        assert status["httpx"].state == "disabled"
        client.set(key, "1")
        assert first.spans.names() == ["SET"]
        assert [p.attributes["db.operation.name"] for p in first.metric_points("db.client.operation.duration")] \
            == ["SET"]
    with capture_telemetry(instrument=["redis", "httpx"], service_name="second") as second:
        client.get(key)
        client.delete(key)
        assert second.spans.names() == ["GET", "DEL"]  # one span each: re-init did not stack wrappers
        assert {s.name: s.state for s in otelkit.integration_status()}["httpx"] == "enabled"
    assert first.spans.names() == ["SET"]
    client.close()
