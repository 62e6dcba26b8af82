"""Forked workers keep reporting, each span exactly once, with no post_fork hook.

Real processes: ``os.fork``, ``multiprocessing`` (fork start method, children recycled after one task
and leaving through ``os._exit``), and a real ``gunicorn --preload`` with two workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from otelkit.testing._receiver import OtlpReceiver, free_port

APPS = Path(__file__).parent / "apps"


def app_env(receiver: OtlpReceiver, protocol: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({
        "OTEL_SERVICE_NAME": "fork-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        # Long enough that a loaded machine never reaches it; a healthy exit does not wait for it.
        "OTELKIT_SHUTDOWN_TIMEOUT": "20000",
        "OTELKIT_SYSTEM_METRICS": "false",
        "PYTHONPATH": str(APPS) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    return env


def names(receiver: OtlpReceiver) -> Counter[str]:
    return Counter(s.name for s in receiver.spans())


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_multiprocessing_fork_children_report_once(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    result = subprocess.run([sys.executable, str(APPS / "fork_app.py"), "multiprocessing"],
                            env=app_env(otelkit_otlp_receiver, protocol), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    otelkit_otlp_receiver.wait_for(lambda: names(otelkit_otlp_receiver)["parent-after"] >= 1, timeout=30)
    tasks = otelkit_otlp_receiver.wait_for_spans(6, name="child-task", timeout=30)
    counts = names(otelkit_otlp_receiver)
    # Every child's span arrived once, though children leave through os._exit (no atexit).
    assert sorted(s.attributes["task"] for s in tasks) == list(range(6))
    # The parent's open span and its queued spans were not re-exported by any child.
    assert counts["parent-open"] == 1 and counts["parent-queued"] == 5 and counts["parent-after"] == 1
    span_ids = [s.span_id for s in otelkit_otlp_receiver.spans()]
    assert len(span_ids) == len(set(span_ids))
    child_pids = {int(p) for p in result.stdout.split("PIDS", 1)[1].split()}
    assert {s.attributes["pid"] for s in tasks} == child_pids and len(child_pids) >= 2


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_os_fork_child_does_not_reexport_the_parents_open_span(otelkit_otlp_receiver: OtlpReceiver,
                                                               protocol: str) -> None:
    result = subprocess.run([sys.executable, str(APPS / "fork_app.py"), "osfork"],
                            env=app_env(otelkit_otlp_receiver, protocol), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    otelkit_otlp_receiver.wait_for(lambda: names(otelkit_otlp_receiver)["parent-after"] >= 1, timeout=30)
    otelkit_otlp_receiver.wait_for_spans(3, name="child-task", timeout=30)
    counts = names(otelkit_otlp_receiver)
    assert counts == Counter({"parent-open": 1, "parent-queued": 5, "child-task": 3, "parent-after": 1})


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_fork_without_python_hooks_is_detected(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    # uWSGI forks from C: no os.register_at_fork hook runs. The first span in the child notices the new pid.
    result = subprocess.run([sys.executable, str(APPS / "fork_app.py"), "cfork"],
                            env=app_env(otelkit_otlp_receiver, protocol), capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    otelkit_otlp_receiver.wait_for(lambda: names(otelkit_otlp_receiver)["parent-after"] >= 1, timeout=30)
    otelkit_otlp_receiver.wait_for(lambda: len(otelkit_otlp_receiver.spans("child-task")) >= 3, timeout=30,
                           message=f"3 child-task spans; the app's stderr:\n{result.stderr}")
    assert names(otelkit_otlp_receiver) == Counter({"parent-queued": 5, "child-task": 3, "parent-after": 1})


@pytest.mark.timeout(300)  # every wait below is bounded; together they may exceed the default on a loaded machine
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_gunicorn_preload_workers_each_report_every_request_once(otelkit_otlp_receiver: OtlpReceiver,
                                                                 protocol: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "--graceful-timeout",
         "60", "gunicorn_app:app"],
        env=app_env(otelkit_otlp_receiver,
                    protocol), cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    served_by: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(served_by) < 40:
            try:
                # A new connection each time, so both workers get requests.
                response = requests.get(f"http://127.0.0.1:{port}/", timeout=5, headers={"Connection": "close"})
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()[1]
                continue  # still booting
            served_by.append(int(response.text))
        assert len(served_by) == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr
    # The workers flushed at exit, so everything was sent; the wait only covers the receiver's own work.
    requests_seen = otelkit_otlp_receiver.wait_for(
        lambda: (s if len(s := otelkit_otlp_receiver.spans("request")) >= 40 else []),
        timeout=30, message=f"40 request spans; gunicorn's stderr:\n{stderr}")
    assert len(requests_seen) == 40, stderr
    assert Counter(s.attributes["pid"] for s in requests_seen) == Counter(served_by)
    # Each worker reports with its own process identity.
    assert {s.resource.get("process.pid") for s in requests_seen} == set(served_by)
    assert names(otelkit_otlp_receiver)["preload"] == 1
    span_ids = [s.span_id for s in otelkit_otlp_receiver.spans()]
    assert len(span_ids) == len(set(span_ids))


LOCK_HELD_AT_FORK = r"""
import os, sys, threading
import otelkit
from opentelemetry import trace
from otelkit._export.stats import STATS
os.environ["OTELKIT_CHILD_EXIT_TIMEOUT"] = "30000"  # the child's os._exit flush must not lose to a loaded machine
otelkit.init()
tracer = trace.get_tracer("lock")
held, release = threading.Event(), threading.Event()
def hold():
    with STATS._lock:  # an export thread counting at the instant of the fork
        held.set()
        release.wait(10)
threading.Thread(target=hold, daemon=True).start()
if not held.wait(60):  # without the lock held at the fork, this test would test nothing
    sys.exit("the lock holder never started")
pid = os.fork()
if pid == 0:
    with tracer.start_as_current_span("child-after-locked-fork"):
        pass
    os._exit(0)
release.set()
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_fork_while_a_thread_holds_otelkit_lock(otelkit_otlp_receiver: OtlpReceiver) -> None:
    result = subprocess.run([sys.executable, "-c", LOCK_HELD_AT_FORK], env=app_env(otelkit_otlp_receiver,
                                                                                   "http/protobuf"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    otelkit_otlp_receiver.wait_for_spans(1, name="child-after-locked-fork", timeout=30)
