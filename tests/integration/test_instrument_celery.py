"""Celery through otelkit: real ``celery worker`` processes on the real Redis and RabbitMQ brokers, exported
through the real rotel collector.

Each test runs a producer process (``celery_app.py produce``) and a worker process (``celery -A celery_app worker``,
solo or prefork pool) on a queue of its own (uuid suffix), and asserts what reached the collector: producer and
consumer spans and their links, counted exactly; the correlation ID on every span and log record of a task;
the outcome counts of injected retries and failures; queue depth; no root span from the worker's own broker
traffic. The interop tests pair otelkit with a plain OpenTelemetry process instrumented by
``opentelemetry-instrumentation-celery``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otelkit._names import (
    CORRELATION_ATTRIBUTE,
    MESSAGE_END_TO_END,
    MESSAGE_TIME_IN_QUEUE,
    MESSAGES_SETTLED,
    MESSAGING_SENT,
    QUEUE_LENGTH,
)
from otelkit.testing._receiver import ReceivedPoint, ReceivedSpan, RotelCollector

pytest.importorskip("celery")

APPS = Path(__file__).with_name("apps")
DEADLINE = 60.0
CONVERSATION = "messaging.message.conversation_id"


def _env(collector: RotelCollector, service: str, broker: str, queue: str, mode: str,
         extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_", "CELERY_"))}
    env.update({
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",  # metrics go out once, at shutdown
        "OTELKIT_SYSTEM_METRICS": "false",
        "CELERY_TEST_BROKER": broker, "CELERY_TEST_QUEUE": queue, "CELERY_TEST_MODE": mode,
        "PYTHONPATH": str(APPS) + os.pathsep + env.get("PYTHONPATH", ""),
    })
    env.update(extra or {})
    return env


class Worker:
    """A ``celery worker`` subprocess; ``stop()`` ends it warmly (SIGTERM) so it flushes its telemetry."""

    def __init__(self, env: dict[str, str], pool: str, concurrency: int = 1, housekeeping: bool = False) -> None:
        args = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", pool, "-c", str(concurrency),
                "-Q", env["CELERY_TEST_QUEUE"], "-n", f"w{uuid.uuid4().hex[:8]}@%h", "--loglevel", "INFO"]
        if not housekeeping:  # mingle waits a second for neighbours: only where the silence is under test
            args += ["--without-mingle", "--without-gossip"]
        self.proc = subprocess.Popen(args, env=env, cwd=str(APPS), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.ready.wait(DEADLINE):
            self.stop()
            raise AssertionError("the worker never became ready:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self.ready.set()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(5)
        return "".join(self.lines)


def produce(env: dict[str, str], tasks: list[Any], headers: dict[str, str] | None = None,
            options: dict[str, str] | None = None) -> list[str]:
    import json

    args = json.dumps({"tasks": tasks, "headers": headers, "options": options or {}})
    proc = subprocess.run([sys.executable, str(APPS / "celery_app.py"), "produce", args], env=env, cwd=str(APPS),
                          capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout.strip().splitlines()[-1])["ids"])


def spans_of(collector: RotelCollector, service: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans() if s.resource.get("service.name") == service]


def wait_consumer_spans(collector: RotelCollector, service: str, count: int) -> None:
    collector.receiver.wait_for(
        lambda: len([s for s in spans_of(collector, service) if s.kind == "CONSUMER"]) >= count or None,
        timeout=DEADLINE, message=f"{count} consumer spans from {service}")


def totals(collector: RotelCollector, name: str, service: str, key: str) -> Counter[str]:
    """Sum over processes of each process's latest cumulative value, by attribute ``key``."""
    latest: dict[tuple[Any, ...], ReceivedPoint] = {}
    for point in collector.receiver.metrics(name):
        if point.resource.get("service.name") != service:
            continue
        ident = (point.resource.get("process.pid"), tuple(sorted(point.attributes.items())))
        if ident not in latest or point.time_unix_nano >= latest[ident].time_unix_nano:
            latest[ident] = point
    out: Counter[str] = Counter()
    for point in latest.values():
        out[str(point.attributes.get(key))] += int(point.value if point.value is not None else point.count or 0)
    return out


@pytest.fixture
def queue() -> Iterator[str]:
    yield f"otelkit-test-celery-{uuid.uuid4().hex[:12]}"


def _delete_queue(broker: str, name: str) -> None:
    """Remove the test's own queue (never a shared one)."""
    try:
        from kombu import Connection

        with Connection(broker, connect_timeout=5) as conn:
            conn.default_channel.queue_delete(name)
    except Exception:
        pass


def run_flow(collector: RotelCollector, broker: str, queue: str, pool: str, concurrency: int = 1,
             worker_mode: str = "otelkit", producer_mode: str = "otelkit",
             headers: dict[str, str] | None = None, tasks: list[Any] | None = None,
             consumer_spans: int | None = None, extra: dict[str, str] | None = None,
             housekeeping: bool = False, options: dict[str, str] | None = None) -> tuple[list[str], str]:
    tasks = tasks if tasks is not None else [
        ["ok", ["tok-a"]], ["ok", ["tok-b"]], ["ok", ["tok-c"]], ["flaky", ["tok-f", 2]], ["doomed", ["tok-d"]]]
    runs = consumer_spans if consumer_spans is not None else 3 + 3 + 2
    worker = Worker(_env(collector, "celery-worker", broker, queue, worker_mode, extra), pool, concurrency,
                    housekeeping)
    try:
        ids = produce(_env(collector, "celery-producer", broker, queue, producer_mode), tasks, headers, options)
        try:
            wait_consumer_spans(collector, "celery-worker", runs)
        except AssertionError as exc:
            seen = Counter((s.resource.get("service.name"), s.name, s.kind) for s in collector.receiver.spans())
            raise AssertionError(f"{exc}\nspans: {seen}\nworker:\n{worker.stop()[-6000:]}") from None
    finally:
        output = worker.stop()
        _delete_queue(broker, queue)
    return ids, output


def check_otelkit_flow(collector: RotelCollector, ids: list[str], queue: str, system: str) -> None:
    producer = [s for s in spans_of(collector, "celery-producer") if s.kind == "PRODUCER"]
    worker = spans_of(collector, "celery-worker")
    retried = [s for s in worker if s.kind == "PRODUCER"]
    consumers = [s for s in worker if s.kind == "CONSUMER"]
    # 5 sends by the producer; 2 (flaky) + 1 (doomed) re-publishes for retries inside the worker.
    assert len(producer) == 5 and {s.name for s in producer} == {f"send {queue}"}
    assert len(retried) == 3
    # Nothing else: the publish's own broker commands and the worker's housekeeping make no span.
    assert len(spans_of(collector, "celery-producer")) == 5
    assert len(worker) == 8 + 3, Counter(s.name for s in worker)
    assert len(consumers) == 8 and {s.name for s in consumers} == {f"process {queue}"}
    assert {s.attributes["messaging.system"] for s in producer + consumers} == {system}
    by_id = {s.span_id: s for s in producer + retried}
    first_send = {s.attributes["messaging.message.id"]: s for s in producer}
    assert set(first_send) == set(ids)
    for span in consumers:
        # otelkit's rule: a root span with exactly one link, to the send of this very message.
        assert span.parent_span_id is None
        assert len(span.links) == 1
        link = by_id[span.links[0].span_id]
        task_id = span.attributes["messaging.message.id"]
        assert link.attributes["messaging.message.id"] == task_id
        cid = first_send[task_id].attributes[CONVERSATION]
        assert span.attributes[CONVERSATION] == cid == link.attributes[CONVERSATION]
    attempts = Counter((s.attributes["messaging.message.id"], s.attributes.get("otelkit.message.attempt"))
                       for s in consumers)
    assert sorted(a for (_, a) in attempts) == [1, 1, 1, 1, 1, 2, 2, 3]
    # Every span of the worker carries the correlation ID of its task, and so does every log record.
    cids = {s.attributes[CONVERSATION] for s in producer}
    assert all(s.attributes.get(CORRELATION_ATTRIBUTE) in cids for s in worker), \
        Counter(s.name for s in worker if s.attributes.get(CORRELATION_ATTRIBUTE) not in cids)
    logs = [r for r in collector.receiver.logs() if r.resource.get("service.name") == "celery-worker"
            and str(r.body).startswith("processing")]
    assert len(logs) == 8
    assert all(r.attributes.get(CORRELATION_ATTRIBUTE) in cids for r in logs)
    # The worker's own broker traffic (BRPOP polling, unacked bookkeeping...) makes no root span.
    assert [s.name for s in worker if s.parent_span_id is None and s.kind == "CLIENT"] == []
    outcomes = totals(collector, MESSAGES_SETTLED.name, "celery-worker", "otelkit.outcome")
    assert outcomes == Counter({"ack": 4, "retry": 3, "dead_letter": 1})
    latency = totals(collector, MESSAGE_END_TO_END.name, "celery-worker", "messaging.destination.name")
    assert latency == Counter({queue: 8})
    waits = totals(collector, MESSAGE_TIME_IN_QUEUE.name, "celery-worker", "messaging.destination.name")
    assert waits == Counter({queue: 8})
    dest = "messaging.destination.name"
    assert totals(collector, MESSAGING_SENT.name, "celery-producer", dest) == Counter({queue: 5})
    assert totals(collector, MESSAGING_SENT.name, "celery-worker", dest) == Counter({queue: 3})  # the retries


def test_celery_redis_solo(otelkit_collector: RotelCollector, redis_url: str, queue: str) -> None:
    ids, output = run_flow(otelkit_collector, redis_url, queue, "solo", housekeeping=True)
    check_otelkit_flow(otelkit_collector, ids, queue, "redis")


def test_celery_redis_prefork(otelkit_collector: RotelCollector, redis_url: str, queue: str) -> None:
    ids, output = run_flow(otelkit_collector, redis_url, queue, "prefork", concurrency=2, housekeeping=True)
    check_otelkit_flow(otelkit_collector, ids, queue, "redis")


def test_celery_rabbitmq_solo(otelkit_collector: RotelCollector, rabbitmq_url: str, queue: str) -> None:
    ids, output = run_flow(otelkit_collector, rabbitmq_url, queue, "solo")
    check_otelkit_flow(otelkit_collector, ids, queue, "rabbitmq")


@pytest.mark.slow  # prefork: test_celery_redis_prefork; RabbitMQ: test_celery_rabbitmq_solo
def test_celery_rabbitmq_prefork(otelkit_collector: RotelCollector, rabbitmq_url: str, queue: str) -> None:
    ids, output = run_flow(otelkit_collector, rabbitmq_url, queue, "prefork", concurrency=2)
    check_otelkit_flow(otelkit_collector, ids, queue, "rabbitmq")


@pytest.mark.slow  # the "before" of the silence; disabling by name: tests/unit/test_instrument_celery_units.py
def test_celery_disabled_by_name_leaves_housekeeping_roots(otelkit_collector: RotelCollector, redis_url: str,
                                                          queue: str) -> None:
    """The 'before' side of the silence: without the celery integration the worker's polling is traced."""
    tasks = [["ok", [f"tok-{i}"]] for i in range(3)]
    worker = Worker(_env(otelkit_collector, "celery-worker", redis_url, queue, "otelkit",
                         {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery"}), "solo", housekeeping=True)
    try:
        produce(_env(otelkit_collector, "celery-producer", redis_url, queue, "otelkit",
                     {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "celery"}), tasks)
        otelkit_collector.receiver.wait_for(
            lambda: len([r for r in otelkit_collector.receiver.logs()
                         if str(r.body).startswith("processing")]) >= 3 or None,
            timeout=DEADLINE, message="3 task logs")
    finally:
        worker.stop()
        _delete_queue(redis_url, queue)
    worker_spans = spans_of(otelkit_collector, "celery-worker")
    assert not [s for s in worker_spans if s.kind in ("CONSUMER", "PRODUCER")]
    roots = [s for s in worker_spans if s.parent_span_id is None]
    assert len(roots) >= 3, Counter(s.name for s in roots)  # BRPOP / unacked bookkeeping, per task


@pytest.mark.parametrize("broker_fixture,system", [("redis_url", "redis"), ("rabbitmq_url", "rabbitmq")])
def test_celery_queue_depth(otelkit_collector: RotelCollector, redis_url: str, queue: str, broker_fixture: str,
                            system: str,
                            request: pytest.FixtureRequest) -> None:
    """Depth of the worker's queue while a task holds the only worker: 4 waiting, then 0 once drained."""
    import redis

    broker = str(request.getfixturevalue(broker_fixture))
    key = f"otelkit-test:celery-release:{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    worker = Worker(_env(otelkit_collector, "celery-worker", broker, queue, "otelkit",
                         {"OTEL_METRIC_EXPORT_INTERVAL": "500"}), "solo")
    try:
        produce(_env(otelkit_collector, "celery-producer", broker, queue, "otelkit"),
                [["block", [key, redis_url]]] + [["ok", [f"tok-{i}"]] for i in range(4)])

        def depth() -> float | None:
            values = [p.value for p in otelkit_collector.receiver.metrics(QUEUE_LENGTH.name)
                      if p.attributes.get("messaging.destination.name") == queue]
            return 4 if 4 in values else None

        otelkit_collector.receiver.wait_for(depth, timeout=DEADLINE, message="queue length 4 while the worker is held")
        client.set(key, "1", ex=120)
        wait_consumer_spans(otelkit_collector, "celery-worker", 5)
        released = time.time_ns()

        def drained() -> bool | None:
            return any(p.value == 0 and p.time_unix_nano > released for p in otelkit_collector.receiver.metrics(
                QUEUE_LENGTH.name) if p.attributes.get("messaging.destination.name") == queue) or None

        otelkit_collector.receiver.wait_for(drained, timeout=DEADLINE, message="queue length 0 once drained")
    finally:
        client.delete(key)
        worker.stop()
        _delete_queue(broker, queue)
    points = [p for p in otelkit_collector.receiver.metrics(QUEUE_LENGTH.name)
              if p.attributes.get("messaging.destination.name") == queue]
    assert {p.attributes["messaging.system"] for p in points} == {system}
    assert {p.attributes["otelkit.messaging.queue.state"] for p in points} == {"ready"}
    assert max(p.value or 0 for p in points) == 4  # never more than were waiting


BROKERS = [pytest.param("redis_url", id="redis"),
           pytest.param("rabbitmq_url", id="rabbitmq", marks=pytest.mark.slow)]  # same code path, other broker


@pytest.mark.parametrize("broker_fixture", BROKERS)
@pytest.mark.parametrize("carried", [
    "correlation_id header",
    pytest.param("messaging.conversation_id header", marks=pytest.mark.slow),  # the header path above, another key
    "correlation_id property"])
def test_celery_contrib_producer_to_otelkit_worker(otelkit_collector: RotelCollector, queue: str, broker_fixture: str,
                                                   carried: str, request: pytest.FixtureRequest) -> None:
    """A plain-OTel producer (contrib instrumentation) feeding an otelkit worker: linked, and its ID adopted."""
    if carried != "correlation_id header" and broker_fixture != "redis_url":
        pytest.skip("one broker is enough for the other ways of carrying the ID")
    broker = str(request.getfixturevalue(broker_fixture))
    foreign = "order-4711"
    tasks = [["ok", [f"tok-{i}"]] for i in range(3)]
    key = carried.split()[0]
    headers = {key: foreign} if carried.endswith("header") else None
    options = {key: foreign} if carried.endswith("property") else None
    ids, _ = run_flow(otelkit_collector, broker, queue, "solo", producer_mode="contrib", headers=headers,
                      options=options,
                      tasks=tasks, consumer_spans=3)
    sends = [s for s in spans_of(otelkit_collector, "celery-producer") if s.kind == "PRODUCER"]
    consumers = [s for s in spans_of(otelkit_collector, "celery-worker") if s.kind == "CONSUMER"]
    assert len(sends) == 3 and len(consumers) == 3
    send_ids = {s.span_id for s in sends}
    for span in consumers:
        assert len(span.links) == 1 and span.links[0].span_id in send_ids
        assert span.attributes[CONVERSATION] == foreign
    logs = [r for r in otelkit_collector.receiver.logs() if str(r.body).startswith("processing")]
    assert len(logs) == 3 and all(r.attributes.get(CORRELATION_ATTRIBUTE) == foreign for r in logs)


@pytest.mark.parametrize("broker_fixture", BROKERS)
def test_celery_otelkit_producer_to_contrib_worker(otelkit_collector: RotelCollector, queue: str, broker_fixture: str,
                                                   request: pytest.FixtureRequest) -> None:
    """otelkit's send carries the W3C context contrib's worker reads: its run span is the send's child."""
    broker = str(request.getfixturevalue(broker_fixture))
    tasks = [["ok", [f"tok-{i}"]] for i in range(3)]
    ids, _ = run_flow(otelkit_collector, broker, queue, "solo", worker_mode="contrib", tasks=tasks, consumer_spans=3)
    sends = {s.span_id: s for s in spans_of(otelkit_collector, "celery-producer") if s.kind == "PRODUCER"}
    runs = [s for s in spans_of(otelkit_collector, "celery-worker") if s.kind == "CONSUMER"]
    assert len(sends) == 3 and len(runs) == 3
    assert sorted(s.parent_span_id or "" for s in runs) == sorted(sends)
    assert all(s.trace_id == sends[s.parent_span_id or ""].trace_id for s in runs)


def _task_name(span: ReceivedSpan) -> str:
    return str(span.attributes.get("celery.task_name", "")).rsplit(".", 1)[-1]


def _run_canvas(collector: RotelCollector, role: str, broker: str, redis_url: str, queue: str, pool: str,
                concurrency: int, runs: int) -> dict[str, Any]:
    """A worker (``pool`` × ``concurrency``) on ``broker`` with a Redis result backend; ``celery_app.py ROLE``
    applies the canvases; returns what it printed once the worker has made ``runs`` CONSUMER spans."""
    import json

    extra = {"CELERY_TEST_BACKEND": redis_url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    worker = Worker(_env(collector, "celery-worker", broker, queue, "otelkit", extra), pool, concurrency)
    try:
        proc = subprocess.run([sys.executable, str(APPS / "celery_app.py"), role],
                              env=_env(collector, "celery-producer", broker, queue, "otelkit", extra),
                              cwd=str(APPS), capture_output=True, text=True, timeout=DEADLINE)
        assert proc.returncode == 0, proc.stderr
        canvases: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        canvases["worker_pid"] = worker.proc.pid
        try:
            wait_consumer_spans(collector, "celery-worker", runs)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker:\n{worker.stop()[-6000:]}") from None
    finally:
        worker.stop()
        _delete_queue(broker, queue)
    return canvases


# Redis broker with the solo pool; RabbitMQ (amqp://) with a prefork pool of 2 (the tasks run in child processes,
# forked after init()). The result backend is Redis in both: a chord needs one.
CANVAS_WORKERS = [pytest.param("redis_url", "solo", 1, id="redis-solo"),
                  pytest.param("rabbitmq_url", "prefork", 2, id="rabbitmq-prefork")]


@pytest.mark.parametrize(("broker_fixture", "pool", "concurrency"), CANVAS_WORKERS)
def test_celery_canvas(otelkit_collector: RotelCollector, redis_url: str, queue: str, broker_fixture: str,
                       pool: str, concurrency: int, request: pytest.FixtureRequest) -> None:
    """chain, group and chord (header + callback) on a real worker with a Redis result backend.

    Every task: one PRODUCER span and one CONSUMER span linked to it, nothing twice. The sends Celery makes
    in the worker (the chain's next steps, the chord's callback) are children of the CONSUMER span of the task
    that made them. A canvas shares one correlation ID: the caller's (the group, applied inside
    ``correlate()``), else one fresh ID for the whole canvas (the chain, the chord).
    """
    import redis

    broker = str(request.getfixturevalue(broker_fixture))
    canvases = _run_canvas(otelkit_collector, "canvas", broker, redis_url, queue, pool, concurrency, 3 + 3 + 4)
    sends = [s for s in otelkit_collector.receiver.spans() if s.kind == "PRODUCER"]
    consumers = [s for s in spans_of(otelkit_collector, "celery-worker") if s.kind == "CONSUMER"]
    caller = spans_of(otelkit_collector, "celery-producer")
    worker_spans = spans_of(otelkit_collector, "celery-worker")
    client = redis.Redis.from_url(redis_url)
    client.delete(*[f"celery-task-meta-{s.attributes['messaging.message.id']}" for s in consumers],
                  *[f"celery-task-meta-{v}" for v in canvases.values()])
    client.close()
    # The caller sent the chain's first step, the group's 3 tasks and the chord's 3 header tasks: nothing else
    # (its result subscription and the chord's bookkeeping in the result backend are no spans).
    assert len(caller) == 1 + 3 + 3 and all(s.kind == "PRODUCER" for s in caller), Counter(s.name for s in caller)
    # The worker sent the chain's 2 next steps and the chord's callback; the backend's writes made no span.
    assert Counter(s.kind for s in worker_spans) == Counter(CONSUMER=10, PRODUCER=3), \
        Counter((s.kind, s.name) for s in worker_spans)
    assert len(consumers) == 10 and len(sends) == 10
    in_children = {s.resource.get("process.pid") != canvases["worker_pid"] for s in worker_spans}
    assert in_children == {pool == "prefork"}  # prefork: every span made in a child process
    ids = [s.attributes["messaging.message.id"] for s in sends]
    assert len(set(ids)) == 10 and {s.attributes["messaging.message.id"] for s in consumers} == set(ids)
    send_of = {s.attributes["messaging.message.id"]: s for s in sends}
    consumer_by_span = {s.span_id: s for s in consumers}
    for run in consumers:
        send = send_of[run.attributes["messaging.message.id"]]
        assert run.parent_span_id is None and [link.span_id for link in run.links] == [send.span_id]
        assert run.attributes[CONVERSATION] == send.attributes[CONVERSATION]
    worker_sends = [s for s in worker_spans if s.kind == "PRODUCER"]
    for send in worker_sends:  # made inside a task: the child of its CONSUMER span, in its trace
        parent = consumer_by_span[send.parent_span_id or ""]
        assert send.trace_id == parent.trace_id
        assert send.attributes[CONVERSATION] == parent.attributes[CONVERSATION]
    by_cid: dict[str, list[str]] = {}
    for run in consumers:
        by_cid.setdefault(str(run.attributes[CONVERSATION]), []).append(_task_name(run))
    assert sorted(sorted(v) for v in by_cid.values()) == [["add"] * 3, ["collect", "ok", "ok", "ok"], ["ok"] * 3]
    assert sorted(by_cid["order-canvas-1"]) == ["ok"] * 3  # the group: the caller's correlate() ID
    # The chain: each next step is sent by the previous step's run.
    chain_runs = sorted((s for s in consumers if _task_name(s) == "add"), key=lambda s: s.start_time_unix_nano)
    for earlier, later in zip(chain_runs, chain_runs[1:], strict=False):
        assert send_of[later.attributes["messaging.message.id"]].parent_span_id == earlier.span_id
    assert chain_runs[-1].attributes["messaging.message.id"] == canvases["chain"]
    # The chord: the callback is sent by one of the 3 header runs (the last to finish), in its correlation.
    callback = next(s for s in consumers if _task_name(s) == "collect")
    chord_cid = callback.attributes[CONVERSATION]
    header = [s for s in consumers if s.attributes[CONVERSATION] == chord_cid and _task_name(s) == "ok"]
    assert send_of[callback.attributes["messaging.message.id"]].parent_span_id in {s.span_id for s in header}
    # Every span and log record of the worker carries its canvas's ID.
    cids = set(by_cid)
    assert all(s.attributes.get(CORRELATION_ATTRIBUTE) in cids for s in worker_spans)
    otelkit_collector.receiver.wait_for(
        lambda: len([r for r in otelkit_collector.receiver.logs() if str(r.body).startswith("processing")]) >= 10
        or None, timeout=DEADLINE, message="10 task log records")
    logs = [r for r in otelkit_collector.receiver.logs() if str(r.body).startswith("processing")]
    assert len(logs) == 10
    for record in logs:
        run = consumer_by_span.get(record.span_id or "")
        assert run is not None and record.attributes.get(CORRELATION_ATTRIBUTE) == run.attributes[CONVERSATION]
    assert totals(otelkit_collector, MESSAGES_SETTLED.name, "celery-worker", "otelkit.outcome") == Counter(ack=10)
    assert totals(otelkit_collector, MESSAGE_END_TO_END.name, "celery-worker",
                  "messaging.destination.name") == Counter({queue: 10})


def test_celery_chunks_map_starmap_rabbitmq_prefork(otelkit_collector: RotelCollector, redis_url: str, queue: str,
                                                    rabbitmq_url: str) -> None:
    """``chunks``, ``map`` and ``starmap`` on RabbitMQ with a prefork pool of 2.

    ``add.chunks(6 pairs, 2)`` is a group of 3 ``celery.starmap`` messages: 3 sends, 3 runs, one correlation ID
    shared by the 3 (fresh: none was current). ``map``/``starmap`` are one message each whose calls run inside
    that message's run: 1 send, 1 run, and the calls' log records in that run's span and correlation ID; the
    ``starmap`` was applied inside ``correlate()``: the caller's ID.
    """
    import redis

    applied = _run_canvas(otelkit_collector, "chunks", rabbitmq_url, redis_url, queue, "prefork", 2, 3 + 1 + 1)
    caller = spans_of(otelkit_collector, "celery-producer")
    worker_spans = spans_of(otelkit_collector, "celery-worker")
    consumers = [s for s in worker_spans if s.kind == "CONSUMER"]
    client = redis.Redis.from_url(redis_url)
    client.delete(*[f"celery-task-meta-{s.attributes['messaging.message.id']}" for s in consumers])
    client.close()
    # 5 messages: 5 sends by the caller, 5 runs in the worker, nothing else on either side (the in-process calls
    # of add/ok inside a starmap/map run are no messages, so no spans).
    assert Counter(s.kind for s in caller) == Counter(PRODUCER=5), Counter((s.kind, s.name) for s in caller)
    assert Counter(s.kind for s in worker_spans) == Counter(CONSUMER=5), \
        Counter((s.kind, s.name) for s in worker_spans)
    send_of = {s.attributes["messaging.message.id"]: s for s in caller}
    run_of = {s.attributes["messaging.message.id"]: s for s in consumers}
    assert set(send_of) == set(run_of) == {*applied["chunks"], applied["map"], applied["starmap"]}
    assert len(run_of) == 5
    for task_id, run in run_of.items():
        send = send_of[task_id]
        assert run.parent_span_id is None and [link.span_id for link in run.links] == [send.span_id]
        assert run.attributes[CONVERSATION] == send.attributes[CONVERSATION]
        assert run.attributes[CORRELATION_ATTRIBUTE] == send.attributes[CORRELATION_ATTRIBUTE]
    assert Counter(_task_name(s) for s in consumers) == Counter(starmap=4, map=1)
    assert all(s.resource.get("process.pid") != applied["worker_pid"] for s in consumers)  # the prefork children
    chunk_cids = {run_of[t].attributes[CONVERSATION] for t in applied["chunks"]}
    assert len(chunk_cids) == 1  # the 3 chunks: one canvas, one ID
    map_cid = run_of[applied["map"]].attributes[CONVERSATION]
    assert run_of[applied["starmap"]].attributes[CONVERSATION] == "order-starmap-1"
    assert len(chunk_cids | {map_cid, "order-starmap-1"}) == 3
    # Every call's log record: in its message's run (span and correlation ID), 6 + 3 + 2 of them.
    otelkit_collector.receiver.wait_for(
        lambda: len([r for r in otelkit_collector.receiver.logs() if str(r.body).startswith("processing")]) >= 11
        or None, timeout=DEADLINE, message="11 call log records")
    logs = [r for r in otelkit_collector.receiver.logs() if str(r.body).startswith("processing")]
    assert len(logs) == 11
    by_span = {s.span_id: s for s in consumers}
    calls: Counter[str] = Counter()
    for record in logs:
        run = by_span[record.span_id or ""]
        assert record.attributes.get(CORRELATION_ATTRIBUTE) == run.attributes[CONVERSATION]
        calls[str(run.attributes["messaging.message.id"])] += 1
    assert calls == Counter({**{t: 2 for t in applied["chunks"]}, applied["map"]: 3, applied["starmap"]: 2})
    assert totals(otelkit_collector, MESSAGES_SETTLED.name, "celery-worker", "otelkit.outcome") == Counter(ack=5)
    assert totals(otelkit_collector, MESSAGE_END_TO_END.name, "celery-worker",
                  "messaging.destination.name") == Counter({queue: 5})


class Beat:
    """A real ``celery beat`` process (schedule file in ``tmp``); ``stop()`` ends it warmly so it flushes."""

    def __init__(self, env: dict[str, str], schedule: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_app", "beat", "-s", str(schedule),
                                      "--loglevel", "INFO"], env=env, cwd=str(APPS), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def test_celery_beat(otelkit_collector: RotelCollector, redis_url: str, queue: str, tmp_path: Path) -> None:
    """``celery beat`` with a 0.2 s schedule: each run a PRODUCER span with a correlation ID of its own, continued
    by the worker (a linked CONSUMER span, the same ID on its spans and log records); beat sends nothing else."""
    extra = {"CELERY_TEST_BEAT": "1", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    worker = Worker(_env(otelkit_collector, "celery-worker", redis_url, queue, "otelkit", extra), "solo")
    beat = Beat(_env(otelkit_collector, "celery-beat", redis_url, queue, "otelkit", extra), tmp_path / "schedule")
    receiver = otelkit_collector.receiver
    try:
        try:
            wait_consumer_spans(otelkit_collector, "celery-worker", 3)
        finally:
            beat_output = beat.stop()
        assert beat.proc.returncode == 0, beat_output[-3000:]
        # beat flushed its sends on its way out: the worker must process exactly those (polled, no sleep).
        receiver.wait_for(lambda: len(spans_of(otelkit_collector, "celery-beat")) >= 3 or None, timeout=DEADLINE,
                          message="beat's sends")
        sent = len(spans_of(otelkit_collector, "celery-beat"))
        try:
            wait_consumer_spans(otelkit_collector, "celery-worker", sent)
        except AssertionError as exc:
            seen = Counter((s.resource.get("service.name"), s.kind, s.name) for s in receiver.spans())
            raise AssertionError(f"{exc}\nspans: {seen}\nbeat:\n{beat_output[-3000:]}\n"
                                 f"worker:\n{worker.stop()[-3000:]}") \
                from None
    finally:
        worker.stop()
        _delete_queue(redis_url, queue)
    sends = spans_of(otelkit_collector, "celery-beat")
    assert len(sends) == sent and all(s.kind == "PRODUCER" and s.name == f"send {queue}" for s in sends), \
        Counter((s.kind, s.name) for s in sends)
    assert {s.attributes["celery.beat.entry"] for s in sends} == {"tick"}
    cids = [s.attributes[CONVERSATION] for s in sends]
    assert len(set(cids)) == len(sends)  # a fresh correlation ID per scheduled run
    runs = [s for s in spans_of(otelkit_collector, "celery-worker") if s.kind == "CONSUMER"]
    assert len(runs) == len(sends)
    send_by_span = {s.span_id: s for s in sends}
    for run in runs:
        assert run.parent_span_id is None and len(run.links) == 1
        send = send_by_span[run.links[0].span_id]
        assert run.attributes[CONVERSATION] == send.attributes[CONVERSATION]
        assert run.attributes["messaging.message.id"] == send.attributes["messaging.message.id"]
    receiver.wait_for(lambda: len([r for r in receiver.logs() if str(r.body) == "processing tick"]) >= len(runs)
                      or None, timeout=DEADLINE, message="the runs' log records")
    run_cid = {r.span_id: r.attributes[CONVERSATION] for r in runs}
    logs = [r for r in receiver.logs() if str(r.body) == "processing tick"]
    assert len(logs) == len(runs)
    assert all(r.attributes.get(CORRELATION_ATTRIBUTE) == run_cid[r.span_id or ""] for r in logs)
    assert totals(otelkit_collector, MESSAGES_SETTLED.name, "celery-worker", "otelkit.outcome") == \
        Counter(ack=len(runs))
    assert totals(otelkit_collector, MESSAGING_SENT.name, "celery-beat", "messaging.destination.name") == \
        Counter({queue: len(sends)})
