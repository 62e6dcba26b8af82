"""The collector's own metric names, as the reader configured in otelcol*.yaml really writes them.

``service.telemetry.metrics.readers`` in ``collector/otelcol.yaml`` and
``collector/otelcol-demo-agent.yaml`` configures the collector's Prometheus
reader explicitly. Since collector v0.152 an explicit reader gets the same
defaults as the implicit one (opentelemetry-collector #15027,
``applyPrometheusDefaults`` in service/telemetry/otelconftelemetry/internal/migration/v0.3.0.go):
``without_type_suffix: true`` and ``without_units: true``, i.e. no ``_total`` and
no unit suffix. The dashboards, rules and runbooks query the suffixed names,
so the configs must turn both off; this test derives the names from the flags
and checks every ``otelcol_*`` name the stack queries against them.

The instruments (name, unit, kind) are those of the collector's metadata.yaml
files at v0.159.0, the version compose.yaml pins.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from _querycheck import all_expressions
from _stacklib import COLLECTOR, EXTERNAL_METRICS, load_yaml, selectors

# (instrument name with the otelcol_ prefix, unit, kind) at collector v0.159.0.
_SIGNAL_UNITS = {"spans": "{span}", "metric_points": "{datapoint}", "log_records": "{record}"}
COLLECTOR_INSTRUMENTS: list[tuple[str, str, str]] = [
    # receiver/receiverhelper/metadata.yaml
    *[(f"otelcol_receiver_{kind}_{signal}", unit, "counter")
      for kind in ("accepted", "refused", "failed") for signal, unit in _SIGNAL_UNITS.items()],
    # exporter/exporterhelper/metadata.yaml
    *[(f"otelcol_exporter_{kind}_{signal}", unit, "counter")
      for kind in ("sent", "send_failed", "enqueue_failed") for signal, unit in _SIGNAL_UNITS.items()],
    ("otelcol_exporter_queue_size", "{batch}", "gauge"),
    ("otelcol_exporter_queue_capacity", "{batch}", "gauge"),
    # scraper/scraperhelper/metadata.yaml
    ("otelcol_scraper_scraped_metric_points", "{datapoint}", "counter"),
    ("otelcol_scraper_errored_metric_points", "{datapoint}", "counter"),
    # service/metadata.yaml (process metrics)
    ("otelcol_process_cpu_seconds", "s", "counter"),
    ("otelcol_process_memory_rss", "By", "gauge"),
    ("otelcol_process_uptime", "s", "counter"),
]
CONFIGS = [COLLECTOR / "otelcol.yaml", COLLECTOR / "otelcol-demo-agent.yaml"]
_UNITS = {"s": "seconds", "By": "bytes", "ms": "milliseconds"}


def reader_flags(config: dict[str, Any]) -> dict[str, bool]:
    """without_units / without_type_suffix of the Prometheus pull reader, with the collector's defaults."""
    readers = config["service"]["telemetry"]["metrics"]["readers"]
    prom = [r["pull"]["exporter"]["prometheus"] for r in readers
            if "prometheus" in r.get("pull", {}).get("exporter", {})]
    assert len(prom) == 1, readers
    return {key: bool(prom[0].get(key, True)) for key in ("without_units", "without_type_suffix")}


def exposed_name(name: str, unit: str, kind: str, flags: dict[str, bool]) -> str:
    """The name the Go Prometheus exporter exposes an instrument under, for these flags."""
    suffix = "" if unit.startswith("{") else _UNITS.get(unit, unit)
    if suffix and not flags["without_units"] and not name.endswith("_" + suffix):
        name = f"{name}_{suffix}"
    if kind == "counter" and not flags["without_type_suffix"]:
        name += "_total"
    return name


def produced(flags: dict[str, bool]) -> set[str]:
    return {exposed_name(n, u, k, flags) for n, u, k in COLLECTOR_INSTRUMENTS}


def queried_collector_names() -> dict[str, str]:
    """Every otelcol_* name a dashboard, rule, runbook or the test allow-list uses -> where."""
    used: dict[str, str] = {}
    for expr in all_expressions():
        for name, _ in selectors(expr.query):
            if name.startswith("otelcol_"):
                used.setdefault(name, expr.where)
    for name in EXTERNAL_METRICS:
        if name.startswith("otelcol_"):
            used.setdefault(name, "tests/stack/_stacklib.py EXTERNAL_METRICS")
    return used


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_queried_collector_name_is_produced(path: Any) -> None:
    names = produced(reader_flags(load_yaml(path)))
    used = queried_collector_names()
    assert len(used) >= 15, used
    missing = {name: where for name, where in used.items() if name not in names}
    assert not missing, f"{path.name}: queried but not produced by the configured reader: {missing}"


def test_runbooks_use_collector_names_too() -> None:
    assert any(w.startswith("runbook:") for w in
               {e.where for e in all_expressions() if any(n.startswith("otelcol_") for n, _ in selectors(e.query))})


def test_the_default_reader_would_not_produce_them() -> None:
    """Negative control: without the two flags (the v0.152+ defaults) the suffixed names do not exist."""
    defaults = produced({"without_units": True, "without_type_suffix": True})
    assert "otelcol_exporter_sent_spans" in defaults
    assert "otelcol_process_memory_rss" in defaults
    used = queried_collector_names()
    assert {n for n in used if n not in defaults}, "the defaults would produce every queried name: flags unneeded?"
    assert re.fullmatch(r"otelcol_process_cpu_seconds_total",
                        exposed_name("otelcol_process_cpu_seconds", "s", "counter",
                                     {"without_units": False, "without_type_suffix": False}))
