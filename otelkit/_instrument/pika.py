"""pika (RabbitMQ, AMQP 0-9-1): publish and consume as otelkit pipeline spans and metrics.

Replaces ``opentelemetry-instrumentation-pika`` rather than building on it: the contrib package
parents the consumer span to the producer, carries no correlation ID, records no metric and writes
the older attribute names; it also wraps every channel object at creation. otelkit wraps four
methods of ``pika.channel.Channel`` (which ``BlockingChannel`` calls too) and ``basic_consume``:

* ``basic_publish``: a PRODUCER span ``send {routing key}`` (``pipeline.emit``), context and
  correlation ID written into ``properties.headers``; a ``correlation_id`` property becomes the
  correlation ID when none is current;
* ``basic_consume`` callbacks (BlockingConnection, SelectConnection and the other adapters): a
  CONSUMER span ``process {routing key}`` (``pipeline.receive``, linked to the producer) around the
  callback, with the correlation ID (otelkit's header, else the AMQP ``correlation_id``) current for
  its duration. Attempt: ``x-delivery-count`` + 1 (quorum queues), else 2 when ``redelivered``;
* ``basic_ack`` / ``basic_nack`` / ``basic_reject`` inside the callback settle its span: ack; nack or
  reject with ``requeue=True`` → retry; ``requeue=False`` → dead letter;
* queue depth: each consumed queue is reported as ``otelkit.messaging.queue.length`` from a passive
  ``queue_declare`` (``message_count``: ready messages) on a connection of otelkit's own, sampled at
  each metric collection (``OTELKIT_PIKA_QUEUE_DEPTH=false`` turns it off).

* ``basic_get`` (the pull path): ``BlockingChannel.basic_get`` starts the CONSUMER span of the message it
  returns and makes it (and its correlation ID) current until the application settles that message with
  ``basic_ack``/``basic_nack``/``basic_reject`` (outcome as above); calling ``basic_get`` again first detaches
  the previous message's context (an unsettled message's span then ends when it is settled), and closing the
  channel ends what is left: ``retry`` for unsettled messages (RabbitMQ requeues them), ``ack`` under
  ``auto_ack=True``. The callback form of ``Channel.basic_get`` (asynchronous adapters) runs the callback
  inside the span, as ``basic_consume`` does.

Not traced: the ``BlockingChannel.consume()`` generator (no callback bounds the handling of a message there;
use ``pipeline.receive`` around it).
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from otelkit._instrument import _amqp, _common, _lazy
from otelkit._pipeline import carrying
from otelkit._status import IntegrationStatus

NAME = "pika"
MIN_VERSION = (1, 2)
_enabled = False
_state: dict[str, Any] = {}


def _server(channel: Any) -> tuple[str, int]:
    params = getattr(getattr(channel, "connection", None), "params", None)
    port = getattr(params, "port", 0)
    return str(getattr(params, "host", "") or ""), port if type(port) is int else 0


def _publish(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled or not _common.instrumentation_enabled() or carrying.publishing.get() is not None:
        # inside pipeline.emit(...): this publish carries that emission's message (one send span, not two)
        return wrapped(*args, **kwargs)
    try:
        exchange, routing_key, body, properties, mandatory = _publish_args(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    import pika

    from otelkit._pipeline.scopes import Emission

    try:
        if properties is None:
            properties = pika.BasicProperties()
        properties.headers = dict(properties.headers or {})  # the caller's dict is left as it was
        host, port = _server(instance)
        emission = Emission(_amqp.destination(str(exchange or ""), str(routing_key or "")), properties.headers,
                            system=_amqp.SYSTEM, message_id=properties.message_id,
                            correlation_id=_amqp.adopted_correlation_id(properties.correlation_id),
                            attributes=_amqp.attributes(str(routing_key or ""), str(exchange or ""), host, port))
    except Exception:  # odd properties: the message goes out untraced, never an error from telemetry
        return wrapped(*args, **kwargs)
    with emission:
        return wrapped(exchange, routing_key, body, properties, mandatory)


def _publish_args(exchange: str, routing_key: str, body: Any, properties: Any = None,
                  mandatory: bool = False) -> tuple[str, str, Any, Any, bool]:
    return exchange, routing_key, body, properties, mandatory


def _consume_args(queue: str, on_message_callback: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    return queue, on_message_callback


def _reception(impl: Any, method: Any, properties: Any) -> tuple[Any, int]:
    """The ``pipeline.receive`` scope of one delivery (``Basic.Deliver`` or ``Basic.GetOk``) and its tag."""
    from otelkit._pipeline.scopes import Reception

    routing_key = str(getattr(method, "routing_key", "") or "")
    exchange = str(getattr(method, "exchange", "") or "")
    tag = int(getattr(method, "delivery_tag", 0) or 0)
    host, port = _server(impl)
    attributes = {**_amqp.attributes(routing_key, exchange, host, port), _amqp.DELIVERY_TAG: tag}
    carrier, attempt = _amqp.delivery(getattr(properties, "headers", None),
                                      getattr(properties, "correlation_id", None),
                                      bool(getattr(method, "redelivered", False)))
    scope = Reception._of_delivery(_amqp.destination(exchange, routing_key), carrier, _amqp.SYSTEM,
                                   getattr(properties, "message_id", None), attempt, attributes)
    return scope, tag


def _traced_callback(callback: Callable[..., Any], queue: str) -> Callable[..., Any]:
    def on_message(channel: Any, method: Any, properties: Any, body: Any) -> Any:
        if not _enabled or not _common.instrumentation_enabled():
            return callback(channel, method, properties, body)
        try:
            impl = getattr(channel, "_impl", channel)
            scope, tag = _reception(impl, method, properties)
        except Exception:  # an odd delivery: handled untraced, never an error from telemetry
            return callback(channel, method, properties, body)
        with scope:
            token = _amqp.current.set((scope, tag, id(impl)))
            try:
                return callback(channel, method, properties, body)
            finally:
                _amqp.current.reset(token)

    on_message.__wrapped__ = callback  # type: ignore[attr-defined]
    return on_message


def _consume(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return wrapped(*args, **kwargs)
    try:
        queue, callback = _consume_args(*args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)
    owner = getattr(callback, "__self__", None)
    if callback is None or (owner is not None and type(owner).__name__ == "BlockingChannel"):
        # BlockingChannel hands pika.channel.Channel its own dispatcher: the user's callback is wrapped there.
        return wrapped(*args, **kwargs)
    traced = _traced_callback(callback, str(queue))
    if "on_message_callback" in kwargs:
        kwargs = {**kwargs, "on_message_callback": traced}
    else:
        args = (args[0], traced, *args[2:])
    result = wrapped(*args, **kwargs)
    _watch_depth(instance, str(queue))
    return result


def _ack_args(delivery_tag: int = 0, multiple: bool = False) -> tuple[int, bool, bool]:
    return delivery_tag, multiple, True


def _nack_args(delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> tuple[int, bool, bool]:
    return delivery_tag, multiple, requeue


def _reject_args(delivery_tag: int = 0, requeue: bool = True) -> tuple[int, bool, bool]:
    return delivery_tag, False, requeue


_SETTLE_ARGS = {"basic_ack": _ack_args, "basic_nack": _nack_args, "basic_reject": _reject_args}


def _settler(name: str) -> Any:
    parse = _SETTLE_ARGS[name]

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _enabled and (_amqp.current.get() is not None or _pulled):
            try:
                tag, multiple, requeue = parse(*args, **kwargs)
                if name == "basic_ack":  # an ack's reason is never recorded: no string per message
                    outcome, reason = "ack", ""
                else:
                    outcome = "retry" if requeue else "dead_letter"
                    reason = f"{name}(requeue={bool(requeue)})"
                _amqp.settle(id(instance), int(tag), bool(multiple), outcome, reason)
                if _pulled:
                    _settle_pulled(id(instance), int(tag), bool(multiple), outcome, reason)
            except Exception:  # odd arguments: pika raises its own error below
                pass
        return wrapped(*args, **kwargs)

    return wrapper


# --- basic_get (the pull path) ------------------------------------------------------------------------

# Messages taken with BlockingChannel.basic_get and not yet over, per channel (id of pika.channel.Channel):
# {delivery tag: (scope, auto_ack)}. No callback bounds their handling: each scope starts when basic_get returns
# and is current until the application settles the message (basic_ack/nack/reject on that channel), asks for
# the next one (basic_get again: the previous one's context is detached, its span stays open until settled or
# the channel closes), or closes the channel.
_pulled: dict[int, dict[int, tuple[Any, bool]]] = {}


def _end_pulled(scope: Any, outcome: str | None, reason: str | None) -> None:
    try:
        scope._set_outcome(outcome, reason)
        scope.__exit__(None, None, None)
    except Exception:  # telemetry never breaks the application's settle or close
        pass


def _settle_pulled(key: int, tag: int, multiple: bool, outcome: str, reason: str) -> None:
    held = _pulled.get(key)
    if not held:
        return
    tags = [t for t in held if t == tag or (multiple and (tag == 0 or t <= tag))]
    for t in sorted(tags, reverse=True):  # the newest first: the one whose context is current
        scope, _auto_ack = held.pop(t)
        _end_pulled(scope, outcome, reason)
    if not held:
        _pulled.pop(key, None)


def _release_current(key: int) -> None:
    """The application asks for another message: the previous pulled message's handling is over."""
    held = _pulled.get(key)
    if not held:
        return
    for tag in sorted(held, reverse=True):
        scope, auto_ack = held[tag]
        if auto_ack:  # settled by the broker on delivery: nothing else will end it
            del held[tag]
            _end_pulled(scope, "ack", None)
        else:  # still unsettled: its span waits for basic_ack/nack/reject, its context is no longer current
            scope._detach()
    if not held:
        _pulled.pop(key, None)


def _close_pulled(key: int) -> None:
    """The channel closes: unsettled messages go back to the queue (retry); auto-acked ones were acks."""
    held = _pulled.pop(key, None) or {}
    for tag in sorted(held, reverse=True):
        scope, auto_ack = held[tag]
        _end_pulled(scope, "ack" if auto_ack else "retry",
                    None if auto_ack else "channel closed with the message unsettled (requeued)")


def _release_adopted(scope: Any, exc: BaseException | None) -> None:
    """The application's own ``pipeline.receive`` of a pulled message ended first: settle it with its outcome."""
    for key, held in list(_pulled.items()):
        for tag, (pulled, _auto_ack) in list(held.items()):
            if pulled is scope:
                del held[tag]
        if not held:
            _pulled.pop(key, None)
    scope.__exit__(type(exc) if exc is not None else None, exc, exc.__traceback__ if exc is not None else None)


def _get_args(queue: str, auto_ack: bool = False) -> tuple[str, bool]:
    return queue, auto_ack


def _basic_get(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``BlockingChannel.basic_get``: a CONSUMER span for the message returned, current until it is settled."""
    if not _enabled:
        return wrapped(*args, **kwargs)
    impl = getattr(instance, "_impl", instance)
    key = id(impl)
    if _pulled:
        _release_current(key)
    result = wrapped(*args, **kwargs)
    if not _common.instrumentation_enabled():
        return result
    try:
        method, properties, _body = result
        if method is None:
            return result
        queue, auto_ack = _get_args(*args, **kwargs)
        _watch_depth(instance, str(queue))
        scope, tag = _reception(impl, method, properties)
        scope.__enter__()
        scope._release = _release_adopted
        _pulled.setdefault(key, {})[tag] = (scope, bool(auto_ack))
    except Exception:  # an odd result: the message is handled untraced, never an error from telemetry
        from otelkit._internal_log import logger

        logger.debug("otelkit: basic_get result not traced", exc_info=True)
    return result


def _channel_get(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Channel.basic_get(queue, callback)`` of the callback adapters: the callback runs inside the span."""
    if not _enabled:
        return wrapped(*args, **kwargs)
    callback = kwargs.get("callback", args[1] if len(args) > 1 else None)
    owner = getattr(callback, "__self__", None)
    if callback is None or (owner is not None and type(owner).__module__ == "pika.adapters.blocking_connection"):
        return wrapped(*args, **kwargs)  # BlockingChannel.basic_get's own callback: traced by _basic_get
    traced = _traced_callback(callback, str(kwargs.get("queue", args[0] if args else "")))
    if "callback" in kwargs:
        kwargs = {**kwargs, "callback": traced}
    else:
        args = (args[0], traced, *args[2:])
    return wrapped(*args, **kwargs)


def _channel_close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _pulled:
        _close_pulled(id(getattr(instance, "_impl", instance)))
    return wrapped(*args, **kwargs)


# --- queue depth ------------------------------------------------------------------------------------

class _DepthProbes:
    """Passive declares on one connection of otelkit's own per server (a BlockingConnection is not thread-safe)."""

    def __init__(self, params: Any) -> None:
        self.params = params
        self.lock = threading.Lock()
        self.connection: Any = None
        self.channel: Any = None

    def count(self, queue: str) -> int | None:
        import pika

        with self.lock:
            try:
                if self.connection is None or not self.connection.is_open:
                    self.connection = pika.BlockingConnection(self.params)
                    self.channel = None
                if self.channel is None or not self.channel.is_open:
                    self.channel = self.connection.channel()
                frame = self.channel.queue_declare(queue=queue, passive=True)
                return int(frame.method.message_count)
            except Exception:  # a deleted queue closes the channel: reopened at the next sample
                self.channel = None
                return None

    def close(self) -> None:
        with self.lock:
            connection, self.connection = self.connection, None
            try:
                if connection is not None and connection.is_open:
                    connection.close()
            except Exception:
                pass


def _watch_depth(channel: Any, queue: str) -> None:
    if not queue or not _amqp.depth_enabled("pika"):
        return
    try:
        impl = getattr(channel, "_impl", channel)
        params = impl.connection.params
        key = (params.host, params.port, params.virtual_host, queue)
        watched: dict[Any, Any] = _state.setdefault("watched", {})
        if key in watched:
            return
        server = (params.host, params.port, params.virtual_host)
        probes: dict[Any, _DepthProbes] = _state.setdefault("probes", {})
        prober = probes.get(server)
        if prober is None:
            own = copy.deepcopy(params)
            own.heartbeat = 0  # sampled once per collection: no heartbeat to miss between samples
            prober = probes[server] = _DepthProbes(own)
            # Connect now, off the application's thread: a sample must fit the collection's probe budget.
            threading.Thread(target=prober.count, args=(queue,), daemon=True, name="otelkit-pika-depth").start()
        from otelkit._pipeline.queues import observe_queue

        def probe() -> int | None:
            return prober.count(queue)

        probe.__qualname__ = f"pika passive queue_declare {queue}"
        watched[key] = observe_queue(queue, probe, system=_amqp.SYSTEM, state="ready")
    except Exception:
        from otelkit._internal_log import logger

        logger.debug("otelkit: no queue depth for %s", queue, exc_info=True)


# --- wiring ---------------------------------------------------------------------------------------

def _patch(_module: ModuleType) -> None:
    import pika.adapters.blocking_connection as blocking
    import pika.channel

    targets: list[tuple[Any, str, Any]] = [
        (pika.channel.Channel, "basic_publish", _publish),
        (pika.channel.Channel, "basic_consume", _consume),
        (blocking.BlockingChannel, "basic_consume", _consume),
        (pika.channel.Channel, "basic_ack", _settler("basic_ack")),
        (pika.channel.Channel, "basic_nack", _settler("basic_nack")),
        (pika.channel.Channel, "basic_reject", _settler("basic_reject")),
        (pika.channel.Channel, "basic_get", _channel_get),
        (blocking.BlockingChannel, "basic_get", _basic_get),
        (blocking.BlockingChannel, "close", _channel_close),
    ]
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets


def _contrib_active() -> bool:
    module = sys.modules.get("opentelemetry.instrumentation.pika")
    instrumentor = getattr(module, "PikaInstrumentor", None) if module is not None else None
    try:
        return bool(instrumentor is not None and instrumentor().is_instrumented_by_opentelemetry)
    except Exception:
        return False


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("pika",), MIN_VERSION, "1.2", "pika", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    global _enabled
    found = _common.supported_dist(NAME, ("pika",), MIN_VERSION, "1.2", "pika")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    if _contrib_active():
        return IntegrationStatus(NAME, "disabled", "the application enabled opentelemetry-instrumentation-pika "
                                 "(PikaInstrumentor): otelkit does not add a second layer", version=version)
    _enabled = True
    note = "" if "pika" in sys.modules else " (patched when the application imports it)"
    _lazy.when_imported(NAME, "pika", _patch)
    return IntegrationStatus(NAME, "enabled", f"pika {version}{note}", version=version)


def uninstrument() -> None:
    global _enabled
    _enabled = False
    _lazy.cancel(NAME)
    for owner, attribute, _wrapper in _state.pop("targets", []):
        _common.unwrap(owner, attribute)
    for key in list(_pulled):
        _close_pulled(key)
    for observation in _state.pop("watched", {}).values():
        observation.close()
    for prober in _state.pop("probes", {}).values():
        prober.close()

