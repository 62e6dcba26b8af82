"""Callgrind instructions per operation for a few benchmark targets, with the load average around the run.

For re-measuring single rows of RESULTS.md without the whole ``run.py`` pass, e.g.::

    .venv/bin/python benchmarks/per_op.py --lo 20 --hi 80 bench_servers:fastapi_requests_{none,contrib_same,otelkit}
    .venv/bin/python benchmarks/per_op.py --lo 10 --hi 50 bench_clients_db:urllib3_get_{none,contrib,otelkit}

Prints one JSON object: ``{target: instructions per operation on the application thread, ...}`` plus
``load_start``/``load_end`` (1-, 5-, 15-minute load averages) and ``seconds``. Three targets run at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _callgrind


def _load() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", help="module:function, e.g. bench_servers:flask_requests_otelkit")
    parser.add_argument("--lo", type=int, default=20)
    parser.add_argument("--hi", type=int, default=80)
    args = parser.parse_args()
    start, t0 = _load(), time.time()
    with ThreadPoolExecutor(3) as pool:
        found = pool.map(lambda t: _callgrind.per_op(t, args.lo, args.hi), args.targets)
        counts = dict(zip(args.targets, found, strict=True))
    print(json.dumps({"load_start": start, "load_end": _load(), "seconds": round(time.time() - t0), **counts},
                     indent=1))


if __name__ == "__main__":
    main()
