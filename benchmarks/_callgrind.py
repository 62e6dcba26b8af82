"""Instruction counts per operation under callgrind: repeatable on a busy shared machine.

A wall-time ratio moves with the load from other processes; the number of instructions the
application thread executes does not. :func:`per_op` runs a benchmark function in a fresh
interpreter under ``valgrind --tool=callgrind --separate-threads=yes`` twice, with a small and
a large loop count after the same warm-up, and returns

    (instructions of thread 1 with ``hi`` loops - with ``lo`` loops) / (hi - lo)

so start-up, imports and lazy set-up cancel out. Thread 1 is the application thread: the
export threads (BatchSpanProcessor, metric reader) are counted in their own files and left
out, as the issue's figures are "on the application thread" (a target whose requests run on threads
they start counts every thread, the span processor's too: ``callgrind_threads``). ``PYTHONHASHSEED`` is fixed so
both runs hash (and so iterate sets and dicts of str) identically.

The function is named as ``module:attribute`` where ``attribute`` may be ``PAIRS[i][1]``-style
(``pair:I:SIDE``, SIDE 1 = otelkit, 2 = raw) or any top-level callable ``fn(loops) -> seconds``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WARM = 30


def available() -> bool:
    return shutil.which("valgrind") is not None


ALL_THREADS = "all threads"


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _thread1_instructions(directory: Path, threads: str = "main") -> int:
    files = sorted(directory.glob("cg.out*"))
    # --separate-threads=yes writes cg.out-01, cg.out-02...; thread 1 is the main thread.
    if threads == ALL_THREADS:
        # A target whose requests run on threads they start (asgiref's, for a sync view under ASGI) sets
        # ``callgrind_threads = ALL_THREADS``. Valgrind reuses the number of an ended thread, so the span
        # processor's thread cannot be told apart: it is counted too (exporting to a null exporter).
        return sum(_totals(f) for f in files if f.name[-3:-2] == "-" and f.name[-2:].isdigit())
    main = [f for f in files if f.name.endswith("-01")] or files
    return _totals(main[0])


def _run_group(cmd: list[str], timeout: float, **options: object) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`` in a process group of its own.

    The whole group is killed once ``cmd`` exits or times out: a benchmark body under valgrind may start
    children (the rotel collector of the export rows) that would outlive it and keep a core busy. Output goes
    to files, not pipes, so a child still holding them cannot keep this waiting.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, start_new_session=True,
                                **options)  # type: ignore[call-overload]
        try:
            proc.wait(timeout=timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, proc.returncode, out.read(), err.read())


def instructions(target: str, loops: int, env: dict[str, str] | None = None, timeout: float = 900) -> int:
    """Instructions executed by the main thread running ``target`` WARM times, then ``loops`` times."""
    with tempfile.TemporaryDirectory(prefix="otelkit-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
               sys.executable, str(HERE / "_callgrind.py"), "--run", target, str(loops)]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
        child_env.update(env or {})
        child_env["PYTHONHASHSEED"] = "0"
        child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(ROOT), child_env.get("PYTHONPATH")]))
        proc = _run_group(cmd, timeout, env=child_env, cwd=ROOT)
        if proc.returncode != 0 or "@@DONE@@" not in proc.stdout:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
            raise RuntimeError(f"callgrind run of {target} failed (exit {proc.returncode}): {tail}")
        threads = ALL_THREADS if f"@@THREADS@@ {ALL_THREADS}" in proc.stdout else "main"
        return _thread1_instructions(Path(tmp), threads)


def instructions_of_command(argv: list[str], env: dict[str, str], timeout: float = 900) -> int:
    """Instructions of the main thread of ``argv`` (a whole program, e.g. a start-up script)."""
    with tempfile.TemporaryDirectory(prefix="otelkit-cg-") as tmp:
        out = Path(tmp) / "cg.out"
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}", *argv]
        proc = _run_group(cmd, timeout, env={**env, "PYTHONHASHSEED": "0"})
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
            raise RuntimeError(f"callgrind run failed (exit {proc.returncode}): {tail}")
        return _thread1_instructions(Path(tmp))


def per_op(target: str, lo: int = 20, hi: int = 120, env: dict[str, str] | None = None) -> float:
    """Instructions per operation on the application thread (see the module docstring)."""
    return (instructions(target, hi, env) - instructions(target, lo, env)) / (hi - lo)


def _resolve(target: str) -> object:
    import importlib

    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    if attribute.startswith("pair:"):
        _, index, side = attribute.split(":")
        return module.PAIRS[int(index)][int(side)]
    return getattr(module, attribute)


def _run(target: str, loops: int) -> None:
    import gc

    fn = _resolve(target)
    if getattr(fn, "callgrind_threads", None) == ALL_THREADS:
        print(f"@@THREADS@@ {ALL_THREADS}", flush=True)
    fn(WARM)  # type: ignore[operator]
    gc.collect()
    fn(loops)  # type: ignore[operator]
    print("@@DONE@@", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--run":
        _run(sys.argv[2], int(sys.argv[3]))
        import atexit

        atexit._run_exitfuncs()  # stops helper servers the benchmark started (after the measurement)
        os._exit(0)
    target = sys.argv[1]
    print(f"{target}: {per_op(target):,.0f} instructions per op (application thread)")
