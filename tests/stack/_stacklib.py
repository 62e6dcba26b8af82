"""Shared helpers of the stack checks: paths, YAML loading, external tools,
PromQL metric-name extraction and the catalogue of names the stack produces.

The catalogue has two parts:

- otelkit's own metrics, read from ``otelkit._names`` at test time (never
  copied), in their Prometheus form (histograms add _bucket/_sum/_count);
- an explicit allow-list of what the collector (internal telemetry, redis and
  postgresql receivers), Tempo (span metrics, service graphs, self metrics),
  Loki, Prometheus, Alertmanager and the OpenTelemetry system-metrics
  instrumentation emit, each with where it comes from.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from otelkit import _names
from tests.conftest import missing

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "collector"
PROM_DIR = COLLECTOR / "prometheus"
RULES_DIR = PROM_DIR / "rules"
RULE_TESTS_DIR = PROM_DIR / "tests"
GRAFANA = COLLECTOR / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
RUNBOOKS = REPO / "docs" / "runbooks"
COMPOSE = REPO / "compose.yaml"
KUBERNETES = REPO / "deploy" / "kubernetes"
K8S_VALUES = KUBERNETES / "values"
K8S_SCHEMAS = KUBERNETES / "schemas"
OTELCOL_CHART = K8S_SCHEMAS / "opentelemetry-collector-0.170.0"
# The collector tiers of the Kubernetes kit: values files of the opentelemetry-collector chart.
K8S_COLLECTORS = ["otel-agent", "otel-gateway", "otel-sampler"]



def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def helm_coalesce(defaults: Any, overrides: Any) -> Any:
    """A values file merged onto a chart's defaults as Helm does: maps merge key by key, any other
    value (lists included) replaces the default, and ``null`` deletes the default key."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    out = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kubernetes_collector_values(name: str) -> Any:
    """The chart's values after Helm merged ``deploy/kubernetes/values/<name>.yaml`` onto its defaults."""
    return helm_coalesce(load_yaml(OTELCOL_CHART / "values.yaml"), load_yaml(K8S_VALUES / f"{name}.yaml"))


def kubernetes_collector_config(name: str) -> Any:
    """The collector config the opentelemetry-collector chart (0.170.0) renders from a kit values file.

    The chart's ``baseConfig`` template takes ``.Values.config`` (the merge above) as it is when, as in
    every kit file, ``alternateConfig`` is empty, every ``presets.*`` is off and ``internalTelemetryViaOTLP``
    is off; tests/stack/test_kubernetes_kit.py asserts those three conditions.
    """
    return kubernetes_collector_values(name)["config"]


def require_tool(name: str, package: str) -> str:
    """Path of an external tool; skip without it on a laptop, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found on PATH (Debian package {package!r}; .ci/setup.sh installs it)")
    return path


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


# --- What the Docker smoke test sends ----------------------------------------------------------

SMOKE_EMITTER = r"""
import json, logging, sys
import otelkit
from opentelemetry import metrics, trace

service, endpoint = sys.argv[1], sys.argv[2]
otelkit.init(service_name=service, endpoint=endpoint, protocol="grpc")
tracer = trace.get_tracer("otelkit.smoke")
meter = metrics.get_meter("otelkit.smoke")
requests = meter.create_counter("otelkit.smoke.requests", unit="{request}")
latency = meter.create_histogram("otelkit.smoke.duration", unit="s")
with tracer.start_as_current_span("GET /smoke", kind=trace.SpanKind.SERVER) as server:
    trace_id = format(server.get_span_context().trace_id, "032x")
    with tracer.start_as_current_span("GET", kind=trace.SpanKind.CLIENT,
                                      attributes={"peer.service": "smoke-backend", "server.address": "backend"}):
        requests.add(1, {"route": "/smoke"})
        latency.record(0.042, {"route": "/smoke"})
        logging.getLogger("smoke").warning("smoke log line %s", service)
otelkit.shutdown()
print(json.dumps({"trace_id": trace_id}))
"""
"""Run as ``python -c SMOKE_EMITTER <service> <otlp grpc endpoint>`` (a child process, so otelkit's global
providers never leak into the test session): one SERVER span with a CLIENT child (a service-graph edge),
a log record and a counter and histogram point inside it; prints {"trace_id": ...}."""


# --- Metric names -----------------------------------------------------------------------------

def otelkit_metric_names() -> dict[str, str]:
    """Every Prometheus series name otelkit's own metrics produce -> the OTel name it comes from."""
    names: dict[str, str] = {}
    for metric in _names.ALL_METRICS:
        base = metric.prometheus
        if metric.kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                names[base + suffix] = metric.name
        else:
            names[base] = metric.name
    return names


def _histogram(base: str) -> list[str]:
    return [base + s for s in ("_bucket", "_sum", "_count")]


_SIGNALS = ("spans", "metric_points", "log_records")

EXTERNAL_METRICS: dict[str, str] = {
    # Prometheus itself.
    "up": "Prometheus scrape status",
    "ALERTS": "Prometheus alert state series",
    "target_info": "Prometheus OTLP receiver (resource attributes)",
    "prometheus_tsdb_head_series": "Prometheus self metrics",
    "prometheus_http_requests_total": "Prometheus self metrics",
    "prometheus_tsdb_exemplar_exemplars_in_storage": "Prometheus self metrics (exemplar storage)",
    # Alertmanager.
    "alertmanager_notifications_total": "Alertmanager self metrics",
    "alertmanager_notifications_failed_total": "Alertmanager self metrics",
    # Collector internal telemetry (service.telemetry.metrics, Prometheus pull reader).
    **{f"otelcol_receiver_{kind}_{signal}_total": "collector internal telemetry"
       for kind in ("accepted", "refused", "failed") for signal in _SIGNALS},
    **{f"otelcol_exporter_{kind}_{signal}_total": "collector internal telemetry"
       for kind in ("sent", "send_failed", "enqueue_failed") for signal in _SIGNALS},
    "otelcol_exporter_queue_size": "collector internal telemetry",
    "otelcol_exporter_queue_capacity": "collector internal telemetry",
    "otelcol_process_memory_rss_bytes": "collector internal telemetry",
    "otelcol_process_cpu_seconds_total": "collector internal telemetry",
    "otelcol_scraper_scraped_metric_points_total": "collector internal telemetry (scraping receivers)",
    "otelcol_scraper_errored_metric_points_total": "collector internal telemetry (scraping receivers)",
    # Collector receivers of the demo agent.
    "redis_memory_used_bytes": "collector redis receiver (redis.memory.used)",
    "redis_clients_connected": "collector redis receiver (redis.clients.connected)",
    "postgresql_backends": "collector postgresql receiver (postgresql.backends)",
    "postgresql_connection_max": "collector postgresql receiver (postgresql.connection.max)",
    "postgresql_commits_total": "collector postgresql receiver (postgresql.commits)",
    "postgresql_rollbacks_total": "collector postgresql receiver (postgresql.rollbacks)",
    # Tempo metrics generator (span-metrics and service-graphs processors).
    "traces_spanmetrics_calls_total": "Tempo span metrics",
    **{n: "Tempo span metrics" for n in _histogram("traces_spanmetrics_latency")},
    "traces_service_graph_request_total": "Tempo service graphs",
    "traces_service_graph_request_failed_total": "Tempo service graphs",
    **{n: "Tempo service graphs" for n in _histogram("traces_service_graph_request_server_seconds")},
    **{n: "Tempo service graphs" for n in _histogram("traces_service_graph_request_client_seconds")},
    # Tempo and Loki self metrics.
    "tempo_distributor_spans_received_total": "Tempo self metrics",
    "tempo_discarded_spans_total": "Tempo self metrics",
    "tempo_metrics_generator_registry_active_series": "Tempo self metrics",
    "loki_distributor_lines_received_total": "Loki self metrics",
    "loki_discarded_samples_total": "Loki self metrics",
}

# opentelemetry-instrumentation-system-metrics (otelkit turns it on by default):
# Prometheus name -> the instrument name, checked against the installed package.
SYSTEM_METRICS: dict[str, str] = {
    "process_cpu_time_seconds_total": "process.cpu.time",
    "process_memory_usage_bytes": "process.memory.usage",
    "process_thread_count": "process.thread.count",
}


def known_metrics() -> dict[str, str]:
    """Every series name a query may use -> where it comes from."""
    known = {name: f"otelkit ({otel})" for name, otel in otelkit_metric_names().items()}
    known.update(EXTERNAL_METRICS)
    known.update({name: f"system-metrics instrumentation ({otel})" for name, otel in SYSTEM_METRICS.items()})
    return known


def otelkit_label_names() -> set[str]:
    """The Prometheus labels otelkit's own attribute keys (ATTR_* in _names) become."""
    return {value.replace(".", "_") for key, value in vars(_names).items()
            if key.startswith("ATTR_") and isinstance(value, str)}


# --- PromQL ------------------------------------------------------------------------------------

# Grafana's template variables, replaced by something PromQL accepts.
_GRAFANA_DURATIONS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
_GRAFANA_VARS = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<expr>.+?)\s*,\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables so the expression parses as plain PromQL."""
    expr = _GRAFANA_DURATIONS.sub("5m", expr)
    return _GRAFANA_VARS.sub("var", expr)


def variable_query_expr(query: str) -> str | None:
    """The PromQL inside a ``label_values(<expr>, label)`` variable query, if any."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"unsupported variable query {query!r} (expected label_values(...))")
    return match.group("expr")


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, promql_parser.AggregateExpr):
        yield from _walk(node.expr)
        if node.param is not None:
            yield from _walk(node.param)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _walk(node.lhs)
        yield from _walk(node.rhs)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        yield from _walk(node.expr)
    elif isinstance(node, promql_parser.MatrixSelector):
        yield from _walk(node.vector_selector)
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _walk(arg)


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) of every vector selector in a PromQL expression.

    Raises ValueError for an expression that does not parse or selects a series
    without a literal metric name (``{__name__=~...}``), which no name check
    could follow.
    """
    tree = promql_parser.parse(expr)
    found = []
    for node in _walk(tree):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, str(m.op), m.value) for m in node.matchers.matchers]
            name = node.name
            if not name:
                raise ValueError(f"selector without a metric name in {expr!r}")
            found.append((name, matchers))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by()/without()/on()/ignoring() clauses and label_replace targets."""
    tree = promql_parser.parse(expr)
    labels: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None \
                and node.modifier.matching is not None:
            labels.update(node.modifier.matching.labels)
    return labels


# --- Collecting every query of the stack ---------------------------------------------------------

def rule_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alerting and recording rule."""
    out = []
    for path in sorted(RULES_DIR.glob("*.yaml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                severity = rule.get("labels", {}).get("severity", "")
                out.append((f"{path.name}:{name}:{severity}", rule["expr"]))
    return out


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_queries(model: dict[str, Any], file_name: str) -> list[tuple[str, str]]:
    """(where, PromQL) of every Prometheus panel target and variable of a dashboard."""
    out = []
    for var in model.get("templating", {}).get("list", []):
        if var.get("datasource", {}).get("uid") == "prometheus":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            expr = variable_query_expr(query)
            if expr:
                out.append((f"{file_name}:var:{var['name']}", grafana_to_promql(expr)))
    for panel in iter_panels(model.get("panels", [])):
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid == "prometheus":
                out.append((f"{file_name}:{panel['title']}:{target['refId']}", grafana_to_promql(target["expr"])))
    return out


def datasource_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of the queries embedded in datasource correlations (tracesToMetrics)."""
    out = []
    for ds in load_yaml(DATASOURCES)["datasources"]:
        for query in ds.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            # `$$__tags` is `$__tags` after Grafana's env expansion: a label list.
            expr = query["query"].replace("$$__tags", 'service="x"').replace("{,", "{")
            out.append((f"datasources:{ds['uid']}:{query['name']}", expr))
    return out


def all_queries() -> list[tuple[str, str]]:
    import json

    queries = rule_queries() + datasource_queries()
    for path in dashboard_files():
        queries += dashboard_queries(json.loads(path.read_text(encoding="utf-8")), path.name)
    return queries
