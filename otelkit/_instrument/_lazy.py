"""Instrument a library when the application imports it, not at ``init()``: the one import-hook mechanism.

``init()`` must not import libraries the application does not use (SQLAlchemy, FastAPI, Celery and
FastStream take 100s of ms; aio-pika pulls aiormq...), and ``sys.modules`` must show only what the
application imported. Every integration whose library is installed but not imported yet registers
:func:`when_imported`; :func:`instrument_when_imported` is the whole ``instrument()`` prelude of the
integrations that wrap one library (version check, deferral, contrib import).

* **When.** Now, in the calling thread, when the module is imported (a hook that raises then raises to the
  caller, which reports the integration ``failed``); else right after the module's own code runs, in the
  importing thread, before the application gets the module (``wrapt.register_post_import_hook``). A hook
  that raises at import is logged and never breaks the application's import.
* **Once.** One hook per (owner, module): registering again replaces the pending one (a re-``init()`` does
  not stack hooks); a hook runs once; importing the module again (a ``sys.modules`` hit) runs nothing, nor
  does ``importlib.reload`` (the owner's patches are idempotent on the classes they find; a fresh
  registration after the module left ``sys.modules`` runs at its next import).
* **Cancel.** wrapt cannot remove a hook: ours looks up what is pending when it fires, so
  :func:`cancel` (``uninstrument()``, or the integration disabled by name at a re-``init()``) leaves it
  doing nothing.
* **Threads.** A module another thread is importing at that moment is waited for (``importlib``'s module
  lock), not patched half-built; a hook registered while another thread fires the module's hooks runs
  exactly once (the pending table and wrapt's registration are ordered under one lock). The lock is
  renewed in a forked child; pending hooks stay pending there (a worker imports the library after fork).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from otelkit import _fork
from otelkit._instrument import _common
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

Hook = Callable[[ModuleType], Any]

_lock = threading.Lock()
_pending: dict[str, dict[str, Hook]] = {}  # module -> {owner: hook}
_armed: set[str] = set()  # modules whose wrapt hook is registered and has not fired yet


def _renew_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at fork time


_fork.at_fork(after_in_child=_renew_lock_in_child)


def _loaded(module: str) -> ModuleType | None:
    """The module when it is imported; waits for another thread's import of it that is under way."""
    found = sys.modules.get(module)
    if found is None:
        return None
    if getattr(getattr(found, "__spec__", None), "_initializing", False):
        # Mid-import: importlib waits for the importing thread (in this thread, an import cycle, it returns at once).
        try:
            return importlib.import_module(module)
        except Exception:  # that import failed: the module is not imported (a later import fires the hook)
            return sys.modules.get(module)
    return found


def when_imported(owner: str, module: str, hook: Hook) -> bool:
    """Call ``hook(module)`` now when ``module`` is imported (False), else right after its import (True).

    ``owner`` (the integration's name) keys the hook with ``module``: a new one replaces the pending one,
    :func:`cancel` drops it.
    """
    found = _loaded(module)
    if found is not None:
        with _lock:
            _pending.get(module, {}).pop(owner, None)
        hook(found)
        return False
    with _lock:
        _pending.setdefault(module, {})[owner] = hook
        arm = module not in _armed
        _armed.add(module)
    if arm:
        import wrapt

        # wrapt calls _fire at once when the module was imported in between: the hook still runs exactly once.
        wrapt.register_post_import_hook(_fire, module)
    return True


def _fire(module: ModuleType) -> None:
    name = module.__name__
    # wrapt also calls this at once when the module appeared between when_imported's check and its
    # registration: if another thread is still running the module's code, wait for it.
    module = _loaded(name) or module
    with _lock:
        hooks = _pending.pop(name, {})
        _armed.discard(name)
    for owner, hook in hooks.items():
        try:
            result = hook(module)
        except Exception as exc:  # telemetry never breaks the application's import
            logger.warning("otelkit: instrumenting %s at the import of %s failed: %s: %s (the application "
                           "continues without it)", owner, name, type(exc).__name__, exc)
            continue
        if isinstance(result, IntegrationStatus) and result.state not in ("enabled", "disabled"):
            logger.warning("otelkit: %s at the import of %s: %s: %s", owner, name, result.state, result.reason)


def cancel(owner: str) -> bool:
    """Drop every pending hook of ``owner``; True when one was pending."""
    dropped = False
    with _lock:
        for hooks in _pending.values():
            dropped = hooks.pop(owner, None) is not None or dropped
    return dropped


def is_pending(owner: str) -> bool:
    """Whether a hook of ``owner`` still waits for its module's import."""
    with _lock:
        return any(owner in hooks for hooks in _pending.values())


def instrument_when_imported(name: str, module: str, dists: Sequence[str], minimum: tuple[int, ...], needs: str,
                             install: str, now: Callable[[Any, str], IntegrationStatus],
                             contrib: str | None = None) -> IntegrationStatus:
    """The ``instrument()`` of an integration of one library: instrument now or when ``module`` is imported.

    Reports ``skipped`` for a missing or too old distribution (:func:`_common.supported_dist`, same
    arguments), else calls ``now(contrib_module, version)`` once ``module`` is imported: at once when it
    already is (its status is returned), else at the application's import (the status returned now says
    "instrumented when the application imports ..."). ``contrib`` names the upstream instrumentation
    module to import first (``None`` passed when there is none); ``skipped`` when it cannot be imported.
    """
    found = _common.supported_dist(name, dists, minimum, needs, install)
    if isinstance(found, IntegrationStatus):
        return found
    version = found[1]

    def run(_module: ModuleType) -> IntegrationStatus:
        instrumentation = None
        if contrib is not None:
            try:
                instrumentation = importlib.import_module(contrib)
            except ImportError as exc:
                return IntegrationStatus(name, "skipped", f"{contrib} is not importable ({exc}; pip install "
                                                          f"{install})", version=version)
        return now(instrumentation, version)

    loaded = _loaded(module)
    if loaded is not None:
        cancel(name)  # a hook of an earlier init() must not run again later
        return run(loaded)
    when_imported(name, module, run)
    return IntegrationStatus(name, "enabled", f"{module} {version}; instrumented when the application imports "
                                              f"{module}", version=version)
