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
  OTLPMetricExporter)`` (the SDK defaults) to the same collector;
* ``faststream-otelkit``: the FastStream programs with ``otelkit.init()`` defaults (its middleware is
  installed on the broker by itself);
* ``pika`` / ``aio-pika``: the same message through RabbitMQ (``OTELKIT_BENCH_RABBITMQ_URL``, a queue
  named QUEUE), BlockingConnection ``basic_publish`` / ``basic_consume`` + ``basic_ack``, and aio-pika's
  ``default_exchange.publish`` / ``queue.consume`` + ``message.ack()``; ``-otelkit`` adds ``otelkit.init()``
  defaults only; ``-contrib`` adds ``opentelemetry-instrumentation-pika`` / ``-aio-pika`` on the same SDK
  providers as ``faststream-otel`` (spans only: the contrib packages record no metric);
  ``-otelkit-traces`` is ``init()`` with metrics, logs and system metrics off: the contrib side's telemetry.

Printed: ``@@{"cpu": s, "main": s, "count": n, ...}``: whole-process CPU (every thread: application,
export, metric reader, gRPC) from just before the first message to the end of the telemetry
shutdown (which exports what is left), and the main thread's share.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

ROLE, MODE, REDIS_URL, QUEUE, COUNT, ENDPOINT = sys.argv[1:7]
RABBITMQ_URL = os.environ.get("OTELKIT_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
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
    # redis-py 8 reads with a 5 s socket timeout by default: longer than a BRPOP may wait for a producer that is
    # still starting on a loaded machine (BRPOP's own 30 s timeout ends a consumer without messages).
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=60)
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
        report = otelkit.shutdown(timeout=30)
        extra = {"spans": report["traces"].exported, "metric_points": report["metrics"].exported,
                 "logs": report["logs"].exported}
    _done(cpu0, main0, extra)


def _otelkit() -> Any:
    os.environ.update({"OTEL_SERVICE_NAME": f"bench-{ROLE}", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    if MODE.endswith("-traces"):  # the contrib packages' telemetry: spans only
        os.environ.update({"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                           "OTELKIT_SYSTEM_METRICS": "false"})
    import otelkit

    otelkit.init()
    return otelkit


def _sdk() -> tuple[Any, Any]:
    """SDK providers with their defaults (batch span processor, periodic metric reader), OTLP gRPC."""
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
    return tp, mp


def _report(otelkit: Any) -> dict[str, object]:
    if otelkit is None:
        return {}
    report = otelkit.shutdown(timeout=30)
    return {"spans": report["traces"].exported, "metric_points": report["metrics"].exported,
            "logs": report["logs"].exported}


PAYLOAD = "So11111111111111111111111111111111111111112"


def pika_main() -> None:
    import pika

    otelkit = _otelkit() if MODE.startswith("pika-otelkit") else None
    tp = mp = None
    if MODE == "pika-contrib":
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        tp, mp = _sdk()
        PikaInstrumentor().instrument(tracer_provider=tp)
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=False)
    _ready()
    cpu0 = main0 = 0.0
    if ROLE == "producer":
        sys.stdin.readline()
        cpu0, main0 = time.process_time(), time.thread_time()
        for i in range(N):
            channel.basic_publish("", QUEUE, json.dumps({"token": PAYLOAD, "i": i}).encode())
    else:
        seen = 0

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            nonlocal seen, cpu0, main0
            if seen == 0:
                cpu0, main0 = time.process_time(), time.thread_time()
            json.loads(body)
            ch.basic_ack(method.delivery_tag)
            seen += 1
            if seen >= N:
                ch.stop_consuming()

        channel.basic_consume(QUEUE, on_message)
        connection.call_later(120, channel.stop_consuming)
        channel.start_consuming()
    connection.close()
    extra = _report(otelkit)
    if tp is not None:
        tp.shutdown()
        mp.shutdown()
    _done(cpu0, main0, extra)


def aio_pika_main() -> None:
    import asyncio

    import aio_pika

    otelkit = _otelkit() if MODE.startswith("aio-pika-otelkit") else None
    tp = mp = None
    if MODE == "aio-pika-contrib":
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

        tp, mp = _sdk()
        AioPikaInstrumentor().instrument(tracer_provider=tp)
    state: dict[str, float] = {}

    async def main() -> None:
        connection = await aio_pika.connect(RABBITMQ_URL)
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=False)
        _ready()
        if ROLE == "producer":
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            state["cpu0"], state["main0"] = time.process_time(), time.thread_time()
            for i in range(N):
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"token": PAYLOAD, "i": i}).encode()), routing_key=QUEUE)
        else:
            done = asyncio.Event()
            seen = 0

            async def on_message(message: Any) -> None:
                nonlocal seen
                if seen == 0:
                    state["cpu0"], state["main0"] = time.process_time(), time.thread_time()
                json.loads(message.body)
                await message.ack()
                seen += 1
                if seen >= N:
                    done.set()

            await queue.consume(on_message)
            await asyncio.wait_for(done.wait(), 120)
        await connection.close()

    asyncio.run(main())
    extra = _report(otelkit)
    if tp is not None:
        tp.shutdown()
        mp.shutdown()
    _done(state["cpu0"], state["main0"], extra)


def faststream_main() -> None:
    import asyncio

    from faststream.redis import RedisBroker

    middlewares = []
    tp = mp = None
    otelkit = _otelkit() if MODE == "faststream-otelkit" else None  # before the broker: it gets the middleware
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

    def shutdown() -> dict[str, object]:
        extra = _report(otelkit)
        if tp is not None:
            tp.shutdown()
        if mp is not None:
            mp.shutdown()
        return extra

    async def produce() -> None:
        async with broker:
            _ready()
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            cpu0, main0 = time.process_time(), time.thread_time()
            for i in range(N):
                await broker.publish({"token": "So11111111111111111111111111111111111111112", "i": i},
                                     list=QUEUE)
        _done(cpu0, main0, shutdown())

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
        _done(state["cpu0"], state["main0"], shutdown())

    asyncio.run(produce() if ROLE == "producer" else consume())


if __name__ == "__main__":
    if MODE.startswith("faststream"):
        faststream_main()
    elif MODE.startswith("aio-pika"):
        aio_pika_main()
    elif MODE.startswith("pika"):
        pika_main()
    else:
        sync_main()
