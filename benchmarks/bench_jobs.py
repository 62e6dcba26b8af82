"""Added cost per job of otelkit's RQ and Dramatiq integrations (issue 13, under issue 17's rule).

No contrib instrumentation exists for these libraries, so the baseline is the **uninstrumented** run:
the ``raw`` side has nothing instrumented (``uninstrument_all()``: the library's own code, no wrapper);
the ``otelkit`` side has otelkit's defaults for a job queue (its ``rq``/``dramatiq`` integration and the
redis integration, which the queue's own commands must not wake). Both sides talk to the real Redis on
this machine; spans go to a ``BatchSpanProcessor`` with a null exporter and metrics to an in-memory
reader (global providers, as ``init()`` sets them: the pipeline scopes use the globals).

Per job, the otelkit side records: on enqueue/send a PRODUCER span and two metric points (sent,
operation duration), the carrier written into ``job.meta`` / ``message.options``; on execution a
CONSUMER span with a link and the correlation baggage, and five metric points (consumed, process
duration, settled, end-to-end latency, time in queue).

Pairs (``fn(loops)``, seconds for ``loops`` jobs):

* RQ enqueue: ``queue.enqueue(fn, i)`` (job save + RPUSH in one pipeline).
* RQ execution: ``SimpleWorker.work(burst=True)`` over ``loops`` jobs enqueued before the timer (by the
  same side, so the otelkit side's jobs carry a carrier): dequeue, perform, bookkeeping, per job.
* Dramatiq send: ``actor.send(i)`` on a ``RedisBroker`` (the dispatch Lua script).
* Dramatiq processing: what a worker thread does per message once fetched --
  ``emit_before("process_message")``, the actor call, ``emit_after("process_message")`` -- on the main
  thread (callgrind counts the main thread only; the fetch/ack scripts run in the consumer thread).

Run: ``.venv/bin/python benchmarks/run.py --only jobs --callgrind``.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_SUFFIX = uuid.uuid4().hex[:10]


class NullSpanExporter(SpanExporter):
    """Accepts and discards spans."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider]:
    from opentelemetry import metrics, trace

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp


_state: bool | None = None


def _instrumented(on: bool) -> None:
    global _state
    if _state is on:
        return
    from otelkit import _instrument
    from otelkit._config import resolve

    tp, mp = _providers()
    if on:
        _instrument.instrument_all(resolve(instrument=["redis", "rq", "dramatiq", "arq"], system_metrics=False), tp, mp)
    else:
        _instrument.uninstrument_all()
    _state = on


def job(value: int) -> int:
    """The job / actor body: as cheap as possible, so the figure is the queue's and otelkit's cost."""
    return value


RQ_JOB = "math.fabs"  # an importable body as cheap as ``job`` (RQ refuses functions of __main__)


@functools.cache
def _redis() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL)


@functools.cache
def _rq_queue(side: str) -> Any:
    from rq import Queue

    queue = Queue(f"otelkit-bench-rq-{side}-{_SUFFIX}", connection=_redis())
    import atexit

    atexit.register(_rq_cleanup, queue)
    return queue


def _rq_cleanup(queue: Any) -> None:
    try:
        client = _redis()
        keys = [queue.key, queue.failed_job_registry.key, queue.finished_job_registry.key]
        client.delete(*keys)
        queue.empty()
    except Exception:
        pass


def _rq_enqueue(on: bool) -> Any:
    def run(loops: int) -> float:
        _instrumented(on)
        queue = _rq_queue("on" if on else "off")
        t0 = time.perf_counter()
        for i in range(loops):
            queue.enqueue(RQ_JOB, i, result_ttl=0)
        elapsed = time.perf_counter() - t0
        queue.empty()
        return elapsed

    return run


def _rq_execute(on: bool) -> Any:
    def run(loops: int) -> float:
        from rq import SimpleWorker

        _instrumented(on)
        queue = _rq_queue("on" if on else "off")
        for i in range(loops):
            queue.enqueue(RQ_JOB, i, result_ttl=0)
        worker = SimpleWorker([queue], connection=_redis())
        worker.log.disabled = True
        t0 = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        return time.perf_counter() - t0

    return run


@functools.cache
def _dramatiq() -> tuple[Any, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=f"otelkit-bench-dramatiq-{_SUFFIX}")
    actor = dramatiq.actor(job, broker=broker, queue_name="bench", max_retries=0)
    import atexit

    atexit.register(broker.flush_all)
    return broker, actor


def _dramatiq_send(on: bool) -> Any:
    def run(loops: int) -> float:
        _instrumented(on)
        broker, actor = _dramatiq()
        t0 = time.perf_counter()
        for i in range(loops):
            actor.send(i)
        elapsed = time.perf_counter() - t0
        broker.flush("bench")
        return elapsed

    return run


def _dramatiq_process(on: bool) -> Any:
    def run(loops: int) -> float:
        from dramatiq.broker import MessageProxy

        _instrumented(on)
        broker, actor = _dramatiq()
        # Messages as the worker gets them: encoded by the broker (the otelkit side's carry a carrier).
        messages = []
        for i in range(loops):
            sent = actor.send(i)
            messages.append(MessageProxy(sent))
        broker.flush("bench")
        t0 = time.perf_counter()
        for message in messages:
            broker.emit_before("process_message", message)
            result = actor(*message.args, **message.kwargs)
            broker.emit_after("process_message", message, result=result)
        return time.perf_counter() - t0

    return run


async def arq_job(ctx: Any, value: int) -> int:
    return value


@functools.cache
def _arq_queue(side: str) -> str:
    return f"otelkit-bench-arq-{side}-{_SUFFIX}"


def _arq(on: bool, execute: bool) -> Any:
    def run(loops: int) -> float:
        import asyncio

        from arq import create_pool, func
        from arq.connections import RedisSettings
        from arq.worker import Worker

        _instrumented(on)
        queue = _arq_queue("on" if on else "off")

        async def main() -> float:
            pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=queue)
            try:
                if not execute:
                    t0 = time.perf_counter()
                    for i in range(loops):
                        await pool.enqueue_job("arq_job", i)
                    return time.perf_counter() - t0
                jobs = [await pool.enqueue_job("arq_job", i) for i in range(loops)]
                worker = Worker([func(arq_job, name="arq_job")], redis_pool=pool, queue_name=queue, keep_result=0,
                                handle_signals=False, burst=True)
                t0 = time.perf_counter()
                for job in jobs:  # what the worker's poll does per due job, without the polling sleeps
                    await worker.run_job(job.job_id, 0)  # type: ignore[union-attr]
                return time.perf_counter() - t0
            finally:
                await pool.delete(queue)
                await pool.aclose()

        return asyncio.run(main())

    return run


PAIRS: list[tuple[Any, ...]] = [
    ("rq enqueue: otelkit defaults vs uninstrumented", _rq_enqueue(True), _rq_enqueue(False), None),
    ("rq job run (SimpleWorker burst, per job)", _rq_execute(True), _rq_execute(False), None),
    ("dramatiq send (RedisBroker)", _dramatiq_send(True), _dramatiq_send(False), None),
    ("dramatiq process hooks + actor (per message)", _dramatiq_process(True), _dramatiq_process(False), None),
    ("arq enqueue_job", _arq(True, False), _arq(False, False), None),
    ("arq run_job (per job, no polling)", _arq(True, True), _arq(False, True), None),
]


if __name__ == "__main__":  # quick look without the harness
    import statistics

    for label, ours_fn, raw_fn, *_rest in PAIRS:
        n = 200
        a = [ours_fn(n) / n * 1e6 for _ in range(3)]
        b = [raw_fn(n) / n * 1e6 for _ in range(3)]
        print(f"{label}: otelkit {statistics.median(a):.1f} µs, uninstrumented {statistics.median(b):.1f} µs, "
              f"added {statistics.median(a) - statistics.median(b):.1f} µs")
