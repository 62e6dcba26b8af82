"""Write the bundled stack's Grafana dashboards (collector/grafana/dashboards/*.json).

The metric names come from ``otelkit._names`` (the single source of every name
otelkit emits), so a rename there is one run of this script:

    .venv/bin/python collector/grafana/generate_dashboards.py

``tests/stack/test_grafana.py`` fails when the committed JSON differs from what
this script writes, and checks every query of every panel against the names
otelkit, the collector, Tempo and the receivers really produce.

Histograms are queried in their classic form (``_bucket``): the OpenTelemetry
SDK's default explicit-bucket aggregation, which Prometheus' OTLP receiver
stores as classic histograms.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from otelkit import _names as N

OUT = Path(__file__).resolve().parent / "dashboards"

PROM = {"type": "prometheus", "uid": "prometheus"}
TEMPO = {"type": "tempo", "uid": "tempo"}
LOKI = {"type": "loki", "uid": "loki"}

RATE = "$__rate_interval"
WRITE_OPS = '(?i)insert|update|delete|upsert|merge|copy'


def label(attribute: str) -> str:
    """The Prometheus label an OTel attribute becomes (dots to underscores)."""
    return attribute.replace(".", "_")


STAGE = label(N.ATTR_STAGE)
SOURCE = label(N.ATTR_SOURCE)
OUTCOME = label(N.ATTR_OUTCOME)
SIGNAL = label(N.ATTR_SIGNAL)
REASON = label(N.ATTR_REASON)
METRIC_NAME = label(N.ATTR_METRIC_NAME)
STATE = label(N.ATTR_QUEUE_STATE)
VARIANT = label(N.ATTR_VARIANT)
ERROR_CLASS = label(N.ATTR_ERROR_CLASS)
DEST = "messaging_destination_name"


def hist(metric: N.MetricName) -> str:
    return metric.prometheus + "_bucket"


class Dashboard:
    """A dashboard being laid out: rows of panels on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid = uid
        self.title = title
        self.description = description
        self.panels: list[dict[str, Any]] = []
        self.variables: list[dict[str, Any]] = []
        self._y = 0
        self._x = 0
        self._row_h = 0
        self._id = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def variable(self, name: str, label_text: str, query: str, datasource: dict[str, str] = PROM,
                 all_value: str = ".*") -> None:
        """A multi-value variable with "All". ``all_value`` is what "All" sends: ``.+`` where a Loki
        stream selector uses the variable (Loki refuses a selector whose matchers all match "")."""
        self.variables.append({
            "name": name,
            "label": label_text,
            "type": "query",
            "datasource": datasource,
            "query": {"query": query, "refId": f"var-{name}"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "allValue": all_value,
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
        })

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({
            "id": self._next_id(), "type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
        })
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_h
            self._x = 0
            self._row_h = 0

    def panel(self, title: str, description: str, targets: list[dict[str, Any]], *, kind: str = "timeseries",
              unit: str = "short", w: int = 8, h: int = 8, datasource: dict[str, str] = PROM,
              thresholds: list[tuple[str, float | None]] | None = None, options: dict[str, Any] | None = None,
              stack: bool = False) -> None:
        if self._x + w > 24:
            self._newline()
        refs = iter("ABCDEFGHIJ")
        full_targets = []
        for target in targets:
            t = {"refId": next(refs), "datasource": datasource, **target}
            full_targets.append(t)
        defaults: dict[str, Any] = {"unit": unit}
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute",
                                      "steps": [{"color": c, "value": v} for c, v in thresholds]}
        if kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 60,
                                  "showPoints": "never", "spanNulls": True,
                                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
            if thresholds:
                defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        panel = {
            "id": self._next_id(), "type": kind, "title": title, "description": description,
            "datasource": datasource, "targets": full_targets,
            "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": options or ({"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                                    "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else {}),
        }
        self.panels.append(panel)
        self._x += w
        self._row_h = max(self._row_h, h)

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["otelkit"],
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "links": [
                {"title": "otelkit dashboards", "type": "dashboards", "tags": ["otelkit"], "asDropdown": True,
                 "includeVars": True, "keepTime": True},
            ],
            "annotations": {"list": [{
                "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                "type": "dashboard"}]},
            "templating": {"list": self.variables},
            "panels": self.panels,
        }


def q(expr: str, legend: str = "", *, exemplar: bool = False, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"expr": expr, "legendFormat": legend or "__auto", "range": not instant,
                              "instant": instant}
    if exemplar:
        target["exemplar"] = True
    return target


def quantiles(bucket: str, selector: str, by: str = "") -> list[dict[str, Any]]:
    group = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [q(f"histogram_quantile({p}, sum by ({group}) (rate({bucket}{{{selector}}}[{RATE}])))",
              f"p{int(p * 100)}{suffix}", exemplar=True) for p in (0.5, 0.95, 0.99)]


def pipeline() -> Dashboard:
    d = Dashboard("otelkit-pipeline", "otelkit / Pipeline overview",
                  "One event from emission to reception: rates, queue depth, latency, failures by stage and "
                  "source, external APIs and the database. Click an exemplar dot to open its trace.")
    d.variable("job", "Service", "label_values(target_info, job)")
    d.variable("destination", "Queue", f"label_values({N.QUEUE_LENGTH.prometheus}, {DEST})")
    d.variable("source", "Source", f"label_values({N.STAGE_ITEMS.prometheus}, {SOURCE})")
    job = 'job=~"$job"'
    jd = f'{job}, {DEST}=~"$destination"'

    d.row("Flow")
    d.panel("Emission rate", "Messages sent by producers (messaging.client.sent.messages), per queue.",
            [q(f"sum by ({DEST}) (rate({N.MESSAGING_SENT.prometheus}{{{jd}}}[{RATE}]))", f"{{{{{DEST}}}}}")],
            unit="ops")
    d.panel("Reception rate", "Messages received by consumers (messaging.client.consumed.messages), per queue.",
            [q(f"sum by ({DEST}) (rate({N.MESSAGING_CONSUMED.prometheus}{{{jd}}}[{RATE}]))", f"{{{{{DEST}}}}}")],
            unit="ops")
    d.panel("Queue depth", "Messages in each queue by state (ready, delayed, in_flight, dead_letter), sampled by "
            "otelkit's queue probe (LLEN, XLEN, SCARD...). Alert: OtelkitQueueBacklog on the waiting ones "
            "(warning from 10, critical above 50).",
            [q(f"max by ({DEST}, {STATE}) ({N.QUEUE_LENGTH.prometheus}{{{DEST}=~\"$destination\"}})",
               f"{{{{{DEST}}}}} {{{{{STATE}}}}}")],
            thresholds=[("green", None), ("orange", 10), ("red", 50)])
    d.panel("Processing rate by outcome", "Messages settled per second: ack, retry, dead_letter, drop.",
            [q(f"sum by ({OUTCOME}) (rate({N.MESSAGES_SETTLED.prometheus}{{{jd}}}[{RATE}]))", f"{{{{{OUTCOME}}}}}")],
            unit="ops", stack=True)
    d.panel("Items processed by stage", "Items handled per second by each pipeline stage.",
            [q(f"sum by ({STAGE}) (rate({N.STAGE_ITEMS.prometheus}{{{job}, {SOURCE}=~\"$source\"}}[{RATE}]))",
               f"{{{{{STAGE}}}}}")], unit="ops")
    d.panel("Items discovered by source", "Items entering the pipeline per second, by source.",
            [q(f"sum by ({SOURCE}) (rate({N.DISCOVERED_ITEMS.prometheus}{{{job}, {SOURCE}=~\"$source\"}}[{RATE}]))",
               f"{{{{{SOURCE}}}}}")], unit="ops")

    d.row("Latency")
    d.panel("End-to-end latency", "From emission to the end of processing (p50, p95, p99). "
            "Alert: OtelkitEndToEndLatencyHigh (p95 above 2 min, critical above 10 min).",
            quantiles(hist(N.MESSAGE_END_TO_END), jd), unit="s", thresholds=[("green", None), ("orange", 120)])
    d.panel("Time in queue", "From emission to the start of processing (p50, p95, p99). "
            "Alert: OtelkitQueueWaitHigh (p95 above 2 min).",
            quantiles(hist(N.MESSAGE_TIME_IN_QUEUE), jd), unit="s", thresholds=[("green", None), ("orange", 120)])
    d.panel("Processing time p95 by queue", "messaging.process.duration, 95th percentile.",
            [q(f"histogram_quantile(0.95, sum by (le, {DEST}) "
               f"(rate({hist(N.MESSAGING_PROCESS_DURATION)}{{{jd}}}[{RATE}])))", f"{{{{{DEST}}}}}", exemplar=True)],
            unit="s")
    d.panel("Stage duration p95", "otelkit.pipeline.stage.duration by stage, 95th percentile.",
            [q(f"histogram_quantile(0.95, sum by (le, {STAGE}) "
               f"(rate({hist(N.STAGE_DURATION)}{{{job}, {SOURCE}=~\"$source\"}}[{RATE}])))", f"{{{{{STAGE}}}}}",
               exemplar=True)], unit="s")
    d.panel("Stage duration p95 by variant", "Compare processing variants (A/B experiments: "
            "otelkit.pipeline.variant) stage by stage.",
            [q(f"histogram_quantile(0.95, sum by (le, {STAGE}, {VARIANT}) "
               f"(rate({hist(N.STAGE_DURATION)}{{{job}, {SOURCE}=~\"$source\", {VARIANT}!=\"\"}}[{RATE}])))",
               f"{{{{{STAGE}}}}} {{{{{VARIANT}}}}}", exemplar=True)], unit="s")
    d.panel("Broker operations p95", "messaging.client.operation.duration (send, receive, settle) by operation "
            "and queue, 95th percentile.",
            [q(f"histogram_quantile(0.95, sum by (le, messaging_operation_name, {DEST}) "
               f"(rate({hist(N.MESSAGING_OPERATION_DURATION)}{{{jd}}}[{RATE}])))",
               f"{{{{messaging_operation_name}}}} {{{{{DEST}}}}}", exemplar=True)], unit="s")
    d.panel("Batch size p95", "Messages per processed batch, 95th percentile.",
            [q(f"histogram_quantile(0.95, sum by (le, {DEST}) (rate({hist(N.BATCH_SIZE)}{{{jd}}}[{RATE}])))",
               f"{{{{{DEST}}}}}")])

    d.row("Failures")
    d.panel("Failures by stage and source", "Items whose processing failed, per second.",
            [q(f"sum by ({STAGE}, {SOURCE}) (rate({N.STAGE_ITEMS.prometheus}"
               f"{{{job}, {SOURCE}=~\"$source\", {OUTCOME}=\"failure\"}}[{RATE}]))",
               f"{{{{{STAGE}}}}} / {{{{{SOURCE}}}}}")], unit="ops")
    d.panel("Failed attempts by stage and source", "Failed / all attempts per stage and source, retried ones "
            "included: with ordinary retries this is well above the share of messages finally lost.",
            [q(f"sum by ({STAGE}, {SOURCE}) (rate({N.STAGE_ITEMS.prometheus}{{{job}, {OUTCOME}=\"failure\"}}[{RATE}]))"
               f" / sum by ({STAGE}, {SOURCE}) (rate({N.STAGE_ITEMS.prometheus}{{{job}}}[{RATE}]))",
               f"{{{{{STAGE}}}}} / {{{{{SOURCE}}}}}")], unit="percentunit")
    d.panel("Messages finally failed", "Dead-lettered or dropped / all messages that reached a final outcome "
            "(ack, dead_letter, drop), per queue: what an operator must act on. Alert: OtelkitJobErrorRate "
            "(warning above 5 %, critical above 10 %).",
            [q(f"sum by ({DEST}) (rate({N.MESSAGES_SETTLED.prometheus}{{{jd}, {OUTCOME}=~\"dead_letter|drop\"}}"
               f"[{RATE}])) / sum by ({DEST}) (rate({N.MESSAGES_SETTLED.prometheus}"
               f"{{{jd}, {OUTCOME}=~\"ack|dead_letter|drop\"}}[{RATE}]))", f"{{{{{DEST}}}}}")],
            unit="percentunit", thresholds=[("green", None), ("orange", 0.05), ("red", 0.10)])
    d.panel("Failures by error class", "Failed items per second, transient (retried) or permanent "
            "(dead-lettered), by stage.",
            [q(f"sum by ({STAGE}, {ERROR_CLASS}) (rate({N.STAGE_ITEMS.prometheus}"
               f"{{{job}, {SOURCE}=~\"$source\", {OUTCOME}=\"failure\"}}[{RATE}]))",
               f"{{{{{STAGE}}}}} {{{{{ERROR_CLASS}}}}}")], unit="ops")
    d.panel("Retries and dead letters", "Messages retried, dead-lettered or dropped, per queue.",
            [q(f"sum by ({OUTCOME}, {DEST}) (rate({N.MESSAGES_SETTLED.prometheus}"
               f"{{{jd}, {OUTCOME}=~\"retry|dead_letter|drop\"}}[{RATE}]))",
               f"{{{{{OUTCOME}}}}} {{{{{DEST}}}}}")], unit="ops")

    d.row("External APIs (by source)")
    # Per source first (seed 000): the stage each API call runs in carries the source, so latency and
    # success are per Jupiter/Helius/DexScreener even when two sources share a host.
    src = f'{job}, {SOURCE}=~"$source", {SOURCE}!=""'
    d.panel("Latency p95 by source", "otelkit.pipeline.stage.duration per stage and source (e.g. fetch / "
            "dexscreener), 95th percentile. Alert: OtelkitSourceLatencyHigh (above 1 s).",
            [q(f"histogram_quantile(0.95, sum by (le, {STAGE}, {SOURCE}) (rate({hist(N.STAGE_DURATION)}{{{src}}}"
               f"[{RATE}])))", f"{{{{{STAGE}}}}} / {{{{{SOURCE}}}}}", exemplar=True)],
            unit="s", thresholds=[("green", None), ("orange", 1)])
    d.panel("Success rate by source", "Successful / all attempts per stage and source (a retried attempt counts "
            "as a failure here; the messages finally lost are under Failures).",
            [q(f"sum by ({STAGE}, {SOURCE}) (rate({N.STAGE_ITEMS.prometheus}{{{src}, {OUTCOME}=\"success\"}}"
               f"[{RATE}])) / sum by ({STAGE}, {SOURCE}) (rate({N.STAGE_ITEMS.prometheus}{{{src}}}[{RATE}]))",
               f"{{{{{STAGE}}}}} / {{{{{SOURCE}}}}}")],
            unit="percentunit", thresholds=[("red", None), ("orange", 0.90), ("green", 0.95)])
    api = N.HTTP_CLIENT_DURATION.prometheus
    server = "server_address, server_port"
    d.panel("API latency p95 by server", "http.client.request.duration by server address and port. "
            "Alert: OtelkitApiLatencyHigh (above 1 s).",
            [q(f"histogram_quantile(0.95, sum by (le, {server}) (rate({api}_bucket{{{job}}}[{RATE}])))",
               "{{server_address}}:{{server_port}}", exemplar=True)], unit="s",
            thresholds=[("green", None), ("orange", 1)])
    d.panel("API success rate by server", "Calls without error.type / all calls, by server address and port. "
            "Alert: OtelkitApiErrorRate.",
            [q(f"1 - (sum by ({server}) (rate({api}_count{{{job}, error_type!=\"\"}}[{RATE}])) or "
               f"0 * sum by ({server}) (rate({api}_count{{{job}}}[{RATE}]))) / "
               f"sum by ({server}) (rate({api}_count{{{job}}}[{RATE}]))", "{{server_address}}:{{server_port}}")],
            unit="percentunit", thresholds=[("red", None), ("orange", 0.90), ("green", 0.95)])
    d.panel("API calls by status", "Calls per second by server and HTTP status code (error.type when no response).",
            [q(f"sum by ({server}, http_response_status_code, error_type) (rate({api}_count{{{job}}}[{RATE}]))",
               "{{server_address}}:{{server_port}} {{http_response_status_code}} {{error_type}}")], unit="reqps")

    d.row("Database")
    db = N.DB_CLIENT_DURATION.prometheus
    d.panel("Database write latency", "p50 / p95 / p99 of INSERT, UPDATE, DELETE, UPSERT, MERGE, COPY "
            "(db.client.operation.duration). Alert: OtelkitDatabaseWritesSlow (p95 above 1 s).",
            quantiles(db + "_bucket", f'{job}, db_operation_name=~"{WRITE_OPS}"'), unit="s",
            thresholds=[("green", None), ("orange", 1)])
    d.panel("Database operations", "Operations per second by system and operation (PostgreSQL, Redis).",
            [q(f"sum by (db_system_name, db_operation_name) (rate({db}_count{{{job}}}[{RATE}]))",
               "{{db_system_name}} {{db_operation_name}}")], unit="ops")
    d.panel("Transactions by outcome", "Commits and rollbacks per second.",
            [q(f"sum by ({OUTCOME}) (rate({N.DB_TRANSACTIONS.prometheus}{{{job}}}[{RATE}]))", f"{{{{{OUTCOME}}}}}")],
            unit="ops", stack=True)
    rows = N.DB_RETURNED_ROWS.prometheus
    d.panel("Rows per statement (p95)", "Rows returned or affected per PostgreSQL statement, by operation "
            "(db.client.response.returned_rows): a sudden rise points at a missing WHERE or a growing table.",
            [q(f"histogram_quantile(0.95, sum by (le, db_operation_name) (rate({rows}_bucket{{{job}}}[{RATE}])))",
               "{{db_operation_name}}")])

    d.row("Redis and PostgreSQL health (collector receivers, compose profile demo)")
    d.panel("Redis memory", "redis.memory.used from the collector's redis receiver, per server (its server.address "
            "resource attribute, enabled in otelcol-demo-agent.yaml and promoted to a label in prometheus.yaml).",
            [q("sum by (server_address) (redis_memory_used_bytes)", "used {{server_address}}")], unit="bytes", w=6)
    d.panel("Redis clients", "Connected clients.",
            [q("sum by (server_address) (redis_clients_connected)", "{{server_address}}")], w=6)
    d.panel("PostgreSQL connections", "Backends connected vs the server's maximum.",
            [q("sum(postgresql_backends)", "backends"), q("max(postgresql_connection_max)", "max")], w=6)
    d.panel("PostgreSQL commits and rollbacks", "Per second, all databases.",
            [q(f"sum(rate(postgresql_commits_total[{RATE}]))", "commits"),
             q(f"sum(rate(postgresql_rollbacks_total[{RATE}]))", "rollbacks")], unit="ops", w=6)

    d.row("Workers and otelkit's own telemetry")
    d.panel("Worker CPU", "CPU seconds per second of each process (system-metrics instrumentation).",
            [q(f"sum by (job, instance) (rate(process_cpu_time_seconds_total{{{job}}}[{RATE}]))",
               "{{job}} {{instance}}")], unit="percentunit")
    d.panel("Worker memory", "Resident memory of each process.",
            [q(f"sum by (job, instance) (process_memory_usage_bytes{{{job}}})", "{{job}} {{instance}}")],
            unit="bytes")
    d.panel("Telemetry exported and dropped", "Spans, metric points and log records otelkit exported and dropped. "
            "Any drop: OtelkitTelemetryDropped.",
            [q(f"sum by ({SIGNAL}) (rate({N.TELEMETRY_EXPORTED.prometheus}{{{job}}}[{RATE}]))",
               f"exported {{{{{SIGNAL}}}}}"),
             # 0 rather than "No data" when nothing was ever dropped (the counter has no series yet).
             q(f"sum by ({SIGNAL}, {REASON}) (rate({N.TELEMETRY_DROPPED.prometheus}{{{job}}}[{RATE}])) "
               f"or on() vector(0)", f"dropped {{{{{SIGNAL}}}}} ({{{{{REASON}}}}})"),
             q(f"sum by ({SIGNAL}) ({N.TELEMETRY_QUEUE_SIZE.prometheus}{{{job}}})", f"queued {{{{{SIGNAL}}}}}")])
    d.panel("Metric cardinality overflows", "Measurements sent to a metric's otel.metric.overflow=true series because "
            "it reached OTELKIT_METRIC_CARDINALITY_LIMIT attribute sets: an attribute carries an unbounded value "
            "(docs/sampling.md). 0 when nothing overflowed.",
            [q(f"sum by ({METRIC_NAME}) (increase({N.TELEMETRY_METRIC_OVERFLOWS.prometheus}{{{job}}}[{RATE}])) "
               f"or on() vector(0)", f"{{{{{METRIC_NAME}}}}}")], w=6)
    return d


def service_red() -> Dashboard:
    d = Dashboard("otelkit-service-red", "otelkit / Service RED (span metrics)",
                  "Rate, errors and duration of every service from Tempo's span metrics, the service map, and the "
                  "latest error traces and logs.")
    d.variable("service", "Service", "label_values(traces_spanmetrics_calls_total, service)", all_value=".+")
    svc = 'service=~"$service"'
    entry = f'{svc}, span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'

    d.row("Entry points (SERVER and CONSUMER spans)")
    d.panel("Rate", "Requests and processed messages per second, by span name.",
            [q(f"sum by (service, span_name) (rate(traces_spanmetrics_calls_total{{{entry}}}[{RATE}]))",
               "{{service}} {{span_name}}")], unit="reqps")
    d.panel("Errors", "Share of spans with status ERROR, by span name.",
            [q(f"sum by (service, span_name) (rate(traces_spanmetrics_calls_total"
               f"{{{entry}, status_code=\"STATUS_CODE_ERROR\"}}[{RATE}])) / "
               f"sum by (service, span_name) (rate(traces_spanmetrics_calls_total{{{entry}}}[{RATE}]))",
               "{{service}} {{span_name}}")], unit="percentunit",
            thresholds=[("green", None), ("orange", 0.05), ("red", 0.10)])
    d.panel("Duration", "p50 / p95 / p99 of the entry spans (click an exemplar for its trace).",
            quantiles("traces_spanmetrics_latency_bucket", entry), unit="s")

    d.row("HTTP servers (http.server.request.duration)")
    web = 'service_name=~"$service"'
    route = "service_name, http_request_method, http_route"
    d.panel("Requests by route", "Requests per second per route template (FastAPI, Starlette, Flask, Django "
            "integrations; health and metrics endpoints are excluded).",
            [q(f"sum by ({route}) (rate({N.HTTP_SERVER_DURATION.prometheus}_count{{{web}}}[{RATE}]))",
               "{{service_name}} {{http_request_method}} {{http_route}}")], unit="reqps")
    d.panel("Server errors by route", "Share of requests answered 5xx, per route.",
            [q(f"sum by ({route}) (rate({N.HTTP_SERVER_DURATION.prometheus}_count"
               f"{{{web}, http_response_status_code=~\"5..\"}}[{RATE}])) / "
               f"sum by ({route}) (rate({N.HTTP_SERVER_DURATION.prometheus}_count{{{web}}}[{RATE}]))",
               "{{service_name}} {{http_request_method}} {{http_route}}")], unit="percentunit",
            thresholds=[("green", None), ("orange", 0.01), ("red", 0.05)])
    d.panel("Duration by route (p95)", "95th percentile of the request duration per route.",
            [q(f"histogram_quantile(0.95, sum by (le, {route}) "
               f"(rate({hist(N.HTTP_SERVER_DURATION)}{{{web}}}[{RATE}])))",
               "{{service_name}} {{http_request_method}} {{http_route}}", exemplar=True)], unit="s")

    d.row("All operations")
    d.panel("Slowest operations (p95)", "95th percentile per span name and kind, all kinds.",
            [q(f"topk(10, histogram_quantile(0.95, sum by (le, service, span_name, span_kind) "
               f"(rate(traces_spanmetrics_latency_bucket{{{svc}}}[{RATE}]))))",
               "{{service}} {{span_name}} {{span_kind}}", exemplar=True)], unit="s", w=12)
    d.panel("Busiest operations", "Spans per second per span name and kind.",
            [q(f"topk(10, sum by (service, span_name, span_kind) (rate(traces_spanmetrics_calls_total{{{svc}}}"
               f"[{RATE}])))", "{{service}} {{span_name}} {{span_kind}}")], unit="ops", w=12)

    d.row("Service map")
    # Tempo's service-graph series are labelled client/server (there is no `service` label): the
    # map shows the edges whose calling side is one of the selected services.
    d.panel("Service map", "Services, databases, caches and APIs, from Tempo's service-graph metrics: the "
            "edges whose client is one of the selected services.",
            [{"queryType": "serviceMap", "serviceMapQuery": '{client=~"$service"}'}],
            kind="nodeGraph", datasource=TEMPO, w=24, h=12, options={})
    d.panel("Edges: requests", "Requests per second between client and server (service graph).",
            [q(f"sum by (client, server) (rate(traces_service_graph_request_total[{RATE}]))",
               "{{client}} → {{server}}")], unit="reqps")
    d.panel("Edges: failed requests", "Failed requests per second between client and server.",
            [q(f"sum by (client, server) (rate(traces_service_graph_request_failed_total[{RATE}]))",
               "{{client}} → {{server}}")], unit="reqps")
    d.panel("Edges: server latency p95", "95th percentile as seen by the server side of each edge.",
            [q(f"histogram_quantile(0.95, sum by (le, client, server) "
               f"(rate(traces_service_graph_request_server_seconds_bucket[{RATE}])))", "{{client}} → {{server}}")],
            unit="s")

    d.row("Latest errors")
    d.panel("Error traces", "The latest traces with an error span (TraceQL). Click a trace ID to open it.",
            [{"queryType": "traceql", "query": '{ resource.service.name =~ "$service" && status = error }',
              "limit": 20, "tableType": "traces"}],
            kind="table", datasource=TEMPO, w=12, h=10, options={"showHeader": True})
    d.panel("Error logs", "ERROR log records of the selected services; each links to its trace.",
            [{"expr": '{service_name=~"$service"} | detected_level=~"(?i)error|critical|fatal"', "queryType": "range"}],
            kind="logs", datasource=LOKI, w=12, h=10,
            options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending", "enableLogDetails": True})
    return d


def stack_health() -> Dashboard:
    d = Dashboard("otelkit-stack-health", "otelkit / Collector and stack health",
                  "Is the telemetry path itself healthy? Collector intake, exports, queues and memory; Tempo, Loki, "
                  "Prometheus and Alertmanager; the alerts firing now.")
    comp = 'job=~"otel-collector|otel-collector-demo-agent|tempo|loki|prometheus|grafana|alertmanager"'

    d.row("Components")
    d.panel("Up", "1 when Prometheus can scrape the component. Alert: OtelkitComponentDown.",
            [q(f"up{{{comp}}}", "{{job}}", instant=True)], kind="stat", w=16, h=5,
            thresholds=[("red", None), ("green", 1)],
            options={"colorMode": "background", "graphMode": "none", "textMode": "name",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    d.panel("Alerts firing", "Alerts firing now, by name and severity.",
            [q('sum by (alertname, severity) (ALERTS{alertstate="firing"})', "{{alertname}} ({{severity}})",
               instant=True)], kind="stat", w=8, h=5, thresholds=[("green", None), ("red", 1)],
            options={"colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})

    d.row("Collector: intake and exports")
    for signal, unit in (("spans", "spans"), ("metric_points", "metric points"), ("log_records", "log records")):
        d.panel(f"{unit.capitalize()}: accepted, refused, exported, failed",
                "Per second. Refused: the collector pushed back (memory_limiter). Failed: lost after retries "
                "(OtelkitCollectorExportFailing).",
                [q(f"sum(rate(otelcol_receiver_accepted_{signal}_total[{RATE}]))", "accepted"),
                 q(f"sum(rate(otelcol_receiver_refused_{signal}_total[{RATE}]))", "refused"),
                 q(f"sum by (exporter) (rate(otelcol_exporter_sent_{signal}_total[{RATE}]))", "sent {{exporter}}"),
                 q(f"sum by (exporter) (rate(otelcol_exporter_send_failed_{signal}_total[{RATE}]))",
                   "failed {{exporter}}"),
                 q(f"sum by (exporter) (rate(otelcol_exporter_enqueue_failed_{signal}_total[{RATE}]))",
                   "dropped {{exporter}}")], unit="ops")
    d.panel("Export queues", "Items waiting in each exporter's sending queue, against its capacity.",
            [q("max by (exporter) (otelcol_exporter_queue_size)", "size {{exporter}}"),
             q("max by (exporter) (otelcol_exporter_queue_capacity)", "capacity {{exporter}}")])
    d.panel("Collector memory", "Resident memory of each collector; the memory_limiter refuses data at 80 % of "
            "the container limit.",
            [q("max by (job) (otelcol_process_memory_rss_bytes)", "{{job}}")], unit="bytes")
    d.panel("Collector CPU", "CPU seconds per second of each collector.",
            [q(f"max by (job) (rate(otelcol_process_cpu_seconds_total[{RATE}]))", "{{job}}")], unit="percentunit")
    d.panel("Receiver scrapes", "Metric points scraped and failed by the redis/postgresql receivers "
            "(OtelkitCollectorScrapeFailing).",
            [q(f"sum by (receiver) (rate(otelcol_scraper_scraped_metric_points_total[{RATE}]))",
               "scraped {{receiver}}"),
             q(f"sum by (receiver) (rate(otelcol_scraper_errored_metric_points_total[{RATE}]))",
               "errored {{receiver}}")], unit="ops", w=24, h=6)

    d.row("Backends")
    d.panel("Tempo: spans received and discarded", "Discarded spans are lost (OtelkitBackendRejectingData).",
            [q(f"sum(rate(tempo_distributor_spans_received_total[{RATE}]))", "received"),
             q(f"sum by (reason) (rate(tempo_discarded_spans_total[{RATE}]))", "discarded {{reason}}")], unit="ops")
    d.panel("Tempo: metrics-generator active series", "Series of span metrics and service graphs; capped by "
            "max_active_series (50000).",
            [q("sum(tempo_metrics_generator_registry_active_series)", "active series")],
            thresholds=[("green", None), ("orange", 40000), ("red", 50000)])
    d.panel("Loki: lines received and discarded", "Discarded log lines are lost.",
            [q(f"sum(rate(loki_distributor_lines_received_total[{RATE}]))", "received"),
             q(f"sum by (reason) (rate(loki_discarded_samples_total[{RATE}]))", "discarded {{reason}}")], unit="ops")
    d.panel("Prometheus: ingestion requests", "OTLP and remote-write requests by status code.",
            [q(f"sum by (handler, code) (rate(prometheus_http_requests_total"
               f"{{handler=~\"/api/v1/(otlp/v1/metrics|write)\"}}[{RATE}]))", "{{handler}} {{code}}")], unit="reqps")
    d.panel("Prometheus: series and exemplars", "Head series and exemplars in storage.",
            [q("prometheus_tsdb_head_series", "head series"),
             q("prometheus_tsdb_exemplar_exemplars_in_storage", "exemplars")])
    d.panel("Alertmanager: notifications", "Notifications sent and failed, per integration.",
            [q(f"sum by (integration) (rate(alertmanager_notifications_total[{RATE}]))", "sent {{integration}}"),
             q(f"sum by (integration) (rate(alertmanager_notifications_failed_total[{RATE}]))",
               "failed {{integration}}")], unit="ops")
    return d


def build() -> dict[str, dict[str, Any]]:
    """Every dashboard as {file name: JSON model}."""
    return {f"{d.uid}.json": d.json() for d in (pipeline(), service_red(), stack_health())}


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, model in build().items():
        (OUT / name).write_text(render(model), encoding="utf-8")
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
