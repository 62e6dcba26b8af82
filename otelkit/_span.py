"""PLACEHOLDER (owner: logs/console/span/testing). otelkit.span."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace


def span(name: str, **attributes: Any) -> Any:
    return trace.get_tracer("otelkit").start_as_current_span(name, attributes=attributes)
