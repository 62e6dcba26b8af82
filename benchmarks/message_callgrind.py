"""The whole cost of a message (issue 17, part 2) in callgrind instructions: every thread of both programs.

``bench_message.py`` measures whole-process CPU time, which on a busy shared machine moves more between
rounds than the margins being read. This runs the same producer and consumer programs (``_message_app.py``,
a real Redis list, a real blackhole collector) under ``valgrind --tool=callgrind --separate-threads=yes``
with ``lo`` and ``hi`` messages, and reports per message

    (instructions of every thread of producer + consumer with ``hi`` messages - with ``lo``) / (hi - lo)

so imports, ``init()`` and the shutdown's fixed work cancel out; the per-message work of every thread
(application, otelkit's export threads, the metric reader, gRPC's own threads) is counted. Each thread's
share is printed too, named by its busiest non-interpreter function (valgrind numbers threads by creation,
reusing an ended thread's number).

Work that runs by the clock (the periodic metric reader, system metrics, the batch timer) is not per message:
under valgrind the programs run ~50x slower, so a run with more messages sees more of it. ``--env`` runs a
variant (``KEY=VALUE``, repeatable) so parts can be switched off and measured by difference.

    PYTHONPATH=. python benchmarks/message_callgrind.py MODE [MODE...] [--lo 200] [--hi 1000] [--env K=V]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _callgrind import _totals  # noqa: E402

REDIS_URL = os.environ.get("OTELKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
_SKIP = re.compile(r"_PyEval|PyObject|_Py|Py[A-Z]|\?\?\?|malloc|free|memcpy|memmove|memset|syscall|futex|dict|"
                   r"list_|long_|unicode|frame|tuple|gc_|sem_|pthread|lock|cfunction|method_|vectorcall|slot_")


def _top_function(path: Path) -> str:
    """The busiest function (self cost) that is not the interpreter's own machinery: names the thread."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True, text=True,
                         check=False).stdout
    for line in out.splitlines():
        match = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)", line)
        if match and ":" in match.group(2):
            name = match.group(2).split(":", 1)[1]
            if not _SKIP.search(name):
                return name[:60]
    return "?"


def _threads(directory: Path, prefix: str) -> dict[str, int]:
    result = {}
    for f in sorted(directory.glob(f"{prefix}*")):
        if f.name[-3:-2] == "-" and f.name[-2:].isdigit():
            result[f.name[-2:]] = _totals(f)
    return result


def run_pair(mode: str, count: int, endpoint: str, env_extra: dict[str, str],
             keep: Path | None = None) -> dict[str, dict[str, int]]:
    """Instructions per thread of the consumer and the producer moving ``count`` messages."""
    queue = f"otelkit-bench:cg:{uuid.uuid4().hex[:12]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update(env_extra)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="otelkit-msgcg-") as tmp:
        directory = keep or Path(tmp)
        procs = {}
        errors = {}
        try:
            # The producer first: it waits for "go", while the consumer's BRPOP (30 s timeout) starts at once.
            for role in ("producer", "consumer"):
                errors[role] = open(directory / f"{role}.err", "w+")
                cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                       f"--callgrind-out-file={directory}/{role}.cg", sys.executable, str(HERE / "_message_app.py"),
                       role, mode, REDIS_URL, queue, str(count), endpoint]
                procs[role] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               stderr=errors[role], text=True, env=env)
                line = procs[role].stdout.readline()  # type: ignore[union-attr]
                if line.strip() != "READY":
                    errors[role].seek(0)
                    raise RuntimeError(f"{mode} {role} did not start: {line!r} {errors[role].read()[-1500:]}")
            procs["producer"].stdin.write("go\n")  # type: ignore[union-attr]
            procs["producer"].stdin.flush()  # type: ignore[union-attr]
            for role, proc in procs.items():
                stdout, _ = proc.communicate(timeout=1800)
                if proc.returncode != 0 or "@@" not in stdout:
                    errors[role].seek(0)
                    raise RuntimeError(f"{mode} {role} failed: {errors[role].read()[-1500:]}")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
            for file in errors.values():
                file.close()
            import redis

            redis.Redis.from_url(REDIS_URL).delete(queue)
        return {role: _threads(directory, f"{role}.cg") for role in ("consumer", "producer")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modes", nargs="+", help="_message_app.py modes (plain, otelkit, faststream, ...)")
    parser.add_argument("--lo", type=int, default=200)
    parser.add_argument("--hi", type=int, default=1000)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for both programs (repeatable)")
    parser.add_argument("--keep", type=Path, help="keep the hi run's callgrind files under this directory")
    args = parser.parse_args()
    env_extra = dict(item.split("=", 1) for item in args.env)
    from bench_export import _rotel

    collector = _rotel().start()
    try:
        for mode in args.modes:
            keep = None
            if args.keep:
                keep = args.keep / mode
                keep.mkdir(parents=True, exist_ok=True)
            lo = run_pair(mode, args.lo, collector.grpc_endpoint, env_extra)
            hi = run_pair(mode, args.hi, collector.grpc_endpoint, env_extra, keep)
            span = args.hi - args.lo
            total = 0.0
            for role in ("producer", "consumer"):
                for thread in sorted(set(lo[role]) | set(hi[role])):
                    per = (hi[role].get(thread, 0) - lo[role].get(thread, 0)) / span
                    total += per
                    name = _top_function(keep / f"{role}.cg-{thread}") if keep else ""
                    print(f"{mode} {role} thread {thread}: {per / 1000:,.1f}k/msg "
                          f"(lo {lo[role].get(thread, 0):,} hi {hi[role].get(thread, 0):,}) {name}", flush=True)
            print(f"{mode} {' '.join(args.env)}: {total / 1000:,.1f}k instructions per message, every thread of "
                  f"both programs (lo {args.lo}, hi {args.hi})", flush=True)
    finally:
        collector.close()


if __name__ == "__main__":
    main()
