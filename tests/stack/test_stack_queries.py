"""Every panel, alert and runbook query answers: evaluated against a real Prometheus fed by the real demo.

Debian's Prometheus 2.42 scrapes ``otelkit demo --continuous`` (Redis and
PostgreSQL when they answer, every process on its own port found through the
``file_sd`` files otelkit writes) plus one real batch consumer. Each shipped
expression (dashboards with every variable on "All", alert rules without their
threshold, runbook queries, datasource correlations) must return at least one
series, except those in the one table of expressions only the real collector,
Tempo, Loki or Alertmanager can answer (``_querycheck.STACK_ONLY``, reasons
included, mirrored in docs/stack.md).

The compose path (OTLP into Prometheus 3) is not run here: Prometheus 2.42 has
no OTLP receiver. What it would store is derived by applying Prometheus 3's
documented OTLP translation (a translation, not Prometheus 3 itself), and the
series the scrape path stored are checked to have exactly those names and the
``job``/``service_name`` labels the OTLP path gives.

Under CI=true a missing ``prometheus`` binary is a failure.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _querycheck import (
    STACK_ONLY,
    Expression,
    Prometheus,
    all_expressions,
    markdown_table,
    otlp_translation,
    poll_answers,
    running_demo,
    stack_only_reason,
)
from _stacklib import REPO, RULE_TESTS_DIR, load_yaml, require_tool

from otelkit import _names
from tests.conftest import missing

pytestmark = pytest.mark.timeout(240)

EXPRESSIONS = all_expressions()
MUST_ANSWER = [e for e in EXPRESSIONS if stack_only_reason(e.where, e.query) is None]
DEMO_WORKERS = 2
# discoverer + workers + the batch consumer + the FastAPI service, each its own scrape target.
PROCESSES = {"token-discoverer": 1, "token-enricher": DEMO_WORKERS, "token-batcher": 1, "token-api": 1}
DEADLINE_S = 100  # generous: the machine may be loaded; the poll ends as soon as everything answered


@dataclass
class Live:
    prom: Prometheus
    answers: dict[str, list[dict[str, Any]]]
    demo_log: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = require_tool("prometheus", "prometheus")
    # The database panels and alerts need the demo on real Redis and PostgreSQL (its stand-ins,
    # a multiprocessing queue and SQLite, are not instrumented like them).
    from otelkit._demo._backends import tcp_reachable

    absent = [f"{name} on 127.0.0.1:{port}" for name, port in (("Redis", 6379), ("PostgreSQL", 5432))
              if not tcp_reachable("127.0.0.1", port, 1.0)]
    if absent:
        missing(f"the query check runs the demo on Redis and PostgreSQL; not reachable: {', '.join(absent)}")
    workdir = tmp_path_factory.mktemp("querycheck")
    sd_dir = workdir / "sd"
    sd_dir.mkdir()
    prom = Prometheus.start(binary, workdir, sd_dir)
    try:
        with running_demo(workdir, sd_dir, workers=DEMO_WORKERS):
            deadline = time.monotonic() + DEADLINE_S
            answers = poll_answers(prom, MUST_ANSWER, deadline)
            # The stack-only ones, once, for the table check below.
            answers.update({e.where: prom.query(e.query) for e in EXPRESSIONS if e.where not in answers})
            yield Live(prom, answers, workdir / "demo.log")
    finally:
        prom.stop()


@pytest.mark.parametrize("expr", MUST_ANSWER, ids=[e.where for e in MUST_ANSWER])
def test_expression_answers(live: Live, expr: Expression) -> None:
    assert live.answers[expr.where], (
        f"{expr.where} returned nothing from the demo.\nshipped: {expr.shipped}\nsent: {expr.query}\n"
        f"demo log tail:\n{live.demo_log.read_text(errors='replace')[-1500:]}")


def test_enough_expressions_are_checked() -> None:
    kinds = {e.where.split(":")[0] for e in MUST_ANSWER}
    assert {"otelkit-pipeline.json", "pipeline.yaml", "runbook", "otelkit-stack-health.json"} <= kinds, kinds
    assert len(MUST_ANSWER) >= 70, len(MUST_ANSWER)
    pipeline_rules = [e.where for e in EXPRESSIONS if e.where.startswith("pipeline.yaml:")]
    assert pipeline_rules and all(stack_only_reason(w, "") is None for w in pipeline_rules), \
        "every pipeline alert must answer from otelkit's own metrics"


def test_stack_only_table_is_exact(live: Live) -> None:
    """No stale row, and nothing listed as stack-only answers here (it would belong in the checked set)."""
    wheres = {e.where for e in EXPRESSIONS}
    stale = sorted(set(STACK_ONLY) - wheres)
    assert not stale, f"STACK_ONLY rows for expressions that no longer exist: {stale}"
    answering = sorted(e.where for e in EXPRESSIONS
                       if stack_only_reason(e.where, e.query) and live.answers.get(e.where))
    assert not answering, f"listed as stack-only but answered by the demo: {answering}"


def test_docs_list_every_expression_and_its_status() -> None:
    text = (REPO / "docs" / "stack.md").read_text(encoding="utf-8")
    table = markdown_table(EXPRESSIONS)
    assert table in text, ("docs/stack.md is missing the current query table: regenerate it with "
                           "`.venv/bin/python tests/stack/_querycheck.py --markdown`")


def test_every_process_is_scraped(live: Live) -> None:
    """Several processes, one exporter each: every one is a target (none is blind)."""
    for service, count in PROCESSES.items():
        up = live.prom.query(f'up{{job="{service}"}} == 1')
        assert len({r["metric"]["instance"] for r in up}) == count, (service, up)


def _series(prom: Prometheus, match: str) -> list[dict[str, str]]:
    query = urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(f"{prom.url}/api/v1/series?{query}", timeout=10) as resp:
        return list(json.load(resp)["data"])


def _translated_names() -> dict[str, str]:
    names = {}
    for metric in _names.ALL_METRICS:
        base = otlp_translation(metric)
        for suffix in (("_bucket", "_sum", "_count") if metric.kind == "histogram" else ("",)):
            names[base + suffix] = metric.name
    return names


# Emitted only when something rare happens, which the demo never provokes: a metric stream reaching the
# cardinality limit (tests/integration/test_metric_cardinality.py produces it at a real collector).
ONLY_ON_EVENT = {otlp_translation(_names.TELEMETRY_METRIC_OVERFLOWS)}


def test_scrape_path_names_are_the_otlp_translation(live: Live) -> None:
    """Every otelkit metric is stored under the name Prometheus 3's OTLP translation gives it, so the
    dashboards and rules read the same names on both paths (and _names.prometheus agrees)."""
    stored = live.prom.series_names()
    translated = _translated_names()
    missing = sorted(set(translated) - stored - ONLY_ON_EVENT)
    assert not missing, f"otelkit metrics the demo did not produce under their OTLP-translated name: {missing}"
    extra = sorted(n for n in stored if n.startswith("otelkit_") and n not in translated)
    assert not extra, f"series under names the OTLP path would not produce: {extra}"
    for metric in _names.ALL_METRICS:
        assert metric.prometheus == otlp_translation(metric), metric


def test_both_paths_carry_job_and_service_name(live: Live) -> None:
    """The rules and Alertmanager group by service_name; the OTLP path sets it (and job) from
    service.name, the scrape path from the file_sd labels otelkit writes. Same values either way."""
    problems = []
    for name in sorted(_translated_names()):
        for labels in _series(live.prom, name):
            if not labels.get("service_name") or labels.get("job") != labels["service_name"]:
                problems.append(f"{name}: job={labels.get('job')!r} service_name={labels.get('service_name')!r}")
    assert not problems, "\n".join(sorted(set(problems))[:20])


_SERIES = re.compile(r"^([a-zA-Z_:][\w:]*)\{(.*)\}$")


def test_promtool_tests_use_the_labels_real_series_carry(live: Live) -> None:
    """The alert unit tests feed series shaped like the real ones: only labels the real series have,
    and the service labels (job, instance, service_name) every real series has."""
    real: dict[str, set[str]] = {}
    problems = []
    for path in sorted(RULE_TESTS_DIR.glob("pipeline_test.yaml")):
        for case in load_yaml(path)["tests"]:
            for series in case.get("input_series", []):
                match = _SERIES.match(series["series"])
                assert match, series
                name, body = match.groups()
                if name not in real:
                    real[name] = {k for s in _series(live.prom, name) for k in s} - {"__name__"}
                if not real[name]:
                    problems.append(f"{name}: no such series from the demo")
                    continue
                used = set(re.findall(r'(\w+)="', body))
                unknown = used - real[name]
                if unknown:
                    problems.append(f"{case['name']}: {name} with {sorted(unknown)}, which real series lack "
                                    f"(they have {sorted(real[name])})")
                absent = {"job", "instance", "service_name"} - used
                if absent:
                    problems.append(f"{case['name']}: {name} without {sorted(absent)}, which every real series has")
    assert not problems, "\n".join(sorted(set(problems)))


def test_the_check_catches_a_query_that_finds_nothing(live: Live) -> None:
    """Negative control: names as the collector's v0.152+ default reader or a missing suffix would give them."""
    assert live.prom.query("sum(rate(otelkit_pipeline_processed_items[1m]))") == []
    assert live.prom.query('{__name__="otelkit_messaging_message_time_in_queue_seconds"}') == []


def test_thresholds_are_stripped_but_nothing_else() -> None:
    from _querycheck import strip_threshold

    def same(a: str) -> str:  # the parser prints `x{}` and drops spaces before parentheses
        return a.replace(" ", "").replace("{}", "")

    assert same(strip_threshold("sum by (a) (rate(x[5m])) > 0.05")) == "sumby(a)(rate(x[5m]))"
    assert same(strip_threshold("(x > 0) unless on (a) (y > 0)")) == "x"
    assert same(strip_threshold("a / b > 0.1")) == "a/b"
    assert "or" in strip_threshold("label_replace(x, 'l', 'v', '', '') > 0 or label_replace(y, 'l', 'w', '', '') > 0")
