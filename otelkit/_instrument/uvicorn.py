"""uvicorn: every signal is flushed when uvicorn's own graceful shutdown has finished.

uvicorn (0.29+) re-raises the SIGTERM it handled once its graceful shutdown is over, with the default handler
back: the process dies without running ``atexit``, where otelkit flushes. The frameworks' lifespan shutdown
flushes too (:mod:`otelkit._instrument._asgi`, for every ASGI server), but a bare ASGI callable has no lifespan,
and a worker's telemetry of its last second was lost. ``Server.shutdown`` is wrapped, not ``serve``: uvicorn
looks it up when it stops, so this holds also when ``init()`` runs inside the app's module, i.e. while uvicorn
already serves. The flush runs on the loop, blocking, bounded by ``shutdown_timeout``: the server no longer
serves, and the process ends right after. No spans of uvicorn's own.
"""

from __future__ import annotations

import sys
from typing import Any

from otelkit._instrument import _common, _lazy
from otelkit._status import IntegrationStatus

NAME = "uvicorn"
MIN_VERSION = (0, 23)

_state: dict[str, Any] = {"active": False, "timeout": 5.0}


async def _shutdown_then_flush(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if _state["active"]:
            from otelkit._instrument import _web

            _web.flush_at_server_shutdown(_state["timeout"])


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("uvicorn",), MIN_VERSION, "0.23", "uvicorn", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    _state["timeout"] = ctx.settings.shutdown_timeout

    def now(_contrib: Any, version: str) -> IntegrationStatus:
        # From sys.modules: the hook runs right after uvicorn.server's code, while the ``uvicorn`` package that
        # imports it is still initialising (``uvicorn.server`` is not yet an attribute of it).
        server = sys.modules["uvicorn.server"].Server
        _common.wrap(server, "shutdown", _shutdown_then_flush)
        _state["active"] = True
        return IntegrationStatus(NAME, "enabled", f"uvicorn {version}; telemetry flushed when its graceful shutdown "
                                                  "ends (it exits without atexit)", version=version)

    status = _lazy.instrument_when_imported(NAME, "uvicorn.server", ("uvicorn",), MIN_VERSION, "0.23", "uvicorn", now)
    if status.state == "enabled":
        _state["active"] = True
    return status


def uninstrument() -> None:
    _state["active"] = False
    _lazy.cancel(NAME)
