"""Correlation ID: baggage storage, one-call read, validation, and the span processor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pipeline_support import Telemetry, in_memory_providers
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

import otelkit
from otelkit._correlation import (
    MAX_CORRELATION_ID_LENGTH,
    correlate,
    get_correlation_id,
    is_valid_correlation_id,
    new_correlation_id,
)
from otelkit._names import CORRELATION_ATTRIBUTE, CORRELATION_BAGGAGE_KEY


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


def test_no_id_outside_a_scope() -> None:
    assert otelkit.correlation_id() is None
    assert get_correlation_id() is None


def test_correlate_creates_keeps_and_restores() -> None:
    with correlate() as outer:
        assert is_valid_correlation_id(outer)
        assert otelkit.correlation_id() == outer
        with correlate() as inner:  # no argument keeps the current ID
            assert inner == outer
        with correlate("order-42") as explicit:
            assert explicit == "order-42" == otelkit.correlation_id()
        assert otelkit.correlation_id() == outer
    assert otelkit.correlation_id() is None


def test_get_correlation_id_reads_a_given_context() -> None:
    ctx = baggage.set_baggage(CORRELATION_BAGGAGE_KEY, "abc", otel_context.Context())
    assert get_correlation_id(ctx) == "abc"
    assert get_correlation_id() is None
    assert get_correlation_id(baggage.set_baggage(CORRELATION_BAGGAGE_KEY, 5, otel_context.Context())) is None


@pytest.mark.parametrize("value", ["", "x" * (MAX_CORRELATION_ID_LENGTH + 1), "x" * 10_000, "a b", "a,b", "a;b",
                                   "é", "line\nbreak", b"bytes", 12, None])
def test_invalid_ids_are_rejected(value: object) -> None:
    assert not is_valid_correlation_id(value)


def test_invalid_explicit_id_is_replaced() -> None:
    with correlate("x" * 10_000) as cid:
        assert is_valid_correlation_id(cid)
        assert len(cid) == 32


def test_new_ids_are_unique() -> None:
    assert len({new_correlation_id() for _ in range(1000)}) == 1000


def test_span_processor_sets_attribute_only_inside_scope(otel: Telemetry) -> None:
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("outside"):
        pass
    with correlate("cid-1"):
        with tracer.start_as_current_span("inside"):
            with tracer.start_as_current_span("child"):
                pass
    assert CORRELATION_ATTRIBUTE not in (otel.span("outside").attributes or {})
    assert otel.span("inside").attributes[CORRELATION_ATTRIBUTE] == "cid-1"
    assert otel.span("child").attributes[CORRELATION_ATTRIBUTE] == "cid-1"


def test_span_processor_reads_explicit_parent_context(otel: Telemetry) -> None:
    ctx = baggage.set_baggage(CORRELATION_BAGGAGE_KEY, "from-ctx", otel_context.Context())
    trace.get_tracer("test").start_span("explicit", context=ctx).end()
    assert otel.span("explicit").attributes[CORRELATION_ATTRIBUTE] == "from-ctx"


def test_receive_without_init_does_not_leak_the_correlation_id() -> None:
    """Before init() the tracer is a no-op, yet the scope's baggage is detached on exit (also on error)."""
    from opentelemetry import context as otel_context

    from otelkit import _init, correlation_id, pipeline

    _init.reset()  # no SDK providers: the proxy tracer hands out the API's no-op spans
    token = otel_context.attach(otel_context.Context())
    try:
        assert correlation_id() is None
        with pipeline.receive("orders", carrier={}, system="redis"):
            assert correlation_id() is not None
        assert correlation_id() is None
        with pytest.raises(ValueError), pipeline.receive("orders", carrier={}, system="redis"):
            raise ValueError("boom")
        assert correlation_id() is None
        with pipeline.emit("orders", carrier={}, system="redis"):
            assert correlation_id() is not None
        assert correlation_id() is None
        with pipeline.stage("enrich", source="helius"), pipeline.emit("orders", carrier={}, system="redis"):
            pass
        assert correlation_id() is None
    finally:
        otel_context.detach(token)
