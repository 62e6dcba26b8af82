"""FastStream: an otelkit broker middleware (RabbitMQ, NATS, Redis; Kafka and MQTT by the same path).

A middleware is the only place that sees inside FastStream's Redis frames: the headers travel in
the frame's binary header block, so a Redis command wrapper cannot read or write them.

* **Installed by init().** Every broker created after ``init()`` (``RedisBroker(...)``,
  ``RabbitBroker(...)``, ``NatsBroker(...)``) gets the middleware as its outermost one, unless it
  already has otelkit's or FastStream's own ``TelemetryMiddleware`` (one layer, never two spans per
  message). A broker created before ``init()`` takes it by hand:
  ``RedisBroker(url, middlewares=[otelkit.faststream_middleware()])``. FastStream is not imported by
  ``init()``: the patch is applied when the application imports it.
* **Publish.** A PRODUCER span ``send {destination}`` (``pipeline.emit``): trace context, baggage,
  correlation ID, attempt and emission time go into the message headers. The broker call that carries
  the message (LPUSH/XADD/PUBLISH, aio-pika's publish, nats-py's publish) is this operation: it runs
  with instrumentation suppressed, so the redis/aio-pika/nats integrations do not trace it again.
* **Consume.** A CONSUMER span ``process {destination}`` (``pipeline.receive``: a root span linked to
  the producer), with the correlation ID current for the handler and every middleware inside. A
  message without an otelkit correlation ID adopts FastStream's ``correlation_id`` (what FastStream's
  logs show). Attempt: RabbitMQ ``x-delivery-count`` + 1 or ``redelivered``; NATS JetStream
  ``num_delivered``. Outcome: the handler's ``message.ack/nack/reject`` or ``AckMessage`` /
  ``NackMessage`` / ``RejectMessage``; an exception follows the subscriber's ``ack_policy``
  (``REJECT_ON_ERROR`` → dead letter, ``NACK_ON_ERROR`` → retry; otherwise otelkit's classifier).
* **Redis polling.** FastStream's Redis subscribers poll (BLPOP, XREADGROUP, pub/sub reads) in a task
  of their own: those commands run with instrumentation suppressed (one root span per empty poll
  otherwise); the handler inside runs unsuppressed.
"""

from __future__ import annotations

import contextvars
import sys
from types import ModuleType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY
from otelkit._correlation import get_correlation_id, is_valid_correlation_id
from otelkit._instrument import _common, _lazy
from otelkit._names import CORRELATION_HEADER
from otelkit._pipeline import carriers
from otelkit._pipeline.scopes import BatchReception, Emission, Reception, _set_correlation_id
from otelkit._status import IntegrationStatus

NAME = "faststream"
MIN_VERSION = (0, 6)
_MODULE = "faststream"

_SYSTEMS = {"redis": "redis", "rabbit": "rabbitmq", "nats": "nats", "kafka": "kafka", "confluent": "kafka",
            "mqtt": "mqtt"}
_system_cache: dict[type, str] = {}
_enabled = False
_state: dict[str, Any] = {}

ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"


def _system(obj: object) -> str:
    cls = type(obj)
    system = _system_cache.get(cls)
    if system is None:
        parts = cls.__module__.split(".")
        system = _SYSTEMS.get(parts[1], parts[1]) if len(parts) > 1 and parts[0] == "faststream" else "faststream"
        _system_cache[cls] = system
    return system


def _suppressed() -> bool:
    return bool(otel_context.get_value(SUPPRESS_INSTRUMENTATION_KEY))


# Set in FastStream's Redis polling tasks, which run suppressed: a publish from there (a handler's reply,
# an @publisher) is still the application's message and is traced.
_polling: contextvars.ContextVar[bool] = contextvars.ContextVar("otelkit_faststream_polling", default=False)


# --- publish ----------------------------------------------------------------------------------------

_publish_attrs: dict[tuple[str, str, str], dict[str, Any]] = {}


def _publish_attributes(system: str, destination: str, exchange: str) -> dict[str, Any] | None:
    if system != "rabbitmq":
        return None
    key = (system, destination, exchange)
    attrs = _publish_attrs.get(key)
    if attrs is None:
        attrs = {ROUTING_KEY: destination}
        if exchange:
            attrs["messaging.rabbitmq.exchange.name"] = exchange
        if len(_publish_attrs) < 1024:
            _publish_attrs[key] = attrs
    return attrs


async def _publish(call_next: Any, cmd: Any) -> Any:
    if not _enabled or (_suppressed() and not _polling.get()):
        return await call_next(cmd)
    try:
        system = _system(cmd)
        destination = str(getattr(cmd, "destination", "") or "")
        exchange = ""
        if system == "rabbitmq":
            exchange = str(getattr(getattr(cmd, "exchange", None), "name", "") or "")
        headers = cmd.headers
        if type(headers) is not dict:
            headers = cmd.headers = dict(headers or {})
    except Exception:  # an odd command: published untraced
        return await call_next(cmd)
    # FastStream's own correlation_id (a fresh uuid per publish unless given) becomes otelkit's when no
    # correlation is current: FastStream's logs and otelkit's spans then show the same ID.
    cid = None
    if get_correlation_id() is None and is_valid_correlation_id(cmd.correlation_id):
        cid = cmd.correlation_id
    emission = Emission(destination, headers, system=system, correlation_id=cid,
                        message_id=getattr(cmd, "message_id", None),
                        attributes=_publish_attributes(system, destination, exchange))
    with emission:
        # The broker command carrying the message is this operation: not traced again below.
        token = otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            return await call_next(cmd)
        finally:
            otel_context.detach(token)


# --- consume ----------------------------------------------------------------------------------------

def _destination(system: str, raw: Any) -> str:
    if system == "redis" and isinstance(raw, dict):
        return str(raw.get("channel") or raw.get("list") or raw.get("stream") or "")
    if isinstance(raw, (list, tuple)) and raw:
        raw = raw[0]
    if system == "rabbitmq":
        return str(getattr(raw, "routing_key", "") or "")
    return str(getattr(raw, "subject", None) or getattr(raw, "topic", None) or "")


def _attempt(system: str, raw: Any) -> int | None:
    try:
        if system == "rabbitmq":
            count = (getattr(raw, "headers", None) or {}).get("x-delivery-count")
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                return count + 1
            return 2 if getattr(raw, "redelivered", False) else 1
        if system == "nats" and str(getattr(raw, "reply", "") or "").startswith("$JS.ACK."):
            return int(raw.metadata.num_delivered)
    except Exception:  # an odd message: no attempt rather than no span
        return None
    return None


_OUTCOME_BY_STATUS = {"ACKED": "ack", "NACKED": "retry", "REJECTED": "dead_letter"}
_OUTCOME_BY_EXCEPTION = {"AckMessage": "ack", "NackMessage": "retry", "RejectMessage": "dead_letter"}
_OUTCOME_BY_POLICY = {"REJECT_ON_ERROR": "dead_letter", "NACK_ON_ERROR": "retry"}


def _settle(scope: Any, outcome: str | None, reason: str | None) -> None:
    scope._set_outcome(outcome, reason)


def _unwrap_envelope(msg: Any) -> dict[str, Any] | None:
    """A plain otelkit producer's message (``LPUSH msg.wrap(payload)``): the handler gets the payload, and the
    envelope's headers carry the context. None for anything else (FastStream's own frames included)."""
    body = getattr(msg, "body", None)
    if not isinstance(body, (bytes, bytearray)) or not carriers.is_envelope(body):
        return None
    payload, headers = carriers.unwrap(body)
    if not headers:
        return None
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    elif not isinstance(payload, (bytes, bytearray)):
        import json

        payload = json.dumps(payload).encode("utf-8")
    msg.body = bytes(payload)
    msg.clear_cache()  # FastStream's documented step after changing the body
    return headers


def _carrier(msg: Any, extra: dict[str, Any] | None = None) -> Any:
    headers = msg.headers
    if not isinstance(headers, dict):
        headers = {}
    if extra:
        headers = {**headers, **extra}
    if carriers.get_raw(headers, CORRELATION_HEADER) is None and "baggage" not in headers:
        cid = getattr(msg, "correlation_id", None)
        if is_valid_correlation_id(cid):
            headers = {**headers, CORRELATION_HEADER: cid}  # adopted, never written back into the message
    return headers


async def _consume(middleware: Any, call_next: Any, msg: Any) -> Any:
    if not _enabled:
        return await call_next(msg)
    try:
        system = _system(msg)
        raw = msg.raw_message
        destination = _destination(system, raw)
    except Exception:
        return await call_next(msg)
    # FastStream's Redis polling task runs suppressed (see the module docstring); the handler does not.
    unsuppress = otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, False)) \
        if _suppressed() else None
    try:
        scope: Reception | BatchReception
        try:
            batch = getattr(msg, "batch_headers", None)
            if batch:
                scope = BatchReception(destination, list(batch), system=system)
            else:
                attributes = None
                if system == "rabbitmq":
                    tag = getattr(raw, "delivery_tag", 0)
                    attributes = {ROUTING_KEY: destination, DELIVERY_TAG: tag if type(tag) is int else 0}
                envelope = _unwrap_envelope(msg) if system == "redis" else None
                scope = Reception(destination, _carrier(msg, envelope), system=system, message_id=msg.message_id,
                                  attempt=_attempt(system, raw), attributes=attributes)
        except Exception:  # an odd message: handled untraced, never an error from telemetry
            return await call_next(msg)
        scope.__enter__()
        try:
            result = await call_next(msg)
        except BaseException as exc:
            kind = type(exc).__name__
            handled = _OUTCOME_BY_EXCEPTION.get(kind) if type(exc).__module__.startswith("faststream") else None
            if handled is not None:  # FastStream's way to settle a message: not a failure
                _settle(scope, handled, kind)
                scope.__exit__(None, None, None)
            else:
                _settle(scope, _policy_outcome(middleware), None)
                scope.__exit__(type(exc), exc, exc.__traceback__)
            raise
        status = getattr(msg.committed, "name", None) if msg.committed is not None else None
        _settle(scope, _OUTCOME_BY_STATUS.get(status) if status else None, f"message.{status.lower()}"
                if status and status != "ACKED" else None)
        scope.__exit__(None, None, None)
    finally:
        if unsuppress is not None:
            otel_context.detach(unsuppress)
    _keep_context(middleware, scope)  # after the detach above: contexts are detached in reverse order
    return result


def _keep_context(middleware: Any, scope: Reception | BatchReception) -> None:
    """After the handler, FastStream publishes its return value (``@publisher``, reply-to) outside consume_scope:
    the message's span and correlation ID stay current until the middleware exits, so that send is its child."""
    try:
        if scope.correlation_id is None or not scope.span.get_span_context().is_valid:
            return
        ctx = trace.set_span_in_context(scope.span, _set_correlation_id(otel_context.get_current(),
                                                                         scope.correlation_id))
        middleware._otelkit_token = otel_context.attach(ctx)
    except Exception:
        pass


def _release_context(middleware: Any) -> None:
    token = getattr(middleware, "_otelkit_token", None)
    if token is not None:
        middleware._otelkit_token = None
        try:
            otel_context.detach(token)
        except Exception:
            pass


def _policy_outcome(middleware: Any) -> str | None:
    try:
        handler = middleware.context.get_local("handler_")
        policy = getattr(getattr(handler, "ack_policy", None), "name", None)
    except Exception:
        return None
    return _OUTCOME_BY_POLICY.get(policy or "")


# --- the middleware ---------------------------------------------------------------------------------

_middleware_class: Any = None


def _make_class() -> Any:
    global _middleware_class
    if _middleware_class is not None:
        return _middleware_class
    from faststream import BaseMiddleware

    class OtelkitMiddleware(BaseMiddleware):
        """One message through otelkit's pipeline spans and metrics (see otelkit._instrument.faststream)."""

        _otelkit_token: Any = None

        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            return await _consume(self, call_next, msg)

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            return await _publish(call_next, cmd)

        async def after_processed(self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None) -> bool:
            _release_context(self)
            return False

    _middleware_class = OtelkitMiddleware
    return OtelkitMiddleware


class FastStreamMiddleware:
    """The broker middleware factory FastStream calls per message (``middlewares=[...]``)."""

    __slots__ = ()

    def __call__(self, msg: Any, /, *, context: Any) -> Any:
        return _make_class()(msg, context=context)

    def __repr__(self) -> str:
        return "otelkit.faststream_middleware()"


_MIDDLEWARE = FastStreamMiddleware()


def faststream_middleware() -> FastStreamMiddleware:
    """otelkit's FastStream middleware, for a broker created before ``init()`` (later ones get it by themselves).

    ``RedisBroker(url, middlewares=[otelkit.faststream_middleware()])``. It records nothing until
    ``init()`` has enabled the faststream integration.
    """
    return _MIDDLEWARE


def _has_telemetry(broker: Any) -> bool:
    for middleware in getattr(broker, "middlewares", ()) or ():
        if isinstance(middleware, FastStreamMiddleware):
            return True
        for cls in type(middleware).__mro__:
            if cls.__name__ == "TelemetryMiddleware" and cls.__module__.startswith("faststream."):
                return True  # FastStream's own OpenTelemetry middleware: one layer, never two
    return False


def _broker_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrapped(*args, **kwargs)
    if not _enabled:
        return
    try:
        if not _has_telemetry(instance):
            instance.insert_middleware(_MIDDLEWARE)  # outermost: user middlewares run inside the span
    except Exception:
        from otelkit._internal_log import logger

        logger.debug("otelkit: could not add the FastStream middleware", exc_info=True)


def _add_task(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _enabled:
        return wrapped(*args, **kwargs)
    # The task copies this context: its polling commands are not traced (the handler unsuppresses).
    token = otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True))
    polling = _polling.set(True)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _polling.reset(polling)
        otel_context.detach(token)


def _patch_core(_module: ModuleType) -> None:
    from faststream._internal.broker.broker import BrokerUsecase

    _common.wrap(BrokerUsecase, "__init__", _broker_init)
    _state.setdefault("targets", []).append((BrokerUsecase, "__init__"))


def _patch_redis(_module: ModuleType) -> None:
    from faststream.redis.subscriber.usecases.basic import LogicSubscriber

    _common.wrap(LogicSubscriber, "add_task", _add_task)
    _state.setdefault("targets", []).append((LogicSubscriber, "add_task"))


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("faststream",), MIN_VERSION, "0.6", "faststream", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    global _enabled
    found = _common.supported_dist(NAME, ("faststream",), MIN_VERSION, "0.6", "faststream")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    _enabled = True
    imported = _MODULE in sys.modules
    _lazy.when_imported(NAME, "faststream", _patch_core)
    _lazy.when_imported(NAME, "faststream.redis", _patch_redis)
    note = "" if imported else " (patched when the application imports it)"
    return IntegrationStatus(NAME, "enabled", f"faststream {version}: middleware on new brokers{note}",
                             version=version)


def uninstrument() -> None:
    global _enabled
    _enabled = False
    _lazy.cancel(NAME)
    for owner, attribute in _state.pop("targets", []):
        _common.unwrap(owner, attribute)


__all__ = ["FastStreamMiddleware", "faststream_middleware"]
