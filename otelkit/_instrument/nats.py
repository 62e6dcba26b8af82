"""nats-py, core NATS and JetStream: publish and subscribe as otelkit pipeline spans and metrics.

* ``Client.publish`` (core) and ``JetStreamContext.publish``: a PRODUCER span ``send {subject}``
  (``pipeline.emit``), context, correlation ID and emission time in the NATS headers. A JetStream
  publish records the stream sequence of its ``PubAck`` as ``messaging.message.id`` (the request it
  makes underneath is the same operation: not traced again). Replies to ``_INBOX.`` subjects and the
  ``$JS.``/``$KV.``/``$SYS.`` API subjects are not messages of the application: not traced.
* ``Client.subscribe(cb=...)`` callbacks, JetStream push subscriptions included: a CONSUMER span
  ``process {subject}`` (``pipeline.receive``, linked to the producer), the correlation ID current for
  the callback. JetStream messages add the delivery count (``num_delivered``) as attempt and the
  stream sequence as ``messaging.message.id``; ``msg.ack()`` → ack, ``msg.nak()`` → retry,
  ``msg.term()`` → dead letter (JetStream's auto-ack after the callback counts too).
* Depth: each JetStream consumer seen is reported as ``otelkit.messaging.queue.length`` from
  ``consumer_info().num_pending`` (messages not yet delivered to it), asked on the application's
  event loop at each metric collection (``OTELKIT_NATS_QUEUE_DEPTH=false`` turns it off).

* JetStream pull consumers (``js.pull_subscribe(...)`` then ``fetch()``): each message fetched gets the same
  CONSUMER span; the messages of a batch are taken to be handled in order: the first is current (span and
  correlation ID) when ``fetch()`` returns, and settling it (``ack``/``nak``/``term``) ends its span and makes
  the next one current. A message settled out of order gets its span at the settle; the next ``fetch()``
  detaches the context of a message still current (its span ends when it is settled). Settled from another
  task, the message's context is given back by the fetching task at its next ``fetch()``.

Not traced: ``next_msg()`` (no callback bounds the handling: use ``pipeline.receive`` around it; the
attempt and sequence are in ``msg.metadata``).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context

from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY
from otelkit._instrument import _amqp, _async_pulled, _common, _lazy
from otelkit._status import IntegrationStatus

NAME = "nats"
MIN_VERSION = (2, 2)
SYSTEM = "nats"
_PRIVATE = ("_INBOX.", "$JS.", "$KV.", "$O.", "$SYS.")
_enabled = False
_state: dict[str, Any] = {}


def _server(client: Any) -> dict[str, Any]:
    url = getattr(client, "connected_url", None)
    host, port = getattr(url, "hostname", None), getattr(url, "port", None)
    attrs: dict[str, Any] = {}
    if host:
        attrs["server.address"] = host
        if port:
            attrs["server.port"] = int(port)
    return attrs


_attr_cache: dict[tuple[Any, ...], dict[str, Any]] = {}


def _attributes(client: Any) -> dict[str, Any] | None:
    url = getattr(client, "connected_url", None)
    key = (getattr(url, "hostname", None), getattr(url, "port", None))
    found = _attr_cache.get(key)
    if found is None:
        found = _server(client)
        if len(_attr_cache) < 256:
            _attr_cache[key] = found
    return found or None


def _publish_args(subject: str, payload: bytes = b"", reply: str = "", headers: Any = None,
                  ) -> tuple[str, bytes, str, Any]:
    return subject, payload, reply, headers


async def _publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    try:
        subject, payload, reply, headers = _publish_args(*args, **kwargs)
    except TypeError:
        return await wrapped(*args, **kwargs)
    if not isinstance(subject, str) or subject.startswith(_PRIVATE):
        return await wrapped(*args, **kwargs)
    from otelkit._pipeline.scopes import Emission

    try:
        headers = dict(headers or {})
    except Exception:  # odd headers: sent untraced
        return await wrapped(*args, **kwargs)
    with Emission(subject, headers, system=SYSTEM, attributes=_attributes(instance)):
        return await wrapped(subject, payload, reply=reply, headers=headers)


def _js_publish_args(subject: str, payload: bytes = b"", *args: Any, **kwargs: Any) -> str:
    return subject


async def _js_publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    try:
        subject = _js_publish_args(*args, **kwargs)
    except TypeError:
        return await wrapped(*args, **kwargs)
    from otelkit._pipeline.scopes import Emission

    try:
        if len(args) >= 5:  # headers given by position: subject, payload, timeout, stream, headers
            headers = dict(args[4] or {})
            args = (*args[:4], headers, *args[5:])
        else:
            headers = dict(kwargs.get("headers") or {})
            kwargs = {**kwargs, "headers": headers}
    except Exception:  # odd headers: sent untraced
        return await wrapped(*args, **kwargs)
    with Emission(str(subject), headers, system=SYSTEM, attributes=_attributes(getattr(instance, "_nc", None))) as msg:
        # The request carrying the message is this operation: the core publish below is not traced again.
        token = otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ack = await wrapped(*args, **kwargs)
        finally:
            otel_context.detach(token)
        seq = getattr(ack, "seq", None)
        if seq is not None:
            msg.message_id = str(seq)
        return ack


def _metadata(msg: Any) -> Any:
    reply = getattr(msg, "reply", None) or ""
    if not isinstance(reply, str) or not reply.startswith("$JS.ACK."):
        return None
    try:
        return msg.metadata
    except Exception:
        return None


def _reception(msg: Any, client: Any) -> Any:
    """The ``pipeline.receive`` scope of one message (JetStream: attempt, stream sequence, consumer, depth)."""
    from otelkit._pipeline.scopes import Reception

    meta = _metadata(msg)
    attempt = message_id = None
    group = None
    if meta is not None:
        attempt = getattr(meta, "num_delivered", None)
        message_id = getattr(getattr(meta, "sequence", None), "stream", None)
        group = getattr(meta, "consumer", None)
        _watch_depth(client, meta)
    return Reception(str(getattr(msg, "subject", "") or ""), getattr(msg, "headers", None), system=SYSTEM,
                     message_id=message_id, attempt=attempt, group=group, attributes=_attributes(client))


def _traced(callback: Callable[[Any], Awaitable[Any]], client: Any) -> Callable[[Any], Awaitable[Any]]:
    async def on_message(msg: Any) -> Any:
        if not _enabled or not _common.instrumentation_enabled():
            return await callback(msg)
        try:
            scope = _reception(msg, client)
        except Exception:  # an odd message: handled untraced, never an error from telemetry
            return await callback(msg)
        with scope:
            token = _amqp.current.set((scope, 0, id(msg)))
            try:
                return await callback(msg)
            finally:
                _amqp.current.reset(token)

    on_message.__wrapped__ = callback  # type: ignore[attr-defined]
    return on_message


def _subscribe_args(subject: str, queue: str = "", cb: Any = None, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    return subject, cb


def _foreign(callback: Any) -> bool:
    """nats-py's own reply handlers and FastStream's consumers (traced by the FastStream integration)."""
    owner = getattr(callback, "__self__", None)
    module = str(getattr(callback, "__module__", "") or "")
    owner_module = type(owner).__module__ if owner is not None else ""
    return module.startswith("faststream") or owner_module.startswith(("faststream", "nats."))


async def _subscribe(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return await wrapped(*args, **kwargs)
    try:
        subject, cb = _subscribe_args(*args, **kwargs)
    except TypeError:
        return await wrapped(*args, **kwargs)
    if cb is None or _foreign(cb):
        return await wrapped(*args, **kwargs)
    traced = _traced(cb, instance)
    if "cb" in kwargs:
        kwargs = {**kwargs, "cb": traced}
    elif len(args) >= 3:
        args = (*args[:2], traced, *args[3:])
    else:
        kwargs = {**kwargs, "cb": traced}
    return await wrapped(*args, **kwargs)


def _settler(outcome: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _fetched and id(instance) in _fetched:
            _settle_fetched(instance, outcome, f"msg.{wrapped.__name__}()")
        if _enabled and _amqp.current.get() is not None:
            _amqp.settle(id(instance), 0, False, outcome, f"msg.{wrapped.__name__}()")
        return wrapped(*args, **kwargs)

    return wrapper


# --- JetStream pull consumers: fetch() ----------------------------------------------------------------

# Messages returned by PullSubscription.fetch() whose handling is not over: {id(msg): [msg, subscription key,
# scope or None, task]}, in the order fetch returned them. No callback bounds their handling; the messages of a
# batch are taken to be handled in order: the first one's scope is current (with its correlation ID) when
# fetch() returns, and settling it (ack/nak/term) ends its span and makes the next one current. A message
# settled out of order gets its span at the settle. The next fetch() on the subscription detaches the context of
# a message still current; unsettled messages' spans end when they are settled.
_fetched: dict[int, list[Any]] = {}


def _start_fetched(entry: list[Any]) -> None:
    msg, owner, _scope, _task_ = entry
    scope = _reception(msg, owner[1])
    scope.__enter__()
    scope._release = _release_adopted
    entry[2], entry[3] = scope, _async_pulled.current_task()


def _release_adopted(scope: Any, exc: BaseException | None) -> None:
    """The application's own ``pipeline.receive`` of a fetched message ended first: settle it with its outcome."""
    exc_info = (type(exc) if exc is not None else None, exc, exc.__traceback__ if exc is not None else None)
    for key, entry in list(_fetched.items()):
        if entry[2] is scope:
            _fetched.pop(key, None)
            _forget_context(entry)
            scope.__exit__(*exc_info)
            _activate_next(entry[1][0])
            return
    scope.__exit__(*exc_info)


def _forget_context(entry: list[Any]) -> None:
    """Detach the entry's context, or park it for the fetching task (:mod:`._async_pulled`)."""
    if entry[2] is not None:
        _async_pulled.forget(entry[2], entry[3])


def _activate_next(owner_key: int) -> None:
    for entry in _fetched.values():  # insertion order: the order fetch() returned them
        if entry[1][0] == owner_key and entry[2] is None:
            _start_fetched(entry)
            return


def _settle_fetched(msg: Any, outcome: str, reason: str) -> None:
    entry = _fetched.pop(id(msg), None)
    if entry is None:
        return
    try:
        was_current = entry[2] is not None and entry[2]._token is not None
        if entry[2] is None:  # settled before its turn: its span covers the settle
            _start_fetched(entry)
            was_current = False
        scope = entry[2]
        scope._set_outcome(outcome, reason)
        _forget_context(entry)
        scope.__exit__(None, None, None)
        if was_current:
            _activate_next(entry[1][0])
    except Exception:  # telemetry never breaks the application's settle
        from otelkit._internal_log import logger

        logger.debug("otelkit: fetched message settle not recorded", exc_info=True)


async def _fetch(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return await wrapped(*args, **kwargs)
    key = id(instance)
    if _async_pulled.orphans:
        _async_pulled.give_back()
    if _fetched:
        for entry in list(_fetched.values()):
            if entry[1][0] == key:
                _forget_context(entry)
    msgs = await wrapped(*args, **kwargs)
    if not _common.instrumentation_enabled():
        return msgs
    try:
        owner = (key, getattr(instance, "_nc", None))
        for msg in msgs or ():
            _fetched[id(msg)] = [msg, owner, None, None]
        _activate_next(key)
    except Exception:
        from otelkit._internal_log import logger

        logger.debug("otelkit: fetched messages not traced", exc_info=True)
    return msgs


# --- depth ----------------------------------------------------------------------------------------

def _watch_depth(client: Any, meta: Any) -> None:
    stream, consumer = getattr(meta, "stream", None), getattr(meta, "consumer", None)
    if not stream or not consumer:
        return
    watched: dict[Any, Any] = _state.setdefault("watched", {})
    key = (id(client), stream, consumer)
    if key in watched or not _amqp.depth_enabled("nats"):
        return
    watched[key] = None
    try:
        loop = asyncio.get_running_loop()
        js = client.jetstream()
        lock = threading.Lock()

        def probe() -> int | None:
            if loop.is_closed() or getattr(client, "is_closed", False):
                return None
            with lock:
                future = asyncio.run_coroutine_threadsafe(js.consumer_info(stream, consumer, timeout=0.8), loop)
                try:
                    info = future.result(timeout=0.9)
                except Exception:
                    future.cancel()
                    return None
            pending = getattr(info, "num_pending", None)
            return int(pending) if pending is not None else None

        probe.__qualname__ = f"nats consumer_info {stream}/{consumer}"
        from otelkit._pipeline.queues import observe_queue

        watched[key] = observe_queue(str(stream), probe, system=SYSTEM, state="pending",
                                     attributes={"messaging.consumer.group.name": str(consumer)})
    except Exception:
        from otelkit._internal_log import logger

        logger.debug("otelkit: no depth for JetStream consumer %s/%s", stream, consumer, exc_info=True)


# --- wiring ---------------------------------------------------------------------------------------

def _patch(_module: ModuleType) -> None:
    import nats.aio.client
    import nats.aio.msg
    import nats.js.client

    targets: list[tuple[Any, str, Any]] = [
        (nats.aio.client.Client, "publish", _publish),
        (nats.aio.client.Client, "subscribe", _subscribe),
        (nats.js.client.JetStreamContext, "publish", _js_publish),
        (nats.js.client.JetStreamContext.PullSubscription, "fetch", _fetch),
        (nats.aio.msg.Msg, "ack", _settler("ack")),
        (nats.aio.msg.Msg, "ack_sync", _settler("ack")),
        (nats.aio.msg.Msg, "nak", _settler("retry")),
        (nats.aio.msg.Msg, "term", _settler("dead_letter")),
    ]
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("nats-py",), MIN_VERSION, "2.2", "nats-py", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    global _enabled
    found = _common.supported_dist(NAME, ("nats-py",), MIN_VERSION, "2.2", "nats-py")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    _enabled = True
    note = "" if "nats" in sys.modules else " (patched when the application imports it)"
    _lazy.when_imported(NAME, "nats", _patch)
    return IntegrationStatus(NAME, "enabled", f"nats-py {version}{note}", version=version)


def uninstrument() -> None:
    global _enabled
    _enabled = False
    _lazy.cancel(NAME)
    for owner, attribute, _wrapper in _state.pop("targets", []):
        _common.unwrap(owner, attribute)
    _fetched.clear()
    for observation in _state.pop("watched", {}).values():
        if observation is not None:
            observation.close()
