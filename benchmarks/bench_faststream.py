"""Instructions per message added by otelkit's FastStream middleware vs FastStream's own OpenTelemetry middleware.

Callgrind instruction counts on the application thread (``_callgrind.per_op``: the difference between a small
and a large loop count, so start-up and set-up cancel out) of one message through the real Redis
(``OTELKIT_BENCH_REDIS_URL``, default 127.0.0.1:6379): ``broker.publish(payload, list=QUEUE)`` on a started
``RedisBroker`` (``logger=None``) whose list subscriber (BLPOP, in the same event loop and thread) runs a handler
that resolves the loop's future. So one operation is the publish, the BLPOP that returns it, the decode and the
handler: both middleware hooks (publish and consume) run once. Each process uses its own list name. With
``--broker rabbit`` (targets ``rabbit_SIDE``): the same through RabbitMQ (``OTELKIT_BENCH_RABBITMQ_URL``, default
guest@127.0.0.1:5672), ``RabbitBroker.publish(payload, queue=QUEUE)`` to an auto-delete queue of its own and
``RabbitTelemetryMiddleware`` on the FastStream sides.

Sides, each in a fresh interpreter (same SDK ``TracerProvider`` + ``BatchSpanProcessor`` with a null exporter
and, where metrics are on, a ``MeterProvider`` with an in-memory reader, as ``bench_amqp.py``):

* ``none``: FastStream alone;
* ``fs_spans``: ``RedisTelemetryMiddleware(tracer_provider=tp)`` with no meter provider (the global no-op
  one): a ``create`` + ``publish`` PRODUCER span on publish (no span is current), a ``process`` CONSUMER span
  on consume (its context extracted from the message): 3 spans, no metric point;
* ``fs``: the same with ``meter_provider=mp``: + ``messaging.publish.duration`` and
  ``messaging.process.duration`` (2 points per message, FastStream's default);
* ``fs_counters``: ``include_messages_counters=True``: + ``messaging.publish.messages`` and
  ``messaging.process.messages`` (4 points per message);
* ``otelkit_spans``: otelkit's middleware (``instrument_all(instrument=["faststream"])``, no meter
  provider): a ``send`` PRODUCER span and a ``process`` CONSUMER span (a root linked to the producer): 2 spans;
* ``otelkit``: the same with ``mp``: + otelkit's pipeline points, send: sent count + operation duration;
  process: consumed count, process duration, settled outcome, end-to-end latency, time in queue (7 points).

Run: ``.venv/bin/python benchmarks/bench_faststream.py [SIDE ...]`` (all sides by default; ``--lo/--hi``).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import os
import time
import uuid
from typing import Any

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
RABBITMQ_URL = os.environ.get("OTELKIT_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
BROKERS = ("redis", "rabbit")
SIDES = ("none", "fs_spans", "fs", "fs_counters", "otelkit_spans", "otelkit")
PAYLOAD = {"token": "So11111111111111111111111111111111111111112", "i": 0}


@functools.cache
def _providers(metrics_on: bool) -> tuple[Any, Any]:
    from bench_amqp import NullSpanExporter
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    trace.set_tracer_provider(tp)
    mp = None
    if metrics_on:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
        metrics.set_meter_provider(mp)
    return tp, mp


class _Bench:
    """One started broker and its event loop, kept across the warm-up and the measured call."""

    def __init__(self, side: str, system: str = "redis") -> None:
        middlewares: list[Any] = []
        if side.startswith("fs"):
            if system == "redis":
                from faststream.redis.opentelemetry import RedisTelemetryMiddleware as Telemetry
            else:
                from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware as Telemetry

            tp, mp = _providers(side != "fs_spans")
            middlewares.append(Telemetry(tracer_provider=tp, meter_provider=mp,
                                         include_messages_counters=side == "fs_counters"))
        elif side.startswith("otelkit"):
            tp, mp = _providers(side == "otelkit")
            from otelkit import _instrument
            from otelkit._config import resolve

            _instrument.instrument_all(resolve(instrument=["faststream"], system_metrics=False), tp, mp)
        self.queue = f"otelkit-bench-fs-{uuid.uuid4().hex[:12]}"
        self.system = system
        # logger=None: FastStream's per-message INFO lines are not telemetry; off on every side.
        source: Any
        if system == "redis":
            from faststream.redis import ListSub, RedisBroker

            self.broker = RedisBroker(REDIS_URL, middlewares=middlewares, logger=None)
            # A long BLPOP timeout: no empty poll while a message is on its way, so every iteration is one BLPOP.
            source = {"list": ListSub(self.queue, polling_interval=30.0)}
        else:
            from faststream.rabbit import RabbitBroker, RabbitQueue

            self.broker = RabbitBroker(RABBITMQ_URL, middlewares=middlewares, logger=None)
            source = {"queue": RabbitQueue(self.queue, auto_delete=True)}
        if side.startswith("otelkit") and not any(type(m).__name__ == "FastStreamMiddleware"
                                                 for m in self.broker.middlewares):
            raise RuntimeError("otelkit's middleware was not installed on the broker")
        self.waiter: asyncio.Future[None] | None = None

        @self.broker.subscriber(**source)
        async def handle(body: dict[str, object]) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.broker.start())
        atexit.register(self.close)  # after the measurement (``_callgrind`` runs the exit functions)

    def close(self) -> None:
        self.loop.run_until_complete(self.broker.stop())
        self.loop.close()

    async def _run(self, loops: int) -> None:
        for _ in range(loops):
            self.waiter = self.loop.create_future()
            if self.system == "redis":
                await self.broker.publish(PAYLOAD, list=self.queue)
            else:
                await self.broker.publish(PAYLOAD, queue=self.queue)
            await asyncio.wait_for(self.waiter, 60)

    def __call__(self, loops: int) -> float:
        t0 = time.perf_counter()
        self.loop.run_until_complete(self._run(loops))
        return time.perf_counter() - t0


@functools.cache
def _bench(side: str, system: str = "redis") -> _Bench:
    return _Bench(side, system)


def _message(loops: int, side: str, system: str = "redis") -> float:
    return _bench(side, system)(loops)


for _side in SIDES:
    globals()[f"message_{_side}"] = functools.partial(_message, side=_side)  # Redis list
    globals()[f"rabbit_{_side}"] = functools.partial(_message, side=_side, system="rabbit")  # RabbitMQ queue


def _available(system: str) -> bool:
    try:
        if system == "redis":
            import faststream.redis.opentelemetry
            import redis

            redis.Redis.from_url(REDIS_URL).ping()
        else:
            import faststream.rabbit.opentelemetry  # noqa: F401
            import pika

            pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception:
        return False
    return True


def measure(sides: tuple[str, ...], lo: int, hi: int, system: str = "redis") -> dict[str, float]:
    """Instructions per message on the application thread, side by side (two callgrind runs at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    import _callgrind

    with ThreadPoolExecutor(max_workers=2) as pool:
        prefix = "message" if system == "redis" else "rabbit"
        futures = {side: pool.submit(_callgrind.per_op, f"bench_faststream:{prefix}_{side}", lo, hi) for side in sides}
        return {side: future.result() for side, future in futures.items()}


def custom(fast: bool) -> list[dict[str, Any]]:
    """``run.py`` rows: otelkit's added instructions per message over FastStream middleware's (callgrind)."""
    import _callgrind

    if not _callgrind.available():
        return []
    lo, hi = (10, 40) if fast else (20, 120)
    rows = []
    for system in BROKERS:
        if _available(system):
            rows.extend(_rows(system, measure(SIDES, lo, hi, system)))
    return rows


def _rows(system: str, counts: dict[str, float]) -> list[dict[str, Any]]:
    where = "RedisBroker list" if system == "redis" else "RabbitBroker queue"
    rows = []
    for ours, theirs, what in (
            ("otelkit_spans", "fs_spans", "spans only (otelkit 2 spans, FastStream 3)"),
            ("otelkit", "fs_counters", "spans + metrics (otelkit 7 points, FastStream 4 with its counters)"),
            ("otelkit", "fs", "each side's defaults (otelkit 7 points, FastStream 2)")):
        added_ours = counts[ours] - counts["none"]
        added_theirs = counts[theirs] - counts["none"]
        rows.append({"label": f"FastStream {where}, publish + consume: instructions added per message, "
                              f"otelkit's middleware vs FastStream's, {what} (callgrind)",
                     "unit": "instr", "otelkit": [added_ours], "raw": [added_theirs],
                     "ratios": [added_ours / added_theirs], "target": None if what.startswith("each") else 1.0,
                     "extra": {"per_call": counts},
                     "note": ", ".join(f"{side} {count:,.0f}" for side, count in counts.items())})
    return rows


PAIRS: list[tuple[Any, ...]] = []


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("sides", nargs="*", default=list(SIDES))
    parser.add_argument("--lo", type=int, default=20)
    parser.add_argument("--hi", type=int, default=120)
    parser.add_argument("--wall", action="store_true", help="wall time per message without callgrind")
    parser.add_argument("--broker", choices=BROKERS, default="redis")
    args = parser.parse_args()
    if args.wall:
        if len(args.sides) != 1:
            sys.exit("--wall: one side per process (the providers and otelkit's patch are process-wide)")
        fn = _bench(args.sides[0], args.broker)
        fn(50)
        print(args.sides[0], f"{fn(500) / 500 * 1e6:.0f} µs/msg", flush=True)
        sys.exit(0)
    counts = measure(tuple(args.sides), args.lo, args.hi, args.broker)
    for side, count in counts.items():
        added = f" (+{count - counts['none']:,.0f})" if "none" in counts else ""
        print(f"{side}: {count:,.0f} instructions per message{added}", flush=True)
