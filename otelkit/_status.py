"""The status record of one integration (public as ``otelkit.IntegrationStatus``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["enabled", "disabled", "skipped", "failed"]


@dataclass(frozen=True)
class IntegrationStatus:
    """What happened to one integration at ``init()``.

    ``state`` is ``enabled``; ``disabled`` (by choice: ``instrument=``,
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``, ``OTELKIT_SYSTEM_METRICS``...);
    ``skipped`` (not installed, version unsupported); or ``failed`` (the
    instrumentation raised; the application keeps running). ``reason`` says why,
    naming the setting or the package; ``version`` is the instrumented library's.
    """

    name: str
    state: State
    reason: str = ""
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.state}" + (f" ({self.reason})" if self.reason else "")
