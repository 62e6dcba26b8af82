"""Docker smoke test of the bundled stack (marker ``stack``).

Brings compose.yaml up, sends a trace (a SERVER span with a CLIENT child), a
log record inside it and metrics through otelkit, then finds them: the trace
in Tempo by its ID and by TraceQL search, the log in Loki by trace_id, the
metrics (and Tempo's span metrics for the new service) in Prometheus. Also
checks Grafana's datasources answer, the alert rules are loaded and the alert
sink serves runbooks. Always tears the stack down (``down -v``).

Skipped, with the reason, on a machine without a Docker engine: that includes
this project's CI machine, where Docker is not one of the services (the static
checks in the other tests/stack modules run there instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from _stacklib import COMPOSE, REPO, SMOKE_EMITTER, run

from tests.conftest import cannot_exist_here

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

T = TypeVar("T")
PROJECT = "otelkit-smoke"
GRAFANA = "http://127.0.0.1:3000"
TEMPO = "http://127.0.0.1:3200"
LOKI = "http://127.0.0.1:3100"
PROMETHEUS = "http://127.0.0.1:9090"
SINK = "http://127.0.0.1:9099"



def _docker_available() -> str | None:
    """None when a Docker engine and the compose plugin answer, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30, check=False)
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[:200]})"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30,
                             check=False)
    if compose.returncode != 0:
        return "the docker compose plugin is missing"
    return None


def _compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run(["docker", "compose", "-p", PROJECT, "-f", str(COMPOSE), *args], cwd=REPO, timeout=timeout)


def _poll(what: str, probe: Callable[[], T | None], deadline_s: float = 120.0, interval_s: float = 1.0) -> T:
    """Call probe until it returns something truthy; fail with `what` at the deadline (bounded loop)."""
    deadline = time.monotonic() + deadline_s
    last_error: Exception | None = None
    for _ in range(int(deadline_s / interval_s) + 1):
        try:
            result = probe()
            if result:
                return result
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            break
        time.sleep(interval_s)  # polling interval of a bounded loop, not synchronisation by sleeping
    pytest.fail(f"timed out waiting for {what} (last error: {last_error!r})")


def _get_json(url: str, params: dict[str, str] | None = None) -> Any:
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _prom(query: str) -> list[dict[str, Any]]:
    return _get_json(f"{PROMETHEUS}/api/v1/query", {"query": query})["data"]["result"]


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[None]:
    reason = _docker_available()
    if reason:
        # No Docker engine can run on this project's machines (CI's included): the one skip allowed there.
        cannot_exist_here(f"Docker smoke test: {reason}. Static checks of the stack ran in the other "
                          "tests/stack modules.")
    config = _compose("--profile", "demo", "config", "-q", timeout=60)
    assert config.returncode == 0, config.stderr
    failed_before = request.session.testsfailed
    up = _compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=420)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield
    finally:
        if up.returncode != 0 or request.session.testsfailed > failed_before:
            # What the services said, for the CI log (the stack is deleted right after).
            logs = _compose("logs", "--no-color", "--tail", "200", timeout=120)
            sys.stderr.write(logs.stdout[-20000:])
        _compose("down", "-v", "--remove-orphans", timeout=300)


@pytest.fixture(scope="module")
def emitted(stack: None) -> dict[str, str]:
    service = f"otelkit-smoke-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200"})
    proc = subprocess.run([sys.executable, "-c", SMOKE_EMITTER, service, "http://127.0.0.1:4317"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trace_id = json.loads(proc.stdout.strip().splitlines()[-1])["trace_id"]
    return {"service": service, "trace_id": trace_id}


def test_trace_is_in_tempo_by_id_and_by_search(emitted: dict[str, str]) -> None:
    def by_id() -> Any:
        try:
            return _get_json(f"{TEMPO}/api/v2/traces/{emitted['trace_id']}")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise
    trace = _poll("the trace in Tempo by ID", by_id)
    names = {span["name"] for batch in trace["trace"]["resourceSpans"] for scope in batch["scopeSpans"]
             for span in scope["spans"]}
    assert {"GET /smoke", "GET"} <= names

    query = f'{{ resource.service.name = "{emitted["service"]}" }}'
    found = _poll("the trace in a TraceQL search", lambda: [
        t for t in _get_json(f"{TEMPO}/api/search", {"q": query, "start": str(int(time.time()) - 3600),
                                                      "end": str(int(time.time()) + 60)}).get("traces", [])
        if t["traceID"].rjust(32, "0") == emitted["trace_id"]])
    assert found


def test_log_is_in_loki_with_its_trace_id(emitted: dict[str, str]) -> None:
    query = f'{{service_name="{emitted["service"]}"}} | trace_id="{emitted["trace_id"]}"'

    def lines() -> list[str]:
        result = _get_json(f"{LOKI}/loki/api/v1/query_range", {
            "query": query, "start": str((int(time.time()) - 3600) * 10**9), "limit": "10"})["data"]["result"]
        # Each value is [timestamp, line] (plus structured metadata with some Loki settings).
        return [value[1] for stream in result for value in stream["values"]]
    found = _poll("the log record in Loki", lines)
    assert any("smoke log line" in line for line in found)


def test_metrics_are_in_prometheus(emitted: dict[str, str]) -> None:
    service = emitted["service"]
    counter = _poll("the counter in Prometheus",
                    lambda: _prom(f'otelkit_smoke_requests_total{{service_name="{service}"}}'))
    assert float(counter[0]["value"][1]) == 1.0
    _poll("the histogram in Prometheus",
          lambda: _prom(f'otelkit_smoke_duration_seconds_count{{service_name="{service}"}}'))
    _poll("Tempo span metrics for the service",
          lambda: _prom(f'traces_spanmetrics_calls_total{{service="{service}"}}'))
    _poll("the collector's own metrics", lambda: _prom("otelcol_receiver_accepted_spans_total > 0"))


def test_grafana_datasources_answer(stack: None) -> None:
    for uid in ("prometheus", "tempo", "loki"):
        health = _poll(f"Grafana datasource {uid}",
                       lambda uid=uid: _get_json(f"{GRAFANA}/api/datasources/uid/{uid}/health"))
        assert health.get("status") == "OK", (uid, health)
    boards = _get_json(f"{GRAFANA}/api/search", {"tag": "otelkit"})
    assert {"otelkit-pipeline", "otelkit-service-red", "otelkit-stack-health"} <= {b["uid"] for b in boards}


def test_rules_are_loaded_and_runbooks_served(stack: None) -> None:
    groups = _poll("the alert rules in Prometheus",
                   lambda: _get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"])
    assert {"otelkit-pipeline", "otelkit-stack"} <= {g["name"] for g in groups}
    with urllib.request.urlopen(f"{SINK}/runbooks/OtelkitComponentDown.md", timeout=10) as resp:
        assert b"# OtelkitComponentDown" in resp.read()
    firing = [a for a in _get_json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
              if a["state"] == "firing" and a["labels"]["alertname"].startswith("OtelkitCollector")]
    assert not firing, firing
