"""Forking programs for the fork tests (run as a subprocess; configured through OTEL_* variables).

Usage: python fork_app.py multiprocessing|osfork

Both keep a span open across the fork and leave spans queued (not yet exported) at the fork, so a
child that re-exported inherited telemetry would show up as a duplicate.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import sys
import threading
import time

from opentelemetry import trace

import otelkit

tracer = trace.get_tracer("fork_app")


def task(i: int) -> int:
    with tracer.start_as_current_span("child-task", attributes={"task": i, "pid": os.getpid()}):
        pass
    return os.getpid()


def run_multiprocessing() -> None:
    with tracer.start_as_current_span("parent-open"):
        for i in range(5):
            with tracer.start_as_current_span("parent-queued", attributes={"i": i}):
                pass
        ctx = multiprocessing.get_context("fork")
        # maxtasksperchild=1: every task runs in a fresh child that then exits (prefork recycling).
        with ctx.Pool(2, maxtasksperchild=1) as pool:
            pids = pool.map(task, range(6), chunksize=1)
            pool.close()
            pool.join()
    sys.stdout.write(f"PIDS {' '.join(str(p) for p in sorted(set(pids)))}\n")
    with tracer.start_as_current_span("parent-after"):
        pass


def run_osfork() -> None:
    child = False
    with tracer.start_as_current_span("parent-open"):
        for i in range(5):
            with tracer.start_as_current_span("parent-queued", attributes={"i": i}):
                pass
        pid = os.fork()
        if pid == 0:
            child = True
            for i in range(3):
                task(i)
    # In the child, "parent-open" has just ended a second time: that copy must not be exported.
    if child:
        os._exit(0)
    os.waitpid(pid, 0)
    with tracer.start_as_current_span("parent-after"):
        pass


def run_cfork() -> None:
    """fork(2) called from C, as uWSGI does: Python's at-fork hooks do not run in the child."""
    import ctypes

    for i in range(5):
        with tracer.start_as_current_span("parent-queued", attributes={"i": i}):
            pass
    # PyDLL, not CDLL: a CDLL call releases the GIL, so another thread (the export worker) could take it
    # during fork(2) and the child would inherit a GIL held by a thread it does not have, and hang. uWSGI
    # forks holding the GIL; so does this.
    libc = ctypes.PyDLL(None, use_errno=True)
    # A thread still in its bootstrap holds threading's internal lock; forked from C (no at-fork hooks),
    # the child would inherit that lock held by a thread it does not have, and hang at its first
    # Thread.start(). uWSGI forks long after its threads started: so does this, once none is starting.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with threading._active_limbo_lock:  # type: ignore[attr-defined]
            if not threading._limbo:  # type: ignore[attr-defined]
                break
        time.sleep(0.01)  # polling with a deadline for the threads to finish starting
    pid = libc.fork()
    if pid == 0:
        # Should the child hang anyway, its stacks go to stderr (which the test prints) and it exits.
        faulthandler.dump_traceback_later(30, exit=True)
        for i in range(3):
            task(i)
        os._exit(0)
    os.waitpid(pid, 0)
    with tracer.start_as_current_span("parent-after"):
        pass


if __name__ == "__main__":
    # A child leaving through os._exit flushes for at most OTELKIT_CHILD_EXIT_TIMEOUT (2 s by default): on a
    # loaded machine a fresh child's first export (new channel, new thread) can need longer, and its spans
    # would be lost to scheduling, not to a defect. These tests are about what is exported, not that bound.
    os.environ.setdefault("OTELKIT_CHILD_EXIT_TIMEOUT", "30000")
    otelkit.init()
    {"multiprocessing": run_multiprocessing, "osfork": run_osfork, "cfork": run_cfork}[sys.argv[1]]()
