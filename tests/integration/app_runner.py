"""Run an app in a subprocess and time its exit from the moment it prints a marker line on stderr;
judge such a time against a deadline without depending on how busy the machine is.

A deadline check compares two runs timed the same way under the same load: the run under test,
and a *reference* run of the same program (or the same operation) in which nothing can make it
wait, measured just before. On an idle machine the reference costs a fraction of a second; on a
loaded one it grows with everything else the program does after its marker (exporting, joining
threads, interpreter teardown), which is exactly what delays the run under test beyond its deadline.
The faults these checks guard against cost 20 s to forever, so the allowance can be generous.
See docs/testing.md.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence

# The documented promise: exit within the shutdown deadline + 1 s (on an idle machine).
GRACE_SECONDS = 1.0
# What the reference run took, times this, is added for the load: measured, the part of an exit
# spent beyond its deadline stays under 2x the reference run's exit, idle or with both cores
# over-subscribed four times (docs/testing.md has the figures).
REFERENCE_FACTOR = 3.0


def run_timed_exit(args: Sequence[str], env: Mapping[str, str], marker: str | None = "EMITTED",
                   timeout: float = 60.0, cwd: str | os.PathLike[str] | None = None,
                   ) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Start ``args``; return (seconds from the ``marker`` line on stderr to exit, the finished process).

    With ``marker=None`` the time counts from the start. Fails the test when the marker never comes.
    """
    proc = subprocess.Popen(list(args), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd)
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


def allowance(deadline: float, reference: float) -> float:
    """The longest time a deadline check accepts: the deadline, the grace, and the load's share."""
    return deadline + GRACE_SECONDS + REFERENCE_FACTOR * reference


def assert_within_deadline(elapsed: float, deadline: float, reference: float, what: str, detail: str = "") -> None:
    """Fail unless ``elapsed`` fits :func:`allowance`; the message carries every figure and the load."""
    limit = allowance(deadline, reference)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    assert elapsed <= limit, (
        f"{what} took {elapsed:.2f}s; allowed {limit:.2f}s = deadline {deadline:.2f}s + {GRACE_SECONDS:.0f}s"
        f" + {REFERENCE_FACTOR:.0f} x reference {reference:.2f}s (load average {load})\n{detail}")
