"""nats-py producer/consumer programs for test_instrument_nats.py (run as subprocesses).

    python nats_apps.py ROLE '{"json": "arguments"}'

Each calls ``otelkit.init()`` only. ``js`` mode: JetStream publish / durable push subscription with
manual acks and ``max_ack_pending=1`` (behaviours: ``nak-once`` naks the first delivery, ``term``
terminates, ``nak-delay-then-term`` naks the first delivery with a redelivery delay and terminates the
second); after ``deliveries`` messages the consumer unsubscribes before settling the last one,
so the messages left stay undelivered for the depth sample taken at shutdown. ``core`` mode: plain
publish / subscribe. ``js-pull`` mode: the same JetStream behaviours through a pull consumer
(``pull_subscribe`` + ``fetch()`` batches of up to 2). ``js-batch`` mode: one ``fetch()`` of the whole batch,
settled partly out of order (``_batch``). Prints ``READY`` once subscribed, then one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import otelkit

log = logging.getLogger("natsapp")
DEADLINE = 40.0


def producer(args: dict[str, Any]) -> None:
    import nats

    otelkit.init()
    sequences: list[int] = []

    async def main() -> None:
        nc = await nats.connect(args["nats_url"])
        js = nc.jetstream()
        for i in range(args["count"]):
            log.info("publishing %d", i)
            body = json.dumps({"i": i}).encode()
            if args["mode"] != "core":
                ack = await js.publish(args["subject"], body)
                sequences.append(ack.seq)
            else:
                await nc.publish(args["subject"], body)
        await nc.flush()
        await nc.close()

    asyncio.run(main())
    otelkit.shutdown()
    print(json.dumps({"sequences": sequences}), flush=True)


def consumer(args: dict[str, Any]) -> None:
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    otelkit.init()
    seen: list[dict[str, Any]] = []
    server: dict[str, int] = {}  # js-pull: the consumer's counts once no pull request waits

    async def main() -> None:
        nc = await nats.connect(args["nats_url"])
        done = asyncio.Event()
        subs: list[Any] = []

        async def on_message(msg: Any) -> None:
            i = json.loads(msg.data)["i"]
            delivered = msg.metadata.num_delivered if args["mode"] != "core" else 1
            seen.append({"i": i, "delivered": delivered, "correlation_id": otelkit.correlation_id()})
            log.info("handling %d", i)
            last = len(seen) >= args["deliveries"]
            if last and subs:
                await subs[0].unsubscribe()  # before settling: nothing else is pushed to this process
            if last:
                done.set()
            if args["mode"] == "core":
                return
            behaviour = args.get("behaviour", {}).get(str(i))
            if behaviour == "nak-once" and delivered == 1:
                await msg.nak()
            elif behaviour == "nak-delay-then-term":  # back after the delay, then terminated
                await (msg.nak(delay=0.2) if delivered == 1 else msg.term())
            elif behaviour == "term":
                await msg.term()
            elif args["mode"] == "js-pull":  # the server has counted the last ack before the depth check below
                await msg.ack_sync()
            else:
                await msg.ack()

        if args["mode"] == "js-pull":  # a pull consumer: fetch() batches of up to 2 until enough deliveries
            js = nc.jetstream()
            await js.add_stream(name=args["stream"], subjects=[args["subject"]])
            pull = await js.pull_subscribe(args["subject"], durable=args["durable"],
                                           config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30,
                                                                 max_ack_pending=1))  # the nak'd one comes back next
            print("READY", flush=True)
            deadline = time.monotonic() + DEADLINE
            while len(seen) < args["deliveries"] and time.monotonic() < deadline:
                try:  # never more than the deliveries left: nothing is fetched and left unsettled
                    msgs = await pull.fetch(batch=min(2, args["deliveries"] - len(seen)), timeout=1)
                except (NatsTimeout, asyncio.TimeoutError):
                    continue  # nothing published yet: fetch again (polled, with the deadline above)
                for msg in msgs:
                    await on_message(msg)
                    if otelkit.correlation_id() is not None and msg is msgs[-1]:
                        raise AssertionError("the last fetched message's context is still current after its settle")
            # A fetch() batch the server could not fill at once (max_ack_pending=1) leaves its pull request
            # waiting until it expires (< 1 s); a message it takes after this loop counts as delivered, not
            # pending (nats-py's own comments call it an orphaned pull request). Wait until no request waits,
            # then report the server's counts: the depth sampled at shutdown must be its num_pending.
            deadline = time.monotonic() + DEADLINE
            while (info := await js.consumer_info(args["stream"], args["durable"])).num_waiting:
                if time.monotonic() > deadline:
                    raise AssertionError(f"pull requests still waiting: {info}")
                await asyncio.sleep(0.05)  # polled with the deadline above
            server.update(pending=info.num_pending, ack_pending=info.num_ack_pending)
        elif args["mode"] == "js-batch":
            await _batch(nc, args, seen)
        elif args["mode"] == "js":
            js = nc.jetstream()
            await js.add_stream(name=args["stream"], subjects=[args["subject"]])
            subs.append(await js.subscribe(args["subject"], durable=args["durable"], cb=on_message, manual_ack=True,
                                           config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1,
                                                                 ack_wait=30)))
        else:
            subs.append(await nc.subscribe(args["subject"], cb=on_message))
        if args["mode"] not in ("js-pull", "js-batch"):
            await nc.flush()
            print("READY", flush=True)
            try:
                await asyncio.wait_for(done.wait(), DEADLINE)
            except asyncio.TimeoutError:
                pass
        await nc.flush()
        # The last metric collection asks JetStream for the consumer's pending count on this loop.
        await asyncio.get_running_loop().run_in_executor(None, otelkit.shutdown)
        await nc.close()

    asyncio.run(main())
    print(json.dumps({"seen": seen, "server": server}), flush=True)


async def _batch(nc: Any, args: dict[str, Any], seen: list[dict[str, Any]]) -> None:
    """``js-batch``: one ``fetch(batch=4)`` of the 4 messages, handled in order: 0 acked, 1 nak'd, 3 term'd out of
    order while 2 is being handled, then 2 acked; the nak'd 1 comes back in a later fetch and is acked."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    js = nc.jetstream()
    await js.add_stream(name=args["stream"], subjects=[args["subject"]])
    pull = await js.pull_subscribe(args["subject"], durable=args["durable"],
                                   config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    print("READY", flush=True)
    deadline = time.monotonic() + DEADLINE
    # All 4 stored before the first fetch, so it returns them as one batch (polled, bounded by the deadline).
    while (await js.consumer_info(args["stream"], args["durable"])).num_pending < args["count"]:
        if time.monotonic() > deadline:
            raise AssertionError("the producer's messages never reached the stream")
        await asyncio.sleep(0.05)
    settled_early: set[tuple[int, int]] = set()
    while sum("i" in e for e in seen) < args["deliveries"] and time.monotonic() < deadline:
        try:
            msgs = await pull.fetch(batch=args["count"], timeout=1)
        except (NatsTimeout, asyncio.TimeoutError):
            continue  # the nak'd message is not back yet: fetch again
        seen.append({"batch": len(msgs)})
        by_i = {json.loads(m.data)["i"]: m for m in msgs}
        for msg in msgs:
            i = json.loads(msg.data)["i"]
            delivered = msg.metadata.num_delivered
            if (i, delivered) in settled_early:
                continue
            entry: dict[str, Any] = {"i": i, "delivered": delivered, "correlation_id": otelkit.correlation_id()}
            seen.append(entry)
            log.info("handling %d", i)
            if i == 1 and delivered == 1:
                await msg.nak()
            elif i == 2 and 3 in by_i:
                early = by_i[3]
                await early.term()  # out of order: the message after this one
                settled_early.add((3, early.metadata.num_delivered))
                seen.append({"i": 3, "delivered": early.metadata.num_delivered, "correlation_id": None,
                             "out_of_order": True})
                entry["after_early_settle"] = otelkit.correlation_id()
                await msg.ack()
            else:
                await msg.ack()
        seen[-1]["after_batch"] = otelkit.correlation_id()


if __name__ == "__main__":
    {"producer": producer, "consumer": consumer}[sys.argv[1]](json.loads(sys.argv[2]))
