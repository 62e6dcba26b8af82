"""``otelkit demo`` end to end on the embedded default: stand-ins, and telemetry shown in the terminal.

The demo runs as a user runs it (a subprocess). No Redis, no PostgreSQL, no collector: a
multiprocessing queue and SQLite stand in, and the demo's own OTLP receiver collects what the
spawned processes export. The test checks both what a newcomer reads (the trace tree of one
event across processes, the metrics summary) and what actually went over the wire (the saved
telemetry): one trace spanning the discoverer and a worker, linked by parent, carrying one
correlation ID, plus the pipeline metrics with retries and dead letters.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def run_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_")) and k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run([sys.executable, "-m", "otelkit", "demo", *args], env={**base, **(env or {})},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> dict[str, list[dict[str, Any]]]:
    items: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        item = json.loads(line)
        items[item["signal"]].append(item)
    return items


def test_demo_on_the_embedded_default(tmp_path: Path) -> None:
    saved = tmp_path / "telemetry.jsonl"
    done = run_demo(tmp_path, "--redis", "none", "--postgres", "none", "--telemetry", "terminal",
                    "--events", "10", "--workers", "2", "--save-telemetry", str(saved))
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    # --- what the newcomer reads
    assert "in-process stand-in (multiprocessing queue)  [--redis none]" in out
    assert "SQLite stand-in" in out and "in-process receiver" in out
    assert "every token reached a final state" in out
    assert "-> retry" in out and "-> DEAD-LETTER" in out
    header = re.search(r"The trace of one event: .*, stored after 1 attempt\(s\), correlation_id ([0-9a-f]{32})", out)
    assert header, out
    shown_cid = header.group(1)
    trace_line = re.search(r"trace_id ([0-9a-f]{32}): (\d+) spans in (\d+) processes", out)
    assert trace_line and int(trace_line.group(3)) == 2, out
    trace_id = trace_line.group(1)
    tree = out[trace_line.end():out.index("its log records")]
    for expected in ("discover  [token-discoverer pid", "send tokens", "process tokens  [token-enricher pid",
                     "fetch", "GET", "/jupiter/v6/price  -> 200", "/helius/v0/token-metadata  -> 200",
                     "/dexscreener/latest/dex/tokens/", "persist", "INSERT tokens"):
        assert expected in tree, f"{expected!r} missing from the tree:\n{tree}"
    # The tree is nested: process under send under discover, the HTTP call under its fetch stage.
    lines = tree.splitlines()
    depth = {name: next(len(line) - len(line.lstrip(" │├└─█·")) for line in lines if name in line)
             for name in ("discover", "send tokens", "process tokens", "INSERT tokens")}
    assert depth["discover"] < depth["send tokens"] < depth["process tokens"] < depth["INSERT tokens"], tree
    assert f"correlation_id={shown_cid}" in out, "the log records shown carry the correlation ID"
    summary = out[out.index("Pipeline metrics"):]
    assert re.search(r"discovered\s+10\s+sent\s+\d+\s+processed\s+\d+\s+ack \d+\s+dead_letter [1-9]\d*\s+retry [1-9]",
                     summary), summary
    for expected in ("end-to-end latency", "time in queue", "fetch/dexscreener", "<- slowest", "External APIs",
                     "dexscreener", "helius", "jupiter", "% errors"):
        assert expected in summary, f"{expected!r} missing from:\n{summary}"
    assert "to this terminal" in out and "OTEL_EXPORTER_OTLP_ENDPOINT" in out

    # --- what went over the wire
    telemetry = load(saved)
    spans = [s for s in telemetry["span"] if s["trace_id"] == trace_id]
    by_name = {s["name"]: s for s in spans}
    assert {"discover", "send tokens", "process tokens", "persist", "INSERT tokens"} <= set(by_name)
    pids = {s["resource"]["process.pid"] for s in spans}
    assert len(pids) == 2
    assert by_name["send tokens"]["kind"] == "PRODUCER" and by_name["process tokens"]["kind"] == "CONSUMER"
    assert by_name["process tokens"]["parent_span_id"] == by_name["send tokens"]["span_id"]
    assert by_name["process tokens"]["links"][0]["span_id"] == by_name["send tokens"]["span_id"]
    assert by_name["discover"]["resource"]["service.name"] == "token-discoverer"
    assert by_name["process tokens"]["resource"]["service.name"] == "token-enricher"
    http_spans = [s for s in spans if s["kind"] == "CLIENT" and s["name"].startswith("GET")]
    assert len(http_spans) == 3
    for span in spans:
        assert span["attributes"].get("otelkit.correlation_id") == shown_cid, span["name"]
    logs = [r for r in telemetry["log"] if r["trace_id"] == trace_id]
    assert any(r["body"].startswith("stored token") for r in logs)
    names = {p["name"] for p in telemetry["metric"]}
    for metric in ("messaging.client.sent.messages", "messaging.client.consumed.messages",
                   "otelkit.messaging.settled.messages", "otelkit.messaging.message.end_to_end.duration",
                   "otelkit.pipeline.stage.duration", "otelkit.pipeline.discovered.items",
                   "http.client.request.duration", "otelkit.messaging.queue.length"):
        assert metric in names, metric
    outcomes = {p["attributes"].get("otelkit.outcome") for p in telemetry["metric"]
                if p["name"] == "otelkit.messaging.settled.messages"}
    assert {"ack", "retry", "dead_letter"} <= outcomes


def test_demo_shows_a_dead_lettered_event(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--redis", "none", "--postgres", "none", "--telemetry", "terminal",
                    "--events", "8", "--workers", "2", "--show", "dead-letter")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"The trace of one event: .*, dead_letter after \d attempt\(s\)", out), out
    tree = out[out.index("The trace of one event"):out.index("Pipeline metrics")]
    assert "outcome=dead_letter" in tree
    assert "404" in tree or "503" in tree


def test_otlp_mode_without_a_collector_is_a_usage_error(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--telemetry", "otlp", "--redis", "none", "--postgres", "none")
    if "collector listening on 127.0.0.1:4317" in done.stdout:  # a real local stack on this machine
        return
    assert done.returncode == 2
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in done.stdout


def test_continuous_mode_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import selectors
    import signal
    import time

    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "otelkit", "demo", "--continuous", "--redis", "none",
                             "--postgres", "none", "--telemetry", "terminal", "--workers", "1"],
                            env=base, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    try:
        # Wait (bounded) for a periodic status line showing stored tokens, then ask it to stop.
        while time.monotonic() < deadline:
            if not selector.select(timeout=1):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if re.search(r"^\s+stored [1-9]\d*, retried", line):
                break
        assert any(re.search(r"^\s+stored [1-9]", s) for s in seen), "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "Running (until Ctrl-C / SIGTERM)" in out
    assert "Pipeline metrics" in out and "The trace of one event" in out


def test_bad_configuration_stops_the_demo_before_it_starts(tmp_path: Path) -> None:
    done = run_demo(tmp_path, "--redis", "none", "--postgres", "none", env={"OTEL_TRACES_SAMPLER": "bogus"})
    assert done.returncode == 2
    assert "OTEL_TRACES_SAMPLER='bogus' is not valid" in done.stdout and "otelkit doctor" in done.stdout
    assert "Running" not in done.stdout
