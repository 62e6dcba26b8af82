"""asyncpg (connections and pools) against the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

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


def test_server_side_cursors_one_span_per_round_trip(dsn: str) -> None:
    """Iteration (prefetch batches) and ``await conn.cursor()`` + fetch/fetchrow: a span per round trip, scrubbed."""
    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            with instrumented(instrument=["asyncpg"]) as t:
                query = f"SELECT g, '{SECRET}' FROM generate_series(1, $1::int) AS g"
                async with conn.transaction():  # a cursor needs one (its BEGIN/COMMIT are spans too)
                    rows = [r async for r in conn.cursor(query, 25, prefetch=10)]
                    assert [r[0] for r in rows] == list(range(1, 26))
                    cur = await conn.cursor(query, 5)
                    assert len(await cur.fetch(3)) == 3
                    assert (await cur.fetchrow())[0] == 4
                    stmt = await conn.prepare(f"SELECT count(*) FROM pg_class WHERE relname <> '{SECRET}'")
                    assert [r[0] async for r in stmt.cursor()][0] > 0
                spans = [s for s in _spans(t) if s.name == "SELECT"]
                # iteration: bind + 10 rows, 10, 5 (the end); await: bind, fetch(3), fetchrow; prepared: bind + rows
                assert len(spans) == 3 + 3 + 1
                for span in spans:
                    assert SECRET not in span.attributes["db.query.text"]
                    assert span.attributes["db.operation.name"] == "SELECT"
                    assert span.attributes["db.namespace"] == "test"
                points = [p.count for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)
                          if a.get("db.operation.name") == "SELECT"]
                assert sum(points) == 7
        finally:
            await conn.close()

    asyncio.run(main())


def test_copy_methods_one_span_each_no_data_or_literals(dsn: str, tmp_path: Any) -> None:
    table = f"otelkit_apg_copy_{uuid.uuid4().hex[:12]}"

    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"CREATE TABLE {table} (id int, v text)")
            with instrumented(instrument=["asyncpg"]) as t:
                await conn.copy_records_to_table(table, records=[(1, SECRET), (2, "b")])
                await conn.copy_to_table(table, source=io.BytesIO(f"3\t{SECRET}\n".encode()), schema_name="public")
                out = io.BytesIO()
                await conn.copy_from_table(table, output=out)
                assert out.getvalue().count(b"\n") == 3
                out = io.BytesIO()
                await conn.copy_from_query(f"SELECT * FROM {table} WHERE v = $1 OR v = '{SECRET}'", SECRET, output=out)
                assert out.getvalue().count(SECRET.encode()) == 2
                with pytest.raises(asyncpg.UndefinedTableError):
                    await conn.copy_from_table("otelkit_no_such_table_apg", output=io.BytesIO())
                spans = _spans(t)
                assert [s.name for s in spans] == ["COPY"] * 5  # asyncpg's introspection inside is not traced
                assert [s.attributes["db.query.text"] for s in spans[:3]] == [
                    f"COPY {table} FROM STDIN", f"COPY public.{table} FROM STDIN", f"COPY {table} TO STDOUT"]
                assert spans[3].attributes["db.query.text"].startswith(f"COPY (SELECT * FROM {table} WHERE v = ")
                assert [s.attributes.get("db.collection.name") for s in spans] == [
                    table, f"public.{table}", table, table, "otelkit_no_such_table_apg"]
                for span in spans:
                    assert SECRET not in str(dict(span.attributes))
                    assert span.attributes["db.operation.name"] == "COPY"
                    assert span.attributes["db.system.name"] == "postgresql"
                assert spans[-1].status.status_code is StatusCode.ERROR
                points = {(a.get("db.collection.name"), a.get("error.type")): p.count
                          for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)
                          if a.get("db.operation.name") == "COPY"}
                assert points == {(table, None): 3, (f"public.{table}", None): 1,
                                  ("otelkit_no_such_table_apg", "UndefinedTableError"): 1}
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.close()

    asyncio.run(main())


def test_kept_attribute_sets_stay_with_their_connection_and_statement(dsn: str) -> None:
    """Span and metric attribute sets are kept per connection and statement: interleaving two connections (two
    databases) and several statements, each span and point carries its own connection's and statement's."""
    other_dsn = dsn.rsplit("/", 1)[0] + "/postgres"
    # query -> (scrubbed text, table, error type)
    queries = {"SELECT 1": ("SELECT ?", None, None),
               "SELECT relname FROM pg_class WHERE relname = 'x'": (
                   "SELECT relname FROM pg_class WHERE relname = ?", "pg_class", None),
               "SELECT 2 FROM pg_namespace": ("SELECT ? FROM pg_namespace", "pg_namespace", None),
               "SELECT * FROM otelkit_no_such_table_apg": (
                   "SELECT * FROM otelkit_no_such_table_apg", "otelkit_no_such_table_apg", "UndefinedTableError")}

    async def main() -> None:
        conn_test, conn_postgres = await asyncpg.connect(dsn), await asyncpg.connect(other_dsn)
        try:
            for _round in range(2):  # the second round is served from the kept sets
                for query in queries:
                    for conn in (conn_test, conn_postgres, conn_test):
                        try:
                            await conn.fetch(query)
                        except asyncpg.UndefinedTableError:
                            pass
        finally:
            await conn_test.close()
            await conn_postgres.close()

    with instrumented(instrument=["asyncpg"]) as t:
        asyncio.run(main())
        seen = [(s.attributes["db.namespace"], s.attributes["db.query.text"], s.attributes.get("db.collection.name"),
                 s.attributes.get("error.type")) for s in _spans(t)]
        assert seen == [(db, *queries[query]) for _round in range(2) for query in queries
                        for db in ("test", "postgres", "test")]
        points = {(a["db.namespace"], a.get("db.collection.name"), a.get("error.type")): p.count
                  for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
        assert points == {(db, table, error): 2 * calls for db, calls in (("test", 2), ("postgres", 1))
                          for _text, table, error in queries.values()}
