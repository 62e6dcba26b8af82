"""otelkit.init() end to end: OTLP over gRPC and HTTP through the real rotel collector to a receiver.

Asserts what arrived: resource attributes, parent/child spans, metric points, log records carrying the
trace and span IDs of the span they were logged in.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest
from opentelemetry import metrics, trace

import otelkit
from otelkit.testing._receiver import RotelCollector

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_init_exports_traces_metrics_logs_through_rotel(otelkit_collector: RotelCollector, protocol: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = otelkit_collector.grpc_endpoint if protocol == "grpc" else otelkit_collector.http_endpoint
    run = uuid.uuid4().hex[:8]
    # configuration through the environment, as a deployment would do it
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"team=core,run.id={run}")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    settings = otelkit.init(service_name=f"init-it-{run}", service_version="1.2.3", environment="test",
                            instrument=[], system_metrics=False)
    assert settings.traces.exporters == ("otlp",)
    assert settings.traces.protocol == protocol

    tracer = trace.get_tracer("it")
    counter = metrics.get_meter("it").create_counter("it.jobs", unit="{job}")
    log = logging.getLogger(f"it.{run}")
    log.setLevel(logging.INFO)
    with tracer.start_as_current_span("parent") as parent:
        with tracer.start_as_current_span("child") as child:
            log.warning("inside child %s", run)
            counter.add(3, {"queue": "emails"})
    parent_ctx, child_ctx = parent.get_span_context(), child.get_span_context()
    report = otelkit.shutdown(timeout=5)
    assert report is not None

    receiver = otelkit_collector.receiver
    spans = {s.name: s for s in receiver.wait_for_spans(2) if s.resource.get("run.id") == run}
    assert set(spans) == {"parent", "child"}
    assert spans["child"].parent_span_id == spans["parent"].span_id == format(parent_ctx.span_id, "016x")
    assert spans["child"].trace_id == format(child_ctx.trace_id, "032x")
    assert spans["parent"].parent_span_id is None

    resource = spans["parent"].resource
    assert resource["service.name"] == f"init-it-{run}"
    assert resource["service.version"] == "1.2.3"
    assert resource["deployment.environment.name"] == "test"
    assert resource["team"] == "core"
    assert resource["telemetry.sdk.language"] == "python"
    assert resource["process.pid"] == os.getpid()
    for key in ("service.instance.id", "host.name", "os.type", "process.runtime.name"):
        assert key in resource, key

    receiver.wait_for(lambda: [p for p in receiver.metrics("it.jobs") if p.resource.get("run.id") == run],
                      timeout=30)
    points = [p for p in receiver.metrics("it.jobs") if p.resource.get("run.id") == run]
    assert points[-1].value == 3
    assert points[-1].attributes == {"queue": "emails"}

    receiver.wait_for(lambda: [r for r in receiver.logs() if f"inside child {run}" in str(r.body)], timeout=30)
    (record,) = [r for r in receiver.logs() if f"inside child {run}" in str(r.body)]
    assert record.trace_id == format(child_ctx.trace_id, "032x")
    assert record.span_id == format(child_ctx.span_id, "016x")
    assert record.severity_text in ("WARN", "WARNING")
    assert record.resource["service.name"] == f"init-it-{run}"
