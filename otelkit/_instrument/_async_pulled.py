"""The context of a pulled message ended from another asyncio task (aio-pika ``get``/``iterator``, NATS ``fetch``).

A pulled message's scope is attached in the task that pulled it and stays current there until the message is
settled. When another task ends it (an iterator closed by a shutdown task, a message settled by a worker task),
its context token cannot be detached there: a token belongs to the context that attached it. It is parked for the
pulling task instead, which gives it back at its next pull (``get()``, an iteration, a close, ``fetch()``).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from opentelemetry import context as otel_context

# Per pulling task: the (context token, context-variable token) pairs of its messages other tasks ended.
orphans: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any]]] = weakref.WeakKeyDictionary()


def current_task() -> Any:
    """The running asyncio task, or None outside one."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def forget(scope: Any, task: Any) -> None:
    """Detach ``scope``'s context now if this is the task that attached it, else park it for that task."""
    if task is not None and current_task() is not task:
        tokens = (scope._token, scope._cv_token)
        scope._token = scope._cv_token = None
        if tokens != (None, None):
            orphans.setdefault(task, []).append(tokens)
    else:
        scope._detach()


def give_back() -> None:
    """In the pulling task: detach the context of its messages another task ended (newest first)."""
    task = current_task()
    tokens = orphans.pop(task, None) if task is not None else None
    for token, cv_token in reversed(tokens or ()):
        try:
            if token is not None:
                otel_context.detach(token)
            if cv_token is not None:
                cv_token.var.reset(cv_token)
        except Exception:  # telemetry never breaks the application's loop
            pass
