"""Whole-event head sampling: keep or drop every span of one event together, in every process.

The spec samplers decide per trace. otelkit's consumer spans start their own trace (linked to the
producer), so at a ratio below 1.0 ``traceidratio`` keeps an event's producer and drops its consumer,
or keeps a retry and drops the first attempt. :class:`CorrelationRatioSampler` decides from the
business correlation ID instead, which every span of the event carries:

1. **A parent** (local or remote) is followed, like the parent-based samplers: sampled parent,
   sampled child; its ``tracestate`` is kept.
2. **No parent, links** (a consumer's root span linked to its producer, a batch linked to many): the
   span is sampled iff a linked span was, so a consumer never outlives or loses its producer even when
   the producer's decision was made elsewhere (a trace-ID decision upstream, a foreign SDK).
3. **No parent or link, a correlation ID** (``messaging.conversation_id`` / ``otelkit.correlation_id`` in the
   span's attributes, else the correlation baggage entry in the parent context): the decision is a
   deterministic function of the ID, identical in every process and language (below).
4. **Otherwise** the decision comes from the trace ID, like ``traceidratio``.

**The function** (the probability-sampling conventions of the spec, with explicit randomness):
``R`` = the first 7 bytes of SHA-256 of the UTF-8 correlation ID, read big-endian (56 bits); the
rejection threshold ``T = round((1 - ratio) * 2**56)``; the span is sampled iff ``R >= T``. Without
a correlation ID, ``R`` is the low 56 bits of the trace ID. A sampled span's ``tracestate`` carries
``ot=th:<T>`` (14 hex digits, trailing zeros removed) so back-ends can extrapolate counts, and
``rv:<R>`` when ``R`` came from the correlation ID, so any later participant reproduces the decision.

Test vector: correlation ID ``order-42`` gives ``R = 0x3bf8b157c4238e`` (see the unit tests).

Select it with ``OTEL_TRACES_SAMPLER=otelkit_correlation_ratio`` and ``OTEL_TRACES_SAMPLER_ARG=<ratio>``
(``init(sampler=..., sampler_arg=...)``); it is also an ``opentelemetry_traces_sampler`` entry point,
so the SDK's own configurator (``opentelemetry-instrument``, the distro) picks it up from the same
variables without otelkit. Metrics are never sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import baggage
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from otelkit import _names
from otelkit._correlation import is_valid_correlation_id

__all__ = ["NAME", "CorrelationRatioSampler", "ParentBasedAlwaysOn", "correlation_randomness", "factory", "threshold"]

NAME = "otelkit_correlation_ratio"
ARG_ENV = "OTEL_TRACES_SAMPLER_ARG"

_MAX = 1 << 56
_MASK = _MAX - 1
_CID_ATTRIBUTES = (_names.MESSAGING_CONVERSATION_ID, _names.CORRELATION_ATTRIBUTE)


def correlation_randomness(correlation_id: str) -> int:
    """The 56-bit randomness of a correlation ID: the first 7 bytes of its SHA-256, big-endian."""
    import hashlib  # here: only this opt-in sampler needs it, and its import is ~6M instructions of init()

    return int.from_bytes(hashlib.sha256(correlation_id.encode("utf-8")).digest()[:7], "big")


def threshold(ratio: float) -> int:
    """The rejection threshold for a sampling probability: sampled iff randomness >= threshold."""
    return round((1.0 - ratio) * _MAX)


def _hex(value: int) -> str:
    text = f"{value:014x}".rstrip("0")
    return text or "0"


def _ot_value(th: int, rv: int | None) -> str:
    value = f"th:{_hex(th)}"
    # rv is always 14 hex digits (the spec does not trim it).
    return value if rv is None else f"{value};rv:{rv:014x}"


def _correlation_id(attributes: Attributes, parent_context: Context | None) -> str | None:
    if attributes:
        for key in _CID_ATTRIBUTES:
            value = attributes.get(key)
            if isinstance(value, str) and is_valid_correlation_id(value):
                return value
    carried: object = baggage.get_baggage(_names.CORRELATION_BAGGAGE_KEY, parent_context)
    return carried if isinstance(carried, str) and is_valid_correlation_id(carried) else None


def _with_ot(state: TraceState | None, ot: str) -> TraceState:
    state = state or TraceState()
    return state.update("ot", ot) if "ot" in state else state.add("ot", ot)


class CorrelationRatioSampler(Sampler):
    """Keeps ``ratio`` of events, whole: see the module docstring for the rule and the function."""

    def __init__(self, ratio: float = 1.0) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{NAME}: the ratio must be a number from 0 to 1 (set {ARG_ENV}); got {ratio!r}")
        self.ratio = float(ratio)
        self._threshold = threshold(self.ratio)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None) -> SamplingResult:
        parent = trace_api.get_current_span(parent_context).get_span_context()
        if parent.is_valid:
            decision = Decision.RECORD_AND_SAMPLE if parent.trace_flags.sampled else Decision.DROP
            return SamplingResult(decision, attributes if decision is Decision.RECORD_AND_SAMPLE else None,
                                  parent.trace_state)
        if links:
            linked = [link.context for link in links if link.context.is_valid]
            if linked:
                kept = next((c for c in linked if c.trace_flags.sampled), None)
                if kept is None:
                    return SamplingResult(Decision.DROP, None, None)
                ot = kept.trace_state.get("ot") if kept.trace_state is not None else None
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes,
                                      _with_ot(None, ot) if ot else None)
        cid = _correlation_id(attributes, parent_context)
        rv: int | None
        if cid is not None:
            randomness = rv = correlation_randomness(cid)
        else:
            randomness, rv = trace_id & _MASK, None
        if randomness < self._threshold:
            return SamplingResult(Decision.DROP, None, None)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, _with_ot(None, _ot_value(self._threshold, rv)))

    def get_description(self) -> str:
        return f"CorrelationRatioSampler{{{self.ratio}}}"


class ParentBasedAlwaysOn(ParentBased):
    """The spec's default sampler ``parentbased_always_on``: the SDK's ``ParentBased(ALWAYS_ON)``, cheaper.

    Same decisions, results and description: a valid parent is followed (sampled: record and sample,
    with the caller's attributes; not sampled: drop, without them), with its ``tracestate``; no parent:
    record and sample. The SDK's version looks the parent span up twice (``ParentBased``, then
    ``ALWAYS_ON`` for the tracestate) through two calls with keyword arguments, ~5 % of a span on the
    application thread; this one looks it up once.
    """

    def __init__(self) -> None:
        super().__init__(ALWAYS_ON)

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None) -> SamplingResult:
        parent = trace_api.get_current_span(parent_context).get_span_context()
        if parent is None or not parent.is_valid:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, None)
        if parent.trace_flags.sampled:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
        return SamplingResult(Decision.DROP, None, parent.trace_state)


def factory(arg: object = None) -> CorrelationRatioSampler:
    """The ``opentelemetry_traces_sampler`` entry point: the SDK passes ``OTEL_TRACES_SAMPLER_ARG`` as a str."""
    if arg is None or (isinstance(arg, str) and not arg.strip()):
        return CorrelationRatioSampler(1.0)
    if isinstance(arg, str):
        try:
            value = float(arg.strip())
        except ValueError:
            raise ValueError(f"{NAME}: {ARG_ENV}={arg!r} is not a number; expected a ratio from 0 to 1") from None
        return CorrelationRatioSampler(value)
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return CorrelationRatioSampler(float(arg))
    raise ValueError(f"{NAME}: the ratio must be a number from 0 to 1; got {arg!r}")
