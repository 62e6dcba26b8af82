"""Bad input on the error path: odd exceptions and odd job context, reported to a real local Sentry endpoint.

Whatever the exception or the context looks like, the application's exception passes through unchanged,
the span is marked as an error, and exactly one Sentry event arrives (never dropped because one value
of the context could not be rendered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sentry_sink import SentrySink

import otelkit
from otelkit import _errors, pipeline
from otelkit.testing import capture_telemetry


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


# Factories: otelkit reports each exception object once (a mark on the object), so every test needs its own.
EXCEPTIONS: dict[str, Callable[[], Exception]] = {
    "str raises": _UnprintableError,
    "2 MB message": lambda: ValueError("x" * 2_000_000),
    "lone surrogate": lambda: ValueError("cannot open report-\udcff.csv"),
    "odd args": lambda: ValueError(_Unprintable(), b"\xff", None),
    "no args": RuntimeError,
}

CONTEXTS = {
    "unprintable value": {"job": _Unprintable()},
    "bytes": {"payload": b"\xff\x00"},
    "nested junk": {"nested": {"a": {1: object()}}},
    "100 KB": {"big": "y" * 100_000},
    "empty": {},
}


@pytest.fixture
def sink() -> Iterator[SentrySink]:
    with SentrySink() as s:
        yield s


def _one_event(sink: SentrySink, exc: Exception, context: dict[str, Any]) -> None:
    with capture_telemetry(service_name="bad-input", sentry_dsn=sink.dsn) as captured:
        with pytest.raises(type(exc)) as info:
            with _errors.error_context(**context):
                with otelkit.span("work"):
                    raise exc
        assert info.value is exc
        (span,) = captured.spans
        assert span.status.status_code.name == "ERROR"
        events = sink.wait_for_events(1, timeout=30)
    assert len(events) == 1
    assert events[0]["exception"]["values"][-1]["type"] == type(exc).__name__


@pytest.mark.parametrize("make", list(EXCEPTIONS.values()), ids=list(EXCEPTIONS))
def test_odd_exceptions_give_one_event(sink: SentrySink, make: Callable[[], Exception]) -> None:
    _one_event(sink, make(), {"order": "o-1"})


@pytest.mark.parametrize("context", list(CONTEXTS.values()), ids=list(CONTEXTS))
def test_odd_contexts_give_one_event(sink: SentrySink, context: dict[str, Any]) -> None:
    # An unprintable context value used to make _sentry drop the whole event ("could not be processed").
    _one_event(sink, ValueError("boom"), context)


def test_everything_odd_at_once(sink: SentrySink) -> None:
    _one_event(sink, _UnprintableError(), {k: v for c in CONTEXTS.values() for k, v in c.items()})


def test_odd_context_through_a_pipeline_reception(sink: SentrySink) -> None:
    with capture_telemetry(service_name="bad-input", sentry_dsn=sink.dsn):
        with pytest.raises(KeyError):
            with pipeline.receive("q", {"traceparent": "garbage"}, system="redis", message_id=b"\xff\xfe-0"):
                with _errors.error_context(order=_Unprintable(), raw=b"\x00"):
                    raise KeyError("missing")
        (event,) = sink.wait_for_events(1, timeout=30)
    assert event["contexts"]["job"]["destination"] == "q"


def test_unprintable_message_id_still_reports_the_failure(sink: SentrySink) -> None:
    with capture_telemetry(service_name="bad-input", sentry_dsn=sink.dsn) as captured:
        with pytest.raises(KeyError):
            with pipeline.receive("q", {}, system="redis", message_id=_Unprintable()):
                raise KeyError("missing")
        assert len(captured.spans) == 1
        sink.wait_for_events(1, timeout=30)
