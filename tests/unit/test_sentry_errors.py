"""otelkit._errors.report_exception: recorded once, sent once, linked both ways (no network).

The Sentry side is replaced by ``RecordingSender``, a fake standing in for
``otelkit._sentry._send`` (the real one is exercised against a local Sentry
endpoint in tests/integration/test_sentry_*.py).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

from otelkit import _errors
from otelkit._errors import SENTRY_EVENT_ID_ATTRIBUTE, error_context, get_report, report_exception


@dataclass
class RecordingSender:
    """Fake Sentry sender: remembers each call, returns a made-up event ID."""

    calls: list[tuple[BaseException, SpanContext | None, dict[str, object]]] = field(default_factory=list)
    fail: bool = False

    def __call__(self, exc: BaseException, span_context: SpanContext | None,
                 context: Mapping[str, object]) -> str | None:
        if self.fail:
            raise RuntimeError("sender broke")
        self.calls.append((exc, span_context, dict(context)))
        return f"event{len(self.calls)}"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    yield tp
    tp.shutdown()


@pytest.fixture
def sender() -> Iterator[RecordingSender]:
    fake = RecordingSender()
    _errors.set_sender(fake)
    yield fake
    _errors.set_sender(None)


def _finished(exporter: InMemorySpanExporter, name: str):  # type: ignore[no-untyped-def]
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_without_sentry_records_once_and_marks_every_span_failed(provider: TracerProvider,
                                                                  exporter: InMemorySpanExporter) -> None:
    tracer = provider.get_tracer("app")
    exc = ValueError("boom")
    with tracer.start_as_current_span("outer", record_exception=False, set_status_on_exception=False) as outer:
        with tracer.start_as_current_span("inner", record_exception=False, set_status_on_exception=False) as inner:
            assert report_exception(exc, inner) is None
        assert report_exception(exc, outer) is None

    inner_span, outer_span = _finished(exporter, "inner"), _finished(exporter, "outer")
    assert [e.name for e in inner_span.events] == ["exception"]
    assert inner_span.events[0].attributes["exception.escaped"] == "True"
    assert outer_span.events == ()
    assert inner_span.status.status_code is StatusCode.ERROR
    assert outer_span.status.status_code is StatusCode.ERROR
    assert outer_span.status.description == "ValueError: boom"
    assert SENTRY_EVENT_ID_ATTRIBUTE not in inner_span.attributes


def test_sent_once_linked_to_innermost_span_and_event_id_on_each_span(
        provider: TracerProvider, exporter: InMemorySpanExporter, sender: RecordingSender) -> None:
    tracer = provider.get_tracer("app")
    exc = ConnectionError("db down")
    with tracer.start_as_current_span("outer") as outer:
        with tracer.start_as_current_span("inner") as inner:
            assert report_exception(exc, inner) == "event1"
            inner_context = inner.get_span_context()
        assert report_exception(exc, outer) == "event1"

    assert len(sender.calls) == 1
    assert sender.calls[0][1] == inner_context
    assert _finished(exporter, "inner").attributes[SENTRY_EVENT_ID_ATTRIBUTE] == "event1"
    assert _finished(exporter, "outer").attributes[SENTRY_EVENT_ID_ATTRIBUTE] == "event1"
    report = get_report(exc)
    assert report is not None and report.sent and report.event_id == "event1"


def test_a_different_exception_is_a_different_event(provider: TracerProvider, sender: RecordingSender) -> None:
    tracer = provider.get_tracer("app")
    with tracer.start_as_current_span("s") as span:
        report_exception(ValueError("a"), span)
        report_exception(ValueError("a"), span)
    assert len(sender.calls) == 2


def test_job_context_merges_entered_context_and_argument(provider: TracerProvider, sender: RecordingSender) -> None:
    tracer = provider.get_tracer("app")
    with error_context(destination="orders", attempt=1, message_id="m-1"):
        with error_context(attempt=2), tracer.start_as_current_span("job") as span:
            report_exception(RuntimeError("x"), span, context={"correlation_id": "c-1"})
    assert sender.calls[0][2] == {"destination": "orders", "attempt": 2, "message_id": "m-1",
                                  "correlation_id": "c-1"}
    assert _errors.current_error_context() == {}


def test_exception_recorded_by_a_library_client_span_is_not_sent_until_it_reaches_otelkit(
        provider: TracerProvider, exporter: InMemorySpanExporter, sender: RecordingSender) -> None:
    _errors.install_record_hook()
    app = provider.get_tracer("app")
    library = provider.get_tracer("opentelemetry.instrumentation.httpx")
    exc = TimeoutError("read timed out")
    with app.start_as_current_span("sync", record_exception=False) as outer:
        with library.start_as_current_span("GET", kind=SpanKind.CLIENT, record_exception=False) as http:
            http.record_exception(exc)  # what the instrumentation does before re-raising
            http_context = http.get_span_context()
        assert sender.calls == []  # a client span's error may still be handled by the app
        report_exception(exc, outer)

    assert len(sender.calls) == 1
    assert [e.name for e in _finished(exporter, "GET").events] == ["exception"]
    assert _finished(exporter, "sync").events == ()  # not recorded a second time
    report = get_report(exc)
    assert report is not None and report.origin == http_context


def test_exception_recorded_by_a_library_server_span_is_sent_from_the_hook(
        provider: TracerProvider, exporter: InMemorySpanExporter, sender: RecordingSender) -> None:
    """A web framework turns the exception into a 500: nothing but the span ever sees it."""
    _errors.install_record_hook()
    library = provider.get_tracer("opentelemetry.instrumentation.wsgi")
    exc = KeyError("user")
    with library.start_as_current_span("GET /users", kind=SpanKind.SERVER, record_exception=False) as server:
        server.record_exception(exc)
        context = server.get_span_context()
    assert len(sender.calls) == 1 and sender.calls[0][1] == context
    assert _finished(exporter, "GET /users").attributes[SENTRY_EVENT_ID_ATTRIBUTE] == "event1"


def test_otelkit_consumer_span_reports_through_report_exception_not_the_hook(
        provider: TracerProvider, sender: RecordingSender) -> None:
    _errors.install_record_hook()
    tracer = provider.get_tracer("otelkit.pipeline")
    exc = ValueError("bad message")
    with error_context(destination="orders"):
        with tracer.start_as_current_span("process orders", kind=SpanKind.CONSUMER) as span:
            span.record_exception(exc)
            assert sender.calls == []
            report_exception(exc, span, context={"message_id": "m-9"})
    assert sender.calls[0][2] == {"destination": "orders", "message_id": "m-9"}


def test_report_exception_never_raises(provider: TracerProvider, sender: RecordingSender) -> None:
    sender.fail = True
    with provider.get_tracer("app").start_as_current_span("s") as span:
        assert report_exception(ValueError("x"), span) is None


def test_reports_on_the_current_span_by_default(provider: TracerProvider, exporter: InMemorySpanExporter,
                                                sender: RecordingSender) -> None:
    with provider.get_tracer("app").start_as_current_span("current"):
        report_exception(ValueError("x"))
    assert _finished(exporter, "current").attributes[SENTRY_EVENT_ID_ATTRIBUTE] == "event1"


def test_pipeline_receive_scope_supplies_the_job_context(sender: RecordingSender) -> None:
    """An inner report inside ``receive`` (the usual case: otelkit.span reports first) carries the job."""
    from otelkit import pipeline

    def job() -> None:
        with pipeline.receive("invoices", {}, system="redis", message_id="m-42", attempt=2):
            report_exception(RuntimeError("render failed"))

    # In a copy of the context: without init() the scope leaves its correlation ID attached.
    contextvars.copy_context().run(job)
    context = sender.calls[0][2]
    assert context["destination"] == "invoices"
    assert context["message_id"] == "m-42"
    assert context["attempt"] == 2
    assert context["correlation_id"]


def test_already_recorded_tells_span_helpers_an_inner_span_has_it(provider: TracerProvider) -> None:
    _errors.install_record_hook()
    exc = ValueError("x")
    assert not _errors.already_recorded(exc)
    with provider.get_tracer("lib").start_as_current_span("inner", record_exception=False) as inner:
        inner.record_exception(exc)
    assert _errors.already_recorded(exc)


def test_frozen_exception_classes_are_still_sent_once(provider: TracerProvider, sender: RecordingSender) -> None:
    @dataclasses.dataclass(frozen=True)
    class FrozenError(Exception):
        code: int

    exc = FrozenError(7)
    with provider.get_tracer("app").start_as_current_span("s") as span:
        report_exception(exc, span)
        report_exception(exc, span)
    assert len(sender.calls) == 1
