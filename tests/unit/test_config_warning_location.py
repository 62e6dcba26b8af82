"""A ``ConfigWarning`` points at the caller's line, never at otelkit's own code (whatever the call path)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest

import otelkit
from otelkit import _init
from otelkit._config import ConfigWarning, resolve
from otelkit.testing import capture_telemetry

QUIET = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none", "instrument": (),
         "system_metrics": False}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    _init.reset()


def _caught(call: Callable[[], object]) -> tuple[list[warnings.WarningMessage], int]:
    """Warnings of ``call()`` (a lambda calling otelkit) and the line of this file where that call is."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, ConfigWarning)], call.__code__.co_firstlineno


def _assert_here(caught: list[warnings.WarningMessage], line: int) -> None:
    assert caught, "no ConfigWarning"
    for w in caught:
        assert (w.filename, w.lineno) == (__file__, line), f"{w.message} points at {w.filename}:{w.lineno}"


def test_bad_environment_value_in_init_points_at_the_init_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    _assert_here(*_caught(lambda: otelkit.init(service_name="w", strict=False, **QUIET)))


def test_bad_argument_of_resolve_points_at_the_caller() -> None:
    _assert_here(*_caught(lambda: resolve(strict=False, sampler="sometimes")))


def test_bad_processor_argument_points_at_the_init_call() -> None:
    _assert_here(*_caught(lambda: otelkit.init(service_name="w", strict=False, span_processors=[object()],
                                               **QUIET)))


def test_derived_service_name_points_at_the_init_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_init, "_warned_derived_name", False)
    _assert_here(*_caught(lambda: otelkit.init(**QUIET)))


def test_through_capture_telemetry_it_points_at_the_with_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")

    def use() -> None:
        with capture_telemetry(strict=False):
            pass

    caught, _ = _caught(use)
    assert caught
    assert all(w.filename == __file__ for w in caught), [(w.filename, w.lineno) for w in caught]
