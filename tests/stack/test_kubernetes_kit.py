"""The Kubernetes kit in deploy/kubernetes/ (issue 15, part 4), checked without a cluster.

No cluster and no helm binary can run here (docs/kubernetes.md, "What was validated"). What is checked,
everything offline against files vendored in deploy/kubernetes/schemas/ at the pinned chart tags:

- each values file against its chart's published ``values.schema.json`` with check-jsonschema (the
  opentelemetry-collector and loki charts publish one), and every key path of every values file
  against the chart's default values.yaml (the tempo and kube-prometheus-stack charts publish no
  schema; under ``grafana:`` the grafana subchart's values.yaml counts too);
- the example worker Deployment and the rendered ConfigMaps against the Kubernetes OpenAPI schemas of
  the oldest and newest Kubernetes versions kubernetes-validate ships that the kit targets (strict:
  unknown fields fail);
- the KEDA ScaledObject and the PrometheusRules against the openAPIV3Schema of the CRDs shipped by
  the pinned keda and kube-prometheus-stack charts, with check-jsonschema, made strict the way
  kubectl's server-side field validation is (an unknown field fails);
- the collector configs the chart renders from the values files: test_stack_collector.py and
  test_stack_gateway.py run the compose configs' structural tests on them; here, that the gateway
  and sampler configs ARE the compose ones but for the Service names, and how the tiers connect;
- the rendered dashboards, datasources and alert rules equal a fresh render from collector/;
- the downward-API environment of the worker gives otelkit the resource attributes and endpoint.

test_stack_queries.py evaluates the ScaledObject's queue-depth query against a real Prometheus fed by
the demo (_querycheck.kubernetes_expressions).
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from _querycheck import otlp_translation
from _stacklib import (
    COLLECTOR,
    K8S_COLLECTORS,
    K8S_SCHEMAS,
    K8S_VALUES,
    KUBERNETES,
    OTELCOL_CHART,
    PROM_DIR,
    RULE_TESTS_DIR,
    RULES_DIR,
    dashboard_files,
    helm_coalesce,
    kubernetes_collector_config,
    kubernetes_collector_values,
    load_yaml,
    otelkit_label_names,
    selectors,
)

from otelkit import _names
from otelkit._config import resolve
from otelkit._resource import build_resource

MANIFESTS = KUBERNETES / "manifests"
RENDERED = KUBERNETES / "rendered"
WORKER = MANIFESTS / "worker-deployment.yaml"
SCALEDOBJECT = MANIFESTS / "worker-scaledobject.yaml"

# Values file -> the chart it is for, as vendored in deploy/kubernetes/schemas/<chart>-<version>/.
CHARTS = {
    "otel-agent": "opentelemetry-collector-0.170.0",
    "otel-gateway": "opentelemetry-collector-0.170.0",
    "otel-sampler": "opentelemetry-collector-0.170.0",
    "tempo": "tempo-2.2.4",
    "loki": "loki-18.11.0",
    "kube-prometheus-stack": "kube-prometheus-stack-88.5.3",
}
# Charts that publish a values.schema.json at the pinned tag (the others: key paths only).
WITH_SCHEMA = {"opentelemetry-collector-0.170.0", "loki-18.11.0"}
# kube-prometheus-stack's `grafana:` block configures its grafana subchart (Chart.yaml: grafana 12.11.1).
SUBCHARTS = {"kube-prometheus-stack-88.5.3": {"grafana": "grafana-12.11.1"}}
# Key paths below which a chart passes any keys through (its default is not a list of its options):
# the collector's own configuration (the chart renders it as the collector's config file; checked by
# the structural tests) and Loki's limits_config.
FREE_FORM = {
    "opentelemetry-collector-0.170.0": {("config",)},
    # `@schema skipProperties:true;additionalProperties:true` in the chart: Loki's limits_config as is.
    "loki-18.11.0": {("loki", "limits_config")},
}
# The collector chart's schema refuses unknown keys only at some levels (top, service, presets) and
# loki's nowhere: every chart also gets the key-path check.
# Kubernetes versions the objects are validated for: the oldest the pinned charts and KEDA 2.20 support
# here, and the newest kubernetes-validate ships.
K8S_VERSIONS = ["1.32.0", kubernetes_validate.latest_version()]
NAMESPACE = "observability"


def _docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def _check_jsonschema(schema: Path, instance: Path) -> subprocess.CompletedProcess[str]:
    """The check-jsonschema CLI (a real validator; offline: the schemas are local files). Patterns are
    Python regular expressions (the charts' and CRDs' patterns are Go's, which ECMAScript's lack)."""
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--regex-variant", "python",
                           "--schemafile", str(schema), str(instance)],
                          capture_output=True, text=True, timeout=120, check=False)


# --- Values files against the charts -------------------------------------------------------------

def test_every_values_file_is_checked() -> None:
    assert {p.stem for p in K8S_VALUES.glob("*.yaml")} == set(CHARTS)
    published = {c for c in set(CHARTS.values()) if (K8S_SCHEMAS / c / "values.schema.json").exists()}
    assert published == WITH_SCHEMA, "a chart started or stopped publishing values.schema.json: update WITH_SCHEMA"


def _check_values(chart: str, values: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """As `helm install` does: the schema is checked against the chart's defaults merged with the file."""
    merged = tmp_path / "merged-values.yaml"
    merged.write_text(yaml.safe_dump(helm_coalesce(load_yaml(K8S_SCHEMAS / chart / "values.yaml"), values)),
                      encoding="utf-8")
    return _check_jsonschema(K8S_SCHEMAS / chart / "values.schema.json", merged)


@pytest.mark.parametrize("name", [n for n, c in CHARTS.items() if c in WITH_SCHEMA])
def test_values_match_the_charts_published_schema(name: str, tmp_path: Path) -> None:
    result = _check_values(CHARTS[name], load_yaml(K8S_VALUES / f"{name}.yaml"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    """A value of the wrong kind in an otherwise valid file is refused (the check is not vacuous)."""
    values = load_yaml(K8S_VALUES / "otel-agent.yaml")
    values["mode"] = "daemon"  # the chart accepts daemonset, deployment, statefulset
    result = _check_values(CHARTS["otel-agent"], values, tmp_path)
    assert result.returncode == 1 and "mode" in result.stdout, result.stdout + result.stderr
    values = load_yaml(K8S_VALUES / "otel-gateway.yaml")
    values["servce"] = {"type": "ClusterIP"}  # misspelt at the top level: refused, not ignored
    result = _check_values(CHARTS["otel-gateway"], values, tmp_path)
    assert result.returncode == 1 and "servce" in result.stdout, result.stdout
    values = load_yaml(K8S_VALUES / "loki.yaml")
    values["singleBinary"]["replicas"] = "one"
    result = _check_values(CHARTS["loki"], values, tmp_path)
    assert result.returncode == 1 and "replicas" in result.stdout, result.stdout + result.stderr


def _defaults(chart: str) -> dict[str, Any]:
    defaults: dict[str, Any] = load_yaml(K8S_SCHEMAS / chart / "values.yaml")
    for key, subchart in SUBCHARTS.get(chart, {}).items():
        # Helm: the parent's block for a subchart is merged onto the subchart's own defaults.
        defaults[key] = helm_coalesce(load_yaml(K8S_SCHEMAS / subchart / "values.yaml"), defaults.get(key) or {})
    return defaults


def _schema_declares(schema: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(schema, dict) or key not in schema.get("properties", {}):
            return False
        schema = schema["properties"][key]
    return True


def _commented(chart: str, key: str) -> bool:
    """Documented as a commented-out option (``#   minAvailable: 2``) in the chart's values.yaml."""
    pattern = re.compile(rf"^\s*#+\s*{re.escape(key)}:", re.MULTILINE)
    files = [K8S_SCHEMAS / chart / "values.yaml",
             *(K8S_SCHEMAS / sub / "values.yaml" for sub in SUBCHARTS.get(chart, {}).values())]
    return any(pattern.search(f.read_text(encoding="utf-8")) for f in files)


def unknown_keys(chart: str, values: dict[str, Any], defaults: Any, schema: Any,
                 path: tuple[str, ...] = ()) -> list[str]:
    """Key paths of ``values`` that the chart does not know.

    Known: a key of the chart's default values.yaml, one its values.schema.json declares at that
    path, or one its values.yaml documents as a commented-out option. A map whose default is empty
    (``{}``) or null takes any keys (that is how these charts mark their pass-through blocks), and
    so do the FREE_FORM paths; lists are replaced whole by Helm and not descended into.
    """
    out = []
    for key, value in values.items():
        here = (*path, key)
        if here in FREE_FORM.get(chart, set()):
            continue
        if not isinstance(defaults, dict) or key not in defaults:
            if not (_schema_declares(schema, here) or _commented(chart, key)):
                out.append(".".join(here))
            continue
        default = defaults[key]
        if isinstance(value, dict) and isinstance(default, dict) and default:
            out += unknown_keys(chart, value, default, schema, here)
    return out


def _schema(chart: str) -> Any:
    path = K8S_SCHEMAS / chart / "values.schema.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


@pytest.mark.parametrize("name", list(CHARTS))
def test_every_key_is_one_the_chart_knows(name: str) -> None:
    chart = CHARTS[name]
    unknown = unknown_keys(chart, load_yaml(K8S_VALUES / f"{name}.yaml"), _defaults(chart), _schema(chart))
    assert not unknown, f"{name}.yaml: keys the {chart} chart does not have: {unknown}"


def test_the_key_check_can_fail() -> None:
    values = load_yaml(K8S_VALUES / "kube-prometheus-stack.yaml")
    values["prometheus"]["prometheusSpec"]["enableOTLPReciever"] = True
    values["grafana"]["sidecar"]["dashboards"]["lable"] = "x"
    chart = CHARTS["kube-prometheus-stack"]
    assert unknown_keys(chart, values, _defaults(chart), _schema(chart)) == [
        "prometheus.prometheusSpec.enableOTLPReciever", "grafana.sidecar.dashboards.lable"]
    values = load_yaml(K8S_VALUES / "otel-gateway.yaml")
    values["autoscaling"]["targetCPUUtilisationPercentage"] = 70  # the chart's schema lets this through
    chart = CHARTS["otel-gateway"]
    assert unknown_keys(chart, values, _defaults(chart), _schema(chart)) == [
        "autoscaling.targetCPUUtilisationPercentage"]


def test_vendored_sources_are_documented() -> None:
    readme = (K8S_SCHEMAS / "README.md").read_text(encoding="utf-8")
    for directory in sorted(p for p in K8S_SCHEMAS.iterdir() if p.is_dir()):
        assert (directory / "LICENSE").exists(), f"{directory.name}: no LICENSE"
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{directory.name}/`")), None)
        assert row and re.search(r"\b[0-9a-f]{40}\b", row), f"{directory.name}: no README row with its commit"
    used = set(CHARTS.values()) | {s for subs in SUBCHARTS.values() for s in subs.values()}
    assert used <= {p.name for p in K8S_SCHEMAS.iterdir()}


# --- Kubernetes objects --------------------------------------------------------------------------

def _objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted([*MANIFESTS.glob("*.yaml"), *RENDERED.glob("*.yaml")]):
        for doc in _docs(path):
            yield f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc


CORE = [(where, doc) for where, doc in _objects() if "." not in doc["apiVersion"].split("/")[0]
        or doc["apiVersion"].startswith("apps/")]
CUSTOM = [(where, doc) for where, doc in _objects() if (where, doc) not in CORE]


def test_every_object_is_validated() -> None:
    kinds = sorted({d["kind"] for _, d in CORE}), sorted({d["kind"] for _, d in CUSTOM})
    assert kinds == (["ConfigMap", "Deployment"], ["PrometheusRule", "ScaledObject"])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("where", "doc"), CORE, ids=[w for w, _ in CORE])
def test_objects_match_the_kubernetes_schema(where: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError with the path


def test_the_kubernetes_schema_check_can_fail() -> None:
    (doc,) = _docs(WORKER)
    doc["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldref"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


# The CRDs of the pinned charts that define the custom resources the kit ships.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): K8S_SCHEMAS / "keda-2.20.2" / "crd-scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"):
        K8S_SCHEMAS / "kube-prometheus-stack-88.5.3" / "crd-prometheusrules.yaml",
}
_TEMPLATE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_TEMPLATE = re.compile(r"\{\{.*?\}\}")
# Go regular-expression syntax in the prometheus-operator CRD that Python's `re` (which the
# validator is told to use) spells differently: a flag group after `^` must come first.
_GO_PATTERNS = {"^(?i)(abort|warn)?$": "(?i)^(abort|warn)?$"}


def _strict(schema: Any) -> Any:
    """The CRD's structural schema with unknown fields refused, as kubectl's (default) strict field
    validation does, unless the schema keeps unknown fields on purpose."""
    if isinstance(schema, dict):
        if schema.get("pattern") in _GO_PATTERNS:
            schema["pattern"] = _GO_PATTERNS[schema["pattern"]]
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for sub in schema.get("properties", {}).values():
            _strict(sub)
        for key in ("items", "additionalProperties"):
            _strict(schema.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, []):
                _strict(sub)
    return schema


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    # keda's CRD file is a chart template: its template lines are label/annotation blocks and one
    # label value, which the schema does not depend on.
    text = "\n".join(_TEMPLATE.sub("templated", line)
                     for line in CRDS[(api_version, kind)].read_text(encoding="utf-8").splitlines()
                     if not _TEMPLATE_LINE.match(line))
    crd = next(d for d in yaml.safe_load_all(text) if d)
    assert crd["spec"]["names"]["kind"] == kind
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return _strict(served["schema"]["openAPIV3Schema"])


def _validate_custom(doc: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(crd_schema(doc["apiVersion"], doc["kind"])), encoding="utf-8")
    instance = tmp_path / "object.json"
    instance.write_text(json.dumps(doc), encoding="utf-8")
    return _check_jsonschema(schema, instance)


@pytest.mark.parametrize(("where", "doc"), CUSTOM, ids=[w for w, _ in CUSTOM])
def test_custom_resources_match_their_crd(where: str, doc: dict[str, Any], tmp_path: Path) -> None:
    result = _validate_custom(doc, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_crd_check_can_fail(tmp_path: Path) -> None:
    (scaled,) = _docs(SCALEDOBJECT)
    scaled["spec"]["triggers"][0]["metdata"] = scaled["spec"]["triggers"][0].pop("metadata")
    result = _validate_custom(scaled, tmp_path)
    assert result.returncode == 1 and "metdata" in result.stdout, result.stdout + result.stderr
    (rule, _) = _docs(RENDERED / "prometheus-rules.yaml")
    rule["spec"]["groups"][0]["rules"][0]["for"] = 10  # a duration string, not a number
    result = _validate_custom(rule, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr


# --- Rendered from the compose stack's files -----------------------------------------------------

def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", KUBERNETES / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rendered_files_are_a_fresh_render() -> None:
    built = _render_module().build()
    assert set(built) == {p.name for p in RENDERED.glob("*.yaml")}
    stale = [name for name, text in built.items() if (RENDERED / name).read_text(encoding="utf-8") != text]
    assert not stale, f"{stale} out of date: run .venv/bin/python deploy/kubernetes/render.py"


def test_prometheus_rules_are_the_promtool_tested_files() -> None:
    tested = {(RULE_TESTS_DIR / f).resolve() for t in RULE_TESTS_DIR.glob("*_test.yaml")
              for f in load_yaml(t)["rule_files"]}
    assert tested == {p.resolve() for p in RULES_DIR.glob("*.yaml")}, "every rule file has promtool tests"
    rendered = {d["metadata"]["name"]: d for d in _docs(RENDERED / "prometheus-rules.yaml")}
    assert {f"otelkit-{p.stem}": load_yaml(p)["groups"] for p in RULES_DIR.glob("*.yaml")} == \
        {name: d["spec"]["groups"] for name, d in rendered.items()}


def test_dashboards_reach_the_grafana_sidecar() -> None:
    sidecar = load_yaml(K8S_VALUES / "kube-prometheus-stack.yaml")["grafana"]["sidecar"]
    maps = _docs(RENDERED / "grafana-dashboards.yaml")
    files = {name: text for m in maps for name, text in m["data"].items()}
    assert files == {p.name: p.read_text(encoding="utf-8") for p in dashboard_files()}
    for m in maps:
        assert m["metadata"]["labels"][sidecar["dashboards"]["label"]] == sidecar["dashboards"]["labelValue"]
        assert m["metadata"]["annotations"][sidecar["dashboards"]["folderAnnotation"]] == "otelkit"
    (datasources,) = _docs(RENDERED / "grafana-datasources.yaml")
    assert datasources["metadata"]["labels"][sidecar["datasources"]["label"]] == sidecar["datasources"]["labelValue"]
    # The chart's own Prometheus and Alertmanager datasources would take the uids the rendered ones have.
    assert sidecar["datasources"]["defaultDatasourceEnabled"] is False
    assert sidecar["datasources"]["alertmanager"]["enabled"] is False
    assert not load_yaml(K8S_VALUES / "kube-prometheus-stack.yaml")["grafana"].get("additionalDataSources")
    (text,) = datasources["data"].values()
    model = yaml.safe_load(text)
    uids = {d["uid"] for d in model["datasources"]}
    used = {ds["uid"] for p in dashboard_files()
            for ds in re.findall(r'"datasource":\s*(\{[^{}]*\})', p.read_text(encoding="utf-8"))
            for ds in [json.loads(ds)] if "uid" in ds and not ds["uid"].startswith(("$", "-- "))}
    assert used and used <= uids, used - uids
    urls = {d["url"] for d in model["datasources"]}
    assert urls == {"http://kps-prometheus:9090", "http://tempo:3200", "http://loki:3100",
                    "http://kps-alertmanager:9093"}
    # Everything else is the compose file's (correlations, exemplar links, `$$` escapes).
    compose = load_yaml(COLLECTOR / "grafana" / "provisioning" / "datasources" / "datasources.yaml")
    assert [{k: v for k, v in d.items() if k != "url"} for d in model["datasources"]] == \
        [{k: v for k, v in d.items() if k != "url"} for d in compose["datasources"]]


# --- The collector tiers ------------------------------------------------------------------------

def _chart_renames() -> dict[str, dict[str, str]]:
    """The component renames the chart applies itself (`rewriteDeprecatedComponentNames`, _helpers.tpl)."""
    helpers = (OTELCOL_CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    block = re.search(r'define "opentelemetry-collector\.deprecatedComponentRenames" -\}\}\n(.*?)\{\{- end', helpers,
                      re.DOTALL)
    assert block, "the chart's rename table moved: read _helpers.tpl again"
    renames: dict[str, dict[str, str]] = yaml.safe_load(block.group(1))["components"]
    return renames


@pytest.mark.parametrize("name", K8S_COLLECTORS)
def test_the_chart_renders_the_values_config_as_is(name: str) -> None:
    """The conditions under which the chart's config is `.Values.config` (kubernetes_collector_config)."""
    values = kubernetes_collector_values(name)
    config_tpl = (OTELCOL_CHART / "templates" / "_config.tpl").read_text(encoding="utf-8")
    # baseConfig: alternateConfig replaces the config; internalTelemetryViaOTLP rewrites service.telemetry.
    assert "{{- if .Values.alternateConfig }}" in config_tpl
    assert "{{- $config := deepCopy .Values.config }}" in config_tpl
    assert not values["alternateConfig"]
    assert not [p for p, v in values["presets"].items() if v.get("enabled")]
    assert not any(v.get("enabled") for v in values["internalTelemetryViaOTLP"].values() if isinstance(v, dict))
    # No component under a name the chart would rewrite (it renames old names, e.g. k8sattributes):
    # then its rewrite changes nothing.
    config = kubernetes_collector_config(name)
    for kind, table in _chart_renames().items():
        old = {c for c in config.get(kind) or {} if c.split("/")[0] in table}
        assert not old, f"{name}: {kind} {old} are deprecated names: use {[table[c.split('/')[0]] for c in old]}"
    assert values["image"]["repository"] == "otel/opentelemetry-collector-contrib"
    compose_image = load_yaml(COLLECTOR.parent / "compose.yaml")["services"]["otel-collector"]["image"]
    assert f"{values['image']['repository']}:{values['image']['tag']}" == compose_image


def _without_chart_telemetry_resource(config: dict[str, Any]) -> dict[str, Any]:
    # The chart's default `service.telemetry.resource` (pod/node names of the collector itself, from
    # env variables the chart sets) stays in every tier; compose has no such block.
    config["service"]["telemetry"].pop("resource")
    return config


def _release_services() -> dict[str, str]:
    kps = load_yaml(K8S_VALUES / "kube-prometheus-stack.yaml")["fullnameOverride"]
    return {"prometheus": f"{kps}-prometheus", "tempo": "tempo", "loki": "loki"}


def test_gateway_and_sampler_are_the_compose_configs_but_for_service_names() -> None:
    services = _release_services()
    gateway = load_yaml(COLLECTOR / "gateway" / "otelcol-gateway.yaml")
    gateway["exporters"]["otlp_http/prometheus"]["endpoint"] = f"http://{services['prometheus']}:9090/api/v1/otlp"
    assert gateway["exporters"]["otlp_http/loki"]["endpoint"] == f"http://{services['loki']}:3100/otlp"
    assert _without_chart_telemetry_resource(kubernetes_collector_config("otel-gateway")) == gateway
    sampler = load_yaml(COLLECTOR / "gateway" / "otelcol-sampler.yaml")
    assert sampler["exporters"]["otlp_grpc/tempo"]["endpoint"] == f"{services['tempo']}:4317"
    assert _without_chart_telemetry_resource(kubernetes_collector_config("otel-sampler")) == sampler


def test_tiers_are_wired_to_each_others_services() -> None:
    agent_values, gateway_values, sampler_values = (load_yaml(K8S_VALUES / f"{n}.yaml") for n in K8S_COLLECTORS)
    assert (agent_values["mode"], gateway_values["mode"], sampler_values["mode"]) == \
        ("daemonset", "deployment", "statefulset")
    agent = kubernetes_collector_config("otel-agent")
    gateway = kubernetes_collector_config("otel-gateway")
    # agent -> gateway Service (the chart names it after fullnameOverride)
    targets = {agent["exporters"][e]["endpoint"] for p in agent["service"]["pipelines"].values()
               for e in p["exporters"]}
    assert targets == {f"{gateway_values['fullnameOverride']}:4317"}
    # gateway -> every sampler pod: a DNS resolver on the sampler's HEADLESS Service
    for exporter in (e for n, e in gateway["exporters"].items() if n.startswith("loadbalancing")):
        assert exporter["resolver"]["dns"]["hostname"] == sampler_values["fullnameOverride"]
    assert sampler_values["service"]["clusterIP"] == "None"
    assert not sampler_values.get("autoscaling", {}).get("enabled"), "re-routing events mid-flight"
    # applications -> the agent on their node
    ports = kubernetes_collector_values("otel-agent")["ports"]
    assert ports["otlp"]["enabled"] and ports["otlp"]["hostPort"] == 4317 == ports["otlp"]["containerPort"]
    assert agent["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert set(agent["receivers"]) == {"otlp"}, "the chart's jaeger/zipkin/prometheus receivers are removed"


def test_agent_adds_kubernetes_metadata_in_every_pipeline() -> None:
    agent = kubernetes_collector_config("otel-agent")
    for name, pipeline in agent["service"]["pipelines"].items():
        assert pipeline["processors"] == ["memory_limiter", "k8s_attributes", "batch"], name
    k8s = agent["processors"]["k8s_attributes"]
    # The chart sets OTEL_K8S_NODE_NAME from spec.nodeName in every collector pod (its _pod.tpl).
    assert k8s["filter"]["node_from_env_var"] == "OTEL_K8S_NODE_NAME"
    pod_tpl = (OTELCOL_CHART / "templates" / "_pod.tpl").read_text(encoding="utf-8")
    assert re.search(r"- name: OTEL_K8S_NODE_NAME\s+valueFrom:\s+fieldRef:\s+fieldPath: spec\.nodeName", pod_tpl)
    # First association: by the names the worker sends through the downward API.
    first = {s["name"] for s in k8s["pod_association"][0]["sources"] if s["from"] == "resource_attribute"}
    assert first == {"k8s.pod.name", "k8s.namespace.name"} <= set(_worker_resource())
    assert k8s["pod_association"][-1]["sources"] == [{"from": "connection"}]
    rules = kubernetes_collector_values("otel-agent")["clusterRole"]
    assert rules["create"]
    granted = {(g, r) for rule in rules["rules"] for g in rule["apiGroups"] for r in rule["resources"]
               if {"get", "watch", "list"} <= set(rule["verbs"])}
    assert {("", "pods"), ("", "namespaces"), ("", "nodes"), ("apps", "replicasets")} <= granted


def test_collector_metrics_are_scraped_under_the_job_the_rules_query() -> None:
    """stack.yaml's alerts and the stack-health dashboard select job="otel-collector", "tempo", "loki"."""
    rules_text = (RULES_DIR / "stack.yaml").read_text(encoding="utf-8")
    assert "otel-collector" in rules_text
    for name in K8S_COLLECTORS:
        values = kubernetes_collector_values(name)
        assert values["ports"]["metrics"]["enabled"]
        monitor = values["podMonitor"] if values["podMonitor"]["enabled"] else values["serviceMonitor"]
        assert monitor["enabled"]
        relabelings = monitor.get("relabelings") or monitor["metricsEndpoints"][0]["relabelings"]
        assert {"targetLabel": "job", "replacement": "otel-collector"} in relabelings
    # Tempo's and Loki's monitors keep their Service names as the job (tempo, loki), as compose's jobs.
    assert load_yaml(K8S_VALUES / "tempo.yaml")["serviceMonitor"]["enabled"]
    loki = load_yaml(K8S_VALUES / "loki.yaml")["monitoring"]["serviceMonitor"]
    assert loki["enabled"] and loki["jobPrefix"] == ""
    assert re.search(r'up\{job=~"[^"]*\btempo\b[^"]*\bloki\b', rules_text)


def test_prometheus_accepts_what_the_gateway_and_tempo_send() -> None:
    spec = load_yaml(K8S_VALUES / "kube-prometheus-stack.yaml")["prometheus"]["prometheusSpec"]
    assert spec["enableOTLPReceiver"] and spec["enableRemoteWriteReceiver"]
    assert "exemplar-storage" in spec["enableFeatures"]
    compose = load_yaml(PROM_DIR / "prometheus.yaml")
    assert spec["otlp"]["promoteResourceAttributes"] == compose["otlp"]["promote_resource_attributes"]
    assert spec["otlp"]["keepIdentifyingResourceAttributes"] == compose["otlp"]["keep_identifying_resource_attributes"]
    assert spec["tsdb"]["outOfOrderTimeWindow"] == compose["storage"]["tsdb"]["out_of_order_time_window"]
    assert spec["scrapeInterval"] == compose["global"]["scrape_interval"]
    tempo = load_yaml(K8S_VALUES / "tempo.yaml")["tempo"]["metricsGenerator"]
    assert tempo["remoteWriteUrl"] == f"http://{_release_services()['prometheus']}:9090/api/v1/write"


# --- The worker: downward API and autoscaling ----------------------------------------------------

# What the kubelet would put in the downward-API fields of one pod.
POD = {"metadata.name": "tokens-worker-7d9f8-x2k4q", "metadata.namespace": "pipeline",
       "spec.nodeName": "node-a", "metadata.uid": "0b6f3f9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
       "status.hostIP": "10.0.3.7"}


def _worker_env() -> dict[str, str]:
    """The container's environment as the kubelet builds it: in order, `$(NAME)` replaced by the value of
    a variable defined earlier in the list (unknown references stay as written)."""
    (deployment,) = _docs(WORKER)
    env: dict[str, str] = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                      lambda m: env.get(m.group(1), m.group(0)), var["value"])
        elif "fieldRef" in var.get("valueFrom", {}):
            env[var["name"]] = POD[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def _worker_resource() -> dict[str, Any]:
    return dict(build_resource(resolve(environ=_worker_env())).attributes)


def test_worker_gets_pod_namespace_and_node_names_as_resource_attributes() -> None:
    env = _worker_env()
    assert "$(" not in env["OTEL_RESOURCE_ATTRIBUTES"] + env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    attrs = _worker_resource()
    assert attrs["k8s.pod.name"] == POD["metadata.name"]
    assert attrs["k8s.namespace.name"] == POD["metadata.namespace"]
    assert attrs["k8s.node.name"] == POD["spec.nodeName"]
    assert attrs["k8s.pod.uid"] == POD["metadata.uid"]
    assert attrs["service.name"] == "tokens-worker"
    # ... and exports to the agent on its own node, over gRPC (the agent's hostPort 4317).
    traces = resolve(environ=env).signal("traces")
    assert (traces.endpoint, traces.protocol) == (f"http://{POD['status.hostIP']}:4317", "grpc")


def _scaled_query() -> str:
    (scaled,) = _docs(SCALEDOBJECT)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    return str(trigger["metadata"]["query"])


def test_autoscaling_targets_the_worker_on_otelkits_queue_depth() -> None:
    (scaled,) = _docs(SCALEDOBJECT)
    (deployment,) = _docs(WORKER)
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (deployment["kind"], deployment["metadata"]["name"])
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    (trigger,) = scaled["spec"]["triggers"]
    services = _release_services()
    assert trigger["metadata"]["serverAddress"] == f"http://{services['prometheus']}.{NAMESPACE}.svc:9090"
    assert float(trigger["metadata"]["threshold"]) > 0
    # The series name Prometheus stores otelkit's queue gauge under (OTLP translation), and only
    # label names otelkit writes.
    found = selectors(_scaled_query())
    assert [name for name, _ in found] == [otlp_translation(_names.QUEUE_LENGTH)]
    labels = {label for _, matchers in found for label, _, _ in matchers}
    assert labels <= otelkit_label_names() | {"messaging_system", "messaging_destination_name"}
    # The waiting messages, as the backlog alerts count them.
    backlog = next(r["expr"] for g in load_yaml(RULES_DIR / "pipeline.yaml")["groups"] for r in g["rules"]
                   if r.get("alert") == "OtelkitQueueBacklog")
    state = re.compile(r'otelkit_messaging_queue_state!~"[^"]+"')
    assert state.findall(_scaled_query()) == state.findall(backlog) != []
