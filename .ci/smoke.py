"""Smoke test of an installed otelkit (not the checkout): what a new user's first run does.

``init()`` from OTEL_* variables, one span, one log record inside it, export through a real
collector (``rotel-agent``, from the ``rotel`` package) to a receiver, then ``shutdown()``.
Run by ``.ci/install-check`` in fresh virtualenvs; exits non-zero with a reason on any failure.
Arguments: ``grpc`` or ``http`` (the OTLP protocol; default both, one after the other).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys


def run(protocol: str) -> None:
    import otelkit
    from otelkit.testing._receiver import OtlpReceiver, RotelCollector

    # The installed package, not a checkout on sys.path (the venv is outside the repository).
    if os.environ.get("SMOKE_ALLOW_CHECKOUT") != "1":
        assert "site-packages" in (otelkit.__file__ or ""), otelkit.__file__
    with OtlpReceiver() as receiver, RotelCollector(receiver) as collector:
        collector.start()
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        os.environ.update({"OTEL_SERVICE_NAME": "install-smoke", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf"})
        otelkit.init()
        with otelkit.span("smoke.work") as span:
            logging.getLogger("smoke").warning("smoke record %s", protocol)
        report = otelkit.shutdown(timeout=10)
        spans = receiver.wait_for_spans(1, timeout=30, name="smoke.work")
        logs = receiver.wait_for(lambda: [log for log in receiver.logs() if "smoke record" in str(log.body)],
                                 timeout=30, message="the smoke log record")
        trace_id = format(span.get_span_context().trace_id, "032x")
        assert spans[0].trace_id == trace_id, (spans[0].trace_id, trace_id)
        assert spans[0].resource.get("service.name") == "install-smoke", spans[0].resource
        assert logs[0].trace_id == trace_id, (logs[0].trace_id, trace_id)
        print(f"smoke ok ({protocol}): span and log record arrived through rotel; shutdown: {report}")


def main() -> int:
    protocols = sys.argv[1:] or ["grpc", "http"]
    if len(protocols) > 1:  # one process per protocol: init() configures a process once per run here
        for protocol in protocols:
            subprocess.run([sys.executable, __file__, protocol], check=True)
        return 0
    run(protocols[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
