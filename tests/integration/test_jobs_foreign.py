"""Jobs from a producer without otelkit, or with a malformed carrier: a fresh trace, a fresh correlation ID,
never an exception (in-process workers: RQ's SimpleWorker on the real Redis, Dramatiq's StubBroker)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from otelkit.testing import capture_telemetry

pytest.importorskip("rq")
pytest.importorskip("dramatiq")

RAN: list[Any] = []


def plain_job(token: str) -> str:
    import otelkit

    RAN.append((token, otelkit.correlation_id()))
    return token


def test_rq_job_without_or_with_a_broken_carrier(redis_url: str) -> None:
    import redis
    from rq import Queue, SimpleWorker
    from rq.job import Job

    client = redis.Redis.from_url(redis_url)
    queue_name = f"otelkit-test-rq-foreign-{uuid.uuid4().hex[:12]}"
    RAN.clear()
    with capture_telemetry(system_metrics=False, instrument=["rq"]) as telemetry:
        queue = Queue(queue_name, connection=client)
        jobs = []
        broken = {"traceparent": "00-zz-zz-01", "otelkit-attempt": "x"}
        for meta in ({}, {"otelkit": "not a dict"}, {"otelkit": broken}):
            job = Job.create(plain_job, args=("tok",), connection=client, meta=meta)
            # Written as a producer without otelkit would: straight onto the queue, bypassing enqueue_job.
            job.origin = queue_name
            job.save()
            queue.push_job_id(job.id)
            jobs.append(job)
        try:
            SimpleWorker([queue], connection=client).work(burst=True)
        finally:
            client.delete(queue.key, queue.failed_job_registry.key, *(job.key for job in jobs))
            client.close()
        processes = telemetry.spans.named(f"process {queue_name}")
    assert len(processes) == 3 and len(RAN) == 3
    for span in processes:
        assert span.parent is None and not span.links  # a fresh trace: nothing to link to
        assert span.attributes["otelkit.outcome"] == "ack"
        assert span.attributes["otelkit.message.attempt"] == 1
    ids = {cid for _token, cid in RAN}
    assert len(ids) == 3 and None not in ids  # each job ran under a fresh correlation ID of its own


def test_dramatiq_message_without_or_with_a_broken_carrier() -> None:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    RAN.clear()
    with capture_telemetry(system_metrics=False, instrument=["dramatiq"]) as telemetry:
        broker = StubBroker()
        queue = f"otelkit-test-dq-foreign-{uuid.uuid4().hex[:12]}"
        actor = dramatiq.actor(plain_job, broker=broker, queue_name=queue, max_retries=0)
        for options in ({"otelkit": "junk"}, {"otelkit": {"traceparent": 7, "otelkit-sent-at": "never"}}):
            message = actor.message_with_options(args=("tok",), **options)
            # A dict under the key is a carrier already (passed through untouched); anything else is replaced.
            broker.enqueue(message)
        worker = dramatiq.Worker(broker, worker_timeout=100)
        worker.start()
        try:
            broker.join(queue, timeout=60_000)
            worker.join()
        finally:
            worker.stop()
        processes = telemetry.spans.named(f"process {queue}")
        sends = telemetry.spans.named(f"send {queue}")
    assert len(sends) == 1 and len(processes) == 2 and len(RAN) == 2
    linked = [span for span in processes if span.links]
    assert [link.context.span_id for span in linked for link in span.links] == [sends[0].context.span_id]
    for span in processes:
        assert span.parent is None
        assert span.attributes["otelkit.outcome"] == "ack"
    assert len({cid for _token, cid in RAN}) == 2
