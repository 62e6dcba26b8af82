"""The broker command that carries a message is the messaging operation: it is not traced twice.

Inside ``pipeline.emit(..., system="redis")`` the first LPUSH/RPUSH/XADD/PUBLISH (the command that
sends the message) gets no redis span and no ``db.client.operation.duration`` point of its own:
the PRODUCER span ``send {destination}`` and ``messaging.client.operation.duration`` already
cover its time, and the span gets the command's ``server.address``/``server.port`` and
``otelkit.broker.command``.

On the consumer side the pop (BRPOP, RPOP, BLMOVE...) runs *before* ``receive()``, so its
telemetry is deferred: once the process has used a redis ``emit``/``receive``, a pop that returns
a message is timed but not traced yet. When ``receive()`` then gets that very message (the same
object), the CONSUMER span takes the command's server attributes, ``otelkit.broker.command`` and
``otelkit.broker.duration`` (seconds), and ``messaging.client.operation.duration`` gets a
``receive`` point. Anything else -- the next redis command on the thread, a ``receive()`` of
another object, process exit -- first emits the deferred command's ordinary redis span (with its
real start and end times and parent) and metric point, so nothing is lost. A pop that fails or
returns nothing is traced as usual at once.

Only the single-layer sync path (``Redis.execute_command`` when otelkit owns the redis
instrumentation) folds; pipelines, cluster and asyncio clients are traced as usual.
"""

from __future__ import annotations

import atexit
import contextvars
import threading
from collections.abc import Callable
from typing import Any

from otelkit import _fork

EMIT_COMMANDS = frozenset({"LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "XADD", "PUBLISH", "SPUBLISH"})
RECEIVE_COMMANDS = frozenset({"BRPOP", "BLPOP", "RPOP", "LPOP", "BLMOVE", "LMOVE", "BRPOPLPUSH", "RPOPLPUSH"})

ATTR_COMMAND = "otelkit.broker.command"
ATTR_DURATION = "otelkit.broker.duration"

active = False
"""True once a redis emit/receive ran in this process: until then no command is looked at."""

# The emission whose carrying command has not been sent yet (a one-element list: cleared when used).
_emitting: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("otelkit_emitting", default=None)


class Pending:
    """A pop that returned a message, timed, whose telemetry waits for ``receive()``."""

    __slots__ = ("attributes", "command", "duration", "emit", "result")

    def __init__(self, command: str, result: Any, duration: float, attributes: dict[str, Any],
                 emit: Callable[[], None]) -> None:
        self.command = command
        self.result = result
        self.duration = duration
        # ATTR_COMMAND and the server address/port for the consumer span: shared between messages, not mutated
        self.attributes = attributes
        self.emit = emit  # makes the ordinary redis span + metric point

    def carries(self, carrier: object) -> bool:
        result = self.result
        if carrier is result:
            return True
        if isinstance(result, (tuple, list)):
            return any(carrier is item for item in result)
        return False


_pending: dict[int, Pending] = {}
_atexit_registered = False
_lock = threading.Lock()

# A forked child must not emit its parent's deferred commands (the parent does, or already did).
_fork.at_fork(after_in_child=_pending.clear)


def _command(args: tuple[Any, ...]) -> str:
    if not args:
        return ""
    name = args[0]
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.upper() if isinstance(name, str) else ""


def kind(args: tuple[Any, ...]) -> str | None:
    """"emit" / "receive" when this command carries a message in an emit/receive flow, else None."""
    command = _command(args)
    if command in EMIT_COMMANDS:
        return "emit" if _emitting.get() else None
    if command in RECEIVE_COMMANDS:
        return "receive"
    return None


def flush() -> None:
    """Emit the current thread's deferred command as an ordinary redis span (see the module docstring)."""
    pending = _pending.pop(threading.get_ident(), None)
    if pending is not None:
        try:
            pending.emit()
        except Exception:
            pass


def _flush_all() -> None:
    for ident in list(_pending):
        pending = _pending.pop(ident, None)
        if pending is not None:
            try:
                pending.emit()
            except Exception:
                pass


def defer(pending: Pending) -> None:
    global _atexit_registered
    flush()
    _pending[threading.get_ident()] = pending
    if not _atexit_registered:
        with _lock:
            if not _atexit_registered:
                # Registered after init(): atexit runs it before otelkit's own shutdown flush.
                atexit.register(_flush_all)
                _atexit_registered = True


def fold_emit(attributes: dict[str, Any]) -> None:
    """The send span takes the carrying command's ``attributes`` (ATTR_COMMAND and the server's address/port)."""
    holder = _emitting.get()
    if not holder:
        return
    scope = holder.pop()
    span = getattr(scope, "span", None)
    if span is not None:
        span.set_attributes(attributes)


# --- called by the pipeline scopes ------------------------------------------------------------------

# The emission (any system but redis) whose block is running: a broker integration's publish inside it
# (pipeline.emit(...) around channel.basic_publish) is that emission's carrying call, not a second send span.
publishing: contextvars.ContextVar[Any] = contextvars.ContextVar("otelkit_publishing", default=None)


def enter_emit(scope: Any) -> contextvars.Token[Any] | None:
    global active
    if scope.system != "redis":
        return publishing.set(scope)
    active = True
    return _emitting.set([scope])


def exit_emit(token: contextvars.Token[Any] | None) -> None:
    if token is not None:
        token.var.reset(token)


def take_receive(system: str, carrier: object) -> Pending | None:
    """The deferred pop that carried ``carrier`` (to fold into the consumer span), or None."""
    global active
    if system != "redis":
        return None
    active = True
    ident = threading.get_ident()
    pending = _pending.get(ident)
    if pending is None:
        return None
    if pending.carries(carrier):
        del _pending[ident]
        return pending
    flush()
    return None


def server_attributes(span_attributes: dict[str, Any]) -> dict[str, Any]:
    """The server address/port among a redis span's connection attributes (old and stable names)."""
    out: dict[str, Any] = {}
    for new, old in (("server.address", "net.peer.name"), ("server.port", "net.peer.port")):
        value = span_attributes.get(new, span_attributes.get(old))
        if value is not None:
            out[new] = value
    return out
