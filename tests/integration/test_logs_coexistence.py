"""The application's logging, configured before, after or over ``otelkit.init()``, keeps its console output
while otelkit exports through the real rotel collector (each order in a real subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from otelkit.testing._receiver import RotelCollector

APP = str(Path(__file__).parent / "apps" / "log_order_app.py")


def _run(order: str, level: str, token: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", **env}
    proc = subprocess.run([sys.executable, APP, order, level, token], capture_output=True, text=True,
                          timeout=60, env=full)
    assert proc.returncode == 0, proc.stderr
    return proc


def _app_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("APP ")]


@pytest.mark.parametrize("order", ["before", "after", "force", "dictconfig"])
def test_every_order_keeps_the_console_and_exports(otelkit_collector: RotelCollector, order: str) -> None:
    token = uuid.uuid4().hex[:8]
    proc = _run(order, "INFO", token, OTEL_EXPORTER_OTLP_ENDPOINT=otelkit_collector.http_endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    # The console shows exactly what the application configured: its format, its level.
    assert _app_lines(proc.stdout) == [f"APP INFO info {token}", f"APP WARNING warning {token}"], proc.stdout
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: receiver.logs(body=f"warning {token}") and receiver.logs(body=f"info {token}"),
                      timeout=30, message=f"records of the {order!r} app never arrived")
    assert receiver.logs(body=f"debug {token}") == []
    (record,) = receiver.logs(body=f"info {token}")
    assert record.scope == "shop.orders"
    assert record.resource["service.name"] == "log-order-app"
    assert len(receiver.logs(body=f"warning {token}")) == 1  # exported once, whatever the order


@pytest.mark.parametrize("order", ["before", "after"])
def test_a_warning_console_stays_at_warning_while_info_is_exported(otelkit_collector: RotelCollector,
                                                                   order: str) -> None:
    # The app's console handler shows WARNING and above; otelkit lowers the root logger to export INFO,
    # but the records that exist only for that reach no handler of the application.
    token = uuid.uuid4().hex[:8]
    proc = _run(order, "WARNING", token, OTEL_EXPORTER_OTLP_ENDPOINT=otelkit_collector.http_endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert _app_lines(proc.stdout) == [f"APP WARNING warning {token}"], proc.stdout
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: receiver.logs(body=f"warning {token}") and receiver.logs(body=f"info {token}"),
                      timeout=30, message="the INFO record was not exported")


def test_an_app_without_logging_config_still_prints_warnings_as_python_does(otelkit_collector: RotelCollector) -> None:
    token = uuid.uuid4().hex[:8]
    proc = _run("none", "INFO", token, OTEL_EXPORTER_OTLP_ENDPOINT=otelkit_collector.http_endpoint,
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    # Python's last-resort handler: the bare message of WARNING and above on stderr, as without otelkit.
    assert f"warning {token}" in proc.stderr.splitlines(), proc.stderr
    assert f"info {token}" not in proc.stderr
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: receiver.logs(body=f"warning {token}") and receiver.logs(body=f"info {token}"),
                      timeout=30)


def test_logs_not_exported_leave_every_level_alone() -> None:
    token = uuid.uuid4().hex[:8]
    proc = _run("before", "WARNING", token, OTEL_LOGS_EXPORTER="none")
    # The root logger keeps the application's WARNING, so logger.info() creates no record at all
    # (httpx's per-request INFO line included).
    assert "ROOT WARNING INFO-ENABLED False" in proc.stdout, proc.stdout
    assert _app_lines(proc.stdout) == [f"APP WARNING warning {token}"]


def test_console_logs_print_an_unconfigured_apps_warning_once() -> None:
    # The embedded default (no collector): otelkit prints log records on the console, so Python's
    # last-resort handler stays quiet for them instead of printing each warning a second time.
    token = uuid.uuid4().hex[:8]
    proc = _run("none", "INFO", token, OTEL_LOGS_EXPORTER="console")
    lines = [line for line in proc.stderr.splitlines() if f"warning {token}" in line]
    assert len(lines) == 1, proc.stderr
    assert "WARN" in lines[0] and "shop.orders" in lines[0]
    assert any(f"info {token}" in line for line in proc.stderr.splitlines())
