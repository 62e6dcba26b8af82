"""db.collection.name from the statement shape: the one table, or None when there is not exactly one."""

from __future__ import annotations

import pytest

from otelkit._instrument import _sql


@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT * FROM users WHERE id = ?", "users"),
    ('select a, b from public."Orders" o where x = ?', "public.Orders"),
    ("INSERT INTO t (a, b) VALUES (?, ?)", "t"),
    ("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET a = ?", "t"),
    ("UPDATE t SET a = ?, b = ? WHERE c = ?", "t"),
    ("DELETE FROM t WHERE a = ?", "t"),
    ("SELECT * FROM t FOR UPDATE OF t NOWAIT", "t"),
    ("SELECT a FROM t ORDER BY a, b", "t"),
    ("SELECT * FROM t t1 JOIN t t2 ON t1.a = t2.b", "t"),
    ("TRUNCATE TABLE t", "t"),
    ("DELETE FROM t USING u WHERE t.a = u.a", None),
    ("SELECT 1", None),
    ("SELECT ?, ?", None),
    ("SELECT * FROM a JOIN b ON a.x = b.x", None),
    ("SELECT * FROM a x, b y", None),
    ("SELECT * FROM generate_series(?, ?)", None),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", None),
    ("WITH x AS (SELECT 1) SELECT * FROM x", None),
    ("INSERT INTO t SELECT * FROM u", None),
    ("SELECT a FROM t UNION SELECT a FROM u", None),
    (b"SELECT * FROM t", None),
    ("SELECT * FROM " + "x" * 200, None),
])
def test_collection_name(statement: object, expected: str | None) -> None:
    assert _sql.collection_name(statement) == expected
    assert _sql.collection_name(statement) == expected  # the cached answer


def test_metric_values_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sql, "_metric_names", set())
    monkeypatch.setattr(_sql, "MAX_COLLECTIONS", 2)
    assert _sql.for_metric("a") == "a" and _sql.for_metric("b") == "b"
    assert _sql.for_metric("c") is None  # a third distinct table: on spans only
    assert _sql.for_metric("a") == "a" and _sql.for_metric(None) is None
