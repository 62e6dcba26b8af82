"""A queue probe against a hung Redis never stalls metric export or shutdown.

The hung "Redis" is a real TCP server that accepts connections and never answers
(``BlackholeServer``), used through a default ``redis.Redis`` (no socket timeout): its probe
blocks forever. Other metrics, and the other queue's length from the real Redis, keep arriving.
"""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from opentelemetry import metrics

import otelkit
from otelkit import _names, pipeline
from otelkit.testing._receiver import BlackholeServer, OtlpReceiver

pytestmark = pytest.mark.usefixtures("fresh_otelkit_and_stats")


def test_hung_redis_probe_does_not_stall_other_metrics_or_shutdown(
        otelkit_otlp_receiver: OtlpReceiver, redis_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "queue-probe-test")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otelkit_otlp_receiver.http_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    monkeypatch.setenv("OTELKIT_SYSTEM_METRICS", "false")
    monkeypatch.setenv("OTELKIT_SHUTDOWN_TIMEOUT", "2000")
    key = f"otelkit-probe-{uuid.uuid4().hex}"
    healthy_client = redis.Redis.from_url(redis_url, socket_timeout=2)
    healthy_client.rpush(key, "a", "b", "c")
    with BlackholeServer() as hole, caplog.at_level(logging.WARNING, logger="otelkit"):
        hung_client = redis.Redis.from_url(f"redis://{hole.endpoint}/0")  # the default: no socket timeout
        otelkit.init()
        counter = metrics.get_meter("probe-test").create_counter("probe_test.ticks")
        counter.add(1)
        hung = pipeline.observe_queue("hung-queue", pipeline.redis_probe(hung_client, key, "list"), system="redis")
        healthy = pipeline.observe_queue("healthy-queue", pipeline.redis_probe(healthy_client, key, "list"),
                                         system="redis")
        try:
            # Several collections after the probe hung: the reader thread keeps exporting.
            otelkit_otlp_receiver.wait_for(lambda: len(otelkit_otlp_receiver.metrics("probe_test.ticks")) >= 3,
                                           timeout=30)
            lengths = otelkit_otlp_receiver.wait_for(lambda: [
                p for p in otelkit_otlp_receiver.metrics(_names.QUEUE_LENGTH.name)
                if p.attributes[_names.MESSAGING_DESTINATION] == "healthy-queue"], timeout=30)
            assert lengths[-1].value == 3
            destinations = {p.attributes[_names.MESSAGING_DESTINATION]
                            for p in otelkit_otlp_receiver.metrics(_names.QUEUE_LENGTH.name)}
            assert "hung-queue" not in destinations  # no stale or made-up value for the hung queue
            report = otelkit.shutdown()
        finally:
            hung.close()
            healthy.close()
            healthy_client.delete(key)
        assert hole.accepted >= 1  # the probe really did connect and wait
    assert not report.timed_out, str(report)
    # Warnings only: when the black hole closes, the freed probe may log "answers again" at INFO.
    slow = [r for r in caplog.records
            if r.levelno >= logging.WARNING and "queue probe for hung-queue" in r.getMessage()]
    assert len(slow) == 1 and "socket_timeout" in slow[0].getMessage()  # warned once, not every interval
