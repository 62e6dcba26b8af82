"""otelkit's cheaper span path behaves exactly like the SDK's own (issue 17 part 3).

``ProxyTracer.start_as_current_span`` (``_proxy.CurrentSpan``) replaces the SDK's two generator-based
context managers, and ``ParentBasedAlwaysOn`` the SDK's ``ParentBased(ALWAYS_ON)``: each scenario
below runs through both and compares what is recorded.
"""

from __future__ import annotations

import asyncio
import copy
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider, _TracerConfig
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, DEFAULT_ON, ParentBased, TraceIdRatioBased
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.span import TraceState

from otelkit._compat import VERIFIED_SDK, lean_end_span, lean_start_span
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


# --- the lean start_span (``_compat.lean_start_span``): the SDK's own _Span, attribute for attribute ------------------


class _Recorder(SpanProcessor):
    """Keeps what a processor gets: the started span and the ReadableSpan of end()."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.started.append((span, parent_context))

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def _deep(value: Any) -> Any:
    """Everything an object holds, recursively; locks by type and state, other objects by identity or ==."""
    if isinstance(value, NonRecordingSpan):
        return "non-recording", _deep(value.get_span_context())
    if isinstance(value, (ReadableSpan, BoundedAttributes, BoundedList, Event)):
        return type(value), {key: _deep(item) for key, item in vars(value).items()}
    if isinstance(value, tuple) and type(value) is not tuple:  # SpanContext, Link-free named tuples
        return type(value), tuple(_deep(v) for v in value)
    if isinstance(value, (list, tuple, deque)):
        return type(value), [_deep(v) for v in value], getattr(value, "maxlen", None)
    if isinstance(value, dict):
        return {key: _deep(item) for key, item in value.items()}
    if isinstance(value, trace.Link):
        return "link", _deep(value.context), _deep(value.attributes)
    if type(value).__name__ == "lock":
        return "lock", value.locked()
    if isinstance(value, (int, float, str, bytes, bool, type(None))):
        return value
    if isinstance(value, TraceState):
        return "tracestate", list(value.items())
    if isinstance(value, trace.Status):
        return "status", value.status_code, value.description
    return "object", id(value)


def _lean_cases() -> list[tuple[str, dict[str, Any], Any]]:
    sampled = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "x")]))))
    unsampled = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))))
    # API 1.40 has no RANDOM_TRACE_ID flag (the lean path is not used there: these cases skip); collection must
    # still work on it (.ci/lowest).
    random_bit = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
    random_flag = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x99, 0x77, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED | random_bit))))
    link = trace.Link(SpanContext(0x42, 0x43, is_remote=True), {"l": 1})

    class Color(str):
        pass

    return [
        ("root", {"attributes": {"i": 1, "k": "v", "f": 1.5, "b": True, "y": b"x", "n": None}}, None),
        ("no attributes", {}, None),
        ("kind and start time", {"kind": trace.SpanKind.SERVER, "start_time": 7}, None),
        ("sampled remote parent", {"context": sampled, "attributes": {"a": 1}}, None),
        ("unsampled parent: dropped", {"context": unsampled, "attributes": {"a": 1}}, None),
        ("parent with the random flag", {"context": random_flag}, None),
        ("values the SDK cleans", {"attributes": {"seq": [1, 2], "s": Color("c"), "o": object(), 3: "x", "": 1}},
         None),
        ("long string, limits", {"attributes": {"s": "x" * 50, "t": "y"}},
         SpanLimits(max_span_attribute_length=10, max_span_attributes=5)),
        ("more attributes than the limit", {"attributes": {f"k{i}": i for i in range(5)}},
         SpanLimits(max_span_attributes=3)),
        # each condition of the lean path's attribute check on its own (one would hide another above)
        ("an empty key alone", {"attributes": {"": 1, "a": "b"}}, None),
        ("a non-str key alone", {"attributes": {3: "x", "a": "b"}}, None),
        ("a sequence value alone", {"attributes": {"seq": [1, 2], "a": "b"}}, None),
        ("a str subclass value alone", {"attributes": {"s": Color("c"), "a": "b"}}, None),
        ("one long string alone", {"attributes": {"s": "x" * 11, "a": "b"}}, SpanLimits(max_span_attribute_length=10)),
        ("links", {"links": [link, None]}, None),
        # one link without attributes (a consumer span's link to its producer) takes a shortcut of its own
        ("one link without attributes", {"links": [trace.Link(SpanContext(0x42, 0x43, is_remote=True))]}, None),
        ("one link without attributes, link limit 1", {"links": [trace.Link(SpanContext(0x42, 0x43, is_remote=True))]},
         SpanLimits(max_links=1, max_link_attributes=2, max_attribute_length=9)),
        ("one link without attributes, link limit 0", {"links": [trace.Link(SpanContext(0x42, 0x43, is_remote=True))]},
         SpanLimits(max_links=0)),
        ("one link to an invalid context", {"links": [trace.Link(trace.INVALID_SPAN_CONTEXT)]}, None),
        ("one link with empty attributes", {"links": [trace.Link(SpanContext(0x42, 0x43, is_remote=True), {})]}, None),
        ("explicit empty context", {"context": Context()}, None),
    ]


def _run_lean_case(start: Callable[..., Any], recorder: _Recorder, kwargs: dict[str, Any], seed: int) -> Any:
    if kwargs.get("links"):  # the SDK sets each link's attributes: every run gets links as the case made them
        kwargs = {**kwargs, "links": [copy.copy(link) for link in kwargs["links"]]}
    random.seed(seed)
    span = start("op", **kwargs)
    if span.is_recording():
        span.set_attribute("late", 1)
        span.add_event("e", {"x": 1}, timestamp=9)
        span.set_status(trace.Status(trace.StatusCode.ERROR, "bad"))
    started = _deep(span)
    span.end(end_time=11)
    return started, [_deep(s) for s in recorder.ended], [(_deep(s), c) for s, c in recorder.started]


@pytest.mark.parametrize(("kwargs", "limits"), [(kw, lim) for _, kw, lim in _lean_cases()],
                         ids=[name for name, _, _ in _lean_cases()])
@pytest.mark.parametrize("sampler", [ParentBasedAlwaysOn(), DEFAULT_ON, ParentBased(ALWAYS_ON), TraceIdRatioBased(0.5)],
                         ids=["otelkit-default", "sdk-default-object", "sdk-parent-based", "ratio"])
def test_lean_start_span_builds_the_sdks_span(kwargs: dict[str, Any], limits: Any, sampler: Any,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import opentelemetry.sdk.trace as sdk_trace

    monkeypatch.setattr(sdk_trace, "time_ns", lambda: 3)  # both paths read the clock the SDK's module holds
    recorder = _Recorder()
    provider = TracerProvider(sampler=sampler, span_limits=limits)
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("t", "1.0")
    lean = lean_start_span(tracer, ParentBasedAlwaysOn)
    if lean is None:
        assert not sdk_version.startswith(VERIFIED_SDK), "the lean path is off on an SDK it was checked against"
        pytest.skip(f"SDK {sdk_version}: the lean path is off, the SDK's own start_span is used")
    for seed in (1, 2, 3):
        expected = _run_lean_case(tracer.start_span, recorder, kwargs, seed)
        recorder.started.clear()
        recorder.ended.clear()
        got = _run_lean_case(lean, recorder, kwargs, seed)
        recorder.started.clear()
        recorder.ended.clear()
        assert got == expected


def test_lean_start_span_of_a_disabled_tracer_and_of_other_tracers() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    assert lean_start_span(trace.NoOpTracer(), ParentBasedAlwaysOn) is None
    if not sdk_version.startswith(VERIFIED_SDK):
        assert lean_start_span(tracer, ParentBasedAlwaysOn) is None
        return
    tracer._set_tracer_config(_TracerConfig(is_enabled=False))
    lean = lean_start_span(tracer, ParentBasedAlwaysOn)
    assert lean is not None
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(5, 6, is_remote=True)))
    got, expected = lean("x", context=parent), tracer.start_span("x", context=parent)
    assert type(got) is type(expected) is NonRecordingSpan
    assert got.get_span_context() == expected.get_span_context()

    class Sequential(RandomIdGenerator):
        pass

    assert lean_start_span(TracerProvider(id_generator=Sequential()).get_tracer("t"), ParentBasedAlwaysOn) is None


def test_the_proxy_uses_the_lean_path_for_sdk_tracers() -> None:
    tracer = ProxyTracer(TracerProvider().get_tracer("t"))
    assert ("._make.<locals>.start_span" in tracer.start_span.__qualname__) == sdk_version.startswith(VERIFIED_SDK)
    with tracer.start_as_current_span("x") as span:
        assert type(span).__name__ == "_Span"


def test_the_pipeline_tracer_takes_the_lean_path_on_an_applications_own_sdk_provider(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """otelkit's integrations on a TracerProvider the application set itself (not otelkit's proxy): the lean path,
    and the spans they start are the SDK's own, exported as before."""
    from otelkit._pipeline import instruments, scopes

    exporter = InMemorySpanExporter()
    provider = TracerProvider()  # the SDK's default sampler object (DEFAULT_ON): decided inline
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setattr(instruments, "_tracer_cache", None)
    tracer = instruments.tracer()
    assert instruments.tracer() is tracer  # cached per provider
    assert ("._make.<locals>.start_span" in tracer.start_span.__qualname__) == sdk_version.startswith(VERIFIED_SDK)
    with scopes.Reception("q1", None, system="rabbitmq", attributes={"messaging.rabbitmq.message.delivery_tag": 3}):
        pass
    (span,) = exporter.get_finished_spans()
    assert type(span).__name__ == "ReadableSpan" and span.name == "process q1" and span.kind == trace.SpanKind.CONSUMER
    assert span.attributes["messaging.rabbitmq.message.delivery_tag"] == 3
    assert span.attributes["otelkit.outcome"] == "ack"
    assert span.instrumentation_scope.name == instruments.SCOPE


def test_the_sdks_default_sampler_is_decided_inline_unless_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    """DEFAULT_ON (a TracerProvider() without a sampler) is decided without calling it; a patched should_sample, seen
    when the tracer is bound, is called as the SDK calls it."""
    if not sdk_version.startswith(VERIFIED_SDK):
        pytest.skip(f"SDK {sdk_version}: the lean path is off")
    calls: list[str] = []
    original = ParentBased.should_sample

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    bound_before = lean_start_span(TracerProvider().get_tracer("t"), ParentBasedAlwaysOn)
    monkeypatch.setattr(ParentBased, "should_sample", spy)
    assert bound_before is not None
    bound_before("inline").end()
    assert calls == []  # decided inline (bound while should_sample was the SDK's)
    bound_after = lean_start_span(TracerProvider().get_tracer("t"), ParentBasedAlwaysOn)
    assert bound_after is not None
    bound_after("patched").end()
    assert calls == ["ParentBased"]  # the patched sampler is asked


# --- the lean end (``_compat.lean_end_span``): Span.end's effects, processor by processor ------------------------


class _EndingRecorder(_Recorder):
    """Also keeps the ``_on_ending`` calls (the live span, whether it had its end time yet)."""

    def __init__(self, log: list[str], name: str) -> None:
        super().__init__()
        self.log, self.name = log, name

    def _on_ending(self, span: Any) -> None:
        self.log.append(f"{self.name}._on_ending:{span.end_time is not None}")

    def on_end(self, span: ReadableSpan) -> None:
        self.log.append(f"{self.name}.on_end")
        super().on_end(span)


class _StartOnly(SpanProcessor):
    """The SpanProcessor base class's no-op _on_ending/on_end: the lean end skips them."""


def _end_case(start: Callable[..., Any], end: Callable[[Any], None], recorders: list[_Recorder],
              kwargs: dict[str, Any], seed: int) -> Any:
    random.seed(seed)
    span = start("op", **kwargs)
    if span.is_recording():
        span.set_attribute("late", 1)
        if seed == 2:
            span.add_event("e", {"x": 1}, timestamp=9)
            span.set_status(trace.Status(trace.StatusCode.ERROR, "bad"))
    end(span)
    return (_deep(span), [[_deep(s) for s in r.ended] for r in recorders],
            [[(_deep(s), c) for s, c in r.started] for r in recorders])


@pytest.mark.parametrize(("kwargs", "limits"), [(kw, lim) for _, kw, lim in _lean_cases()],
                         ids=[name for name, _, _ in _lean_cases()])
@pytest.mark.parametrize("shared", [False, True], ids=["user-processors", "own-processors"])
def test_lean_start_and_end_do_what_the_sdk_does(kwargs: dict[str, Any], limits: Any, shared: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import opentelemetry.sdk.trace as sdk_trace

    monkeypatch.setattr(sdk_trace, "time_ns", lambda: 3)
    log: list[str] = []
    recorders: list[_Recorder] = [_EndingRecorder(log, "a"), _Recorder(), _EndingRecorder(log, "b")]
    provider = TracerProvider(span_limits=limits)
    for recorder in recorders:
        provider.add_span_processor(recorder)
    provider.add_span_processor(_StartOnly())
    tracer = provider.get_tracer("t", "1.0")
    start = lean_start_span(tracer, ParentBasedAlwaysOn)
    end = lean_end_span(tracer, {_Recorder, _EndingRecorder, _StartOnly} if shared else ())
    if start is None or end is None:
        assert not sdk_version.startswith(VERIFIED_SDK), "the lean end is off on an SDK it was checked against"
        pytest.skip(f"SDK {sdk_version}: the lean path is off")
    for seed in (1, 2):
        expected = _end_case(tracer.start_span, lambda s: s.end(), recorders, kwargs, seed)
        expected_log = list(log)
        for recorder in recorders:
            recorder.ended.clear()
            recorder.started.clear()
        log.clear()
        got = _end_case(start, end, recorders, kwargs, seed)
        assert got == expected
        assert log == expected_log
        for recorder in recorders:
            recorder.ended.clear()
            recorder.started.clear()
        log.clear()


def test_lean_end_shares_empty_lists_only_among_otelkits_own_processors() -> None:
    recorder = _Recorder()
    provider = TracerProvider()
    provider.add_span_processor(recorder)
    tracer = provider.get_tracer("t")
    start = lean_start_span(tracer, ParentBasedAlwaysOn)
    own: set[type] = set()
    end = lean_end_span(tracer, own)
    if start is None or end is None:
        assert not sdk_version.startswith(VERIFIED_SDK)
        pytest.skip(f"SDK {sdk_version}: the lean path is off")

    def two() -> tuple[ReadableSpan, ReadableSpan]:
        first, second = start("a"), start("b")
        end(first)
        end(second)
        return recorder.ended[-2], recorder.ended[-1]

    first, second = two()
    assert first._events is not second._events and first._links is not second._links  # a user's processor
    own.add(_Recorder)  # read at the next change of the processors: none yet, so still not shared
    first, second = two()
    assert first._events is not second._events
    provider.add_span_processor(_StartOnly())  # the processors changed: looked at again
    own.add(_StartOnly)
    first, second = two()
    assert first._events is second._events and first._links is second._links
    assert tuple(first.events) == () and first.dropped_events == 0 and first.dropped_links == 0
    with_event = start("c")
    with_event.add_event("e")
    end(with_event)
    assert [e.name for e in recorder.ended[-1].events] == ["e"]
    assert recorder.ended[-1]._events is not first._events
    assert not first._events._dq  # nothing was added to the shared list


def test_lean_end_calls_processors_added_later_and_other_spans_own_end(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    start = lean_start_span(tracer, ParentBasedAlwaysOn)
    end = lean_end_span(tracer, ())
    if start is None or end is None:
        assert not sdk_version.startswith(VERIFIED_SDK)
        pytest.skip(f"SDK {sdk_version}: the lean path is off")
    end(start("before any processor"))
    late = _Recorder()
    provider.add_span_processor(late)
    span = start("after")
    end(span)
    assert [s.name for s in late.ended] == ["after"]
    end(span)  # twice: the SDK's warning, no second on_end
    assert "Calling end() on an ended span." in caplog.text and len(late.ended) == 1
    other = TracerProvider()
    other.add_span_processor(late)
    foreign = other.get_tracer("o").start_span("foreign")  # another provider's span: its own end()
    end(foreign)
    assert [s.name for s in late.ended] == ["after", "foreign"]
    non_recording = NonRecordingSpan(SpanContext(1, 2, is_remote=False))
    end(non_recording)


def test_lean_end_is_off_when_span_end_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import Span

    tracer = TracerProvider().get_tracer("t")
    if not sdk_version.startswith(VERIFIED_SDK):
        assert lean_end_span(tracer) is None
        return
    assert lean_end_span(tracer) is not None
    original = Span.end

    def patched(self: Any, end_time: int | None = None) -> None:
        original(self, end_time)

    monkeypatch.setattr(Span, "end", patched)
    assert lean_end_span(tracer) is None


def test_the_proxy_ends_its_spans_through_the_lean_end() -> None:
    tracer = ProxyTracer(TracerProvider().get_tracer("t"))
    current = tracer.start_as_current_span("x")
    assert ("._make_end.<locals>.end" in getattr(current._end, "__qualname__", "")) == \
        sdk_version.startswith(VERIFIED_SDK)
