"""``otelkit doctor`` with nothing configured: wall time of the whole command (issue 18, part 6: under 1 s).

Not a per-operation pair: one ``custom()`` row. The otelkit side runs ``python -m otelkit doctor`` in a fresh
process with every ``OTEL_*``/``OTELKIT_*``/``SENTRY_*`` variable removed; the reference side runs the bare
interpreter (``python -c pass``), the floor no command can go under. Runs alternate between the two.
Whether a collector listened on 127.0.0.1:4317/4318 (then the doctor does real exports) is in the note.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env["NO_COLOR"] = "1"
    return env


def _wall_ms(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode not in (0, 1):  # 1 = the doctor found a problem, still a complete run
        raise RuntimeError(f"{args} exited {done.returncode}")
    return elapsed


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05):
            return True
    except OSError:
        return False


def custom(fast: bool) -> list[dict[str, Any]]:
    runs = 3 if fast else 10
    env = _clean_env()
    doctor = [sys.executable, "-m", "otelkit", "doctor"]
    bare = [sys.executable, "-c", "pass"]
    _wall_ms(doctor, env)  # warm the page cache
    _wall_ms(bare, env)
    ours: list[float] = []
    floor: list[float] = []
    for i in range(runs):
        pair = [(doctor, ours), (bare, floor)]
        for args, sink in pair if i % 2 == 0 else reversed(pair):
            sink.append(_wall_ms(args, env))
    collector = [p for p in (4317, 4318) if _listening(p)]
    note = ("doctor, nothing configured, vs the bare interpreter start (`python -c pass`); goal: under 1000 ms. "
            + (f"A collector listened on 127.0.0.1:{collector[0]}: the doctor exported to it."
               if collector else "No collector on 127.0.0.1:4317/4318."))
    return [{"label": "otelkit doctor, nothing configured: wall time", "unit": "ms", "otelkit": ours,
             "raw": floor, "target": None, "note": note}]


PAIRS: list[Any] = []


if __name__ == "__main__":  # quick look without the harness
    import statistics

    row = custom(fast=True)[0]
    print(f"{row['label']}: {statistics.median(row['otelkit']):.0f} ms (bare interpreter "
          f"{statistics.median(row['raw']):.0f} ms)")
