"""What the Docker smoke test sends, checked without Docker: the same emitter
script, run through the real rotel collector into an in-process OTLP receiver.

So the smoke test's input is known to be right here, and on a machine with
Docker only the stack's side (Tempo, Loki, Prometheus) is left to prove.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

from _stacklib import SMOKE_EMITTER


def test_smoke_emitter_sends_a_trace_a_log_and_metrics(otelkit_collector: Any) -> None:
    service = f"otelkit-smoke-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, "-c", SMOKE_EMITTER, service, otelkit_collector.grpc_endpoint],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                               "OTEL_BSP_SCHEDULE_DELAY": "200"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trace_id = json.loads(proc.stdout.strip().splitlines()[-1])["trace_id"]
    receiver = otelkit_collector.receiver

    spans = receiver.wait_for(lambda: [s for s in receiver.spans() if s.trace_id == trace_id and
                                       s.resource.get("service.name") == service], timeout=30)
    by_name = {s.name: s for s in spans}
    assert by_name["GET /smoke"].kind == "SERVER" and by_name["GET"].kind == "CLIENT"
    assert by_name["GET"].parent_span_id == by_name["GET /smoke"].span_id
    assert by_name["GET"].attributes["peer.service"] == "smoke-backend"  # a service-graph edge for Tempo

    logs = receiver.wait_for(lambda: [r for r in receiver.logs() if r.trace_id == trace_id], timeout=30)
    assert any(f"smoke log line {service}" in str(r.body) for r in logs)
    assert logs[0].span_id == by_name["GET"].span_id

    wanted = {"otelkit.smoke.requests", "otelkit.smoke.duration"}

    def both() -> dict[str, Any]:
        found = {p.name: p for p in receiver.metrics() if p.resource.get("service.name") == service}
        return found if wanted <= set(found) else {}
    kinds = receiver.wait_for(both, timeout=30)
    assert kinds["otelkit.smoke.requests"].value == 1
    assert kinds["otelkit.smoke.duration"].type == "histogram" and kinds["otelkit.smoke.duration"].count == 1
