"""Trace-context and baggage propagation on the message path, with a fast path for otelkit's default propagators.

With the default ``OTEL_PROPAGATORS`` (``tracecontext,baggage``), the baggage a message carries is almost
always otelkit's correlation ID alone. The SDK's W3C baggage propagator percent-encodes it through generators
and validating regexes on every publish, and splits, validates and decodes it again on every delivery: about as
much work as the rest of the header handling together. Here that one-entry header is written and read directly
(``correlation_id=<id>``, for IDs whose characters percent-encoding leaves unchanged); anything else (more
baggage entries, other characters, another propagator, a wrapped one such as Sentry's) goes through the
configured propagators exactly as before. The ``traceparent`` side always uses the SDK's W3C propagator.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otelkit import _compat, _names
from otelkit._pipeline import carriers

__all__ = ["extract", "inject"]

_BAGGAGE_KEY = _compat.BAGGAGE_KEY
_HEADER = "baggage"
_PREFIX = _names.CORRELATION_BAGGAGE_KEY + "="
# The characters quote_plus/unquote_plus leave unchanged (otelkit's generated IDs are hex): for these the
# header is exactly what the W3C propagator writes, and what it reads back.
_PLAIN = re.compile(r"[A-Za-z0-9._~-]{1,128}")

_defaults_cache: tuple[object, tuple[Any, Any] | None] | None = None


def _defaults() -> tuple[Any, Any] | None:
    """(trace-context propagator, baggage propagator) when the global propagator is exactly that pair."""
    global _defaults_cache
    textmap = propagate.get_global_textmap()
    cached = _defaults_cache
    if cached is not None and cached[0] is textmap:
        return cached[1]
    found: tuple[Any, Any] | None = None
    members = _compat.composite_members(textmap) if type(textmap) is CompositePropagator else None
    if (_BAGGAGE_KEY is not None and members is not None and len(members) == 2
            and type(members[0]) is TraceContextTextMapPropagator and type(members[1]) is W3CBaggagePropagator):
        found = (members[0], members[1])
    _defaults_cache = (textmap, found)
    return found


def inject(carrier: Any, context: Context) -> None:
    """``propagate.inject(carrier, context)`` with otelkit's byte-safe setter."""
    defaults = _defaults()
    if defaults is None:
        propagate.inject(carrier, context=context, setter=carriers.SETTER)
        return
    defaults[0].inject(carrier, context, carriers.SETTER)
    entries: Any = context.get(_BAGGAGE_KEY)  # type: ignore[arg-type]
    if entries and len(entries) == 1:
        value = entries.get(_names.CORRELATION_BAGGAGE_KEY)
        if type(value) is str and _PLAIN.fullmatch(value) is not None:
            carriers.set_header(carrier, _HEADER, _PREFIX + value)
            return
    defaults[1].inject(carrier, context, carriers.SETTER)


def extract(carrier: Any) -> Context:
    """``propagate.extract(carrier)`` into a fresh context, with otelkit's byte-safe getter."""
    defaults = _defaults()
    if defaults is None:
        return propagate.extract(carrier, context=Context(), getter=carriers.GETTER)
    context: Context = defaults[0].extract(carrier, Context(), carriers.GETTER)
    header = carriers.get_str(carrier, _HEADER)
    if header is None:
        return context
    if header.startswith(_PREFIX) and _PLAIN.fullmatch(header, len(_PREFIX)) is not None:
        values = dict(context)
        values[_BAGGAGE_KEY] = {_names.CORRELATION_BAGGAGE_KEY: header[len(_PREFIX):]}  # type: ignore[index]
        return Context(values)
    result: Context = defaults[1].extract(carrier, context, carriers.GETTER)
    return result
