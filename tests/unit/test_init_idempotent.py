"""init(): idempotent, re-configurable through the proxies, no "Overriding" warning, disabled, shutdown, reset."""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from typing import Any

import pytest
from opentelemetry import _logs as logs_api
from opentelemetry import metrics, trace
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version

import otelkit
from otelkit import _init, _proxy
from otelkit._compat import VERIFIED_SDK
from otelkit._config import ConfigWarning
from otelkit._proxy import CurrentSpan

# Nothing leaves the process in these tests: exporters "none", only the in-memory processors we pass.
QUIET: dict[str, Any] = {
    "traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none",
    "instrument": [], "system_metrics": False, "service_name": "unit-init",
}


pytestmark = pytest.mark.usefixtures("fresh_otelkit")


class RecordingLogProcessor(LogRecordProcessor):
    def __init__(self) -> None:
        self.records: list[Any] = []
        self.shut_down = False

    def on_emit(self, log_record: Any) -> None:
        self.records.append(log_record)

    def shutdown(self) -> None:
        self.shut_down = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class TrackingProcessor(SimpleSpanProcessor):
    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.shut_down = threading.Event()

    def shutdown(self) -> None:
        self.shut_down.set()
        super().shutdown()


def sdk_tracer_provider() -> TracerProvider:
    provider = _proxy.tracer_provider().delegate
    assert isinstance(provider, TracerProvider)
    return provider


def test_init_returns_settings_and_globals_are_the_proxies() -> None:
    settings = otelkit.init(**QUIET)
    assert otelkit.get_settings() is settings
    assert trace.get_tracer_provider() is _proxy.tracer_provider()
    assert metrics.get_meter_provider() is _proxy.meter_provider()
    assert logs_api.get_logger_provider() is _proxy.logger_provider()


def test_same_settings_twice_changes_nothing_and_exports_once() -> None:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    first = otelkit.init(span_processors=[processor], **QUIET)
    provider = sdk_tracer_provider()
    processors_before = list(provider._active_span_processor._span_processors)
    second = otelkit.init(span_processors=[processor], **QUIET)
    assert second is first
    assert sdk_tracer_provider() is provider
    assert list(provider._active_span_processor._span_processors) == processors_before
    with trace.get_tracer("t").start_as_current_span("once"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["once"]


def test_different_settings_swap_providers_and_old_tracers_follow() -> None:
    old_exporter, new_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    old_processor = TrackingProcessor(old_exporter)
    otelkit.init(span_processors=[old_processor], **QUIET)
    tracer = trace.get_tracer("handed-out-before")
    old_provider = sdk_tracer_provider()
    with tracer.start_as_current_span("before"):
        pass
    otelkit.init(span_processors=[SimpleSpanProcessor(new_exporter)], **{**QUIET, "service_name": "renamed"})
    assert sdk_tracer_provider() is not old_provider
    with tracer.start_as_current_span("after") as span:
        assert span.resource.attributes["service.name"] == "renamed"  # type: ignore[attr-defined]
    assert [s.name for s in old_exporter.get_finished_spans()] == ["before"]
    assert [s.name for s in new_exporter.get_finished_spans()] == ["after"]
    # the replaced provider is shut down (in the background, bounded)
    assert old_processor.shut_down.wait(5)


def test_never_an_overriding_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        otelkit.init(**QUIET)
        otelkit.init(**{**QUIET, "sampler": "always_off"})
        otelkit.init(**QUIET)
    texts = [r.getMessage() for r in caplog.records] + [str(w.message) for w in caught]
    assert not [t for t in texts if "Overriding" in t or "not allowed" in t]


def test_meter_instruments_created_before_a_swap_record_into_the_new_provider() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    otelkit.init(metric_readers=[first], **QUIET)
    counter = metrics.get_meter("m").create_counter("jobs.done")
    histogram = metrics.get_meter("m").create_histogram("job.duration", unit="s")
    counter.add(2)
    otelkit.init(metric_readers=[second], **{**QUIET, "service_name": "other"})
    counter.add(3)
    histogram.record(0.5)

    def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
        data = reader.get_metrics_data()
        return [p for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics
                for m in sm.metrics if m.name == name for p in m.data.data_points]

    assert [p.value for p in points(second, "jobs.done")] == [3]
    assert [p.count for p in points(second, "job.duration")] == [1]


def test_observable_instrument_callbacks_follow_the_swap() -> None:
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    otelkit.init(metric_readers=[first], **QUIET)
    calls: list[int] = []

    def observe(_: Any) -> list[metrics.Observation]:
        calls.append(1)
        return [metrics.Observation(7)]

    metrics.get_meter("m").create_observable_gauge("queue.depth", callbacks=[observe])
    otelkit.init(metric_readers=[second], **{**QUIET, "service_name": "other"})
    data = second.get_metrics_data()
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics] if data else []
    assert "queue.depth" in names


def test_loggers_handed_out_before_a_swap_follow_it() -> None:
    first, second = RecordingLogProcessor(), RecordingLogProcessor()
    otelkit.init(log_processors=[first], **QUIET)
    otel_logger = logs_api.get_logger_provider().get_logger("app")
    otel_logger.emit(body="one")
    otelkit.init(log_processors=[second], **{**QUIET, "service_name": "other"})
    otel_logger.emit(body="two")
    assert [r.log_record.body for r in first.records] == ["one"]
    assert [r.log_record.body for r in second.records] == ["two"]


def test_tracer_proxy_calls_the_sdk_method_directly() -> None:
    otelkit.init(**QUIET)
    tracer = trace.get_tracer("hot")
    sdk_tracer = sdk_tracer_provider().get_tracer("hot")
    # start_span is the lean path over this SDK tracer (test_span_path.py), else the SDK's own bound method:
    # no wrapper frame on the hot path either way
    if sdk_version.startswith(VERIFIED_SDK):
        assert "._make.<locals>.start_span" in tracer.start_span.__qualname__
    else:
        assert tracer.start_span.__func__ is type(sdk_tracer).start_span  # type: ignore[attr-defined]
    # start_as_current_span is the SDK's semantics in one class over that same start_span (test_span_path.py)
    current = tracer.start_as_current_span
    assert isinstance(current, functools.partial) and current.func is CurrentSpan
    assert current.args[0] == tracer.start_span


def test_concurrent_init_installs_one_processor_set() -> None:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(30)
            otelkit.init(span_processors=[processor], **QUIET)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and not any(t.is_alive() for t in threads)
    with trace.get_tracer("t").start_as_current_span("x"):
        pass
    assert len(exporter.get_finished_spans()) == 1


def test_otel_sdk_disabled_means_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter = InMemorySpanExporter()
    settings = otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **QUIET)
    assert settings.disabled
    with trace.get_tracer("t").start_as_current_span("nothing") as span:
        assert not span.is_recording()
    assert exporter.get_finished_spans() == ()
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **QUIET)  # re-enabling works
    with trace.get_tracer("t").start_as_current_span("something"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["something"]


def test_shutdown_flushes_never_raises_and_turns_telemetry_off() -> None:
    class Exploding(SimpleSpanProcessor):
        def shutdown(self) -> None:
            raise RuntimeError("boom")

    exporter = InMemorySpanExporter()
    otelkit.init(span_processors=[Exploding(exporter)], **QUIET)
    with trace.get_tracer("t").start_as_current_span("kept"):
        pass
    report = otelkit.shutdown(timeout=1.0)
    assert report is not None
    assert otelkit.get_settings() is None
    with trace.get_tracer("t").start_as_current_span("after-shutdown") as span:
        assert not span.is_recording()
    assert [s.name for s in exporter.get_finished_spans()] == ["kept"]
    assert otelkit.shutdown() is not None  # a second call is fine too


def test_stderr_line_says_where_telemetry_goes(capsys: pytest.CaptureFixture[str]) -> None:
    otelkit.init(**QUIET)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("otelkit:")]
    assert len(lines) == 1
    assert "unit-init" in lines[0]
    otelkit.init(**QUIET)  # idempotent: nothing printed again
    assert "otelkit:" not in capsys.readouterr().err


def test_sampler_and_limits_are_applied() -> None:
    exporter = InMemorySpanExporter()
    otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **{**QUIET, "sampler": "always_off"})
    with trace.get_tracer("t").start_as_current_span("dropped") as span:
        assert not span.is_recording()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "2")
        exporter = InMemorySpanExporter()  # the first one is shut down with the replaced provider
        otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **QUIET)
    with trace.get_tracer("t").start_as_current_span("limited", attributes={"a": 1, "b": 2, "c": 3}):
        pass
    (span_data,) = exporter.get_finished_spans()
    assert len(span_data.attributes or {}) == 2


def test_derived_service_name_warns() -> None:
    _init._warned_derived_name = False
    with pytest.warns(ConfigWarning, match="no service name configured; using"):
        otelkit.init(**{k: v for k, v in QUIET.items() if k != "service_name"})


def test_processor_added_through_the_global_provider_survives_reinit() -> None:
    otelkit.init(**QUIET)
    exporter = InMemorySpanExporter()
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    otelkit.init(**{**QUIET, "service_name": "again"})
    with trace.get_tracer("t").start_as_current_span("seen"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["seen"]


def test_reset_lets_the_next_init_start_clean() -> None:
    exporter = InMemorySpanExporter()
    otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **QUIET)
    _init.reset()
    assert otelkit.get_settings() is None
    assert not trace.get_tracer("t").start_span("x").is_recording()
    settings = otelkit.init(**QUIET)
    assert otelkit.get_settings() is settings


def test_a_failing_part_never_reaches_the_application(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from otelkit import _export, _instrument

    def broken_instrumentation(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("instrumentation exploded")

    monkeypatch.setattr(_instrument, "instrument_all", broken_instrumentation)
    exporter = InMemorySpanExporter()
    otelkit.init(span_processors=[SimpleSpanProcessor(exporter)], **QUIET)  # does not raise
    assert "setting up instrumentation failed" in caplog.text
    with trace.get_tracer("t").start_as_current_span("still-traced"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["still-traced"]

    def broken_exporters(settings: Any) -> Any:
        raise RuntimeError("exporter factory exploded")

    monkeypatch.setattr(_export, "build_span_processors", broken_exporters)
    settings = otelkit.init(**{**QUIET, "service_name": "broken"})  # does not raise either
    assert settings.service_name == "broken"
    assert "otelkit.init() failed" in caplog.text
    assert not trace.get_tracer("t").start_span("off").is_recording()


def test_strict_false_init_warns_and_runs_with_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with pytest.raises(otelkit.ConfigError):
        otelkit.init(**QUIET)
    with pytest.warns(ConfigWarning, match="OTEL_TRACES_SAMPLER='sometimes' is not valid"):
        settings = otelkit.init(strict=False, **QUIET)
    assert settings.sampler == "parentbased_always_on"
    assert trace.get_tracer("t").start_span("on").is_recording()


def test_debug_logs_the_resolved_settings_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="otelkit")
    otelkit.init(debug=True, headers={"authorization": "Bearer hunter2"}, **QUIET)
    assert "configuring with Settings(" in caplog.text
    assert "hunter2" not in caplog.text
    otelkit.init(debug=False, **QUIET)
    assert _init._debug_handler is None


def test_shutdown_works_when_no_thread_can_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.12+ refuses new threads during interpreter shutdown, where the atexit hook runs."""
    exporter = InMemorySpanExporter()
    processor = TrackingProcessor(exporter)
    otelkit.init(span_processors=[processor], **QUIET)
    with trace.get_tracer("t").start_as_current_span("at-exit"):
        pass

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    otelkit.shutdown(timeout=1.0)  # must not raise
    assert processor.shut_down.is_set()
    assert [s.name for s in exporter.get_finished_spans()] == ["at-exit"]


def test_disabled_false_argument_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # the SDK providers read this variable themselves
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    otelkit.init(disabled=False, span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader], **QUIET)
    with trace.get_tracer("t").start_as_current_span("recorded"):
        pass
    metrics.get_meter("m").create_counter("c.recorded").add(1)
    assert [s.name for s in exporter.get_finished_spans()] == ["recorded"]
    data = reader.get_metrics_data()
    assert data is not None and any(m.name == "c.recorded" for rm in data.resource_metrics
                                    for sm in rm.scope_metrics for m in sm.metrics)


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="servce_name"):
        otelkit.init(servce_name="typo")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="environ"):
        otelkit.init(environ={})  # type: ignore[call-arg]
    assert otelkit.get_settings() is None
    settings = otelkit.init(traces_endpoint="http://127.0.0.1:1/v1/traces", **QUIET)  # a table-only option
    assert settings.traces.endpoint == "http://127.0.0.1:1/v1/traces"
