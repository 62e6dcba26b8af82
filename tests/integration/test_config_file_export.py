"""otelkit.init() configured by OTEL_CONFIG_FILE alone, exporting to a real OTLP receiver.

Traces over OTLP/HTTP (gzip), metrics over gRPC, logs over OTLP/HTTP, each endpoint from the file (two of
them through ``${VAR}`` substitution), while the environment points the usual variables at a dead port:
the file must be what decides (the spec ignores the environment when a file is used).
"""

from __future__ import annotations

import importlib.util
import logging
import uuid
from pathlib import Path

import pytest
from opentelemetry import metrics, trace

import otelkit
from otelkit.testing._receiver import OtlpReceiver

pytestmark = [
    pytest.mark.usefixtures("fresh_otelkit"),
    pytest.mark.skipif(importlib.util.find_spec("opentelemetry.configuration") is None,
                       reason="opentelemetry-configuration needs SDK 1.44+"),
]


def test_init_from_a_config_file_exports_all_signals(otelkit_otlp_receiver: OtlpReceiver, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = otelkit_otlp_receiver
    run = uuid.uuid4().hex[:8]
    path = tmp_path / "otel.yaml"
    path.write_text(f"""\
file_format: "1.0"
resource:
  attributes:
    - name: service.name
      value: cfgfile-{run}
    - name: run.id
      value: "{run}"
tracer_provider:
  processors:
    - batch:
        schedule_delay: 100
        exporter:
          otlp_http:
            endpoint: ${{CFG_IT_HTTP}}/v1/traces
            compression: gzip
  sampler:
    always_on:
meter_provider:
  readers:
    - periodic:
        interval: 200
        exporter:
          otlp_grpc:
            endpoint: {receiver.grpc_endpoint}
logger_provider:
  processors:
    - batch:
        schedule_delay: 100
        exporter:
          otlp_http:
            endpoint: ${{CFG_IT_HTTP}}/v1/logs
propagator:
  composite:
    - tracecontext:
instrumentation/development:
  python:
    system_metrics:
      enabled: false
""")
    monkeypatch.setenv("CFG_IT_HTTP", receiver.http_endpoint)
    monkeypatch.setenv("OTEL_CONFIG_FILE", str(path))
    # Ignored with a file: were they read, nothing would arrive (port 9 is the discard port, nothing listens).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")

    settings = otelkit.init(instrument=[])
    assert settings.config_file == str(path)
    assert settings.sources["traces.endpoint"].startswith(f"OTEL_CONFIG_FILE {path}:")

    tracer = trace.get_tracer("cfg-it")
    counter = metrics.get_meter("cfg-it").create_counter("cfgfile.jobs")
    log = logging.getLogger(f"cfg-it.{run}")
    log.setLevel(logging.INFO)
    with tracer.start_as_current_span("from-file") as span:
        log.warning("logged %s", run)
        counter.add(2, {"run": run})
    trace_id = format(span.get_span_context().trace_id, "032x")
    otelkit.shutdown(timeout=10)

    spans = [s for s in receiver.wait_for_spans(1, timeout=60, name="from-file") if s.resource.get("run.id") == run]
    assert len(spans) == 1
    assert spans[0].trace_id == trace_id
    assert spans[0].resource["service.name"] == f"cfgfile-{run}"
    receiver.wait_for(lambda: [r for r in receiver.logs() if f"logged {run}" in str(r.body)], timeout=60)
    (record,) = [r for r in receiver.logs() if f"logged {run}" in str(r.body)]
    assert record.trace_id == trace_id
    receiver.wait_for(lambda: [p for p in receiver.metrics("cfgfile.jobs") if p.attributes.get("run") == run],
                      timeout=60)
    points = [p for p in receiver.metrics("cfgfile.jobs") if p.attributes.get("run") == run]
    assert points[-1].value == 2
    assert points[-1].resource["service.name"] == f"cfgfile-{run}"
    # each signal came over the transport the file named
    protocols = {(a.protocol, a.signal) for a in receiver.attempts}
    assert {("http", "traces"), ("grpc", "metrics"), ("http", "logs")} <= protocols, protocols
