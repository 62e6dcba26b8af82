"""Instructions per message added by otelkit's pika and aio-pika integrations vs the contrib ones (issue 17 rule).

Callgrind instruction counts on the application thread (``_callgrind.per_op``: the difference between a
small and a large loop count, so set-up cancels out) of one operation against the real RabbitMQ
(``OTELKIT_BENCH_RABBITMQ_URL``, default guest@127.0.0.1:5672), three sides in fresh interpreters:

* ``none``: the library uninstrumented;
* ``contrib``: ``opentelemetry-instrumentation-pika`` / ``-aio-pika`` on an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` (null exporter): spans only, which is all the contrib packages record;
* ``otelkit``: otelkit's integration on the same provider, no metric provider: spans only (same telemetry);
* ``contrib-metrics``: ``contrib`` plus a user's wrappers recording the same metric points as otelkit, on the
  same instruments (names, units, bucket advice) and attribute sets (built per call, as a user writes them):
  send: sent count + operation duration around the publish; process: consumed count, process duration and
  settled outcome inside the callback (so inside the contrib span, like otelkit's: same exemplars);
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
SIDES = ("none", "contrib", "otelkit", "contrib-metrics", "otelkit-metrics")


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
    if side in ("contrib", "contrib-metrics"):
        from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
        from opentelemetry.instrumentation.pika import PikaInstrumentor

        PikaInstrumentor().instrument(tracer_provider=tp)
        AioPikaInstrumentor().instrument(tracer_provider=tp)
        if side == "contrib-metrics":
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
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
def _user_instruments() -> Any:
    """What a user adds beside the contrib instrumentation to get otelkit's metric points (contrib-metrics side)."""
    from opentelemetry import metrics

    from otelkit import _names
    from otelkit._pipeline.instruments import MESSAGING_BUCKETS

    meter = metrics.get_meter("app.messaging")

    def hist(name: Any) -> Any:
        return meter.create_histogram(name.name, unit=name.unit, description=name.description,
                                      explicit_bucket_boundaries_advisory=list(MESSAGING_BUCKETS))

    def counter(name: Any) -> Any:
        return meter.create_counter(name.name, unit=name.unit, description=name.description)

    return (counter(_names.MESSAGING_SENT), hist(_names.MESSAGING_OPERATION_DURATION),
            counter(_names.MESSAGING_CONSUMED), hist(_names.MESSAGING_PROCESS_DURATION),
            counter(_names.MESSAGES_SETTLED))


def _attrs(destination: str, operation: str) -> dict[str, str]:
    return {"messaging.system": "rabbitmq", "messaging.destination.name": destination,
            "messaging.operation.name": operation, "messaging.operation.type": operation}


def _user_publish(publish: Any, side: str) -> Any:
    """``publish`` as called by the application: on the contrib-metrics side, with the user's send metrics."""
    if side != "contrib-metrics":
        return publish
    sent, duration = _user_instruments()[:2]

    def recorded(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = publish(*args, **kwargs)
        attrs = _attrs(kwargs.get("routing_key") or args[1], "send")
        sent.add(1, attrs)
        duration.record(time.perf_counter() - t0, attrs)
        return result

    async def recorded_async(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = await publish(*args, **kwargs)
        attrs = _attrs(kwargs.get("routing_key") or args[1], "send")
        sent.add(1, attrs)
        duration.record(time.perf_counter() - t0, attrs)
        return result

    import inspect

    return recorded_async if inspect.iscoroutinefunction(publish) else recorded


def _user_process(destination: str, side: str) -> Any:
    """A context manager around the handler: the user's process metrics on the contrib-metrics side."""
    import contextlib

    if side != "contrib-metrics":
        return contextlib.nullcontext
    _, _, consumed, duration, settled = _user_instruments()

    @contextlib.contextmanager
    def recorded() -> Any:
        t0 = time.perf_counter()
        yield
        attrs = _attrs(destination, "process")
        consumed.add(1, attrs)
        duration.record(time.perf_counter() - t0, attrs)
        settled.add(1, {**attrs, "otelkit.outcome": "ack"})

    return recorded


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
    publish = _user_publish(channel.basic_publish, side)
    t0 = time.perf_counter()
    for _ in range(loops):
        publish("", queue, body)
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
    process = _user_process(queue, side)

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen
        with process():
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
                publish = _user_publish(channel.default_exchange.publish, side)
                t0 = time.perf_counter()
                for _ in range(loops):
                    await publish(aio_pika.Message(body), routing_key=queue.name)
                return time.perf_counter() - t0
            with suppress_instrumentation():
                for _ in range(loops):
                    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
            done = asyncio.Event()
            seen = 0
            process = _user_process(queue.name, side)

            async def on_message(message: Any) -> None:
                nonlocal seen
                with process():
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
        for side, peer, what in (
                ("otelkit", "contrib", "same telemetry (spans only)"),
                ("otelkit-metrics", "contrib-metrics", "same telemetry (spans + the same metric points, contrib's "
                                                       "from a user's wrappers)"),
                ("otelkit-metrics", "contrib", "otelkit defaults (spans + metrics) vs contrib alone (spans only)")):
            theirs = counts[peer] - counts["none"]
            ours = counts[side] - counts["none"]
            rows.append({"label": f"{label}: instructions added per message, otelkit vs contrib, {what} (callgrind)",
                         "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs],
                         "target": 1.0 if what.startswith("same") else None,
                         "extra": {"per_call": counts},
                         "note": (f"uninstrumented {counts['none']:,.0f}, contrib {counts['contrib']:,.0f}, "
                                  f"otelkit {counts['otelkit']:,.0f}, contrib + user metrics "
                                  f"{counts['contrib-metrics']:,.0f}, otelkit with metrics "
                                  f"{counts['otelkit-metrics']:,.0f} instructions per message")})
    return rows


PAIRS: list[tuple[Any, ...]] = []


if __name__ == "__main__":  # quick wall-time look without callgrind
    for label, fn in CALLS.items():
        print(label, {side: round(fn(200, side) / 200 * 1e6, 1) for side in ("none",)})
