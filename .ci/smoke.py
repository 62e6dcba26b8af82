"""Smoke test of an installed otelkit (not the checkout): what a new user's first run does.

``init()`` from OTEL_* variables, one span, one log record inside it, export through a real
collector (``rotel-agent``, from the ``rotel`` package) to a receiver, then ``shutdown()``.
Run by ``.ci/install-check`` in fresh virtualenvs; exits non-zero with a reason on any failure.
Arguments: ``grpc`` or ``http`` (the OTLP protocol; default both, one after the other), or
``extras-absent``: in a venv without the ``prometheus`` and ``sentry`` extras, asking for them gives
a clear status naming the extra, never an ImportError.
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


def extras_absent() -> None:
    import importlib.util

    import otelkit

    for module in ("prometheus_client", "sentry_sdk", "opentelemetry.exporter.prometheus"):
        assert importlib.util.find_spec(module) is None, f"{module} is installed: not the core install"

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect = Collect()
    logging.getLogger("otelkit").addHandler(collect)
    os.environ["SENTRY_DSN"] = "https://public@sentry.invalid/1"
    otelkit.init(service_name="install-smoke", traces_exporter="none", logs_exporter="none",
                 metrics_exporter="prometheus", instrument=[], system_metrics=False)
    with otelkit.span("still works"):
        pass
    statuses = {status.name: status for status in otelkit.integration_status()}
    sentry = statuses["sentry"]
    assert sentry.state == "skipped" and "otelkit[sentry]" in sentry.reason, sentry
    assert any("otelkit[prometheus]" in message for message in collect.messages), collect.messages
    otelkit.shutdown(timeout=2)
    # The doctor names both extras as findings (exit 1), with no traceback.
    doctor = subprocess.run([sys.executable, "-m", "otelkit", "doctor", "--no-send", "--timeout", "1"],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OTEL_METRICS_EXPORTER": "prometheus"})
    output = doctor.stdout + doctor.stderr
    assert doctor.returncode == 1 and "Traceback" not in output, output
    assert "pip install 'otelkit[prometheus]'" in output and "pip install 'otelkit[sentry]'" in output, output
    print(f"smoke ok (extras absent): {sentry}; prometheus: "
          f"{next(m for m in collect.messages if 'otelkit[prometheus]' in m)}")


def main() -> int:
    protocols = sys.argv[1:] or ["grpc", "http"]
    if len(protocols) > 1:  # one process per protocol: init() configures a process once per run here
        for protocol in protocols:
            subprocess.run([sys.executable, __file__, protocol], check=True)
        return 0
    if protocols[0] == "extras-absent":
        extras_absent()
    else:
        run(protocols[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
