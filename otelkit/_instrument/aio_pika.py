"""aio-pika (RabbitMQ, asyncio): publish and consume as otelkit pipeline spans and metrics.

Replaces ``opentelemetry-instrumentation-aio-pika`` (which parents the consumer to the producer,
carries no correlation ID and records no metric) with wrappers on four methods:

* ``Exchange.publish``: a PRODUCER span ``send {routing key}`` (``pipeline.emit``); context and
  correlation ID go into ``message.headers``; the message's ``correlation_id`` becomes the
  correlation ID when none is current;
* ``Queue.consume`` callbacks: a CONSUMER span ``process {routing key}`` (``pipeline.receive``, linked
  to the producer) around the callback, the correlation ID (otelkit's header, else the AMQP
  ``correlation_id``) current for its duration; attempt from ``x-delivery-count`` / ``redelivered``;
* ``IncomingMessage.ack/nack/reject`` (also through ``message.process()``) inside the callback settle
  its span: ack; requeue → retry; ``requeue=False`` → dead letter;
* queue depth: each consumed queue reported from a passive ``declare_queue`` (``message_count``) on a
  channel of otelkit's own on the application's connection, run on the application's event loop
  (``OTELKIT_PIKA_QUEUE_DEPTH=false`` turns it off).

* ``Queue.get()`` and ``Queue.iterator()`` (the pull paths): the CONSUMER span of each message returned starts
  there and is current (with its correlation ID) in the pulling task until the message is settled (ack/nack/
  reject, also through ``message.process()``); asking the same queue/iterator for the next message detaches
  the previous one's context (an unsettled message's span ends when it is settled); an iterator's close ends
  what is left as ``retry`` (requeued), or ``ack`` under ``no_ack``. Ended from another task (a close or settle
  there), the message's context is given back by the pulling task at its next get()/iteration/close.

FastStream's RabbitBroker runs on aio-pika: its callbacks and publishes are left to the FastStream
integration (one layer).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from otelkit._instrument import _amqp, _async_pulled, _common, _lazy
from otelkit._pipeline import carrying
from otelkit._status import IntegrationStatus

NAME = "aio-pika"  # the contrib instrumentation's name: OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=aio-pika
MIN_VERSION = (9, 4)  # the extra's floor, tested; 9.0 loses the consumer's spans (docs/install.md)
_enabled = False
_state: dict[str, Any] = {}


def _server(channel: Any) -> tuple[str, int]:
    connection = getattr(channel, "_connection", None) or getattr(channel, "connection", None)
    url = getattr(connection, "url", None)
    port = getattr(url, "port", 0)
    return str(getattr(url, "host", "") or ""), port if type(port) is int else 0


def _publish_args(message: Any, routing_key: str, *args: Any, **kwargs: Any) -> tuple[Any, str]:
    return message, routing_key


async def _publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled or not _common.instrumentation_enabled() or carrying.publishing.get() is not None:
        # inside pipeline.emit(...): this publish carries that emission's message (one send span, not two)
        return await wrapped(*args, **kwargs)
    try:
        message, routing_key = _publish_args(*args, **kwargs)
        headers = message.headers = dict(message.headers or {})
    except Exception:
        return await wrapped(*args, **kwargs)
    from otelkit._pipeline.scopes import Emission

    try:
        exchange = str(getattr(instance, "name", "") or "")
        routing_key = str(routing_key or "")
        host, port = _server(getattr(instance, "channel", None))
        emission = Emission(_amqp.destination(exchange, routing_key), headers, system=_amqp.SYSTEM,
                            message_id=getattr(message, "message_id", None),
                            correlation_id=_amqp.adopted_correlation_id(getattr(message, "correlation_id", None)),
                            attributes=_amqp.attributes(routing_key, exchange, host, port))
    except Exception:
        return await wrapped(*args, **kwargs)
    with emission:
        return await wrapped(*args, **kwargs)


def _reception(message: Any, host: str, port: int) -> tuple[Any, int]:
    """The ``pipeline.receive`` scope of one delivered message and its delivery tag."""
    from otelkit._pipeline.scopes import Reception

    routing_key = str(getattr(message, "routing_key", "") or "")
    exchange = str(getattr(message, "exchange", "") or "")
    tag = int(getattr(message, "delivery_tag", 0) or 0)
    attributes = {**_amqp.attributes(routing_key, exchange, host, port), _amqp.DELIVERY_TAG: tag}
    carrier, attempt = _amqp.delivery(getattr(message, "headers", None), getattr(message, "correlation_id", None),
                                      bool(getattr(message, "redelivered", False)))
    scope = Reception._of_delivery(_amqp.destination(exchange, routing_key), carrier, _amqp.SYSTEM,
                                   getattr(message, "message_id", None), attempt, attributes)
    return scope, tag


def _traced(callback: Callable[[Any], Awaitable[Any]], channel: Any) -> Callable[[Any], Awaitable[Any]]:
    host, port = _server(channel)

    async def on_message(message: Any) -> Any:
        if not _enabled or not _common.instrumentation_enabled():
            return await callback(message)
        try:
            scope, tag = _reception(message, host, port)
        except Exception:  # an odd delivery: handled untraced, never an error from telemetry
            return await callback(message)
        with scope:
            token = _amqp.current.set((scope, tag, id(message)))
            try:
                return await callback(message)
            finally:
                _amqp.current.reset(token)

    on_message.__wrapped__ = callback  # type: ignore[attr-defined]
    return on_message


def _consume_args(callback: Any, *args: Any, **kwargs: Any) -> Any:
    return callback


def _foreign(callback: Any) -> bool:
    """FastStream's own callback: the FastStream integration traces those messages (one layer)."""
    owner = getattr(callback, "__self__", None)
    module = getattr(callback, "__module__", "") or (type(owner).__module__ if owner is not None else "")
    return str(module).startswith("faststream")


async def _consume(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return await wrapped(*args, **kwargs)
    try:
        callback = _consume_args(*args, **kwargs)
    except TypeError:
        return await wrapped(*args, **kwargs)
    if callback is None or _foreign(callback) or type(getattr(callback, "__self__", None)).__name__ == "QueueIterator":
        # FastStream's, or a queue.iterator()'s buffering callback (its messages are traced by __anext__)
        return await wrapped(*args, **kwargs)
    traced = _traced(callback, getattr(instance, "channel", None))
    if "callback" in kwargs:
        kwargs = {**kwargs, "callback": traced}
    else:
        args = (traced, *args[1:])
    result = await wrapped(*args, **kwargs)
    _watch_depth(instance)
    return result


def _settler(name: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _pulled and id(instance) in _pulled:
            requeue = (kwargs.get("requeue", args[1] if len(args) > 1 else True) if name == "nack"
                       else kwargs.get("requeue", args[0] if args else False) if name == "reject" else True)
            outcome = "ack" if name == "ack" else ("retry" if requeue else "dead_letter")
            _end_pulled(id(instance), outcome, f"{name}(requeue={bool(requeue)})")
        if _enabled and _amqp.current.get() is not None:
            try:
                if name == "ack":
                    multiple, requeue = kwargs.get("multiple", args[0] if args else False), True
                elif name == "nack":
                    multiple = kwargs.get("multiple", args[0] if args else False)
                    requeue = kwargs.get("requeue", args[1] if len(args) > 1 else True)
                else:
                    multiple, requeue = False, kwargs.get("requeue", args[0] if args else False)
                outcome = "ack" if name == "ack" else ("retry" if requeue else "dead_letter")
                _amqp.settle(id(instance), int(getattr(instance, "delivery_tag", 0) or 0), bool(multiple), outcome,
                             f"{name}(requeue={bool(requeue)})")
            except Exception:
                pass
        return wrapped(*args, **kwargs)

    return wrapper


# --- Queue.get() and Queue.iterator() (the pull paths) -------------------------------------------------

# Pulled messages whose handling is not over: {id(message): (scope, no_ack, owner key, task, message)}. No
# callback bounds their handling: each scope starts when get()/the iterator returns the message and is current
# in the task that pulled it until the message is settled (ack/nack/reject, also through message.process()),
# the same queue/iterator is asked for the next message (its context is detached; an unsettled message's span
# stays open until it is settled), or the iterator closes.
_pulled: dict[int, tuple[Any, bool, int, Any, Any]] = {}


def _end_pulled(key: int, outcome: str | None, reason: str | None) -> None:
    entry = _pulled.pop(key, None)
    if entry is None:
        return
    scope, _no_ack, _owner, task, _message = entry
    try:
        scope._set_outcome(outcome, reason)
        _async_pulled.forget(scope, task)
        scope.__exit__(None, None, None)
    except Exception:  # telemetry never breaks the application's settle
        pass


def _release(owner: int) -> None:
    """The application asks ``owner`` (a queue or an iterator) for another message: the previous one's turn is over."""
    for key, (scope, no_ack, held_by, task, _message) in list(_pulled.items()):
        if held_by != owner:
            continue
        if no_ack:  # settled by the broker on delivery: nothing else will end it
            _end_pulled(key, "ack", None)
        else:
            try:
                _async_pulled.forget(scope, task)
            except Exception:
                pass


def _release_adopted(scope: Any, exc: BaseException | None) -> None:
    """The application's own ``pipeline.receive`` of a pulled message ended first: settle it with its outcome."""
    for key, entry in list(_pulled.items()):
        if entry[0] is scope:
            _pulled.pop(key, None)
            _async_pulled.forget(scope, entry[3])
    scope.__exit__(type(exc) if exc is not None else None, exc, exc.__traceback__ if exc is not None else None)


def _pulled_message(message: Any, owner: int, channel: Any, no_ack: bool) -> None:
    try:
        host, port = _server(channel)
        scope, _tag = _reception(message, host, port)
        scope.__enter__()
        scope._release = _release_adopted
        _pulled[id(message)] = (scope, bool(no_ack), owner, _async_pulled.current_task(), message)
    except Exception:  # an odd message: handled untraced, never an error from telemetry
        from otelkit._internal_log import logger

        logger.debug("otelkit: pulled message not traced", exc_info=True)


async def _get(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return await wrapped(*args, **kwargs)
    if _async_pulled.orphans:
        _async_pulled.give_back()
    if _pulled:
        _release(id(instance))
    message = await wrapped(*args, **kwargs)
    if message is not None and _common.instrumentation_enabled():
        _watch_depth(instance)
        _pulled_message(message, id(instance), getattr(instance, "channel", None), bool(kwargs.get("no_ack", False)))
    return message


async def _anext(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return await wrapped(*args, **kwargs)
    if _async_pulled.orphans:
        _async_pulled.give_back()
    if _pulled:
        _release(id(instance))
    message = await wrapped(*args, **kwargs)
    if _common.instrumentation_enabled():
        queue = getattr(instance, "_amqp_queue", None)
        if queue is not None:
            _watch_depth(queue)
        no_ack = bool(getattr(instance, "_consume_kwargs", {}).get("no_ack", False))
        _pulled_message(message, id(instance), getattr(queue, "channel", None), no_ack)
    return message


async def _iterator_close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _pulled:  # unsettled messages go back to the queue (retry); no_ack ones were acks
        owner = id(instance)
        for key, (_scope, no_ack, held_by, _pulling, _message) in list(_pulled.items()):
            if held_by == owner:
                _end_pulled(key, "ack" if no_ack else "retry",
                            None if no_ack else "iterator closed with the message unsettled (requeued)")
    if _async_pulled.orphans:
        _async_pulled.give_back()
    return await wrapped(*args, **kwargs)


# --- queue depth ------------------------------------------------------------------------------------

class _Depth:
    """Passive declares on a channel of otelkit's own, on the application's connection and event loop."""

    def __init__(self, connection: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.loop = loop
        self.channel: Any = None
        self.lock = threading.Lock()

    async def _count(self, queue: str) -> int | None:
        if self.channel is None or self.channel.is_closed:
            self.channel = await self.connection.channel()
        try:
            declared = await self.channel.declare_queue(queue, passive=True)
        except Exception:  # a deleted queue closes the channel: reopened at the next sample
            self.channel = None
            return None
        return int(declared.declaration_result.message_count)

    def count(self, queue: str) -> int | None:
        if self.loop.is_closed() or getattr(self.connection, "is_closed", False):
            return None
        with self.lock:
            future = asyncio.run_coroutine_threadsafe(self._count(queue), self.loop)
            try:
                return future.result(timeout=0.9)
            except Exception:
                future.cancel()
                return None


def _watch_depth(queue: Any) -> None:
    name = str(getattr(queue, "name", "") or "")
    if not name or not _amqp.depth_enabled("pika"):
        return
    try:
        channel = queue.channel
        connection = getattr(channel, "_connection", None)
        if connection is None:
            return
        watched: dict[Any, Any] = _state.setdefault("watched", {})
        key = (id(connection), name)
        if key in watched:
            return
        probes: dict[int, _Depth] = _state.setdefault("probes", {})
        prober = probes.get(id(connection))
        if prober is None:
            prober = probes[id(connection)] = _Depth(connection, asyncio.get_running_loop())
            # Open the channel now: a sample must fit the collection's probe budget.
            task = asyncio.get_running_loop().create_task(prober._count(name))
            _state.setdefault("tasks", set()).add(task)
            task.add_done_callback(_state["tasks"].discard)
        from otelkit._pipeline.queues import observe_queue

        def probe() -> int | None:
            return prober.count(name)

        probe.__qualname__ = f"aio_pika passive declare_queue {name}"
        watched[key] = observe_queue(name, probe, system=_amqp.SYSTEM, state="ready")
    except Exception:
        from otelkit._internal_log import logger

        logger.debug("otelkit: no queue depth for %s", name, exc_info=True)


# --- wiring ---------------------------------------------------------------------------------------

def _patch(_module: ModuleType) -> None:
    import aio_pika.exchange
    import aio_pika.message
    import aio_pika.queue

    targets: list[tuple[Any, str, Any]] = [
        (aio_pika.exchange.Exchange, "publish", _publish),
        (aio_pika.queue.Queue, "consume", _consume),
        (aio_pika.queue.Queue, "get", _get),
        (aio_pika.queue.QueueIterator, "__anext__", _anext),
        (aio_pika.queue.QueueIterator, "close", _iterator_close),
        (aio_pika.message.IncomingMessage, "ack", _settler("ack")),
        (aio_pika.message.IncomingMessage, "nack", _settler("nack")),
        (aio_pika.message.IncomingMessage, "reject", _settler("reject")),
    ]
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets


def _contrib_active() -> bool:
    module = sys.modules.get("opentelemetry.instrumentation.aio_pika")
    instrumentor = getattr(module, "AioPikaInstrumentor", None) if module is not None else None
    try:
        return bool(instrumentor is not None and instrumentor().is_instrumented_by_opentelemetry)
    except Exception:
        return False


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("aio-pika",), MIN_VERSION, "9.4", "aio-pika", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    global _enabled
    found = _common.supported_dist(NAME, ("aio-pika",), MIN_VERSION, "9.4", "aio-pika")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    if _contrib_active():
        return IntegrationStatus(NAME, "disabled", "the application enabled opentelemetry-instrumentation-aio-pika "
                                 "(AioPikaInstrumentor): otelkit does not add a second layer", version=version)
    _enabled = True
    note = "" if "aio_pika" in sys.modules else " (patched when the application imports it)"
    _lazy.when_imported(NAME, "aio_pika", _patch)
    return IntegrationStatus(NAME, "enabled", f"aio-pika {version}{note}", version=version)


def uninstrument() -> None:
    global _enabled
    _enabled = False
    _lazy.cancel(NAME)
    for owner, attribute, _wrapper in _state.pop("targets", []):
        _common.unwrap(owner, attribute)
    for key in list(_pulled):
        _end_pulled(key, None, None)
    for observation in _state.pop("watched", {}).values():
        observation.close()
    _state.pop("probes", None)
