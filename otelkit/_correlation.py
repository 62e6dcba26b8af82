"""The business correlation ID: one value that follows an event through every process it touches.

It lives in W3C baggage under :data:`otelkit._names.CORRELATION_BAGGAGE_KEY`, so any
propagator-aware hop (otelkit's pipeline carriers, the httpx instrumentation's
outgoing headers) passes it on. :class:`CorrelationSpanProcessor` copies it onto
every span started inside a correlation scope; the logs module reads
:func:`get_correlation_id` in its record factory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor

# The API keeps baggage in one context key; reading it directly skips two calls per span.
from otelkit import _fork
from otelkit._compat import BAGGAGE_KEY as _KEY
from otelkit._internal_log import logger
from otelkit._names import CORRELATION_ATTRIBUTE, CORRELATION_BAGGAGE_KEY
from otelkit._regex import deferred

MAX_CORRELATION_ID_LENGTH = 128
# Printable, header- and log-safe; excludes whitespace, quotes, commas and semicolons (baggage delimiters).
_VALID = deferred(globals(), "_VALID", r"[A-Za-z0-9._:/@+=\-]{1," + str(MAX_CORRELATION_ID_LENGTH) + "}")

__all__ = [
    "CorrelationSpanProcessor",
    "correlate",
    "correlation_id",
    "get_correlation_id",
    "is_valid_correlation_id",
    "new_correlation_id",
]


# A generator of otelkit's own (uuid4 costs a urandom syscall per message): seeded from os.urandom,
# untouched by an application's random.seed(), and reseeded in a forked child, whose IDs would
# otherwise repeat the parent's sequence.
_rng = random.Random()
_fork.at_fork(after_in_child=_rng.seed)
_getrandbits = _rng.getrandbits


def new_correlation_id() -> str:
    """A fresh correlation ID (32 lowercase hex characters)."""
    return f"{_getrandbits(128):032x}"


def is_valid_correlation_id(value: object) -> bool:
    """True for a str of 1-128 characters from ``A-Z a-z 0-9 . _ : / @ + = -``.

    Anything else (a 10 KB value, binary, whitespace, a non-string) is treated as
    absent by the pipeline, which then starts a fresh ID.
    """
    return isinstance(value, str) and _VALID.fullmatch(value) is not None


# The last value get_correlation_id() validated. Inside one correlation scope every log record and
# span reads the same str object from the baggage dict, so an identity test skips the regex.
_last_valid: str | None = None


def get_correlation_id(context: Context | None = None) -> str | None:
    """The correlation ID in ``context`` (default: the current context), or None.

    Only a valid ID (see :func:`is_valid_correlation_id`) is returned: baggage
    extracted by any propagator-aware hop may carry a hostile ``correlation_id``
    (newlines, quotes, kilobytes) that must not reach log lines, span attributes
    or outgoing headers. Called on every log record and span start, so it does one
    dict lookup and, for a value other than the last one seen, one regex match.
    """
    global _last_valid
    if _KEY is not None:
        ctx = otel_context.get_current() if context is None else context
        entries: Any = ctx.get(_KEY)
        if not entries:
            return None
        value = entries.get(CORRELATION_BAGGAGE_KEY)
    else:  # pragma: no cover
        value = baggage.get_baggage(CORRELATION_BAGGAGE_KEY, context)
    if value is _last_valid or value is None:
        return value
    if type(value) is str and len(value) <= MAX_CORRELATION_ID_LENGTH and _VALID.fullmatch(value) is not None:
        _last_valid = value
        return value
    return None


def correlation_id() -> str | None:
    """The correlation ID of the current context, or None outside any correlation scope.

    Inside ``otelkit.pipeline.receive`` it is the ID the emitter sent (or a fresh
    one when the message carried none); inside ``emit`` or ``correlate`` it is
    the ID those scopes set.
    """
    return get_correlation_id()


def with_correlation_id(value: str, context: Context | None = None) -> Context:
    """``context`` (default: current) with the correlation ID set in its baggage."""
    return baggage.set_baggage(CORRELATION_BAGGAGE_KEY, value, context)


@contextmanager
def correlate(correlation_id: str | None = None) -> Iterator[str]:
    """Run the block inside a correlation scope and yield its ID.

    With no argument, keeps the current ID if there is one, otherwise creates a
    fresh one: use it where a business event is born (a discovery loop), so the
    discovery spans, its logs and every later ``emit`` share the ID. An
    explicit ``correlation_id`` that is not a valid ID (see
    :func:`is_valid_correlation_id`) is replaced by a fresh one, with a debug log.
    """
    if correlation_id is None:
        correlation_id = get_correlation_id() or new_correlation_id()
    elif not is_valid_correlation_id(correlation_id):
        logger.debug("otelkit: correlation id %.40r is not valid; using a fresh one", correlation_id)
        correlation_id = new_correlation_id()
    token = otel_context.attach(with_correlation_id(correlation_id))
    try:
        yield correlation_id
    finally:
        otel_context.detach(token)


class CorrelationSpanProcessor(SpanProcessor):
    """Set ``otelkit.correlation_id`` on every span started inside a correlation scope.

    Runs first in the processor list, on every span: one dict lookup and, when an
    ID is present, one attribute write.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        value = get_correlation_id(parent_context)
        if value is not None:
            span.set_attribute(CORRELATION_ATTRIBUTE, value)

    # on_end and _on_ending: the SpanProcessor base class's no-ops (the lean end skips those, not overrides).

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
