"""init() in a process that already has SDK providers (opentelemetry-instrument, Sentry, another library).

Each case runs in a fresh interpreter: the OTel API globals can be set only once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from opentelemetry.sdk.metrics import MeterProvider

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, warnings
    warnings.simplefilter("always")
    from opentelemetry import trace, _logs
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    theirs, ours = InMemorySpanExporter(), InMemorySpanExporter()
    foreign = TracerProvider()
    foreign.add_span_processor(SimpleSpanProcessor(theirs))
    trace.set_tracer_provider(foreign)          # e.g. opentelemetry-instrument did this first
    _logs.set_logger_provider(LoggerProvider())
    their_reader, our_reader = InMemoryMetricReader(), InMemoryMetricReader()
    foreign_meters = MeterProvider(metric_readers=[their_reader])
    metrics.set_meter_provider(foreign_meters)

    messages = []
    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
    logging.getLogger("otelkit").addHandler(Collect())
    logging.getLogger("opentelemetry").addHandler(Collect())

    import otelkit
    quiet = dict(service_name="fg", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                 instrument=[], system_metrics=False)
    processor = SimpleSpanProcessor(ours)
    otelkit.init(span_processors=[processor], metric_readers=[our_reader], **quiet)
    # reconfigure: no second message, the same processor and reader keep working
    otelkit.init(span_processors=[processor], metric_readers=[our_reader], **{**quiet, "service_name": "fg2"})
    with trace.get_tracer("app").start_as_current_span("from-global-tracer"):
        pass
    metrics.get_meter("app").create_counter("orders").add(4)

    def total(reader):
        data = reader.get_metrics_data()
        return sum(p.value for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                   if m.name == "orders" for p in m.data.data_points) if data else None
    print(json.dumps({
        "global_is_foreign": trace.get_tracer_provider() is foreign,
        "theirs": [s.name for s in theirs.get_finished_spans()],
        "ours": [s.name for s in ours.get_finished_spans()],
        "messages": messages,
        "meter_is_foreign": metrics.get_meter_provider() is foreign_meters,
        "their_orders": total(their_reader),
        "our_orders": total(our_reader),
    }))
    otelkit.shutdown(timeout=1)
    """
)


def test_existing_sdk_providers_are_extended_with_one_message() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["global_is_foreign"] is True
    assert out["theirs"] == ["from-global-tracer"]
    assert out["ours"] == ["from-global-tracer"]  # otelkit's pipeline sees spans of the foreign provider
    explained = [line for line in proc.stderr.splitlines() if "already installed" in line]
    assert len(explained) == 1, proc.stderr  # one message, on stderr, even across re-inits
    assert "TracerProvider" in explained[0] and "LoggerProvider" in explained[0]
    assert "MeterProvider" in explained[0]
    assert out["meter_is_foreign"] is True
    assert out["their_orders"] == 4
    if hasattr(MeterProvider, "add_metric_reader"):  # newer SDKs: readers can join a running provider
        assert out["our_orders"] == 4  # otelkit's reader was added to the foreign MeterProvider
    else:  # SDK before 1.43: the application's provider keeps its own readers only; its metrics are untouched
        assert not out["our_orders"]
    assert not [m for m in out["messages"] if "Overriding" in m]
    assert "Overriding" not in proc.stderr
