"""BullMQ ``Queue.add`` instrumented by otelkit against the same work hand-written with the raw SDK (real Redis).

Both sides, per job: one PRODUCER span into a BatchSpanProcessor (null exporter), a fresh
correlation ID in baggage and in clear, the context injected (W3C traceparent + baggage) with the
send time, stored as the ``tm`` job option Node's bullmq-otel reads, ``messaging.client.sent.messages``
and ``messaging.client.operation.duration`` into an
InMemoryMetricReader, and the real ``Queue.add`` against the local Redis. The otelkit side is
``init``-style instrumentation (``instrument_all(instrument=["bullmq"])``) around an unchanged
``queue.add(...)``; the raw side is what a user would write by hand. Needs Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


class NullSpanExporter(SpanExporter):
    """Accepts and discards spans."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _setup() -> tuple[asyncio.AbstractEventLoop, Any, Any, Any]:
    from opentelemetry import metrics

    from otelkit import _instrument
    from otelkit._config import resolve

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    _instrument.instrument_all(resolve(instrument=["bullmq"], system_metrics=False), tp, mp)
    from bullmq import Queue

    loop = asyncio.new_event_loop()
    queue = Queue(f"otelkit-bench-{uuid.uuid4().hex[:12]}", {"connection": REDIS_URL})

    def cleanup() -> None:
        try:
            loop.run_until_complete(queue.obliterate({"force": True}))
            loop.run_until_complete(queue.close())
        except Exception:
            pass

    atexit.register(cleanup)
    meter = mp.get_meter("bench-raw")
    sent = meter.create_counter("messaging.client.sent.messages", unit="{message}")
    duration = meter.create_histogram("messaging.client.operation.duration", unit="s")
    return loop, queue, sent, duration


async def _otelkit_adds(queue: Any, loops: int) -> None:
    for _ in range(loops):
        await queue.add("enrich", {"token": "abc"})


async def _raw_adds(queue: Any, loops: int, sent: Any, duration: Any) -> None:
    from bullmq import Queue

    add = getattr(Queue.__dict__["add"], "__wrapped__", Queue.__dict__["add"])  # bullmq's own, not otelkit's
    tracer = trace.get_tracer("bench-raw")
    attrs = {"messaging.system": "bullmq", "messaging.destination.name": queue.name,
             "messaging.operation.name": "send", "messaging.operation.type": "send"}
    for _ in range(loops):
        cid = uuid.uuid4().hex  # the same work: a correlation ID in baggage and in clear, the send time
        token = context.attach(baggage.set_baggage("correlation_id", cid))
        with tracer.start_as_current_span("send " + queue.name, kind=SpanKind.PRODUCER,
                                          attributes={**attrs, "messaging.message.conversation_id": cid}) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            headers["otelkit-sent-at"] = f"{time.time() * 1000.0:.3f}"
            headers["otelkit-correlation-id"] = cid
            t0 = time.perf_counter()
            job = await add(queue, "enrich", {"token": "abc"}, {"tm": json.dumps(headers, separators=(",", ":"))})
            span.set_attribute("messaging.message.id", job.id)
            sent.add(1, attrs)
            duration.record(time.perf_counter() - t0, attrs)
        context.detach(token)


def bullmq_add_otelkit(loops: int) -> float:
    loop, queue, _sent, _duration = _setup()
    t0 = time.perf_counter()
    loop.run_until_complete(_otelkit_adds(queue, loops))
    return time.perf_counter() - t0


def bullmq_add_raw(loops: int) -> float:
    loop, queue, sent, duration = _setup()
    t0 = time.perf_counter()
    loop.run_until_complete(_raw_adds(queue, loops, sent, duration))
    return time.perf_counter() - t0


PAIRS: list[tuple[Any, ...]] = [
    ("bullmq Queue.add: otelkit vs hand-written SDK producer (real Redis)", bullmq_add_otelkit, bullmq_add_raw, 1.1),
]


if __name__ == "__main__":  # quick look without the harness
    for label, ours_fn, raw_fn, *_rest in PAIRS:
        n = 200
        a = [ours_fn(n) / n * 1e6 for _ in range(5)]
        b = [raw_fn(n) / n * 1e6 for _ in range(5)]
        print(f"{label}: otelkit {statistics.median(a):.1f} µs, raw {statistics.median(b):.1f} µs, "
              f"ratio {statistics.median(a) / statistics.median(b):.2f}")
