"""otelkit.testing: capture_telemetry and the pytest plugin's fixtures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib import metadata

import pytest
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace

import otelkit
from otelkit.testing import CapturedTelemetry, capture_telemetry


@pytest.fixture(autouse=True)
def _empty_otel_context() -> Iterator[None]:
    """Start from an empty OTel context: a span or baggage leaked by another module's test must not leak in."""
    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


def test_captures_all_three_signals() -> None:
    with capture_telemetry(service_name="shop") as captured:
        meter = metrics.get_meter("shop")
        orders = meter.create_counter("orders.placed", unit="{order}")
        latency = meter.create_histogram("checkout.duration", unit="s")
        with otelkit.span("checkout", cart=3) as span:
            with otelkit.span("charge"):
                pass
            orders.add(1, {"country": "fr"})
            orders.add(2, {"country": "de"})
            latency.record(0.25)
            logging.getLogger("shop").warning("order placed")
        assert captured.spans.names() == ["charge", "checkout"]
        checkout = captured.spans.span("checkout")
        assert checkout.resource.attributes["service.name"] == "shop"
        assert captured.spans.roots() == [checkout]
        assert [s.name for s in captured.spans.children(checkout)] == ["charge"]
        assert "└─ checkout" in captured.spans.tree()

        points = captured.metrics()
        assert {p.attributes["country"]: p.value for p in points["orders.placed"]} == {"fr": 1, "de": 2}
        assert [p.value for p in captured.metric_points("orders.placed", country="de")] == [2]
        (hist,) = captured.metric_points("checkout.duration")
        assert (hist.count, hist.sum, hist.unit, hist.kind) == (1, 0.25, "s", "histogram")

        (log,) = captured.logs
        assert log.body == "order placed" and log.logger == "shop"
        assert log.trace_id == format(span.get_span_context().trace_id, "032x")

        captured.clear()
        assert len(captured.spans) == 0 and captured.logs == []
    # reset on exit: nothing is recorded any more
    with otelkit.span("after") as after:
        assert not after.is_recording()
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_span_lookup_errors_are_helpful() -> None:
    with capture_telemetry() as captured:
        with otelkit.span("a"):
            pass
        with pytest.raises(AssertionError, match=r"exactly one span named 'b', found 0; spans: \['a'\]"):
            captured.spans.span("b")


def test_exporters_are_none_and_nothing_is_instrumented_by_default() -> None:
    with capture_telemetry():
        settings = otelkit.get_settings()
        assert settings is not None
        assert settings.traces.exporters == ("none",)
        assert settings.instrument == ()
        assert settings.system_metrics is False


def test_fixture(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("from-fixture"):
        pass
    assert otelkit_capture.spans.names() == ["from-fixture"]


@pytest.mark.otelkit(service_name="marked", log_level="DEBUG")
def test_marker_passes_init_arguments(otelkit_capture: CapturedTelemetry) -> None:
    settings = otelkit.get_settings()
    assert settings is not None and settings.service_name == "marked"
    logging.getLogger("app").debug("debug is exported now")
    assert [r.body for r in otelkit_capture.logs] == ["debug is exported now"]


def test_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    entry_points = {ep.name: ep.value for ep in metadata.entry_points(group="pytest11")}
    assert entry_points.get("otelkit") == "otelkit.testing._plugin"
    assert pytestconfig.pluginmanager.has_plugin("otelkit")
