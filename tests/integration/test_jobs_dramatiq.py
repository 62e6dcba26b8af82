"""Dramatiq with ``otelkit.init()`` alone: a producer process and the real ``dramatiq`` CLI (worker processes),
on the real Redis and on the real RabbitMQ, exported through the real rotel collector.

Injected: an actor that succeeds, one that fails twice before succeeding (``max_retries=3``), one that always
fails (``max_retries=1``: one retry, then the dead-letter queue ``{queue}.XQ``), and two more plain messages
for queue depth. The CLI has no burst mode: the test stops it (SIGTERM) once every execution reached rotel.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE
from tests.integration.jobs_support import (
    app_env,
    check_job_logs,
    check_outcome_metrics,
    console_script,
    gauge_values,
    metric_total,
    produce,
    run_worker_until,
    spans_of,
)

pytest.importorskip("dramatiq")
DRAMATIQ_WORKER = (console_script("dramatiq"), "job_apps", "--processes", "1", "--threads", "2")

EXECUTIONS = {"ok": ["ack"], "flaky": ["retry", "retry", "ack"], "doomed": ["retry", "dead_letter"]}
EXTRA = 2


def _cleanup_redis(url: str, namespace: str, counter: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
    client.delete(counter, *keys)
    client.close()


def _cleanup_rabbit(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(queue=name)
    connection.close()


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, redis_url: str) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:12]
    queue = f"otelkit-test-dq-{suffix}"
    counter = f"otelkit-test:dramatiq-flaky:{suffix}"
    namespace = f"otelkit-test-dramatiq-{suffix}"
    url = redis_url if request.param == "redis" else request.getfixturevalue("rabbitmq_url")
    env = {"JOB_APPS_REDIS_URL": redis_url, "JOB_APPS_DRAMATIQ_QUEUE": queue, "JOB_APPS_DRAMATIQ_URL": url,
           "JOB_APPS_DRAMATIQ_NAMESPACE": namespace}
    yield {"kind": request.param, "queue": queue, "counter": counter, "env": env}
    if request.param == "redis":
        _cleanup_redis(redis_url, namespace, counter)
    else:
        _cleanup_redis(redis_url, namespace, counter)
        _cleanup_rabbit(url, queue)


def test_dramatiq_messages_across_processes(otelkit_collector, broker: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    queue, producer, consumer = broker["queue"], f"dq-producer-{broker['kind']}", f"dq-worker-{broker['kind']}"
    receiver = otelkit_collector.receiver
    total = sum(len(v) for v in EXECUTIONS.values()) + EXTRA
    produced = produce("dramatiq_producer", {"counter": broker["counter"], "extra": EXTRA},
                       app_env(otelkit_collector, producer, broker["env"]))
    run_worker_until(DRAMATIQ_WORKER, app_env(otelkit_collector, consumer, broker["env"]),
                     lambda: len([s for s in spans_of(otelkit_collector, consumer) if s.kind == "CONSUMER"]) >= total,
                     receiver)
    # The worker process flushed its metrics on its way out (os._exit): outcomes of every execution.
    receiver.wait_for(lambda: metric_total(otelkit_collector, "otelkit.messaging.settled.messages", consumer) >= total
                      and gauge_values(otelkit_collector, consumer, queue, "dead_letter"), timeout=60)

    sends = [s for s in spans_of(otelkit_collector, producer) if s.name == f"send {queue}"]
    processes = [s for s in spans_of(otelkit_collector, consumer) if s.name == f"process {queue}"]
    # One PRODUCER span per message sent (a retry is the same message re-queued), one CONSUMER per execution.
    assert len(sends) == 3 + EXTRA and all(s.kind == "PRODUCER" for s in sends)
    assert len(processes) == total
    # The producer traced only its sends: the broker's enqueue script is not a redis span of its own.
    assert len(spans_of(otelkit_collector, producer)) == 3 + EXTRA

    send_by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    for name, info in produced.items():
        send = send_by_id[info["id"]]
        runs = sorted((s for s in processes if s.attributes["messaging.message.id"] == info["id"]),
                      key=lambda s: s.start_time_unix_nano)
        assert [s.attributes["otelkit.outcome"] for s in runs] == EXECUTIONS[name]
        assert [s.attributes["otelkit.message.attempt"] for s in runs] == list(range(1, len(runs) + 1))
        for run in runs:
            assert run.parent_span_id is None  # otelkit's rule for receive: a root span linked to its producer
            assert [(link.trace_id, link.span_id) for link in run.links] == [(send.trace_id, send.span_id)]
            assert run.attributes["messaging.system"] == "dramatiq"
            assert run.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
        assert send.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
    doomed = [s for s in processes if s.attributes["messaging.message.id"] == produced["doomed"]["id"]]
    assert doomed[-1].status_code == "ERROR"
    assert doomed[-1].attributes["otelkit.outcome.reason"] == f"dead-letter queue {queue}.XQ"

    # Every worker span belongs to a message's trace: fetch/ack/nack scripts and heartbeats add no root span.
    worker_spans = spans_of(otelkit_collector, consumer)
    job_traces = {s.trace_id for s in processes}
    assert [s.name for s in worker_spans if s.trace_id not in job_traces] == []
    assert {s.name for s in worker_spans if s.kind == "CLIENT"} == {"GET", "INCRBY", "EXPIRE"}
    by_id = {s.span_id: s for s in processes}
    for get in (s for s in worker_spans if s.name == "GET"):
        assert get.parent_span_id in by_id
        assert get.attributes[CORRELATION_ATTRIBUTE] == by_id[get.parent_span_id].attributes[CORRELATION_ATTRIBUTE]

    # Every log record of an actor carries its correlation ID; Dramatiq's own "Failed to process" lines too.
    check_job_logs(otelkit_collector, consumer, produced, job_traces, total)
    by_token = {f"tok-{name}": info["correlation_id"] for name, info in produced.items()}
    failures = [r for r in receiver.logs() if r.resource.get("service.name") == consumer
                and "Failed to process message" in str(r.body)]
    assert len(failures) == 4  # flaky twice, doomed twice
    assert {r.attributes.get(CORRELATION_ATTRIBUTE) for r in failures} == {by_token["tok-flaky"],
                                                                            by_token["tok-doomed"]}

    outcomes = Counter(o for runs in EXECUTIONS.values() for o in runs) + Counter(ack=EXTRA)
    check_outcome_metrics(otelkit_collector, consumer, producer, queue, outcomes, 3 + EXTRA)

    # Queue depth: the producer saw its 5 messages waiting; the worker left the queue empty, one dead letter.
    assert gauge_values(otelkit_collector, producer, queue, "ready") == [3 + EXTRA]
    assert gauge_values(otelkit_collector, consumer, queue, "ready")[-1] == 0
    assert gauge_values(otelkit_collector, consumer, queue, "dead_letter")[-1] == 1


ASYNC_EXECUTIONS = {"ok": ["ack"], "other": ["ack"], "flaky": ["retry", "ack"]}


def test_dramatiq_async_actor(otelkit_collector, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    """An async actor (the AsyncIO middleware): its spans are children of the process span, its spans and log
    records carry the message's correlation ID, although the coroutine runs on Dramatiq's event-loop thread."""
    suffix = uuid.uuid4().hex[:12]
    queue, counter = f"otelkit-test-dqa-{suffix}", f"otelkit-test:dramatiq-async:{suffix}"
    namespace = f"otelkit-test-dramatiq-{suffix}"
    env = {"JOB_APPS_REDIS_URL": redis_url, "JOB_APPS_DRAMATIQ_QUEUE": queue, "JOB_APPS_DRAMATIQ_URL": redis_url,
           "JOB_APPS_DRAMATIQ_NAMESPACE": namespace, "JOB_APPS_DRAMATIQ_ASYNC": "1"}
    producer, consumer = "dqa-producer", "dqa-worker"
    receiver = otelkit_collector.receiver
    total = sum(len(v) for v in ASYNC_EXECUTIONS.values())
    try:
        produced = produce("dramatiq_async_producer", {"counter": counter},
                           app_env(otelkit_collector, producer, env))
        run_worker_until(DRAMATIQ_WORKER, app_env(otelkit_collector, consumer, env),
                         lambda: len([s for s in spans_of(otelkit_collector, consumer)
                                      if s.kind == "CONSUMER"]) >= total, receiver)
        receiver.wait_for(lambda: metric_total(otelkit_collector, "otelkit.messaging.settled.messages",
                                               consumer) >= total, timeout=60)
    finally:
        _cleanup_redis(redis_url, namespace, counter)

    sends = [s for s in spans_of(otelkit_collector, producer) if s.kind == "PRODUCER"]
    processes = [s for s in spans_of(otelkit_collector, consumer) if s.kind == "CONSUMER"]
    assert len(sends) == 3 and len(processes) == total
    send_by_id = {s.attributes["messaging.message.id"]: s for s in sends}
    process_by_span = {s.span_id: s for s in processes}
    worker_spans = spans_of(otelkit_collector, consumer)
    steps = [s for s in worker_spans if s.name == "async step"]
    assert len(steps) == total  # one per execution, each the child of its own process span
    for name, info in produced.items():
        runs = sorted((s for s in processes if s.attributes["messaging.message.id"] == info["id"]),
                      key=lambda s: s.start_time_unix_nano)
        assert [s.attributes["otelkit.outcome"] for s in runs] == ASYNC_EXECUTIONS[name]
        send = send_by_id[info["id"]]
        for run in runs:
            assert run.parent_span_id is None
            assert [link.span_id for link in run.links] == [send.span_id]
            assert run.attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
            children = [s for s in steps if s.parent_span_id == run.span_id]
            assert len(children) == 1 and children[0].trace_id == run.trace_id
            assert children[0].attributes[CORRELATION_ATTRIBUTE] == info["correlation_id"]
    # The actor's Redis calls are grandchildren of the process span (children of the step), with the ID.
    steps_by_span = {s.span_id: s for s in steps}
    gets = [s for s in worker_spans if s.name == "GET"]
    assert len(gets) == total
    for get in gets:
        step = steps_by_span[get.parent_span_id or ""]
        assert get.attributes[CORRELATION_ATTRIBUTE] == step.attributes[CORRELATION_ATTRIBUTE]
    # No root span but the process spans: nothing of the actor escaped to the event loop's own context.
    assert [s.name for s in worker_spans if s.parent_span_id is None and s.span_id not in process_by_span] == []
    by_token = {f"tok-{name}": info["correlation_id"] for name, info in produced.items()}
    receiver.wait_for(lambda: len([r for r in receiver.logs() if r.scope == "jobs"
                                   and r.resource.get("service.name") == consumer]) >= total, timeout=60)
    records = [r for r in receiver.logs() if r.resource.get("service.name") == consumer and r.scope == "jobs"]
    assert len(records) == total
    for record in records:
        assert record.attributes[CORRELATION_ATTRIBUTE] == by_token[str(record.body).split()[-1]], record.body
        assert record.span_id in steps_by_span
    outcomes = Counter(o for runs in ASYNC_EXECUTIONS.values() for o in runs)
    for outcome, count in outcomes.items():
        assert metric_total(otelkit_collector, "otelkit.messaging.settled.messages", consumer,
                            **{"otelkit.outcome": outcome, "messaging.destination.name": queue}) == count, outcome
    assert metric_total(otelkit_collector, "otelkit.messaging.message.end_to_end.duration", consumer) == total
