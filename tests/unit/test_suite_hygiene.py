"""The test suite's own assertions can fail: patterns that make an ``assert`` always true are refused.

* ``assert a == b if c else d`` parses as ``assert (a == b) if c else d``: whenever ``c`` is false it
  asserts ``d``, a non-empty list, which is always true (an operator-precedence slip).
* ``assert (x, "message")`` asserts a non-empty tuple.
* ``assert x or True`` and the like: a constant operand decides the outcome.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def _always_true(test: ast.expr) -> str | None:
    if isinstance(test, ast.IfExp):
        return "a conditional expression (write `assert a == (b if c else d)`)"
    if isinstance(test, ast.Tuple) and test.elts:
        return "a non-empty tuple"
    if isinstance(test, ast.Constant) and test.value:
        return "a true constant"
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        if any(isinstance(v, ast.Constant) and v.value for v in test.values):
            return "`or` with a true constant"
    return None


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [f"{path.relative_to(TESTS.parent)}:{node.lineno}: asserts {why}"
            for node in ast.walk(tree) if isinstance(node, ast.Assert) and (why := _always_true(node.test))]


def test_no_assertion_in_the_suite_is_always_true() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50  # the walk found the suite
    findings = [f for path in files for f in _findings(path)]
    assert findings == []


@pytest.mark.parametrize("source", [
    "assert x == [1] if y else [2]",
    "assert (x, 'message')",
    "assert f() is False or True",
    "assert 1",
])
def test_the_check_catches_each_pattern(source: str) -> None:
    (statement,) = ast.parse(source).body
    assert isinstance(statement, ast.Assert) and _always_true(statement.test) is not None


@pytest.mark.parametrize("source", ["assert x == ([1] if y else [2])", "assert x, ('a', 'b')", "assert x or y"])
def test_the_check_accepts_sound_assertions(source: str) -> None:
    (statement,) = ast.parse(source).body
    assert isinstance(statement, ast.Assert) and _always_true(statement.test) is None
