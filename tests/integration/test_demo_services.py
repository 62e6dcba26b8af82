"""``otelkit demo`` against the real Redis and PostgreSQL, exporting through the real rotel collector.

The demo is configured the way a user configures any otelkit program
(``OTEL_EXPORTER_OTLP_ENDPOINT``); the assertions read what arrived behind the collector:
the trace of the event the demo names, across the discoverer and worker processes, with
Redis, HTTP and PostgreSQL spans, one correlation ID on every span and log record, and the
pipeline, HTTP and database metrics. The run's Redis keys and table are gone afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg2
import redis

from otelkit.testing._receiver import RotelCollector


def test_demo_with_redis_postgres_and_a_collector(tmp_path: Path, redis_url: str, postgres_dsn: str,
                                                  otelkit_collector: RotelCollector) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env = {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.grpc_endpoint,
           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    done = subprocess.run([sys.executable, "-m", "otelkit", "demo", "--redis", redis_url, "--postgres", postgres_dsn,
                           "--telemetry", "otlp", "--events", "10", "--workers", "2"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"queue\s+Redis redis://127\.0\.0\.1:6379/0 \(list otelkit-demo:([0-9a-f]{6}):tokens\)", out), out
    run_id = re.search(r"run ([0-9a-f]{6})", out).group(1)  # type: ignore[union-attr]
    assert f"database      PostgreSQL {postgres_dsn} (table otelkit_demo_tokens_{run_id})" in out
    assert "as configured (OTEL_EXPORTER_OTLP_ENDPOINT)" in out
    found = re.search(r"look up trace ([0-9a-f]{32}) \(correlation_id ([0-9a-f]{32})\)", out)
    assert found, out
    trace_id, cid = found.groups()

    receiver = otelkit_collector.receiver

    def event_spans() -> list:  # type: ignore[type-arg]
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        return spans if any(s.name == "INSERT" or s.name.startswith("INSERT") for s in spans) else []

    spans = receiver.wait_for(event_spans, timeout=30, message=f"the spans of trace {trace_id}")
    by_name: dict[str, list] = {}  # type: ignore[type-arg]
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    services = {s.resource["service.name"] for s in spans}
    assert services == {"token-discoverer", "token-enricher"}
    assert len({s.resource["process.pid"] for s in spans}) == 2
    send, process = by_name["send tokens"][0], by_name["process tokens"][0]
    assert process.parent_span_id == send.span_id and process.links[0].span_id == send.span_id
    assert send.attributes["messaging.system"] == "redis"
    # Redis and PostgreSQL calls are traced by the instrumentations, inside the pipeline spans.
    redis_spans = [s for s in spans if s.attributes.get("db.system.name", s.attributes.get("db.system")) == "redis"]
    names = {s.name for s in redis_spans}
    assert any(n.startswith("SADD") for n in names), names  # SADD EXPIRE: a pipeline
    # The LPUSH carrying the message is the send operation (docs/pipeline.md): folded into the send
    # span, not traced twice. (The demo decodes what BRPOP returned before receive(), so its BRPOP is
    # traced as a redis span of its own, outside this trace.)
    assert "LPUSH" not in names, names
    assert send.attributes["otelkit.broker.command"] == "LPUSH"
    insert = next(s for s in spans if s.name.startswith("INSERT"))
    assert insert.attributes.get("db.system.name", insert.attributes.get("db.system")) == "postgresql"
    persist = by_name["persist"][0]
    assert insert.parent_span_id == persist.span_id and persist.parent_span_id == process.span_id
    assert len([s for s in spans if s.kind == "CLIENT" and s.name == "GET"]) == 3
    assert all(s.attributes.get("otelkit.correlation_id") == cid for s in spans)
    assert process.attributes["messaging.message.conversation_id"] == cid

    logs = receiver.wait_for(lambda: [r for r in receiver.logs() if r.trace_id == trace_id and
                                      str(r.body).startswith("stored token")], timeout=30)
    assert logs[0].attributes.get("otelkit.correlation_id", logs[0].attributes.get("correlation_id")) == cid

    # Each process's points arrive in their own exports (and the collector batches on its own
    # schedule): wait for every expected name, then report the ones still missing.
    expected = {"db.client.operation.duration", "otelkit.messaging.settled.messages",
                "messaging.client.sent.messages", "otelkit.messaging.message.end_to_end.duration",
                "otelkit.pipeline.stage.duration", "http.client.request.duration", "otelkit.messaging.queue.length"}

    def metric_names() -> set[str]:
        names = {p.name for p in receiver.metrics()}
        return names if expected <= names else set()

    try:
        receiver.wait_for(metric_names, timeout=30)
    except AssertionError:
        missing = expected - {p.name for p in receiver.metrics()}
        raise AssertionError(f"metrics never arrived behind the collector: {sorted(missing)}") from None
    db_systems = {p.attributes.get("db.system.name", p.attributes.get("db.system"))
                  for p in receiver.metrics("db.client.operation.duration")}
    assert {"redis", "postgresql"} <= db_systems
    outcomes = {p.attributes.get("otelkit.outcome") for p in receiver.metrics("otelkit.messaging.settled.messages")}
    assert {"ack", "retry", "dead_letter"} <= outcomes

    # Cleaned up: no Redis keys, no table left behind.
    client = redis.Redis.from_url(redis_url)
    assert client.keys(f"otelkit-demo:{run_id}:*") == []
    with psycopg2.connect(postgres_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"otelkit_demo_tokens_{run_id}",))
        assert cur.fetchone()[0] is None
    conn.close()
