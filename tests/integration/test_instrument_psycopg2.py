"""psycopg2 (the psycopg2-binary wheel installed here) against the real PostgreSQL on 127.0.0.1:5432."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import metadata

import psycopg2
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from psycopg2 import sql

from otelkit import _names
from tests.integration.instrument_support import Telemetry, instrumented, pg_table, span_attr

SECRETS = ("OTK-CANARY-SQL-INLINE", "OTK-CANARY-SQL-LITERAL", "OTK-CANARY-SQL-DOLLAR", "OTK-CANARY-SQL-PARAM",
           "31337")


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    with pg_table(postgres_dsn, "otelkit_t_", "id int primary key, v text") as name:
        yield name


def _pg_spans(t: Telemetry) -> list:
    return t.spans("psycopg2")


def _transactions(t: Telemetry) -> dict[str, int]:
    out: dict[str, int] = {}
    for attributes, point, _unit in t.points(_names.DB_TRANSACTIONS.name):
        out[attributes[_names.ATTR_OUTCOME]] = out.get(attributes[_names.ATTR_OUTCOME], 0) + point.value
    return out


def test_binary_wheel_is_what_is_installed_and_is_instrumented(postgres_dsn: str) -> None:
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("psycopg2")
    assert metadata.version("psycopg2-binary")
    with instrumented(instrument=["psycopg2"]) as t:
        status = t.status("psycopg2")
        assert status.state == "enabled" and "psycopg2-binary" in status.reason
        conn = psycopg2.connect(postgres_dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
        assert [s.name for s in _pg_spans(t)] == ["SELECT"]


def test_statements_are_spans_with_literals_scrubbed(postgres_dsn: str, table: str) -> None:
    with instrumented(instrument=["psycopg2"]) as t:
        tracer = t.tracer_provider.get_tracer("test")
        conn = psycopg2.connect(postgres_dsn)
        with tracer.start_as_current_span("outer") as outer:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} VALUES (31337, 'OTK-CANARY-SQL-INLINE')")
                cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.Literal("OTK-CANARY-SQL-LITERAL"),
                                                                sql.Identifier(table)))
                cur.execute("SELECT $tag$OTK-CANARY-SQL-DOLLAR$tag$ -- OTK-CANARY-SQL-INLINE")
                cur.execute(f"SELECT v FROM {table} WHERE v = %s", ("OTK-CANARY-SQL-PARAM",))
            conn.commit()
        conn.close()
        spans = _pg_spans(t)
        assert [s.name for s in spans] == ["INSERT", "SELECT", "SELECT", "SELECT"]
        statements = [span_attr(s.attributes, "db.query.text") for s in spans]
        assert statements[0] == f"INSERT INTO {table} VALUES (?, ?)"
        assert statements[1] == f'SELECT ? FROM "{table}"'
        assert statements[2] == "SELECT ?"
        assert statements[3] == f"SELECT v FROM {table} WHERE v = %s"
        for span in spans:
            assert span.kind is SpanKind.CLIENT
            assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
            assert span_attr(span.attributes, "db.system.name") == "postgresql"
            assert span_attr(span.attributes, "db.namespace") == "test"
            for secret in SECRETS:
                assert secret not in repr(dict(span.attributes))


def test_operation_duration_metric(postgres_dsn: str, table: str) -> None:
    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn)
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (1, 'a')")
            cur.execute(f"SELECT * FROM {table}")
            with pytest.raises(psycopg2.errors.UndefinedTable):
                cur.execute("SELECT * FROM otelkit_no_such_table_x")
        conn.rollback()
        conn.close()
        points = t.points(_names.DB_CLIENT_DURATION.name)
        by_op = {(a["db.operation.name"], a.get("error.type")): (p, u) for a, p, u in points}
        assert set(by_op) == {("INSERT", None), ("SELECT", None), ("SELECT", "UndefinedTable")}
        for (_op, _err), (point, unit) in by_op.items():
            assert unit == "s" and point.count == 1 and point.sum > 0
        rows = {(a["db.operation.name"]): p.sum for a, p, u in t.points(_names.DB_RETURNED_ROWS.name)
                if u == "{row}"}
        assert rows == {"INSERT": 1, "SELECT": 1}  # failed statements record no row count
        attributes = points[0][0]
        assert attributes["db.system.name"] == "postgresql"
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == 5432


def test_failing_query_is_an_error_span_without_the_literal(postgres_dsn: str) -> None:
    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn)
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            cur.execute("SELECT 'OTK-CANARY-SQL-INLINE'::int")
        conn.close()
        (span,) = _pg_spans(t)
        assert span.status.status_code is StatusCode.ERROR
        assert span_attr(span.attributes, "db.query.text") == "SELECT ?::int"
        (event,) = [e for e in span.events if e.name == "exception"]
        # The driver's message quotes the value; the export-time scrubber handles it (see test_scrub).
        assert event.attributes["exception.type"].endswith("InvalidTextRepresentation")


def test_transaction_outcomes(postgres_dsn: str, table: str) -> None:
    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn)
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (1, 'a')")
        conn.commit()
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} VALUES (2, 'b')")
        conn.rollback()
        conn.commit()  # nothing open: not a transaction
        with conn:  # context manager exit commits
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} VALUES (3, 'c')")
        with pytest.raises(ZeroDivisionError), conn:  # exception: exit rolls back
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {table} VALUES (4, 'd')")
            raise ZeroDivisionError
        with conn.cursor() as cur:  # failed transaction: COMMIT is a rollback
            with pytest.raises(psycopg2.errors.UniqueViolation):
                cur.execute(f"INSERT INTO {table} VALUES (1, 'dup')")
        conn.commit()
        conn.autocommit = True
        with conn:  # autocommit: no transaction to count
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        conn.close()
        assert _transactions(t) == {"commit": 2, "rollback": 3}
        check = psycopg2.connect(postgres_dsn)
        with check.cursor() as cur:
            cur.execute(f"SELECT id FROM {table} ORDER BY id")
            assert [r[0] for r in cur.fetchall()] == [1, 3]
        check.close()


def test_custom_connection_factory_is_kept(postgres_dsn: str) -> None:
    import psycopg2.extras

    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn, connection_factory=psycopg2.extras.RealDictConnection)
        assert isinstance(conn, psycopg2.extras.RealDictConnection)
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one")
            assert cur.fetchone() == {"one": 1}
        conn.close()
        assert len(_pg_spans(t)) == 1


def test_per_connection_instrumentation_on_top_of_global_gives_one_span(postgres_dsn: str) -> None:
    from opentelemetry.instrumentation.psycopg2 import Psycopg2Instrumentor

    with instrumented(instrument=["psycopg2"]) as t:
        conn = psycopg2.connect(postgres_dsn)
        Psycopg2Instrumentor.instrument_connection(conn, tracer_provider=t.tracer_provider)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        Psycopg2Instrumentor.uninstrument_connection(conn)
        conn.close()
        assert len(_pg_spans(t)) == 1
        assert sum(p.count for _a, p, _u in t.points(_names.DB_CLIENT_DURATION.name)) == 1


def test_instrumenting_twice_gives_one_span(postgres_dsn: str) -> None:
    from otelkit import _instrument
    from otelkit._config import resolve

    with instrumented(instrument=["psycopg2"]) as t:
        _instrument.instrument_all(resolve(instrument=["psycopg2"], system_metrics=False), t.tracer_provider,
                                   t.meter_provider)
        conn = psycopg2.connect(postgres_dsn)
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
        assert len(_pg_spans(t)) == 1
