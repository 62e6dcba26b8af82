"""PLACEHOLDER (owner: export/reliability). Exporter factories, batch processors, metric readers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelkit._config import Settings


def build_span_processors(settings: Settings) -> list[Any]:
    return []


def build_metric_readers(settings: Settings) -> list[Any]:
    return []


def build_log_processors(settings: Settings) -> list[Any]:
    return []
