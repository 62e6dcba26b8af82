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
