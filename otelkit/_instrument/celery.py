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
from otelkit._correlation import is_valid_correlation_id
from otelkit._instrument import _common
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "celery"
MIN_VERSION = (5, 2)  # tested floor: 5.1 loses the correlation_id header (docs/install.md)
CONTRIB = "opentelemetry.instrumentation.celery"
ATTR_TASK_NAME = "celery.task_name"
FOREIGN_CORRELATION_KEYS = ("correlation_id", "x-correlation-id", "correlation-id",
                            "messaging.message.conversation_id", "messaging.conversation_id")
"""Headers a foreign producer may carry its correlation ID in (adopted when otelkit's own is absent)."""

_UID = "otelkit-celery"

_state: dict[str, Any] = {}
_enabled = False
# Open publishes of this thread/task: (emission, suppression token).
_publishing: contextvars.ContextVar[tuple[tuple[Any, object], ...]] = contextvars.ContextVar(
    "otelkit_celery_publishing", default=())
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
    if not _enabled or not isinstance(headers, dict) or _contrib_active() or not _common.instrumentation_enabled():
        return
    try:
        from otelkit._pipeline import scopes

        task_id = headers.get("id")
        destination = routing_key if isinstance(routing_key, str) and routing_key else (
            exchange if isinstance(exchange, str) and exchange else "celery")
        system, server = _broker(_current_app())
        retries = _as_int(headers.get("retries"))
        attrs = _attributes(server, headers.get("task"))
        carrier: dict[str, str] = {}
        # A retry re-publishes from inside the task's run: same correlation ID (baggage is current) and
        # the original emission time, so end-to-end latency counts from the first send.
        running = scopes.current_message()
        original = getattr(running, "sent_at", None) if (
            running is not None and getattr(running, "message_id", None) == task_id) else None
        emission = scopes.Emission(destination, carrier, system=system,
                                   message_id=task_id if isinstance(task_id, str) else None,
                                   attempt=retries + 1 if retries else None, attributes=attrs)
        emission.__enter__()
        if original is not None:
            carrier[_names.SENT_AT_HEADER] = f"{original * 1000.0:.3f}"
        headers.update(carrier)
        # The broker command that carries the message is this operation: not traced twice.
        token = _suppress(True)
        _publishing.set((*_publishing.get(), (emission, token)))
    except Exception:
        logger.debug("otelkit: celery publish telemetry failed", exc_info=True)


def _close_publish(exc: BaseException | None) -> None:
    stack = _publishing.get()
    if not stack:
        return
    emission, token = stack[-1]
    _publishing.set(stack[:-1])
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:
        pass
    emission.__exit__(type(exc) if exc else None, exc, None)


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
        from otelkit._pipeline import scopes

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
    if not _state.get("hooked"):
        import wrapt

        # Importing celery costs ~100 ms: an application that has it installed but does not use it never pays.
        wrapt.register_post_import_hook(_on_import, "celery")
        _state["hooked"] = True
    return IntegrationStatus(NAME, "enabled", f"celery {version} (connected when the application imports celery)",
                             version=version)


def _on_import(_module: Any) -> None:
    if _enabled:
        try:
            _apply()
        except Exception:
            logger.warning("otelkit: instrumenting celery failed (the application continues without it)",
                           exc_info=True)


def _apply() -> None:
    from celery import signals
    from celery.app.base import Celery

    for name, handler in _HANDLERS.items():
        getattr(signals, name).connect(handler, weak=False, dispatch_uid=f"{_UID}-{name}")
    _common.wrap(Celery, "send_task", _send_task_wrapper)


def uninstrument() -> None:
    global _enabled
    _enabled = False
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
    _worker_shutdown()
