"""Dramatiq: a PRODUCER span per sent message, a CONSUMER span per processing, pipeline metrics.

No contrib instrumentation exists for Dramatiq; otelkit builds the telemetry from :mod:`otelkit.pipeline`'s
scopes, so a message gets what ``pipeline.emit``/``pipeline.receive`` give one:

* ``enqueue`` of the Redis, RabbitMQ and stub brokers (``actor.send``, ``send_with_options``, pipelines,
  groups) runs inside an :class:`~otelkit._pipeline.scopes.Emission`: span ``send {queue}`` (PRODUCER),
  ``messaging.system=dramatiq``, ``messaging.message.id`` = the message ID. The carrier (trace context,
  baggage with the correlation ID, emission time) is a dict in ``message.options["otelkit"]``, which
  Dramatiq encodes with the message and a worker without otelkit ignores. A message that already carries
  one (a retry, a delayed message moved to its queue, a re-send of the same message) keeps it: no second
  PRODUCER span, the original correlation ID and emission time.
* Processing (class-level hooks on ``Broker.emit_before/emit_after``, so brokers created before
  ``init()`` are covered and otelkit's hooks run first before and last after every middleware) runs inside
  a :class:`~otelkit._pipeline.scopes.Reception`: span ``process {queue}`` (CONSUMER), a root span *linked*
  to the producer (otelkit's rule for ``receive``), the correlation ID current for the whole message: the
  actor's spans and log records, and Dramatiq's own "Failed to process message" error line, carry it.
* Outcomes, decided after every middleware (``Retries`` included) ran: success -> ``ack``; an exception
  (or ``dramatiq.Retry``) that ``Retries`` re-enqueues -> ``retry``; a message failed for good -- retries
  exhausted, ``throws``, an age limit -- goes to the dead-letter queue ``{queue}.XQ`` -> ``dead_letter``;
  a skipped message that is not failed -> ``drop``. Attempt = ``options["retries"] + 1``. End-to-end
  latency counts from the first send across retries; time in queue from the retry's re-queue (or a
  delayed message's ETA).
* Queue depth: ``otelkit.messaging.queue.length`` per declared queue, ``state=ready`` and
  ``state=dead_letter`` (``{queue}.XQ``): Redis LLEN / ZCARD, RabbitMQ a passive declare on a connection of
  its own.
* The Redis broker's own commands (the dispatch Lua script: fetch, ack, nack, heartbeats, maintenance)
  are not traced: the send and process spans cover them. The actor's own Redis calls are traced.
* A worker process of the ``dramatiq`` CLI leaves through ``os._exit``: otelkit flushes its telemetry
  first (bounded by ``OTELKIT_CHILD_EXIT_TIMEOUT``).

* Async actors (the ``AsyncIO`` middleware) need nothing more: Dramatiq hands the actor's coroutine to its
  event-loop thread with ``asyncio.run_coroutine_threadsafe``, whose ``call_soon_threadsafe`` copies the calling
  worker thread's context, so the actor's spans are children of the process span and its spans and log records
  carry the correlation ID (tested).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from otelkit._instrument import _common, _jobs, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "dramatiq"
SYSTEM = "dramatiq"
MIN_VERSION = (1, 15)
_BROKER_MODULES = (("dramatiq.brokers.redis", "RedisBroker"), ("dramatiq.brokers.rabbitmq", "RabbitmqBroker"),
                   ("dramatiq.brokers.stub", "StubBroker"))

_state: dict[str, Any] = {"wanted": False, "patched": []}
_local = threading.local()  # scopes of the messages this worker thread processes: {message_id: Reception}


def _canonical(queue_name: str) -> str:
    return queue_name[:-3] if queue_name.endswith((".DQ", ".XQ")) else queue_name


def _scopes() -> dict[str, Any]:
    scopes = getattr(_local, "scopes", None)
    if scopes is None:
        scopes = _local.scopes = {}
    return scopes


def _processing() -> bool:
    return bool(getattr(_local, "scopes", None))


# --- producer ---------------------------------------------------------------------------------------

def _enqueue(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Broker.enqueue``: one PRODUCER span per new message; the broker's own commands untraced."""
    if not _state["wanted"] or (_jobs.is_quiet() and not _processing()):
        return wrapped(*args, **kwargs)
    message: Any = args[0] if args else kwargs.get("message")
    options = getattr(message, "options", None)
    if not isinstance(options, dict) or isinstance(options.get(_jobs.CARRIER_KEY), dict):
        # The same message again (a retry, a delayed message reaching its queue): its original carrier.
        token = _jobs.quiet()
        try:
            return wrapped(*args, **kwargs)
        finally:
            _jobs.detach(token)
    try:
        from otelkit._pipeline.scopes import Emission

        carrier: dict[str, Any] = {}
        # A copy: the caller's message object stays as it was.
        message = message.copy(options={_jobs.CARRIER_KEY: carrier})
        args = (message, *args[1:]) if args else args
        if not args:
            kwargs = {**kwargs, "message": message}
        queue = _canonical(str(message.queue_name))
        scope = Emission(queue, carrier, system=SYSTEM, message_id=message.message_id)
    except Exception as exc:
        logger.debug("otelkit: dramatiq enqueue not traced: %r", exc)
        return wrapped(*args, **kwargs)
    _observe(instance, queue)
    with scope:
        token = _jobs.quiet()
        try:
            return wrapped(*args, **kwargs)
        finally:
            _jobs.detach(token)


def _dispatch(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``RedisBroker._dispatch``: the Lua dispatch script (fetch, ack, nack, maintenance) runs untraced."""
    command = wrapped(*args, **kwargs)
    if not _state["wanted"]:
        return command

    def quiet_command(*a: Any, **kw: Any) -> Any:
        token = _jobs.quiet()
        try:
            return command(*a, **kw)
        finally:
            _jobs.detach(token)

    return quiet_command


# --- consumer ---------------------------------------------------------------------------------------

def _emit_before(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    signal = args[0] if args else None
    if not _state["wanted"] or signal not in ("process_message", "worker_boot"):
        return wrapped(*args, **kwargs)
    if signal == "worker_boot":
        _worker_boot(instance)
        return wrapped(*args, **kwargs)
    message = args[1] if len(args) > 1 else None
    if message is not None:
        _start(message)
    token = _jobs.quiet()  # the other middleware's hooks are Dramatiq's own work
    try:
        return wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)


def _emit_after(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    signal = args[0] if args else None
    if not _state["wanted"] or signal not in ("process_message", "skip_message"):
        return wrapped(*args, **kwargs)
    message = args[1] if len(args) > 1 else None
    token = _jobs.quiet()
    try:
        return wrapped(*args, **kwargs)  # Retries decides here: re-enqueue or fail
    finally:
        _jobs.detach(token)
        if message is not None:
            _finish(message, signal, kwargs.get("exception"))


def _start(message: Any) -> None:
    try:
        from otelkit._pipeline.scopes import Reception

        options = message.options if isinstance(getattr(message, "options", None), dict) else {}
        carrier = options.get(_jobs.CARRIER_KEY)
        retries = options.get("retries", 0)
        attempt = retries + 1 if type(retries) is int and retries >= 0 else None
        queued = options.get("eta") or options.get("requeue_timestamp") or getattr(message, "message_timestamp",
                                                                                    None)
        scope = Reception(_canonical(str(message.queue_name)), carrier if isinstance(carrier, dict) else None,
                          system=SYSTEM, message_id=message.message_id, attempt=attempt,
                          queued_at=_jobs.epoch(queued))
        scopes = _scopes()
        previous = scopes.pop(str(message.message_id), None)
        if previous is not None:  # never left open: close what a broken hook sequence left behind
            previous.__exit__(None, None, None)
        scope.__enter__()
        scopes[str(message.message_id)] = scope
    except Exception as exc:
        logger.debug("otelkit: dramatiq message not traced: %r", exc)


def _finish(message: Any, signal: str, exception: BaseException | None) -> None:
    scope = _scopes().pop(str(getattr(message, "message_id", "")), None)
    if scope is None:
        return
    try:
        failed = bool(getattr(message, "failed", False))
        if failed:
            scope.dead_letter(f"dead-letter queue {_canonical(str(message.queue_name))}.XQ")
        elif exception is not None:
            scope.retry(type(exception).__name__)
        elif signal == "skip_message":
            scope.drop("skipped")
        else:
            scope.ack()
    except Exception:
        pass
    if exception is not None and not (type(exception).__name__ == "Retry"
                                      and type(exception).__module__.startswith("dramatiq")):
        scope.__exit__(type(exception), exception, exception.__traceback__)
    else:  # dramatiq.Retry asks for another attempt: not an error (Dramatiq does not log it as one)
        scope.__exit__(None, None, None)


def _worker_boot(broker: Any) -> None:
    try:
        import multiprocessing

        if multiprocessing.parent_process() is not None:
            # A worker process of the dramatiq CLI leaves through os._exit (multiprocessing): flush first.
            from otelkit import _fork

            _fork.wrap_os_exit()
    except Exception:
        pass
    try:
        for queue in list(broker.get_declared_queues()):
            _observe(broker, _canonical(str(queue)))
    except Exception as exc:
        logger.debug("otelkit: dramatiq queue probes not set up: %r", exc)


# --- queue depth ------------------------------------------------------------------------------------

def _observe(broker: Any, queue: str) -> None:
    if _jobs.observed(SYSTEM, queue, "ready"):  # every send asks: answered by one dict lookup
        return
    kind = type(broker).__name__
    if hasattr(broker, "namespace") and hasattr(broker, "client"):  # RedisBroker
        client, key = broker.client, f"{broker.namespace}:{queue}"
        _jobs.observe(SYSTEM, queue, lambda: int(client.llen(key)), "ready")
        _jobs.observe(SYSTEM, queue, lambda: int(client.zcard(key + ".XQ")), "dead_letter")
    elif kind == "RabbitmqBroker" and hasattr(broker, "parameters"):
        probe = _RabbitDepth(broker.parameters)
        _jobs.observe(SYSTEM, queue, lambda: probe.count(queue), "ready")
        _jobs.observe(SYSTEM, queue, lambda: probe.count(queue + ".XQ"), "dead_letter")


class _RabbitDepth:
    """Passive declares on a connection of its own (the broker's channels belong to their threads)."""

    def __init__(self, parameters: Any) -> None:
        self.parameters = parameters
        self.lock = threading.Lock()
        self.connection: Any = None
        self.channel: Any = None
        self.failed_at = 0.0

    def count(self, queue: str) -> int | None:
        with self.lock:
            if self.channel is None:
                if time.monotonic() - self.failed_at < 30.0:
                    return None
                try:
                    import pika

                    self.connection = pika.BlockingConnection(self.parameters)
                    self.channel = self.connection.channel()
                except Exception:
                    self.failed_at = time.monotonic()
                    self.connection = self.channel = None
                    return None
            try:
                return int(self.channel.queue_declare(queue=queue, passive=True).method.message_count)
            except Exception:
                # A missing queue closes the channel: open a new one at the next sample.
                try:
                    self.connection.close()
                except Exception:
                    pass
                self.connection = self.channel = None
                return None


# --- patching ---------------------------------------------------------------------------------------

def _patch_core(_module: Any) -> None:
    if not _state["wanted"]:
        return
    from dramatiq.broker import Broker

    for attribute, wrapper in (("emit_before", _emit_before), ("emit_after", _emit_after)):
        _common.wrap(Broker, attribute, wrapper)
        _state["patched"].append((Broker, attribute))


def _patch_broker(module_name: str, class_name: str) -> Any:
    def patch(module: Any) -> None:
        if not _state["wanted"]:
            return
        broker = getattr(module, class_name, None)
        if broker is None:
            return
        _common.wrap(broker, "enqueue", _enqueue)
        _state["patched"].append((broker, "enqueue"))
        if class_name == "RedisBroker" and "_dispatch" in vars(broker):
            _common.wrap(broker, "_dispatch", _dispatch)
            _state["patched"].append((broker, "_dispatch"))

    return patch


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("dramatiq",), MIN_VERSION, "1.15", "dramatiq", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    def patches() -> None:
        if _state["patched"]:
            return
        _lazy.when_imported(NAME, "dramatiq.broker", _patch_core)
        for module_name, class_name in _BROKER_MODULES:
            _lazy.when_imported(NAME, module_name, _patch_broker(module_name, class_name))

    return _jobs.enable(NAME, "dramatiq", MIN_VERSION, "1.15", _state, patches)


def uninstrument() -> None:
    _jobs.unpatch(_state, SYSTEM)
