"""One message through a real Redis list in one process, for callgrind on the application thread.

``bench_message.py``'s producer and consumer loops (``_message_app.py``, mode ``otelkit``) run here one after
the other in one process: ``pipeline.emit`` + LPUSH of ``msg.wrap(payload)``, then BRPOP + ``pipeline.receive``
+ ``json.loads``, with ``otelkit.init()`` defaults (traces, metrics, logs over OTLP gRPC to a blackhole rotel;
redis instrumentation; system metrics). ``plain`` is the same without otelkit. For quick iteration on the
application thread's share of a message (``message_callgrind.py`` counts every thread of both programs):

    PYTHONPATH=. python benchmarks/_callgrind.py bench_message_thread:roundtrip_otelkit
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from typing import Any

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = f"otelkit-bench:thread:{uuid.uuid4().hex[:12]}"


@functools.cache
def _client(instrumented: bool) -> Any:
    if instrumented:
        from bench_export import _collector_endpoint

        os.environ.update({"OTEL_SERVICE_NAME": "bench-thread", "OTEL_EXPORTER_OTLP_ENDPOINT": _collector_endpoint(),
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        import otelkit

        otelkit.init()
    import atexit

    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=60)
    client.ping()
    atexit.register(client.delete, QUEUE)
    return client


def roundtrip_otelkit(loops: int) -> float:
    from otelkit import pipeline

    r = _client(True)
    start = time.perf_counter()
    for i in range(loops):
        payload = json.dumps({"token": "So11111111111111111111111111111111111111112", "i": i})
        with pipeline.emit(QUEUE, system="redis") as msg:
            r.lpush(QUEUE, msg.wrap(payload))
        item = r.brpop([QUEUE], timeout=30)
        with pipeline.receive(QUEUE, item[1], system="redis") as got:
            json.loads(got.payload)
    return time.perf_counter() - start


def roundtrip_plain(loops: int) -> float:
    r = _client(False)
    start = time.perf_counter()
    for i in range(loops):
        payload = json.dumps({"token": "So11111111111111111111111111111111111111112", "i": i})
        r.lpush(QUEUE, payload)
        item = r.brpop([QUEUE], timeout=30)
        json.loads(item[1])
    return time.perf_counter() - start
