"""Run every ``benchmarks/bench_*.py`` and print medians, spreads and ratios vs the raw SDK.

Usage::

    .venv/bin/python benchmarks/run.py                 # everything (a few minutes)
    .venv/bin/python benchmarks/run.py --fast          # quick pass: fewer, shorter rounds (smoke / CI)
    .venv/bin/python benchmarks/run.py --only core     # modules whose name contains "core"
    .venv/bin/python benchmarks/run.py --markdown      # also print the table as Markdown (RESULTS.md)
    .venv/bin/python benchmarks/run.py --json out.json # raw samples, for later analysis

The convention every ``bench_*.py`` module follows is in ``benchmarks/README.md``:
``PAIRS = [(label, otelkit_fn, raw_fn[, target]), ...]`` with ``fn(loops) -> seconds``,
and optionally ``custom(fast: bool) -> list[dict]`` for measurements that are not a
per-operation timing (throughput, start-up time, RSS).

How it measures: each pair runs in its own fresh subprocess (so pairs may set OTel
globals freely). The number of loops is calibrated so one sample takes about 50 ms
(10 ms with ``--fast``); after a warm-up round, each round times both sides back to
back, alternating which goes first. The ratio is the median of the per-round ratios
(paired, so load from other processes on a shared machine mostly cancels out); its
spread is the interquartile range of those ratios.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TimeFn = Callable[[int], float]


@dataclass
class Row:
    """One line of the result table."""

    module: str
    label: str
    unit: str
    otelkit: list[float]
    raw: list[float]
    ratios: list[float]
    target: float | None = None
    higher_is_better: bool = False
    note: str = ""
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        ratio = self.ratio
        if self.target is None or ratio is None:
            return ""
        ok = ratio >= self.target if self.higher_is_better else ratio <= self.target
        return "ok" if ok else "MISS"


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    if len(ordered) < 4:
        mid = statistics.median(ordered)
        return ordered[0], mid, ordered[-1]
    q1, q2, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return q1, q2, q3


# --- child: run one pair or the custom rows of one module --------------------------------------------


def _load(module_name: str) -> Any:
    path = HERE / f"{module_name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _time(fn: TimeFn, loops: int) -> float:
    gc.collect()
    return fn(loops) / loops


def _calibrate(fn: TimeFn, sample_time: float) -> int:
    """Loops so that one sample takes about ``sample_time`` seconds."""
    fn(1)  # first call may do lazy set-up
    loops = 1
    while True:
        elapsed = fn(loops)
        if elapsed >= sample_time / 10 or loops >= 1 << 24:
            return max(1, round(loops * sample_time / max(elapsed, 1e-9)))
        loops *= 10 if elapsed < sample_time / 100 else 2


def run_pair(otelkit_fn: TimeFn, raw_fn: TimeFn, rounds: int, sample_time: float) -> tuple[list[float], list[float]]:
    """Per-operation seconds for both sides, ``rounds`` paired samples each."""
    loops = min(_calibrate(otelkit_fn, sample_time), _calibrate(raw_fn, sample_time))
    _time(otelkit_fn, loops)  # warm-up round, discarded
    _time(raw_fn, loops)
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2:
            b.append(_time(raw_fn, loops))
            a.append(_time(otelkit_fn, loops))
        else:
            a.append(_time(otelkit_fn, loops))
            b.append(_time(raw_fn, loops))
    return a, b


def child(module_name: str, index: int | None, fast: bool) -> None:
    module = _load(module_name)
    rounds = 5 if fast else 20
    sample_time = 0.01 if fast else 0.05
    out: list[dict[str, Any]] = []
    if index is None:
        custom = getattr(module, "custom", None)
        rows = custom(fast) if custom is not None else []
        for row in rows:
            out.append(dict(row))
    else:
        pair = module.PAIRS[index]
        label, otelkit_fn, raw_fn = pair[0], pair[1], pair[2]
        target = pair[3] if len(pair) > 3 else None
        a, b = run_pair(otelkit_fn, raw_fn, rounds, sample_time)
        out.append({"label": label, "unit": "µs/op", "otelkit": [x * 1e6 for x in a],
                    "raw": [x * 1e6 for x in b], "target": target})
    print("@@RESULT@@" + json.dumps(out))


# --- parent ------------------------------------------------------------------------------------------


def _spawn(args: list[str], timeout: float) -> tuple[list[dict[str, Any]], str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), str(ROOT), env.get("PYTHONPATH", "")]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout:.0f} s"
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):]), ""
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    return [], f"exit {proc.returncode}: " + " | ".join(tail)


def _rows_from(module: str, results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for r in results:
        otelkit = [float(x) for x in r.get("otelkit", [])]
        raw = [float(x) for x in r.get("raw", [])]
        higher = bool(r.get("higher_is_better", False))
        if "ratios" in r:
            ratios = [float(x) for x in r["ratios"]]
        elif otelkit and raw and len(otelkit) == len(raw):
            ratios = [x / y for x, y in zip(otelkit, raw, strict=True) if y]
        elif otelkit and raw:
            ratios = [statistics.median(otelkit) / statistics.median(raw)]
        else:
            ratios = []
        rows.append(Row(module=module, label=str(r["label"]), unit=str(r.get("unit", "")), otelkit=otelkit,
                        raw=raw, ratios=ratios, target=r.get("target"), higher_is_better=higher,
                        note=str(r.get("note", "")), extra=dict(r.get("extra", {}))))
    return rows


def _instructions(module: str, index: int, fast: bool) -> dict[str, float]:
    """Instructions per op (application thread) of both sides of a pair, under callgrind, 2 runs at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import _callgrind

    lo, hi = (10, 40) if fast else (20, 120)
    jobs = {(side, n): f"{module}:pair:{index}:{1 if side == 'otelkit' else 2}"
            for side in ("otelkit", "raw") for n in (lo, hi)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_callgrind.instructions, target, key[1]) for key, target in jobs.items()}
        counts = {key: future.result() for key, future in futures.items()}
    return {side: (counts[(side, hi)] - counts[(side, lo)]) / (hi - lo) for side in ("otelkit", "raw")}


def discover(only: Sequence[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if any(o in n for o in only)]
    return names


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cells(row: Row) -> list[str]:
    if row.error:
        return [row.module.removeprefix("bench_"), row.label, "-", "-", "-", "-", "-", "-", "ERROR"]

    def side(values: list[float]) -> str:
        if not values:
            return "-"
        q1, q2, q3 = _quartiles(values)
        return f"{_fmt(q2)} ±{_fmt((q3 - q1) / 2)}"

    ratio = row.ratio
    if row.ratios:
        q1, _, q3 = _quartiles(row.ratios)
        ratio_text = f"{ratio:.2f}× ±{(q3 - q1) / 2:.2f}"
    else:
        ratio_text = "-"
    target = "-" if row.target is None else (f"≥{row.target:g}×" if row.higher_is_better else f"≤{row.target:g}×")
    instructions = row.extra.get("instructions")
    if isinstance(instructions, dict) and instructions.get("raw"):
        ours, theirs = float(instructions["otelkit"]), float(instructions["raw"])
        cg = f"{ours / 1000:,.1f}k / {theirs / 1000:,.1f}k = {ours / theirs:.2f}×"
    else:
        cg = "-"
    return [row.module.removeprefix("bench_"), row.label, row.unit, side(row.otelkit), side(row.raw), ratio_text,
            cg, target, row.verdict]


HEADERS = ["module", "benchmark", "unit", "otelkit median ±IQR/2", "raw median ±IQR/2", "ratio", "callgrind instr/op",
           "target", "verdict"]


def render_table(rows: list[Row]) -> str:
    table = [HEADERS] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    notes = [f"  [{r.module.removeprefix('bench_')}: {r.label}] {r.note or r.error}" for r in rows
             if r.note or r.error]
    return "\n".join(out + (["", "notes:", *notes] if notes else []))


def render_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Interpreter, platform and package versions for the results header."""
    from importlib import metadata

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for dist in ("otelkit", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "grpcio", "rotel"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    return info


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="fewer and shorter rounds (a quick smoke pass)")
    parser.add_argument("--only", action="append", default=[], help="run modules whose name contains this")
    parser.add_argument("--match", action="append", default=[], help="run only pairs whose label contains this")
    parser.add_argument("--no-custom", action="store_true", help="skip custom() measurements (start-up, throughput)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    parser.add_argument("--json", metavar="PATH", help="write every sample to PATH as JSON")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per subprocess (default 900)")
    parser.add_argument("--callgrind", action="store_true",
                        help="also count instructions per op of both sides of every pair under callgrind "
                             "(application thread; repeatable on a busy machine; ~1 min per pair)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--pair", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        if args.count:
            module = _load(args.child)
            print("@@RESULT@@" + json.dumps([{"labels": [p[0] for p in getattr(module, "PAIRS", [])],
                                              "callgrind": [not (len(p) > 4 and p[4].get("callgrind") is False)
                                                            for p in getattr(module, "PAIRS", [])],
                                              "custom": hasattr(module, "custom")}]))
            return 0
        child(args.child, args.pair, args.fast)
        return 0

    started = time.time()
    info = versions()
    print("otelkit benchmarks  " + "  ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    rows: list[Row] = []
    for name in discover(args.only):
        listing, error = _spawn(["--child", name, "--count"], 120)
        if error:
            rows.append(Row(name, "(import)", "", [], [], [], error=error))
            continue
        labels, has_custom = list(listing[0]["labels"]), bool(listing[0]["custom"])
        with_callgrind = list(listing[0].get("callgrind", [True] * len(labels)))
        jobs: list[list[str]] = [["--child", name, "--pair", str(i)] for i, label in enumerate(labels)
                                 if not args.match or any(m in label for m in args.match)]
        if has_custom and not args.no_custom and not args.match:
            jobs.append(["--child", name])
        for job in jobs:
            if args.fast:
                job.append("--fast")
            results, error = _spawn(job, args.timeout)
            if error:
                label = f"pair {job[3]}" if "--pair" in job else "custom()"
                rows.append(Row(name, label, "", [], [], [], error=error))
                print(f"  {name} {label}: {error}", file=sys.stderr, flush=True)
                continue
            new = _rows_from(name, results)
            if args.callgrind and "--pair" in job and new and with_callgrind[int(job[3])]:
                try:
                    new[0].extra["instructions"] = _instructions(name, int(job[3]), args.fast)
                except Exception as exc:  # a finding, not a crash of the whole run
                    new[0].note = (new[0].note + " " if new[0].note else "") + f"callgrind failed: {exc}"
            rows.extend(new)
            for row in new:
                print(f"  {name}: {row.label}: ratio {row.ratio if row.ratio is None else round(row.ratio, 2)} "
                      f"{row.verdict}", file=sys.stderr, flush=True)
    print()
    print(render_table(rows))
    if args.markdown:
        print()
        print(render_markdown(rows))
    print(f"\n{len(rows)} rows in {time.time() - started:.0f} s"
          f"{' (--fast: indicative only)' if args.fast else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": info, "fast": args.fast,
                                               "rows": [asdict(r) for r in rows]}, indent=1))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
