"""psycopg 3 (sync and async, psycopg_pool) against the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented

SECRET = "OTK-CANARY-PSYCOPG3"


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = f"otelkit_p3_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int primary key, v text)")
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _spans(t: Telemetry) -> list:
    return [s for s in t.spans() if s.kind is SpanKind.CLIENT]


def _durations(t: Telemetry) -> list:
    return t.points(_names.DB_CLIENT_DURATION.name)


def test_sync_statements_scrubbed_with_one_duration_stream(postgres_dsn: str, table: str) -> None:
    with instrumented(instrument=["psycopg"]) as t:
        assert t.status("psycopg").state == "enabled"
        assert "before init()" in t.status("psycopg").reason  # the pre-init gap is stated
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {table} VALUES (1, '{SECRET}')")
            conn.execute(sql.SQL("SELECT v FROM {} WHERE v = {}").format(sql.Identifier(table), sql.Literal(SECRET)))
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM otelkit_no_such_table_p3")
        spans = _spans(t)
        assert [s.name for s in spans] == ["INSERT", "SELECT", "SELECT"]
        for span in spans:
            assert span.instrumentation_scope.name == "opentelemetry.instrumentation.psycopg"
            text = span.attributes["db.query.text"]
            assert SECRET not in text, text
            assert span.attributes["db.system.name"] == "postgresql"
            assert span.attributes["db.namespace"] == "test"
            assert span.attributes["server.address"] == "127.0.0.1"
        assert "?" in spans[0].attributes["db.query.text"]
        assert spans[2].status.status_code is StatusCode.ERROR
        points = {(a.get("db.operation.name"), a.get("error.type")): p for a, p, _u in _durations(t)}
        assert points[("INSERT", None)].count == 1
        assert points[("SELECT", None)].count == 1
        assert points[("SELECT", "UndefinedTable")].count == 1
        (attributes, _p, unit) = _durations(t)[0]
        assert unit == "s" and attributes["db.system.name"] == "postgresql" and attributes["server.port"] == 5432
        rows = {a.get("db.operation.name"): p for a, p, _u in t.points(_names.DB_RETURNED_ROWS.name)}
        assert rows["SELECT"].sum == 1


def test_async_connection(postgres_dsn: str, table: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute(f"INSERT INTO {table} VALUES (2, '{SECRET}')")
            cur = await conn.execute(f"SELECT v FROM {table} WHERE id = 2")
            assert (await cur.fetchone()) == (SECRET,)

    with instrumented(instrument=["psycopg"]) as t:
        asyncio.run(main())
        spans = _spans(t)
        assert [s.name for s in spans] == ["INSERT", "SELECT"]
        assert all(SECRET not in s.attributes["db.query.text"] for s in spans)
        assert sum(p.count for _a, p, _u in _durations(t)) == 2


def _pool_counts(t: Telemetry, pool_name: str) -> dict[str, int]:
    return {a["db.client.connection.state"]: p.value for a, p, _u in t.points("db.client.connection.count")
            if a.get("db.client.connection.pool.name") == pool_name}


def test_pool_usage_is_reported_including_a_pool_made_before_init(postgres_dsn: str) -> None:
    name = f"p3-{uuid.uuid4().hex[:8]}"
    with ConnectionPool(postgres_dsn, min_size=2, max_size=3, name=name, open=True) as pool:
        pool.wait(30)
        with instrumented(instrument=["psycopg"]) as t:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
                assert _pool_counts(t, name) == {"idle": 1, "used": 1}
            assert _pool_counts(t, name) == {"idle": 2, "used": 0}
            maxima = {a["db.client.connection.pool.name"]: p.value for a, p, _u in t.points("db.client.connection.max")}
            assert maxima[name] == 3


def test_async_pool_usage(postgres_dsn: str) -> None:
    name = f"ap3-{uuid.uuid4().hex[:8]}"

    async def main(t: Telemetry) -> None:
        async with AsyncConnectionPool(postgres_dsn, min_size=1, max_size=2, name=name, open=False) as pool:
            await pool.wait(30)
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                assert _pool_counts(t, name) == {"idle": 0, "used": 1}

    with instrumented(instrument=["psycopg"]) as t:
        asyncio.run(main(t))
        assert [s.name for s in _spans(t)] == ["SELECT"]  # the pool's connection opened after init: traced


def test_uninstrument_restores_upstream_and_stops_tracing(postgres_dsn: str) -> None:
    import opentelemetry.instrumentation.psycopg as contrib

    before = (contrib.CursorTracer.get_statement, contrib.CursorTracer.get_operation_name)
    with instrumented(instrument=["psycopg"]):
        assert contrib.CursorTracer.get_statement is not before[0]
    assert (contrib.CursorTracer.get_statement, contrib.CursorTracer.get_operation_name) == before
    with instrumented(instrument=["redis"]) as t, psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")
        assert _spans(t) == []


def test_connections_opened_before_init_are_traced_keeping_their_cursor_factory(postgres_dsn: str) -> None:
    """Sync and async connections made before init(): traced from their first cursor, own cursor class kept."""
    conn = psycopg.connect(postgres_dsn, autocommit=True, cursor_factory=psycopg.ClientCursor)

    async def main(t_holder: list[Telemetry]) -> None:
        aconn = await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True)
        try:
            with instrumented(instrument=["psycopg"]) as t:
                t_holder.append(t)
                assert "before init() are traced" in t.status("psycopg").reason
                cur = conn.execute(f"SELECT '{SECRET}' AS a")
                assert isinstance(cur, psycopg.ClientCursor) and cur.fetchone() == (SECRET,)
                with conn.cursor() as cur2:  # the same connection again: adopted once
                    cur2.execute("SELECT %s::int", (1,))
                # once checked, its cursor() is psycopg's own (no otelkit frame per call), repr unchanged
                assert type(conn).cursor is psycopg.Connection.cursor._otelkit_original  # type: ignore[attr-defined]
                assert isinstance(conn, psycopg.Connection) and repr(conn).startswith("<psycopg.Connection ")
                acur = await aconn.execute(f"SELECT '{SECRET}' AS b")
                assert (await acur.fetchone()) == (SECRET,)
                spans = _spans(t)
                assert [s.name for s in spans] == ["SELECT", "SELECT", "SELECT"]
                for span in spans:
                    assert SECRET not in span.attributes["db.query.text"]
                    assert span.attributes["db.namespace"] == "test"
                    assert span.attributes["server.port"] == 5432
                assert sum(p.count for _a, p, _u in _durations(t)) == 3
            # uninstrumented again: the class methods are upstream's, new statements of new connections not traced
            assert not hasattr(psycopg.Connection.cursor, "_otelkit_original")
            assert not hasattr(psycopg.AsyncConnection.cursor, "_otelkit_original")
        finally:
            await aconn.close()
            conn.close()

    asyncio.run(main([]))


def test_a_checked_connection_left_unclosed_is_freed_without_the_cyclic_collector(postgres_dsn: str) -> None:
    """The per-connection shortcut adds no reference cycle: a forgotten connection goes (and closes) at once."""
    import gc
    import warnings
    import weakref

    before = psycopg.connect(postgres_dsn, autocommit=True)  # adopted at its first cursor
    with instrumented(instrument=["psycopg"]) as t:
        after = psycopg.connect(postgres_dsn, autocommit=True)
        refs = []
        for conn in (before, after):
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            assert type(conn) is not psycopg.Connection and isinstance(conn, psycopg.Connection)
            refs.append(weakref.ref(conn))
        assert [s.name for s in _spans(t)] == ["SELECT", "SELECT"]
        gc.disable()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)  # psycopg warns about the unclosed connection
                del conn, cur, before, after
            assert [r() for r in refs] == [None, None]
        finally:
            gc.enable()
