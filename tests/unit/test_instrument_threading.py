"""Trace context and the correlation ID follow work into threads, thread pools and run_in_executor."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelkit
from otelkit import pipeline

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def _init(exporter: InMemorySpanExporter, **kwargs: object) -> None:
    otelkit.init(service_name="threads", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                 system_metrics=False, span_processors=[SimpleSpanProcessor(exporter)], **kwargs)  # type: ignore[arg-type]


def _child() -> None:
    with otelkit.span("child"):
        logging.getLogger("threads_app").warning("in a thread")


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def _assert_children_of_parent(exporter: InMemorySpanExporter, count: int) -> None:
    found = _by_name(exporter)
    (parent,) = found["parent"]
    children = found["child"]
    assert len(children) == count
    for child in children:
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
        assert child.context.trace_id == parent.context.trace_id
        assert (child.attributes or {}).get("otelkit.correlation_id") == "order-42"


def test_thread_pool_thread_and_timer_run_in_the_submitting_span(spans: InMemorySpanExporter,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    _init(spans)
    assert "threading: enabled" in [str(s)[:18] for s in otelkit.integration_status()]
    caplog.set_level(logging.WARNING, logger="threads_app")
    with pipeline.correlate("order-42"), otelkit.span("parent"):
        with ThreadPoolExecutor(max_workers=3) as pool:
            for future in [pool.submit(_child) for _ in range(3)]:
                future.result(timeout=10)
        thread = threading.Thread(target=_child)
        thread.start()
        thread.join(timeout=10)
        timer = threading.Timer(0, _child)
        timer.start()
        timer.join(timeout=10)
    _assert_children_of_parent(spans, 5)
    records = [r for r in caplog.records if r.name == "threads_app"]
    assert len(records) == 5 and {r.__dict__["correlation_id"] for r in records} == {"order-42"}


def test_run_in_executor_keeps_the_trace(spans: InMemorySpanExporter) -> None:
    _init(spans)

    async def main() -> None:
        with pipeline.correlate("order-42"), otelkit.span("parent"):
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.run_in_executor(None, _child), timeout=30)

    asyncio.run(main())
    _assert_children_of_parent(spans, 1)


@pytest.mark.parametrize("how", ["disabled", "not_chosen"])
def test_threads_start_fresh_traces_when_turned_off(spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch,
                                                    how: str) -> None:
    if how == "disabled":
        monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "threading")
        _init(spans)
    else:
        _init(spans, instrument=["redis"])
    (status,) = [s for s in otelkit.integration_status() if s.name == "threading"]
    assert status.state == "disabled"
    with otelkit.span("parent"), ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(_child).result(timeout=10)
    (child,) = _by_name(spans)["child"]
    assert child.parent is None


def _otelkit_layers(owner: type, attribute: str) -> int:
    func, layers = vars(owner)[attribute], 0
    while func is not None:
        layers += bool(getattr(func, "_self_otelkit", False))
        func = getattr(func, "__wrapped__", None)
    return layers


def test_re_init_does_not_stack_wrappers(spans: InMemorySpanExporter) -> None:
    _init(spans)
    _init(spans, resource_attributes={"again": "yes"})
    for owner, attribute in ((ThreadPoolExecutor, "submit"), (threading.Thread, "start"),
                             (threading.Thread, "_bootstrap_inner")):
        assert _otelkit_layers(owner, attribute) == 1, attribute
    after = InMemorySpanExporter()  # re-init shut the first one down with its provider
    _init(after, instrument=())
    with otelkit.span("parent"), ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(_child).result(timeout=10)
    (child,) = _by_name(after)["child"]
    assert child.parent is None  # turned off by the re-init (removed, or inert under another library's layer)


class _Worker(threading.Thread):
    """A Thread subclass with its own run(): upstream's Thread.run wrapper never sees it."""

    def run(self) -> None:
        _child()


def test_thread_subclass_overriding_run(spans: InMemorySpanExporter) -> None:
    _init(spans)
    with pipeline.correlate("order-42"), otelkit.span("parent"):
        worker = _Worker()
        worker.start()
        worker.join(timeout=10)
    _assert_children_of_parent(spans, 1)
    assert "_otelkit_context" not in vars(worker)  # the finished Thread object does not keep the span


def test_with_sentry_threading_integration_active(spans: InMemorySpanExporter) -> None:
    """Sentry's default ThreadingIntegration replaces each thread's run(); the context still arrives."""
    import sentry_sdk

    # A DSN nobody listens on: no event is sent in this test, the client only has to be active.
    _init(spans, sentry_dsn="http://public@127.0.0.1:9/1")
    try:
        assert sentry_sdk.get_client().is_active()
        with pipeline.correlate("order-42"), otelkit.span("parent"):
            thread = threading.Thread(target=_child)
            thread.start()
            thread.join(timeout=10)
            worker = _Worker()
            worker.start()
            worker.join(timeout=10)
            with ThreadPoolExecutor(max_workers=1) as pool:
                pool.submit(_child).result(timeout=10)
        _assert_children_of_parent(spans, 3)
    finally:
        sentry_sdk.get_client().close(timeout=0)
        # No DSN: an inactive client for the tests that follow. No auto-enabled integrations either: Sentry's
        # Redis integration would patch over otelkit's wrappers for the rest of the process.
        sentry_sdk.init(auto_enabling_integrations=False)
