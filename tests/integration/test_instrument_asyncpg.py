"""asyncpg (connections and pools) against the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented

SECRET = "OTK-CANARY-ASYNCPG"


@pytest.fixture
def dsn(postgres_dsn: str) -> str:
    parts = dict(p.split("=", 1) for p in postgres_dsn.split())
    return f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def _spans(t: Telemetry) -> list:
    return [s for s in t.spans() if s.kind is SpanKind.CLIENT]


def test_statements_scrubbed_metric_and_error_on_a_pre_init_connection(dsn: str) -> None:
    table = f"otelkit_apg_{uuid.uuid4().hex[:12]}"

    async def main(t_holder: list[Telemetry]) -> None:
        conn = await asyncpg.connect(dsn)  # opened before init(): the classes are wrapped, so it is traced
        try:
            with instrumented(instrument=["asyncpg"]) as t:
                t_holder.append(t)
                tracer = t.tracer_provider.get_tracer("test")
                with tracer.start_as_current_span("job"):
                    await conn.execute(f"CREATE TABLE {table} (id int, v text)")
                    await conn.execute(f"INSERT INTO {table} VALUES (1, '{SECRET}')")
                    assert await conn.fetchval(f"SELECT v FROM {table} WHERE v = $1", SECRET) == SECRET
                    stmt = await conn.prepare(f"SELECT count(*) FROM {table} WHERE v <> '{SECRET}'")
                    assert await stmt.fetchval() == 0
                    with pytest.raises(asyncpg.UndefinedTableError):
                        await conn.fetch("SELECT * FROM otelkit_no_such_table_apg")
                spans = _spans(t)
                assert [s.name for s in spans] == ["CREATE", "INSERT", "SELECT", "SELECT", "SELECT"]
                job = next(s for s in t.spans() if s.name == "job")
                for span in spans:
                    assert SECRET not in span.attributes["db.query.text"]
                    assert span.attributes["db.system.name"] == "postgresql"
                    assert span.attributes["db.namespace"] == "test"
                    assert span.attributes["server.port"] == 5432
                    assert span.parent is not None and span.parent.span_id == job.context.span_id
                assert spans[-1].status.status_code is StatusCode.ERROR
                assert spans[-1].attributes["error.type"] == "UndefinedTableError"
                points = {(a.get("db.operation.name"), a.get("error.type")): p.count
                          for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
                assert points == {("CREATE", None): 1, ("INSERT", None): 1, ("SELECT", None): 2,
                                  ("SELECT", "UndefinedTableError"): 1}
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.close()

    asyncio.run(main([]))


def test_pool_usage_and_one_span_per_pool_call(dsn: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        try:
            with instrumented(instrument=["asyncpg"]) as t:
                async with pool.acquire() as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                    counts = {a["db.client.connection.state"]: p.value
                              for a, p, _u in t.points("db.client.connection.count")}
                    assert counts == {"idle": 1, "used": 1}
                assert await pool.fetchval("SELECT 2") == 2  # through a pooled connection: one span
                assert [s.name for s in _spans(t)] == ["SELECT", "SELECT"]
                (maximum,) = [p.value for _a, p, _u in t.points("db.client.connection.max")]
                assert maximum == 4
        finally:
            await pool.close()

    asyncio.run(main())
