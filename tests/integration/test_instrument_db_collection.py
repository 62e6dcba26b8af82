"""``db.collection.name`` on statement spans and ``db.client.operation.duration``, per driver, real PostgreSQL.

Each test runs the same four statements on its own table (uuid name): an INSERT and a SELECT on that one table
(named), a statement over two relations (``FROM t, pg_class``: ambiguous, not named) and ``SELECT 1`` (no table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.trace import SpanKind

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented, pg_table

SECRET = "OTK-CANARY-COLLECTION"


def _statements(table: str) -> list[str]:
    return [f"INSERT INTO {table} VALUES (1, '{SECRET}')", f"SELECT v FROM {table} WHERE id = 1",
            f"SELECT count(*) FROM {table}, pg_class WHERE false", "SELECT 1"]


def _check(t: Telemetry, table: str) -> None:
    spans = [s for s in t.spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 4, [s.name for s in spans]
    names = [s.attributes.get("db.collection.name") for s in spans]
    assert names == [table, table, None, None]
    assert all(SECRET not in str(s.attributes.get("db.query.text")) for s in spans)
    points = {(a.get("db.operation.name"), a.get("db.collection.name")): p.count
              for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
    assert points.get(("INSERT", table)) == 1, points
    assert points.get(("SELECT", table)) == 1, points
    assert points.get(("SELECT", None)) == 2, points  # the two-relation statement and SELECT 1


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    with pg_table(postgres_dsn, "otelkit_coll_", "id int, v text") as name:
        yield name


def _url(postgres_dsn: str, scheme: str) -> str:
    parts = dict(p.split("=", 1) for p in postgres_dsn.split())
    return f"{scheme}://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def test_psycopg2(postgres_dsn: str, table: str) -> None:
    import psycopg2

    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in _statements(table):
                cur.execute(statement)
        conn.close()
        _check(t, table)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_psycopg(postgres_dsn: str, table: str, mode: str) -> None:
    import psycopg

    async def run_async() -> None:
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            for statement in _statements(table):
                await conn.execute(statement)

    with instrumented(instrument=["psycopg"]) as t:
        if mode == "sync":
            with psycopg.connect(postgres_dsn, autocommit=True) as conn:
                for statement in _statements(table):
                    conn.execute(statement)
        else:
            asyncio.run(run_async())
        _check(t, table)


def test_asyncpg(postgres_dsn: str, table: str) -> None:
    import asyncpg

    async def main() -> None:
        conn = await asyncpg.connect(_url(postgres_dsn, "postgresql"))
        try:
            for statement in _statements(table):
                await conn.execute(statement)
        finally:
            await conn.close()

    with instrumented(instrument=["asyncpg"]) as t:
        asyncio.run(main())
        _check(t, table)


def test_sqlalchemy(postgres_dsn: str, table: str) -> None:
    import sqlalchemy as sa

    with instrumented(instrument=["sqlalchemy"]) as t:  # the driver untraced: SQLAlchemy's span is the one
        engine = sa.create_engine(_url(postgres_dsn, "postgresql+psycopg2"))
        with engine.connect() as conn:
            for statement in _statements(table):
                conn.execute(sa.text(statement))
            conn.commit()
        engine.dispose()
        _check(t, table)
