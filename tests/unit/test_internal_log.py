"""otelkit's own warnings reach a person, once, whatever logging the application configured."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, sys
mode = sys.argv[1]
if mode == "app-handler":
    logging.basicConfig(stream=sys.stderr, format="APP %(name)s %(message)s")
import otelkit
otelkit.init(service_name="t", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
             instrument=(), system_metrics=False)
logging.getLogger("otelkit").warning("collector unreachable: %s", "x")
logging.getLogger("otelkit._export").info("not shown at INFO")
"""


def _run(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_warning_is_printed_when_the_app_configured_no_logging() -> None:
    """Root holds only otelkit's OTLP handler: the fallback prints the warning to stderr."""
    err = _run("bare")
    assert err.count("collector unreachable: x") == 1
    assert "not shown at INFO" not in err


def test_warning_is_not_duplicated_when_the_app_has_a_handler() -> None:
    """With the app's own handler the warning appears once, through that handler."""
    err = _run("app-handler")
    lines = [line for line in err.splitlines() if "collector unreachable: x" in line]
    assert len(lines) == 1 and lines[0].startswith("APP otelkit")
