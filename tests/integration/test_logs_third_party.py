"""structlog and loguru records through otelkit's OTLP pipeline and the real rotel collector."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from loguru import logger

import otelkit
from otelkit import _init
from otelkit._correlation import correlate
from otelkit.testing._receiver import RotelCollector


@pytest.fixture
def reset_after() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    _init.reset()


def test_structlog_and_loguru_records_arrive_correlated(otelkit_collector: RotelCollector, reset_after: None) -> None:
    otelkit.init(service_name="logs-3p", endpoint=otelkit_collector.grpc_endpoint, protocol="grpc",
                 metrics_exporter="none",
                 instrument=(), system_metrics=False)
    handler_id = logger.add(**otelkit.LoguruExporter())
    native = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[structlog.processors.add_log_level, otelkit.StructlogFields(), otelkit.StructlogExporter(),
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    # The same library routed through stdlib logging: otelkit's root handler exports it, the exporter must not.
    via_stdlib = structlog.wrap_logger(
        logging.getLogger("app.via_stdlib"),
        processors=[structlog.stdlib.add_log_level, otelkit.StructlogFields(), otelkit.StructlogExporter(),
                    structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger)
    try:
        with correlate("order-3p"), otelkit.span("process order") as span:
            line = native.warning("structlog event", amount=12.5, api_token="tok-SECRET-1")
            logger.bind(order=9).error("loguru event postgres://u:SECRETPW@h/db")
            via_stdlib.warning("routed event", step=2)
        logger.info("sentinel")
    finally:
        logger.remove(handler_id)

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: all(receiver.logs(body=b) for b in ("sentinel", "structlog event", "routed event")),
                      timeout=30, message="the records")
    context = span.get_span_context()
    trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
    assert f'"trace_id": "{trace_id}"' in line and '"correlation_id": "order-3p"' in line

    (from_structlog,) = receiver.logs(body="structlog event")
    assert (from_structlog.trace_id, from_structlog.span_id) == (trace_id, span_id)
    assert from_structlog.severity_text == "WARN"
    assert from_structlog.attributes["amount"] == 12.5
    assert from_structlog.attributes["otelkit.correlation_id"] == "order-3p"
    assert "SECRET" not in str(from_structlog.attributes["api_token"])
    assert from_structlog.resource["service.name"] == "logs-3p"

    (from_loguru,) = [r for r in receiver.logs() if str(r.body).startswith("loguru event")]
    assert "SECRETPW" not in from_loguru.body
    assert (from_loguru.trace_id, from_loguru.span_id) == (trace_id, span_id)
    assert from_loguru.severity_text == "ERROR"
    assert from_loguru.attributes["order"] == 9
    assert from_loguru.attributes["otelkit.correlation_id"] == "order-3p"
    assert from_loguru.scope == __name__

    (routed,) = receiver.logs(body="routed event")  # exactly one: no duplicate from the processor
    assert routed.scope == "app.via_stdlib"
    assert (routed.trace_id, routed.span_id) == (trace_id, span_id)
    assert routed.attributes["step"] == 2
    assert routed.attributes["otelkit.correlation_id"] == "order-3p"

    (sentinel,) = receiver.logs(body="sentinel")
    assert sentinel.trace_id is None
