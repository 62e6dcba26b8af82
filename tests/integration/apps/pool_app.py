"""Process pools for the pool tests (run as a subprocess; configured through OTEL_* variables).

Usage: python pool_app.py START_METHOD IDIOM[,IDIOM...] [--init-in-children]

Each idiom runs ``TASKS`` tasks in worker processes of the given start method (fork, forkserver,
spawn); every task ends one ``pool-task`` span with the attributes ``idiom`` and ``task``, so the
test can count what arrived once, twice or never. ``--init-in-children`` leaves the parent
uninitialised and calls ``otelkit.init()`` in each worker instead (the pool ``initializer``).
``--pool-imported-first`` imports ``multiprocessing.pool`` before ``init()`` (otherwise the first pool
imports it after, and otelkit patches it at its first worker's start).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import otelkit

TASKS = 40
MAX_TASKS_JOBS = 10  # a fresh (spawned) interpreter for each


def task(idiom: str, i: int) -> int:
    with otelkit.span("pool-task", idiom=idiom, task=i, pid=os.getpid()):
        pass
    return os.getpid()


def _task(args: tuple[str, int]) -> int:
    return task(*args)


def child_process(idiom: str, start: int, stop: int) -> None:
    for i in range(start, stop):
        task(idiom, i)


def jobs(idiom: str) -> list[tuple[str, int]]:
    return [(idiom, i) for i in range(TASKS)]


def run(method: str, idiom: str, init_in_children: bool) -> None:
    ctx = multiprocessing.get_context(method)
    pool_kw: dict[str, Any] = {"initializer": otelkit.init} if init_in_children else {}
    if idiom == "with-pool":  # leaving the block terminates the workers (SIGTERM)
        with ctx.Pool(2, **pool_kw) as pool:
            pool.map(_task, jobs(idiom), chunksize=1)
    elif idiom == "close-join":
        pool = ctx.Pool(2, **pool_kw)
        pool.map(_task, jobs(idiom), chunksize=1)
        pool.close()
        pool.join()
    elif idiom == "terminate":
        pool = ctx.Pool(2, **pool_kw)
        pool.map(_task, jobs(idiom), chunksize=4)
        pool.terminate()
        pool.join()
    elif idiom == "maxtasks":  # workers recycled every 3 tasks, then terminated by the with block
        with ctx.Pool(2, maxtasksperchild=3, **pool_kw) as pool:
            for _ in pool.imap_unordered(_task, jobs(idiom)):
                pass
    elif idiom == "executor":
        with ProcessPoolExecutor(2, mp_context=ctx, **pool_kw) as executor:
            list(executor.map(_task, jobs(idiom)))
    elif idiom == "executor-max-tasks":  # Python >= 3.11; refused with the fork start method
        # One task per child: CPython 3.11-3.14 deadlock with 1 < max_tasks_per_child < backlog (gh-115634).
        with ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=1, **pool_kw) as executor:
            list(executor.map(_task, jobs(idiom)[:MAX_TASKS_JOBS]))
    elif idiom == "process":
        procs = [ctx.Process(target=child_process, args=(idiom, k * TASKS // 2, (k + 1) * TASKS // 2))
                 for k in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
            assert p.exitcode == 0, p.exitcode
    else:
        raise SystemExit(f"unknown idiom {idiom!r}")
    sys.stdout.write(f"DONE {idiom}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    method, idioms = sys.argv[1], sys.argv[2].split(",")
    init_in_children = "--init-in-children" in sys.argv
    if "--pool-imported-first" in sys.argv:
        import multiprocessing.pool
    if not init_in_children:
        otelkit.init()
    for name in idioms:
        run(method, name, init_in_children)
    if not init_in_children:
        with otelkit.span("parent-done"):
            pass
