"""The embedded default finds a local collector on 127.0.0.1:4317 / :4318 by itself, without monkeypatching.

How (honestly): the probe in ``otelkit._export.probe_local_collector`` connects to the fixed ports
127.0.0.1:4317 and :4318. On a shared machine those ports may belong to someone else, and binding them
would change what other engineers' tests see. So each case runs in a child process inside a private
network namespace (``unshare -rn``: an unprivileged user + network namespace with its own loopback):
there the real ``rotel`` collector listens on exactly 4317 (gRPC) or exactly 4318 (HTTP), forwarding to an
``OtlpReceiver``, and an unmodified ``otelkit.init()`` with no exporter/endpoint configured sends traces,
metrics and logs to it. Only one of the two ports listens per case, so delivery proves which protocol
the probe picked. The control case (nothing listening) must fall back to the console.
Skipped when the machine does not allow unprivileged network namespaces (fails under ``CI=true``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otelkit.testing._receiver import find_rotel_agent
from tests.conftest import IN_CI

_CHILD = r'''
import fcntl, json, logging, socket, struct, sys, uuid

def loopback_up():
    # A new network namespace starts with "lo" down; SIOCGIFFLAGS / SIOCSIFFLAGS bring it up (no `ip` needed).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifreq))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 0x1))

loopback_up()
mode = sys.argv[1]
from otelkit.testing._receiver import OtlpReceiver, RotelCollector, free_port

receiver = OtlpReceiver().start()
collector = None
if mode != "none":
    collector = RotelCollector(receiver)
    collector.grpc_port = 4317 if mode == "grpc" else free_port()
    collector.http_port = 4318 if mode == "http" else free_port()
    collector.start()

import otelkit
from opentelemetry import metrics, trace

run = uuid.uuid4().hex[:8]
settings = otelkit.init(service_name="autodetect-" + run, instrument=(), system_metrics=False)
with trace.get_tracer("autodetect").start_as_current_span("auto-span-" + run):
    logging.getLogger("autodetect").warning("auto-log-" + run)
    metrics.get_meter("autodetect").create_counter("autodetect.jobs").add(2)
otelkit.shutdown(timeout=5)

out = {"exporters": list(settings.traces.exporters), "spans": [], "logs": [], "metric": []}
if collector is not None:
    out["spans"] = [s.name for s in receiver.wait_for_spans(1, name="auto-span-" + run)]
    receiver.wait_for(lambda: receiver.logs(body="auto-log-" + run), timeout=30)
    out["logs"] = [l.body for l in receiver.logs(body="auto-log-" + run)]
    out["metric"] = [p.value for p in receiver.wait_for_metric("autodetect.jobs")]
    out["service"] = receiver.spans("auto-span-" + run)[0].resource.get("service.name")
    collector.close()
out["run"] = run
receiver.stop()
print("RESULT " + json.dumps(out), flush=True)
'''


def _namespaces_work() -> str | None:
    """None if ``unshare -rn`` works here, else why not."""
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    try:
        proc = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -rn failed: {exc}"
    if proc.returncode != 0:
        return f"unprivileged network namespaces are not allowed here: {proc.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def netns() -> None:
    reason = _namespaces_work()
    if reason is None and find_rotel_agent() is None:
        reason = "rotel-agent not found (pip install rotel)"
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true)")
        pytest.skip(reason)


def _run_child(tmp_path: Path, mode: str) -> tuple[dict[str, Any], str]:
    script = tmp_path / "autodetect_child.py"
    script.write_text(_CHILD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env["OTELKIT_LOG_LEVEL"] = "WARNING"
    proc = subprocess.run(["unshare", "-rn", sys.executable, str(script), mode], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, f"child failed:\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, proc.stdout[-3000:]
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    return result, proc.stdout + proc.stderr


@pytest.mark.usefixtures("netns")
@pytest.mark.parametrize(("mode", "announced"), [
    ("grpc", "OTLP/gRPC http://127.0.0.1:4317"),
    ("http", "http://127.0.0.1:4318"),
])
def test_init_ships_otlp_to_a_collector_on_the_default_port(tmp_path: Path, mode: str, announced: str) -> None:
    out, text = _run_child(tmp_path, mode)
    run = out["run"]
    assert out["exporters"] == ["auto"]  # nothing was configured: the embedded default
    assert out["spans"] == [f"auto-span-{run}"]
    assert out["logs"] == [f"auto-log-{run}"]
    assert out["metric"] and out["metric"][-1] == 2
    assert out["service"] == f"autodetect-{run}"
    assert announced in text  # the one stderr line names where telemetry went


@pytest.mark.usefixtures("netns")
def test_without_a_local_collector_it_falls_back_to_the_console(tmp_path: Path) -> None:
    out, text = _run_child(tmp_path, "none")
    run = out["run"]
    assert out["exporters"] == ["auto"]
    assert f"auto-span-{run}" in text  # printed by the console span exporter
    assert "4317" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text  # the hint on stderr
