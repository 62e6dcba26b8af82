"""Forking while otelkit's export thread is inside a gRPC request.

gunicorn --preload forks its workers from a master that ran ``otelkit.init()``; when the fork fell on a
moment where the export thread was in a gRPC call, gRPC logged "Other threads are currently calling into
gRPC, skipping fork() handlers" and the master later died with SIGSEGV. otelkit now holds its gRPC
requests off (or cancels the one in flight) for the instant of each fork. A real process forks in a loop
while a thread keeps the export busy, against the real in-process OTLP receiver.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from otelkit.testing._receiver import OtlpReceiver

FORKS = 100  # at most: the loop stops forking after FORK_SECONDS (a loaded machine forks slowly)
FORK_SECONDS = 120
MIN_FORKS = 20  # fewer than this in FORK_SECONDS and the test says so instead of passing on a thin run

FORK_LOOP = r"""
import os, sys, threading
import otelkit
from opentelemetry import trace
otelkit.init()
otelkit._fork._exit_flush_timeout = 30.0  # a loaded machine must not cut a child's flush short
tracer = trace.get_tracer("fork-loop")
stop = threading.Event()
def busy():  # spans all the time, exported every millisecond: a request is in flight most of the time
    while not stop.is_set():
        with tracer.start_as_current_span("busy"):
            pass
threading.Thread(target=busy, daemon=True).start()
failed = []
import time
deadline = time.monotonic() + float(sys.argv[2])
forks = 0
for i in range(int(sys.argv[1])):
    if time.monotonic() > deadline:
        break
    forks += 1
    pid = os.fork()
    if pid == 0:
        with tracer.start_as_current_span("child") as span:
            span.set_attribute("i", i)
        os._exit(0)  # flushes first (otelkit wraps os._exit in forked children)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append((i, status))
stop.set()
print("FAILED", failed)
print("FORKS", forks)
"""


@pytest.mark.timeout(300)  # FORKS forks, each child exporting on its own: slow on a loaded machine
def test_forking_while_a_grpc_export_is_in_flight(otelkit_otlp_receiver: OtlpReceiver) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_", "GRPC_"))}
    env.update({
        "OTEL_SERVICE_NAME": "fork-grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "1",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTELKIT_SHUTDOWN_TIMEOUT": "20000",
        "OTELKIT_SYSTEM_METRICS": "false",
    })
    # A child's flush waits up to 30 s on a loaded machine: the loop's own deadline plus one such flush.
    done = subprocess.run([sys.executable, "-c", FORK_LOOP, str(FORKS), str(FORK_SECONDS)], env=env,
                          capture_output=True, text=True, timeout=FORK_SECONDS + 100)
    assert done.returncode == 0, done.stderr
    assert "FAILED []" in done.stdout, done.stdout + done.stderr
    forks = int(done.stdout.split("FORKS")[-1].split()[0])
    assert forks >= MIN_FORKS, f"only {forks} forks in {FORK_SECONDS} s: too few to exercise the race"
    # gRPC's own account of the race: its fork handlers were skipped because a thread was inside gRPC.
    assert "skipping fork() handlers" not in done.stderr, done.stderr
    # Every child's span arrived, once (children flush before exiting, so all were sent when the loop ended).
    children = otelkit_otlp_receiver.wait_for(
        lambda: (s if len(s := otelkit_otlp_receiver.spans("child")) >= forks else []), timeout=30,
        message=f"{forks} child spans; stderr:\n{done.stderr}")
    assert sorted(s.attributes["i"] for s in children) == list(range(forks))


HUNG_AT_FORK = r"""
import os, sys
import otelkit
from opentelemetry import trace
from otelkit._export.stats import STATS
otelkit.init()
tracer = trace.get_tracer("hung")
with tracer.start_as_current_span("hung"):
    pass
print("READY", flush=True)
sys.stdin.readline()  # the test saw the receiver hold the request: the export thread is inside gRPC now
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("FORKED", flush=True)
with tracer.start_as_current_span("after"):
    pass
sys.stdin.readline()  # the test saw both spans arrive (nothing here aborts the hung request)
print("RESENT", STATS.resent_counts()["traces"], flush=True)
"""


@pytest.mark.timeout(200)
def test_a_request_hung_at_fork_is_cancelled_and_sent_again(otelkit_otlp_receiver: OtlpReceiver) -> None:
    # The collector never answers the first request and the export timeout is ten minutes: a fork waiting
    # for that request would wait ten minutes. The request is cancelled instead, and its span sent again.
    otelkit_otlp_receiver.hang(times=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_", "GRPC_"))}
    env.update({
        "OTEL_SERVICE_NAME": "fork-hung",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_otlp_receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "600000",
        "OTEL_BSP_EXPORT_TIMEOUT": "600000",
        "OTEL_BSP_SCHEDULE_DELAY": "1",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTELKIT_SYSTEM_METRICS": "false",
    })
    proc = subprocess.Popen([sys.executable, "-c", HUNG_AT_FORK], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "READY"
        otelkit_otlp_receiver.wait_for(lambda: [a for a in otelkit_otlp_receiver.attempts if a.outcome == "hang"],
                                       timeout=60)
        proc.stdin.write("fork\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "FORKED"
        # While the app runs on (no shutdown aborts anything): the hung span is sent again, then the next one.
        # Hang detectors, not speed checks: waiting out the hung request would take ten minutes.
        otelkit_otlp_receiver.wait_for(lambda: otelkit_otlp_receiver.spans("hung")
                                       and otelkit_otlp_receiver.spans("after"), timeout=60,
                                       message="the hung span sent again, and the next one")
        proc.stdin.write("exit\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    # The cancelled request may have reached the collector: its resend is counted as a possible duplicate.
    assert "RESENT 1" in stdout, stdout + stderr
