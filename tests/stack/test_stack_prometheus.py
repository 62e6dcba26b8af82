"""Prometheus configuration, alert rules and their unit tests, checked with the real promtool.

promtool comes from Debian's `prometheus` package (2.42 on Debian 12), older
than the Prometheus the stack runs (v3.14). What is and is not checked:

- `promtool check config` validates the whole prometheus.yaml except the
  Prometheus-3-only `otlp:` block, which promtool 2.42 rejects as an unknown
  field. That block is removed from a temporary copy, and checked here on its
  own against the keys Prometheus 3 documents (PROMETHEUS3_ONLY below).
- `promtool check rules` and `promtool test rules` run on the files as they are.
- Under CI=true a missing promtool fails the tests instead of skipping them.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from _stacklib import DASHBOARDS, PROM_DIR, REPO, RULE_TESTS_DIR, RULES_DIR, RUNBOOKS, load_yaml, require_tool, run

# Top-level keys of prometheus.yaml that only Prometheus 3 understands, with the
# sub-keys Prometheus 3.x accepts in them (configuration docs, `otlp` block).
PROMETHEUS3_ONLY: dict[str, set[str]] = {
    "otlp": {"promote_resource_attributes", "ignore_resource_attributes", "promote_all_resource_attributes",
             "keep_identifying_resource_attributes", "translation_strategy", "convert_histograms_to_nhcb",
             "promote_scope_metadata"},
}
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_BASE = "http://127.0.0.1:9099/runbooks/"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def _alerts() -> list[dict[str, object]]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yaml")):
        for group in load_yaml(path)["groups"]:
            rules += [rule for rule in group["rules"] if "alert" in rule]
    return rules


def test_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    config = load_yaml(PROM_DIR / "prometheus.yaml")
    for key in PROMETHEUS3_ONLY:
        config.pop(key, None)
    # Point rule_files at the repository's rules (they are mounted at
    # /etc/prometheus/rules in the container), so check config checks them too.
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    config["rule_files"] = [str(RULES_DIR / "*.yaml")]
    checked = tmp_path / "prometheus.yaml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run([promtool, "check", "config", str(checked)])
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "SUCCESS" in output
    for rule_file in RULES_DIR.glob("*.yaml"):
        assert rule_file.name in output, f"check config did not check {rule_file.name}:\n{output}"


def test_promtool_rejects_what_the_check_removes(promtool: str, tmp_path: Path) -> None:
    """The removed block really is the only thing this promtool cannot read (else the check is too lenient)."""
    config = load_yaml(PROM_DIR / "prometheus.yaml")
    config["rule_files"] = []
    checked = tmp_path / "prometheus.yaml"
    checked.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run([promtool, "check", "config", str(checked)])
    if result.returncode == 0:
        pytest.fail("this promtool accepts the otlp block: drop it from PROMETHEUS3_ONLY so it is checked for real")
    assert "field otlp not found" in result.stdout + result.stderr


def test_prometheus3_settings_are_well_formed() -> None:
    config = load_yaml(PROM_DIR / "prometheus.yaml")
    otlp = config["otlp"]
    assert set(otlp) <= PROMETHEUS3_ONLY["otlp"], set(otlp) - PROMETHEUS3_ONLY["otlp"]
    promoted = otlp["promote_resource_attributes"]
    assert all(isinstance(attr, str) and attr for attr in promoted)
    # The dashboards and rules group by service_name: it must be promoted.
    assert "service.name" in promoted
    assert otlp["keep_identifying_resource_attributes"] is True
    # Out-of-order OTLP batches and remote-write retries are accepted.
    assert config["storage"]["tsdb"]["out_of_order_time_window"]


def test_prometheus_scrapes_every_stack_component() -> None:
    config = load_yaml(PROM_DIR / "prometheus.yaml")
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"prometheus", "otel-collector", "tempo", "loki", "grafana", "alertmanager"} <= jobs
    # OtelkitComponentDown watches exactly these jobs.
    down = next(rule for rule in _alerts() if rule["alert"] == "OtelkitComponentDown")
    watched = set(re.search(r'job=~"([^"]+)"', str(down["expr"])).group(1).split("|"))  # type: ignore[union-attr]
    assert watched <= jobs, watched - jobs
    assert {"prometheus", "otel-collector", "tempo", "loki", "grafana", "alertmanager"} <= watched
    targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert "alertmanager:9093" in {t for am in config["alerting"]["alertmanagers"]
                                    for sc in am["static_configs"] for t in sc["targets"]}
    assert "otel-collector:8888" in targets


def test_promtool_check_rules(promtool: str) -> None:
    files = sorted(str(p) for p in RULES_DIR.glob("*.yaml"))
    assert files
    result = run([promtool, "check", "rules", *files])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool: str) -> None:
    files = sorted(str(p) for p in RULE_TESTS_DIR.glob("*_test.yaml"))
    assert files
    result = run([promtool, "test", "rules", *files], cwd=RULE_TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files), result.stdout


def test_promtool_test_rules_catches_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """Negative control: a unit test expecting the wrong severity fails, so the suite is not vacuous."""
    shutil.copytree(RULES_DIR, tmp_path / "rules")
    (tmp_path / "tests").mkdir()
    text = (RULE_TESTS_DIR / "stack_test.yaml").read_text(encoding="utf-8")
    broken = text.replace("exp_labels: {severity: critical, job: tempo", "exp_labels: {severity: warning, job: tempo")
    assert broken != text
    (tmp_path / "tests" / "stack_test.yaml").write_text(broken, encoding="utf-8")
    result = run([promtool, "test", "rules", "stack_test.yaml"], cwd=tmp_path / "tests")
    assert result.returncode != 0
    assert "OtelkitComponentDown" in result.stdout + result.stderr


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    firing: dict[str, set[str]] = defaultdict(set)   # alert -> severities seen firing
    quiet: set[str] = set()                           # alerts with an exp_alerts: [] case
    for path in RULE_TESTS_DIR.glob("*_test.yaml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if expected:
                    firing[check["alertname"]].update(a["exp_labels"]["severity"] for a in expected)
                else:
                    quiet.add(check["alertname"])
    missing = []
    for rule in _alerts():
        name, severity = str(rule["alert"]), rule["labels"]["severity"]  # type: ignore[index]
        if severity not in firing.get(name, set()):
            missing.append(f"{name} ({severity}) never fires in a unit test")
        if name not in quiet:
            missing.append(f"{name} has no unit test where it stays quiet")
    assert not missing, "\n".join(missing)


def test_every_alert_is_documented() -> None:
    problems = []
    names = set()
    for rule in _alerts():
        name = str(rule["alert"])
        names.add(name)
        labels, annotations = rule.get("labels", {}), rule.get("annotations", {})
        assert isinstance(labels, dict) and isinstance(annotations, dict)
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r} not in {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        url = str(annotations.get("runbook_url", ""))
        if url != f"{RUNBOOK_BASE}{name}.md":
            problems.append(f"{name}: runbook_url {url!r} is not {RUNBOOK_BASE}{name}.md")
        runbook = RUNBOOKS / f"{name}.md"
        if not runbook.is_file():
            problems.append(f"{name}: {runbook.relative_to(REPO)} missing")
            continue
        text = runbook.read_text(encoding="utf-8")
        for heading in ("## What it means", "## How to diagnose", "## How to fix"):
            if heading not in text:
                problems.append(f"{runbook.name}: no '{heading}' section")
        for uid in re.findall(r"127\.0\.0\.1:3000/d/([\w-]+)", text):
            if not (DASHBOARDS / f"{uid}.json").is_file():
                problems.append(f"{runbook.name}: links to dashboard {uid!r}, which does not exist")
    orphans = {p.stem for p in RUNBOOKS.glob("Otelkit*.md")} - names
    assert not orphans, f"runbooks for alerts that do not exist: {sorted(orphans)}"
    assert not problems, "\n".join(problems)
