"""The client and database integrations end to end: ``otelkit.init()`` -> OTLP -> real rotel -> receiver.

One service run does requests (over urllib3), urllib3 alone, aiohttp, psycopg 3, asyncpg and SQLAlchemy
(over psycopg and over sqlite) inside a correlation scope, then the test reads what came out of the
collector: one span per operation (no duplicate from a stacked layer), no planted secret anywhere,
the correlation ID on every span and in every outgoing request, the duration histograms and the
pool usage gauges.
"""

from __future__ import annotations

import asyncio
import http.server
import uuid

import aiohttp
import asyncpg
import pytest
import requests
import sqlalchemy as sa
import urllib3
from opentelemetry import trace
from psycopg_pool import ConnectionPool

import otelkit
from otelkit._correlation import correlate
from otelkit.testing._receiver import RotelCollector
from tests.integration.instrument_support import serve_http


class _Handler(http.server.BaseHTTPRequestHandler):
    """200 "ok"; records each request's baggage, all of its headers joined (Sentry's stdlib integration,
    when some earlier code initialised sentry-sdk in this process, adds a second ``baggage`` header)."""

    def do_GET(self) -> None:
        self.server.seen.append({"baggage": ",".join(self.headers.get_all("baggage") or [])})  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass

pytestmark = pytest.mark.usefixtures("fresh_otelkit_and_stats")  # its shutdown report counts this test only
SECRET = f"OTK-CANARY-CDB-{uuid.uuid4().hex[:6]}"
INTEGRATIONS = ["requests", "urllib3", "aiohttp-client", "psycopg", "asyncpg", "sqlalchemy"]


def test_clients_and_databases_through_rotel(otelkit_collector: RotelCollector, postgres_dsn: str) -> None:
    parts = dict(p.split("=", 1) for p in postgres_dsn.split())
    pg_url = f"{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    pool_name = f"cdb-{uuid.uuid4().hex[:8]}"
    with serve_http(_Handler) as (base, seen):
        otelkit.init(service_name="clients-db", endpoint=otelkit_collector.grpc_endpoint, protocol="grpc",
                     traces_exporter="otlp", metrics_exporter="otlp", logs_exporter="none",
                     instrument=INTEGRATIONS, system_metrics=False)
        states = {s.name: s.state for s in otelkit.integration_status()}
        assert all(states[name] == "enabled" for name in INTEGRATIONS), states
        pool = ConnectionPool(postgres_dsn, min_size=1, max_size=2, name=pool_name, open=True)
        pool.wait(60)
        engine = sa.create_engine(f"postgresql+psycopg://{pg_url}")
        lite = sa.create_engine("sqlite://")

        async def async_part() -> None:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/aio?token={SECRET}") as response:
                assert response.status == 200
            conn = await asyncpg.connect(f"postgresql://{pg_url}")
            try:
                assert await conn.fetchval(f"SELECT '{SECRET}'") == SECRET
            finally:
                await conn.close()

        tracer = trace.get_tracer("clients-db")
        with tracer.start_as_current_span("job") as job, correlate() as cid:
            assert requests.get(f"{base}/req?api_key={SECRET}", timeout=30).status_code == 200
            assert urllib3.PoolManager().request("GET", f"{base}/u3?password={SECRET}").status == 200
            asyncio.run(async_part())
            with pool.connection() as conn:
                conn.execute(f"SELECT '{SECRET}'")
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT '{SECRET}' AS x"))
            with lite.connect() as conn:
                conn.execute(sa.text(f"SELECT '{SECRET}' AS y"))
        trace_id = format(job.get_span_context().trace_id, "032x")
        report = otelkit.shutdown()
        pool.close()
        engine.dispose()
        assert report is None or report.dropped == 0

    receiver = otelkit_collector.receiver
    spans = receiver.wait_for(lambda: [s for s in receiver.spans() if s.trace_id == trace_id and s.kind.endswith(
        "CLIENT")] if len([s for s in receiver.spans() if s.trace_id == trace_id]) >= 8 else None, timeout=60,
        message="8 spans of the job")
    by_scope: dict[str, int] = {}
    for span in spans:
        assert SECRET not in repr(span.attributes), span
        assert span.attributes.get("otelkit.correlation_id") == cid, span
        # the test's own operations (SQLAlchemy's dialect start-up queries are spans too, not counted here)
        if "url.full" in span.attributes or str(span.attributes.get("db.query.text", "")).startswith("SELECT ?"):
            by_scope[span.scope] = by_scope.get(span.scope, 0) + 1
    # one span per operation: requests' urllib3 call, SQLAlchemy over psycopg are not doubled
    assert by_scope == {
        "opentelemetry.instrumentation.requests": 1,
        "opentelemetry.instrumentation.urllib3": 1,
        "opentelemetry.instrumentation.aiohttp_client": 1,
        "opentelemetry.instrumentation.psycopg": 2,  # the pool's connection and SQLAlchemy's
        "otelkit.instrument.asyncpg": 1,
        "otelkit.instrument.sqlalchemy": 1,  # sqlite: no otelkit driver integration under it
    }, by_scope
    assert len(seen) == 3 and all(f"correlation_id={cid}" in h.get("baggage", "") for h in seen)

    http = receiver.wait_for_metric("http.client.request.duration", timeout=60)
    assert sum(p.count or 0 for p in http) == 3
    db = receiver.wait_for_metric("db.client.operation.duration", timeout=60)
    systems = {p.attributes.get("db.system.name") for p in db}
    assert systems >= {"postgresql", "sqlite"}
    counts = [p for p in receiver.wait_for_metric("db.client.connection.count", timeout=60)
              if p.attributes.get("db.client.connection.pool.name") == pool_name]
    assert {p.attributes["db.client.connection.state"] for p in counts} == {"idle", "used"}


def test_objects_made_before_init_traced_through_rotel(otelkit_collector: RotelCollector, postgres_dsn: str) -> None:
    """psycopg connections (sync, async) and an aiohttp session made before ``init()`` are traced after it."""
    import psycopg

    secret = f"OTK-CANARY-PRE-{uuid.uuid4().hex[:6]}"
    with serve_http(_Handler) as (base, seen):
        sync_conn = psycopg.connect(postgres_dsn, autocommit=True)  # before init()

        async def main() -> tuple[str, str]:
            session = aiohttp.ClientSession()  # before init()
            async_conn = await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True)  # before init()
            try:
                otelkit.init(service_name="clients-db-pre", endpoint=otelkit_collector.grpc_endpoint, protocol="grpc",
                             traces_exporter="otlp", metrics_exporter="otlp", logs_exporter="none",
                             instrument=["aiohttp-client", "psycopg"], system_metrics=False)
                reasons = {s.name: s.reason for s in otelkit.integration_status()}
                assert "before init() are traced" in reasons["psycopg"], reasons
                assert "before init() are traced" in reasons["aiohttp-client"], reasons
                with trace.get_tracer("pre").start_as_current_span("job") as job, correlate() as cid:
                    async with session.get(f"{base}/pre?token={secret}") as response:
                        assert response.status == 200
                    await async_conn.execute(f"SELECT '{secret}' AS a")
                    sync_conn.execute(f"SELECT '{secret}' AS b")
                return format(job.get_span_context().trace_id, "032x"), cid
            finally:
                await session.close()
                await async_conn.close()

        trace_id, cid = asyncio.run(main())
        sync_conn.close()
        report = otelkit.shutdown()
        assert report is None or report.dropped == 0
        assert len(seen) == 1 and f"correlation_id={cid}" in seen[0]["baggage"]

    receiver = otelkit_collector.receiver
    spans = receiver.wait_for(lambda: [s for s in receiver.spans() if s.trace_id == trace_id and s.kind.endswith(
        "CLIENT")] if len([s for s in receiver.spans() if s.trace_id == trace_id]) >= 4 else None, timeout=60,
        message="4 spans of the job")
    assert sorted(s.scope for s in spans) == ["opentelemetry.instrumentation.aiohttp_client",
                                              "opentelemetry.instrumentation.psycopg",
                                              "opentelemetry.instrumentation.psycopg"]
    for span in spans:
        assert secret not in repr(span.attributes), span
        assert span.attributes.get("otelkit.correlation_id") == cid, span
    assert all(s.attributes.get("db.namespace") == "test" for s in spans if "db.query.text" in s.attributes)
    http = receiver.wait_for_metric("http.client.request.duration", timeout=60)
    assert sum(p.count or 0 for p in http) == 1
    db = receiver.wait_for(lambda: [p for p in receiver.metrics("db.client.operation.duration")
                                    if p.attributes.get("db.operation.name") == "SELECT"] or None,
                           timeout=60, message="the SELECT durations")
    assert sum(p.count or 0 for p in db) == 2
