"""``otelkit doctor`` answers without importing the instrumented libraries, and fits one screen.

Its speed is measured in ``benchmarks/bench_doctor.py`` (recorded in benchmarks/RESULTS.md), never asserted
as a time here: what keeps it fast is that nothing heavy is imported, and that is what these tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from otelkit._doctor import Check, Report, render_text

HEAVY = ("redis", "httpx", "psycopg2", "sentry_sdk", "opentelemetry.instrumentation.redis",
         "opentelemetry.instrumentation.httpx", "opentelemetry.instrumentation.psycopg2", "grpc")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env["NO_COLOR"] = "1"
    return env


def test_doctor_with_nothing_configured_imports_no_instrumented_library() -> None:
    script = (
        "import json, sys\n"
        "from otelkit._doctor import diagnose\n"
        "report = diagnose(send=False)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=_clean_env())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_plan_agrees_with_what_init_would_instrument() -> None:
    script = (
        "import json\n"
        "from otelkit import _config, _instrument\n"
        "settings = _config.resolve()\n"
        "planned = {s.name: s.state for s in _instrument.plan(settings)}\n"
        "done = {s.name: s.state for s in _instrument.instrument_all(settings, None, None)}\n"
        "print(json.dumps([planned, done]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=_clean_env())
    assert done.returncode == 0, done.stderr
    planned, actual = json.loads(done.stdout.splitlines()[-1])
    assert planned == actual


def test_nothing_configured_fits_one_screen_and_ends_with_what_to_do() -> None:
    done = subprocess.run([sys.executable, "-m", "otelkit", "doctor", "--no-send"], capture_output=True,
                          text=True, timeout=60, env=_clean_env())
    lines = done.stdout.splitlines()
    assert len(lines) <= 50, done.stdout
    assert "What to do:" in lines
    # The enabled integrations share one line; the embedded default says how to ship telemetry.
    assert sum(1 for line in lines if line.lstrip().startswith("ok   enabled:")) == 1
    assert any("-> set OTEL_EXPORTER_OTLP_ENDPOINT" in line for line in lines) or "collector" in done.stdout


def test_what_to_do_lists_each_fix_once_in_order() -> None:
    report = Report()
    report.add(Check("endpoints", "traces", "fail", "connection refused", "start the collector"))
    report.add(Check("endpoints", "logs", "fail", "connection refused", "start the collector"))
    report.add(Check("config", "service name", "warn", "not set", "set OTEL_SERVICE_NAME"))
    text = render_text(report)
    todo = text[text.index("What to do:"):].splitlines()[1:]
    assert todo == ["  1. start the collector", "  2. set OTEL_SERVICE_NAME"]
