"""The RQ, Dramatiq and arq integrations: lazy, selectable by name, idempotent, reversible, status with reason."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from otelkit import _instrument
from otelkit._config import resolve

pytest.importorskip("rq")
pytest.importorskip("dramatiq")
pytest.importorskip("arq")

_PROBE = r"""
import json, sys
import otelkit
otelkit.init(service_name="x", system_metrics=False, traces_exporter="none", metrics_exporter="none",
             logs_exporter="none")
before = sorted(m for m in ("rq", "dramatiq", "arq") if m in sys.modules)
status = {s.name: [s.state, s.reason] for s in otelkit.integration_status()}
import rq.queue, dramatiq.broker, dramatiq.brokers.redis, arq.connections
wrapped = {
    "arq": getattr(vars(arq.connections.ArqRedis)["enqueue_job"], "_self_otelkit", False),
    "rq": getattr(vars(rq.queue.Queue)["enqueue_job"], "_self_otelkit", False),
    "dramatiq": getattr(vars(dramatiq.broker.Broker)["emit_before"], "_self_otelkit", False),
    "dramatiq_redis": getattr(vars(dramatiq.brokers.redis.RedisBroker)["enqueue"], "_self_otelkit", False),
}
print(json.dumps({"before": before, "status": status, "wrapped": wrapped}))
"""


def _probe(env: dict[str, str] | None = None) -> dict[str, Any]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    full.update(env or {})
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, env=full)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_init_imports_no_job_library_and_patches_it_when_the_application_does() -> None:
    result = _probe()
    assert result["before"] == []  # init() alone imported neither library
    assert result["status"]["rq"][0] == "enabled" and "patched when rq is imported" in result["status"]["rq"][1]
    assert result["status"]["dramatiq"][0] == "enabled"
    assert result["status"]["arq"][0] == "enabled"
    assert result["wrapped"] == {"arq": True, "rq": True, "dramatiq": True, "dramatiq_redis": True}


def test_disabled_by_name_patches_nothing() -> None:
    result = _probe({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "rq,dramatiq,arq"})
    assert result["status"]["rq"] == ["disabled", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS contains 'rq'"]
    assert result["status"]["dramatiq"][0] == "disabled" and result["status"]["arq"][0] == "disabled"
    assert result["wrapped"] == {"arq": False, "rq": False, "dramatiq": False, "dramatiq_redis": False}


def _statuses(**settings: Any) -> dict[str, _instrument.IntegrationStatus]:
    settings.setdefault("system_metrics", False)
    return {s.name: s for s in _instrument.instrument_all(resolve(**settings), None, None)}


def test_selected_by_name_idempotent_and_reversible() -> None:
    import dramatiq.broker
    import rq.queue
    import rq.worker.base

    try:
        status = _statuses(instrument=["rq"])
        assert status["rq"].state == "enabled" and status["rq"].reason.startswith("rq ")
        assert status["dramatiq"].state == "disabled" and "not in instrument=['rq']" in status["dramatiq"].reason
        first = vars(rq.queue.Queue)["enqueue_job"]
        assert getattr(first, "_self_otelkit", False)
        assert not getattr(vars(dramatiq.broker.Broker)["emit_before"], "_self_otelkit", False)
        _statuses(instrument=["rq", "dramatiq"])  # re-init: rq untouched (one layer), dramatiq added
        assert vars(rq.queue.Queue)["enqueue_job"] is first
        assert not getattr(first.__wrapped__, "_self_otelkit", False)
        assert getattr(vars(dramatiq.broker.Broker)["emit_before"], "_self_otelkit", False)
        _statuses(instrument=["dramatiq"])  # rq no longer wanted: removed
        assert not getattr(vars(rq.queue.Queue)["enqueue_job"], "_self_otelkit", False)
        assert not getattr(vars(rq.worker.base.BaseWorker)["perform_job"], "_self_otelkit", False)
    finally:
        _instrument.uninstrument_all()
    assert not getattr(vars(dramatiq.broker.Broker)["emit_before"], "_self_otelkit", False)


def test_plan_reads_metadata_only() -> None:
    from otelkit._instrument import arq as arq_integration
    from otelkit._instrument import dramatiq as dramatiq_integration
    from otelkit._instrument import rq as rq_integration

    assert arq_integration.plan().state == "enabled"
    assert rq_integration.plan().state == "enabled"
    assert dramatiq_integration.plan().state == "enabled"
