"""A process using otelkit.init() exits within the shutdown deadline + 1 s whatever the collector does.

Upstream defaults take 30-50 s to exit with the collector refused, hung or answering 503
(reliability.md B2-B8). Each case runs the real program in a subprocess with all three signals
on, and measures the time from its "done" marker to its exit. The machine may be busy: each
check also times a reference run of the same program just before, in which nothing can make it
wait, and allows for what that run cost (app_runner.assert_within_deadline, docs/testing.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from app_runner import assert_within_deadline, run_timed_exit

from otelkit.testing._receiver import BlackholeServer, OtlpReceiver, refused_endpoint

APP = Path(__file__).parent / "apps" / "emit_app.py"
SHUTDOWN_TIMEOUT = 2.0  # seconds; OTELKIT_SHUTDOWN_TIMEOUT is milliseconds


@contextmanager
def collector_in(mode: str, protocol: str) -> Iterator[tuple[str, OtlpReceiver | None]]:
    """An endpoint that behaves as ``mode``: ok, refused, blackhole, hang, slow (answers after 20 s),
    unavailable (503/UNAVAILABLE), throttled (HTTP 429 + Retry-After / gRPC RESOURCE_EXHAUSTED + RetryInfo,
    asking for a 30 s pause: longer than the shutdown deadline)."""
    if mode == "refused":
        yield f"http://{refused_endpoint()}", None
        return
    if mode == "blackhole":
        with BlackholeServer() as hole:
            yield f"http://{hole.endpoint}", None
        return
    with OtlpReceiver() as receiver:
        if mode == "hang":
            receiver.hang()
        elif mode == "slow":
            receiver.delay(20)
        elif mode == "unavailable":
            receiver.fail(503, "UNAVAILABLE")
        elif mode == "throttled":
            receiver.fail(429, "RESOURCE_EXHAUSTED", retry_after=30)
        yield (receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint), receiver


def run_app(endpoint: str, protocol: str, spans: int, *extra: str,
            **variables: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({
        "OTEL_SERVICE_NAME": "exit-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTELKIT_SHUTDOWN_TIMEOUT": str(int(SHUTDOWN_TIMEOUT * 1000)),
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTELKIT_SYSTEM_METRICS": "false",
        **variables,
    })
    return run_timed_exit([sys.executable, str(APP), str(spans), *extra], env)


def reference_exit(protocol: str, spans: int, *extra: str, **variables: str) -> float:
    """The same program's exit, timed the same way, against a healthy collector: the same work, no wait."""
    with collector_in("ok", protocol) as (endpoint, _):
        elapsed, result = run_app(endpoint, protocol, spans, *extra, **variables)
    assert result.returncode == 0, result.stderr
    return elapsed


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("mode", ["refused", "blackhole", "hang", "slow", "unavailable", "throttled"])
def test_exit_is_bounded_under_collector_faults(mode: str, protocol: str) -> None:
    reference = reference_exit(protocol, 200)
    with collector_in(mode, protocol) as (endpoint, _):
        elapsed, result = run_app(endpoint, protocol, 200)
    assert result.returncode == 0, result.stderr
    assert_within_deadline(elapsed, SHUTDOWN_TIMEOUT, reference, f"exit under {mode}", result.stderr[-3000:])
    # Nothing was lost silently: the shutdown report names what could not be delivered (dropped, or sent
    # and never answered: the collector may or may not hold it).
    assert "dropped" in result.stderr or "without an answer" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_healthy_exit_is_fast_and_delivers_everything(protocol: str) -> None:
    # The reference: the same program with telemetry off. A healthy exit waits for nothing either.
    reference, _ = run_app("http://127.0.0.1:9", protocol, 300, "--explicit-shutdown", OTEL_SDK_DISABLED="true")
    with collector_in("ok", protocol) as (endpoint, receiver):
        assert receiver is not None
        elapsed, result = run_app(endpoint, protocol, 300, "--explicit-shutdown")
        assert result.returncode == 0, result.stderr
        spans = receiver.spans("work")
        logs = [r for r in receiver.logs() if str(r.body).startswith("item ")]
        points = receiver.metrics("emit_app.items")
    assert_within_deadline(elapsed, 0.0, reference, "a healthy exit", result.stderr)
    assert sorted(s.attributes["seq"] for s in spans) == list(range(300))
    assert len(logs) == 300
    assert points and points[-1].value == 300
    assert "traces: 300 spans exported" in result.stdout and "logs: 300 log records exported" in result.stdout
    assert "dropped" not in result.stdout, result.stdout


def test_shutdown_report_counts_what_a_dead_collector_cost() -> None:
    with collector_in("refused", "grpc") as (endpoint, _):
        elapsed, result = run_app(endpoint, "grpc", 100, "--explicit-shutdown")
    assert result.returncode == 0, result.stderr
    report = next(line for line in result.stdout.splitlines() if line.startswith("REPORT"))
    assert "traces: 0 spans exported, 100 dropped (shutdown_timeout: " in report
    assert "logs: 0 log records exported, 100 dropped (shutdown_timeout: " in report
    assert "127.0.0.1" in report  # the cause names the collector
