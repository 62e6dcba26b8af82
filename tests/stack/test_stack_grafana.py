"""Grafana provisioning: datasources with every correlation, and the dashboards.

Every file is parsed; every datasource UID a correlation, a panel or a target
refers to exists; the dashboards are the ones generate_dashboards.py writes
from otelkit._names; every PromQL query parses (the metric names themselves are
checked in test_stack_metric_names.py).
"""

from __future__ import annotations

import importlib.util
import json
import re
from typing import Any

import pytest
from _stacklib import (
    COLLECTOR,
    DASHBOARDS,
    DATASOURCES,
    GRAFANA,
    all_queries,
    dashboard_files,
    iter_panels,
    load_yaml,
    selectors,
)

EXPECTED_DASHBOARDS = {"otelkit-pipeline", "otelkit-service-red", "otelkit-stack-health"}


def _datasources() -> dict[str, dict[str, Any]]:
    return {ds["uid"]: ds for ds in load_yaml(DATASOURCES)["datasources"]}


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in dashboard_files()}


def test_datasource_uids_are_unique_and_fixed() -> None:
    items = load_yaml(DATASOURCES)["datasources"]
    uids = [ds["uid"] for ds in items]
    assert len(uids) == len(set(uids))
    by_type = {ds["type"]: ds["uid"] for ds in items}
    assert by_type == {"prometheus": "prometheus", "tempo": "tempo", "loki": "loki", "alertmanager": "alertmanager"}
    assert sum(bool(ds.get("isDefault")) for ds in items) == 1
    for ds in items:
        assert ds["editable"] is False, f"{ds['uid']}: provisioned datasources stay canonical"
        # URLs are the compose service names and ports.
        assert re.fullmatch(r"http://(prometheus:9090|tempo:3200|loki:3100|alertmanager:9093)", ds["url"]), ds["url"]


def test_every_correlation_is_configured_and_points_at_an_existing_uid() -> None:
    ds = _datasources()
    tempo, prom, loki = ds["tempo"]["jsonData"], ds["prometheus"]["jsonData"], ds["loki"]["jsonData"]

    # traces -> logs: structured-metadata filter on the span's trace ID, scoped by service.
    t2l = tempo["tracesToLogsV2"]
    assert t2l["datasourceUid"] == "loki"
    assert t2l["customQuery"] is True
    assert '| trace_id="$${__trace.traceId}"' in t2l["query"]
    assert {"key": "service.name", "value": "service_name"} in t2l["tags"]
    # traces -> metrics: span metrics of the span's service.
    t2m = tempo["tracesToMetrics"]
    assert t2m["datasourceUid"] == "prometheus"
    assert {"key": "service.name", "value": "service"} in t2m["tags"]
    assert len(t2m["queries"]) >= 3 and all("$$__tags" in q["query"] for q in t2m["queries"])
    # service map and node graph.
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["nodeGraph"]["enabled"] is True
    assert tempo["lokiSearch"]["datasourceUid"] == "loki"
    # logs -> traces: the trace_id structured-metadata field of OTLP logs.
    fields = {f["name"]: f for f in loki["derivedFields"]}
    assert fields["trace_id"]["matcherType"] == "label"
    assert fields["trace_id"]["matcherRegex"] == "trace_id"
    assert all(f["datasourceUid"] == "tempo" for f in fields.values())
    assert re.search(fields["trace_id_in_line"]["matcherRegex"],
                     'level=INFO trace_id=4bf92f3577b34da6a3ce929d0e0e4736 msg="x"').group(1) \
        == "4bf92f3577b34da6a3ce929d0e0e4736"
    # metric exemplars -> traces: the exemplar label Tempo and the SDKs write.
    tempo_cfg = load_yaml(COLLECTOR / "tempo.yaml")
    exemplar_label = tempo_cfg["overrides"]["defaults"]["metrics_generator"]["trace_id_label_name"]
    destinations = prom["exemplarTraceIdDestinations"]
    assert [(d["name"], d["datasourceUid"]) for d in destinations] == [(exemplar_label, "tempo")]
    assert prom["alertmanagerUid"] in ds

    # Every *Uid anywhere in the file names an existing datasource.
    def uids(node: Any) -> list[str]:
        if isinstance(node, dict):
            out = [v for k, v in node.items() if k.endswith("Uid") and isinstance(v, str)]
            return out + [u for v in node.values() for u in uids(v)]
        if isinstance(node, list):
            return [u for v in node for u in uids(v)]
        return []
    referenced = set(uids(load_yaml(DATASOURCES)))
    assert referenced <= set(ds), referenced - set(ds)


def test_grafana_variables_are_escaped_in_provisioning() -> None:
    """Grafana expands ${VAR} in provisioning files: Grafana macros must be written $${...} / $$__..."""
    text = DATASOURCES.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\$)\$\{__", text), "unescaped ${__...} (Grafana would expand it as an env var)"
    assert not re.search(r"(?<!\$)\$__", text), "unescaped $__... macro"


def test_dashboard_provider_matches_compose_mount() -> None:
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml")["providers"][0]
    compose = load_yaml(COLLECTOR.parent / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./collector/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/otelkit-pipeline.json"


def test_dashboards_are_generated_from_the_names_module() -> None:
    """The committed JSON is what generate_dashboards.py writes now (run it after a rename in _names)."""
    spec = importlib.util.spec_from_file_location("generate_dashboards", GRAFANA / "generate_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    assert set(built) == {p.name for p in dashboard_files()}
    stale = [name for name, model in built.items()
             if (DASHBOARDS / name).read_text(encoding="utf-8") != module.render(model)]
    assert not stale, f"{stale} out of date: run .venv/bin/python collector/grafana/generate_dashboards.py"


def test_dashboards_have_stable_uids_and_valid_layout() -> None:
    boards = _dashboards()
    assert set(boards) == EXPECTED_DASHBOARDS
    known_uids = set(_datasources()) | {"-- Grafana --"}
    for stem, model in boards.items():
        assert model["uid"] == stem, "the file name is the UID (links and bookmarks rely on it)"
        assert model["title"].startswith("otelkit / ")
        ids = [p["id"] for p in iter_panels(model["panels"])]
        assert len(ids) == len(set(ids)), f"{stem}: duplicate panel ids"
        for panel in iter_panels(model["panels"]):
            pos = panel["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, f"{stem}/{panel['title']}: outside the grid"
            if panel["type"] == "row":
                continue
            assert panel.get("description"), f"{stem}/{panel['title']}: no description"
            assert panel["targets"], f"{stem}/{panel['title']}: no query"
            for target in panel["targets"]:
                uid = (target.get("datasource") or panel["datasource"])["uid"]
                assert uid in known_uids, f"{stem}/{panel['title']}: datasource {uid!r} does not exist"
        for var in model["templating"]["list"]:
            assert var["datasource"]["uid"] in known_uids


def _panel_titles(board: dict[str, Any]) -> set[str]:
    return {p["title"] for p in iter_panels(board["panels"])}


def test_pipeline_overview_has_what_the_users_asked_for() -> None:
    titles = _panel_titles(_dashboards()["otelkit-pipeline"])
    wanted = {"Emission rate", "Reception rate", "Queue depth", "Processing rate by outcome",
              "End-to-end latency", "Failures by stage and source", "Latency p95 by source", "Success rate by source",
              "API latency p95 by server", "API success rate by server", "Messages finally failed",
              "Database write latency", "Redis memory", "Redis clients", "PostgreSQL connections"}
    assert wanted <= titles, wanted - titles
    e2e = next(p for p in iter_panels(_dashboards()["otelkit-pipeline"]["panels"])
               if p["title"] == "End-to-end latency")
    assert [t["legendFormat"] for t in e2e["targets"]] == ["p50", "p95", "p99"]
    assert all(t.get("exemplar") for t in e2e["targets"]), "latency panels link to traces through exemplars"


def test_service_red_has_rate_errors_duration_and_service_map() -> None:
    board = _dashboards()["otelkit-service-red"]
    titles = _panel_titles(board)
    assert {"Rate", "Errors", "Duration", "Service map", "Error traces", "Error logs"} <= titles
    node_graph = next(p for p in iter_panels(board["panels"]) if p["type"] == "nodeGraph")
    assert node_graph["datasource"]["uid"] == "tempo"
    assert node_graph["targets"][0]["queryType"] == "serviceMap"
    # Tempo's service-graph series have client/server labels, no `service` label.
    assert re.fullmatch(r'\{(client|server)=~"\$service"\}', node_graph["targets"][0]["serviceMapQuery"])


def test_loki_queries_never_send_an_all_empty_matcher() -> None:
    """Loki refuses `{service_name=~".*"}` (every matcher matches ""): "All" must send `.+` there."""
    for board in _dashboards().values():
        values = {v["name"]: v["allValue"] for v in board["templating"]["list"]}
        for panel in iter_panels(board["panels"]):
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel["datasource"])["uid"] != "loki":
                    continue
                selector = re.match(r"\s*\{([^}]*)\}", target["expr"])
                assert selector, target["expr"]
                sent = re.sub(r"\$(\w+)", lambda m, v=values: v[m.group(1)], selector.group(1))
                matchers = re.findall(r'(\w+)\s*(=~|=|!=|!~)\s*"([^"]*)"', sent)
                assert any(not re.fullmatch(value, "") for _, op, value in matchers if op in ("=", "=~")), \
                    f"{panel['title']}: {{{sent}}} matches the empty string only"


def test_stack_health_covers_collector_and_backends() -> None:
    titles = _panel_titles(_dashboards()["otelkit-stack-health"])
    assert {"Up", "Alerts firing", "Export queues", "Collector memory",
            "Tempo: spans received and discarded", "Loki: lines received and discarded"} <= titles


@pytest.mark.parametrize(("where", "expr"), all_queries(), ids=[w for w, _ in all_queries()])
def test_every_query_parses(where: str, expr: str) -> None:
    assert selectors(expr), f"{where}: no metric selected by {expr!r}"


def test_dashboard_json_is_plain_utf8() -> None:
    for path in dashboard_files():
        raw = path.read_bytes()
        raw.decode("utf-8")
        assert raw.endswith(b"\n") and not raw.startswith(b"\xef\xbb\xbf")
