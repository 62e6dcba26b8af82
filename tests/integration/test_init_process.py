"""otelkit.init() in real processes: delivery at interpreter exit (atexit) and in a forked child."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

from otelkit.testing._receiver import OtlpReceiver


def _run(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def test_spans_are_delivered_at_interpreter_exit_without_calling_shutdown(otelkit_otlp_receiver: OtlpReceiver) -> None:
    run = uuid.uuid4().hex[:8]
    proc = _run(
        """
        import otelkit
        from opentelemetry import trace
        otelkit.init(instrument=[], system_metrics=False)
        with trace.get_tracer("exit").start_as_current_span("last-words"):
            pass
        # no otelkit.shutdown(): the atexit hook must flush
        """,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_otlp_receiver.http_endpoint, "OTEL_SERVICE_NAME": f"exit-{run}",
         "OTEL_BSP_SCHEDULE_DELAY": "60000"},  # nothing is sent before exit unless shutdown flushes
    )
    assert proc.returncode == 0, proc.stderr
    spans = [s for s in otelkit_otlp_receiver.wait_for_spans(1) if s.resource.get("service.name") == f"exit-{run}"]
    assert [s.name for s in spans] == ["last-words"]


def test_forked_child_gets_fresh_providers_and_its_own_instance_id(otelkit_otlp_receiver: OtlpReceiver) -> None:
    run = uuid.uuid4().hex[:8]
    proc = _run(
        """
        import os, sys
        import otelkit
        from opentelemetry import trace
        otelkit.init(instrument=[], system_metrics=False)
        tracer = trace.get_tracer("fork")   # handed out before the fork: must follow the child's re-init
        with tracer.start_as_current_span("parent-work"):
            pass
        pid = os.fork()
        if pid == 0:
            with tracer.start_as_current_span("child-work"):
                pass
            otelkit.shutdown(timeout=5)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child", pid, status, flush=True)
        otelkit.shutdown(timeout=5)
        """,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_otlp_receiver.http_endpoint, "OTEL_SERVICE_NAME": f"fork-{run}"},
    )
    assert proc.returncode == 0, proc.stderr
    child_line = [line for line in proc.stdout.splitlines() if line.startswith("child ")]
    assert child_line and child_line[0].endswith(" 0"), proc.stdout
    child_pid = int(child_line[0].split()[1])
    otelkit_otlp_receiver.wait_for(lambda: len([s for s in otelkit_otlp_receiver.spans()
                                        if s.resource.get("service.name") == f"fork-{run}"]) >= 2, timeout=30)
    spans = {s.name: s for s in otelkit_otlp_receiver.spans() if s.resource.get("service.name") == f"fork-{run}"}
    mine = [s for s in otelkit_otlp_receiver.spans() if s.resource.get("service.name") == f"fork-{run}"]
    assert sorted(s.name for s in mine) == ["child-work", "parent-work"]  # each exactly once
    assert spans["child-work"].resource["process.pid"] == child_pid
    assert spans["parent-work"].resource["process.pid"] != child_pid
    assert spans["child-work"].resource["service.instance.id"] != spans["parent-work"].resource["service.instance.id"]


def test_under_opentelemetry_instrument_nothing_is_sent_twice(otelkit_otlp_receiver: OtlpReceiver) -> None:
    """The agent configured SDK providers from OTEL_* first; otelkit.init() uses them instead of fighting."""
    run = uuid.uuid4().hex[:8]
    script = textwrap.dedent(
        """
        import logging
        import otelkit
        from opentelemetry import metrics, trace
        early = trace.get_tracer("early")
        otelkit.init(instrument=[], system_metrics=False)
        otelkit.init(instrument=[], system_metrics=False, resource_attributes={"again": "1"})  # re-init
        with early.start_as_current_span("under-agent"):
            logging.getLogger("app").warning("logged under the agent")
        metrics.get_meter("app").create_counter("agent.jobs").add(1)
        print("global", type(trace.get_tracer_provider()).__module__)
        otelkit.shutdown(timeout=5)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_otlp_receiver.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_SERVICE_NAME": f"agent-{run}",
                "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    agent = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    proc = subprocess.run([agent, sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "global opentelemetry.sdk.trace" in proc.stdout  # the agent's provider stayed the global one
    assert "Overriding" not in proc.stderr
    explained = [line for line in proc.stderr.splitlines() if "already installed by opentelemetry-instrument" in line]
    assert len(explained) == 1, proc.stderr
    assert "nothing is sent twice" in explained[0]

    spans = otelkit_otlp_receiver.wait_for_spans(1, name="under-agent")
    # let anything that would be a duplicate arrive: the agent's shutdown at exit has run when the process ended
    assert len([s for s in otelkit_otlp_receiver.spans("under-agent")
                if s.resource["service.name"] == f"agent-{run}"]) == 1
    assert "telemetry.auto.version" in spans[0].resource  # exported by the agent's pipeline, not a second one
    logs = otelkit_otlp_receiver.wait_for(
        lambda: [r for r in otelkit_otlp_receiver.logs() if r.body == "logged under the agent"])
    assert len(logs) == 1
    assert logs[0].trace_id == spans[0].trace_id
