"""Stdlib logs through otelkit's OTLP pipeline and the real rotel collector, over gRPC and HTTP."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

import otelkit
from otelkit import _init
from otelkit._correlation import correlate
from otelkit.testing._receiver import RotelCollector


@pytest.fixture
def reset_after() -> Iterator[None]:
    yield
    _init.reset()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_log_records_arrive_with_trace_context_and_without_internal_records(
    otelkit_collector: RotelCollector, protocol: str, reset_after: None
) -> None:
    endpoint = otelkit_collector.grpc_endpoint if protocol == "grpc" else otelkit_collector.http_endpoint
    otelkit.init(service_name="logs-it", endpoint=endpoint, protocol=protocol, metrics_exporter="none",
                 instrument=(), system_metrics=False)
    json_out = io.StringIO()
    json_handler = logging.StreamHandler(json_out)
    json_handler.setFormatter(otelkit.JsonFormatter())
    app = logging.getLogger("app.worker")
    app.addHandler(json_handler)
    try:
        with correlate("order-9"), otelkit.span("process order") as span:
            app.warning("charging %s", "card", extra={"amount": 12.5})
            for internal in ("otelkit", "opentelemetry.exporter.otlp", "grpc._channel", "urllib3.connectionpool"):
                logging.getLogger(internal).warning("internal record")
        app.warning("sentinel")
    finally:
        app.removeHandler(json_handler)

    receiver = otelkit_collector.receiver
    received = receiver.wait_for(lambda: receiver.logs(body="sentinel") and receiver.logs(body="charging card"),
                                 timeout=30)
    assert received
    (record,) = receiver.logs(body="charging card")
    context = span.get_span_context()
    assert record.trace_id == format(context.trace_id, "032x")
    assert record.span_id == format(context.span_id, "016x")
    assert record.severity_text == "WARN"
    assert record.attributes["amount"] == 12.5
    assert record.attributes["otelkit.correlation_id"] == "order-9"
    assert record.resource["service.name"] == "logs-it"
    assert record.scope == "app.worker"
    # Records of internal loggers were logged before the sentinel, which has arrived: none was exported.
    assert receiver.logs(body="internal record") == []
    (sentinel,) = receiver.logs(body="sentinel")
    assert sentinel.trace_id is None and sentinel.span_id is None

    # The stdout JSON line of the same record carries the same ids.
    first = json.loads(json_out.getvalue().splitlines()[0])
    assert (first["trace_id"], first["span_id"], first["correlation_id"]) == (record.trace_id, record.span_id,
                                                                              "order-9")
