"""Job functions, actors and producer programs for the RQ / Dramatiq / arq integration tests.

Imported by the real workers (``rq worker -c job_apps``, ``dramatiq job_apps``, ``arq job_apps.ArqSettings``)
and run as a producer (``python -c 'import job_apps; job_apps.main()' ROLE '{"json": "arguments"}'``).
With ``JOB_APPS_INIT=1`` the import calls ``otelkit.init()`` alone (configured by the ``OTEL_*`` variables
the test sets): nothing else instruments the jobs. Every job logs one record on the ``jobs`` logger and reads
a Redis key (a traced command of the job's own). A "flaky" job fails its first ``fail`` attempts (counted in
Redis), a "doomed" one always fails.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import otelkit

log = logging.getLogger("jobs")
REDIS_URL = os.environ.get("JOB_APPS_REDIS_URL", "redis://127.0.0.1:6379/0")

if os.environ.get("JOB_APPS_INIT") == "1":
    otelkit.init()
    logging.getLogger().setLevel(logging.INFO)


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=10)


def _work(kind: str, token: str, counter: str | None = None, fail: int = 0) -> str:
    client = _redis()
    client.get(f"{counter or 'otelkit-test:jobs'}:probe")  # the job's own Redis command: traced
    log.info("%s job %s", kind, token)
    if counter is not None:
        attempts = int(client.incr(counter))
        client.expire(counter, 600)
        if attempts <= fail:
            raise ConnectionError(f"{token}: transient failure {attempts}/{fail}")
    return token


# --- RQ ---------------------------------------------------------------------------------------------

def rq_ok(token: str) -> str:
    return _work("rq", token)


def rq_flaky(token: str, counter: str, fail: int) -> str:
    return _work("rq", token, counter, fail)


def rq_doomed(token: str) -> str:
    log.info("rq job %s", token)
    raise ValueError(f"{token}: permanent failure")


def rq_producer(args: dict[str, Any]) -> dict[str, Any]:
    from rq import Queue, Retry

    queue = Queue(args["queue"], connection=_redis())
    jobs = {
        "ok": queue.enqueue(rq_ok, "tok-ok"),
        "flaky": queue.enqueue(rq_flaky, "tok-flaky", args["counter"], 2, retry=Retry(max=3)),
        "doomed": queue.enqueue(rq_doomed, "tok-doomed", retry=Retry(max=1)),
    }
    for extra in range(args.get("extra", 0)):
        queue.enqueue(rq_ok, f"tok-extra-{extra}")
    return {name: {"id": job.id, "correlation_id": job.meta["otelkit"]["otelkit-correlation-id"]}
            for name, job in jobs.items()}


def rq_batch_producer(args: dict[str, Any]) -> dict[str, Any]:
    """Two ``enqueue_many`` batches under one span: three jobs on their own IDs, two inside ``correlate()``."""
    from opentelemetry import trace
    from rq import Queue, Retry

    from otelkit.pipeline import correlate

    queue = Queue(args["queue"], connection=_redis())
    with trace.get_tracer("jobs").start_as_current_span("batch"):
        first = queue.enqueue_many([
            Queue.prepare_data(rq_ok, ("tok-b1",), meta={"tenant": "t1"}),
            Queue.prepare_data(rq_flaky, ("tok-b2", args["counter"], 1), retry=Retry(max=2), job_id=args["job_id"]),
            Queue.prepare_data(rq_doomed, ("tok-b3",)),
        ])
        with correlate("order-batch-7"):
            second = queue.enqueue_many(iter([Queue.prepare_data(rq_ok, (f"tok-c{i}",)) for i in range(2)]))
    return {"jobs": [{"id": job.id, "correlation_id": job.meta["otelkit"]["otelkit-correlation-id"],
                      "tenant": job.meta.get("tenant")} for job in first + second]}


# --- Dramatiq ---------------------------------------------------------------------------------------

DRAMATIQ_QUEUE = os.environ.get("JOB_APPS_DRAMATIQ_QUEUE")
if DRAMATIQ_QUEUE:
    import dramatiq

    _url = os.environ["JOB_APPS_DRAMATIQ_URL"]
    if _url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker: Any = RabbitmqBroker(url=_url)
    else:
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=_url, namespace=os.environ["JOB_APPS_DRAMATIQ_NAMESPACE"])
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=DRAMATIQ_QUEUE, max_retries=3, min_backoff=10, max_backoff=50)
    def d_ok(token: str) -> None:
        _work("dramatiq", token)

    @dramatiq.actor(queue_name=DRAMATIQ_QUEUE, max_retries=3, min_backoff=10, max_backoff=50)
    def d_flaky(token: str, counter: str, fail: int) -> None:
        _work("dramatiq", token, counter, fail)

    @dramatiq.actor(queue_name=DRAMATIQ_QUEUE, max_retries=1, min_backoff=10, max_backoff=50)
    def d_doomed(token: str) -> None:
        log.info("dramatiq job %s", token)
        raise ConnectionError(f"{token}: always failing")


    if os.environ.get("JOB_APPS_DRAMATIQ_ASYNC") == "1":
        import asyncio

        from dramatiq.middleware.asyncio import AsyncIO
        from opentelemetry import trace

        broker.add_middleware(AsyncIO())

        @dramatiq.actor(queue_name=DRAMATIQ_QUEUE, max_retries=3, min_backoff=10, max_backoff=50)
        async def d_async(token: str, counter: str | None = None, fail: int = 0) -> None:
            await asyncio.sleep(0)  # a real suspension: the rest runs after the event loop resumed the task
            with trace.get_tracer("jobs").start_as_current_span("async step"):
                _work("dramatiq-async", token, counter, fail)


def dramatiq_async_producer(args: dict[str, Any]) -> dict[str, Any]:
    sent = {"ok": d_async.send("tok-ok"), "other": d_async.send("tok-other"),
            "flaky": d_async.send("tok-flaky", args["counter"], 1)}
    return {name: {"id": message.message_id, "correlation_id": message.options["otelkit"]["otelkit-correlation-id"]}
            for name, message in sent.items()}


def dramatiq_producer(args: dict[str, Any]) -> dict[str, Any]:
    sent = {"ok": d_ok.send("tok-ok"), "flaky": d_flaky.send("tok-flaky", args["counter"], 2),
            "doomed": d_doomed.send("tok-doomed")}
    for extra in range(args.get("extra", 0)):
        d_ok.send(f"tok-extra-{extra}")
    return {name: {"id": message.message_id, "correlation_id": message.options["otelkit"]["otelkit-correlation-id"]}
            for name, message in sent.items()}


# --- arq --------------------------------------------------------------------------------------------

async def a_ok(ctx: dict[str, Any], token: str) -> str:
    return _work("arq", token)


async def a_flaky(ctx: dict[str, Any], token: str, fail: int) -> str:
    _work("arq", token)
    if ctx["job_try"] <= fail:
        from arq import Retry

        raise Retry(defer=0.01)
    return token


async def a_doomed(ctx: dict[str, Any], token: str) -> str:
    log.info("arq job %s", token)
    from arq import Retry

    raise Retry(defer=0.01)


async def a_broken(ctx: dict[str, Any], token: str) -> str:
    log.info("arq job %s", token)
    raise ValueError(f"{token}: permanent failure")


ARQ_QUEUE = os.environ.get("JOB_APPS_ARQ_QUEUE")
if ARQ_QUEUE:
    from arq import func
    from arq.connections import RedisSettings

    class ArqSettings:
        functions = [func(a_ok), func(a_flaky, max_tries=5), func(a_doomed, max_tries=2), func(a_broken)]
        redis_settings = RedisSettings.from_dsn(REDIS_URL)
        queue_name = ARQ_QUEUE
        burst = True
        poll_delay = 0.05
        keep_result = 0


def arq_producer(args: dict[str, Any]) -> dict[str, Any]:
    import asyncio
    import pickle

    from arq import create_pool

    async def main() -> dict[str, Any]:
        pool = await create_pool(ArqSettings.redis_settings, default_queue_name=ARQ_QUEUE)
        jobs = {"ok": await pool.enqueue_job("a_ok", "tok-ok"),
                "flaky": await pool.enqueue_job("a_flaky", "tok-flaky", 2),
                "doomed": await pool.enqueue_job("a_doomed", "tok-doomed"),
                "broken": await pool.enqueue_job("a_broken", "tok-broken")}
        for extra in range(args.get("extra", 0)):
            await pool.enqueue_job("a_ok", f"tok-extra-{extra}")
        out = {}
        for name, job in jobs.items():
            assert job is not None
            payload = pickle.loads(await pool.get(f"arq:job:{job.job_id}"))  # as a worker reads it
            out[name] = {"id": job.job_id, "correlation_id": payload["otelkit"]["otelkit-correlation-id"]}
        await pool.aclose()
        return out

    return asyncio.run(main())


ROLES = {"rq_producer": rq_producer, "rq_batch_producer": rq_batch_producer, "dramatiq_producer": dramatiq_producer,
         "dramatiq_async_producer": dramatiq_async_producer, "arq_producer": arq_producer}

def main() -> None:
    """``python -c "import job_apps; job_apps.main()" ROLE JSON`` (job functions must not live in __main__)."""
    role, raw = sys.argv[1], json.loads(sys.argv[2])
    try:
        print(json.dumps(ROLES[role](raw)), flush=True)
    finally:
        print(f"shutdown: {otelkit.shutdown()}", file=sys.stderr)
