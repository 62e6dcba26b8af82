"""Python bytecode instructions per call on the application thread, for when callgrind cannot finish.

``sys.settrace`` opcode events while a benchmark target runs 10 and then 50 times after the same 30-call
warm-up as ``_callgrind``; prints ``(count at 50 - count at 10) / 40``. Deterministic like callgrind, but it
counts Python bytecodes only (work inside C functions is one opcode), so it is a stand-in for instruction
counts, not the same figure. Usage (one target per process, as a library is instrumented one way per process)::

    .venv/bin/python benchmarks/opcount.py bench_clients_db:urllib3_get_otelkit
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

_count = 0


def _tracer(frame: FrameType, event: str, _arg: Any) -> Any:
    global _count
    if event == "call":
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
    elif event == "opcode":
        _count += 1
    return _tracer


def main() -> None:
    module, _, name = sys.argv[1].partition(":")
    fn = getattr(importlib.import_module(module), name)
    fn(30)  # warm-up, as _callgrind.WARM

    def measure(loops: int) -> int:
        global _count
        _count = 0
        sys.settrace(_tracer)
        try:
            fn(loops)
        finally:
            sys.settrace(None)
        return _count

    lo, hi = measure(10), measure(50)
    print(sys.argv[1], (hi - lo) / 40)


if __name__ == "__main__":
    main()
