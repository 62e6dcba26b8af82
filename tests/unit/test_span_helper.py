"""otelkit.span: context manager and decorator on every kind of callable, errors, options, attributes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode

import otelkit
from otelkit import _errors
from otelkit.testing import CapturedTelemetry


@pytest.fixture(autouse=True)
def _empty_otel_context() -> Iterator[None]:
    """Start from an empty OTel context: a span or baggage leaked by another module's test must not leak in."""
    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


@pytest.fixture
def reported() -> Iterator[list[BaseException]]:
    """Exceptions that reach the Sentry sender (a counting stand-in for Sentry's transport)."""
    sent: list[BaseException] = []

    def sender(exc: BaseException, span_context: Any, context: Any) -> str:
        sent.append(exc)
        return f"event-{len(sent)}"

    _errors.set_sender(sender)
    yield sent
    _errors.set_sender(None)


def _parent_id(span: Any) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_context_manager_yields_current_span_with_attributes(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("load", table="orders", rows=3) as s:
        assert trace.get_current_span() is s
        s.set_attribute("late", True)
    assert trace.get_current_span() is trace.INVALID_SPAN
    span = otelkit_capture.spans.span("load")
    assert dict(span.attributes or {}) == {"table": "orders", "rows": 3, "late": True}
    assert span.kind is SpanKind.INTERNAL
    assert span.status.status_code is StatusCode.UNSET


def test_nesting_builds_parent_child(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("parent"), otelkit.span("child"):
        pass
    parent, child = otelkit_capture.spans.span("parent"), otelkit_capture.spans.span("child")
    assert _parent_id(child) == parent.context.span_id
    assert child.context.trace_id == parent.context.trace_id
    assert otelkit_capture.spans.children(parent) == [child]


def test_exception_recorded_status_error_and_reported_once(
    otelkit_capture: CapturedTelemetry, reported: list[BaseException]
) -> None:
    error = ValueError("bad row 7")
    with pytest.raises(ValueError), otelkit.span("outer"), otelkit.span("inner"):
        raise error
    inner, outer = otelkit_capture.spans.span("inner"), otelkit_capture.spans.span("outer")
    for span in (inner, outer):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: bad row 7"
        assert span.attributes["sentry.event_id"] == "event-1"  # both spans lead to the one event
    assert [e.name for e in inner.events] == ["exception"]
    assert inner.events[0].attributes["exception.type"] == "ValueError"
    assert outer.events == ()  # recorded once, on the innermost span
    assert reported == [error]  # crossed two spans, sent once


def test_base_exceptions_are_not_errors(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    with pytest.raises(KeyboardInterrupt), otelkit.span("interrupted"):
        raise KeyboardInterrupt
    span = otelkit_capture.spans.span("interrupted")
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time is not None
    assert reported == []


def test_record_exception_option(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    with pytest.raises(RuntimeError), otelkit.span("quiet", _record_exception=False):
        raise RuntimeError("x")
    span = otelkit_capture.spans.span("quiet")
    assert span.events == ()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: x"
    assert reported == []


def test_sync_decorator_one_span_per_call(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    @otelkit.span("work", job="import")
    def work(n: int) -> int:
        assert trace.get_current_span().name == "work"  # type: ignore[attr-defined]
        if n < 0:
            raise ArithmeticError("negative")
        return n * 2

    assert work.__name__ == "work"
    assert work(2) == 4
    assert work(3) == 6
    with pytest.raises(ArithmeticError):
        work(-1)
    spans = otelkit_capture.spans.named("work")
    assert len(spans) == 3
    assert all(s.attributes["job"] == "import" for s in spans)
    assert [s.status.status_code for s in spans] == [StatusCode.UNSET, StatusCode.UNSET, StatusCode.ERROR]
    assert len(reported) == 1


def test_coroutine_decorator(otelkit_capture: CapturedTelemetry) -> None:
    @otelkit.span("fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        with otelkit.span("inside"):
            await asyncio.sleep(0)
        return x + 1

    async def main() -> list[int]:
        return list(await asyncio.gather(fetch(1), fetch(2)))

    assert asyncio.run(main()) == [2, 3]
    fetches = otelkit_capture.spans.named("fetch")
    insides = otelkit_capture.spans.named("inside")
    assert len(fetches) == 2 and len(insides) == 2
    # Each concurrent task's child hangs under its own coroutine's span.
    assert {_parent_id(s) for s in insides} == {s.context.span_id for s in fetches}


def test_async_context_manager(otelkit_capture: CapturedTelemetry) -> None:
    async def main() -> None:
        async with otelkit.span("async-block") as s:
            assert trace.get_current_span() is s

    asyncio.run(main())
    assert otelkit_capture.spans.names() == ["async-block"]


def test_coroutine_exception(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    @otelkit.span("fails")
    async def fails() -> None:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        asyncio.run(fails())
    assert otelkit_capture.spans.span("fails").status.status_code is StatusCode.ERROR
    assert [type(e) for e in reported] == [LookupError]


def test_generator_span_covers_whole_iteration(otelkit_capture: CapturedTelemetry) -> None:
    seen_inside: list[str] = []

    @otelkit.span("rows")
    def rows(n: int) -> Iterator[int]:
        for i in range(n):
            seen_inside.append(trace.get_current_span().name)  # type: ignore[attr-defined]
            with otelkit.span("row"):
                pass
            yield i
        return

    gen = rows(3)
    assert otelkit_capture.spans.names() == []  # nothing starts before iteration
    first = next(gen)
    # Between steps the consumer's context is current, not the generator's span.
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert first == 0
    assert list(gen) == [1, 2]
    assert seen_inside == ["rows", "rows", "rows"]
    outer = otelkit_capture.spans.span("rows")
    assert [_parent_id(s) for s in otelkit_capture.spans.named("row")] == [outer.context.span_id] * 3
    assert otelkit_capture.spans.names()[-1] == "rows"  # ended after every child


def test_generator_send_throw_close_and_return_value(otelkit_capture: CapturedTelemetry) -> None:
    @otelkit.span("echo")
    def echo() -> Iterator[Any]:
        total = 0
        try:
            while True:
                value = yield total
                total += value
        except KeyError:
            yield "caught"
        return

    gen = echo()
    assert next(gen) == 0
    assert gen.send(5) == 5
    assert gen.throw(KeyError("k")) == "caught"
    gen.close()
    span = otelkit_capture.spans.span("echo")
    assert span.status.status_code is StatusCode.UNSET  # closing early is not an error

    @otelkit.span("ret")
    def ret() -> Iterator[int]:
        yield 1
        return

    def consumer() -> Any:
        result = yield from ret()
        return result

    assert list(consumer()) == [1]


def test_generator_exception_recorded(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    @otelkit.span("broken")
    def broken() -> Iterator[int]:
        yield 1
        raise OSError("disk")

    with pytest.raises(OSError):
        list(broken())
    assert otelkit_capture.spans.span("broken").status.status_code is StatusCode.ERROR
    assert len(reported) == 1


def test_async_generator(otelkit_capture: CapturedTelemetry, reported: list[BaseException]) -> None:
    @otelkit.span("stream")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            with otelkit.span("item"):
                pass
            yield i

    @otelkit.span("bad-stream")
    async def bad_stream() -> AsyncIterator[int]:
        yield 1
        raise TimeoutError("slow")

    async def main() -> list[int]:
        out = [i async for i in stream(3)]
        with pytest.raises(TimeoutError):
            async for _ in bad_stream():
                assert trace.get_current_span() is trace.INVALID_SPAN
        return out

    assert asyncio.run(main()) == [0, 1, 2]
    outer = otelkit_capture.spans.span("stream")
    assert [_parent_id(s) for s in otelkit_capture.spans.named("item")] == [outer.context.span_id] * 3
    assert otelkit_capture.spans.span("bad-stream").status.status_code is StatusCode.ERROR
    assert [type(e) for e in reported] == [TimeoutError]


def test_async_generator_closed_early(otelkit_capture: CapturedTelemetry) -> None:
    @otelkit.span("endless")
    async def endless() -> AsyncIterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    async def main() -> None:
        agen = endless()
        assert await agen.__anext__() == 0
        await agen.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    span = otelkit_capture.spans.span("endless")
    assert span.end_time is not None and span.status.status_code is StatusCode.UNSET


def test_reserved_options(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("linked-from") as first:
        pass
    with otelkit.span("consume", _kind="consumer", _links=[first.get_span_context()], name="an attribute"):
        pass
    span = otelkit_capture.spans.span("consume")
    assert span.kind is SpanKind.CONSUMER
    assert [link.context.span_id for link in span.links] == [first.get_span_context().span_id]
    assert span.attributes["name"] == "an attribute"  # positional-only name: no clash

    with otelkit.span("outer"), otelkit.span("detached", _context=Context()):
        pass
    detached, outer = otelkit_capture.spans.span("detached"), otelkit_capture.spans.span("outer")
    assert detached.parent is None and detached.context.trace_id != outer.context.trace_id


def test_invalid_attributes_are_dropped_not_raised(
    otelkit_capture: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otelkit")
    with otelkit.span("odd", ok=1, bad=object(), none=None, mapping={"a": 1}, mixed=[1, "a"], fine=["a", "b"],
                      _kind=42, _unknown_option=1):
        pass
    span = otelkit_capture.spans.span("odd")
    assert dict(span.attributes or {}) == {"ok": 1, "fine": ("a", "b")}
    assert span.kind is SpanKind.INTERNAL
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "'bad'" in messages and "'mapping'" in messages and "_unknown_option" in messages


def test_works_without_init() -> None:
    """Before init() the helper is a cheap no-op span, never an error."""
    with otelkit.span("nothing") as s:
        assert not s.is_recording()

    @otelkit.span("nothing")
    def f() -> int:
        return 1

    assert f() == 1
