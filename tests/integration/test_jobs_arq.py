"""arq with ``otelkit.init()`` alone: a producer process and a real ``arq --burst`` worker against the real
Redis, exported through the real rotel collector.

Injected: a job that succeeds, one that asks for two retries (``arq.Retry``) and then succeeds, one that
always asks for a retry (``max_tries=2``: two retries, then arq fails it at the third pick-up without
running it), one that raises (arq does not retry that), and two more plain jobs for queue depth.
"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE
from tests.integration.jobs_support import (
    HERE,
    PROCESS_TIMEOUT,
    app_env,
    check_job_logs,
    check_outcome_metrics,
    console_script,
    gauge_values,
    metric_total,
    produce,
    spans_of,
)

pytest.importorskip("arq")

EXECUTIONS = {"ok": ["ack"], "flaky": ["retry", "retry", "ack"], "doomed": ["retry", "retry", "dead_letter"],
              "broken": ["dead_letter"]}
EXTRA = 2


def test_arq_jobs_across_processes(otelkit_collector, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    import redis

    queue = f"otelkit-test-arq-{uuid.uuid4().hex[:12]}"
    env_extra = {"JOB_APPS_REDIS_URL": redis_url, "JOB_APPS_ARQ_QUEUE": queue}
    client = redis.Redis.from_url(redis_url)
    produced: dict[str, dict[str, str]] = {}
    try:
        produced = produce("arq_producer", {"extra": EXTRA}, app_env(otelkit_collector, "arq-producer", env_extra))
        worker = subprocess.run([console_script("arq"), "job_apps.ArqSettings", "--burst"],
                                env=app_env(otelkit_collector, "arq-worker", env_extra), capture_output=True, text=True,
                                timeout=PROCESS_TIMEOUT, cwd=str(HERE))
        assert worker.returncode == 0, worker.stderr[-3000:]
    finally:
        keys = [queue, f"{queue}:health-check"]
        for prefix in ("arq:job:", "arq:retry:", "arq:in-progress:", "arq:result:"):
            keys += [f"{prefix}{info['id']}" for info in produced.values()]
        client.delete(*keys)
        client.close()

    total = sum(len(v) for v in EXECUTIONS.values()) + EXTRA
    sent = len(EXECUTIONS) + EXTRA
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in spans_of(otelkit_collector,
                                                       "arq-worker") if s.kind == "CONSUMER"]) >= total
                      and metric_total(otelkit_collector, "otelkit.messaging.settled.messages", "arq-worker") >= total
                      and len(spans_of(otelkit_collector, "arq-producer")) >= sent, timeout=60)
    sends = [s for s in spans_of(otelkit_collector, "arq-producer") if s.name == f"send {queue}"]
    processes = [s for s in spans_of(otelkit_collector, "arq-worker") if s.name == f"process {queue}"]
    assert len(sends) == sent and len(processes) == total
    # The producer traced its sends and its own 4 GETs (reading the payloads back): arq's PING, WATCH, EXISTS,
    # MULTI, PSETEX, ZADD are no spans of their own.
    assert sorted(s.name for s in spans_of(otelkit_collector, "arq-producer") if s.kind == "CLIENT") == ["GET"] * 4
    assert len(spans_of(otelkit_collector, "arq-producer")) == sent + 4

    send_by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    for name, info in produced.items():
        send = send_by_id[info["id"]]
        runs = sorted((s for s in processes if s.attributes["messaging.message.id"] == info["id"]),
                      key=lambda s: s.start_time_unix_nano)
        assert [s.attributes["otelkit.outcome"] for s in runs] == EXECUTIONS[name]
        ran = [s for s in runs if "otelkit.message.attempt" in s.attributes]
        assert [s.attributes["otelkit.message.attempt"] for s in ran] == list(range(1, len(ran) + 1))
        for run in runs:
            assert run.parent_span_id is None  # otelkit's rule for receive: a root span linked to its producer
            assert [(link.trace_id, link.span_id) for link in run.links] == [(send.trace_id, send.span_id)]
            assert run.attributes["messaging.system"] == "arq"
            assert run.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
    doomed = [s for s in processes if s.attributes["messaging.message.id"] == produced["doomed"]["id"]]
    assert "otelkit.message.attempt" not in doomed[-1].attributes  # failed at pick-up, never ran
    assert doomed[0].status_code != "ERROR"  # arq.Retry is a request, not a failure

    worker_spans = spans_of(otelkit_collector, "arq-worker")
    job_traces = {s.trace_id for s in processes}
    assert [s.name for s in worker_spans if s.trace_id not in job_traces] == []  # no poll/health/finish noise
    by_id = {s.span_id: s for s in processes}
    gets = [s for s in worker_spans if s.name == "GET"]
    assert len(gets) == 1 + 3 + EXTRA  # ok, flaky three times, extras: the jobs' own commands
    for get in gets:
        assert get.parent_span_id in by_id
        assert get.attributes[CORRELATION_ATTRIBUTE] == by_id[get.parent_span_id].attributes[CORRELATION_ATTRIBUTE]

    check_job_logs(otelkit_collector, "arq-worker", produced, job_traces, total - 1)

    outcomes = Counter(o for runs in EXECUTIONS.values() for o in runs) + Counter(ack=EXTRA)
    check_outcome_metrics(otelkit_collector, "arq-worker", "arq-producer", queue, outcomes, sent)

    assert gauge_values(otelkit_collector, "arq-producer", queue, "ready") == [sent]
    receiver.wait_for(lambda: gauge_values(otelkit_collector, "arq-worker", queue, "ready"), timeout=60)
    assert gauge_values(otelkit_collector, "arq-worker", queue, "ready")[-1] == 0
