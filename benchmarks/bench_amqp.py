"""Instructions per message added by otelkit's pika and aio-pika integrations vs the contrib ones (issue 17 rule).

Callgrind instruction counts on the application thread (``_callgrind.per_op``: the difference between a
small and a large loop count, so set-up cancels out) of one operation against the real RabbitMQ
(``OTELKIT_BENCH_RABBITMQ_URL``, default guest@127.0.0.1:5672), three sides in fresh interpreters:

* ``none``: the library uninstrumented;
* ``contrib``: ``opentelemetry-instrumentation-pika`` / ``-aio-pika`` on an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` (null exporter): spans only, which is all the contrib packages record;
* ``otelkit``: otelkit's integration on the same provider, no metric provider: spans only (same telemetry);
* ``otelkit-metrics``: the same plus an SDK ``MeterProvider`` (in-memory reader): otelkit's pipeline metrics
  too (send: 2 points per message; process: 5), which the contrib side does not record.

Operations: ``pika publish`` (``BlockingChannel.basic_publish``), ``pika consume`` (a ``basic_consume``
callback that acks, messages published beforehand with instrumentation suppressed), ``aio-pika publish``
(``default_exchange.publish``) and ``aio-pika consume`` (a ``queue.consume`` callback that acks).
Each process declares its own queue (``x-expires``: RabbitMQ drops it a minute after the process).

Run: ``.venv/bin/python benchmarks/run.py --only amqp`` (callgrind rows only; ``--fast`` for fewer loops).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

RABBITMQ_URL = os.environ.get("OTELKIT_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SIDES = ("none", "contrib", "otelkit", "otelkit-metrics")


class NullSpanExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _setup(side: str) -> None:
    """Instrument this process as ``side`` (once: every callgrind run is a fresh interpreter)."""
    if side == "none":
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    trace.set_tracer_provider(tp)
    if side == "contrib":
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        PikaInstrumentor().instrument(tracer_provider=tp)
        AioPikaInstrumentor().instrument(tracer_provider=tp)
        return
    mp = None
    if side == "otelkit-metrics":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
        metrics.set_meter_provider(mp)
    os.environ["OTELKIT_PIKA_QUEUE_DEPTH"] = "false"  # no probe connection in the measured process
    from otelkit import _instrument
    from otelkit._config import resolve

    _instrument.instrument_all(resolve(instrument=["pika", "aio-pika"], system_metrics=False), tp, mp)


@functools.cache
def _pika_channel() -> tuple[Any, str]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    queue = f"otelkit-bench-amqp-{uuid.uuid4().hex[:12]}"
    channel.queue_declare(queue, arguments={"x-expires": 60_000})
    return channel, queue


def _pika_publish(loops: int, side: str) -> float:
    _setup(side)
    channel, queue = _pika_channel()
    body = b'{"token": "So11111111111111111111111111111111111111112"}'
    t0 = time.perf_counter()
    for _ in range(loops):
        channel.basic_publish("", queue, body)
    elapsed = time.perf_counter() - t0
    channel.queue_purge(queue)
    return elapsed


def _pika_consume(loops: int, side: str) -> float:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    _setup(side)
    channel, queue = _pika_channel()
    with suppress_instrumentation():  # the messages exist beforehand: only the consumer side is measured
        for _ in range(loops):
            channel.basic_publish("", queue, b'{"i": 1}')
    seen = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen
        ch.basic_ack(method.delivery_tag)
        seen += 1
        if seen >= loops:
            ch.stop_consuming()

    t0 = time.perf_counter()
    tag = channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - t0
    channel.basic_cancel(tag)
    return elapsed


def _aio(loops: int, side: str, consume: bool) -> float:
    import asyncio

    import aio_pika
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    _setup(side)
    body = b'{"token": "So11111111111111111111111111111111111111112"}'

    async def main() -> float:
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"otelkit-bench-amqp-{uuid.uuid4().hex[:12]}",
                                                arguments={"x-expires": 60_000})
            if not consume:
                t0 = time.perf_counter()
                for _ in range(loops):
                    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
                return time.perf_counter() - t0
            with suppress_instrumentation():
                for _ in range(loops):
                    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
            done = asyncio.Event()
            seen = 0

            async def on_message(message: Any) -> None:
                nonlocal seen
                await message.ack()
                seen += 1
                if seen >= loops:
                    done.set()

            t0 = time.perf_counter()
            await queue.consume(on_message)
            await done.wait()
            return time.perf_counter() - t0

    return asyncio.run(main())


def _aio_publish(loops: int, side: str) -> float:
    return _aio(loops, side, False)


def _aio_consume(loops: int, side: str) -> float:
    return _aio(loops, side, True)


CALLS = {"pika publish": _pika_publish, "pika consume": _pika_consume, "aio-pika publish": _aio_publish,
         "aio-pika consume": _aio_consume}
for _name, _fn in CALLS.items():
    for _side in SIDES:
        globals()[f"{_fn.__name__.lstrip('_')}_{_side.replace('-', '_')}"] = functools.partial(_fn, side=_side)


def _available() -> bool:
    try:
        import aio_pika  # noqa: F401
        import opentelemetry.instrumentation.aio_pika
        import opentelemetry.instrumentation.pika  # noqa: F401
        import pika

        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception:
        return False
    return True


def custom(fast: bool) -> list[dict[str, Any]]:
    """Instructions per message added by otelkit vs by the contrib instrumentation, application thread."""
    import _callgrind

    if not _callgrind.available() or not _available():
        return []
    from concurrent.futures import ThreadPoolExecutor

    lo, hi = (10, 40) if fast else (20, 120)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {(label, side): pool.submit(
            _callgrind.per_op, f"bench_amqp:{fn.__name__.lstrip('_')}_{side.replace('-', '_')}", lo, hi)
            for label, fn in CALLS.items() for side in SIDES}
        results = {key: future.result() for key, future in futures.items()}
    rows = []
    for label in CALLS:
        counts = {side: results[(label, side)] for side in SIDES}
        theirs = counts["contrib"] - counts["none"]
        for side, what in (("otelkit", "same telemetry (spans only)"),
                           ("otelkit-metrics", "otelkit with its pipeline metrics, contrib spans only")):
            ours = counts[side] - counts["none"]
            rows.append({"label": f"{label}: instructions added per message, otelkit vs contrib, {what} (callgrind)",
                         "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs],
                         "target": 1.0 if side == "otelkit" else None,
                         "extra": {"per_call": counts},
                         "note": (f"uninstrumented {counts['none']:,.0f}, contrib {counts['contrib']:,.0f}, "
                                  f"otelkit {counts['otelkit']:,.0f}, otelkit with metrics "
                                  f"{counts['otelkit-metrics']:,.0f} instructions per message")})
    return rows


PAIRS: list[tuple[Any, ...]] = []


if __name__ == "__main__":  # quick wall-time look without callgrind
    for label, fn in CALLS.items():
        print(label, {side: round(fn(200, side) / 200 * 1e6, 1) for side in ("none",)})
