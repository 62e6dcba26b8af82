"""``Tracer.start_span`` of the SDK's own tracer, leaner: the same ``_Span`` object, built in one frame.

The SDK's ``start_span`` spends most of a span's application-thread cost in Python frames around
small objects: ``get_current_span``, the ID generator, ``TraceFlags``/``SpanContext`` constructors,
``Span.__init__`` calling ``ReadableSpan.__init__`` with thirteen keywords, ``BoundedAttributes``
cleaning the attributes through a generic recursive cleaner, two ``BoundedList`` and ``Span.start``
taking a lock on a span nobody else can see yet (``benchmarks/bench_export.py``, callgrind row).

:func:`lean_start_span` returns a function doing exactly what ``Tracer.start_span`` does, in the same
order, for the SDK's own ``Tracer`` with the default ``RandomIdGenerator``: the sampler is asked as
the SDK asks it (otelkit's :class:`~otelkit._sampling.ParentBasedAlwaysOn` is decided inline: same
decisions), the tracer's resource, limits, processors, configuration and span metrics are read per
call, and the result is the SDK's ``_Span`` with the same instance attributes (same names, same
order, same values), started, ``on_start`` called. Processors and exporters of other libraries get
the SDK's own objects. Attribute values that need cleaning (other types, long strings, more than the
limit) and links take the SDK's own code.

Guarded three times: only for the SDK releases in :data:`VERIFIED_SDK`; only when ``Tracer.start_span``,
``Span.__init__``/``start`` and the ID generator are the SDK's own (not patched or subclassed); and only
when a span built here has exactly the instance attributes of one built by ``_Span(...)`` in the
installed SDK (checked once per process). Otherwise the SDK's ``start_span`` is used unchanged.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context, get_current
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, _Span
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE
from opentelemetry.util.types import Attributes

from otelkit._compat import SPAN_KEY
from otelkit._internal_log import logger
from otelkit._sampling import ParentBasedAlwaysOn

__all__ = ["VERIFIED_SDK", "lean_start_span"]

# The SDK releases whose Tracer.start_span/Span construction this module was checked against line by line
# (tests/unit/test_span_path.py compares the spans). Others (1.40 sets no RANDOM_TRACE_ID flag and asks the
# provider whether a tracer is enabled) keep the SDK's own start_span until checked and added here.
VERIFIED_SDK = ("1.45.",)

_INTERNAL = trace_api.SpanKind.INTERNAL
_RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE
_DROP = Decision.DROP
# TraceFlags for (sampled, random trace id): ints, immutable, so one object each serves every span.
_FLAGS = {
    (True, True): TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
    (True, False): TraceFlags(TraceFlags.SAMPLED),
    (False, True): TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID),
    (False, False): TraceFlags(TraceFlags.DEFAULT),
}
# Values the SDK's cleaner returns unchanged (exact types: subclasses such as enums take the SDK's path).
_ATOMIC = frozenset({str, int, float, bool, bytes, type(None)})
_PLAIN_MAPPINGS = frozenset({dict, MappingProxyType})
_new = object.__new__
_Lock = threading.Lock


def _bounded_attributes(attributes: Any, maxlen: int | None, max_value_len: int | None) -> BoundedAttributes:
    """``BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=...)``, without the generic cleaner.

    Only when cleaning would change nothing: string keys, values of the types above, strings within the
    length limit, no more attributes than the limit. Anything else goes through the SDK's constructor.
    """
    if attributes:
        if type(attributes) not in _PLAIN_MAPPINGS or (maxlen is not None and len(attributes) > maxlen):
            return BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=max_value_len)
        for key, value in attributes.items():
            kind = type(value)
            if kind not in _ATOMIC or type(key) is not str or not key or (
                    kind is str and max_value_len is not None and len(value) > max_value_len):
                return BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=max_value_len)
        items = dict(attributes)
    else:
        items = {}
    bounded = _new(BoundedAttributes)
    bounded._dict = items
    bounded.maxlen = maxlen
    bounded.dropped = 0
    bounded.max_value_len = max_value_len
    bounded._lock = _Lock()
    bounded._immutable = False
    return bounded


def _build(tracer: Any, name: str, span_context: SpanContext, parent: SpanContext | None, attributes: Any,
           kind: trace_api.SpanKind, links: Sequence[trace_api.Link], record_exception: bool,
           set_status_on_exception: bool, record_end_metrics: Any, status: Any) -> Span:
    """What ``_Span(...)`` (``ReadableSpan.__init__`` then ``Span.__init__``) leaves in the instance, in its order."""
    limits = tracer._span_limits
    span: Any = _new(_Span)
    span._name = name
    span._context = span_context
    span._kind = kind
    span._instrumentation_info = tracer.instrumentation_info
    span._instrumentation_scope = tracer._instrumentation_scope
    span._parent = parent
    span._start_time = None
    span._end_time = None
    span._attributes = _bounded_attributes(attributes, limits.max_span_attributes, limits.max_span_attribute_length)
    # BoundedList(limits.max_events), what Span._new_events makes: its three attributes, in its order.
    events: Any = _new(BoundedList)
    events.dropped = 0
    events._dq = deque(maxlen=limits.max_events)
    events._lock = _Lock()
    span._events = events
    span._links = ()
    span._resource = tracer.resource
    span._status = status
    span._sampler = tracer.sampler
    span._trace_config = None
    span._record_exception = record_exception
    span._set_status_on_exception = set_status_on_exception
    span._span_processor = tracer.span_processor
    span._limits = limits
    span._lock = _Lock()
    # Links with content take the SDK's own validation (the limits are already on the span).
    if links:
        span._links = span._new_links(links)
    else:  # BoundedList(limits.max_links), as Span._new_links makes it for no links
        empty: Any = _new(BoundedList)
        empty.dropped = 0
        empty._dq = deque(maxlen=limits.max_links)
        empty._lock = _Lock()
        span._links = empty
    span._record_end_metrics = record_end_metrics
    return span  # type: ignore[no-any-return]


def _make(tracer: Any, status: Any) -> Callable[..., trace_api.Span]:
    getrandbits = random.getrandbits
    sdk_trace = _sdk_trace
    span_key = str(SPAN_KEY)  # not None: lean_start_span checked it

    def start_span(name: str, context: Context | None = None, kind: trace_api.SpanKind = _INTERNAL,
                   attributes: Attributes = None, links: Sequence[trace_api.Link] | None = (),
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace_api.Span:
        links = links or ()
        current = (context if context is not None else get_current()).get(span_key)
        parent: SpanContext | None = (
            current if isinstance(current, trace_api.Span) else INVALID_SPAN).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if not tracer._tracer_config.is_enabled:
            return NonRecordingSpan(context=parent)  # type: ignore[arg-type]  # the SDK passes None on too
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = getrandbits(128)
            while not trace_id:
                trace_id = getrandbits(128)
        else:
            trace_id = parent.trace_id
        sampler = tracer.sampler
        if type(sampler) is ParentBasedAlwaysOn:
            # ParentBasedAlwaysOn.should_sample, inline (the parent is already looked up).
            if parent is None:
                decision, span_attributes, trace_state = _RECORD_AND_SAMPLE, attributes, None
            elif parent.trace_flags.sampled:
                decision, span_attributes, trace_state = _RECORD_AND_SAMPLE, attributes, parent.trace_state
            else:
                decision, span_attributes, trace_state = _DROP, None, parent.trace_state
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, span_attributes, trace_state = result.decision, result.attributes, result.trace_state
        span_id = getrandbits(64)
        while not span_id:
            span_id = getrandbits(64)
        flags = _FLAGS[decision.is_sampled(), True if parent is None else parent.trace_flags.random_trace_id]
        # SpanContext.__new__'s tuple: both IDs are non-zero and in range here, so it is valid.
        span_context = tuple.__new__(SpanContext, (
            trace_id, span_id, False, flags, DEFAULT_TRACE_STATE if trace_state is None else trace_state, True))
        record_end_metrics = tracer._tracer_metrics.start_span(parent, decision)
        if not decision.is_recording():
            return NonRecordingSpan(context=span_context)
        span: Any = _build(tracer, name, span_context, parent, span_attributes, kind, links, record_exception,
                           set_status_on_exception, record_end_metrics, status)
        # Span.start: nobody else holds the span yet, so its lock guards nothing here.
        # The clock the SDK's Span.start reads: its module's time_ns, looked up at call time (tests patch it).
        span._start_time = start_time if start_time is not None else sdk_trace.time_ns()
        span._span_processor.on_start(span, parent_context=context)
        return span  # type: ignore[no-any-return]

    return start_span


_checked = False
_status: Any = None  # None after the check: the lean path is off
_sdk_trace: Any = None


def _sdk_code(function: Any, qualname: str) -> bool:
    return (getattr(function, "__module__", None) == "opentelemetry.sdk.trace"
            and getattr(function, "__qualname__", None) == qualname and not hasattr(function, "__wrapped__"))


def _same_layout() -> Any:
    """The SDK's default span status if a span built here has the instance attributes ``_Span(...)`` gives it."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    class _Tracer:
        sampler = ALWAYS_ON
        resource = Resource.create({})
        span_processor = SpanProcessor()
        instrumentation_info = None
        _instrumentation_scope = InstrumentationScope("otelkit-check")
        _span_limits = SpanLimits()

    tracer = _Tracer()
    context = SpanContext(1, 2, False, _FLAGS[True, True])
    attributes: dict[str, Any] = {"k": "v", "n": 1}
    reference = _Span(name="n", context=context, parent=None, sampler=tracer.sampler, resource=tracer.resource,
                      attributes=attributes, span_processor=tracer.span_processor, kind=_INTERNAL, links=(),
                      instrumentation_info=None, record_exception=True, set_status_on_exception=False,
                      limits=tracer._span_limits, instrumentation_scope=tracer._instrumentation_scope,
                      record_end_metrics=_noop)
    built = _build(tracer, "n", context, None, attributes, _INTERNAL, (), True, False, _noop, reference._status)
    if _shape(reference) != _shape(built):
        return None
    return reference._status  # the SDK's default ``Status(UNSET)``, one object shared by every span


def _noop() -> None:
    return None


def _shape(value: Any) -> Any:
    if isinstance(value, (Span, BoundedAttributes, BoundedList)):
        return type(value), [(key, _shape(item)) for key, item in vars(value).items()]
    if isinstance(value, deque):
        return deque, list(value), value.maxlen
    if type(value) is type(_Lock()):
        return "lock", value.locked()
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return value


def lean_start_span(tracer: trace_api.Tracer) -> Callable[..., trace_api.Span] | None:
    """The lean ``start_span`` for ``tracer``, or None when the SDK's own must be used (see the module doc)."""
    global _checked, _status, _sdk_trace
    if type(tracer) is not SdkTracer or SPAN_KEY is None or not sdk_version.startswith(VERIFIED_SDK):
        return None
    if type(getattr(tracer, "id_generator", None)) is not RandomIdGenerator:
        return None
    if not all(hasattr(tracer, name) for name in ("_tracer_config", "_tracer_metrics", "_span_limits",
                                                  "_instrumentation_scope", "instrumentation_info")):
        return None
    if not (_sdk_code(SdkTracer.start_span, "Tracer.start_span") and _sdk_code(Span.__init__, "Span.__init__")
            and _sdk_code(Span.start, "Span.start") and _sdk_code(SdkTracer._is_enabled, "Tracer._is_enabled")
            and _sdk_code(ReadableSpan.__init__, "ReadableSpan.__init__")
            and _Span.__init__ is Span.__init__ and _Span.start is Span.start):
        return None
    if not _checked:
        _checked = True
        try:
            import opentelemetry.sdk.trace as sdk_trace

            _sdk_trace = sdk_trace
            _status = _same_layout()
        except Exception:
            logger.debug("otelkit: the lean span path's layout check failed", exc_info=True)
            _status = None
        if _status is None:
            logger.debug("otelkit: this SDK's spans differ from the lean path's; using Tracer.start_span")
    if _status is None:
        return None
    return _make(tracer, _status)
