"""The ``otelkit`` command line: ``otelkit demo``, ``otelkit doctor`` and ``otelkit run``.

Also reachable as ``python -m otelkit``. Sub-commands import their modules
lazily so ``otelkit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from otelkit._version import __version__

_DEMO_HELP = """\
Run an instrumented token pipeline (discoverer -> queue -> enrichment workers in
separate processes -> three external APIs -> database, with retries and a
dead-letter path) and show its telemetry.

Redis and PostgreSQL are used when reachable (127.0.0.1:6379 / :5432, or
--redis / --postgres / REDIS_URL / DATABASE_URL); otherwise in-process
stand-ins. With no collector configured or listening, the demo collects the
telemetry itself and prints the trace of one event and a metrics summary.

Exit status: 0 when every token reached a final state (stored or dead-lettered);
1 when some did not before --timeout; 2 when it cannot start (a bad setting, or the
requested telemetry destination is not available); 130 when
interrupted.
"""

_DOCTOR_HELP = """\
Diagnose the telemetry setup of this environment: the effective configuration
(secrets masked, with where each value came from), each OTLP endpoint (a real
test span is sent), instrumentations, the Sentry DSN, the fork model and, with
the bundled stack running, whether the test span is queryable in Tempo.
Exit status 0 when nothing is broken, 1 otherwise.
"""

_RUN_HELP = """\
Start any Python program with otelkit.init() applied before its first import,
in its process and in every Python process it starts (gunicorn and uvicorn
workers, Celery pool processes, subprocesses), through the standard
sitecustomize / PYTHONPATH mechanism. Configure it with the usual OTEL_* and
OTELKIT_* variables. If the program calls otelkit.init() itself, its
arguments win and there is still one pipeline. If telemetry cannot be set up,
one warning is printed and the program runs anyway.

Examples:
  otelkit run -- gunicorn -w 4 app:app
  otelkit run -- uvicorn --workers 2 app:app
  otelkit run -- celery -A tasks worker
  otelkit run -- python -m mypackage.worker

Exit status: the program's own; 2 without a command; 126 when the command
cannot be executed; 127 when it is not found.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``otelkit`` command (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="otelkit", description="OpenTelemetry for Python services and job pipelines.")
    parser.add_argument("--version", action="version", version=f"otelkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the instrumented pipeline demo", description=_DEMO_HELP,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--events", type=_positive_int, default=24, metavar="N",
                      help="tokens to discover (default: 24; per cycle with --continuous)")
    demo.add_argument("--workers", type=_positive_int, default=3, metavar="N",
                      help="enrichment worker processes (default: 3)")
    demo.add_argument("--redis", metavar="URL",
                      help="Redis URL, or 'none' for the in-process queue "
                           "(default: $REDIS_URL, else redis://127.0.0.1:6379/0 when reachable)")
    demo.add_argument("--postgres", metavar="DSN",
                      help="PostgreSQL DSN, or 'none' for SQLite "
                           "(default: $DATABASE_URL, else host=127.0.0.1 port=5432 when reachable)")
    demo.add_argument("--telemetry", choices=("auto", "terminal", "otlp"), default="auto",
                      help="auto: the configured/bundled collector if any, else the terminal; terminal: always "
                           "collect in-process and print; otlp: only the configured/bundled collector")
    demo.add_argument("--show", choices=("ok", "retried", "dead-letter"), default="ok",
                      help="which event's trace to print: one stored at once (default), one stored after a "
                           "retry, or one dead-lettered")
    demo.add_argument("--continuous", action="store_true",
                      help="keep discovering until interrupted (for the compose demo profile)")
    demo.add_argument("--seed", type=int, default=6, help="random seed of the API stand-in (default: 6)")
    demo.add_argument("--timeout", type=_positive_float, default=45.0, metavar="SECONDS",
                      help="give up waiting for the pipeline after this long (default: 45)")
    demo.add_argument("--grafana-url", default="http://127.0.0.1:3000", metavar="URL",
                      help="Grafana of the bundled stack, printed as where to look (default: %(default)s)")
    demo.add_argument("--save-telemetry", metavar="FILE",
                      help="with the in-process receiver: also write every span, metric point and log record "
                           "it received to FILE as JSON lines")
    demo.add_argument("--keep", action="store_true", help="keep the demo's Redis keys and database table")

    run = sub.add_parser("run", help="run a Python program with otelkit.init() applied first",
                         description=_RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                         usage="otelkit run [-h] [--] COMMAND [ARG...]")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]",
                     help="the program and its arguments (put `--` before it if it starts with a dash)")

    doctor = sub.add_parser("doctor", help="diagnose the telemetry configuration", description=_DOCTOR_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    doctor.add_argument("--timeout", type=_positive_float, default=3.0, metavar="SECONDS",
                        help="deadline of each network check (default: 3)")
    doctor.add_argument("--tempo-url", metavar="URL",
                        help="Tempo HTTP API to look the test span up in "
                             "(default: $OTELKIT_TEMPO_URL, else http://127.0.0.1:3200 when listening)")
    doctor.add_argument("--no-send", action="store_true",
                        help="only check TCP reachability; do not send a test span")
    doctor.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    doctor.add_argument("--config", metavar="FILE",
                        help="check this declarative configuration file, as if OTEL_CONFIG_FILE named it "
                             "(needs otelkit[config-file])")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``otelkit`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from otelkit._demo import run_demo

        return run_demo(args)
    if args.command == "doctor":
        from otelkit._doctor import run_doctor

        return run_doctor(args)
    if args.command == "run":
        from otelkit._run import run

        return run(args.program)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
