"""PLACEHOLDER (owner: pipeline). Correlation ID in baggage."""

from __future__ import annotations

from opentelemetry import baggage
from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanProcessor

from otelkit._names import CORRELATION_BAGGAGE_KEY


def get_correlation_id(context: Context | None = None) -> str | None:
    value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY, context)
    return value if isinstance(value, str) else None


def correlation_id() -> str | None:
    """The correlation ID of the current context, or None."""
    return get_correlation_id()


class CorrelationSpanProcessor(SpanProcessor):
    pass
