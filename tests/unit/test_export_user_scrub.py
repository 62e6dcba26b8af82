"""The caller's own processors (init(span_processors=..., log_processors=...)) only see scrubbed telemetry."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelkit

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def _run(scrub: bool) -> tuple[InMemorySpanExporter, InMemoryLogRecordExporter]:
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    otelkit.init(service_name="user-scrub", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                 instrument=(), system_metrics=False, scrub=scrub,
                 span_processors=[SimpleSpanProcessor(spans)], log_processors=[SimpleLogRecordProcessor(logs)])
    log = logging.getLogger("user_scrub_app")
    log.setLevel(logging.INFO)
    with otelkit.span("login", password="PWATTR", url="postgres://app:DSNPW@db.internal/app"):
        log.info("connecting to postgres://app:LOGPW@db.internal/app", extra={"api_token": "TOKENVAL"})
    return spans, logs


def test_user_span_and_log_processors_get_scrubbed_telemetry() -> None:
    spans, logs = _run(scrub=True)
    (span,) = spans.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert "PWATTR" not in repr(attributes) and "DSNPW" not in repr(attributes), attributes
    assert "db.internal" in str(attributes["url"])  # scrubbed, not removed
    (record,) = [r for r in logs.get_finished_logs() if "connecting" in str(r.log_record.body)]
    assert "LOGPW" not in str(record.log_record.body)
    assert "TOKENVAL" not in repr(dict(record.log_record.attributes or {}))


def test_scrub_off_leaves_user_processors_raw() -> None:
    spans, logs = _run(scrub=False)
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["password"] == "PWATTR"
    (record,) = [r for r in logs.get_finished_logs() if "connecting" in str(r.log_record.body)]
    assert "LOGPW" in str(record.log_record.body)


def test_processors_added_after_init_through_the_global_providers_are_scrubbed() -> None:
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    quiet = dict(traces_exporter="none", metrics_exporter="none", logs_exporter="none", instrument=(),
                 system_metrics=False)
    otelkit.init(service_name="added-scrub", **quiet)  # type: ignore[arg-type]
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    # What a library does when it extends the process's providers (Sentry, an APM agent, a test helper).
    trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))  # type: ignore[attr-defined]
    get_logger_provider().add_log_record_processor(SimpleLogRecordProcessor(logs))  # type: ignore[attr-defined]
    log = logging.getLogger("added_scrub_app")
    log.setLevel(logging.INFO)
    with otelkit.span("login", password="PWATTR"):
        log.info("connecting to postgres://app:LOGPW@db.internal/app")
    (span,) = spans.get_finished_spans()
    assert "PWATTR" not in repr(dict(span.attributes or {}))
    (record,) = [r for r in logs.get_finished_logs() if "connecting" in str(r.log_record.body)]
    assert "LOGPW" not in str(record.log_record.body) and "db.internal" in str(record.log_record.body)

    # Re-init with scrubbing off: the same added processors follow the new settings, once each.
    spans.clear()
    otelkit.init(service_name="added-scrub", scrub=False, **quiet)  # type: ignore[arg-type]
    with otelkit.span("login", password="PWATTR2"):
        pass
    (span,) = spans.get_finished_spans()
    assert (span.attributes or {})["password"] == "PWATTR2"
