"""The test harness itself: plain SDK exporters -> real rotel -> OtlpReceiver, and the receiver's faults."""

from __future__ import annotations

import logging

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otelkit.testing._receiver import BlackholeServer, OtlpReceiver, RotelCollector, refused_endpoint


def _span_exporter(protocol: str, endpoint: str) -> GrpcSpanExporter | HttpSpanExporter:
    if protocol == "grpc":
        return GrpcSpanExporter(endpoint=endpoint, insecure=True, timeout=5)
    return HttpSpanExporter(endpoint=endpoint + "/v1/traces", timeout=5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_spans_travel_sdk_to_rotel_to_receiver(otelkit_collector: RotelCollector, protocol: str) -> None:
    endpoint = otelkit_collector.grpc_endpoint if protocol == "grpc" else otelkit_collector.http_endpoint
    provider = TracerProvider(resource=Resource.create({"service.name": f"harness-{protocol}"}))
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter(protocol, endpoint)))
    tracer = provider.get_tracer("harness")
    with tracer.start_as_current_span("parent", attributes={"n": 1}) as parent:
        with tracer.start_as_current_span("child") as child:
            child.add_event("tick", {"k": "v"})
    provider.shutdown()

    spans = {s.name: s for s in otelkit_collector.receiver.wait_for_spans(2)}
    assert set(spans) == {"parent", "child"}
    assert spans["child"].parent_span_id == spans["parent"].span_id
    assert spans["child"].trace_id == spans["parent"].trace_id == format(parent.get_span_context().trace_id, "032x")
    assert spans["parent"].parent_span_id is None
    assert spans["parent"].attributes == {"n": 1}
    assert spans["parent"].resource["service.name"] == f"harness-{protocol}"
    assert spans["child"].events[0].name == "tick" and spans["child"].events[0].attributes == {"k": "v"}
    assert spans["child"]["kind"] == "INTERNAL"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_logs_and_metrics_travel_through_rotel(otelkit_collector: RotelCollector, protocol: str) -> None:
    if protocol == "grpc":
        log_exporter: GrpcLogExporter | HttpLogExporter = GrpcLogExporter(
            endpoint=otelkit_collector.grpc_endpoint, insecure=True, timeout=5)
        metric_exporter: GrpcMetricExporter | HttpMetricExporter = GrpcMetricExporter(
            endpoint=otelkit_collector.grpc_endpoint, insecure=True, timeout=5)
    else:
        log_exporter = HttpLogExporter(endpoint=otelkit_collector.http_endpoint + "/v1/logs", timeout=5)
        metric_exporter = HttpMetricExporter(endpoint=otelkit_collector.http_endpoint + "/v1/metrics", timeout=5)
    tracer_provider = TracerProvider()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    log = logging.getLogger(f"harness.{protocol}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=logger_provider)
    log.addHandler(handler)
    try:
        with tracer_provider.get_tracer("h").start_as_current_span("op") as span:
            log.warning("hello %s", protocol)
        meter_provider.get_meter("h").create_counter("harness.count").add(3, {"p": protocol})
        meter_provider.force_flush()
    finally:
        log.removeHandler(handler)
        logger_provider.shutdown()
        meter_provider.shutdown()
        tracer_provider.shutdown()

    receiver = otelkit_collector.receiver
    (record,) = receiver.wait_for(lambda: receiver.logs(f"hello {protocol}"))
    assert record.severity_text == "WARN"
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    points = receiver.wait_for_metric("harness.count")
    assert points[-1].value == 3 and points[-1].attributes == {"p": protocol} and points[-1].is_monotonic


def test_collector_restarts_on_the_same_ports(otelkit_collector: RotelCollector) -> None:
    ports = (otelkit_collector.grpc_port, otelkit_collector.http_port)
    otelkit_collector.stop()
    exporter = GrpcSpanExporter(endpoint=otelkit_collector.grpc_endpoint, insecure=True, timeout=1)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otelkit_collector.start()
    assert (otelkit_collector.grpc_port, otelkit_collector.http_port) == ports
    with provider.get_tracer("h").start_as_current_span("after-restart"):
        pass
    provider.shutdown()
    otelkit_collector.receiver.wait_for_spans(1, name="after-restart")


def _raw_grpc_export(receiver: OtlpReceiver, timeout: float = 5) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        try:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _raw_http_export(receiver: OtlpReceiver, timeout: float = 5) -> requests.Response:
    return requests.post(receiver.http_endpoint + "/v1/traces", data=b"",
                         headers={"Content-Type": "application/x-protobuf"}, timeout=timeout)


def test_receiver_faults_are_applied_then_healed(otelkit_otlp_receiver: OtlpReceiver) -> None:
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE", retry_after=2, times=2)
    response = _raw_http_export(otelkit_otlp_receiver)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert _raw_grpc_export(otelkit_otlp_receiver) == grpc.StatusCode.UNAVAILABLE
    assert _raw_http_export(otelkit_otlp_receiver).status_code == 200  # times=2 used up

    otelkit_otlp_receiver.fail(429, "RESOURCE_EXHAUSTED")
    assert _raw_grpc_export(otelkit_otlp_receiver) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _raw_http_export(otelkit_otlp_receiver).status_code == 429
    otelkit_otlp_receiver.heal()
    assert _raw_grpc_export(otelkit_otlp_receiver) == grpc.StatusCode.OK

    otelkit_otlp_receiver.hang()
    with pytest.raises(requests.exceptions.ReadTimeout):
        _raw_http_export(otelkit_otlp_receiver, timeout=0.5)
    assert _raw_grpc_export(otelkit_otlp_receiver, timeout=0.5) == grpc.StatusCode.DEADLINE_EXCEEDED
    otelkit_otlp_receiver.heal()

    outcomes = [a.outcome for a in otelkit_otlp_receiver.attempts]
    assert outcomes == ["status:503", "grpc:UNAVAILABLE", "ok", "grpc:RESOURCE_EXHAUSTED", "status:429", "ok",
                        "hang", "hang"]
    assert len(otelkit_otlp_receiver.requests) == 2


def test_partial_success_is_returned(otelkit_otlp_receiver: OtlpReceiver) -> None:
    otelkit_otlp_receiver.reject_partially(3, "too old")
    with grpc.insecure_channel(f"127.0.0.1:{otelkit_otlp_receiver.grpc_port}") as channel:
        reply = trace_service_pb2_grpc.TraceServiceStub(channel).Export(
            trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
    assert reply.partial_success.rejected_spans == 3 and reply.partial_success.error_message == "too old"


def test_refused_and_blackhole_endpoints() -> None:
    exporter = HttpSpanExporter(endpoint=f"http://{refused_endpoint()}/v1/traces", timeout=0.5)
    with BlackholeServer() as hole:
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"http://{refused_endpoint()}/v1/traces", data=b"", timeout=1)
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(f"http://{hole.endpoint}/v1/traces", data=b"", timeout=0.5)
        assert hole.accepted >= 1
    exporter.shutdown()
