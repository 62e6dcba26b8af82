"""Process pools and ``multiprocessing`` children of every start method report every span, once.

``os.register_at_fork`` (:mod:`otelkit._fork`) covers children *forked* from an initialised process.
Three cases are left, and this module handles them:

1. **spawn and forkserver children** start from a fresh interpreter (or from the fork server, which
   never ran ``init()``): nothing of the parent's set-up is there. :func:`install` patches
   ``BaseProcess.start`` so every process object carries the parent's resolved settings; unpickling
   it in the child (``multiprocessing.spawn._main`` runs that after the parent's ``sys.path`` and
   main module are in place, before the target runs) calls :func:`_child_setup`, which initialises
   otelkit there with the same settings (unless the child already called ``init()`` itself) and makes
   the child's ``os._exit`` flush first (forkserver children leave that way, skipping ``atexit``).
2. **``Pool.terminate()``**, which ``with Pool() as p:`` calls on leaving the block, kills the workers
   with SIGTERM while their last spans are still queued. :func:`_pool_worker` (put in place of
   ``multiprocessing.pool.worker``) installs a SIGTERM handler from the moment a worker has finished
   a task until it takes the next one: terminated while idle, the worker flushes (bounded by
   ``OTELKIT_CHILD_EXIT_TIMEOUT``, 2 s by default) and then dies of SIGTERM as before. While a task runs, SIGTERM keeps
   its default action: a handler could not run until a long C call returned, and ``terminate()``
   joins its workers without a timeout, so it would hang (spans of a task cut short are lost anyway).
3. **A child that calls ``init()`` itself** (pool ``initializer=otelkit.init`` with an uninitialised
   parent): ``init()`` makes its ``os._exit`` flush and, in a pool worker, puts the same SIGTERM guard
   on the worker's queues (:func:`guard_current_pool_worker`).

The parent's own span/log processors and metric readers passed to ``init()`` are objects, not
settings: they are not carried into spawn/forkserver children.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from otelkit import _active
from otelkit._internal_log import logger

if TYPE_CHECKING:
    from otelkit._config import Settings

_installed = False
_original_start: Any = None
_original_worker: Any = None
# What sets a spawn/forkserver child up with the parent's settings (``otelkit._init.init_in_child``); passed
# in by ``init()``, and pickled by reference with each process object, so the child imports it by name.
_init_child: Callable[[Settings], None] | None = None


def install(init_child: Callable[[Settings], None] | None = None) -> None:
    """Patch ``BaseProcess.start`` and ``multiprocessing.pool.worker`` (once per process).

    ``init_child(settings)`` initialises a spawn/forkserver child like its parent (a no-op where ``init()``
    already ran); ``None`` keeps the one given before (no child set-up before any).

    ``multiprocessing.pool`` is patched now when it is imported, else at the first process start after its
    import (a pool starts its workers through ``BaseProcess.start``): importing it here cost ~9M
    instructions of every ``init()``, for programs that mostly never make a pool.
    """
    global _installed, _original_start, _init_child
    if init_child is not None:
        _init_child = init_child
    if _installed:
        return
    _installed = True
    try:
        from multiprocessing.process import BaseProcess

        _original_start = BaseProcess.start
        BaseProcess.start = _start  # type: ignore[method-assign]
        pool = sys.modules.get("multiprocessing.pool")
        if pool is not None:
            _patch_pool(pool)
    except Exception:
        logger.debug("otelkit: patching multiprocessing failed", exc_info=True)


def _patch_pool(pool: Any) -> None:
    global _original_worker
    if _original_worker is None:
        _original_worker = pool.worker
        pool.worker = _pool_worker


def _pool_module() -> Any:
    # Typed as Any: ``worker`` is not in typeshed's stub of multiprocessing.pool.
    import multiprocessing.pool

    return multiprocessing.pool


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    global _installed, _original_worker
    if not _installed:
        return
    from multiprocessing.process import BaseProcess

    BaseProcess.start = _original_start  # type: ignore[method-assign]
    if _original_worker is not None:
        _pool_module().worker = _original_worker
        _original_worker = None
    _installed = False


# --- spawn / forkserver: carry the settings -------------------------------------------------------


class _ChildSetup:
    """Attached to each started process object; pickled with it for spawn/forkserver (ignored by fork)."""

    def __init__(self, payload: bytes, init_child: Callable[[Settings], None]) -> None:
        self.payload = payload
        self.init_child = init_child

    def __reduce__(self) -> tuple[Any, tuple[bytes, Callable[[Settings], None]]]:
        return _child_setup, (self.payload, self.init_child)


def _dumps(settings: Any) -> bytes:
    # Settings hold read-only mappings (MappingProxyType), which pickle refuses: a private dispatch
    # table turns them into dicts and back, without registering anything process-wide.
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    table = copyreg.dispatch_table.copy()
    table[MappingProxyType] = lambda m: (_read_only, (dict(m),))
    pickler.dispatch_table = table
    pickler.dump(settings)
    return buffer.getvalue()


def _read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


def _start(self: Any) -> None:
    try:
        if _original_worker is None:
            pool = sys.modules.get("multiprocessing.pool")
            if pool is not None:  # imported since install(): patch it, and this worker made before the patch
                original = pool.worker
                _patch_pool(pool)
                if getattr(self, "_target", None) is original:
                    self._target = _pool_worker
    except Exception:
        logger.debug("otelkit: patching multiprocessing.pool failed", exc_info=True)
    try:
        settings = _active.settings()
        # Fork children get their set-up from the at-fork hooks: only the other start methods pickle this.
        if settings is not None and not settings.disabled and _init_child is not None and \
                _start_method(self) != "fork":
            self._otelkit_child = _ChildSetup(_dumps(settings), _init_child)
    except Exception:
        logger.debug("otelkit: preparing the settings for a child process failed", exc_info=True)
    _original_start(self)


def _start_method(process: Any) -> str:
    method = getattr(process, "_start_method", None)  # None: multiprocessing.Process, the default context's
    if method is None:
        import multiprocessing

        method = multiprocessing.get_start_method(allow_none=True)
    return str(method or "")


def _child_setup(payload: bytes, init_child: Callable[[Settings], None]) -> _ChildSetup:
    """In a spawn/forkserver child, while its process object is unpickled: initialise like the parent."""
    try:
        install(init_child)
        if _active.settings() is None:
            init_child(pickle.loads(payload))
        prepare_child()
    except Exception:
        logger.debug("otelkit: initialising telemetry in the child process failed", exc_info=True)
    return _ChildSetup(payload, init_child)


def prepare_child() -> None:
    """In any ``multiprocessing`` child: leaving through ``os._exit`` flushes first (bounded)."""
    from otelkit import _fork

    _fork.wrap_os_exit()


def in_child_process() -> bool:
    """True in a process started by ``multiprocessing`` (any start method)."""
    try:
        import multiprocessing

        return multiprocessing.parent_process() is not None
    except Exception:
        return False


# --- pool workers: flush when terminated while idle -----------------------------------------------

_handler_active = False
_previous_handler: Any = None


_leaving = False  # the worker got its stop sentinel: it is on its way out, and flushes as it leaves


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    from otelkit import _fork

    if _leaving or _fork.exiting():
        # Already leaving (Pool.terminate() sends the stop sentinels just before SIGTERM): the exit path flushes,
        # through the os._exit wrapper (fork, forkserver) or the atexit shutdown (spawn). Killing the process now
        # would cut that flush short; let the exit finish (terminate() waits for it, bounded by the flush).
        return
    try:
        from otelkit import _export

        _export.flush_all(_fork.exit_flush_timeout())
    except BaseException:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _guard(on: bool) -> None:
    """Switch the flush-on-SIGTERM handler on (idle) or back to the default action (running a task).

    Only in the main thread, and never over a handler someone else installed (the initializer's)."""
    global _handler_active
    if on == _handler_active or threading.current_thread() is not threading.main_thread():
        return
    try:
        current = signal.getsignal(signal.SIGTERM)
        if on and current in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
            _handler_active = True
        elif not on:
            if current is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _handler_active = False
    except (ValueError, OSError):
        pass


class _GuardedReader:
    """The worker's task pipe: the handler stays on while it waits, and goes off when a task arrives."""

    def __init__(self, reader: Any) -> None:
        self._otelkit_reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self._otelkit_reader, name)

    def recv_bytes(self, *args: Any) -> Any:
        _guard(True)
        global _leaving
        data = self._otelkit_reader.recv_bytes(*args)
        if data == _sentinel_bytes():  # the None sentinel: the worker leaves (and flushes on its way out)
            _leaving = True
        else:
            _guard(False)
        return data


class _GuardedWriter:
    """The worker's result pipe: the handler goes on before a result is visible to the parent, which may
    terminate the pool as soon as it has read it."""

    def __init__(self, writer: Any) -> None:
        self._otelkit_writer = writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._otelkit_writer, name)

    def send_bytes(self, *args: Any) -> Any:
        _guard(True)
        return self._otelkit_writer.send_bytes(*args)


_SENTINEL: list[bytes] = []


def _sentinel_bytes() -> bytes:
    if not _SENTINEL:
        from multiprocessing.reduction import ForkingPickler

        _SENTINEL.append(bytes(ForkingPickler.dumps(None)))
    return _SENTINEL[0]


def _guard_queues(inqueue: Any, outqueue: Any) -> None:
    """Put the guards on a pool worker's queues (``SimpleQueue``: ``get``/``put`` read these at each call)."""
    try:
        reader = getattr(inqueue, "_reader", None)
        writer = getattr(outqueue, "_writer", None)
        if reader is None or writer is None or isinstance(reader, _GuardedReader):
            return
        inqueue._reader = _GuardedReader(reader)
        outqueue._writer = _GuardedWriter(writer)
    except Exception:
        logger.debug("otelkit: guarding the pool worker's queues failed", exc_info=True)


def guard_current_pool_worker() -> None:
    """``init()`` in a pool worker (``initializer=otelkit.init``, the parent not initialised): guard its
    queues now. The worker loop reads ``_reader``/``_writer`` at each call, so this takes effect at once."""
    try:
        import multiprocessing

        process: Any = multiprocessing.current_process()
        target = getattr(process, "_target", None)
        if target is None or target not in (_pool_module().worker, _original_worker, _pool_worker):
            return
        args: Any = getattr(process, "_args", ())
        if len(args) >= 2:
            _guard_queues(args[0], args[1])
    except Exception:
        logger.debug("otelkit: guarding the pool worker failed", exc_info=True)


def _pool_worker(inqueue: Any, outqueue: Any, *args: Any, **kwargs: Any) -> Any:
    """``multiprocessing.pool.worker`` with the SIGTERM guard (runs in the worker process)."""
    if _original_worker is None:  # a spawn child that unpickled this before install() ran
        install()
        _patch_pool(_pool_module())
    original = _original_worker
    try:
        prepare_child()
    except Exception:
        logger.debug("otelkit: preparing the pool worker failed", exc_info=True)
    _guard_queues(inqueue, outqueue)
    # The handler stays on after the loop: the worker is leaving, and SIGTERM during its exit flush must
    # not cut that short (the handler returns while the os._exit wrapper flushes).
    return original(inqueue, outqueue, *args, **kwargs)
