"""Every metric a dashboard panel, a dashboard variable, a datasource correlation
or an alert rule queries is one that otelkit, the collector, Tempo or the
receivers really produce.

otelkit's own names are read from ``otelkit._names`` at test time, so a rename
there turns this test red until the rules and dashboards follow (seed 003: a
writer and a reader disagreeing on a metric namespace silently broke alerts).
"""

from __future__ import annotations

import importlib

import pytest
from _stacklib import (
    SYSTEM_METRICS,
    all_queries,
    grouping_labels,
    known_metrics,
    otelkit_label_names,
    otelkit_metric_names,
    selectors,
)

from otelkit import _names

QUERIES = all_queries()


def test_queries_were_found() -> None:
    where = {w.split(":")[0] for w, _ in QUERIES}
    assert {"pipeline.yaml", "stack.yaml", "otelkit-pipeline.json", "otelkit-service-red.json",
            "otelkit-stack-health.json", "datasources"} <= where, where
    assert len(QUERIES) > 60


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_query_uses_only_known_metrics(where: str, expr: str) -> None:
    known = known_metrics()
    unknown = sorted({name for name, _ in selectors(expr) if name not in known})
    assert not unknown, f"{where}: unknown metric(s) {unknown} in {expr!r}"


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_otelkit_labels_come_from_names_module(where: str, expr: str) -> None:
    """A label spelled otelkit_* must be the Prometheus form of an ATTR_* key in otelkit._names."""
    allowed = otelkit_label_names()
    used = set(grouping_labels(expr))
    for _, matchers in selectors(expr):
        used.update(label for label, _, _ in matchers)
    wrong = sorted(label for label in used if label.startswith("otelkit_") and label not in allowed)
    assert not wrong, f"{where}: label(s) {wrong} are not in otelkit._names (have {sorted(allowed)})"


def test_every_otelkit_metric_is_shown_somewhere() -> None:
    """Each metric otelkit emits appears on a dashboard or in a rule (nothing emitted goes unseen)."""
    used = {name for _, expr in QUERIES for name, _ in selectors(expr)}
    emitted = otelkit_metric_names()
    unseen = sorted({otel for prom, otel in emitted.items()} - {emitted[n] for n in used if n in emitted})
    assert not unseen, f"otelkit metrics on no dashboard and in no rule: {unseen}"


def test_the_checker_catches_a_renamed_metric() -> None:
    """Negative control: a query on a name otelkit does not emit is reported."""
    renamed = _names.MESSAGE_END_TO_END.prometheus.replace("end_to_end", "e2e") + "_bucket"
    assert renamed not in known_metrics()
    expr = f"histogram_quantile(0.95, sum by (le) (rate({renamed}[5m])))"
    assert [name for name, _ in selectors(expr)] == [renamed]


def test_system_metric_names_exist_in_the_instrumentation() -> None:
    """The allow-listed process metrics are instruments the installed system-metrics instrumentation creates."""
    module = importlib.import_module("opentelemetry.instrumentation.system_metrics")
    defaults = module._DEFAULT_CONFIG
    for prom, otel in SYSTEM_METRICS.items():
        assert otel in defaults, f"{otel} ({prom}) is not a default of the system-metrics instrumentation"
        assert prom.startswith(otel.replace(".", "_")), (prom, otel)
