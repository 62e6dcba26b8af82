"""SQLAlchemy (sync and async engines) over sqlite and the real PostgreSQL: one span per statement.

Rule under test: where otelkit traces the driver (psycopg2, psycopg, asyncpg), the driver's span is the
statement's only span; elsewhere (sqlite, a connection the pool opened before init()) SQLAlchemy's is.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import create_async_engine

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented

SECRET = "OTK-CANARY-SQLA"
DRIVERS = ["sqlalchemy", "psycopg2", "psycopg", "asyncpg"]
# SQLAlchemy 1.4 (the lowest otelkit supports; .ci/lowest runs this module with it) has no psycopg 3 dialect.
PSYCOPG = pytest.param("psycopg", marks=pytest.mark.skipif(
    int(sa.__version__.split(".")[0]) < 2, reason=f"SQLAlchemy {sa.__version__} has no postgresql+psycopg dialect"))


def _spans(t: Telemetry) -> list:
    return [s for s in t.spans() if s.kind is SpanKind.CLIENT]


def _url(postgres_dsn: str, driver: str) -> str:
    parts = dict(p.split("=", 1) for p in postgres_dsn.split())
    return f"postgresql+{driver}://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def test_sqlite_engine_made_before_init_gets_sqlalchemy_spans_and_metric() -> None:
    engine = sa.create_engine("sqlite://")  # before init(): class-level listeners still see it
    with instrumented(instrument=DRIVERS) as t:
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TABLE t (v text)"))
            conn.execute(sa.text(f"INSERT INTO t VALUES ('{SECRET}')"))
            assert conn.execute(sa.text("SELECT count(*) FROM t WHERE v = :v"), {"v": SECRET}).scalar() == 1
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT * FROM no_such_table"))
        spans = _spans(t)
        assert [s.name for s in spans] == ["CREATE", "INSERT", "SELECT", "SELECT"]
        for span in spans:
            assert span.instrumentation_scope.name == "otelkit.instrument.sqlalchemy"
            assert span.attributes["db.system.name"] == "sqlite"
            assert SECRET not in span.attributes["db.query.text"]
        assert spans[-1].status.status_code is StatusCode.ERROR
        points = {(a.get("db.operation.name"), a.get("error.type")): p.count
                  for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
        assert points == {("CREATE", None): 1, ("INSERT", None): 1, ("SELECT", None): 1,
                          ("SELECT", "OperationalError"): 1}
    engine.dispose()


@pytest.mark.parametrize("driver", ["psycopg2", PSYCOPG])
def test_sync_postgres_engine_the_driver_span_wins(postgres_dsn: str, driver: str) -> None:
    with instrumented(instrument=DRIVERS) as t:
        engine = sa.create_engine(_url(postgres_dsn, driver), pool_size=2)
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT '{SECRET}' AS v")).scalar() == SECRET
            counts = {a["db.client.connection.state"]: p.value for a, p, _u in t.points("db.client.connection.count")
                      if a["db.client.connection.pool.name"].startswith(f"postgresql+{driver}://")}
            assert counts == {"idle": 0, "used": 1}
        # contrib before 0.62 (the lowest venv) writes the statement as db.statement
        selects = [s for s in _spans(t) if str(s.attributes.get("db.query.text", s.attributes.get("db.statement", "")))
                   .startswith("SELECT ?")]
        (span,) = selects  # one span for the statement: the driver's
        assert span.instrumentation_scope.name == f"opentelemetry.instrumentation.{driver}"
        assert not [s for s in _spans(t) if s.instrumentation_scope.name == "otelkit.instrument.sqlalchemy"]
        durations = [p.count for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)
                     if a.get("db.operation.name") == "SELECT"]
        assert sum(durations) >= 1
        engine.dispose()


@pytest.mark.parametrize(("driver", "scope"), [
    ("psycopg2", "otelkit.instrument.sqlalchemy"),  # psycopg2's integration cannot adopt it: SQLAlchemy's span
    pytest.param(*PSYCOPG.values, "opentelemetry.instrumentation.psycopg", marks=PSYCOPG.marks),  # adopted by
])  # psycopg at its first cursor: the driver's span
def test_pool_connection_opened_before_init_gets_one_span(postgres_dsn: str, driver: str, scope: str) -> None:
    engine = sa.create_engine(_url(postgres_dsn, driver), pool_size=1)
    with engine.connect() as conn:  # the pool now holds a connection the driver's connect wrapper never saw
        conn.execute(sa.text("SELECT 1"))
    with instrumented(instrument=DRIVERS) as t:
        with engine.connect() as conn:
            conn.execute(sa.text(f"SELECT '{SECRET}'"))
        (span,) = _spans(t)
        assert span.instrumentation_scope.name == scope
        assert span.attributes["db.system.name"] == "postgresql"
        assert span.attributes["server.port"] == 5432 and span.attributes["db.namespace"] == "test"
        assert SECRET not in span.attributes["db.query.text"]
    engine.dispose()


@pytest.mark.parametrize("driver", ["asyncpg", PSYCOPG])
def test_async_engine_one_span_per_statement(postgres_dsn: str, driver: str) -> None:
    table = f"otelkit_sa_{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        engine = create_async_engine(_url(postgres_dsn, driver))
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"CREATE TABLE {table} (v text)"))
                await conn.execute(sa.text(f"INSERT INTO {table} VALUES ('{SECRET}')"))
                assert (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar() == 1
                await conn.execute(sa.text(f"DROP TABLE {table}"))
        finally:
            await engine.dispose()

    with instrumented(instrument=DRIVERS) as t:
        asyncio.run(main())
        mine = [s for s in _spans(t) if table in s.attributes.get("db.query.text", "")]
        assert [s.name for s in mine] == ["CREATE", "INSERT", "SELECT", "DROP"]  # each once
        scope = "otelkit.instrument.asyncpg" if driver == "asyncpg" else "opentelemetry.instrumentation.psycopg"
        assert {s.instrumentation_scope.name for s in mine} == {scope}
        assert all(SECRET not in s.attributes["db.query.text"] for s in mine)


def test_kept_attribute_sets_stay_with_their_engine_and_statement(tmp_path: Path) -> None:
    """Span and metric attribute sets are kept per engine and statement: interleaving two engines (two
    databases) and several statements, each span and point carries its own engine's and statement's."""
    paths = {"a": str(tmp_path / "a.db"), "b": str(tmp_path / "b.db")}
    # statement -> (scrubbed text, table, error type)
    statements = {"SELECT 1": ("SELECT ?", None, None),
                  "SELECT v FROM t WHERE v = 'x'": ("SELECT v FROM t WHERE v = ?", "t", None),
                  "SELECT 2 FROM u": ("SELECT ? FROM u", "u", None),
                  "SELECT * FROM no_such_table": ("SELECT * FROM no_such_table", "no_such_table",
                                                  "OperationalError")}
    engines = {name: sa.create_engine(f"sqlite:///{path}") for name, path in paths.items()}
    for engine in engines.values():
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (v text)"))
            conn.execute(sa.text("CREATE TABLE u (v text)"))
    with instrumented(instrument=DRIVERS) as t:
        for _round in range(2):  # the second round is served from the kept sets
            for statement in statements:
                for name in ("a", "b", "a"):
                    with engines[name].connect() as conn:
                        try:
                            conn.execute(sa.text(statement)).fetchall()
                        except sa.exc.OperationalError:
                            pass
            engines["a"].dispose()  # a new pool under the same engine: its sets stay the engine's
        seen = [(s.attributes["db.namespace"], s.attributes["db.query.text"], s.attributes.get("db.collection.name"),
                 s.attributes.get("error.type")) for s in _spans(t)]
        assert seen == [(paths[name], *statements[statement]) for _round in range(2) for statement in statements
                        for name in ("a", "b", "a")]
        points = {(a["db.namespace"], a.get("db.collection.name"), a.get("error.type")): p.count
                  for a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)}
        assert points == {(paths[name], table, error): 2 * calls for name, calls in (("a", 2), ("b", 1))
                          for _text, table, error in statements.values()}
    for engine in engines.values():
        engine.dispose()
