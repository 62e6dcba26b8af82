"""One event followed across processes and brokers, exported through the real rotel collector.

A producer process emits through a Redis Stream and a Redis list; a consumer process
receives, calls an HTTP API (a local http.server in this test process) and writes to
PostgreSQL. Both run ``otelkit.init()`` exporting OTLP to rotel, which forwards to the
in-process receiver. RabbitMQ (pika) and NATS (nats-py, asyncio) prove the carriers are
not Redis-specific.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGE_END_TO_END
from otelkit.testing._receiver import ReceivedSpan, RotelCollector

APPS = str(Path(__file__).with_name("pipeline_apps.py"))
PROCESS_TIMEOUT = 60


def run_app(role: str, args: dict[str, Any], otelkit_collector: RotelCollector, service: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # metrics go out once, at shutdown
        "OTELKIT_SYSTEM_METRICS": "false",
    })
    proc = subprocess.run([sys.executable, APPS, role, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, f"{role} failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def start_app(role: str, args: dict[str, Any], otelkit_collector: RotelCollector,
              service: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTELKIT_SYSTEM_METRICS": "false"})
    return subprocess.Popen([sys.executable, APPS, role, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class PriceApi:
    """A local HTTP API that records the headers of every request it answers."""

    def __init__(self) -> None:
        requests: list[dict[str, str]] = []
        self.requests = requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                requests.append({k.lower(): v for k, v in self.headers.items()})
                token = parse_qs(urlparse(self.path).query).get("token", ["?"])[0]
                body = json.dumps({"token": token, "price": 1.5}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def price_api() -> Iterator[PriceApi]:
    api = PriceApi()
    yield api
    api.close()


def spans_of(otelkit_collector: RotelCollector, service: str) -> list[ReceivedSpan]:
    return [s for s in otelkit_collector.receiver.spans() if s.resource.get("service.name") == service]


def test_redis_stream_and_list_across_processes(otelkit_collector: RotelCollector, redis_url: str, postgres_dsn: str,
                                                price_api: PriceApi) -> None:
    import psycopg2
    import redis

    suffix = uuid.uuid4().hex[:12]
    args = {"redis_url": redis_url, "postgres_dsn": postgres_dsn, "api_url": price_api.url,
            "stream": f"otelkit-test:tokens:{suffix}", "list": f"otelkit-test:enrich:{suffix}",
            "table": f"pipeline_events_{suffix}"}
    client = redis.Redis.from_url(redis_url)
    conn = psycopg2.connect(postgres_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {args['table']} (token text, price float, correlation_id text)")
    try:
        produced = run_app("redis_producer", args, otelkit_collector, "pipeline-producer")
        consumed = run_app("redis_consumer", args, otelkit_collector, "pipeline-consumer")
        with conn.cursor() as cur:
            cur.execute(f"SELECT token, correlation_id FROM {args['table']} ORDER BY token")
            rows = cur.fetchall()
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {args['table']}")
        conn.close()
        client.delete(args["stream"], args["list"])
        client.close()

    receiver = otelkit_collector.receiver
    for kind in ("stream", "list"):
        cid = produced[kind]["correlation_id"]
        # The correlation ID crossed the broker, the process boundary and the database write.
        assert consumed[kind]["correlation_id"] == cid
        assert (f"tok-{kind}", cid) in rows

    # Wait until both processes' spans, logs and metrics have come through rotel.
    expected_spans = {("pipeline-producer", "discover"), ("pipeline-producer", f"send {args['stream']}"),
                      ("pipeline-producer", f"send {args['list']}"), ("pipeline-consumer", "persist"),
                      ("pipeline-consumer", f"process {args['stream']}"),
                      ("pipeline-consumer", f"process {args['list']}")}
    receiver.wait_for(lambda: expected_spans <= {(s.resource.get("service.name"), s.name) for s in receiver.spans()}
                      and len(receiver.metrics(MESSAGE_END_TO_END.name)) >= 2, timeout=30)
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "pipeline.app"]) >= 6, timeout=30)

    producer_spans = spans_of(otelkit_collector, "pipeline-producer")
    consumer_spans = spans_of(otelkit_collector, "pipeline-consumer")
    for kind, destination in (("stream", args["stream"]), ("list", args["list"])):
        cid = produced[kind]["correlation_id"]
        send = next(s for s in producer_spans if s.name == f"send {destination}")
        process = next(s for s in consumer_spans if s.name == f"process {destination}")
        assert send.kind == "PRODUCER" and process.kind == "CONSUMER"
        # Linked, not parented: the consumer trace is its own, with a link to the producer span.
        assert process.parent_span_id is None
        assert [(link.trace_id, link.span_id) for link in process.links] == [(send.trace_id, send.span_id)]
        assert send.trace_id == produced[kind]["trace_id"]
        assert process.trace_id == consumed[kind]["trace_id"] != send.trace_id
        assert process.attributes["messaging.message.conversation_id"] == cid
        # Every span of the producer's trace and of the consumer's trace carries the correlation ID:
        # stages, the Redis command, the HTTP client call, the SQL insert.
        trace_spans = [s for s in producer_spans if s.trace_id == send.trace_id] + \
                      [s for s in consumer_spans if s.trace_id == process.trace_id]
        assert {s.attributes.get(CORRELATION_ATTRIBUTE) for s in trace_spans} == {cid}, \
            [(s.name, s.attributes.get(CORRELATION_ATTRIBUTE)) for s in trace_spans]
        names = {s.name for s in trace_spans}
        assert {"enrich", "persist"} <= names
        assert any(s.kind == "CLIENT" and s.attributes.get("http.request.method", s.attributes.get("http.method"))
                   == "GET" for s in trace_spans), names
        assert any(s.attributes.get("db.system", s.attributes.get("db.system.name")) == "postgresql"
                   for s in trace_spans), names
        # The outgoing HTTP call carried the baggage (so the API side could log the same ID).
        assert any(f"correlation_id={cid}" in h.get("baggage", "") and process.trace_id in h.get("traceparent", "")
                   for h in price_api.requests), price_api.requests

    stream_send = next(s for s in producer_spans if s.name == f"send {args['stream']}")
    assert stream_send.attributes["messaging.message.id"] == produced["stream"]["message_id"]
    assert next(s for s in producer_spans if s.name == "discover").trace_id == stream_send.trace_id

    # Every application log record of both processes carries its message's correlation ID and trace.
    by_body = {str(r.body): r for r in receiver.logs() if r.scope == "pipeline.app"}
    expected = {"discovered tok-stream": "stream", "queued tok-list": "list",
                "processing tok-stream": "stream", "stored tok-stream": "stream",
                "processing tok-list": "list", "stored tok-list": "list"}
    for body, kind in expected.items():
        assert body in by_body, sorted(by_body)
        assert by_body[body].attributes.get(CORRELATION_ATTRIBUTE) == produced[kind]["correlation_id"], body
    assert by_body["processing tok-stream"].trace_id == consumed["stream"]["trace_id"]
    assert by_body["discovered tok-stream"].trace_id == produced["stream"]["trace_id"]

    # End-to-end latency from the producer's emission time, recorded by the consumer.
    latencies = {p.attributes["messaging.destination.name"]: p for p in receiver.metrics(MESSAGE_END_TO_END.name)}
    for destination in (args["stream"], args["list"]):
        point = latencies[destination]
        assert point.count == 1 and 0 < point.sum < PROCESS_TIMEOUT * 2
        assert point.unit == "s"
    consumed_points = [p for p in receiver.metrics("messaging.client.consumed.messages")
                       if p.attributes.get("messaging.destination.name") == args["stream"]]
    assert consumed_points and consumed_points[0].attributes["messaging.consumer.group.name"] == "enrichers"


def _assert_linked(otelkit_collector: RotelCollector, destination: str, produced: dict[str, Any],
                   consumed: dict[str, Any], producer: str, consumer: str) -> None:
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: [s for s in spans_of(otelkit_collector, consumer) if s.name == f"process {destination}"]
                      and [s for s in spans_of(otelkit_collector,
                                               producer) if s.name == f"send {destination}"], timeout=30)
    send = next(s for s in spans_of(otelkit_collector, producer) if s.name == f"send {destination}")
    process = next(s for s in spans_of(otelkit_collector, consumer) if s.name == f"process {destination}")
    assert consumed["correlation_id"] == produced["correlation_id"]
    assert [(link.trace_id, link.span_id) for link in process.links] == [(send.trace_id, send.span_id)]
    assert process.trace_id == consumed["trace_id"]
    assert process.attributes[CORRELATION_ATTRIBUTE] == produced["correlation_id"]
    receiver.wait_for(lambda: [r for r in receiver.logs() if r.trace_id == consumed["trace_id"]], timeout=30)
    log = next(r for r in receiver.logs() if r.trace_id == consumed["trace_id"])
    assert log.attributes[CORRELATION_ATTRIBUTE] == produced["correlation_id"]


def test_rabbitmq_headers_across_processes(otelkit_collector: RotelCollector, rabbitmq_url: str) -> None:
    args = {"rabbitmq_url": rabbitmq_url, "queue": f"otelkit-test-{uuid.uuid4().hex[:12]}"}
    produced = run_app("rabbit_producer", args, otelkit_collector, "rmq-producer")
    consumed = run_app("rabbit_consumer", args, otelkit_collector, "rmq-consumer")
    _assert_linked(otelkit_collector, args["queue"], produced, consumed, "rmq-producer", "rmq-consumer")
    process = next(s for s in spans_of(otelkit_collector, "rmq-consumer") if s.name == f"process {args['queue']}")
    assert process.attributes["messaging.system"] == "rabbitmq"
    assert process.attributes["messaging.message.id"] == "rmq-1"
    assert process.attributes["otelkit.message.attempt"] == 1


def test_nats_async_consumer_across_processes(otelkit_collector: RotelCollector, nats_url: str) -> None:
    args = {"nats_url": nats_url, "subject": f"otelkit.test.{uuid.uuid4().hex[:12]}"}
    consumer = start_app("nats_consumer", args, otelkit_collector, "nats-consumer")
    try:
        assert consumer.stdout is not None
        ready = consumer.stdout.readline()  # the consumer prints READY once subscribed (bounded by its deadline)
        assert ready.strip() == "READY", consumer.stderr.read() if consumer.stderr else ready
        produced = run_app("nats_producer", args, otelkit_collector, "nats-producer")
        out, err = consumer.communicate(timeout=PROCESS_TIMEOUT)
        assert consumer.returncode == 0, err
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait(timeout=10)
    consumed = json.loads(out.strip().splitlines()[-1])
    _assert_linked(otelkit_collector, args["subject"], produced, consumed, "nats-producer", "nats-consumer")
