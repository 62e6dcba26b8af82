"""A Celery app for the celery integration tests and benchmark (worker with ``celery -A celery_app``, or producer).

Configured by the environment: ``CELERY_TEST_BROKER`` (broker URL), ``CELERY_TEST_QUEUE`` and
``CELERY_TEST_MODE``: ``otelkit`` (``otelkit.init()``), ``contrib`` (plain OpenTelemetry SDK exporting OTLP/HTTP
plus ``opentelemetry-instrumentation-celery``; no otelkit) or ``none``.

    python celery_app.py produce '{"tasks": [["ok", ["a"]]], "headers": {...}}'

prints one JSON line: the task ids sent.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from celery import Celery, signals

MODE = os.environ.get("CELERY_TEST_MODE", "otelkit")
QUEUE = os.environ.get("CELERY_TEST_QUEUE", "otelkit-test-celery")
log = logging.getLogger("celery.test.app")


def _contrib_setup() -> None:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({}))
    # Simple (synchronous) export: nothing to flush at the worker's exit.
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()


if MODE == "otelkit":
    import otelkit

    otelkit.init()
elif MODE == "contrib":
    _contrib_setup()

BACKEND = os.environ.get("CELERY_TEST_BACKEND")  # a result backend: only where a chord needs one
app = Celery("celery_app", broker=os.environ.get("CELERY_TEST_BROKER", "redis://127.0.0.1:6379/0"), backend=BACKEND)
app.conf.update(task_default_queue=QUEUE, worker_prefetch_multiplier=1, task_ignore_result=not BACKEND,
                broker_connection_retry_on_startup=True,
                worker_send_task_events=False)
if os.environ.get("CELERY_TEST_BEAT"):
    # ``celery beat``: one entry, due every 0.2 s, sent to the test's queue.
    app.conf.beat_schedule = {"tick": {"task": "celery_app.ok", "schedule": 0.2, "args": ["tick"],
                                       "options": {"queue": QUEUE}}}
    app.conf.beat_max_loop_interval = 0.2


@signals.worker_process_init.connect
def _child(**_kwargs: Any) -> None:
    logging.getLogger().setLevel(logging.INFO)


@app.task
def ok(token: str) -> str:
    log.info("processing %s", token)
    return token


@app.task(bind=True, autoretry_for=(ConnectionError,), default_retry_delay=0, max_retries=5)
def flaky(self: Any, token: str, fails: int) -> str:
    log.info("processing %s attempt %d", token, self.request.retries + 1)
    if self.request.retries < fails:
        raise ConnectionError(f"broker of {token} unreachable")
    return token


@app.task(bind=True, default_retry_delay=0, max_retries=1)
def doomed(self: Any, token: str) -> None:
    log.info("processing %s attempt %d", token, self.request.retries + 1)
    raise self.retry(exc=ValueError(f"{token} is malformed"))


@app.task
def block(key: str, redis_url: str) -> None:
    """Hold the worker until the test sets ``key`` (bounded): the queue behind it keeps its messages."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    deadline = time.monotonic() + 60
    while not client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)


@app.task
def add(x: int, y: int) -> int:
    log.info("processing add %d %d", x, y)
    return x + y


@app.task
def collect(results: list[str]) -> str:
    log.info("processing collect %s", ",".join(results))
    return ",".join(results)


def produce_canvas() -> None:
    """A chain of 3, a group of 3 (inside ``correlate()``), a chord of 3 + callback; prints the canvases' IDs."""
    from celery import chain, chord, group

    from otelkit.pipeline import correlate

    logging.basicConfig(level=logging.INFO)
    chained = chain(add.s(1, 2), add.s(3), add.s(4)).apply_async()
    with correlate("order-canvas-1"):
        grouped = group(ok.s(f"g{i}") for i in range(3)).apply_async()
    chorded = chord([ok.s(f"h{i}") for i in range(3)], collect.s()).apply_async()
    print(json.dumps({"chain": chained.id, "group": grouped.id, "chord": chorded.id}), flush=True)


def produce_chunks() -> None:
    """``chunks`` (6 calls of ``add`` in 3 messages), ``map`` (3 calls of ``ok`` in one message) and ``starmap``
    (2 calls of ``add`` in one message, applied inside ``correlate()``); prints their task IDs."""
    from otelkit.pipeline import correlate

    logging.basicConfig(level=logging.INFO)
    chunked = add.chunks([(i, i) for i in range(6)], 2).apply_async()
    mapped = ok.map([f"m{i}" for i in range(3)]).apply_async()
    with correlate("order-starmap-1"):
        starmapped = add.starmap([(10, 1), (10, 2)]).apply_async()
    print(json.dumps({"chunks": [r.id for r in chunked.results], "map": mapped.id, "starmap": starmapped.id}),
          flush=True)


def produce(args: dict[str, Any]) -> None:
    logging.basicConfig(level=logging.INFO)
    sent = []
    for name, task_args in args["tasks"]:
        result = app.send_task(f"celery_app.{name}", args=task_args, queue=QUEUE, headers=args.get("headers"),
                               **args.get("options", {}))
        sent.append(result.id)
    print(json.dumps({"ids": sent}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "produce":
        produce(json.loads(sys.argv[2]))
    elif sys.argv[1] == "canvas":
        produce_canvas()
    elif sys.argv[1] == "chunks":
        produce_chunks()
