"""The real collector (rotel) stops mid-run and comes back: what was queued meanwhile arrives, once.

CI runs a 3-second outage; the 10-second version of issue 7 is marked slow.
"""

from __future__ import annotations

import threading
import time

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otelkit._export import GrpcSender, HttpSender, OtlpMetricExporter, Sender, make_log_processor, make_span_processor
from otelkit._export.stats import STATS
from otelkit.testing._receiver import RotelCollector

pytestmark = pytest.mark.usefixtures("fresh_stats")


def _sender(otelkit_collector: RotelCollector, protocol: str, signal: str) -> Sender:
    if protocol == "grpc":
        return GrpcSender(signal, otelkit_collector.grpc_endpoint)
    return HttpSender(signal, f"{otelkit_collector.http_endpoint}/v1/{signal}")


def run_outage(otelkit_collector: RotelCollector, protocol: str, outage: float) -> None:
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(make_span_processor(_sender(otelkit_collector, protocol, "traces"), schedule_delay=0.1,
                                              export_timeout=2.0))
    lp = LoggerProvider(shutdown_on_exit=False)
    lp.add_log_record_processor(make_log_processor(_sender(otelkit_collector, protocol, "logs"), schedule_delay=0.1,
                                                   export_timeout=2.0))
    reader = PeriodicExportingMetricReader(OtlpMetricExporter(_sender(otelkit_collector, protocol, "metrics"),
                                                              timeout=2.0),
                                           export_interval_millis=250)
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    tracer = tp.get_tracer("restart")
    otel_logger = lp.get_logger("restart")
    counter = mp.get_meter("restart").create_counter("restart.items")
    receiver = otelkit_collector.receiver
    seq = 0

    def produce(count: int, phase: str) -> None:
        nonlocal seq
        for _ in range(count):
            with tracer.start_as_current_span(f"{phase}-span", attributes={"seq": seq}):
                otel_logger.emit(LogRecord(body=f"{phase} {seq}"))
                counter.add(1)
            seq += 1

    try:
        produce(100, "before")
        receiver.wait_for_spans(100, timeout=30)
        receiver.wait_for_logs(100, timeout=30)

        otelkit_collector.stop()
        # Produce steadily through the outage (a paced workload, not a synchronisation).
        pace = threading.Event()
        outage_end = time.monotonic() + outage
        while time.monotonic() < outage_end:
            produce(20, "during")
            pace.wait(0.1)
        produced = seq
        otelkit_collector.start()

        spans = receiver.wait_for_spans(produced, timeout=outage + 20)
        logs = receiver.wait_for_logs(produced, timeout=30)
        receiver.wait_for(lambda: any(p.value == produced for p in receiver.metrics("restart.items")), timeout=30)
    finally:
        tp.shutdown()
        lp.shutdown()
        mp.shutdown()
    span_seqs = sorted(s.attributes["seq"] for s in spans)
    assert span_seqs == list(range(produced)), "every span arrived, none twice"
    assert sorted(str(r.body).split()[1] for r in logs) == sorted(str(i) for i in range(produced))
    assert len(logs) == produced
    values = [p.value for p in receiver.metrics("restart.items")]
    assert values == sorted(values) and values[-1] == produced  # cumulative, never went back
    assert STATS.dropped_for("traces") == {} and STATS.dropped_for("logs") == {}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_outage_of_3s_is_redelivered(otelkit_collector: RotelCollector, protocol: str) -> None:
    run_outage(otelkit_collector, protocol, outage=3.0)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_outage_of_10s_is_redelivered(otelkit_collector: RotelCollector, protocol: str) -> None:
    run_outage(otelkit_collector, protocol, outage=10.0)
