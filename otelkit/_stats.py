"""PLACEHOLDER (owner: export/reliability). Drop/export accounting and the shutdown report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShutdownReport:
    """Per signal: exported, dropped (by reason), timed out."""

    signals: dict[str, dict[str, object]] = field(default_factory=dict)
