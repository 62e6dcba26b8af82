"""Every shipped PromQL expression, evaluated against a real Prometheus fed by the real demo.

Used by ``tests/stack/test_stack_queries.py`` and runnable by hand
(``.venv/bin/python tests/stack/_querycheck.py``: runs the demo and Prometheus,
prints every expression with its answer, and the docs table with ``--markdown``).

What answers here, and what does not:

- Prometheus is Debian's 2.42 (``prometheus`` package), started on a free
  127.0.0.1 port with a temporary storage directory. It scrapes the demo
  (``otelkit demo --continuous``) through otelkit's ``prometheus`` exporter: one
  scrape endpoint per process, found through the ``file_sd`` files otelkit writes
  (``OTELKIT_PROMETHEUS_SD_DIR``), which also set ``job`` and ``service_name`` to
  the service name as the OTLP path does.
- The documented compose path is different: OTLP → collector → Prometheus 3's
  OTLP receiver. Prometheus 2.42 has no OTLP receiver, so that path is *not* run
  here. What it would store is derived instead, by applying Prometheus 3's
  documented OTLP translation (``translation_strategy: UnderscoreEscapingWithSuffixes``:
  dots to underscores, unit suffix, ``_total`` on counters; ``service.name`` →
  ``job`` and the promoted ``service_name``) — this is a translation, not
  Prometheus 3 itself. :func:`otlp_translation` computes it and the test checks
  that every otelkit series the scrape path stores has exactly that name and
  carries ``job``/``service_name`` as the OTLP path would.
- Expressions only the real collector, Tempo, Loki or a longer-running stack can
  answer are listed in :data:`STACK_ONLY` with the reason; everything else must
  return at least one series.
- The Kubernetes kit's KEDA queue-depth query targets the demo's queue (``tokens`` on Redis), so it is
  checked here exactly as shipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stacklib import (
    KUBERNETES,
    RULES_DIR,
    RUNBOOKS,
    dashboard_files,
    datasource_queries,
    iter_panels,
    load_yaml,
)

from otelkit import _names
from otelkit.testing._receiver import free_port, free_ports

KUBERNETES_MANIFESTS = KUBERNETES / "manifests"

# --- The table of expressions this check cannot answer ------------------------------------------

_COLLECTOR = "the collector's own metrics (otelcol_*): needs the real collector (no package registry ships it)"
_TEMPO = "Tempo's span metrics / service graphs (remote-written by Tempo's metrics generator): needs Tempo"
_TEMPO_SELF = "Tempo's own metrics: needs Tempo"
_LOKI_SELF = "Loki's own metrics: needs Loki"
_AM = "Alertmanager's own metrics: needs Alertmanager"
_RECEIVERS = "the collector's redis/postgresql receivers (demo-agent): needs the real collector"
_STACK_UP = "`up` of the stack's components (collector, Tempo, Loki, Grafana, Alertmanager): needs the stack"
_INGEST = ("Prometheus ingestion requests on the OTLP and remote-write handlers: exist only once the "
           "collector/Tempo push (Prometheus 3 OTLP receiver)")

STACK_ONLY: dict[str, str] = {
    # Dashboards: Service RED (all from Tempo).
    "otelkit-service-red.json:var:service": _TEMPO,
    "otelkit-service-red.json:Rate:A": _TEMPO,
    "otelkit-service-red.json:Errors:A": _TEMPO,
    "otelkit-service-red.json:Duration:A": _TEMPO,
    "otelkit-service-red.json:Duration:B": _TEMPO,
    "otelkit-service-red.json:Duration:C": _TEMPO,
    "otelkit-service-red.json:Slowest operations (p95):A": _TEMPO,
    "otelkit-service-red.json:Busiest operations:A": _TEMPO,
    "otelkit-service-red.json:Edges: requests:A": _TEMPO,
    "otelkit-service-red.json:Edges: failed requests:A": _TEMPO,
    "otelkit-service-red.json:Edges: server latency p95:A": _TEMPO,
    # Datasource correlations (tracesToMetrics: span metrics).
    "datasources:tempo:Request rate": _TEMPO,
    "datasources:tempo:Error rate": _TEMPO,
    "datasources:tempo:Latency p95": _TEMPO,
}


def _stack_health_only() -> dict[str, str]:
    """The stack-health dashboard: everything but Prometheus's own series needs the stack."""
    table: dict[str, str] = {}
    for signal_title in ("Spans", "Metric points", "Log records"):
        for ref in "ABCDE":
            table[f"otelkit-stack-health.json:{signal_title}: accepted, refused, exported, failed:{ref}"] = _COLLECTOR
    table.update({
        "otelkit-stack-health.json:Export queues:A": _COLLECTOR,
        "otelkit-stack-health.json:Export queues:B": _COLLECTOR,
        "otelkit-stack-health.json:Collector memory:A": _COLLECTOR,
        "otelkit-stack-health.json:Collector CPU:A": _COLLECTOR,
        "otelkit-stack-health.json:Receiver scrapes:A": _COLLECTOR,
        "otelkit-stack-health.json:Receiver scrapes:B": _COLLECTOR,
        "otelkit-stack-health.json:Tempo: spans received and discarded:A": _TEMPO_SELF,
        "otelkit-stack-health.json:Tempo: spans received and discarded:B": _TEMPO_SELF,
        "otelkit-stack-health.json:Tempo: metrics-generator active series:A": _TEMPO_SELF,
        "otelkit-stack-health.json:Loki: lines received and discarded:A": _LOKI_SELF,
        "otelkit-stack-health.json:Loki: lines received and discarded:B": _LOKI_SELF,
        "otelkit-stack-health.json:Prometheus: ingestion requests:A": _INGEST,
        "otelkit-stack-health.json:Alertmanager: notifications:A": _AM,
        "otelkit-stack-health.json:Alertmanager: notifications:B": _AM,
        # Pipeline dashboard: the demo agent's receivers.
        "otelkit-pipeline.json:Redis memory:A": _RECEIVERS,
        "otelkit-pipeline.json:Redis clients:A": _RECEIVERS,
        "otelkit-pipeline.json:PostgreSQL connections:A": _RECEIVERS,
        "otelkit-pipeline.json:PostgreSQL connections:B": _RECEIVERS,
        "otelkit-pipeline.json:PostgreSQL commits and rollbacks:A": _RECEIVERS,
        "otelkit-pipeline.json:PostgreSQL commits and rollbacks:B": _RECEIVERS,
        # Stack alert rules.
        "stack.yaml:OtelkitCollectorRefusingData:warning": _COLLECTOR,
        "stack.yaml:OtelkitCollectorExportFailing:critical": _COLLECTOR,
        "stack.yaml:OtelkitCollectorQueueNearlyFull:warning": _COLLECTOR,
        "stack.yaml:OtelkitCollectorDroppingData:critical": _COLLECTOR,
        "stack.yaml:OtelkitCollectorScrapeFailing:warning": _COLLECTOR,
        "stack.yaml:OtelkitBackendRejectingData:warning": f"{_TEMPO_SELF}; {_LOKI_SELF}; {_INGEST}",
    })
    return table


STACK_ONLY.update(_stack_health_only())


def stack_only_reason(where: str, expr: str) -> str | None:
    """Why ``expr`` cannot answer here, or None when it must."""
    if where in STACK_ONLY:
        return STACK_ONLY[where]
    if where.startswith("runbook:"):
        names = {name for name, _ in selectors_of(expr)}
        if names and all(_runbook_stack_metric(n) for n in names):
            return next(_runbook_stack_metric(n) for n in sorted(names))
    return None


def _runbook_stack_metric(name: str) -> str | None:
    prefixes = {"otelcol_": _COLLECTOR, "traces_": _TEMPO, "tempo_": _TEMPO_SELF, "loki_": _LOKI_SELF,
                "alertmanager_": _AM, "redis_": _RECEIVERS, "postgresql_": _RECEIVERS,
                "prometheus_http_requests_total": _INGEST}
    for prefix, reason in prefixes.items():
        if name.startswith(prefix):
            return reason
    return None


# --- Collecting and preparing the expressions ---------------------------------------------------

RATE_WINDOW = "1m"  # $__rate_interval here: Prometheus scrapes every second


@dataclass(frozen=True)
class Expression:
    where: str  # file:panel:refId, file:alert:severity, runbook:File.md:n
    shipped: str  # as shipped (Grafana variables and all)
    query: str  # what is sent to Prometheus


def grafana_substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variables as a dashboard with every variable on "All" sends them."""
    expr = re.sub(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}", RATE_WINDOW, expr)

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", var, expr)


def strip_threshold(expr: str) -> str:
    """An alert expression without its final comparison: what the alert compares must answer."""
    tree = promql_parser.parse(expr)
    return _strip(tree)


_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_SETS = {"or", "and", "unless"}


def _strip(node: Any) -> str:
    if isinstance(node, promql_parser.ParenExpr):
        return _strip(node.expr)
    if isinstance(node, promql_parser.BinaryExpr):
        op = str(node.op).lower().strip()
        if op in _COMPARISONS and _is_scalar(node.rhs):
            return _strip(node.lhs)
        if op in ("unless", "and"):
            return _strip(node.lhs)  # the left side is what the alert reports
        if op == "or":
            return f"({_strip(node.lhs)}) or ({_strip(node.rhs)})"
    return str(node)


def _is_scalar(node: Any) -> bool:
    return isinstance(node, promql_parser.NumberLiteral) or (
        isinstance(node, promql_parser.ParenExpr) and _is_scalar(node.expr))


def selectors_of(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    from _stacklib import selectors

    return selectors(expr)


def dashboard_expressions() -> list[Expression]:
    out: list[Expression] = []
    for path in dashboard_files():
        model = json.loads(path.read_text(encoding="utf-8"))
        variables = {}
        for var in model.get("templating", {}).get("list", []):
            variables[var["name"]] = var.get("allValue") or ".*"
        for var in model.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("uid") != "prometheus":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            inner = re.match(r"^\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*$", query)
            if inner:
                out.append(Expression(f"{path.name}:var:{var['name']}", query,
                                      grafana_substitute(inner.group(1), variables)))
        for panel in iter_panels(model.get("panels", [])):
            for target in panel.get("targets", []):
                uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
                if uid == "prometheus":
                    out.append(Expression(f"{path.name}:{panel['title']}:{target['refId']}", target["expr"],
                                          grafana_substitute(target["expr"], variables)))
    return out


def rule_expressions() -> list[Expression]:
    out = []
    for path in sorted(RULES_DIR.glob("*.yaml")):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                severity = rule.get("labels", {}).get("severity", "")
                out.append(Expression(f"{path.name}:{name}:{severity}", rule["expr"], strip_threshold(rule["expr"])))
    return out


_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_BRACE_LIST = re.compile(r"\{([a-z_]+(?:,[a-z_]+)+)\}")


def runbook_expressions() -> list[Expression]:
    """The PromQL written in the runbooks (inline code spans that parse as PromQL and name a metric)."""
    out = []
    for path in sorted(RUNBOOKS.glob("Otelkit*.md")):
        n = 0
        for span in _CODE_SPAN.findall(path.read_text(encoding="utf-8")):
            for candidate in _expand_braces(span):
                if not _looks_like_promql(candidate):
                    continue
                n += 1
                out.append(Expression(f"runbook:{path.name}:{n}", span,
                                      grafana_substitute(candidate, {}) if "$" in candidate else candidate))
    return out


def _expand_braces(text: str) -> list[str]:
    """``x_{a,b}_total`` (shell-style shorthand in prose) -> x_a_total, x_b_total."""
    match = _BRACE_LIST.search(text)
    if not match:
        return [text]
    return [v for option in match.group(1).split(",")
            for v in _expand_braces(text[:match.start()] + option + text[match.end():])]


def _looks_like_promql(text: str) -> bool:
    """A metric query, not a label name or a function name in prose (`otelkit_pipeline_stage`, `redis_probe`)."""
    from _stacklib import known_metrics, otelkit_label_names

    try:
        found = selectors_of(text)
    except Exception:
        return False
    names = [name for name, _ in found]
    labels = otelkit_label_names() | {"messaging_destination_name", "messaging_system", "service_name"}
    known = known_metrics()
    return bool(names) and all((n in known or n.startswith(("otelkit_", "otelcol_"))) and n not in labels
                               for n in names)


def kubernetes_expressions() -> list[Expression]:
    """The Kubernetes kit's autoscaling queries (KEDA prometheus triggers in deploy/kubernetes/manifests/)."""
    out = []
    for path in sorted(KUBERNETES_MANIFESTS.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if not doc or doc.get("kind") != "ScaledObject":
                    continue
                for n, trigger in enumerate(doc["spec"]["triggers"]):
                    if trigger["type"] == "prometheus":
                        query = trigger["metadata"]["query"]
                        out.append(Expression(f"{path.name}:{doc['metadata']['name']}:{n}", query, query))
    return out


def all_expressions() -> list[Expression]:
    exprs = dashboard_expressions() + rule_expressions() + runbook_expressions() + kubernetes_expressions()
    exprs += [Expression(where, query, query) for where, query in datasource_queries()]
    return exprs


# --- Prometheus's OTLP translation (what the compose path would store) ---------------------------

def otlp_translation(metric: _names.MetricName) -> str:
    """The series name Prometheus 3's OTLP receiver stores ``metric`` under (UnderscoreEscapingWithSuffixes).

    A translation, not Prometheus 3: dots and other invalid characters become underscores, the
    UCUM unit becomes a suffix (``s`` → ``seconds``, ``By`` → ``bytes``; ``{annotation}`` units add
    nothing), monotonic sums get ``_total``; histograms are stored as classic ``_bucket``/``_sum``/``_count``.
    """
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", metric.name)
    units = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
    unit = "" if metric.unit.startswith("{") else units.get(metric.unit, metric.unit)
    if unit == "ratio" and metric.kind not in ("gauge", "observable_gauge"):
        unit = ""  # "ratio" is only added to gauges
    if unit and not base.endswith("_" + unit):
        base += "_" + unit
    if metric.kind in ("counter", "observable_counter") and not base.endswith("_total"):
        base += "_total"
    return base


# --- Running Prometheus and the demo -------------------------------------------------------------

def prometheus_config(sd_dir: Path, rules: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": ["PROMETHEUS_ADDRESS"]}]},
            # One target per otelkit process, announced by otelkit itself (OTELKIT_PROMETHEUS_SD_DIR);
            # the files set job and service_name to the service name.
            {"job_name": "otelkit", "file_sd_configs": [{"files": [str(sd_dir / "*.json")],
                                                          "refresh_interval": "1s"}]},
        ],
    }
    if rules:
        config["rule_files"] = [str(RULES_DIR / "*.yaml")]
    return config


class Prometheus:
    """A real Prometheus (Debian 2.42) on a free port with a temporary storage directory."""

    def __init__(self, binary: str, workdir: Path, sd_dir: Path, *, rules: bool = True) -> None:
        import yaml

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = prometheus_config(sd_dir, rules)
        config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{self.port}"]
        self.config_path = workdir / "prometheus.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-remote-write-receiver"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)  # poll interval
        raise TimeoutError(f"prometheus not ready:\n{self.log()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = urllib.parse.urlencode({"query": expr}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise RuntimeError(f"{expr!r}: {body}")
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def series_names(self) -> set[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/label/__name__/values", timeout=10) as resp:
            return set(json.load(resp)["data"])

    @classmethod
    def start(cls, binary: str, workdir: Path, sd_dir: Path, *, rules: bool = True,
              deadline_s: float = 60) -> Prometheus:
        """Started and ready. The free port is picked before Prometheus binds it; if another process took
        it in between, try again on another one (at most three times)."""
        for attempt in range(3):
            prom = cls(binary, workdir, sd_dir, rules=rules)
            try:
                prom.wait_ready(time.monotonic() + deadline_s)
                return prom
            except RuntimeError:
                prom.stop()
                if "address already in use" not in prom.log().lower() or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def demo_environment(sd_dir: Path, base_port: int, dead_port: int) -> dict[str, str]:
    """The demo's environment: metrics on the prometheus exporter, one port and file_sd entry per process.

    Traces go to an OTLP endpoint nothing listens on, with a tiny queue: otelkit then drops spans and
    counts them (otelkit.telemetry.dropped), which OtelkitTelemetryDropped and its panel need.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    env.update({
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(base_port),
        "OTELKIT_PROMETHEUS_SD_DIR": str(sd_dir),
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{dead_port}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1000",
        "OTEL_BSP_MAX_QUEUE_SIZE": "16",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
        "OTEL_LOGS_EXPORTER": "none",
        "OTELKIT_SHUTDOWN_TIMEOUT": "2000",
        "NO_COLOR": "1",
    })
    return env


# The demo receives one message at a time; this companion is a real otelkit process that receives
# batches (pipeline.receive_batch) until stopped, so the batch-size panel is checked too.
BATCH_COMPANION = r"""
import signal, sys, threading
import otelkit
from otelkit import pipeline

otelkit.init(service_name="token-batcher")
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
while not stop.is_set():
    carriers = []
    for _ in range(3):
        carrier = {}
        with pipeline.emit("token-batches", carrier=carrier, system="redis"):
            pass
        carriers.append(carrier)
    with pipeline.receive_batch("token-batches", carriers, system="redis"):
        pass
    stop.wait(0.5)
otelkit.shutdown()
"""


# A real FastAPI service under uvicorn with otelkit, requested by itself until stopped (one route answering
# 500 now and then): the HTTP-server panels of the service dashboard read its http.server.request.duration.
WEB_COMPANION = r"""
import signal, threading, time, urllib.error, urllib.request
import otelkit

otelkit.init(service_name="token-api")
import uvicorn
from fastapi import FastAPI

app = FastAPI()

@app.get("/tokens/{token_id}")
async def token(token_id: int) -> dict:
    if token_id % 5 == 0:
        raise RuntimeError("unlucky token")
    return {"token": token_id}

server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
thread = threading.Thread(target=server.run, daemon=True)
thread.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
while not server.started and thread.is_alive():
    time.sleep(0.05)
port = server.servers[0].sockets[0].getsockname()[1]
i = 0
while not stop.is_set():
    i += 1
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/tokens/{i}", timeout=5).read()
    except (urllib.error.URLError, OSError):
        pass
    stop.wait(0.2)
server.should_exit = True
thread.join(10)
otelkit.shutdown()
"""


def stop_session(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started with ``start_new_session=True``; its whole session is killed after 40 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def running_demo(workdir: Path, sd_dir: Path, *, workers: int = 2) -> Iterator[subprocess.Popen[bytes]]:
    env = demo_environment(sd_dir, *free_ports(2))
    companion_log = (workdir / "batcher.log").open("wb")
    companion = subprocess.Popen([sys.executable, "-c", BATCH_COMPANION], env=env, stdout=companion_log,
                                 stderr=subprocess.STDOUT)
    web_log = (workdir / "web.log").open("wb")
    web = subprocess.Popen([sys.executable, "-c", WEB_COMPANION], env=env, stdout=web_log, stderr=subprocess.STDOUT)
    log = (workdir / "demo.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "otelkit", "demo", "--continuous", "--workers", str(workers),
                                "--seed", "11"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        yield process
    finally:
        for helper in (companion, web):
            if helper.poll() is None:
                helper.send_signal(signal.SIGTERM)
        stop_session(process)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(timeout=10)
        web_log.close()
        try:
            companion.wait(timeout=20)
        except subprocess.TimeoutExpired:
            companion.kill()
            companion.wait(timeout=10)
        companion_log.close()
        log.close()


def poll_answers(prom: Prometheus, exprs: list[Expression], deadline: float,
                 progress: Callable[[str], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Query every expression until it answers or ``deadline`` passes; returns where -> result."""
    answers: dict[str, list[dict[str, Any]]] = {e.where: [] for e in exprs}
    pending = list(exprs)
    while pending and time.monotonic() < deadline:
        still = []
        for expr in pending:
            result = prom.query(expr.query)
            answers[expr.where] = result
            if not result:
                still.append(expr)
        if progress and len(still) != len(pending):
            progress(f"{len(exprs) - len(still)}/{len(exprs)} answered")
        pending = still
        if pending:
            time.sleep(1.0)  # poll interval: Prometheus scrapes every second
    return answers


def markdown_table(exprs: list[Expression]) -> str:
    """The docs table: every expression, answered here or stack-only (with the reason)."""
    rows = ["| expression | checked against the demo | reason when not |", "|---|---|---|"]
    for e in exprs:
        reason = stack_only_reason(e.where, e.query)
        rows.append(f"| `{e.where}` | {'no: stack only' if reason else 'yes, must answer'} | {reason or ''} |")
    return "\n".join(rows)


def main() -> int:
    import shutil

    binary = shutil.which("prometheus")
    exprs = all_expressions()
    if "--markdown" in sys.argv:
        print(markdown_table(exprs))
        return 0
    if binary is None:
        print("prometheus not on PATH")
        return 2
    with tempfile.TemporaryDirectory(prefix="otelkit-querycheck-") as tmp:
        workdir = Path(tmp)
        sd_dir = workdir / "sd"
        sd_dir.mkdir()
        prom = Prometheus.start(binary, workdir, sd_dir)
        try:
            with running_demo(workdir, sd_dir):
                answers = poll_answers(prom, exprs, time.monotonic() + float(os.environ.get("DEADLINE", "60")),
                                       progress=print)
            for e in exprs:
                reason = stack_only_reason(e.where, e.query)
                mark = "ok " if answers[e.where] else ("-- " if reason else "EMPTY")
                print(f"{mark} {e.where}: {e.query[:160]}")
            for name in ("http_client_request_duration_seconds_count", "otelkit_messaging_queue_length",
                         "otelkit_pipeline_stage_duration_seconds_count", "target_info"):
                print(name, sorted({k for r in prom.query(name) for k in r["metric"]}))
            print((workdir / "demo.log").read_text()[-3000:])
        finally:
            prom.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
