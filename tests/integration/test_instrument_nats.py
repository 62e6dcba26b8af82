"""nats-py through otelkit's integration, core NATS and JetStream, producer and consumer in two processes.

Neither program calls ``otelkit.pipeline``. Checked at the real rotel collector: spans, links, the
correlation ID on consumer spans and log records, JetStream's stream sequence as message ID on both sides,
delivery count as attempt, ack/nak/term as ack/retry/dead_letter, and the consumer's pending count as depth.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGES_SETTLED, QUEUE_LENGTH
from otelkit.testing._receiver import ReceivedSpan, RotelCollector

APPS = str(Path(__file__).with_name("nats_apps.py"))
TIMEOUT = 90


def _env(collector: RotelCollector, service: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_METRIC_EXPORT_INTERVAL": "60000",
                "OTELKIT_SYSTEM_METRICS": "false"})
    return env


def _run_pair(collector: RotelCollector, args: dict[str, Any], service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    consumer = subprocess.Popen([sys.executable, APPS, "consumer", json.dumps(args)],
                                env=_env(collector, f"{service}-consumer"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None and consumer.stderr is not None
        ready = consumer.stdout.readline()
        assert ready.strip() == "READY", f"consumer did not start: {ready!r} {consumer.stderr.read()[-3000:]}"
        produced = subprocess.run([sys.executable, APPS, "producer", json.dumps(args)],
                                  env=_env(collector, f"{service}-producer"), capture_output=True, text=True,
                                  timeout=TIMEOUT)
        assert produced.returncode == 0, produced.stderr[-3000:]
        stdout, stderr = consumer.communicate(timeout=TIMEOUT)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()
    assert consumer.returncode == 0, stderr[-3000:]
    return json.loads(produced.stdout.strip().splitlines()[-1]), json.loads(stdout.strip().splitlines()[-1])


def _spans(collector: RotelCollector, service: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans() if s.resource.get("service.name") == service]


def _delete_stream(nats_url: str, stream: str) -> None:
    import nats

    async def main() -> None:
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().delete_stream(stream)
        except Exception:  # never created (the consumer failed first)
            pass
        await nc.close()

    asyncio.run(main())


def _check_links(collector: RotelCollector, service: str, subject: str, sends: int, processes: int,
                 ) -> tuple[dict[str, ReceivedSpan], list[ReceivedSpan]]:
    receiver = collector.receiver
    receiver.wait_for(lambda: len([s for s in _spans(collector, f"{service}-consumer")
                                   if s.name == f"process {subject}"]) >= processes
                      and len([s for s in _spans(collector, f"{service}-producer")
                               if s.name == f"send {subject}"]) >= sends, timeout=60)
    send_spans = {s.span_id: s for s in _spans(collector, f"{service}-producer") if s.name == f"send {subject}"}
    consumer_spans = _spans(collector, f"{service}-consumer")
    process_spans = [s for s in consumer_spans if s.name == f"process {subject}"]
    assert len(send_spans) == sends and len(process_spans) == processes
    for process in process_spans:
        assert process.kind == "CONSUMER" and process.parent_span_id is None and len(process.links) == 1
        send = send_spans[process.links[0].span_id]
        assert process.attributes[CORRELATION_ATTRIBUTE] == send.attributes[CORRELATION_ATTRIBUTE]
        assert process.attributes["messaging.system"] == "nats"
    # One layer: the JetStream API requests, acks and replies are not traced as messages.
    others = [s.name for s in consumer_spans + _spans(collector, f"{service}-producer")
              if not s.name.startswith(("send ", "process "))]
    assert others == [], others
    return send_spans, process_spans


@pytest.mark.slow  # the JetStream test covers the same subscribe callback path (and more)
def test_core_nats_publish_subscribe(otelkit_collector: RotelCollector, nats_url: str) -> None:
    subject = f"otelkit-test.core.{uuid.uuid4().hex[:10]}"
    args = {"nats_url": nats_url, "subject": subject, "mode": "core", "count": 3, "deliveries": 3}
    _produced, consumed = _run_pair(otelkit_collector, args, "nats-core")
    assert sorted(s["i"] for s in consumed["seen"]) == [0, 1, 2]
    _sends, processes = _check_links(otelkit_collector, "nats-core", subject, 3, 3)
    # Each message got its own correlation ID at emission, current in the consumer's callback.
    assert len({s["correlation_id"] for s in consumed["seen"]}) == 3
    assert {s["correlation_id"] for s in consumed["seen"]} == {p.attributes[CORRELATION_ATTRIBUTE] for p in processes}


@pytest.mark.parametrize("mode", ["js", "js-pull"])
def test_jetstream_attempts_outcomes_and_depth(mode: str, otelkit_collector: RotelCollector, nats_url: str) -> None:
    """A push subscription (callback) and a pull consumer (``pull_subscribe`` + ``fetch()`` batches)."""
    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"OTELKIT_TEST_{suffix}", f"otelkit-test.js.{suffix}"
    # 6 messages; 1 is nak'd once (redelivered, then acked), 2 is terminated; the consumer stops after
    # 5 deliveries, unsubscribing before it settles the 5th: 2 messages stay pending for the depth sample.
    args = {"nats_url": nats_url, "subject": subject, "stream": stream, "durable": f"otelkit-{suffix}", "mode": mode,
            "count": 6, "deliveries": 5, "behaviour": {"1": "nak-once", "2": "term"}}
    try:
        produced, consumed = _run_pair(otelkit_collector, args, mode)
    finally:
        _delete_stream(nats_url, stream)
    seen = consumed["seen"]
    assert len(seen) == 5 and (1, 2) in {(s["i"], s["delivered"]) for s in seen}
    sends, processes = _check_links(otelkit_collector, mode, subject, 6, 5)
    # The handler's code ran under its message's correlation ID (the producer's), on its log records too.
    by_cid = {p.attributes[CORRELATION_ATTRIBUTE] for p in processes}
    assert {s["correlation_id"] for s in seen} == by_cid and None not in by_cid
    receiver = otelkit_collector.receiver

    def handling_records() -> list[Any] | None:
        records = [r for r in receiver.logs() if r.scope == "natsapp" and str(r.body).startswith("handling")
                   and r.resource.get("service.name") == f"{mode}-consumer"]
        return records if len(records) >= 5 else None

    handled = receiver.wait_for(handling_records, timeout=60)
    cid_of = {(s["i"], s["delivered"]): s["correlation_id"] for s in seen}
    assert sorted(r.attributes.get(CORRELATION_ATTRIBUTE) for r in handled) == sorted(cid_of.values())
    # The stream sequence of the PubAck is the send span's message ID, and the consumer's.
    assert sorted(s.attributes["messaging.message.id"] for s in sends.values()) == sorted(
        str(n) for n in produced["sequences"])
    for process in processes:
        assert process.attributes["messaging.message.id"] == sends[process.links[0].span_id].attributes[
            "messaging.message.id"]
    attempts = sorted((p.attributes["messaging.message.id"], p.attributes["otelkit.message.attempt"])
                      for p in processes)
    assert sorted(a for _id, a in attempts) == [1, 1, 1, 1, 2]
    outcomes: dict[str, int] = {}
    for process in processes:
        outcomes[process.attributes["otelkit.outcome"]] = outcomes.get(process.attributes["otelkit.outcome"], 0) + 1
    # 5 deliveries: 0 acked, 1 nak'd then acked, 2 terminated, and the last one acked after unsubscribing.
    expected = {"ack": 3, "retry": 1, "dead_letter": 1}
    assert outcomes == expected
    receiver.wait_for(lambda: {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
                               if p.attributes.get("messaging.destination.name") == subject} == expected, timeout=60)
    depth = receiver.wait_for(lambda: [p for p in receiver.metrics(QUEUE_LENGTH.name)
                                       if p.attributes.get("messaging.destination.name") == stream], timeout=60)
    # Two messages stay on the stream. A pull consumer may have had one taken by an orphaned pull request (see
    # nats_apps.py): then the server counts it delivered, and the depth must say what the server says.
    pending = 2
    if mode == "js-pull":
        pending = consumed["server"]["pending"]
        assert pending + consumed["server"]["ack_pending"] == 2, consumed["server"]
    assert [p.value for p in depth] == [pending]
    assert depth[0].attributes["messaging.consumer.group.name"] == args["durable"]


def test_jetstream_fetch_batch_hand_over(otelkit_collector: RotelCollector, nats_url: str) -> None:
    """One ``fetch(batch=4)`` returns 4 messages: each gets its own CONSUMER span, outcome and correlation ID.

    Handled in order: 0 acked, 1 nak'd, then while 2 is current 3 is term'd (out of order) and 2 acked; the
    nak'd 1 comes back in a later fetch and is acked. Integration only: the consumer never calls the pipeline.
    """
    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"OTELKIT_BATCH_{suffix}", f"otelkit-test.batch.{suffix}"
    args = {"nats_url": nats_url, "subject": subject, "stream": stream, "durable": f"otelkit-{suffix}",
            "mode": "js-batch", "count": 4, "deliveries": 5}
    try:
        produced, consumed = _run_pair(otelkit_collector, args, "js-batch")
    finally:
        _delete_stream(nats_url, stream)
    batches = [e["batch"] for e in consumed["seen"] if "batch" in e]
    deliveries = [e for e in consumed["seen"] if "i" in e]
    assert batches[0] == 4 and sum(batches) == 5, batches  # the 4 came in one batch; the nak'd one alone
    assert [(e["i"], e["delivered"]) for e in deliveries] == [(0, 1), (1, 1), (2, 1), (3, 1), (1, 2)]
    sends, processes = _check_links(otelkit_collector, "js-batch", subject, 4, 5)
    cid_of_seq = {s.attributes["messaging.message.id"]: s.attributes[CORRELATION_ATTRIBUTE] for s in sends.values()}
    seq_of = {i: str(seq) for i, seq in enumerate(produced["sequences"])}
    # 4 messages, 4 correlation IDs (the producer's, one per publish); each handled under its own.
    assert len(set(cid_of_seq.values())) == 4
    for entry in deliveries:
        if not entry.get("out_of_order"):
            assert entry["correlation_id"] == cid_of_seq[seq_of[entry["i"]]], entry
    # 3 settled out of order did not disturb the hand-over: 2 was still current after it; nothing after the batch.
    assert deliveries[2]["after_early_settle"] == cid_of_seq[seq_of[2]]
    assert [e.get("after_batch") for e in consumed["seen"] if "after_batch" in e] == [None, None]
    by_seq: dict[str, list[ReceivedSpan]] = {}
    for process in processes:
        by_seq.setdefault(process.attributes["messaging.message.id"], []).append(process)
    outcome_of = {seq: sorted((p.attributes["otelkit.message.attempt"], p.attributes["otelkit.outcome"]) for p in spans)
                  for seq, spans in by_seq.items()}
    assert outcome_of == {seq_of[0]: [(1, "ack")], seq_of[1]: [(1, "retry"), (2, "ack")],
                          seq_of[2]: [(1, "ack")], seq_of[3]: [(1, "dead_letter")]}
    for seq, spans in by_seq.items():  # every span carries its own message's ID (the out-of-order one too)
        assert {p.attributes[CORRELATION_ATTRIBUTE] for p in spans} == {cid_of_seq[seq]}
    receiver = otelkit_collector.receiver
    expected = {"ack": 3, "retry": 1, "dead_letter": 1}
    receiver.wait_for(lambda: {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
                               if p.attributes.get("messaging.destination.name") == subject} == expected, timeout=60)
    handled = receiver.wait_for(
        lambda: (r if len(r := [x for x in receiver.logs() if x.scope == "natsapp" and str(x.body).startswith(
            "handling") and x.resource.get("service.name") == "js-batch-consumer"]) >= 4 else None), timeout=60)
    assert len(handled) == 4  # 0, 1, 2 and the redelivered 1 (3 was settled unhandled)
    for record in handled:
        i = int(str(record.body).split()[-1])
        assert record.attributes.get(CORRELATION_ATTRIBUTE) == cid_of_seq[seq_of[i]]
        assert record.span_id in {p.span_id for p in by_seq[seq_of[i]]}


def test_jetstream_pull_nak_with_delay_then_term(otelkit_collector: RotelCollector, nats_url: str) -> None:
    """A pull consumer: message 0 is nak'd with a redelivery delay (``nak(delay=0.2)``), comes back as attempt 2
    and is terminated; message 1 is acked. Each delivery its own span: retry (attempt 1), dead letter (attempt 2),
    ack; the settled counts at the real collector are exactly those, under each message's correlation ID."""
    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"OTELKIT_NAKDELAY_{suffix}", f"otelkit-test.nakdelay.{suffix}"
    args = {"nats_url": nats_url, "subject": subject, "stream": stream, "durable": f"otelkit-{suffix}",
            "mode": "js-pull", "count": 2, "deliveries": 3, "behaviour": {"0": "nak-delay-then-term"}}
    try:
        produced, consumed = _run_pair(otelkit_collector, args, "js-nakdelay")
    finally:
        _delete_stream(nats_url, stream)
    seen = consumed["seen"]
    assert sorted((s["i"], s["delivered"]) for s in seen) == [(0, 1), (0, 2), (1, 1)]
    sends, processes = _check_links(otelkit_collector, "js-nakdelay", subject, 2, 3)
    seq_of = {i: str(seq) for i, seq in enumerate(produced["sequences"])}
    cid_of_seq = {s.attributes["messaging.message.id"]: s.attributes[CORRELATION_ATTRIBUTE] for s in sends.values()}
    assert len(set(cid_of_seq.values())) == 2
    got = sorted((p.attributes["messaging.message.id"], p.attributes["otelkit.message.attempt"],
                  p.attributes["otelkit.outcome"], p.attributes.get("otelkit.outcome.reason"), p.status)
                 for p in processes)
    assert got == sorted([(seq_of[0], 1, "retry", "msg.nak()", "UNSET"),
                          (seq_of[0], 2, "dead_letter", "msg.term()", "ERROR"),
                          (seq_of[1], 1, "ack", None, "UNSET")]), got
    for process in processes:  # each delivery under its own message's correlation ID, linked to its send
        seq = process.attributes["messaging.message.id"]
        assert process.attributes[CORRELATION_ATTRIBUTE] == cid_of_seq[seq]
        assert sends[process.links[0].span_id].attributes["messaging.message.id"] == seq
    assert sorted((s["i"], s["correlation_id"]) for s in seen) == sorted(
        [(0, cid_of_seq[seq_of[0]]), (0, cid_of_seq[seq_of[0]]), (1, cid_of_seq[seq_of[1]])])
    receiver = otelkit_collector.receiver
    expected = {"ack": 1, "retry": 1, "dead_letter": 1}
    receiver.wait_for(lambda: {p.attributes["otelkit.outcome"]: p.value for p in receiver.metrics(MESSAGES_SETTLED.name)
                               if p.attributes.get("messaging.destination.name") == subject} == expected, timeout=60)
    handled = receiver.wait_for(
        lambda: (r if len(r := [x for x in receiver.logs() if x.scope == "natsapp" and str(x.body).startswith(
            "handling") and x.resource.get("service.name") == "js-nakdelay-consumer"]) >= 3 else None), timeout=60)
    assert len(handled) == 3
    span_of = {p.span_id: p for p in processes}
    for record in handled:  # in its delivery's span, under its message's correlation ID
        i = int(str(record.body).split()[-1])
        assert record.attributes.get(CORRELATION_ATTRIBUTE) == cid_of_seq[seq_of[i]]
        assert span_of[record.span_id or ""].attributes["messaging.message.id"] == seq_of[i]
