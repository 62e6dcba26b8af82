"""Cardinality at the real collector, and otelkit's own metrics never carrying unbounded values.

1. A process with ``OTELKIT_METRIC_CARDINALITY_LIMIT=10`` records 50 distinct user IDs: the real rotel
   collector receives 9 series plus ``otel.metric.overflow=true``, the total intact, and the shutdown
   report says how many measurements overflowed.
2. Redis commands on 40 distinct keys, psycopg2 statements with 40 distinct literals, httpx calls to 40
   distinct URLs and 40 pipeline messages with distinct IDs leave every otelkit metric with a handful of
   attribute sets, none of which contains any of those values.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest

from otelkit.testing import capture_telemetry
from otelkit.testing._receiver import RotelCollector

APP = """
import otelkit
from opentelemetry import metrics
otelkit.init()
counter = metrics.get_meter("shop").create_counter("shop.orders")
for i in range(50):
    counter.add(2, {"user.id": f"user-{i}"})
print(otelkit.shutdown(), flush=True)
"""


def test_the_overflow_series_reaches_the_collector(otelkit_collector: RotelCollector) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": "cardinality", "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTELKIT_SYSTEM_METRICS": "false",
                "OTELKIT_METRIC_CARDINALITY_LIMIT": "10", "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
    proc = subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "41 measurements over the cardinality limit in 1 stream(s) (shop.orders)" in proc.stdout, proc.stdout
    assert "reached its cardinality limit" in proc.stderr  # one warning naming the setting
    receiver = otelkit_collector.receiver
    points = receiver.wait_for(lambda: receiver.metrics("shop.orders"), timeout=60)
    assert len(points) == 10
    overflow = [p for p in points if p.attributes == {"otel.metric.overflow": True}]
    assert len(overflow) == 1 and overflow[0].value == 82
    assert sum(p.value for p in points) == 100


class _Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.usefixtures("fresh_otelkit")
def test_otelkit_metrics_carry_no_unbounded_values(redis_url: str, postgres_dsn: str) -> None:
    import httpx
    import psycopg2
    import redis

    from otelkit import pipeline

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    marker = uuid.uuid4().hex[:10]
    values = [f"{marker}{i:03d}" for i in range(40)]
    queue = f"otelkit-test:card:{uuid.uuid4().int % 10**9}"  # not the marker: a queue name is a bounded value
    try:
        with capture_telemetry(instrument=["redis", "psycopg2", "httpx"]) as captured:
            r = redis.Redis.from_url(redis_url)
            conn = psycopg2.connect(postgres_dsn)
            client = httpx.Client()
            try:
                for v in values:
                    r.set(f"otelkit-test:{v}", v)
                    with conn.cursor() as cur:
                        cur.execute(f"SELECT '{v}' AS token, {len(v)} AS n")
                    client.get(f"{base}/items/{v}?token={v}")
                    with pipeline.emit(queue, system="redis", message_id=v) as msg:
                        r.lpush(queue, msg.wrap(v))
                    raw = r.rpop(queue)
                    with pipeline.receive(queue, raw, system="redis", message_id=v):
                        pass
            finally:
                r.delete(queue, *[f"otelkit-test:{v}" for v in values])
                r.close()
                conn.close()
                client.close()
            metrics = captured.metrics()
    finally:
        server.shutdown()
        server.server_close()
    assert {"db.client.operation.duration", "http.client.request.duration", "messaging.client.sent.messages",
            "messaging.process.duration", "otelkit.messaging.message.end_to_end.duration"} <= set(metrics)
    for name, points in metrics.items():
        sets = {tuple(sorted(p.attributes.items())) for p in points}
        assert len(sets) <= 8, f"{name} has {len(sets)} attribute sets: {sorted(sets)[:5]}"
        for attributes in sets:
            for key, value in attributes:
                assert marker not in str(value), f"{name}: {key}={value!r} carries a per-call value"
