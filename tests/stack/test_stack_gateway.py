"""The gateway (load-balancing) and tail-sampling collector configs in collector/gateway/ (issue 15, part 2).

Checked the same way as the compose collector configs (test_stack_collector.py): parsed and checked
structurally, every component type against the otelcol-contrib 0.159.0 component list below, and
`otelcol-contrib validate` only when a binary is available (none can be installed here). The Kubernetes
kit's gateway and sampler tiers (deploy/kubernetes/values/, merged onto the collector chart's defaults as
Helm merges them) get the same checks.

What the design relies on, checked against otelkit's own names and functions:
- spans with a correlation ID are routed by it (`routing_key: attributes`), the others by trace ID,
  and the two gateway filters are exact complements (no span lost, none sent twice);
- the sampler's policies read attribute keys and values otelkit writes (otelkit._names);
- the baseline policy's SHA-256 prefix selects exactly the events otelkit's head sampler keeps at 1/16.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from _stacklib import COLLECTOR, kubernetes_collector_config, load_yaml, run

from otelkit import _names
from otelkit._sampling import correlation_randomness, threshold
from tests.conftest import cannot_exist_here

GATEWAY = COLLECTOR / "gateway" / "otelcol-gateway.yaml"
SAMPLER = COLLECTOR / "gateway" / "otelcol-sampler.yaml"
CONFIGS = [GATEWAY, SAMPLER]
# The Kubernetes kit's gateway and sampler tiers (deploy/kubernetes/values/otel-{gateway,sampler}.yaml,
# merged onto the opentelemetry-collector chart's defaults as Helm does) get the same checks.
GATEWAY_IDS = [GATEWAY.name, "k8s:otel-gateway"]
SAMPLER_IDS = [SAMPLER.name, "k8s:otel-sampler"]


def _config(config_id: str) -> Any:
    if config_id.startswith("k8s:"):
        return kubernetes_collector_config(config_id.removeprefix("k8s:"))
    return load_yaml(COLLECTOR / "gateway" / config_id)

# Component types these configs may use, all in otelcol-contrib 0.159.0 (the distribution's
# manifest.yaml in opentelemetry-collector-releases: loadbalancing exporter, filter and
# tail_sampling processors; otlp_grpc/otlp_http are the current names of the OTLP exporters).
CONTRIB_0_159 = {
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch", "filter", "tail_sampling"},
    "exporters": {"loadbalancing", "otlp_grpc", "otlp_http"},
    "extensions": {"health_check"},
}
# tail_sampling policy types at 0.159.0 (processor/tailsamplingprocessor README) used here.
POLICY_TYPES = {"status_code", "string_attribute", "numeric_attribute", "ottl_condition", "probabilistic", "and"}
# loadbalancing routing_key values for traces at 0.159.0: traceID, service, attributes (#36567).
TRACE_ROUTING_KEYS = {"traceID", "service", "attributes"}
CORRELATION_IS_NIL = f'attributes["{_names.CORRELATION_ATTRIBUTE}"] == nil'
CORRELATION_NOT_NIL = f'attributes["{_names.CORRELATION_ATTRIBUTE}"] != nil'


def _kind(component_id: str) -> str:
    return component_id.split("/", 1)[0]


@pytest.mark.parametrize("config_id", GATEWAY_IDS + SAMPLER_IDS)
def test_pipelines_reference_defined_components(config_id: str) -> None:
    config = _config(config_id)
    pipelines = config["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, pipeline in pipelines.items():
        processors = pipeline["processors"]
        assert _kind(processors[0]) == "memory_limiter", f"{name}: memory_limiter must come first"
        for section in used:
            entries = pipeline.get(section, [])
            assert entries, f"{name}: no {section}"
            missing = [e for e in entries if e not in (config.get(section) or {})]
            assert not missing, f"{name}: {section} {missing} are not defined"
            used[section].update(entries)
    for section, ids in used.items():
        assert set(config.get(section) or {}) == ids, f"{section} defined but in no pipeline"
    assert set(config["service"]["extensions"]) == set(config["extensions"])
    for section, known in CONTRIB_0_159.items():
        unknown = {c for c in config.get(section) or {} if _kind(c) not in known}
        assert not unknown, f"{section} {unknown} are not in otelcol-contrib 0.159.0's list here"


@pytest.mark.parametrize("config_id", GATEWAY_IDS + SAMPLER_IDS)
def test_listeners_bind_all_interfaces(config_id: str) -> None:
    config = _config(config_id)
    for proto in config["receivers"]["otlp"]["protocols"].values():
        assert proto["endpoint"].startswith("0.0.0.0:")
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"


@pytest.mark.parametrize("config_id", GATEWAY_IDS)
def test_gateway_routes_every_span_of_an_event_to_one_sampler(config_id: str) -> None:
    gateway = _config(config_id)
    pipelines = gateway["service"]["pipelines"]
    traces = {n: p for n, p in pipelines.items() if n.split("/")[0] == "traces"}
    assert len(traces) == 2
    routes: dict[str, str] = {}
    for pipeline in traces.values():
        assert pipeline["receivers"] == ["otlp"]
        (exporter_id,) = pipeline["exporters"]
        exporter = gateway["exporters"][exporter_id]
        assert _kind(exporter_id) == "loadbalancing"
        assert exporter["routing_key"] in TRACE_ROUTING_KEYS
        assert exporter["resolver"]["dns"] == {"hostname": "otelcol-sampler", "port": "4317"}
        (filter_id,) = [p for p in pipeline["processors"] if _kind(p) == "filter"]
        (condition,) = gateway["processors"][filter_id]["traces"]["span"]  # spans matching it are DROPPED
        routes[condition] = exporter["routing_key"]
        if exporter["routing_key"] == "attributes":
            # The exporter reads the first span of each trace: every span here carries the attribute.
            assert exporter["routing_attributes"] == [_names.CORRELATION_ATTRIBUTE]
    # Spans WITH a correlation ID (the nil ones dropped) go by it; the rest by trace ID. The two filters
    # are each other's negation, so every span takes exactly one of the two pipelines.
    assert routes == {CORRELATION_IS_NIL: "attributes", CORRELATION_NOT_NIL: "traceID"}
    # Metrics and logs are never sampled: straight to the backends, not to the sampler tier.
    assert all(_kind(e) == "otlp_http" for n in ("metrics", "logs") for e in pipelines[n]["exporters"])


def _policies(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in config["processors"]["tail_sampling"]["policies"]}


@pytest.mark.parametrize("config_id", SAMPLER_IDS)
def test_sampler_keeps_errors_retries_dead_letters_and_slow_stages(config_id: str) -> None:
    sampler = _config(config_id)
    assert sampler["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "tail_sampling", "batch"]
    tail = sampler["processors"]["tail_sampling"]
    policies = _policies(sampler)
    assert {p["type"] for p in policies.values()} <= POLICY_TYPES
    assert policies["errors"]["status_code"]["status_codes"] == ["ERROR"]
    outcome = policies["retries-and-dead-letters"]["string_attribute"]
    assert outcome["key"] == _names.ATTR_OUTCOME
    # otelkit._names.ATTR_OUTCOME's values: messaging ack|retry|dead_letter|drop, stages success|failure.
    assert {"retry", "dead_letter"} <= set(outcome["values"]) <= {"retry", "dead_letter", "drop", "failure"}
    assert policies["redeliveries"]["numeric_attribute"]["key"] == _names.ATTR_ATTEMPT
    assert policies["redeliveries"]["numeric_attribute"]["min_value"] == 2
    slow = policies["slow-stages"]["ottl_condition"]["span"]
    stages = [re.search(r'"otelkit\.pipeline\.stage"\] == "(\w+)"', c) for c in slow]
    assert {m.group(1) for m in stages if m} >= {"fetch", "persist"}
    assert all("end_time_unix_nano - start_time_unix_nano >" in c for c in slow), "per-span duration"
    # Every attribute an OTTL condition reads is one otelkit writes.
    known = {_names.CORRELATION_ATTRIBUTE, _names.ATTR_STAGE, _names.ATTR_OUTCOME, _names.ATTR_ATTEMPT}
    for policy in policies.values():
        for sub in [policy, *policy.get("and", {}).get("and_sub_policy", [])]:
            for condition in sub.get("ottl_condition", {}).get("span", []):
                assert set(re.findall(r'attributes\["([^"]+)"\]', condition)) <= known, condition
                assert sub["ottl_condition"]["error_mode"] == "ignore"
    # Capacity (docs/capacity.md): the default 50 000 traces is exhausted at ~680 events/s.
    assert tail["num_traces"] >= 10 * 50_000
    assert int(tail["decision_wait"].rstrip("s")) >= 10
    assert tail["decision_cache"]["non_sampled_cache_size"] > 0, "late spans of dropped traces stay dropped"


@pytest.mark.parametrize("config_id", SAMPLER_IDS)
def test_baseline_by_correlation_id_is_the_head_samplers_function(config_id: str) -> None:
    """SHA-256(correlation ID) starting with the configured hex prefix <=> otelkit_correlation_ratio keeps it."""
    policies = _policies(_config(config_id))
    (condition,) = policies["baseline-by-correlation-id"]["ottl_condition"]["span"]
    assert condition.startswith(CORRELATION_NOT_NIL + " and ")
    match = re.search(r'IsMatch\(SHA256\(attributes\["([^"]+)"\]\), "\^([0-9a-f])"\)', condition)
    assert match and match.group(1) == _names.CORRELATION_ATTRIBUTE
    digit = int(match.group(2), 16)
    ratio = (16 - digit) / 16
    assert match.group(2) == "f" and ratio == 1 / 16
    t = threshold(ratio)
    ids = [f"order-{i}-{uuid.uuid4().hex[:8]}" for i in range(4000)] + ["order-42"]
    tail = {c for c in ids if re.match(f"^[{match.group(2)}-f]", hashlib.sha256(c.encode()).hexdigest())}
    head = {c for c in ids if correlation_randomness(c) >= t}
    assert tail == head
    assert 0.03 < len(tail) / len(ids) < 0.10  # about 1/16: the comparison is not vacuous
    # Traces without a correlation ID get the same share, by trace ID, and only they do.
    (no_id, by_trace) = policies["baseline-without-correlation-id"]["and"]["and_sub_policy"]
    assert no_id["ottl_condition"]["span"] == [CORRELATION_IS_NIL]
    assert by_trace["probabilistic"]["sampling_percentage"] == pytest.approx(100 * ratio)


def test_otelcol_validate_gateway(tmp_path: Path) -> None:
    named = os.environ.get("OTELCOL_CONTRIB_BIN")
    if named and not os.access(named, os.X_OK):
        pytest.fail(f"OTELCOL_CONTRIB_BIN={named!r} is not an executable file")
    binary = named or shutil.which("otelcol-contrib")
    if not binary:
        cannot_exist_here("no otelcol-contrib binary: PyPI, npm and Debian ship none with these components (see "
                          "test_stack_collector.py); set OTELCOL_CONTRIB_BIN to run `otelcol-contrib validate`")
    for path in CONFIGS:
        result = run([binary, "validate", f"--config={path}"], cwd=tmp_path)
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"
