"""Fork handling goes through one registry: ``otelkit._fork.at_fork`` (issue 20)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

import otelkit
from otelkit import _fork

PACKAGE = Path(otelkit.__file__).resolve().parent


def test_only_the_fork_module_registers_with_the_interpreter() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_fork.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "register_at_fork":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == [], "register fork handlers through otelkit._fork.at_fork"


def test_each_hook_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(os, "register_at_fork", lambda **hooks: calls.append(hooks))
    monkeypatch.setattr(_fork, "_at_fork_registered", set())

    def before() -> None: ...

    def child() -> None: ...

    _fork.at_fork(before=before, after_in_child=child)
    _fork.at_fork(before=before, after_in_child=child)  # again: nothing new
    _fork.at_fork(after_in_child=child)
    assert calls == [{"before": before, "after_in_child": child}]
