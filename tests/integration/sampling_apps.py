"""Producer and consumer for the whole-event sampling test (run as subprocesses, see test_sampling_events.py).

Both processes call ``otelkit.init()`` with ``OTEL_TRACES_SAMPLER=otelkit_correlation_ratio`` from the
environment. The consumer retries every 4th event through a retry list and dead-letters every 8th on
the retry, so retries and dead letters are part of the events that must be kept or dropped whole.

    python sampling_apps.py ROLE '{"json": "arguments"}'
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from typing import Any

import redis

import otelkit
from otelkit import pipeline

DEADLINE = 60.0


def producer(args: dict[str, Any]) -> None:
    client = redis.Redis.from_url(args["redis_url"])
    cids = []
    for i in range(args["count"]):
        cid = uuid.uuid4().hex
        with pipeline.correlate(cid), pipeline.emit(args["queue"], system="redis") as msg:
            client.lpush(args["queue"], msg.wrap(json.dumps({"n": i})))
        cids.append(cid)
    print(json.dumps({"cids": cids}), flush=True)


def consumer(args: dict[str, Any]) -> None:
    client = redis.Redis.from_url(args["redis_url"])
    deadline = time.monotonic() + DEADLINE
    retried = dead = 0
    for _ in range(args["count"]):
        popped = client.brpop([args["queue"]], timeout=max(1, int(deadline - time.monotonic())))
        if popped is None:
            break
        with pipeline.receive(args["queue"], popped[1], system="redis") as msg:
            n = json.loads(msg.payload)["n"]
            if n % 4 == 0:
                with pipeline.emit(args["retry_queue"], system="redis", attempt=2) as again:
                    client.lpush(args["retry_queue"], again.wrap(json.dumps({"n": n})))
                msg.retry("flaky")
                retried += 1
    for _ in range(retried):
        popped = client.brpop([args["retry_queue"]], timeout=max(1, int(deadline - time.monotonic())))
        if popped is None:
            break
        with pipeline.receive(args["retry_queue"], popped[1], system="redis") as msg:
            if json.loads(msg.payload)["n"] % 8 == 0:
                msg.dead_letter("still failing")
                dead += 1
    print(json.dumps({"retried": retried, "dead": dead}), flush=True)


if __name__ == "__main__":
    otelkit.init()
    {"producer": producer, "consumer": consumer}[sys.argv[1]](json.loads(sys.argv[2]))
    otelkit.shutdown()
