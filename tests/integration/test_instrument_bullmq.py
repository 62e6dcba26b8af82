"""BullMQ: Python (PyPI ``bullmq``, otelkit.init() alone) and Node (``bullmq-otel``) continue each other's traces.

Real processes, the real Redis, the real rotel collector: the Node programs export OTLP to the same
collector as the Python ones. The Node app lives in tests/integration/node (package.json +
package-lock.json); ``npm ci`` installs it when node_modules is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from otelkit._names import CORRELATION_ATTRIBUTE
from otelkit.testing._receiver import ReceivedSpan, RotelCollector
from tests.conftest import missing

NODE_DIR = Path(__file__).with_name("node")
APPS = str(Path(__file__).with_name("pipeline_interop_apps.py"))
PROCESS_TIMEOUT = 90
NPM_TIMEOUT = 300


@pytest.fixture(scope="module")
def node_app() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing("node and npm are needed for the BullMQ interop test (Node.js 18+)")
    if not (NODE_DIR / "node_modules" / "bullmq-otel").is_dir():
        try:
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                                  text=True, timeout=NPM_TIMEOUT)
        except subprocess.TimeoutExpired:
            missing(f"npm ci did not finish within {NPM_TIMEOUT} s (no npm registry?)")
        if proc.returncode != 0:
            missing(f"npm ci failed in {NODE_DIR}:\n{proc.stderr[-2000:]}")
    return NODE_DIR / "bullmq_app.js"


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = f"otelkit-bullmq-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"bull:{name}:*", count=500))
    if keys:
        client.delete(*keys)  # only this test's queue
    client.close()


def _env(collector: RotelCollector, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
    return env


def python(role: str, args: dict[str, Any], collector: RotelCollector, service: str) -> dict[str, Any]:
    env = _env(collector, service)
    env.pop("OTEL_METRICS_EXPORTER")
    env.pop("OTEL_LOGS_EXPORTER")
    proc = subprocess.run([sys.executable, APPS, role, json.dumps(args)], env=env, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, f"{role} failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def node(app: Path, role: str, args: dict[str, Any], collector: RotelCollector, service: str) -> dict[str, Any]:
    proc = subprocess.run(["node", str(app), role, json.dumps(args)], env=_env(collector, service), cwd=app.parent,
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, f"node {role} failed:\n{proc.stdout}\n{proc.stderr}"
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def spans(collector: RotelCollector, service: str, name: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans(name) if s.resource.get("service.name") == service]


def _redis_args(redis_url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(redis_url)
    kwargs = client.connection_pool.connection_kwargs
    client.close()
    return {"host": kwargs.get("host", "127.0.0.1"), "port": kwargs.get("port", 6379)}


def test_node_producer_to_python_consumer(node_app: Path, otelkit_collector: RotelCollector, redis_url: str,
                                          queue: str) -> None:
    tag = uuid.uuid4().hex[:6]
    cid = f"node-{tag}"
    produced = node(node_app, "produce", {"redis": _redis_args(redis_url), "queue": queue, "correlation_id": cid},
                    otelkit_collector, f"node-producer-{tag}")
    consumed = python("bullmq_consumer", {"redis_url": redis_url, "queue": queue, "count": 1}, otelkit_collector,
                      f"py-consumer-{tag}")
    (job,) = consumed["jobs"]
    assert job["job_id"] == produced["job_id"]
    assert job["correlation_id"] == cid  # adopted from the Node producer's baggage

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")
                      and spans(otelkit_collector, f"node-producer-{tag}", f"add {queue}.enrich"), timeout=60)
    (add,) = spans(otelkit_collector, f"node-producer-{tag}", f"add {queue}.enrich")
    (process,) = spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")
    assert add.trace_id == produced["trace_id"]
    assert [(link.trace_id, link.span_id) for link in process.links] == [(add.trace_id, add.span_id)]
    assert (process.trace_id, process.span_id) == (job["trace_id"], job["span_id"])
    assert process.kind == "CONSUMER"
    assert process.attributes["messaging.system"] == "bullmq"
    assert process.attributes["messaging.message.id"] == produced["job_id"]
    assert process.attributes["otelkit.message.attempt"] == 1
    assert process.attributes["messaging.bullmq.job.name"] == "enrich"
    assert (process.attributes["server.address"], process.attributes["server.port"]) == (
        _redis_args(redis_url)["host"], _redis_args(redis_url)["port"])
    assert process.attributes[CORRELATION_ATTRIBUTE] == cid
    receiver.wait_for(lambda: [r for r in receiver.logs() if r.trace_id == process.trace_id], timeout=60)
    (line,) = [r for r in receiver.logs() if r.trace_id == process.trace_id]
    assert line.attributes[CORRELATION_ATTRIBUTE] == cid
    # a Node job has no otelkit send time: BullMQ's job timestamp dates it
    latency = receiver.wait_for(lambda: [p for p in receiver.metrics("otelkit.messaging.message.end_to_end.duration")
                                         if p.attributes.get("messaging.destination.name") == queue], timeout=60)
    assert sum(p.count or 0 for p in latency) == 1
    # the worker's polling is housekeeping: not one redis span from the consumer process
    assert not [s for s in receiver.spans() if s.resource.get("service.name") == f"py-consumer-{tag}"
                and s.name != f"process {queue}"]


def test_python_producer_to_node_consumer(node_app: Path, otelkit_collector: RotelCollector, redis_url: str,
                                          queue: str) -> None:
    tag = uuid.uuid4().hex[:6]
    produced = python("bullmq_producer", {"redis_url": redis_url, "queue": queue}, otelkit_collector,
                      f"py-producer-{tag}")
    consumed = node(node_app, "consume", {"redis": _redis_args(redis_url), "queue": queue, "count": 1},
                    otelkit_collector, f"node-consumer-{tag}")
    (job,) = consumed["jobs"]
    assert job["job_id"] == produced["job_id"]
    assert job["correlation_id"] == produced["correlation_id"]  # otelkit's baggage reached the Node worker

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: spans(otelkit_collector, f"node-consumer-{tag}", f"process {queue}")
                      and spans(otelkit_collector, f"py-producer-{tag}", f"send {queue}"), timeout=60)
    (send,) = spans(otelkit_collector, f"py-producer-{tag}", f"send {queue}")
    (process,) = spans(otelkit_collector, f"node-consumer-{tag}", f"process {queue}")
    assert send.kind == "PRODUCER"
    assert send.attributes["messaging.message.id"] == produced["job_id"]
    assert send.attributes["server.port"] == _redis_args(redis_url)["port"]
    assert send.attributes[CORRELATION_ATTRIBUTE] == produced["correlation_id"]
    # bullmq-otel makes its consumer span a child of the context it finds in the job: otelkit's send span
    assert (process.trace_id, process.parent_span_id) == (send.trace_id, send.span_id)
    assert job["trace_id"] == send.trace_id
    # the job's EVALSHA is the send itself: no redis span of its own in the producer
    assert not [s for s in receiver.spans() if s.resource.get("service.name") == f"py-producer-{tag}"
                and s.attributes.get("db.system.name") == "redis"]


def test_python_to_python_retry_outcomes(otelkit_collector: RotelCollector, redis_url: str, queue: str) -> None:
    tag = uuid.uuid4().hex[:6]
    produced = python("bullmq_producer", {"redis_url": redis_url, "queue": queue}, otelkit_collector,
                      f"py-producer-{tag}")
    consumed = python("bullmq_consumer", {"redis_url": redis_url, "queue": queue, "count": 2, "fail_first": True},
                      otelkit_collector, f"py-consumer-{tag}")
    assert [j["correlation_id"] for j in consumed["jobs"]] == [produced["correlation_id"]] * 2

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")) == 2, timeout=60)
    process = sorted(spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}"),
                     key=lambda s: s.start_time_unix_nano)
    assert [s.attributes["otelkit.message.attempt"] for s in process] == [1, 2]
    assert [s.attributes["otelkit.outcome"] for s in process] == ["retry", "ack"]
    (send,) = spans(otelkit_collector, f"py-producer-{tag}", f"send {queue}")
    for span in process:
        assert [(link.trace_id, link.span_id) for link in span.links] == [(send.trace_id, send.span_id)]
    settled = receiver.wait_for(lambda: [p for p in receiver.metrics("otelkit.messaging.settled.messages")
                                         if p.attributes.get("messaging.destination.name") == queue], timeout=60)
    assert {p.attributes["otelkit.outcome"]: p.value for p in settled} == {"retry": 1, "ack": 1}


def _check_batch_sends(collector: RotelCollector, service: str, queue: str,
                       produced: dict[str, Any]) -> dict[str, ReceivedSpan]:
    """addBulk and the flow: one send per job, siblings under the caller's span; the flow shares one ID."""
    everything = [s for s in collector.receiver.spans() if s.resource.get("service.name") == service]
    sends = [s for s in everything if s.kind == "PRODUCER"]
    (batch,) = [s for s in everything if s.name == "batch"]
    assert len(sends) == 6 and len(everything) == 7  # no redis span: the batch's script is these sends
    assert {s.name for s in sends} == {f"send {queue}"}
    assert {s.parent_span_id for s in sends} == {batch.span_id}
    by_job = {s.attributes["messaging.message.id"]: s for s in sends}
    assert set(by_job) == set(produced["bulk"] + produced["flow"])
    bulk_cids = {by_job[j].attributes[CORRELATION_ATTRIBUTE] for j in produced["bulk"]}
    flow_cids = {by_job[j].attributes[CORRELATION_ATTRIBUTE] for j in produced["flow"]}
    assert len(bulk_cids) == 3 and len(flow_cids) == 1 and not bulk_cids & flow_cids
    return by_job


def test_python_add_bulk_and_flow_to_python(otelkit_collector: RotelCollector, redis_url: str, queue: str) -> None:
    """Queue.addBulk and FlowProducer.add (PyPI bullmq) into an otelkit worker: 6 sends, 6 linked runs."""
    tag = uuid.uuid4().hex[:6]
    produced = python("bullmq_batch_producer", {"redis_url": redis_url, "queue": queue}, otelkit_collector,
                      f"py-producer-{tag}")
    consumed = python("bullmq_consumer", {"redis_url": redis_url, "queue": queue, "count": 6}, otelkit_collector,
                      f"py-consumer-{tag}")
    assert len(consumed["jobs"]) == 6
    assert consumed["jobs"][-1]["job_id"] == produced["flow"][0]  # the flow's parent runs after its children
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")) >= 6
                      and len(spans(otelkit_collector, f"py-producer-{tag}", f"send {queue}")) >= 6, timeout=60)
    by_job = _check_batch_sends(otelkit_collector, f"py-producer-{tag}", queue, produced)
    runs = spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")
    assert len(runs) == 6
    for run in runs:
        send = by_job[run.attributes["messaging.message.id"]]
        assert run.parent_span_id is None
        assert [(link.trace_id, link.span_id) for link in run.links] == [(send.trace_id, send.span_id)]
        assert run.attributes[CORRELATION_ATTRIBUTE] == send.attributes[CORRELATION_ATTRIBUTE]
        assert run.attributes["otelkit.outcome"] == "ack"
    assert {j["correlation_id"] for j in consumed["jobs"]} == {s.attributes[CORRELATION_ATTRIBUTE] for s in runs}
    receiver.wait_for(lambda: len([r for r in receiver.logs() if str(r.body).startswith("processing job")]) >= 6,
                      timeout=60)
    run_by_span = {s.span_id: s for s in runs}
    records = [r for r in receiver.logs() if str(r.body).startswith("processing job")]
    assert len(records) == 6
    assert all(r.attributes[CORRELATION_ATTRIBUTE] == run_by_span[r.span_id or ""].attributes[CORRELATION_ATTRIBUTE]
               for r in records)
    settled = receiver.wait_for(lambda: [p for p in receiver.metrics("otelkit.messaging.settled.messages")
                                         if p.attributes.get("messaging.destination.name") == queue], timeout=60)
    assert {p.attributes["otelkit.outcome"]: p.value for p in settled} == {"ack": 6}


def test_python_add_bulk_and_flow_to_node(node_app: Path, otelkit_collector: RotelCollector, redis_url: str,
                                          queue: str) -> None:
    """The same batch consumed by a Node worker with bullmq-otel: each process span the child of its send."""
    tag = uuid.uuid4().hex[:6]
    produced = python("bullmq_batch_producer", {"redis_url": redis_url, "queue": queue}, otelkit_collector,
                      f"py-producer-{tag}")
    consumed = node(node_app, "consume", {"redis": _redis_args(redis_url), "queue": queue, "count": 6},
                    otelkit_collector, f"node-consumer-{tag}")
    assert len(consumed["jobs"]) == 6
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(spans(otelkit_collector, f"node-consumer-{tag}", f"process {queue}")) >= 6
                      and len(spans(otelkit_collector, f"py-producer-{tag}", f"send {queue}")) >= 6, timeout=60)
    by_job = _check_batch_sends(otelkit_collector, f"py-producer-{tag}", queue, produced)
    runs = {(s.trace_id, s.span_id): s for s in spans(otelkit_collector, f"node-consumer-{tag}", f"process {queue}")}
    assert len(runs) == 6
    for job in consumed["jobs"]:
        send = by_job[job["job_id"]]
        run = runs[(job["trace_id"], job["span_id"])]
        assert (run.trace_id, run.parent_span_id) == (send.trace_id, send.span_id)
        assert job["correlation_id"] == send.attributes[CORRELATION_ATTRIBUTE]  # otelkit's baggage reached Node


def test_node_add_bulk_and_flow_to_python(node_app: Path, otelkit_collector: RotelCollector, redis_url: str,
                                          queue: str) -> None:
    """Node's addBulk (one ``addBulk`` span for the batch) and FlowProducer (one ``addNode`` span per node) into
    an otelkit worker: each run linked to the span whose context its job carries, the Node baggage's ID adopted."""
    tag = uuid.uuid4().hex[:6]
    cid = f"node-batch-{tag}"
    produced = node(node_app, "produce_batch", {"redis": _redis_args(redis_url), "queue": queue, "correlation_id": cid},
                    otelkit_collector, f"node-producer-{tag}")
    consumed = python("bullmq_consumer", {"redis_url": redis_url, "queue": queue, "count": 6}, otelkit_collector,
                      f"py-consumer-{tag}")
    assert [j["correlation_id"] for j in consumed["jobs"]] == [cid] * 6
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")) >= 6
                      and spans(otelkit_collector, f"node-producer-{tag}", f"addFlow {queue}"), timeout=60)
    (bulk,) = spans(otelkit_collector, f"node-producer-{tag}", f"addBulk {queue}")
    nodes = {s.attributes["bullmq.job.id"]: s for s in spans(otelkit_collector, f"node-producer-{tag}",
                                                            f"addNode {queue}")}
    assert set(nodes) == set(produced["flow"])
    runs = spans(otelkit_collector, f"py-consumer-{tag}", f"process {queue}")
    assert len(runs) == 6
    for run in runs:
        job_id = run.attributes["messaging.message.id"]
        sent = bulk if job_id in produced["bulk"] else nodes[job_id]
        assert run.parent_span_id is None
        assert [(link.trace_id, link.span_id) for link in run.links] == [(sent.trace_id, sent.span_id)]
        assert run.attributes[CORRELATION_ATTRIBUTE] == cid
    receiver.wait_for(lambda: len([r for r in receiver.logs() if str(r.body).startswith("processing job")]) >= 6,
                      timeout=60)
    records = [r for r in receiver.logs() if str(r.body).startswith("processing job")]
    assert len(records) == 6 and all(r.attributes[CORRELATION_ATTRIBUTE] == cid for r in records)
    assert not [s for s in receiver.spans() if s.resource.get("service.name") == f"py-consumer-{tag}"
                and s.name != f"process {queue}"]
