"""The examples in ``otelkit.testing``'s docstring run as written."""

from __future__ import annotations

import logging
import re
import textwrap

from opentelemetry import metrics

import otelkit
import otelkit.testing
from otelkit.testing import CapturedTelemetry, capture_telemetry


def _example(index: int) -> str:
    """The ``index``-th literal block (``::``) of the module docstring, dedented."""
    doc = otelkit.testing.__doc__ or ""
    blocks = re.findall(r"::\n\n((?:(?: {6,}.*)?\n)+)", doc)
    return textwrap.dedent(blocks[index])


def checkout() -> None:
    with otelkit.span("checkout"):
        with otelkit.span("charge", amount=10):
            logging.getLogger("shop").warning("charged")
        metrics.get_meter("shop").create_counter("orders.placed").add(1)


def run_job() -> None:
    with otelkit.span("job"):
        pass


def test_the_fixture_example_passes(otelkit_capture: CapturedTelemetry) -> None:
    source = _example(0)
    assert "def test_checkout(otelkit_capture)" in source
    namespace = {"checkout": checkout}
    exec(source, namespace)
    namespace["test_checkout"](otelkit_capture)


def test_the_context_manager_example_passes() -> None:
    source = _example(1)
    assert "capture_telemetry()" in source
    exec(source, {"capture_telemetry": capture_telemetry, "run_job": run_job})
