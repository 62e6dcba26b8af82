"""Celery: every task publish and run recorded as otelkit pipeline messages (see docs/integrations/celery.md).

otelkit replaces ``opentelemetry-instrumentation-celery`` rather than building on it (the measurements and the
reasons are in the docs page). It connects to Celery's public signals and reuses the pipeline scopes, so a Celery
task gets exactly what ``pipeline.emit`` / ``pipeline.receive`` give:

* **publish** (``before_task_publish`` .. ``after_task_publish``): a PRODUCER span ``send {queue}`` (an
  :class:`~otelkit._pipeline.scopes.Emission`), the trace context, the correlation ID and the emission time
  written into the task's message headers; the broker command that carries the message (LPUSH,
  ``basic.publish``) is that operation and is not traced again;
* **run** (``task_prerun`` .. ``task_postrun``): a CONSUMER span ``process {queue}`` (a
  :class:`~otelkit._pipeline.scopes.Reception`): a root span *linked* to the producer, otelkit's rule for every
  message; the correlation ID is current for the task's whole run, so every span and log record carries it;
* **outcomes** from Celery's final task state: SUCCESS ``ack``; RETRY (``Task.retry``, ``autoretry_for``)
  ``retry``; FAILURE ``dead_letter`` (the message is gone: Celery acknowledged it and only the result backend
  remembers it), the exception recorded; ``Reject(requeue=True)`` ``retry``, ``Reject`` ``dead_letter``;
  ``Ignore`` ``drop``;
* **retries**: the re-published message keeps the correlation ID and the *original* emission time, so
  end-to-end latency covers every attempt; the attempt is Celery's ``retries`` + 1;
* **queue depth** of the queues a worker consumes, through a passive ``queue_declare`` (Redis: the list lengths,
  AMQP: ``message_count``), reported by :func:`otelkit.pipeline.observe_queue`'s gauge;
* **silence**: the worker's own broker traffic outside tasks (BRPOP polling, unacked bookkeeping, pidbox,
  mingle/gossip/heartbeat events) runs with instrumentation suppressed: no root spans of its own.

* **canvas** (chain, group, chord, chunks): a canvas shares one correlation ID, the caller's: a canvas
  applied with a correlation ID current (``otelkit.correlate()``, a running task) carries that one; otherwise
  one fresh ID for the whole canvas. Every task of it gets its own PRODUCER span and its own CONSUMER span
  linked to that send; the sends Celery makes inside a worker (the next step of a chain, a chord's callback
  once its header is complete) are children of the CONSUMER span of the task that made them;
* **beat**: each run of a schedule entry is published as a fresh business event: a PRODUCER span with a
  correlation ID of its own (``celery.beat.entry`` names the entry), continued by the worker like any send;
* **result backend**: its calls (storing results, chord counters, the caller's result subscription) are
  Celery's bookkeeping and run suppressed; a message published inside one (a chord's callback) is traced.

When the application instruments Celery with the contrib package itself, otelkit steps aside (its spans are the
application's choice): one layer, never two spans for one operation.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from typing import Any, Literal
from urllib.parse import urlsplit

from opentelemetry import context as otel_context

from otelkit import _names
from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY
from otelkit._correlation import (
    get_correlation_id,
    is_valid_correlation_id,
    new_correlation_id,
    with_correlation_id,
)
from otelkit._instrument import _common, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "celery"
_LATE = "celery.late"  # the owner key of the hooks for modules only some processes import
MIN_VERSION = (5, 2)  # tested floor: 5.1 loses the correlation_id header (docs/install.md)
CONTRIB = "opentelemetry.instrumentation.celery"
ATTR_TASK_NAME = "celery.task_name"
ATTR_BEAT_ENTRY = "celery.beat.entry"
FOREIGN_CORRELATION_KEYS = ("correlation_id", "x-correlation-id", "correlation-id",
                            "messaging.message.conversation_id", "messaging.conversation_id")
"""Headers a foreign producer may carry its correlation ID in (adopted when otelkit's own is absent)."""

_UID = "otelkit-celery"

_state: dict[str, Any] = {}
_enabled = False
# Open publishes of this thread/task: (emission, suppression token, token lifting a result backend's suppression).
_publishing: contextvars.ContextVar[tuple[tuple[Any, object, object | None], ...]] = contextvars.ContextVar(
    "otelkit_celery_publishing", default=())
# Inside a result backend call (run suppressed): a publish there (a chord's callback) is still traced.
_in_backend: contextvars.ContextVar[bool] = contextvars.ContextVar("otelkit_celery_backend", default=False)
# The beat schedule entry being applied in this thread (its name goes on the send span).
_beat_entry: contextvars.ContextVar[str | None] = contextvars.ContextVar("otelkit_celery_beat", default=None)
# Running tasks by task id: (reception, un-suppression token).
_running: dict[str, tuple[Any, object | None]] = {}
_worker_token: list[object] = []
_observations: list[Any] = []
_broker_cache: dict[str, tuple[str, dict[str, Any]]] = {}


# --- helpers ----------------------------------------------------------------------------------------

def _contrib_active() -> bool:
    """True while the application's own ``CeleryInstrumentor`` is instrumenting (then otelkit steps aside)."""
    module = sys.modules.get(CONTRIB)
    if module is None:
        return False
    try:
        instrumentor = _state.get("contrib")
        if instrumentor is None:
            instrumentor = _state["contrib"] = module.CeleryInstrumentor()
        return bool(instrumentor.is_instrumented_by_opentelemetry)
    except Exception:
        return False


_last_app: list[Any] = [None, ("", {})]  # (app, its _broker() answer): the hot path is one identity check


def _broker(app: Any) -> tuple[str, dict[str, Any]]:
    """(messaging.system, server attributes) of ``app``'s broker, cached per app and per broker URL."""
    if app is not None and app is _last_app[0]:
        cached: tuple[str, dict[str, Any]] = _last_app[1]
        return cached
    result = _broker_of(app)
    _last_app[0], _last_app[1] = app, result
    return result


def _broker_of(app: Any) -> tuple[str, dict[str, Any]]:
    try:
        url = app.conf.broker_url or ""
    except Exception:
        url = ""
    if not isinstance(url, str):
        url = ""
    cached = _broker_cache.get(url)
    if cached is not None:
        return cached
    try:
        parts = urlsplit(url.split(";")[0])
        scheme = parts.scheme.split("+")[0].lower()
        host, port = parts.hostname, parts.port
    except ValueError:
        scheme, host, port = "", None, None
    system = {"redis": "redis", "rediss": "redis", "sentinel": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq",
              "pyamqp": "rabbitmq", "librabbitmq": "rabbitmq", "sqs": "aws_sqs"}.get(scheme, scheme or "celery")
    server: dict[str, Any] = {}
    if host:
        server["server.address"] = host  # never the URL: it may hold a password
        if port:
            server["server.port"] = port
    result = (system, server)
    if len(_broker_cache) < 64:
        _broker_cache[url] = result
    return result


_attr_cache: dict[tuple[int, object], dict[str, Any]] = {}


def _attributes(server: dict[str, Any], task_name: object) -> dict[str, Any]:
    """Span attributes of a task's messages, built once per broker and task name (bounded)."""
    key = (id(server), task_name)
    attrs = _attr_cache.get(key)
    if attrs is None:
        attrs = dict(server)
        if isinstance(task_name, str):
            attrs[ATTR_TASK_NAME] = task_name
        if len(_attr_cache) < 4096:
            _attr_cache[key] = attrs
    return attrs


_scopes: list[Any] = []  # [the pipeline scopes module, its Emission subclass for Celery], once imported


def _pipeline() -> Any:
    """``otelkit._pipeline.scopes``, imported at the first task rather than per signal (``from package import
    module`` runs importlib's ``_handle_fromlist`` each time) and not at otelkit's import (the SDK it loads)."""
    if not _scopes:
        from otelkit._pipeline import scopes

        class _TaskEmission(scopes.Emission):
            """A task's publish: the task id already travels in Celery's own ``id`` header and the worker hands
            it to the Reception, so otelkit's message-ID header would be a duplicate."""

            __slots__ = ()
            _id_header = False

        _scopes[:] = [scopes, _TaskEmission]
    return _scopes


def _current_app() -> Any:
    proxy = _state.get("current_app")
    if proxy is None:
        from celery import current_app

        proxy = _state["current_app"] = current_app
    return proxy._get_current_object()


def _suppress(value: bool) -> object:
    return otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, value))


def _as_int(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


# --- publish ------------------------------------------------------------------------------------------

def _before_publish(sender: Any = None, body: Any = None, exchange: Any = None, routing_key: Any = None,
                    headers: Any = None, **_kwargs: Any) -> None:
    if not _enabled or not isinstance(headers, dict) or _contrib_active():
        return
    lift: object | None = None
    if not _common.instrumentation_enabled():
        if not _in_backend.get():
            return
        lift = _suppress(False)  # the result backend is quiet, its publish (a chord's callback) is not
    try:
        scopes, emission_class = _pipeline()
        task_id = headers.get("id")
        destination = routing_key if isinstance(routing_key, str) and routing_key else (
            exchange if isinstance(exchange, str) and exchange else "celery")
        system, server = _broker(_current_app())
        retries = _as_int(headers.get("retries"))
        attrs = _attributes(server, headers.get("task"))
        entry = _beat_entry.get()
        if entry is not None:
            attrs = {**attrs, ATTR_BEAT_ENTRY: entry}
        carrier: dict[str, str] = {}
        # A retry re-publishes from inside the task's run: same correlation ID (baggage is current) and
        # the original emission time, so end-to-end latency counts from the first send.
        running = scopes.current_message()
        original = getattr(running, "sent_at", None) if (
            running is not None and getattr(running, "message_id", None) == task_id) else None
        emission = emission_class(destination, carrier, system=system,
                                   message_id=task_id if isinstance(task_id, str) else None,
                                   attempt=retries + 1 if retries else None, attributes=attrs)
        emission.__enter__()
        if original is not None:
            carrier[_names.SENT_AT_HEADER] = f"{original * 1000.0:.3f}"
        headers.update(carrier)
        # The broker command that carries the message is this operation: not traced twice.
        token = _suppress(True)
        _publishing.set((*_publishing.get(), (emission, token, lift)))
    except Exception:
        if lift is not None:
            otel_context.detach(lift)  # type: ignore[arg-type]
        logger.debug("otelkit: celery publish telemetry failed", exc_info=True)


def _close_publish(exc: BaseException | None) -> None:
    stack = _publishing.get()
    if not stack:
        return
    emission, token, lift = stack[-1]
    _publishing.set(stack[:-1])
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:
        pass
    try:
        emission.__exit__(type(exc) if exc else None, exc, None)
    finally:
        if lift is not None:
            try:
                otel_context.detach(lift)  # type: ignore[arg-type]
            except Exception:
                pass


def _after_publish(**_kwargs: Any) -> None:
    try:
        _close_publish(None)
    except Exception:
        logger.debug("otelkit: celery publish telemetry failed", exc_info=True)


def _send_task_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Around ``Celery.send_task``: a publish that raised never fires ``after_task_publish``; end its span here."""
    depth = len(_publishing.get())
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        try:
            while len(_publishing.get()) > depth:
                _close_publish(exc)
        except Exception:
            pass
        raise


def _canvas_apply(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``apply_async`` of a chain, group or chord: the whole canvas shares the caller's correlation ID.

    With none current, one fresh ID for the canvas (rather than one per task): every send, and every send a
    worker makes for it later (the next step, a chord's callback), carries it.
    """
    if not _enabled or get_correlation_id() is not None or not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    token = otel_context.attach(with_correlation_id(new_correlation_id()))
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _beat_service(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``beat.Service.start``: beat's own broker traffic (connecting, its ticks) runs suppressed."""
    if not _enabled or _contrib_active():
        return wrapped(*args, **kwargs)
    token = _suppress(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]


def _beat_apply(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Scheduler.apply_entry``: each scheduled run is a business event of its own: a fresh correlation ID,
    traced although the rest of beat's loop is suppressed (:func:`_beat_service`)."""
    if not _enabled:
        return wrapped(*args, **kwargs)
    entry = args[0] if args else kwargs.get("entry")
    name = getattr(entry, "name", None)
    marker = _beat_entry.set(name if isinstance(name, str) else None)
    ctx = with_correlation_id(new_correlation_id())
    token = otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, False, ctx))
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)
        _beat_entry.reset(marker)


def _quiet_backend(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A result backend call: Celery's own bookkeeping (SETEX/PUBLISH of a result, chord counters, the
    caller's SUBSCRIBE for its results), no span of its own; a publish inside stays traced."""
    if not _enabled or type(instance) is _state.get("disabled_backend") or _in_backend.get():
        return wrapped(*args, **kwargs)
    flag = _in_backend.set(True)
    token = _suppress(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            pass
        _in_backend.reset(flag)


_BACKEND_METHODS = ("mark_as_started", "mark_as_done", "mark_as_failure", "mark_as_retry", "mark_as_revoked",
                    "on_task_call", "apply_chord", "set_chord_size", "add_to_chord", "on_chord_part_return")


def _backend_targets(module: Any, class_name: str) -> list[tuple[Any, str]]:
    owner = getattr(module, class_name, None)
    return [(owner, name) for name in _BACKEND_METHODS if owner is not None and name in vars(owner)]


# --- run ----------------------------------------------------------------------------------------------

def _carrier(request: Any, task_id: str) -> dict[str, Any]:
    """The task's headers as a carrier; a foreign correlation ID is mapped to otelkit's header."""
    fields: dict[str, Any] = getattr(request, "__dict__", {})
    if _names.CORRELATION_HEADER in fields:
        return fields
    custom = fields.get("headers")
    for key in FOREIGN_CORRELATION_KEYS:
        value = fields.get(key)
        if (value is None or value == task_id) and isinstance(custom, dict):
            value = custom.get(key)
        # Celery sets the AMQP correlation_id property to the task id: only another value is a business ID.
        if value is not None and value != task_id and is_valid_correlation_id(value):
            carrier = dict(fields)
            carrier[_names.CORRELATION_HEADER] = value
            return carrier
    return fields


def _received(sender: Any = None, request: Any = None, **_kwargs: Any) -> None:
    """In the worker's main process, before the task runs (in this process or a pool child).

    Celery overwrites a ``correlation_id`` *header* with the message's ``correlation_id`` property (the task
    id) before the task sees its request: a foreign ID in the headers is copied to otelkit's header here.
    """
    if not _enabled or request is None:
        return
    try:
        fields = request.request_dict
        if not isinstance(fields, dict) or _names.CORRELATION_HEADER in fields:
            return
        headers = getattr(getattr(request, "message", None), "headers", None)
        if not isinstance(headers, dict):
            return
        task_id = fields.get("id")
        for key in FOREIGN_CORRELATION_KEYS:
            value = headers.get(key)
            if value is not None and value != task_id and is_valid_correlation_id(value):
                fields[_names.CORRELATION_HEADER] = value
                return
    except Exception:
        logger.debug("otelkit: celery received-task hook failed", exc_info=True)


def _prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_kwargs: Any) -> None:
    if not _enabled or task is None or not isinstance(task_id, str) or _contrib_active():
        return
    try:
        scopes = _pipeline()[0]
        request = task.request
        delivery = getattr(request, "delivery_info", None) or {}
        destination = delivery.get("routing_key") or delivery.get("exchange") or "celery"
        system, server = _broker(getattr(task, "app", None) or _current_app())
        retries = _as_int(getattr(request, "retries", None))
        attrs = _attributes(server, getattr(task, "name", None))
        # The worker's own broker traffic runs suppressed (worker_init); the task's work is traced.
        token = _suppress(False) if otel_context.get_value(SUPPRESS_INSTRUMENTATION_KEY) else None
        # An eager run (task_always_eager, Task.apply) is a call inside the caller's work: its child.
        parent: Literal["none", "current"] = "current" if getattr(request, "is_eager", False) else "none"
        reception = scopes.Reception(str(destination), _carrier(request, task_id), system=system,
                                     message_id=task_id, attempt=None if retries is None else retries + 1,
                                     parent=parent, attributes=attrs)
        reception.__enter__()
        _running[task_id] = (reception, token)
    except Exception:
        logger.debug("otelkit: celery task telemetry failed", exc_info=True)


def _postrun(sender: Any = None, task_id: Any = None, task: Any = None, retval: Any = None, state: Any = None,
             **_kwargs: Any) -> None:
    entry = _running.pop(task_id, None) if isinstance(task_id, str) else None
    if entry is None:
        return
    reception, token = entry
    exc: BaseException | None = None
    try:
        if state == "SUCCESS":
            reception.ack()
        elif state == "RETRY":
            cause = getattr(retval, "exc", None)
            reception.retry(_common.error_type(cause) if isinstance(cause, BaseException) else "retry")
        elif state == "FAILURE":
            exc = retval if isinstance(retval, BaseException) else None
            reception.dead_letter("task failed")
        elif state == "REJECTED":
            if getattr(retval, "requeue", False):
                reception.retry("rejected (requeued)")
            else:
                reception.dead_letter("rejected")
        elif state == "IGNORED":
            reception.drop("ignored")
    except Exception:
        logger.debug("otelkit: celery task outcome failed", exc_info=True)
    try:
        reception.__exit__(type(exc) if exc else None, exc, None)
    finally:
        if token is not None:
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:
                pass


# --- worker -------------------------------------------------------------------------------------------

def _worker_init(**_kwargs: Any) -> None:
    """Suppress instrumentation for the worker's own broker traffic (the consumer loop, pidbox, events)."""
    if _enabled and not _worker_token and not _contrib_active():
        _worker_token.append(_suppress(True))


def _worker_ready(sender: Any = None, **_kwargs: Any) -> None:
    if not _enabled or _contrib_active():
        return
    try:
        app = sender.app
        queues = sender.task_consumer.queues if getattr(sender, "task_consumer", None) else ()
        system, server = _broker(app)
        from otelkit._pipeline.queues import observe_queue

        for queue in queues:
            name = getattr(queue, "name", None)
            if isinstance(name, str) and name:
                _observations.append(observe_queue(name, _depth_probe(app, name, system == "redis"), system=system,
                                                   state="ready"))
    except Exception:
        logger.debug("otelkit: celery queue depth probes not registered", exc_info=True)


def _depth_probe(app: Any, queue: str, redis: bool) -> Any:
    """A probe reading ``queue``'s ready messages with a passive declare, on a connection of its own.

    On Redis a queue is a list that exists only while it holds messages: "no such queue" reads as 0 there.
    """
    lock = threading.Lock()
    holder: list[Any] = []

    def probe() -> int | None:
        with lock:
            if not holder:
                holder.append(app.connection_for_read())
            conn = holder[0]
            try:
                ok = conn.default_channel.queue_declare(queue=queue, passive=True)
            except Exception as error:
                if redis and "NOT_FOUND" in str(error):
                    return 0
                holder.clear()
                try:
                    conn.release()
                except Exception:
                    pass
                raise
            count = getattr(ok, "message_count", None)
            return count if isinstance(count, int) else None

    probe.__qualname__ = f"celery_queue_probe[{queue}]"
    return probe


def _worker_shutdown(**_kwargs: Any) -> None:
    while _observations:
        try:
            _observations.pop().close()
        except Exception:
            pass


# --- instrument / uninstrument ------------------------------------------------------------------------

def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("celery",), MIN_VERSION, "5.2", "celery", None)


_HANDLERS = {"task_received": _received, "before_task_publish": _before_publish,
             "after_task_publish": _after_publish, "task_prerun": _prerun, "task_postrun": _postrun,
             "worker_init": _worker_init, "worker_ready": _worker_ready, "worker_shutdown": _worker_shutdown}


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Connect to Celery's signals now, or when the application first imports celery (init() never imports it)."""
    global _enabled
    found = _common.supported_dist(NAME, ("celery",), MIN_VERSION, "5.2", "celery")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    _enabled = True
    if "celery" in sys.modules:
        _apply()
        note = ""
        if _contrib_active():
            note = (" (opentelemetry-instrumentation-celery is instrumenting: its spans are kept and otelkit "
                    "adds none)")
        return IntegrationStatus(NAME, "enabled", f"celery {version}{note}", version=version)
    # Importing celery costs ~100 ms: an application that has it installed but does not use it never pays.
    _lazy.when_imported(NAME, "celery", _on_import)
    return IntegrationStatus(NAME, "enabled", f"celery {version} (connected when the application imports celery)",
                             version=version)


def _on_import(_module: Any) -> None:
    if _enabled:  # a failure at the import is logged by _lazy
        _apply()


def _apply() -> None:
    from celery import canvas, signals
    from celery.app.base import Celery
    from celery.backends import base

    for name, handler in _HANDLERS.items():
        getattr(signals, name).connect(handler, weak=False, dispatch_uid=f"{_UID}-{name}")
    targets: list[tuple[Any, str, Any]] = [(Celery, "send_task", _send_task_wrapper)]
    targets += [(getattr(canvas, kind), "apply_async", _canvas_apply) for kind in ("_chain", "group", "_chord")
                if "apply_async" in vars(getattr(canvas, kind, object))]
    targets += [(owner, name, _quiet_backend) for owner, name in _backend_targets(base, "Backend")]
    for owner, name, wrapper in targets:
        _common.wrap(owner, name, wrapper)
    _state["patched"] = [(owner, name) for owner, name, _ in targets]
    # No result backend configured (``task_ignore_result`` apps, the default without ``result_backend``): its
    # methods store nothing and talk to no broker, so there is nothing to suppress around them (two calls a task).
    _state["disabled_backend"] = getattr(base, "DisabledBackend", None)
    # Loaded only by the processes that use them (a Redis result backend, ``celery beat``). Their own
    # owner key: a hook still waiting for ``celery.beat`` must not read as celery itself waiting.
    for module, patch in (("celery.backends.redis", _patch_redis_backend), ("celery.beat", _patch_beat)):
        _lazy.when_imported(_LATE, module, patch)


def _patch_late(targets: list[tuple[Any, str, Any]]) -> None:
    if not _enabled:
        return
    for owner, name, wrapper in targets:
        _common.wrap(owner, name, wrapper)
        _state.setdefault("patched", []).append((owner, name))


def _patch_redis_backend(module: Any) -> None:
    _patch_late([(owner, name, _quiet_backend) for owner, name in _backend_targets(module, "RedisBackend")])


def _patch_beat(module: Any) -> None:
    _patch_late([(module.Scheduler, "apply_entry", _beat_apply), (module.Service, "start", _beat_service)])


def uninstrument() -> None:
    global _enabled
    _enabled = False
    _lazy.cancel(NAME)
    _lazy.cancel(_LATE)
    if "celery" not in sys.modules:
        return
    try:
        from celery import signals
        from celery.app.base import Celery
    except ImportError:
        return
    for name, handler in _HANDLERS.items():
        getattr(signals, name).disconnect(handler, dispatch_uid=f"{_UID}-{name}")
    _common.unwrap(Celery, "send_task")
    for owner, name in _state.pop("patched", []):
        _common.unwrap(owner, name)
    _worker_shutdown()
