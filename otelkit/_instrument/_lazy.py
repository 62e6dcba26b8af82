"""Instrument a library when the application imports it, not at ``init()``.

An integration whose library is installed but not imported yet registers a post-import hook
(``wrapt.register_post_import_hook``) instead of importing the library itself: ``init()`` stays cheap
for an application that has, say, SQLAlchemy installed as someone's dependency and never uses it,
and ``sys.modules`` shows only what the application imported. The integration is reported
``enabled`` with "instrumented when the application imports X"; the hook runs right after the
library's top-level module executes, before the application gets it. A later ``uninstrument()``
cancels a pending hook (wrapt cannot remove one, so the hook looks up what is pending and does
nothing when it is gone).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from otelkit._internal_log import logger

_lock = threading.Lock()
_pending: dict[str, Callable[[], Any]] = {}


def imported(module: str) -> bool:
    return module in sys.modules


def defer(key: str, module: str, action: Callable[[], Any]) -> None:
    """Run ``action`` when ``module`` is imported (now, if it already is); replaces a pending one of ``key``."""
    with _lock:
        _pending[key] = action
        hook = (key, module) not in _hooked_pairs
        if hook:
            _hooked_pairs.add((key, module))
    if imported(module):  # wrapt calls a hook of an imported module only once, at registration
        _run(key)
    elif hook:
        import wrapt

        wrapt.register_post_import_hook(lambda _module: _run(key), module)


_hooked_pairs: set[tuple[str, str]] = set()


def _run(key: str) -> None:
    with _lock:
        action = _pending.pop(key, None)
    if action is None:
        return
    try:
        action()
    except Exception as exc:  # telemetry never breaks the application's import
        logger.warning("otelkit: instrumenting %s at its import failed: %s: %s (the application continues "
                       "without it)", key, type(exc).__name__, exc)


def cancel(key: str) -> bool:
    """Drop a pending action; True when one was pending."""
    with _lock:
        return _pending.pop(key, None) is not None


def is_pending(key: str) -> bool:
    return key in _pending


def deferred_status(name: str, library: str, version: str, action: Callable[[], Any]) -> Any:
    """When ``library`` is not imported yet: defer ``action`` to its import and return the ``enabled`` status
    saying so; ``None`` when it is imported (the caller instruments now)."""
    if imported(library):
        return None
    from otelkit._status import IntegrationStatus

    defer(name, library, action)
    return IntegrationStatus(name, "enabled", f"{library} {version}; instrumented when the application imports "
                                              f"{library}", version=version)
