"""RQ with ``otelkit.init()`` alone: a producer process and a real ``rq worker --burst`` (forking work horses),
against the real Redis, exported through the real rotel collector.

Injected: a job that succeeds, one that fails twice before succeeding (``Retry(max=3)``), one that always
fails (``Retry(max=1)``: one retry, then the FailedJobRegistry), and two more plain jobs for queue depth.
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

pytest.importorskip("rq")

EXECUTIONS = {"ok": ["ack"], "flaky": ["retry", "retry", "ack"], "doomed": ["retry", "dead_letter"]}
EXTRA = 2


def _burst_worker(redis_url: str, name: str, queue: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A real ``rq worker --burst`` on ``queue``: runs what is queued, exits; asserts it exited 0."""
    worker = subprocess.run([console_script("rq"), "worker", "--burst", "--url", redis_url, "-c", "job_apps",
                             "--name", name, queue],
                            env=env, capture_output=True, text=True, timeout=PROCESS_TIMEOUT, cwd=str(HERE))
    assert worker.returncode == 0, worker.stderr
    return worker


def _summary(collector) -> str:  # type: ignore[no-untyped-def]
    spans = Counter((s.resource.get("service.name"), s.kind, s.name) for s in collector.receiver.spans())
    points = Counter((p.resource.get("service.name"), p.name, p.attributes.get("otelkit.outcome"), p.value or p.count)
                     for p in collector.receiver.metrics())
    return f"spans: {dict(spans)}\npoints: {dict(points)}"


def test_rq_jobs_across_processes(otelkit_collector, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    import redis

    suffix = uuid.uuid4().hex[:12]
    queue = f"otelkit-test-rq-{suffix}"
    counter = f"otelkit-test:rq-flaky:{suffix}"
    client = redis.Redis.from_url(redis_url)
    env_extra = {"JOB_APPS_REDIS_URL": redis_url}
    try:
        produced = produce("rq_producer", {"queue": queue, "counter": counter, "extra": EXTRA},
                           app_env(otelkit_collector, "rq-producer", env_extra))
        worker = _burst_worker(redis_url, f"otelkit-{suffix}", queue,
                               app_env(otelkit_collector, "rq-worker", env_extra))
        failed_left = client.zcard(f"rq:failed:{queue}")
    finally:
        keys = [queue, counter, f"rq:queue:{queue}", f"rq:failed:{queue}", f"rq:finished:{queue}",
                f"rq:wip:{queue}", f"rq:scheduled:{queue}", f"rq:deferred:{queue}"]
        keys += [f"rq:job:{info['id']}" for info in produced.values()] if "produced" in locals() else []
        client.delete(*keys)
        client.close()
    assert failed_left == 1

    total = sum(len(v) for v in EXECUTIONS.values()) + EXTRA
    receiver = otelkit_collector.receiver
    try:
        receiver.wait_for(lambda: len([s for s in spans_of(otelkit_collector,
                                                           "rq-worker") if s.kind == "CONSUMER"]) >= total
                          and len([s for s in spans_of(otelkit_collector,
                                                       "rq-producer") if s.kind == "PRODUCER"]) >= 3 + EXTRA
                          and metric_total(otelkit_collector, "otelkit.messaging.settled.messages",
                                           "rq-worker") >= total,
                          timeout=60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_summary(otelkit_collector)}\nworker: {worker.stderr[-3000:]}") from None
    sends = [s for s in spans_of(otelkit_collector, "rq-producer") if s.name == f"send {queue}"]
    processes = [s for s in spans_of(otelkit_collector, "rq-worker") if s.name == f"process {queue}"]
    # One PRODUCER span per enqueued job (a retry is the same job re-queued: no new send), one CONSUMER per run.
    assert len(sends) == 3 + EXTRA and all(s.kind == "PRODUCER" for s in sends)
    assert len(processes) == total and all(s.kind == "CONSUMER" for s in processes)
    # The producer traced nothing but its sends: RQ's enqueue pipeline is no redis span of its own.
    assert len(spans_of(otelkit_collector, "rq-producer")) == 3 + EXTRA

    send_by_job = {s.attributes["messaging.message.id"]: s for s in sends}
    for name, info in produced.items():
        send = send_by_job[info["id"]]
        runs = sorted((s for s in processes if s.attributes["messaging.message.id"] == info["id"]),
                      key=lambda s: s.start_time_unix_nano)
        assert [s.attributes["otelkit.outcome"] for s in runs] == EXECUTIONS[name]
        assert [s.attributes["otelkit.message.attempt"] for s in runs] == list(range(1, len(runs) + 1))
        for run in runs:
            # otelkit's rule for receive: a root span linked to its producer (exactly one link).
            assert run.parent_span_id is None
            assert [(link.trace_id, link.span_id) for link in run.links] == [(send.trace_id, send.span_id)]
            assert run.attributes["messaging.system"] == "rq"
            assert run.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
        assert send.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
        if name != "ok":
            assert runs[0].status_code == "ERROR"

    # Every worker span belongs to a job's trace: the work loop (BLMOVE, heartbeats, registries) adds no root span.
    worker_spans = spans_of(otelkit_collector, "rq-worker")
    job_traces = {s.trace_id for s in processes}
    strays = [s.name for s in worker_spans if s.trace_id not in job_traces]
    # The rq CLI's check that the worker name is free, once per worker, not per job; rq 1.15 (the floor) also
    # lists the registered workers (SMEMBERS) once at start-up.
    assert sorted(strays) in (["EXISTS"], ["EXISTS", "SMEMBERS"]), strays
    # Each run's own Redis GET is a child of its process span, with the correlation ID.
    by_id = {s.span_id: s for s in processes}
    gets = [s for s in worker_spans if s.kind == "CLIENT" and s.name == "GET"]
    assert len(gets) == total - len(EXECUTIONS["doomed"])  # the doomed job raises before any Redis command
    for get in gets:
        assert get.parent_span_id in by_id
        assert get.attributes[CORRELATION_ATTRIBUTE] == by_id[get.parent_span_id].attributes[CORRELATION_ATTRIBUTE]
    # Only the jobs' commands reached the redis integration (GET, INCR, EXPIRE): nothing of RQ's own.
    # (rq 1.x's start-up SMEMBERS, checked above to be outside every job's trace, aside.)
    assert {s.name for s in worker_spans if s.kind == "CLIENT"} - {"SMEMBERS"} == {"GET", "INCRBY", "EXPIRE", "EXISTS"}

    # Every log record of a job carries its correlation ID and its process span's trace.
    check_job_logs(otelkit_collector, "rq-worker", produced, job_traces, total)
    # Outcome counts, end-to-end latency and time in queue per execution.
    outcomes = Counter(o for runs in EXECUTIONS.values() for o in runs) + Counter(ack=EXTRA)
    check_outcome_metrics(otelkit_collector, "rq-worker", "rq-producer", queue, outcomes, 3 + EXTRA)

    # Queue depth: the producer saw its 5 jobs waiting; the worker left an empty queue and one failed job.
    receiver.wait_for(lambda: gauge_values(otelkit_collector, "rq-worker", queue, "dead_letter"), timeout=60)
    assert gauge_values(otelkit_collector, "rq-producer", queue, "ready") == [3 + EXTRA]
    assert gauge_values(otelkit_collector, "rq-worker", queue, "ready")[-1] == 0
    assert gauge_values(otelkit_collector, "rq-worker", queue, "dead_letter")[-1] == 1


def test_rq_enqueue_many(otelkit_collector, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """``Queue.enqueue_many`` of ``prepare_data`` entries: one send span per job, each job its own carrier."""
    import redis

    suffix = uuid.uuid4().hex[:12]
    queue = f"otelkit-test-rqm-{suffix}"
    counter = f"otelkit-test:rqm-flaky:{suffix}"
    client = redis.Redis.from_url(redis_url)
    env_extra = {"JOB_APPS_REDIS_URL": redis_url}
    produced: dict[str, object] = {}
    try:
        produced = produce("rq_batch_producer", {"queue": queue, "counter": counter, "job_id": f"given-{suffix}"},
                           app_env(otelkit_collector, "rqm-producer", env_extra))
        _burst_worker(redis_url, f"otelkit-{suffix}", queue, app_env(otelkit_collector, "rqm-worker", env_extra))
    finally:
        keys = [queue, counter] + [f"rq:{kind}:{queue}" for kind in
                                   ("queue", "failed", "finished", "wip", "scheduled", "deferred")]
        keys += [f"rq:job:{info['id']}" for info in produced.get("jobs", [])]  # type: ignore[attr-defined]
        client.delete(*keys)
        client.close()
    jobs = produced["jobs"]
    assert isinstance(jobs, list) and len(jobs) == 5
    runs = 5 + 1  # the flaky job fails once (Retry(max=2)) and runs again; the doomed one has no Retry
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len([s for s in spans_of(otelkit_collector, "rqm-worker") if s.kind == "CONSUMER"])
                      >= runs and metric_total(otelkit_collector, "otelkit.messaging.settled.messages",
                                               "rqm-worker") >= runs, timeout=60)
    producer_spans = spans_of(otelkit_collector, "rqm-producer")
    sends = [s for s in producer_spans if s.kind == "PRODUCER"]
    batch = [s for s in producer_spans if s.name == "batch"]
    # Exactly one send per job, all siblings under the caller's span; nothing else (no pipeline span).
    assert len(sends) == 5 and len(batch) == 1 and len(producer_spans) == 6
    assert {s.parent_span_id for s in sends} == {batch[0].span_id}
    assert sorted(s.attributes["messaging.message.id"] for s in sends) == sorted(j["id"] for j in jobs)
    assert f"given-{suffix}" in {j["id"] for j in jobs}
    assert jobs[0]["tenant"] == "t1"  # the application's meta kept beside the carrier
    # Per-job correlation: three fresh IDs for the first batch; the second shares the correlate() ID.
    cids = [j["correlation_id"] for j in jobs]
    assert len(set(cids[:3])) == 3 and cids[3:] == ["order-batch-7", "order-batch-7"]
    send_by_job = {s.attributes["messaging.message.id"]: s for s in sends}
    processes = [s for s in spans_of(otelkit_collector, "rqm-worker") if s.kind == "CONSUMER"]
    assert len(processes) == runs
    for job in jobs:
        send = send_by_job[job["id"]]
        assert send.attributes[CORRELATION_ATTRIBUTE] == job["correlation_id"]
        mine = [s for s in processes if s.attributes["messaging.message.id"] == job["id"]]
        assert mine and all([link.span_id for link in s.links] == [send.span_id] and s.parent_span_id is None
                            and s.attributes[CORRELATION_ATTRIBUTE] == job["correlation_id"] for s in mine)
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "jobs"
                                   and r.resource.get("service.name") == "rqm-worker"]) >= runs, timeout=60)
    by_token = {f"tok-{t}": j["correlation_id"] for t, j in zip(["b1", "b2", "b3", "c0", "c1"], jobs, strict=True)}
    records = [r for r in receiver.logs() if r.scope == "jobs" and r.resource.get("service.name") == "rqm-worker"]
    assert len(records) == runs
    assert all(r.attributes[CORRELATION_ATTRIBUTE] == by_token[str(r.body).split()[-1]] for r in records)
    expected = Counter(ack=4, retry=1, dead_letter=1)
    for outcome, count in expected.items():
        assert metric_total(otelkit_collector, "otelkit.messaging.settled.messages", "rqm-worker",
                            **{"otelkit.outcome": outcome, "messaging.destination.name": queue}) == count, outcome
    assert metric_total(otelkit_collector, "messaging.client.sent.messages", "rqm-producer") == 5
    assert metric_total(otelkit_collector, "otelkit.messaging.message.end_to_end.duration", "rqm-worker") == runs
    assert gauge_values(otelkit_collector, "rqm-producer", queue, "ready") == [5]
