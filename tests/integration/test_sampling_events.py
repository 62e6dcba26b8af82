"""Whole-event sampling across processes through the real Redis and the real rotel collector.

A producer process emits events, a consumer process receives them, retries every 4th through a
retry list and dead-letters half of those. Both sample with ``otelkit_correlation_ratio``. Every
event's spans (send, process, the retry's send and process) are all at the collector or none is,
the kept set is exactly the one the documented function predicts, its size is within binomial
bounds, and the pipeline metrics count every message: metrics are never sampled.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from otelkit._names import MESSAGES_SETTLED, MESSAGING_CONVERSATION_ID
from otelkit._sampling import correlation_randomness, threshold
from otelkit.testing._receiver import RotelCollector

APPS = str(Path(__file__).with_name("sampling_apps.py"))
COUNT = 240


def _run(role: str, args: dict[str, Any], collector: RotelCollector, ratio: float) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": f"sampling-{role}", "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false", "OTEL_TRACES_SAMPLER": "otelkit_correlation_ratio",
                "OTEL_TRACES_SAMPLER_ARG": str(ratio), "OTEL_LOGS_EXPORTER": "none"})
    return subprocess.Popen([sys.executable, APPS, role, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err}"
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.mark.parametrize("ratio", [0.1, 0.5])
def test_events_are_kept_or_dropped_whole(otelkit_collector: RotelCollector, redis_url: str, ratio: float) -> None:
    import redis

    suffix = uuid.uuid4().hex[:12]
    args = {"redis_url": redis_url, "count": COUNT, "queue": f"otelkit-test:sample:{suffix}",
            "retry_queue": f"otelkit-test:sample-retry:{suffix}"}
    client = redis.Redis.from_url(redis_url)
    try:
        consumer = _run("consumer", args, otelkit_collector, ratio)
        produced = _finish(_run("producer", args, otelkit_collector, ratio))
        consumed = _finish(consumer)
    finally:
        client.delete(args["queue"], args["retry_queue"])
        client.close()
    cids: list[str] = produced["cids"]
    assert consumed["retried"] == COUNT // 4 and consumed["dead"] == COUNT // 8

    kept = {c for c in cids if correlation_randomness(c) >= threshold(ratio)}
    retried = {c for i, c in enumerate(cids) if i % 4 == 0}
    expected = {("send", c) for c in kept} | {("process", c) for c in kept} | \
               {("send-retry", c) for c in kept & retried} | {("process-retry", c) for c in kept & retried}
    receiver = otelkit_collector.receiver

    def seen() -> set[tuple[str, str]]:
        out = set()
        for span in receiver.spans():
            cid = span.attributes.get(MESSAGING_CONVERSATION_ID)
            if cid not in cids:
                continue
            op = span.name.split(" ", 1)[0]
            out.add((op + ("-retry" if span.name.endswith(args["retry_queue"]) else ""), cid))
        return out

    # Metrics come at each process's shutdown, after its spans: when both consumers' settled counts are in,
    # every span that was going to arrive has.
    def settled() -> dict[str, float]:
        totals: dict[str, float] = {}
        for p in receiver.metrics(MESSAGES_SETTLED.name):
            if p.attributes.get("messaging.destination.name") in (args["queue"], args["retry_queue"]):
                key = f"{p.attributes.get('messaging.destination.name')}:{p.attributes.get('otelkit.outcome')}"
                totals[key] = totals.get(key, 0) + p.value
        return totals

    receiver.wait_for(lambda: len(settled()) >= 3 and expected <= seen(), timeout=60,
                      message="the kept events' spans and the consumers' metrics")
    assert seen() == expected  # nothing of a dropped event, everything of a kept one
    # Binomial bounds on the kept share (6 sigma): the function behaves like a fair coin of weight `ratio`.
    sd = math.sqrt(COUNT * ratio * (1 - ratio))
    assert abs(len(kept) - COUNT * ratio) <= 6 * sd
    assert 0 < len(kept) < COUNT
    # Metrics are never sampled: every message is counted, kept or not.
    totals = settled()
    assert totals.get(f"{args['queue']}:ack") == COUNT - COUNT // 4, totals
    assert totals.get(f"{args['queue']}:retry") == COUNT // 4, totals
    assert totals.get(f"{args['retry_queue']}:dead_letter") == COUNT // 8, totals
