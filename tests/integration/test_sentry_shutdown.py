"""A hung or missing Sentry endpoint never blocks the application, and its flush fits the shutdown deadline.

Each case runs a real application in a subprocess (so exit and atexit are
real) against :class:`HungEndpoint`, which accepts TCP connections and never
answers; sentry-sdk's own transport timeout is 30 s, so any wait on it would
show. Unhandled exceptions at interpreter level are checked in a subprocess too. Each time limit
allows for the machine's load by timing the same program against a healthy :class:`SentrySink`
just before (app_runner.assert_within_deadline, docs/testing.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from app_runner import assert_within_deadline, run_timed_exit
from sentry_sink import HungEndpoint, SentrySink

_APP = """
import json, sys, time
import otelkit

otelkit.init(service_name="sentry-shutdown-test")
start = time.monotonic()
for i in range(30):
    try:
        with otelkit.span("job"):
            raise ValueError(f"job {i} failed")
    except ValueError:
        pass
app_seconds = time.monotonic() - start
if sys.argv[1] == "explicit":
    start = time.monotonic()
    otelkit.shutdown(timeout=2)
    print(json.dumps({"app": app_seconds, "shutdown": time.monotonic() - start}), flush=True)
else:
    print(json.dumps({"app": app_seconds}), flush=True)
    print("EMITTED", file=sys.stderr, flush=True)  # then interpreter exit runs otelkit's atexit
"""

_UNHANDLED = """
import otelkit

otelkit.init(service_name="sentry-excepthook-test")
with otelkit.span("main"):
    raise RuntimeError("unhandled at top level")
"""


_FORK = """
import os
import otelkit

otelkit.init(service_name="sentry-fork-test")
try:
    with otelkit.span("parent"):
        raise ValueError("parent")
except ValueError:
    pass
pid = os.fork()  # the parent's event is most likely still queued
if pid == 0:
    try:
        with otelkit.span("child"):
            raise ValueError("child")
    except ValueError:
        pass
    otelkit.shutdown(timeout=3)
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0
"""


def _env(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({
        "SENTRY_DSN": dsn,
        # No exporter and no collector probe: only Sentry is under test.
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "OTELKIT_SYSTEM_METRICS": "false", "OTELKIT_INSTRUMENT": "",
    })
    env.update(extra)
    return env


def _run(dsn: str, mode: str, cwd: Path, **extra: str) -> tuple[float, dict[str, float]]:
    """Run ``_APP`` in ``mode``; return (seconds from its last statement to its exit, its timings)."""
    exit_seconds, proc = run_timed_exit([sys.executable, "-c", _APP, mode], _env(dsn, **extra),
                                        marker="EMITTED" if mode == "atexit" else None, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return exit_seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def _reference(mode: str, cwd: Path, **extra: str) -> tuple[float, dict[str, float]]:
    """The same program against a Sentry endpoint that answers at once: the same work, nothing to wait for."""
    with SentrySink() as sink:
        return _run(sink.dsn, mode, cwd, **extra)


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising on time
    return bool(predicate())  # type: ignore[operator]


def test_hung_endpoint_does_not_block_app_and_shutdown_meets_deadline(tmp_path: Path) -> None:
    _, reference = _reference("explicit", tmp_path)
    with HungEndpoint() as hung:
        _, result = _run(hung.dsn, "explicit", tmp_path)
        assert _wait_for(lambda: hung.accepted >= 1, 30.0), "the Sentry transport never reached the endpoint"
    # 30 reports went to a queue, none waited on the network (one blocking send = 30 s).
    assert_within_deadline(result["app"], 0.0, reference["app"], "reporting 30 errors", str(result))
    assert_within_deadline(result["shutdown"], 2.0, reference["shutdown"], "otelkit.shutdown(timeout=2)", str(result))


def test_hung_endpoint_process_exit_within_shutdown_timeout(tmp_path: Path) -> None:
    reference_exit, reference = _reference("atexit", tmp_path, OTELKIT_SHUTDOWN_TIMEOUT="2000")
    with HungEndpoint() as hung:
        exit_seconds, result = _run(hung.dsn, "atexit", tmp_path, OTELKIT_SHUTDOWN_TIMEOUT="2000")
        assert _wait_for(lambda: hung.accepted >= 1, 30.0), "the Sentry transport never reached the endpoint"
    assert_within_deadline(result["app"], 0.0, reference["app"], "reporting 30 errors", str(result))
    assert_within_deadline(exit_seconds, 2.0, reference_exit, "the exit (atexit shutdown, 2 s deadline)")


def test_refused_endpoint_exits_promptly(tmp_path: Path) -> None:
    import socket

    _, reference = _reference("explicit", tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, result = _run(f"http://publickey@127.0.0.1:{port}/1", "explicit", tmp_path)
    assert_within_deadline(result["shutdown"], 2.0, reference["shutdown"], "otelkit.shutdown(timeout=2)", str(result))


def test_unhandled_exception_reaches_sentry_once_at_exit(tmp_path: Path) -> None:
    """Reported by otelkit.span, seen again by Sentry's excepthook: one event, flushed by otelkit's atexit."""
    with SentrySink() as sink:
        proc = subprocess.run([sys.executable, "-c", _UNHANDLED], env=_env(sink.dsn), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert "RuntimeError: unhandled at top level" in proc.stderr  # the app's own traceback still prints
        events = sink.events()
    assert len(events) == 1, [e["exception"]["values"][-1]["value"] for e in events]
    (event,) = events
    assert event["exception"]["values"][-1]["value"] == "unhandled at top level"
    assert len(event["contexts"]["trace"]["trace_id"]) == 32
    assert event["tags"]["service.name"] == "sentry-excepthook-test"


def test_forked_child_does_not_resend_the_parents_queued_events(tmp_path: Path) -> None:
    with SentrySink() as sink:
        proc = subprocess.run([sys.executable, "-c", _FORK], env=_env(sink.dsn), cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        values = sorted(e["exception"]["values"][-1]["value"] for e in sink.events())
    assert values == ["child", "parent"]
