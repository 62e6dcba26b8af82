"""Trace-context and baggage propagation on the message path, with a fast path for otelkit's default propagators.

With the default ``OTEL_PROPAGATORS`` (``tracecontext,baggage``), the baggage a message carries is almost
always otelkit's correlation ID alone. The SDK's W3C baggage propagator percent-encodes it through generators
and validating regexes on every publish, and splits, validates and decodes it again on every delivery: about as
much work as the rest of the header handling together. Here that one-entry header is written and read directly
(``correlation_id=<id>``, for IDs whose characters percent-encoding leaves unchanged); anything else (more
baggage entries, other characters, another propagator, a wrapped one such as Sentry's) goes through the
configured propagators exactly as before. The ``traceparent`` side uses the SDK's W3C propagator, except into a
fresh header dict (an emission's new headers), where the same ``traceparent``/``tracestate`` are written in one
frame.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otelkit import _compat, _names
from otelkit._pipeline import carriers

__all__ = ["extract", "inject"]

_BAGGAGE_KEY = _compat.BAGGAGE_KEY
_SPAN_KEY = _compat.SPAN_KEY  # the context key of the current span (trace.set_span_in_context)
_TRACEPARENT = "traceparent"  # the W3C Trace Context header names
_TRACESTATE = "tracestate"
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


def _inject_trace_context(carrier: dict[str, str], context: Context) -> None:
    """What ``TraceContextTextMapPropagator.inject(carrier, context)`` writes with the default setter, in one frame:
    ``traceparent`` (and ``tracestate`` when the span context has one) of the context's span, nothing for no span
    or the invalid span context. For a fresh dict only (items assigned, no bytes twins to replace);
    ``tests/unit/test_pipeline_propagation.py`` compares the headers with the propagator's."""
    span = context.get(_SPAN_KEY)  # type: ignore[arg-type]
    if not isinstance(span, Span):  # get_current_span's INVALID_SPAN: the propagator writes nothing
        return
    span_context = span.get_span_context()
    if span_context == INVALID_SPAN_CONTEXT:
        return
    # format_trace_id / format_span_id are format(value, "032x") / format(value, "016x")
    carrier[_TRACEPARENT] = (f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
                             f"{span_context.trace_flags:02x}")
    if span_context.trace_state:
        carrier[_TRACESTATE] = span_context.trace_state.to_header()


def inject(carrier: Any, context: Context, fresh: bool = False) -> None:
    """``propagate.inject(carrier, context)`` with otelkit's byte-safe setter.

    ``fresh``: ``carrier`` is a plain dict that held nothing before this call (an emission into a new header
    dict): it can hold no bytes twin of a key, so the default propagators' headers are assigned as items.
    """
    defaults = _defaults()
    if defaults is None:
        propagate.inject(carrier, context=context, setter=carriers.SETTER)
        return
    if fresh and _SPAN_KEY is not None:
        _inject_trace_context(carrier, context)
    else:
        defaults[0].inject(carrier, context, carriers.SETTER)
    entries: Any = context.get(_BAGGAGE_KEY)  # type: ignore[arg-type]
    if entries and len(entries) == 1:
        value = entries.get(_names.CORRELATION_BAGGAGE_KEY)
        if type(value) is str and _PLAIN.fullmatch(value) is not None:
            if fresh:
                carrier[_HEADER] = _PREFIX + value
            else:
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
