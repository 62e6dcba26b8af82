"""``otelkit.pipeline.emit`` / ``receive`` against the same work hand-written with the raw SDK (issue 8, target 2).

Both sides run on the same global SDK providers: a ``TracerProvider`` with otelkit's
``CorrelationSpanProcessor`` and a ``BatchSpanProcessor`` into a null exporter, and a
``MeterProvider`` with one reader. The raw side is what a careful user writes by hand
to get the same telemetry:

* **emit**: read or create the correlation ID, put it in baggage, start a PRODUCER
  span with the messaging attributes, inject ``traceparent``/``baggage`` with the
  global propagator, write the emission time and the correlation header, record
  ``messaging.client.sent.messages`` and ``messaging.client.operation.duration``;
* **receive**: extract with the global propagator, read the correlation ID (or make
  one), make the message's baggage current, start a root CONSUMER span linked to the
  producer, record time-in-queue, ``consumed``, ``process.duration``, ``settled`` and
  end-to-end latency (inside the span, so the histograms carry exemplars, as otelkit's do);
* **receive, JSON envelope**: the same after ``json.loads`` of an enveloped payload
  (Redis list / pub/sub).

otelkit does more on each call than the raw code (bytes-safe carrier access,
correlation-ID validation, outcome handling, exception reporting hooks); the target is
that this costs at most 10 %.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry import baggage, context, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind

DEST = "tokens"
MESSAGING_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
LATENCY_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0]


class NullSpanExporter(SpanExporter):
    """Accepts and discards spans."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@functools.cache
def _setup() -> None:
    """Global SDK providers shared by both sides (each pair runs in its own process)."""
    from otelkit._correlation import CorrelationSpanProcessor

    tp = TracerProvider()
    tp.add_span_processor(CorrelationSpanProcessor())
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


# --- the raw side -----------------------------------------------------------------------------------------


class Raw:
    """Instruments and constants a hand-written integration would create once."""

    def __init__(self) -> None:
        _setup()
        self.tracer = trace.get_tracer("raw.pipeline")
        meter = metrics.get_meter("raw.pipeline")
        self.sent = meter.create_counter("messaging.client.sent.messages", unit="{message}")
        self.consumed = meter.create_counter("messaging.client.consumed.messages", unit="{message}")
        self.op_duration = meter.create_histogram("messaging.client.operation.duration", unit="s",
                                                  explicit_bucket_boundaries_advisory=MESSAGING_BUCKETS)
        self.process_duration = meter.create_histogram("messaging.process.duration", unit="s",
                                                       explicit_bucket_boundaries_advisory=MESSAGING_BUCKETS)
        self.settled = meter.create_counter("otelkit.messaging.settled.messages", unit="{message}")
        self.e2e = meter.create_histogram("otelkit.messaging.message.end_to_end.duration", unit="s",
                                          explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self.in_queue = meter.create_histogram("otelkit.messaging.message.time_in_queue", unit="s",
                                               explicit_bucket_boundaries_advisory=LATENCY_BUCKETS)
        self.send_attrs = {"messaging.system": "redis", "messaging.destination.name": DEST,
                           "messaging.operation.name": "send", "messaging.operation.type": "send"}
        self.process_attrs = {"messaging.system": "redis", "messaging.destination.name": DEST,
                              "messaging.operation.name": "process", "messaging.operation.type": "process"}
        self.settled_attrs = {**self.process_attrs, "otelkit.outcome": "ack"}


@functools.cache
def _raw() -> Raw:
    return Raw()


def raw_emit_one(raw: Raw, headers: dict[str, str]) -> None:
    parent = context.get_current()
    cid = baggage.get_baggage("correlation_id", parent)
    ctx = parent
    if not isinstance(cid, str):
        cid = uuid.uuid4().hex
        ctx = baggage.set_baggage("correlation_id", cid, parent)
    token = context.attach(ctx)
    start = time.perf_counter()
    try:
        with raw.tracer.start_as_current_span(
                "send " + DEST, kind=SpanKind.PRODUCER,
                attributes={**raw.send_attrs, "messaging.message.conversation_id": cid}):
            propagate.inject(headers)
            headers["otelkit-sent-at"] = f"{time.time() * 1000.0:.3f}"
            headers["otelkit-correlation-id"] = cid
            # inside the span, as otelkit does: the duration histogram gets an exemplar of this trace
            raw.sent.add(1, raw.send_attrs)
            raw.op_duration.record(time.perf_counter() - start, raw.send_attrs)
    finally:
        context.detach(token)


def raw_receive_one(raw: Raw, headers: dict[str, str]) -> None:
    extracted = propagate.extract(headers, context=Context())
    producer = trace.get_current_span(extracted).get_span_context()
    cid = baggage.get_baggage("correlation_id", extracted)
    if not isinstance(cid, str):
        cid = uuid.uuid4().hex
    ctx = context.get_current()
    for key, value in baggage.get_all(extracted).items():
        ctx = baggage.set_baggage(key, value, ctx)
    ctx = baggage.set_baggage("correlation_id", cid, ctx)
    ctx = trace.set_span_in_context(trace.INVALID_SPAN, ctx)  # a root span, whatever the loop runs in
    token = context.attach(ctx)
    try:
        sent_at = float(headers["otelkit-sent-at"]) / 1000.0
        start = time.perf_counter()
        # Metrics inside the span, as otelkit does: the latency histograms get exemplars of this trace.
        with raw.tracer.start_as_current_span(
                "process " + DEST, kind=SpanKind.CONSUMER, links=[Link(producer)] if producer.is_valid else None,
                attributes={**raw.process_attrs, "messaging.message.conversation_id": cid,
                            "messaging.message.id": "1-0"}) as span:
            raw.in_queue.record(max(0.0, time.time() - sent_at), raw.process_attrs)
            span.set_attribute("otelkit.outcome", "ack")
            raw.consumed.add(1, raw.process_attrs)
            raw.process_duration.record(time.perf_counter() - start, raw.process_attrs)
            raw.settled.add(1, raw.settled_attrs)
            raw.e2e.record(max(0.0, time.time() - sent_at), raw.process_attrs)
    finally:
        context.detach(token)


# --- the timed functions -----------------------------------------------------------------------------------


def emit_otelkit(loops: int) -> float:
    _setup()
    from otelkit.pipeline import emit

    start = time.perf_counter()
    for _ in range(loops):
        with emit(DEST, {}, system="redis"):
            pass
    return time.perf_counter() - start


def emit_raw(loops: int) -> float:
    raw = _raw()
    start = time.perf_counter()
    for _ in range(loops):
        raw_emit_one(raw, {})
    return time.perf_counter() - start


@functools.cache
def _message() -> dict[str, str]:
    _setup()
    from otelkit.pipeline import emit

    headers: dict[str, str] = {}
    with emit(DEST, headers, system="redis"):
        pass
    return headers


def receive_otelkit(loops: int) -> float:
    from otelkit.pipeline import receive

    headers = _message()
    start = time.perf_counter()
    for _ in range(loops):
        with receive(DEST, headers, system="redis", message_id="1-0"):
            pass
    return time.perf_counter() - start


def receive_raw(loops: int) -> float:
    raw = _raw()
    headers = _message()
    start = time.perf_counter()
    for _ in range(loops):
        raw_receive_one(raw, headers)
    return time.perf_counter() - start


@functools.cache
def _envelope() -> str:
    _setup()
    from otelkit.pipeline import emit

    with emit(DEST, system="redis") as msg:
        return msg.wrap(json.dumps({"token": "abc", "chain": "solana"}))


def envelope_otelkit(loops: int) -> float:
    from otelkit.pipeline import receive

    raw_message = _envelope().encode()
    start = time.perf_counter()
    for _ in range(loops):
        with receive(DEST, raw_message, system="redis", message_id="1-0") as msg:
            json.loads(msg.payload)
    return time.perf_counter() - start


def envelope_raw(loops: int) -> float:
    raw = _raw()
    raw_message = _envelope().encode()
    start = time.perf_counter()
    for _ in range(loops):
        envelope = json.loads(raw_message)
        raw_receive_one(raw, envelope["headers"])
        json.loads(envelope["payload"])
    return time.perf_counter() - start


PAIRS = [
    ("pipeline: emit (inject, baggage, metrics)", emit_otelkit, emit_raw, 1.1),
    ("pipeline: receive (extract, link, baggage, metrics)", receive_otelkit, receive_raw, 1.1),
    ("pipeline: receive JSON envelope (Redis list)", envelope_otelkit, envelope_raw, 1.1),
]


if __name__ == "__main__":  # quick look without the harness
    for label, ours_fn, raw_fn, _target in PAIRS:
        a = [ours_fn(5000) / 5000 * 1e6 for _ in range(7)]
        b = [raw_fn(5000) / 5000 * 1e6 for _ in range(7)]
        print(f"{label}: otelkit {statistics.median(a):.2f} µs, raw {statistics.median(b):.2f} µs, "
              f"ratio {statistics.median(a) / statistics.median(b):.3f}")
