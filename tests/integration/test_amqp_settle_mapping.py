"""pika and aio-pika on the real RabbitMQ: which delivery each settle, span and correlation ID belongs to.

In-process (``otelkit_capture`` with the pika / aio-pika integration): the publishes and the consumers run in
this test, every span, link, outcome, metric point and log record is counted exactly.

* Two channels on one pika connection, two consumers: delivery tags are per channel (tag 1 exists on both), so
  each ``basic_ack``/``basic_nack``/``basic_reject`` must settle the delivery of ITS channel: batched
  ``basic_ack(multiple=True)``, ``basic_reject(requeue=True)`` then redelivery (attempt 2),
  ``basic_nack(requeue=False)`` / ``basic_reject(requeue=False)`` → dead letter (and the message really reaches
  the dead-letter queue). The same with two ``basic_get`` messages held open at once, both with tag 1.
* ``pipeline.receive`` inside a pulled message's scope: adopted only when it is that message (same system, and
  the same destination or the message's own headers); another system or another message is its own nested
  reception, and the pulled message is still current after it.
* aio-pika ``queue.iterator()`` closed while the message it returned is unsettled (break out of ``async for``,
  the iterator's context exit, a close from another task while an application ``receive`` adopted it): the
  span ends once as ``retry`` (RabbitMQ requeues it), and nothing stays current after the loop.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import otelkit
from otelkit._names import CORRELATION_ATTRIBUTE, MESSAGES_SETTLED

log = logging.getLogger("amqpsettle")
DEADLINE = 30.0


def _queue(tag: str) -> str:
    return f"otelkit-settle-{tag}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pika_connection(rabbitmq_url: str) -> Iterator[Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


def _cleanup(rabbitmq_url: str, queues: list[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


def _ready(rabbitmq_url: str, queue: str) -> int:
    """Ready messages in ``queue`` (a passive declare: not a traced operation)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        return int(connection.channel().queue_declare(queue=queue, passive=True).method.message_count)
    finally:
        connection.close()


def _poll(what: Callable[[], bool], message: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)  # polled with the deadline above


def _settled(capture: Any, destination: str) -> dict[str, int]:
    return {str(p.attributes["otelkit.outcome"]): int(p.value or 0)
            for p in capture.metric_points(MESSAGES_SETTLED.name, **{"messaging.destination.name": destination})}


def _hex(span: Any) -> str:
    return format(span.context.span_id, "016x")


def _publish(channel: Any, queue: str, count: int, prefix: str) -> dict[int, str]:
    """``count`` messages ``{"i": i}`` with an AMQP correlation_id each (adopted by the send span); their IDs."""
    import pika

    cids = {i: f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)}
    for i in range(count):
        channel.basic_publish(exchange="", routing_key=queue, body=json.dumps({"i": i}).encode(),
                              properties=pika.BasicProperties(correlation_id=cids[i]))
    return cids


@pytest.mark.otelkit(instrument=["pika"])
def test_pika_two_channels_two_consumers_settle_their_own_deliveries(
        otelkit_capture: Any, pika_connection: Any, rabbitmq_url: str) -> None:
    """Queue A on channel A: a0 and a1 held, a2 acks all three (``multiple=True``), a3 rejected with requeue, its
    redelivery (attempt 2, tag 5) held. Then queue B on channel B: b0 ``basic_nack(requeue=False)``, b1 and b3
    acked, b2 ``basic_reject(requeue=False)``, b4 (tag 5 too) ``basic_reject(requeue=False)`` and then acks the
    held a3 on channel A: that ack is A's tag 5, not b4's. b0, b2, b4 are dead-lettered into queue D."""
    qa, qb, qd = _queue("a"), _queue("b"), _queue("dead")
    ch_a, ch_b = pika_connection.channel(), pika_connection.channel()
    ch_a.queue_declare(queue=qa)
    ch_a.queue_declare(queue=qd)
    ch_b.queue_declare(queue=qb, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": qd})
    try:
        cid_a, cid_b = _publish(ch_a, qa, 4, "a"), _publish(ch_b, qb, 5, "b")
        seen: list[dict[str, Any]] = []
        held: list[int] = []

        def on_a(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            i = json.loads(body)["i"]
            seen.append({"q": "a", "i": i, "tag": method.delivery_tag, "redelivered": method.redelivered,
                         "cid": properties.correlation_id, "current": otelkit.correlation_id()})
            log.warning("handling a %d", i)
            if i == 2:
                channel.basic_ack(delivery_tag=method.delivery_tag, multiple=True)
            elif i == 3 and not method.redelivered:
                channel.basic_reject(delivery_tag=method.delivery_tag, requeue=True)
            else:
                held.append(method.delivery_tag)  # a0, a1: acked by a2's multiple ack; a3's redelivery: by b4

        def on_b(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            i = json.loads(body)["i"]
            seen.append({"q": "b", "i": i, "tag": method.delivery_tag, "redelivered": method.redelivered,
                         "cid": properties.correlation_id, "current": otelkit.correlation_id()})
            log.warning("handling b %d", i)
            if i == 0:
                channel.basic_nack(delivery_tag=method.delivery_tag, multiple=False, requeue=False)
            elif i in (1, 3):
                channel.basic_ack(method.delivery_tag)
            elif i == 2:
                channel.basic_reject(method.delivery_tag, requeue=False)
            else:
                channel.basic_reject(method.delivery_tag, requeue=False)
                assert held[-1] == method.delivery_tag == 5  # the same tag on the other channel
                ch_a.basic_ack(held[-1])

        def run(count: int) -> None:
            deadline = time.monotonic() + DEADLINE
            while len(seen) < count and time.monotonic() < deadline:
                pika_connection.process_data_events(time_limit=0.2)
            assert len(seen) == count, seen

        ch_a.basic_qos(prefetch_count=10)
        ch_b.basic_qos(prefetch_count=10)
        ch_a.basic_consume(qa, on_a)
        run(5)
        ch_b.basic_consume(qb, on_b)  # two consumers, two channels, one connection
        run(10)
        ch_a.close()
        ch_b.close()
        _poll(lambda: _ready(rabbitmq_url, qd) == 3, "b0, b2 and b4 never reached the dead-letter queue")
        assert _ready(rabbitmq_url, qa) == 0 and _ready(rabbitmq_url, qb) == 0  # everything else really acked
    finally:
        _cleanup(rabbitmq_url, [qa, qb, qd])
    # Tags collide across channels (1, 2, 3 on both): the mapping below is by channel.
    assert [s["tag"] for s in seen if s["q"] == "a"] == [1, 2, 3, 4, 5]
    assert [s["tag"] for s in seen if s["q"] == "b"] == [1, 2, 3, 4, 5]
    # The handler ran under its own message's correlation ID (the publisher's AMQP correlation_id).
    assert all(s["current"] == s["cid"] == (cid_a if s["q"] == "a" else cid_b)[s["i"]] for s in seen), seen

    spans = otelkit_capture.spans
    sends = {_hex(s): s for s in spans if s.name in (f"send {qa}", f"send {qb}")}
    assert len(sends) == 9
    processes = [s for s in spans if s.name in (f"process {qa}", f"process {qb}")]
    assert len(processes) == 10 and len(spans) == 19, spans.names()
    got = sorted((s.name.split()[-1], s.attributes[CORRELATION_ATTRIBUTE], s.attributes["otelkit.message.attempt"],
                  s.attributes["otelkit.outcome"], s.attributes.get("otelkit.outcome.reason"),
                  s.status.status_code.name) for s in processes)
    assert got == sorted([
        # held, then acked after the callback (a2's multiple=True; b4 on channel A): the callback's default, ack
        (qa, cid_a[0], 1, "ack", None, "UNSET"),
        (qa, cid_a[1], 1, "ack", None, "UNSET"),
        (qa, cid_a[2], 1, "ack", None, "UNSET"),
        (qa, cid_a[3], 1, "retry", "basic_reject(requeue=True)", "UNSET"),
        (qa, cid_a[3], 2, "ack", None, "UNSET"),
        (qb, cid_b[0], 1, "dead_letter", "basic_nack(requeue=False)", "ERROR"),
        (qb, cid_b[1], 1, "ack", None, "UNSET"),
        (qb, cid_b[2], 1, "dead_letter", "basic_reject(requeue=False)", "ERROR"),
        (qb, cid_b[3], 1, "ack", None, "UNSET"),
        (qb, cid_b[4], 1, "dead_letter", "basic_reject(requeue=False)", "ERROR"),
    ]), got
    for process in processes:  # each linked to its own message's send span, tagged with its channel's tag
        assert [sends[format(link.context.span_id, "016x")].attributes[CORRELATION_ATTRIBUTE]
                for link in process.links] == [process.attributes[CORRELATION_ATTRIBUTE]]
    by_delivery = {(s["q"], s["i"], s["redelivered"]): s["tag"] for s in seen}
    assert sorted(p.attributes["messaging.rabbitmq.message.delivery_tag"] for p in processes) == sorted(
        by_delivery.values())
    assert _settled(otelkit_capture, qa) == {"ack": 4, "retry": 1}
    assert _settled(otelkit_capture, qb) == {"ack": 2, "dead_letter": 3}
    records = [r for r in otelkit_capture.logs if str(r.body).startswith("handling ")]
    assert len(records) == 10
    span_of = {_hex(p): p for p in processes}
    for record in records:  # in its delivery's span, under its message's correlation ID
        _h, q, i = str(record.body).split()
        cid = (cid_a if q == "a" else cid_b)[int(i)]
        assert record.attributes.get(CORRELATION_ATTRIBUTE) == cid
        assert span_of[record.span_id or ""].attributes[CORRELATION_ATTRIBUTE] == cid


@pytest.mark.otelkit(instrument=["pika"])
def test_pika_basic_get_on_two_channels_same_tag(otelkit_capture: Any, pika_connection: Any,
                                                 rabbitmq_url: str) -> None:
    """Two ``basic_get`` messages held open at once, both delivery tag 1 (one per channel): channel B's
    ``basic_ack(1)`` ends only B's span; channel A's ``basic_nack(1, requeue=False)`` dead-letters only A's."""
    from otelkit import correlation_id

    qa, qb, qd = _queue("ga"), _queue("gb"), _queue("gdead")
    ch_a, ch_b = pika_connection.channel(), pika_connection.channel()
    ch_a.queue_declare(queue=qd)
    ch_a.queue_declare(queue=qa, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": qd})
    ch_b.queue_declare(queue=qb)
    try:
        cid_a, cid_b = _publish(ch_a, qa, 1, "ga"), _publish(ch_b, qb, 1, "gb")
        method_a = method_b = None
        deadline = time.monotonic() + DEADLINE
        while method_a is None and time.monotonic() < deadline:
            method_a, _props, _body = ch_a.basic_get(qa)
        assert method_a is not None and correlation_id() == cid_a[0]
        while method_b is None and time.monotonic() < deadline:
            method_b, _props, _body = ch_b.basic_get(qb)
        assert method_b is not None and correlation_id() == cid_b[0]
        assert method_a.delivery_tag == method_b.delivery_tag == 1
        ch_b.basic_ack(1)
        names = [s.name for s in otelkit_capture.spans if s.name.startswith("process ")]
        assert names == [f"process {qb}"]  # A's message (tag 1 on channel A) is still open, and current again
        assert correlation_id() == cid_a[0]
        ch_a.basic_nack(1, requeue=False)
        assert correlation_id() is None  # both settled: nothing current
        _poll(lambda: _ready(rabbitmq_url, qd) == 1, "A's message never reached the dead-letter queue")
        ch_a.close()
        ch_b.close()
    finally:
        _cleanup(rabbitmq_url, [qa, qb, qd])
    processes = {s.name: s for s in otelkit_capture.spans if s.name.startswith("process ")}
    assert sorted(processes) == sorted([f"process {qa}", f"process {qb}"])
    assert processes[f"process {qa}"].attributes["otelkit.outcome"] == "dead_letter"
    assert processes[f"process {qa}"].attributes[CORRELATION_ATTRIBUTE] == cid_a[0]
    assert processes[f"process {qb}"].attributes["otelkit.outcome"] == "ack"
    assert processes[f"process {qb}"].attributes[CORRELATION_ATTRIBUTE] == cid_b[0]
    assert _settled(otelkit_capture, qa) == {"dead_letter": 1}
    assert _settled(otelkit_capture, qb) == {"ack": 1}


def _current_span_id() -> str:
    from opentelemetry import trace

    return format(trace.get_current_span().get_span_context().span_id, "016x")


@pytest.mark.otelkit(instrument=["pika"])
def test_receive_inside_a_pulled_message_adopts_only_that_message(
        otelkit_capture: Any, pika_connection: Any, rabbitmq_url: str) -> None:
    """Six ``basic_get`` messages, one application ``pipeline.receive`` inside each (then ``basic_ack``):

    0. the message's headers but ``system="nats"``: another system, its own span;
    1. another destination and another message's headers: its own span (its retry is its own outcome);
    2. another destination (the queue name differs from the routing key...) with the message's own headers: adopted;
    3. another destination, no headers: its own span, under the pulled message's correlation ID (the current one);
    4. the same destination, no headers: adopted;
    5. the same destination, another message's headers (another ``traceparent``): its own span.

    After each nested block of its own the pulled message is current again (its span and correlation ID); an
    adopting block's end settles it (documented: its outcome, ack), and the ``basic_ack`` after adds nothing."""
    from otelkit import pipeline

    queue, other = _queue("nest"), _queue("other")
    channel = pika_connection.channel()
    channel.queue_declare(queue=queue)
    try:
        cids = _publish(channel, queue, 6, "nest")
        other_headers: dict[str, Any] = {}
        with pipeline.emit(other, other_headers, system="rabbitmq", correlation_id="other-cid"):
            pass
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + DEADLINE
        while len(seen) < 6 and time.monotonic() < deadline:
            method, properties, body = channel.basic_get(queue)
            if method is None:
                continue
            i = json.loads(body)["i"]
            pulled = _current_span_id()
            entry: dict[str, Any] = {"i": i, "pulled": pulled}
            destination = {0: queue, 1: other, 2: other, 3: other, 4: queue, 5: queue}[i]
            carrier = {0: properties.headers, 1: other_headers, 2: properties.headers, 5: other_headers}.get(i)
            system = "nats" if i == 0 else "rabbitmq"
            with pipeline.receive(destination, carrier, system=system) as msg:
                entry.update(inside=_current_span_id(), cid=msg.correlation_id, current_cid=otelkit.correlation_id())
                log.warning("nested %d", i)
                if i == 1:
                    msg.retry("the other message's own outcome")
            entry.update(after=_current_span_id(), after_cid=otelkit.correlation_id(), outcome=msg.outcome)
            channel.basic_ack(method.delivery_tag)
            entry["settled_cid"] = otelkit.correlation_id()
            seen.append(entry)
        assert len(seen) == 6
        channel.close()
    finally:
        _cleanup(rabbitmq_url, [queue])
    by_i = {s["i"]: s for s in seen}
    adopted = {2, 4}
    for i, s in by_i.items():
        assert (s["inside"] == s["pulled"]) == (i in adopted), (i, s)
        if i in adopted:  # the adopting block's end settled the pulled message (ack): nothing is current
            assert s["after"] == "0" * 16 and s["after_cid"] is None, (i, s)
        else:  # a nested reception of its own: the pulled message is current again
            assert s["after"] == s["pulled"] and s["after_cid"] == cids[i], (i, s)
        assert s["settled_cid"] is None  # and nothing once it is settled
    assert by_i[1]["cid"] == by_i[5]["cid"] == "other-cid"  # another message: its own correlation ID
    assert [by_i[i]["cid"] for i in (0, 2, 3, 4)] == [cids[i] for i in (0, 2, 3, 4)]
    assert [by_i[i]["outcome"] for i in range(6)] == ["ack", "retry", "ack", "ack", "ack", "ack"]
    spans = otelkit_capture.spans
    processes = [s for s in spans if s.name.startswith("process ")]
    span_of = {_hex(s): s for s in processes}
    # 6 pulled messages + 4 nested receptions of their own (0, 1, 3, 5); 2 and 4 made no span.
    assert len(processes) == 10
    assert sorted(s.name for s in spans if s.name.startswith("send ")) == sorted([f"send {queue}"] * 6 + [
        f"send {other}"])
    for i, s in by_i.items():
        pulled = span_of[s["pulled"]]
        assert pulled.attributes[CORRELATION_ATTRIBUTE] == cids[i] and pulled.attributes["otelkit.outcome"] == "ack"
        if i in adopted:
            continue
        nested = span_of[s["inside"]]
        assert nested.parent is None or nested.parent.span_id != pulled.context.span_id  # a root of its own
        assert nested.attributes["messaging.system"] == ("nats" if i == 0 else "rabbitmq")
        assert nested.attributes[CORRELATION_ATTRIBUTE] == s["cid"]
        assert nested.attributes["otelkit.outcome"] == s["outcome"]
    records = {int(str(r.body).split()[1]): r for r in otelkit_capture.logs if str(r.body).startswith("nested ")}
    assert sorted(records) == list(range(6))
    for i, record in records.items():  # logged in the span current inside the block, under its correlation ID
        assert record.span_id == by_i[i]["inside"] and record.attributes[CORRELATION_ATTRIBUTE] == by_i[i]["cid"]

    def settled(system: str, destination: str) -> dict[str, int]:
        return {str(p.attributes["otelkit.outcome"]): int(p.value or 0) for p in otelkit_capture.metric_points(
            MESSAGES_SETTLED.name, **{"messaging.system": system, "messaging.destination.name": destination})}

    assert settled("rabbitmq", queue) == {"ack": 7}  # 6 pulled + 5 (another message on the same queue)
    assert settled("nats", queue) == {"ack": 1}
    assert settled("rabbitmq", other) == {"retry": 1, "ack": 1}


def _span_and_cid() -> tuple[str, str | None]:
    return _current_span_id(), otelkit.correlation_id()


NOTHING = ("0" * 16, None)


@pytest.mark.parametrize("how", ["break", "close_in_block", "close_from_another_task"])
@pytest.mark.otelkit(instrument=["aio-pika"])
def test_aio_pika_iterator_closed_with_the_message_unsettled(how: str, otelkit_capture: Any,
                                                              rabbitmq_url: str) -> None:
    """The iterator closes while the message it returned is unsettled:

    * ``break``: out of ``async for`` inside ``async with queue.iterator()``, no application receive;
    * ``close_in_block``: ``await it.close()`` inside the application's ``pipeline.receive`` that adopted it;
    * ``close_from_another_task``: a shutdown task closes the iterator while that block runs; the loop then ends.

    Each time: one span, ended once as ``retry`` (the close: RabbitMQ requeues the message), one settled point,
    the block's ``msg.outcome`` says the same, nothing current after the loop, no exception, and the message is
    back in the queue once the channel closes."""
    import asyncio

    import aio_pika

    from otelkit import pipeline

    queue_name = _queue(f"iter-{how}")
    cids = {i: f"iter-{i}-{uuid.uuid4().hex[:6]}" for i in range(2)}

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name)
            for i in range(2):
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"i": i}).encode(), correlation_id=cids[i]), routing_key=queue_name)
            it = queue.iterator()
            async with it:
                async for message in it:
                    out["pulled"] = _span_and_cid()
                    if how == "break":
                        log.warning("handling %s", how)
                        break
                    with pipeline.receive(queue_name, message.headers, system="rabbitmq", properties=message) as msg:
                        out["inside"] = _span_and_cid()
                        log.warning("handling %s", how)
                        if how == "close_in_block":
                            await it.close()
                        else:
                            await asyncio.create_task(it.close())  # another task: a shutdown handler
                    out["outcome"] = msg.outcome
                    if how == "close_in_block":
                        out["after_block"] = _span_and_cid()
                        break
                out["after_loop"] = _span_and_cid()
            out["after_iterator"] = _span_and_cid()
            log.warning("after the loop %s", how)
            await channel.close()  # the unacked message goes back to the queue
        finally:
            await connection.close()
        return out

    try:
        out = asyncio.run(main())
        _poll(lambda: _ready(rabbitmq_url, queue_name) == 2, "the unsettled message never went back to the queue")
    finally:
        _cleanup(rabbitmq_url, [queue_name])
    assert out["pulled"][1] == cids[0]
    if how == "break":  # until the iterator closes, the message it returned is still the one being handled
        assert out["after_loop"] == out["pulled"]
    else:  # the adopting block: the same span, the close's outcome
        assert out["inside"] == out["pulled"] and out["outcome"] == "retry"
        assert out["after_loop"] == NOTHING
    if how == "close_in_block":
        assert out["after_block"] == NOTHING
    assert out["after_iterator"] == NOTHING
    processes = [s for s in otelkit_capture.spans if s.name == f"process {queue_name}"]
    assert len(processes) == 1, otelkit_capture.spans.names()
    (process,) = processes
    assert _hex(process) == out["pulled"][0] and process.attributes[CORRELATION_ATTRIBUTE] == cids[0]
    assert process.attributes["otelkit.outcome"] == "retry"
    assert process.attributes["otelkit.outcome.reason"] == "iterator closed with the message unsettled (requeued)"
    assert _settled(otelkit_capture, queue_name) == {"retry": 1}
    records = [r for r in otelkit_capture.logs if str(r.body).endswith(how)]
    assert [(r.body, r.span_id, r.attributes.get(CORRELATION_ATTRIBUTE)) for r in records] == [
        (f"handling {how}", out["pulled"][0], cids[0]), (f"after the loop {how}", None, None)]


@pytest.mark.parametrize("path", ["aio_get", "aio_iterator", "nats_fetch"])
@pytest.mark.otelkit(instrument=["aio-pika", "nats"])
def test_receive_inside_a_pulled_message_aio_pika_and_nats(path: str, otelkit_capture: Any, rabbitmq_url: str,
                                                            nats_url: str) -> None:
    """The same rule on aio-pika ``queue.get()`` / ``queue.iterator()`` and NATS JetStream ``fetch()``. Three pulled
    messages, one application ``receive`` each under ANOTHER destination name: 0 with another ``system`` (its own
    span), 1 with the message's own headers (adopted: one span), 2 with another message's headers (its own span).
    Each message is then settled (ack): 3 pulled spans + 2 nested ones, exact outcomes and correlation IDs."""
    import asyncio

    from otelkit import pipeline

    suffix = uuid.uuid4().hex[:10]
    other_headers: dict[str, Any] = {}
    with pipeline.emit("elsewhere", other_headers, system="nats" if path == "nats_fetch" else "rabbitmq",
                       correlation_id="other-cid"):
        pass
    cids = {i: f"{path}-{i}-{suffix[:6]}" for i in range(3)}
    seen: list[dict[str, Any]] = []

    async def handle(i: int, headers: Any, system: str, settle: Callable[[], Any]) -> None:
        entry: dict[str, Any] = {"i": i, "pulled": _span_and_cid()}
        other_system = "redis" if i == 0 else system
        carrier = other_headers if i == 2 else headers
        with pipeline.receive(f"renamed-{i}", carrier, system=other_system) as msg:
            entry["inside"] = _span_and_cid()
            log.warning("nested %d", i)
        entry["after"] = _span_and_cid()
        entry["outcome"] = msg.outcome
        await settle()
        entry["settled"] = _span_and_cid()
        seen.append(entry)

    async def rabbit() -> str:
        import aio_pika

        name = _queue(path)
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(name)
            for i in range(3):
                await channel.default_exchange.publish(
                    aio_pika.Message(json.dumps({"i": i}).encode(), correlation_id=cids[i]), routing_key=name)
            if path == "aio_get":
                deadline = time.monotonic() + DEADLINE
                while len(seen) < 3 and time.monotonic() < deadline:
                    message = await queue.get(fail=False)
                    if message is not None:
                        await handle(json.loads(message.body)["i"], message.headers, "rabbitmq", message.ack)
            else:
                async with queue.iterator() as it:
                    async for message in it:
                        await handle(json.loads(message.body)["i"], message.headers, "rabbitmq", message.ack)
                        if len(seen) == 3:
                            break
            await queue.delete()
        finally:
            await connection.close()
        return name

    async def nats_js() -> str:
        import nats

        subject, stream = f"otelkit-test.nested.{suffix}", f"OTELKIT_NESTED_{suffix}"
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.add_stream(name=stream, subjects=[subject])
            for i in range(3):
                with pipeline.correlate(cids[i]):
                    await js.publish(subject, json.dumps({"i": i}).encode())
            pull = await js.pull_subscribe(subject, durable=f"otelkit-{suffix}")
            deadline = time.monotonic() + DEADLINE
            while len(seen) < 3 and time.monotonic() < deadline:
                for msg in await pull.fetch(batch=1, timeout=5):
                    await handle(json.loads(msg.data)["i"], msg.headers, "nats", msg.ack_sync)
        finally:
            try:
                await js.delete_stream(stream)
            finally:
                await nc.close()
        return subject

    destination = asyncio.run(nats_js() if path == "nats_fetch" else rabbit())
    assert sorted(s["i"] for s in seen) == [0, 1, 2]
    by_i = {s["i"]: s for s in seen}
    for i, s in by_i.items():
        assert s["pulled"][1] == cids[i] and s["settled"] == NOTHING, (i, s)
        if i == 1:  # adopted: the same span; its block's end settled the message (the ack after adds nothing)
            assert s["inside"] == s["pulled"] and s["after"] == NOTHING and s["outcome"] == "ack"
        else:  # its own span; the pulled message is current again after it
            assert s["inside"][0] != s["pulled"][0] and s["after"] == s["pulled"], (i, s)
    assert by_i[0]["inside"][1] == cids[0] and by_i[2]["inside"][1] == "other-cid"
    processes = [s for s in otelkit_capture.spans if s.name.startswith("process ")]
    assert sorted(s.name for s in processes) == sorted([f"process {destination}"] * 3 + ["process renamed-0",
                                                                                          "process renamed-2"])
    assert all(s.attributes["otelkit.outcome"] == "ack" for s in processes)
    assert {s.name: s.attributes["messaging.system"] for s in processes}["process renamed-0"] == "redis"
    records = {int(str(r.body).split()[1]): r for r in otelkit_capture.logs if str(r.body).startswith("nested ")}
    assert sorted(records) == [0, 1, 2]
    for i, record in records.items():
        assert (record.span_id, record.attributes.get(CORRELATION_ATTRIBUTE)) == by_i[i]["inside"]
    assert _settled(otelkit_capture, destination) == {"ack": 3}


@pytest.mark.otelkit(instrument=["nats"])
def test_nats_fetched_message_settled_from_another_task(otelkit_capture: Any, nats_url: str) -> None:
    """JetStream ``fetch()``: each message is acked by a worker task. Its span ends there (ack, once); the fetching
    task's context (a token is detached only where it was attached) is given back at its next ``fetch()``, so
    the next message is never handled under the previous one's correlation ID, and the loop's last ``fetch()``
    leaves nothing current. Before session 7 the first message's context stayed current in the fetching task."""
    import asyncio

    import nats
    from nats.errors import TimeoutError as NatsTimeout

    from otelkit import pipeline

    suffix = uuid.uuid4().hex[:10]
    subject, stream = f"otelkit-test.worker.{suffix}", f"OTELKIT_WORKER_{suffix}"
    cids = {i: f"worker-{i}-{suffix[:6]}" for i in range(2)}

    async def main() -> list[tuple[str, str | None]]:
        states: list[tuple[str, str | None]] = []
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.add_stream(name=stream, subjects=[subject])
            for i in range(2):
                with pipeline.correlate(cids[i]):
                    await js.publish(subject, json.dumps({"i": i}).encode())
            pull = await js.pull_subscribe(subject, durable=f"otelkit-{suffix}")

            async def worker(msg: Any) -> None:
                await msg.ack_sync()

            for _ in range(2):
                (msg,) = await pull.fetch(batch=1, timeout=5)
                states.append(("fetched", otelkit.correlation_id()))
                log.warning("handling %d", json.loads(msg.data)["i"])
                await asyncio.create_task(worker(msg))
            try:
                await pull.fetch(batch=1, timeout=0.5)  # the loop's last fetch: nothing left
            except (NatsTimeout, asyncio.TimeoutError):
                pass
            states.append(("after the loop", otelkit.correlation_id()))
        finally:
            try:
                await js.delete_stream(stream)
            finally:
                await nc.close()
        return states

    assert asyncio.run(main()) == [("fetched", cids[0]), ("fetched", cids[1]), ("after the loop", None)]
    processes = [s for s in otelkit_capture.spans if s.name == f"process {subject}"]
    assert sorted((s.attributes[CORRELATION_ATTRIBUTE], s.attributes["otelkit.outcome"]) for s in processes) == [
        (cids[0], "ack"), (cids[1], "ack")]
    records = [r for r in otelkit_capture.logs if str(r.body).startswith("handling ")]
    assert [(r.body, r.attributes.get(CORRELATION_ATTRIBUTE)) for r in records] == [
        ("handling 0", cids[0]), ("handling 1", cids[1])]
    assert _settled(otelkit_capture, subject) == {"ack": 2}
