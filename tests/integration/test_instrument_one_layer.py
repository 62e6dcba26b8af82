"""The one-layer redis and psycopg2 paths record the same span as the contrib instrumentation alone.

otelkit makes upstream's span itself on the hot path (``Redis.execute_command``,
``CursorTracer.traced_execution``) with attributes computed by upstream's own helpers and cached;
these tests run the same calls under otelkit and then under the contrib instrumentor alone (same
semantic-convention opt-in) and compare name, kind, scope, status and attributes.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg2
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.instrument_support import instrumented


def _shape(spans: Any) -> list[tuple[Any, ...]]:
    return [(s.name, s.kind, s.instrumentation_scope.name, s.status.status_code, dict(s.attributes or {}),
             [e.name for e in s.events]) for s in spans]


def _contrib_spans(instrumentor: Any, run: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor.instrument(tracer_provider=tp, **kwargs)
    try:
        run()
    finally:
        instrumentor.uninstrument()
    return _shape(exporter.get_finished_spans())


def test_redis_spans_match_the_contrib_instrumentation(redis_url: str) -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    key = f"otelkit-test-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)

    def run() -> None:
        client.set(key, "v", ex=60)
        client.get(key)
        client.mget(key, key + ":missing")
        with pytest.raises(redis.ResponseError):
            client.incr(key)  # not an integer: an error span

    try:
        with instrumented(instrument=["redis"]) as t:
            run()
            ours = _shape([s for s in t.spans() if "redis" in s.instrumentation_scope.name])
        theirs = _contrib_spans(RedisInstrumentor(), run)
    finally:
        client.delete(key)
        client.close()
    assert [s[0] for s in ours] == ["SET", "GET", "MGET", "INCRBY"]
    assert ours == theirs


def test_psycopg2_spans_match_the_contrib_instrumentation(postgres_dsn: str) -> None:
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

    def run() -> None:
        conn = psycopg2.connect(postgres_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT %s", (1,))
                cur.fetchone()
                with pytest.raises(psycopg2.Error):
                    cur.execute("SELECT * FROM otelkit_no_such_table_x")
        finally:
            conn.close()

    with instrumented(instrument=["psycopg2"]) as t:
        run()
        ours = _shape([s for s in t.spans() if "psycopg2" in s.instrumentation_scope.name])
    theirs = _contrib_spans(Psycopg2Instrumentor(), run, skip_dep_check=True)
    assert [s[0] for s in ours] == ["SELECT", "SELECT"]
    # The one attribute otelkit adds (current database conventions): the statement's one table.
    assert ours[1][4].pop("db.collection.name") == "otelkit_no_such_table_x"
    assert "db.collection.name" not in ours[0][4]  # SELECT %s names no table
    assert ours == theirs
