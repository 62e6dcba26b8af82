"""Bad input at the command line: ``otelkit`` / ``otelkit doctor`` with garbage arguments and environment.

A real subprocess each time: a usage error or a report naming every bad setting, a non-zero exit code,
never a Python traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _otelkit(*args: str, env: dict[bytes, bytes] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith(("OTEL", "SENTRY"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "otelkit", *args], env=base, capture_output=True,  # type: ignore[arg-type]
                          text=True, errors="replace", timeout=120)


@pytest.mark.parametrize("args", [("--bogus",), ("doctor", "--bogus"), ("demo", "--workers", "-5"),
                                  ("demo", "--workers", "abc"), ("nonexistent-command",)])
def test_bad_arguments_are_usage_errors(args: tuple[str, ...]) -> None:
    result = _otelkit(*args)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr and "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(("var", "value"), [
    (b"OTEL_SERVICE_NAME", b"svc\xff"),
    (b"OTEL_EXPORTER_OTLP_ENDPOINT", b"collector:4318"),
    (b"OTEL_BSP_SCHEDULE_DELAY", b"1e309"),
    (b"OTEL_EXPORTER_OTLP_HEADERS", b"x-k=a%0Ab"),
])
def test_doctor_names_a_bad_variable(var: bytes, value: bytes) -> None:
    result = _otelkit("doctor", env={var: value})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "FAIL" in output and var.decode() in output, output
    assert "Traceback" not in output


def test_doctor_names_every_bad_variable_at_once() -> None:
    bad = {b"OTEL_SERVICE_NAME": b"svc\xff", b"OTEL_EXPORTER_OTLP_ENDPOINT": b"collector:4318",
           b"OTEL_BSP_SCHEDULE_DELAY": b"1e309"}
    result = _otelkit("doctor", env=bad)
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if "FAIL" in line]
    assert all(any(var.decode() in line for line in failures) for var in bad), output
    assert "OTEL_SERVICE_NAME is not set" not in output
