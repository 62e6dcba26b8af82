"""Helpers of the job-queue tests: run the producer and the real workers, read what reached rotel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from otelkit._names import CORRELATION_ATTRIBUTE
from otelkit.testing._receiver import ReceivedLog, ReceivedPoint, ReceivedSpan, RotelCollector

HERE = Path(__file__).parent
PROCESS_TIMEOUT = 90


def app_env(collector: RotelCollector, service: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a producer or worker: otelkit.init() alone, exporting to the real rotel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_", "JOB_APPS_"))}
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # metrics go out once, at exit
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTELKIT_SYSTEM_METRICS": "false",
        "OTELKIT_CHILD_EXIT_TIMEOUT": "20000",  # ms: a loaded machine must not cut a work horse's exit flush
        "JOB_APPS_INIT": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    env.update(extra or {})
    return env


def produce(role: str, args: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", "import job_apps; job_apps.main()", role, json.dumps(args)],
                          env=dict(env), capture_output=True,
                          text=True, timeout=PROCESS_TIMEOUT, cwd=str(HERE))
    assert proc.returncode == 0, f"{role} failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def spans_of(collector: RotelCollector, service: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans() if s.resource.get("service.name") == service]


def metric_total(collector: RotelCollector, name: str, service: str, **attributes: Any) -> float:
    """A counter's or histogram's total over every process of ``service`` (work horses each export their own).

    Points are cumulative per process (``service.instance.id``): the last value of each series is summed.
    """
    latest: dict[tuple[Any, ...], ReceivedPoint] = {}
    for point in collector.receiver.metrics(name):
        if point.resource.get("service.name") != service:
            continue
        if any(point.attributes.get(k) != v for k, v in attributes.items()):
            continue
        key = (point.resource.get("service.instance.id"), tuple(sorted(point.attributes.items())))
        if key not in latest or point.time_unix_nano >= latest[key].time_unix_nano:
            latest[key] = point
    return float(sum((p.count if p.count is not None else p.value) or 0 for p in latest.values()))


def gauge_values(collector: RotelCollector, service: str, destination: str, state: str) -> list[float]:
    return [p.value for p in collector.receiver.metrics("otelkit.messaging.queue.length")
            if p.resource.get("service.name") == service and p.value is not None
            and p.attributes.get("messaging.destination.name") == destination
            and p.attributes.get("otelkit.messaging.queue.state") == state]


def check_job_logs(collector: RotelCollector, service: str, produced: Mapping[str, Any], job_traces: set[str],
                   at_least: int) -> list[ReceivedLog]:
    """Wait for ``at_least`` "jobs" log records of ``service``; each in a job's trace, with its correlation ID.

    A record whose last word is ``tok-NAME`` belongs to the job ``NAME`` of ``produced`` (what the producer
    printed: ``{NAME: {"correlation_id": ...}}``) and must carry that job's correlation ID. Returns the records.
    """
    receiver = collector.receiver

    def job_logs() -> list[ReceivedLog]:
        return [r for r in receiver.logs() if r.scope == "jobs" and r.resource.get("service.name") == service]

    receiver.wait_for(lambda: len(job_logs()) >= at_least, timeout=60)
    by_token = {f"tok-{name}": info["correlation_id"] for name, info in produced.items()}
    records = job_logs()
    for record in records:
        token = str(record.body).split()[-1]
        if token in by_token:
            assert record.attributes[CORRELATION_ATTRIBUTE] == by_token[token], record.body
        assert record.trace_id in job_traces, record.body
    return records


def check_outcome_metrics(collector: RotelCollector, worker: str, producer: str, queue: str,
                          outcomes: Mapping[str, int], sent: int) -> None:
    """Settled counts per outcome, one end-to-end and one time-in-queue point per execution, ``sent`` sends."""
    for outcome, count in outcomes.items():
        assert metric_total(collector, "otelkit.messaging.settled.messages", worker,
                            **{"otelkit.outcome": outcome, "messaging.destination.name": queue}) == count, outcome
    executions = sum(outcomes.values())
    assert metric_total(collector, "otelkit.messaging.message.end_to_end.duration", worker) == executions
    assert metric_total(collector, "otelkit.messaging.message.time_in_queue", worker) == executions
    assert metric_total(collector, "messaging.client.sent.messages", producer) == sent


def console_script(name: str) -> str:
    """The path of a console script installed beside this interpreter (``rq``, ``dramatiq``, ``arq``)."""
    return str(Path(sys.executable).with_name(name))


def run_worker_until(args: Sequence[str], env: Mapping[str, str], done: Callable[[], bool],
                     receiver: Any) -> None:
    """Run a real worker (``args`` in this folder) until ``receiver.wait_for(done)`` holds, then SIGTERM it;
    asserts it exited 0 (its stderr in the message). A worker that does not stop is killed."""
    worker = subprocess.Popen(list(args), env=dict(env), cwd=str(HERE),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        receiver.wait_for(done, timeout=PROCESS_TIMEOUT)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _out, err = worker.communicate(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            _out, err = worker.communicate()
    assert worker.returncode == 0, err[-3000:]
