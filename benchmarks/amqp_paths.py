"""The per-message code of otelkit's pika integration without the broker: instructions per message (callgrind).

``bench_amqp.py`` measures the same operations through the real RabbitMQ, which needs 40 callgrind runs of a
networked program (over an hour on a loaded 2-core machine). This module runs otelkit's (and the contrib
package's) wrappers on fake channel/method/properties objects, so the count is the instrumentation's own code
plus the SDK's span/metric work, nothing of pika's I/O: quick to re-run after a change to the shared
``Emission``/``Reception`` path.

Sides (same SDK ``TracerProvider`` + ``BatchSpanProcessor`` with a null exporter as ``bench_amqp``):

* ``consume`` / ``consume_m``: otelkit's ``basic_consume`` callback wrapper around a handler that acks (message
  without headers, as in ``bench_amqp``), spans only / with otelkit's metrics on an SDK ``MeterProvider``;
* ``contrib_consume``: ``opentelemetry-instrumentation-pika``'s callback decorator around the same handler;
* ``none_consume``: the handler alone;
* ``publish`` / ``publish_m``: otelkit's ``basic_publish`` wrapper around a no-op publish (the emission:
  span, trace context + correlation ID + send-time headers), spans only / with metrics.

Run: ``.venv/bin/python benchmarks/amqp_paths.py consume contrib_consume none_consume publish``.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any


@functools.cache
def _setup(side: str) -> None:
    import bench_amqp

    bench_amqp._setup(side)
    if side.startswith("otelkit"):
        import pika

        from otelkit._instrument import pika as okpika

        okpika._patch(pika)


class _Params:
    host = "127.0.0.1"
    port = 5672


class _Connection:
    params = _Params()


class _Channel:
    connection = _Connection()

    def basic_ack(self, tag: int) -> None:
        pass


def _delivery() -> tuple[Any, Any]:
    import pika
    from pika.spec import Basic

    return Basic.Deliver(consumer_tag="c", delivery_tag=1, redelivered=False, exchange="", routing_key="q1"), \
        pika.BasicProperties()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def consume(loops: int, metrics_on: bool = False) -> float:
    _setup("otelkit-metrics" if metrics_on else "otelkit")
    from otelkit._instrument import pika as okpika

    channel = _Channel()
    ack = okpika._settler("basic_ack")

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ack(_noop, ch, (method.delivery_tag,), {})  # what pika's Channel.basic_ack runs under otelkit

    traced = okpika._traced_callback(handler, "q1")
    method, properties = _delivery()
    t0 = time.perf_counter()
    for _ in range(loops):
        traced(channel, method, properties, b"{}")
    return time.perf_counter() - t0


def consume_m(loops: int) -> float:
    return consume(loops, True)


def contrib_consume(loops: int) -> float:
    _setup("contrib")
    from opentelemetry import trace
    from opentelemetry.instrumentation.pika.utils import _decorate_callback

    channel = _Channel()

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_ack(method.delivery_tag)

    traced = _decorate_callback(handler, trace.get_tracer("opentelemetry.instrumentation.pika"), "q1")
    method, properties = _delivery()
    t0 = time.perf_counter()
    for _ in range(loops):
        traced(channel, method, properties, b"{}")
    return time.perf_counter() - t0


def none_consume(loops: int) -> float:
    channel = _Channel()

    def handler(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        ch.basic_ack(method.delivery_tag)

    method, properties = _delivery()
    t0 = time.perf_counter()
    for _ in range(loops):
        handler(channel, method, properties, b"{}")
    return time.perf_counter() - t0


def publish(loops: int, metrics_on: bool = False) -> float:
    _setup("otelkit-metrics" if metrics_on else "otelkit")
    from otelkit._instrument import pika as okpika

    channel = _Channel()
    t0 = time.perf_counter()
    for _ in range(loops):
        okpika._publish(_noop, channel, ("", "q1", b"{}"), {})
    return time.perf_counter() - t0


def publish_m(loops: int) -> float:
    return publish(loops, True)


if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor

    import _callgrind

    names = sys.argv[1:] or ["none_consume", "contrib_consume", "consume", "consume_m", "publish", "publish_m"]
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda name: _callgrind.per_op(f"amqp_paths:{name}", 20, 120), names))
    for name, count in zip(names, counts, strict=True):
        print(f"{name}: {count / 1000:.1f}k instructions per message")
