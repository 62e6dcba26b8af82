"""The bullmq integration: lazy (init() never imports bullmq), selectable by name, and its carrier reader.

Trace continuity with Node's bullmq-otel, outcomes and the silenced worker polling are tested on the
real Redis with real Node processes in tests/integration/test_instrument_bullmq.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from otelkit._instrument.bullmq import job_carrier

PROGRAM = """
import json, sys
import otelkit
otelkit.init(service_name="bullmq-lazy")
status = {s.name: s.state for s in otelkit.integration_status()}
before = "bullmq" in sys.modules
import bullmq
wrapped = bool(getattr(bullmq.Queue.__dict__["add"], "_self_otelkit", False))
worker = bool(getattr(bullmq.Worker.__dict__["run"], "_self_otelkit", False))
print(json.dumps({"status": status.get("bullmq"), "imported_by_init": before, "add": wrapped, "run": worker}))
otelkit.shutdown()
"""


def _run(**env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    base.update({"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                 "OTELKIT_SYSTEM_METRICS": "false", **env})
    proc = subprocess.run([sys.executable, "-c", PROGRAM], env=base, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_init_does_not_import_bullmq_and_patches_it_on_import() -> None:
    pytest.importorskip("bullmq")
    assert _run() == {"status": "enabled", "imported_by_init": False, "add": True, "run": True}


def test_disabled_by_name() -> None:
    pytest.importorskip("bullmq")
    result = _run(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="bullmq")
    assert result == {"status": "disabled", "imported_by_init": False, "add": False, "run": False}
    assert _run(OTELKIT_INSTRUMENT="redis")["status"] == "disabled"


TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize("opts, expected", [
    ({"tm": json.dumps({"traceparent": TP})}, {"traceparent": TP}),  # what Node's bullmq stores
    ({"telemetry": {"metadata": json.dumps({"traceparent": TP})}}, {"traceparent": TP}),
    ({"tm": {"traceparent": TP}}, {"traceparent": TP}),
    ({}, None),
    ({"tm": "not json"}, None),
    ({"tm": "[1, 2]"}, None),
    ({"tm": 12}, None),
    ({"tm": json.dumps({"baggage": "x" * 20000})}, None),  # oversized: never parsed
    ({"telemetry": "junk"}, None),
])
def test_job_carrier(opts: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert job_carrier(SimpleNamespace(opts=opts)) == expected


def test_job_carrier_of_junk_never_raises() -> None:
    assert job_carrier(object()) is None
    assert job_carrier(SimpleNamespace(opts=None)) is None
