"""otelkit's cheaper span path behaves exactly like the SDK's own (issue 17 part 3).

``ProxyTracer.start_as_current_span`` (``_proxy.CurrentSpan``) replaces the SDK's two generator-based
context managers, and ``ParentBasedAlwaysOn`` the SDK's ``ParentBased(ALWAYS_ON)``: each scenario
below runs through both and compares what is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.span import TraceState

from otelkit._proxy import CurrentSpan, ProxyTracer
from otelkit._sampling import ParentBasedAlwaysOn


def _tracers() -> tuple[Any, Any, InMemorySpanExporter, InMemorySpanExporter]:
    ours, theirs = InMemorySpanExporter(), InMemorySpanExporter()
    tp_ours, tp_theirs = TracerProvider(), TracerProvider()
    tp_ours.add_span_processor(SimpleSpanProcessor(ours))
    tp_theirs.add_span_processor(SimpleSpanProcessor(theirs))
    return ProxyTracer(tp_ours.get_tracer("t")), tp_theirs.get_tracer("t"), ours, theirs


def _shape(span: ReadableSpan) -> tuple[Any, ...]:
    return (span.name, span.kind, dict(span.attributes or {}), span.status.status_code, span.status.description,
            [(e.name, dict(e.attributes or {}).get("exception.type")) for e in span.events],
            span.parent is not None, span.end_time is not None)


class Boom(Exception):
    pass


def _scenarios() -> list[Callable[[Any], None]]:
    def plain(tracer: Any) -> None:
        with tracer.start_as_current_span("op", attributes={"i": 1, "k": "v"}) as span:
            assert trace.get_current_span() is span
            with tracer.start_as_current_span("child", kind=trace.SpanKind.CLIENT):
                pass
        assert trace.get_current_span() is trace.INVALID_SPAN

    def raising(tracer: Any) -> None:
        with pytest.raises(Boom), tracer.start_as_current_span("fails"):
            raise Boom("no")

    def not_recorded(tracer: Any) -> None:
        with pytest.raises(Boom), tracer.start_as_current_span("quiet", record_exception=False):
            raise Boom("quiet")

    def no_status(tracer: Any) -> None:
        with pytest.raises(Boom), tracer.start_as_current_span("nostatus", set_status_on_exception=False):
            raise Boom("nostatus")

    def base_exception(tracer: Any) -> None:
        with pytest.raises(KeyboardInterrupt), tracer.start_as_current_span("interrupted"):
            raise KeyboardInterrupt

    def open_ended(tracer: Any) -> None:
        with tracer.start_as_current_span("open", end_on_exit=False) as span:
            pass
        assert span.is_recording()
        span.end()

    def explicit_parent(tracer: Any) -> None:
        parent = tracer.start_span("parent")
        with tracer.start_as_current_span("child", context=trace.set_span_in_context(parent), start_time=5):
            pass
        parent.end()

    def decorated(tracer: Any) -> None:
        @tracer.start_as_current_span("sync-fn")
        def work(x: int) -> int:
            assert trace.get_current_span().is_recording()
            return x * 2

        @tracer.start_as_current_span("async-fn")
        async def awork() -> str:
            await asyncio.sleep(0)
            assert trace.get_current_span().is_recording()
            return "done"

        assert work(2) == 4 and work(3) == 6
        assert asyncio.run(awork()) == "done"

    return [plain, raising, not_recorded, no_status, base_exception, open_ended, explicit_parent, decorated]


@pytest.mark.parametrize("scenario", _scenarios(), ids=lambda f: f.__name__)
def test_start_as_current_span_records_what_the_sdk_records(scenario: Callable[[Any], None]) -> None:
    ours, theirs, our_spans, their_spans = _tracers()
    assert isinstance(ours.start_as_current_span("x"), CurrentSpan)  # the cheap path is the one tested
    scenario(theirs)
    scenario(ours)
    expected = [_shape(s) for s in their_spans.get_finished_spans()]
    assert expected, "the scenario records spans"
    assert [_shape(s) for s in our_spans.get_finished_spans()] == expected
    assert context.get_current() == Context()


def test_a_tracer_that_is_not_the_sdks_keeps_its_own_method() -> None:
    class Custom(trace.NoOpTracer):
        pass

    tracer = Custom()
    assert ProxyTracer(tracer).start_as_current_span == tracer.start_as_current_span


def _parents() -> list[Context | None]:
    state = TraceState([("vendor", "x")])
    out: list[Context | None] = [None, Context()]
    for remote in (False, True):
        for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
            ctx = SpanContext(0x1234, 0x5678, is_remote=remote, trace_flags=TraceFlags(flags), trace_state=state)
            out.append(trace.set_span_in_context(NonRecordingSpan(ctx)))
    out.append(trace.set_span_in_context(NonRecordingSpan(SpanContext(0, 0, is_remote=True))))
    return out


@pytest.mark.parametrize("parent", _parents())
@pytest.mark.parametrize("attributes", [None, {"k": "v", "n": 3}])
def test_parent_based_always_on_decides_as_the_sdks(parent: Context | None, attributes: Any) -> None:
    sdk, ours = ParentBased(ALWAYS_ON), ParentBasedAlwaysOn()
    expected = sdk.should_sample(parent, 0xABC, "op", attributes=attributes)
    got = ours.should_sample(parent, 0xABC, "op", attributes=attributes)
    assert got.decision is expected.decision
    assert dict(got.attributes) == dict(expected.attributes)
    assert got.trace_state == expected.trace_state
    assert ours.get_description() == sdk.get_description()
    assert isinstance(ours, ParentBased)
