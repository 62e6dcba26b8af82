"""Modules share no otelkit state in one (xdist) worker process: the httpx header-capture order dependence.

Under ``pytest -n 2 --dist loadfile`` a worker runs module after module in one process. A module that
called ``otelkit.init()`` in-process and never reset left httpx instrumented with the header-capture
lists read at that ``init()`` (none); the next ``instrument_all`` only re-points an integration already
enabled, so test_instrument_httpx.py's header-capture case, when it ran first in its module, saw no
captured header. tests/conftest.py now resets otelkit after every module; this runs the two modules in
that order in one real pytest process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADERS_CASE = ("tests/integration/test_instrument_httpx.py::"
                "test_url_credentials_query_secrets_and_captured_headers_are_redacted")


def test_httpx_header_capture_after_a_module_that_left_otelkit_initialised() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OTEL_", "OTELKIT_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/integration/order_poison_init.py", HEADERS_CASE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout, proc.stdout[-2000:]
