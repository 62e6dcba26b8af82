"""What the demo says about where its telemetry went agrees with the README's promise, in each mode."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from otelkit import _demo

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
EVENT = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "correlation_id": "tok-7f3a", "outcome": "stored",
         "attempt": 1}
GRAFANA = "http://grafana.example:3000"


def _where(mode: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = argparse.Namespace(grafana_url=GRAFANA, show="ok")
    telemetry = _demo.Telemetry(mode=mode, description="to your collector http://collector:4317")
    _demo._print_where(_demo._Printer(colour=False), telemetry, [EVENT], args)
    return capsys.readouterr().out


def _readme_demo_telemetry() -> str:
    match = re.search(r"\* \*\*Telemetry:\*\*(.*?)\n\* \*\*", README, re.S)
    assert match, "README: the demo's Telemetry bullet is gone"
    return re.sub(r"\s+", " ", match.group(1))


def test_bundled_stack_prints_the_grafana_url_and_the_trace_id(capsys: pytest.CaptureFixture[str]) -> None:
    out = _where("bundled", capsys)
    assert GRAFANA in out and EVENT["trace_id"] in out and "Pipeline overview" in out
    assert "With the bundled stack listening, the demo prints the Grafana URL" in _readme_demo_telemetry()


def test_own_collector_prints_the_ids_to_look_up_and_no_grafana(capsys: pytest.CaptureFixture[str]) -> None:
    out = _where("configured", capsys)
    assert EVENT["trace_id"] in out and EVENT["correlation_id"] in out
    assert GRAFANA not in out
    promise = _readme_demo_telemetry()
    # The README must not promise a Grafana URL for an endpoint of the user's own.
    endpoint_clause = promise[promise.index("OTEL_EXPORTER_OTLP_ENDPOINT"):]
    endpoint_clause = endpoint_clause[:endpoint_clause.index(". ")]
    assert "Grafana" not in endpoint_clause and "trace ID" in endpoint_clause
