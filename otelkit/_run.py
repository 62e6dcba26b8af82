"""``otelkit run -- COMMAND...``: start any Python program with ``otelkit.init()`` applied first.

The program is started with ``otelkit/_bootstrap`` first on ``PYTHONPATH`` and ``OTELKIT_RUN=1``;
the ``sitecustomize`` there calls ``otelkit.init()`` at interpreter start-up, before the program's
first import, in that process and in every Python process it starts. Nothing else in the
environment changes: configuration is the ``OTEL_*`` / ``OTELKIT_*`` variables, as for ``init()``.

``otelkit run`` replaces itself with the command (``exec``), so signals, the exit status and the
process ID are the program's own. Exit status: the program's; 2 for a usage error (no command);
126 when the command cannot be executed; 127 when it is not found (the shell's conventions).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["BOOTSTRAP_DIR", "child_environment", "run"]

BOOTSTRAP_DIR = str(Path(__file__).with_name("_bootstrap"))
MARKER = "OTELKIT_RUN"


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the bootstrap directory first on ``PYTHONPATH`` (once) and ``OTELKIT_RUN=1``."""
    env = dict(environ)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *parts])
    env[MARKER] = "1"
    return env


def run(command: Sequence[str]) -> int:
    """Replace this process with ``command`` under ``otelkit.init()``; return only on failure."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        sys.stderr.write("usage: otelkit run [--] COMMAND [ARG...]\n"
                         "otelkit run: error: no command given (e.g. `otelkit run -- gunicorn app:app`)\n")
        return 2
    program = command[0]
    resolved = program if os.sep in program else shutil.which(program)
    if resolved is None or not os.path.exists(resolved):
        sys.stderr.write(f"otelkit run: {program}: command not found\n")
        return 127
    env = child_environment(os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(resolved, list(command), env)
    except OSError as error:
        sys.stderr.write(f"otelkit run: {program}: cannot execute: {error.strerror or error}\n")
        return 126
    return 126  # not reached: execve does not return on success
