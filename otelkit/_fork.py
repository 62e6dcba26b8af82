"""Telemetry that keeps working in forked workers, without a ``post_fork`` hook.

``install(reinit)`` registers ``os.register_at_fork`` handlers once per process. In every child:

1. the export pipelines forget what the parent had queued or in flight (the parent exports it,
   so nothing arrives twice), drop spans the parent had open when they end in the child (Logfire
   re-exports those), reconnect (new gRPC channel / HTTP session: a socket shared with the parent
   corrupts both) and restart their export thread; the drop/export counters restart at zero;
2. ``reinit()`` (given by ``init()``) runs, so the child gets fresh providers: a fresh meter
   provider never re-exports the parent's frozen cumulative metrics;
3. ``os._exit`` is wrapped so a child leaving that way (``multiprocessing`` workers, Celery/billiard
   prefork children recycled by ``max_tasks_per_child``, bare ``os.fork()`` children) first flushes
   what it queued, bounded by ``OTELKIT_CHILD_EXIT_TIMEOUT`` (2 s by default). Children that exit normally (gunicorn
   workers) run the ``atexit`` shutdown as usual.

:func:`fork_model_warnings` tells ``otelkit doctor`` which pre-fork server model it sees.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from otelkit._internal_log import logger

EXIT_FLUSH_TIMEOUT = 2.0
"""Seconds a child leaving through ``os._exit`` may spend flushing its telemetry."""

_installed_pid: int | None = None
_exiting = False
_child_resets: list[Callable[[int | None], None]] = []
_exit_flushes: list[Callable[[float], object]] = []
_reinit: Callable[[], None] | None = None
_exit_flush_timeout = EXIT_FLUSH_TIMEOUT


def register(*, child_reset: Callable[[int | None], None] | None = None,
             exit_flush: Callable[[float], object] | None = None) -> None:
    """Register what must run in a forked child (``child_reset(forked_at)``, before ``reinit``) and
    what a child leaving through ``os._exit`` must flush (``exit_flush(timeout)``).

    The export package registers here at import, so this module needs to know nothing about it
    (and imports nothing of otelkit's but the internal logger). Registering twice is a no-op."""
    if child_reset is not None and child_reset not in _child_resets:
        _child_resets.append(child_reset)
    if exit_flush is not None and exit_flush not in _exit_flushes:
        _exit_flushes.append(exit_flush)


_at_fork_registered: set[Callable[[], None]] = set()


def at_fork(*, before: Callable[[], None] | None = None, after_in_parent: Callable[[], None] | None = None,
            after_in_child: Callable[[], None] | None = None) -> None:
    """The one place otelkit's modules register process-wide fork handlers (module locks, the gRPC fork
    guard, the Sentry transport). Each callable is registered with ``os.register_at_fork`` once, in the
    order of the calls, so the interpreter runs them exactly as if each module had registered its own;
    where ``os.register_at_fork`` does not exist this does nothing."""
    if not hasattr(os, "register_at_fork"):
        return
    hooks = {"before": before, "after_in_parent": after_in_parent, "after_in_child": after_in_child}
    fresh = {name: hook for name, hook in hooks.items() if hook is not None and hook not in _at_fork_registered}
    if fresh:
        _at_fork_registered.update(fresh.values())
        os.register_at_fork(**fresh)


def install(reinit: Callable[[], None], *, exit_flush_timeout: float | None = None) -> None:
    """Register the fork hooks (once per process; later calls only replace ``reinit``).

    ``reinit`` runs in the child right after ``fork()``: it must be quick, must not raise into the
    child (errors are logged at debug level) and should give the child fresh providers."""
    global _installed_pid, _reinit, _exit_flush_timeout
    _reinit = reinit
    if exit_flush_timeout is not None:
        _exit_flush_timeout = max(0.0, float(exit_flush_timeout))
    if _installed_pid is not None or not hasattr(os, "register_at_fork"):
        return
    _installed_pid = os.getpid()
    at_fork(after_in_child=_after_fork_in_child)


_child_pid: int | None = None


def after_fork_without_hooks() -> None:
    """The export path noticed a new pid that no at-fork hook announced (uWSGI forks in C): catch up."""
    if _child_pid != os.getpid():
        _after_fork_in_child(forked_at=0)


def _after_fork_in_child(forked_at: int | None = None) -> None:
    global _child_pid
    _child_pid = os.getpid()
    for reset in list(_child_resets):
        try:
            reset(forked_at)
        except Exception:
            logger.debug("otelkit: resetting export after fork failed", exc_info=True)
    reinit = _reinit
    if reinit is not None:
        try:
            reinit()
        except Exception:
            logger.debug("otelkit: re-initialising telemetry in the forked child failed", exc_info=True)
    wrap_os_exit()


def exiting() -> bool:
    """True while the ``os._exit`` wrapper flushes (a SIGTERM handler should then let it finish)."""
    return _exiting


def set_exit_flush_timeout(seconds: float) -> None:
    """The deadline (``Settings.child_exit_timeout``) for a child leaving through ``os._exit`` to flush."""
    global _exit_flush_timeout
    _exit_flush_timeout = max(0.0, float(seconds))


def exit_flush_timeout() -> float:
    """Seconds a child may spend flushing on its way out."""
    return _exit_flush_timeout


def wrap_os_exit() -> None:
    """Make ``os._exit`` flush this process's telemetry first, bounded by the exit flush timeout (idempotent).

    Installed in children only (forked ones, and ``multiprocessing`` children of any start method): a
    main process calling ``os._exit`` means to skip clean-up."""
    current: Any = os._exit
    if getattr(current, "_otelkit_wrapped", False):
        return
    real_exit = current

    def _exit(code: int) -> None:
        global _exiting
        _exiting = True
        # Bounded, so a dead collector cannot hold the child; never prevents the exit.
        for flush in list(_exit_flushes):
            try:
                flush(_exit_flush_timeout)
            except BaseException:
                pass
        real_exit(code)

    _exit._otelkit_wrapped = True  # type: ignore[attr-defined]
    _exit.__wrapped__ = real_exit  # type: ignore[attr-defined]
    os._exit = _exit  # type: ignore[assignment]


def fork_model_warnings() -> list[str]:
    """What ``otelkit doctor`` should say about this process's fork model (empty when nothing applies)."""
    notes: list[str] = []
    argv = " ".join(sys.argv)
    gunicorn_args = os.environ.get("GUNICORN_CMD_ARGS", "")
    in_gunicorn = "gunicorn" in os.path.basename(sys.argv[0] if sys.argv else "") or "gunicorn.arbiter" in sys.modules
    if in_gunicorn and ("--preload" in argv or "--preload" in gunicorn_args):
        notes.append("gunicorn --preload: the app (and otelkit.init()) is loaded once in the master and forked; "
                     "otelkit resets its exporters in each worker automatically, no post_fork hook is needed.")
    try:
        import uwsgi
    except ImportError:
        uwsgi = None
    if uwsgi is not None:
        opt = getattr(uwsgi, "opt", {}) or {}
        lazy = opt.get("lazy-apps") or opt.get(b"lazy-apps") or opt.get("lazy") or opt.get(b"lazy")
        if not lazy:
            notes.append("uWSGI without lazy-apps: the app is loaded before forking workers; otelkit resets its "
                         "exporters after fork, but enable-threads = true is required for export threads "
                         "(and lazy-apps = true is the safest choice).")
        if not (opt.get("enable-threads") or opt.get(b"enable-threads")):
            notes.append("uWSGI without enable-threads: otelkit's export threads cannot run; set enable-threads.")
    if "celery" in sys.modules or "billiard" in sys.modules:
        notes.append("Celery prefork: each pool child resets its exporters after fork and flushes on exit "
                     f"(bounded by OTELKIT_CHILD_EXIT_TIMEOUT, now {_exit_flush_timeout:g}s), including children "
                     "recycled by max_tasks_per_child.")
    if os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() in ("0", "false"):
        notes.append("GRPC_ENABLE_FORK_SUPPORT is off: with OTLP/gRPC and forking workers, prefer "
                     "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf.")
    return notes
