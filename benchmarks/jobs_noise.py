"""Redis spans per job that the job queue's own commands add, with and without otelkit's job integrations.

"before": only otelkit's redis integration is on (what a user got before the rq/dramatiq/arq integrations:
every command of the queue's worker loop and enqueue is a redis span, most of them root spans);
"after": otelkit's defaults (the job integration on). Counted in-process with in-memory exporters over
``JOBS`` jobs that do nothing, on the real Redis; the jobs' own commands would be traced in both cases.

Run: ``.venv/bin/python benchmarks/jobs_noise.py``
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit import _instrument
from otelkit._config import resolve

REDIS_URL = "redis://127.0.0.1:6379/0"
JOBS = 50
EXPORTER = InMemorySpanExporter()
TP = TracerProvider()
TP.add_span_processor(SimpleSpanProcessor(EXPORTER))
MP = MeterProvider(metric_readers=[InMemoryMetricReader()])
trace.set_tracer_provider(TP)
metrics.set_meter_provider(MP)


def _instrument_with(names: list[str]) -> None:
    _instrument.uninstrument_all()
    _instrument.instrument_all(resolve(instrument=names, system_metrics=False), TP, MP)
    EXPORTER.clear()


def _cleanup_untraced(fn: Any, *args: Any) -> Any:
    from otelkit._instrument import _common

    with _common.suppressed():  # the script's own clean-up is not the queue's traffic
        return fn(*args)


def _count() -> tuple[float, float, Counter[str]]:
    spans = EXPORTER.get_finished_spans()
    client = [s for s in spans if s.kind == trace.SpanKind.CLIENT]
    roots = [s for s in client if s.parent is None]
    return len(client) / JOBS, len(roots) / JOBS, Counter(s.name for s in client)


def rq_run() -> None:
    import redis
    from rq import Queue, SimpleWorker

    client = redis.Redis.from_url(REDIS_URL)
    queue = Queue(f"otelkit-noise-rq-{uuid.uuid4().hex[:8]}", connection=client)
    for i in range(JOBS):
        queue.enqueue("math.fabs", i, result_ttl=0)
    SimpleWorker([queue], connection=client).work(burst=True, logging_level="WARNING")
    _cleanup_untraced(client.delete, queue.key, queue.failed_job_registry.key)


def dramatiq_run() -> None:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=REDIS_URL, namespace=f"otelkit-noise-{uuid.uuid4().hex[:8]}")
    actor = dramatiq.actor(_nothing, broker=broker, queue_name="noise", max_retries=0)
    for i in range(JOBS):
        actor.send(i)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    broker.join("noise", timeout=60_000)
    worker.join()
    worker.stop()
    _cleanup_untraced(broker.flush_all)


def _nothing(i: int) -> None:
    return None


async def _noop(ctx: Any, i: int) -> int:
    return i


def arq_run() -> None:
    from arq import create_pool, func
    from arq.connections import RedisSettings
    from arq.worker import Worker

    queue = f"otelkit-noise-arq-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        pool = await create_pool(RedisSettings.from_dsn(REDIS_URL), default_queue_name=queue)
        for i in range(JOBS):
            await pool.enqueue_job("_noop", i)
        worker = Worker([func(_noop, name="_noop")], redis_pool=pool, queue_name=queue, burst=True, poll_delay=0.01,
                        keep_result=0, handle_signals=False)
        await worker.main()
        await worker.close()
        from otelkit._instrument import _common

        with _common.suppressed():
            await pool.delete(queue)
        await pool.aclose()

    asyncio.run(main())


def main() -> None:
    rows = []
    for name, run in (("rq", rq_run), ("dramatiq", dramatiq_run), ("arq", arq_run)):
        for label, names in (("before (redis only)", ["redis"]), ("after (otelkit defaults)", ["redis", name])):
            _instrument_with(names)
            t0 = time.perf_counter()
            run()
            per_job, roots, names_seen = _count()
            rows.append((name, label, per_job, roots, time.perf_counter() - t0, names_seen.most_common(6)))
    print("| library | instrumentation | redis spans per job | of which root spans |"
          f" commands (top 6, over {JOBS} jobs) |")
    print("|---|---|---|---|---|")
    for name, label, per_job, roots, _elapsed, common in rows:
        print(f"| {name} | {label} | {per_job:.2f} | {roots:.2f} | {', '.join(f'{n} {c}' for n, c in common)} |")


if __name__ == "__main__":
    sys.exit(main())
