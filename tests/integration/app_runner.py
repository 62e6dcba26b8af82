"""Run an app in a subprocess and time its exit from the moment it prints a marker line on stderr."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence


def run_timed_exit(args: Sequence[str], env: Mapping[str, str], marker: str | None = "EMITTED",
                   timeout: float = 60.0) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Start ``args``; return (seconds from the ``marker`` line on stderr to exit, the finished process).

    With ``marker=None`` the time counts from the start. Fails the test when the marker never comes.
    """
    proc = subprocess.Popen(list(args), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    marker_at = time.monotonic() if marker is None else None
    deadline = time.monotonic() + timeout
    while marker is not None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(marker):
            marker_at = time.monotonic()
            break
    try:
        stdout, rest = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, rest = proc.communicate()
    exited_at = time.monotonic()
    stderr = "".join(lines) + rest
    assert marker_at is not None, f"the app never printed {marker!r}:\n{stderr}"
    return exited_at - marker_at, subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
