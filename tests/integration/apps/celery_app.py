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

app = Celery("celery_app", broker=os.environ.get("CELERY_TEST_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(task_default_queue=QUEUE, worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_connection_retry_on_startup=True,
                worker_send_task_events=False)


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
