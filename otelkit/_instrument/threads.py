"""Trace context into threads, timers and thread pools (integration name ``threading``).

``Thread(...).start()``, ``threading.Timer`` and ``ThreadPoolExecutor.submit`` (which
``loop.run_in_executor`` uses) do not carry ``contextvars`` into the other thread: without this,
the API calls an enrichment worker makes from a thread pool are root spans of new traces, and
they lose the message's correlation ID. With it, work done in a thread belongs to the span and
baggage (correlation ID) that were current where the thread was started or the function submitted.
On whenever ``init()`` instruments libraries; ``instrument=`` and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (name ``threading``) choose.

Why not ``opentelemetry-instrumentation-threading``: it attaches the context in a wrapper of
``Thread.run``, which misses every ``Thread`` subclass that overrides ``run()``, and which is
bypassed when Sentry's default ThreadingIntegration is on (Sentry gives each started thread a
``run`` that calls the *unwrapped* function). otelkit attaches the context around
``Thread._bootstrap_inner`` instead: the method every Python thread runs, in the new thread,
around ``run()`` (present from CPython 3.10 to 3.14). Both cases are tests in
``tests/unit/test_instrument_threading.py``.

A thread started inside a span keeps that context for its whole life; a consumer loop running in
such a thread still gets one trace per message (``pipeline.receive`` starts a root span by default).
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

from opentelemetry import context as otel_context

from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

NAME = "threading"
REASON = "context follows Thread.start, Timer and ThreadPoolExecutor.submit (and run_in_executor)"
_ATTR = "_otelkit_context"

_active = False


def _start(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if _active:
        try:
            instance.__dict__[_ATTR] = otel_context.get_current()
        except Exception:  # a Thread subclass with __slots__ and no __dict__: it runs without the context
            pass
    return wrapped(*args, **kwargs)


def _bootstrap_inner(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    try:
        ctx = instance.__dict__.pop(_ATTR, None)  # popped: the Thread object does not keep the span alive
    except Exception:
        ctx = None
    if ctx is None or not _active:
        return wrapped(*args, **kwargs)
    token = otel_context.attach(ctx)
    try:
        return wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


def _submit(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _active or not args:
        return wrapped(*args, **kwargs)
    fn, ctx = args[0], otel_context.get_current()

    def in_context(*fn_args: Any, **fn_kwargs: Any) -> Any:
        token = otel_context.attach(ctx)
        try:
            return fn(*fn_args, **fn_kwargs)
        finally:
            otel_context.detach(token)

    return wrapped(in_context, *args[1:], **kwargs)


_TARGETS: tuple[tuple[type, str, Callable[..., Any]], ...] = (
    (threading.Thread, "start", _start),
    (threading.Thread, "_bootstrap_inner", _bootstrap_inner),
    (futures.ThreadPoolExecutor, "submit", _submit),
)


def _has_otelkit_layer(owner: type, attribute: str) -> bool:
    """Whether otelkit's wrapper is anywhere in the chain (another library may have wrapped it since)."""
    func = vars(owner).get(attribute)
    for _ in range(16):
        if func is None:
            return False
        if getattr(func, "_self_otelkit", False):
            return True
        func = getattr(func, "__wrapped__", None)
    return False


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report (``otelkit doctor``)."""
    if "_bootstrap_inner" not in vars(threading.Thread):
        return IntegrationStatus(NAME, "skipped", "this Python's threading.Thread has no _bootstrap_inner")
    return IntegrationStatus(NAME, "enabled", REASON, version=platform.python_version())


def instrument(ctx: _common.Context) -> IntegrationStatus:
    global _active
    if "_bootstrap_inner" not in vars(threading.Thread):
        return IntegrationStatus(NAME, "skipped", "this Python's threading.Thread has no _bootstrap_inner")
    for owner, attribute, wrapper in _TARGETS:
        if not _has_otelkit_layer(owner, attribute):
            _common.wrap(owner, attribute, wrapper)
    _active = True
    return IntegrationStatus(NAME, "enabled", REASON, version=platform.python_version())


def uninstrument() -> None:
    global _active
    _active = False  # a layer something else wrapped over stays in place, inert
    for owner, attribute, _wrapper in _TARGETS:
        _common.unwrap(owner, attribute)
