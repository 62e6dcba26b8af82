"""Producer / consumer programs for ``bench_message.py``: one message across a real Redis list.

    python _message_app.py ROLE MODE REDIS_URL QUEUE COUNT OTLP_GRPC_ENDPOINT

ROLE: ``producer`` or ``consumer``. MODE:

* ``plain``: LPUSH of a JSON payload / BRPOP + ``json.loads`` (no telemetry at all);
* ``otelkit``: the same with ``otelkit.init()`` defaults (traces, metrics, logs over OTLP gRPC to the
  collector; redis instrumentation; system metrics), ``pipeline.emit`` + LPUSH of ``msg.wrap(payload)`` /
  BRPOP + ``pipeline.receive``;
* ``faststream``: FastStream's RedisBroker, ``broker.publish(payload, list=QUEUE)`` / a list subscriber;
* ``faststream-otel``: the same with ``RedisTelemetryMiddleware`` on an SDK ``TracerProvider`` +
  ``BatchSpanProcessor(OTLPSpanExporter)`` and a ``MeterProvider`` + ``PeriodicExportingMetricReader(
  OTLPMetricExporter)`` (the SDK defaults) to the same collector.

Printed: ``@@{"cpu": s, "main": s, "count": n, ...}``: whole-process CPU (every thread: application,
export, metric reader, gRPC) from just before the first message to the end of the telemetry
shutdown (which exports what is left), and the main thread's share.
"""

from __future__ import annotations

import json
import os
import sys
import time

ROLE, MODE, REDIS_URL, QUEUE, COUNT, ENDPOINT = sys.argv[1:7]
N = int(COUNT)


def _done(cpu0: float, main0: float, extra: dict[str, object] | None = None) -> None:
    out = {"cpu": time.process_time() - cpu0, "main": time.thread_time() - main0, "count": N}
    out.update(extra or {})
    print("@@" + json.dumps(out), flush=True)


def _ready() -> None:
    print("READY", flush=True)


def sync_main() -> None:
    import redis

    if MODE == "otelkit":
        os.environ.update({"OTEL_SERVICE_NAME": f"bench-{ROLE}", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        import otelkit
        from otelkit import pipeline

        otelkit.init()
    r = redis.Redis.from_url(REDIS_URL)
    r.ping()
    _ready()
    if ROLE == "producer":
        sys.stdin.readline()  # the parent says go once the consumer is ready
    cpu0, main0 = time.process_time(), time.thread_time()
    if ROLE == "producer":
        for i in range(N):
            payload = json.dumps({"token": "So11111111111111111111111111111111111111112", "i": i})
            if MODE == "otelkit":
                with pipeline.emit(QUEUE, system="redis") as msg:
                    r.lpush(QUEUE, msg.wrap(payload))
            else:
                r.lpush(QUEUE, payload)
    else:
        for _ in range(N):
            item = r.brpop([QUEUE], timeout=30)
            if item is None:
                raise SystemExit("consumer timed out")
            if MODE == "otelkit":
                with pipeline.receive(QUEUE, item[1], system="redis") as got:
                    json.loads(got.payload)
            else:
                json.loads(item[1])
    extra: dict[str, object] = {}
    if MODE == "otelkit":
        report = otelkit.shutdown(30)
        extra = {"spans": report["traces"].exported, "metric_points": report["metrics"].exported,
                 "logs": report["logs"].exported}
    _done(cpu0, main0, extra)


def faststream_main() -> None:
    import asyncio

    from faststream.redis import RedisBroker

    middlewares = []
    tp = mp = None
    if MODE == "faststream-otel":
        from faststream.redis.opentelemetry import RedisTelemetryMiddleware
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": f"bench-{ROLE}"})
        tp = TracerProvider(resource=resource)
        tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=ENDPOINT, insecure=True)))
        mp = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=ENDPOINT, insecure=True))])
        middlewares.append(RedisTelemetryMiddleware(tracer_provider=tp, meter_provider=mp))
    # logger=None: FastStream's per-message INFO lines (Received/Processed) are not telemetry; off on both sides.
    broker = RedisBroker(REDIS_URL, middlewares=middlewares, logger=None)

    def shutdown() -> None:
        if tp is not None:
            tp.shutdown()
        if mp is not None:
            mp.shutdown()

    async def produce() -> None:
        async with broker:
            _ready()
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            cpu0, main0 = time.process_time(), time.thread_time()
            for i in range(N):
                await broker.publish({"token": "So11111111111111111111111111111111111111112", "i": i},
                                     list=QUEUE)
        shutdown()
        _done(cpu0, main0)

    async def consume() -> None:
        seen = 0
        done = asyncio.Event()
        state: dict[str, float] = {}

        @broker.subscriber(list=QUEUE)
        async def handle(body: dict[str, object]) -> None:
            nonlocal seen
            if seen == 0:
                state["cpu0"], state["main0"] = time.process_time(), time.thread_time()
            seen += 1
            if seen >= N:
                done.set()

        async with broker:
            await broker.start()
            _ready()
            await asyncio.wait_for(done.wait(), 120)
        shutdown()
        _done(state["cpu0"], state["main0"])

    asyncio.run(produce() if ROLE == "producer" else consume())


if __name__ == "__main__":
    if MODE.startswith("faststream"):
        faststream_main()
    else:
        sync_main()
