"""Proxy tracer, meter and logger providers: set into the OTel API globals once, re-pointed on every init().

The OTel API lets a process set its global providers only once (a second call
logs "Overriding of current TracerProvider is not allowed" and is ignored).
otelkit sets these proxies once and :func:`swap` re-points them at new SDK
providers, so tracers, meters and instruments handed out before a re-init
follow it.

The tracer proxy is on the hot path. It does not wrap calls: on every swap it
stores the SDK tracer's *bound methods* as instance attributes, which shadow
the class methods, so ``proxy.start_as_current_span(...)`` is the SDK call
itself with no extra Python frame.

If another library set SDK providers before otelkit (``opentelemetry-instrument``,
Sentry, ...), :func:`install` leaves them in place and reports them as
*foreign*; ``init()`` then attaches forwarding processors to them (see
:class:`ForwardingSpanProcessor`) so spans and logs from any tracer still reach
otelkit's exporters.
"""

from __future__ import annotations

import functools
import inspect
import operator
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context, attach, detach, set_value
from opentelemetry.metrics import CallbackT
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace import Tracer as SdkTracer

from otelkit import _fork
from otelkit._compat import (
    SPAN_KEY,
    ProxyCounter,
    ProxyGauge,
    ProxyHistogram,
    ProxyInstrument,
    ProxyObservableCounter,
    ProxyObservableGauge,
    ProxyObservableUpDownCounter,
    ProxyUpDownCounter,
    lean_end_span,
    lean_start_span,
    logger_enabled,
    logs_api,
    on_ending,
)
from otelkit._internal_log import logger
from otelkit._sampling import ParentBasedAlwaysOn

__all__ = [
    "CurrentSpan",
    "ForwardingLogProcessor",
    "ForwardingSpanProcessor",
    "Installed",
    "ProxyLoggerProvider",
    "ProxyMeterProvider",
    "ProxyTracerProvider",
    "SharedLogProcessor",
    "SharedSpanProcessor",
    "install",
    "logger_provider",
    "meter_provider",
    "swap",
    "tracer_provider",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_lock = threading.RLock()
# A thread of the parent may hold the lock at fork time; the child must not inherit it locked.
_fork.at_fork(after_in_child=_lock._at_fork_reinit)  # type: ignore[attr-defined]


def _freeze(attributes: Any) -> Any:
    if not attributes:
        return None
    try:
        key = tuple(sorted(attributes.items()))
        hash(key)
        return key
    except TypeError:
        return object()  # unhashable attribute values: never shared


class _SharedProcessor:
    """A processor otelkit does not own, inside one of otelkit's SDK providers.

    Re-init replaces the provider but keeps the caller's processor (passed to ``init()`` or added through
    ``trace.get_tracer_provider().add_span_processor``), so retiring the old provider must flush it, not
    shut it down. ``init()``/``shutdown()`` shut the caller's processors down when they are really done.
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def shutdown(self) -> None:
        self.processor.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.processor.force_flush(timeout_millis))


class SharedSpanProcessor(_SharedProcessor):
    """A caller's span processor inside one of otelkit's providers (see :class:`_SharedProcessor`)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:
        hook = on_ending(self.processor)
        if hook is not None:
            hook(span)

    def on_end(self, span: Any) -> None:
        self.processor.on_end(span)


class SharedLogProcessor(_SharedProcessor):
    """A caller's log record processor inside one of otelkit's providers (see :class:`_SharedProcessor`)."""

    def on_emit(self, log_record: Any) -> None:
        self.processor.on_emit(log_record)


# --- traces ---------------------------------------------------------------------------------------


READ_ONLY_SPAN_PROCESSORS: set[type] = set()
"""otelkit's own span processor types that only read the ``ReadableSpan`` of ``on_end`` (filled by ``_init``):
while a provider has no other processor, its finished spans may share empty event/link lists
(``_compat.lean_end_span``)."""

_end_span = operator.methodcaller("end")


class CurrentSpan:
    """``start_as_current_span`` of an SDK tracer, as one small class: the SDK's semantics, a quarter of the cost.

    The SDK's method is a generator-based context manager (``_agnosticcontextmanager``) around
    another one (``trace.use_span``): building and driving the two generators costs ~20 % of an
    SDK span on the application thread (``benchmarks/bench_export.py``, callgrind row). This class
    does exactly what they do, in the same order: ``start_span`` on enter; on an ``Exception`` in
    the block, ``record_exception`` and an ERROR status ``"<Type>: <message>"`` on a recording SDK
    span (each as its flag says; other ``BaseException`` pass untouched); detach the context, then
    ``end()`` when ``end_on_exit``. Like the SDK's, it is also a decorator (sync and async
    functions, a fresh span per call).
    """

    __slots__ = ("_args", "_end", "_end_on_exit", "_record_exception", "_set_status", "_span", "_start_span",
                 "_token")

    def __init__(self, start_span: Callable[..., trace_api.Span], end_span: Callable[[Any], None] | None,
                 name: str, context: Context | None = None,
                 kind: trace_api.SpanKind = trace_api.SpanKind.INTERNAL, attributes: Any = None,
                 links: Sequence[trace_api.Link] | None = (), start_time: int | None = None,
                 record_exception: bool = True, set_status_on_exception: bool = True,
                 end_on_exit: bool = True) -> None:
        self._start_span = start_span
        # The lean end (``_compat.lean_end_span``) for the SDK's own spans, else the span's own end().
        self._end = end_span if end_span is not None else _end_span
        self._args = (name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception)
        self._record_exception = record_exception
        self._set_status = set_status_on_exception
        self._end_on_exit = end_on_exit
        self._span: trace_api.Span | None = None
        self._token: Any = None

    def __enter__(self) -> trace_api.Span:
        span = self._start_span(*self._args)
        self._span = span
        self._token = attach(set_value(SPAN_KEY, span) if SPAN_KEY is not None else trace_api.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self._span
        if span is None:
            return
        self._span = None
        try:
            try:
                detach(self._token)
            finally:
                if isinstance(exc, Exception) and isinstance(span, trace_api.Span) and span.is_recording():
                    if self._record_exception:
                        span.record_exception(exc)
                    if self._set_status:
                        span.set_status(trace_api.Status(trace_api.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            if self._end_on_exit:
                self._end(span)

    def _copy(self) -> CurrentSpan:
        new = CurrentSpan.__new__(CurrentSpan)
        new._start_span = self._start_span
        new._end = self._end
        new._args = self._args
        new._record_exception = self._record_exception
        new._set_status = self._set_status
        new._end_on_exit = self._end_on_exit
        new._span = None
        new._token = None
        return new

    def __call__(self, func: _F) -> _F:
        """As a decorator: each call runs inside a fresh span (the coroutine's whole run, for ``async def``)."""
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._copy():
                    return await func(*args, **kwargs)

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._copy():
                return func(*args, **kwargs)

        return cast(_F, wrapper)


class ProxyTracer(trace_api.Tracer):
    """A tracer whose calls go straight to the current SDK tracer (bound methods, swapped in place)."""

    def __init__(self, delegate: trace_api.Tracer) -> None:
        self._bind(delegate)

    def _bind(self, delegate: trace_api.Tracer) -> None:
        # Instance attributes shadow the class methods below: no wrapper frame on the hot path.
        self.__dict__["_delegate"] = delegate
        # The SDK's own tracer with its default ID generator: the same _Span, built with fewer frames.
        start_span = lean_start_span(delegate, ParentBasedAlwaysOn) or delegate.start_span
        self.__dict__["start_span"] = start_span
        if type(delegate) is SdkTracer:
            # The SDK's own tracer (not a subclass that may override it): the same semantics, cheaper.
            end_span = lean_end_span(delegate, READ_ONLY_SPAN_PROCESSORS)
            self.__dict__["start_as_current_span"] = functools.partial(CurrentSpan, start_span, end_span)
        else:
            self.__dict__["start_as_current_span"] = delegate.start_as_current_span

    # Only reached if the instance attributes are missing (never after __init__); they satisfy the ABC.
    def start_span(self, *args: Any, **kwargs: Any) -> trace_api.Span:
        span: trace_api.Span = self.__dict__["_delegate"].start_span(*args, **kwargs)
        return span

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["_delegate"].start_as_current_span(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # SDK extras (resource, sampler, ...) of the current tracer.
        delegate = self.__dict__.get("_delegate")
        if delegate is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(delegate, name)


class _DelegatingProvider:
    """``force_flush``/``shutdown`` of the tracer and logger proxies: passed to the SDK provider behind them.

    The no-op providers in place before init (and after reset) have neither, hence the ``getattr``.
    """

    _delegate: Any

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self._delegate, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True

    def shutdown(self) -> None:
        """Shut down the current SDK provider (otelkit.shutdown() is the bounded way)."""
        shutdown = getattr(self._delegate, "shutdown", None)
        if shutdown is not None:
            shutdown()


class ProxyTracerProvider(_DelegatingProvider, trace_api.TracerProvider):
    """The global tracer provider of an otelkit process."""

    def __init__(self) -> None:
        self._delegate: trace_api.TracerProvider = trace_api.NoOpTracerProvider()
        self._tracers: weakref.WeakValueDictionary[Any, ProxyTracer] = weakref.WeakValueDictionary()
        self._unkeyed: weakref.WeakKeyDictionary[ProxyTracer, tuple[Any, ...]] = weakref.WeakKeyDictionary()
        self._added_processors: list[SpanProcessor] = []
        self._given: weakref.WeakSet[Any] = weakref.WeakSet()  # providers that already got them

    @property
    def delegate(self) -> trace_api.TracerProvider:
        """The SDK provider currently behind the proxy (a no-op provider before init/after reset)."""
        return self._delegate

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace_api.Tracer:
        args = (instrumenting_module_name, instrumenting_library_version, schema_url, attributes)
        key = (instrumenting_module_name, instrumenting_library_version, schema_url, _freeze(attributes))
        tracer = self._tracers.get(key)  # lock-free fast path: code that calls get_tracer() per request
        if tracer is not None:
            return tracer
        with _lock:
            tracer = self._tracers.get(key)
            if tracer is None:
                tracer = ProxyTracer(self._delegate.get_tracer(*args))
                self._tracers[key] = tracer
                self._unkeyed[tracer] = args
            return tracer

    def _swap(self, delegate: trace_api.TracerProvider) -> None:
        with _lock:
            if delegate not in self._given:
                for processor in self._added_processors:
                    _add_span_processor(delegate, SharedSpanProcessor(_wrap_added(processor, "traces")))
                _remember(self._given, delegate)
            self._delegate = delegate
            for tracer, args in list(self._unkeyed.items()):
                tracer._bind(delegate.get_tracer(*args))

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """For libraries that extend ``trace.get_tracer_provider()``: kept across re-inits."""
        with _lock:
            self._added_processors.append(span_processor)
            _add_span_processor(self._delegate, SharedSpanProcessor(_wrap_added(span_processor, "traces")))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_delegate", "_tracers", "_unkeyed", "_added_processors", "_given"):
            raise AttributeError(name)
        return getattr(self._delegate, name)


def _remember(given: weakref.WeakSet[Any], provider: Any) -> None:
    try:
        given.add(provider)
    except TypeError:  # not weak-referenceable (a no-op provider): nothing was added to it anyway
        pass


def _identity(processor: Any, signal: str) -> Any:
    return processor


_added_wrapper: Callable[[Any, str], Any] = _identity


def set_added_processor_wrapper(wrapper: Callable[[Any, str], Any] | None) -> None:
    """How processors added through the proxies (``add_span_processor``...) are wrapped: otelkit's scrubbing.

    They export on their own, so they must see what otelkit's exporters would send; called with the
    settings of each (re-)init before the proxies swap.
    """
    global _added_wrapper
    _added_wrapper = wrapper or _identity


def _wrap_added(processor: Any, signal: str) -> Any:
    try:
        return _added_wrapper(processor, signal)
    except Exception:  # never lose the caller's processor: unwrapped is what upstream would do
        logger.debug("otelkit: wrapping an added %s processor failed", signal, exc_info=True)
        return processor


def _add_span_processor(provider: Any, processor: Any) -> None:
    add = getattr(provider, "add_span_processor", None)
    if add is not None:
        add(processor)


# --- metrics --------------------------------------------------------------------------------------


_Instrument = TypeVar("_Instrument", bound="ProxyInstrument[Any]")


class ProxyMeter(metrics_api.Meter):
    """A meter whose instruments are re-created on the current SDK meter after every swap."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any) -> None:
        super().__init__(name, version=version, schema_url=schema_url)
        self._attributes = attributes
        self._real: metrics_api.Meter = metrics_api.NoOpMeter(name, version=version, schema_url=schema_url)
        self._instruments: dict[Any, ProxyInstrument[Any]] = {}

    def _swap(self, provider: metrics_api.MeterProvider) -> None:
        real = _get_meter(provider, self.name, self.version, self.schema_url, self._attributes)
        with _lock:
            self._real = real
            for instrument in list(self._instruments.values()):
                instrument.on_meter_set(real)

    def _register(self, key: object, factory: Callable[[], _Instrument]) -> _Instrument:
        with _lock:
            instrument = self._instruments.get(key)
            if instrument is None:
                instrument = factory()
                instrument.on_meter_set(self._real)
                self._instruments[key] = instrument
            # The key includes the kind, so a found instrument is of the kind the factory makes.
            return cast("_Instrument", instrument)

    def create_counter(self, name: str, unit: str = "", description: str = "") -> metrics_api.Counter:
        return self._register(("counter", name, unit, description), lambda: ProxyCounter(name, unit, description))

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> metrics_api.UpDownCounter:
        return self._register(
            ("updowncounter", name, unit, description), lambda: ProxyUpDownCounter(name, unit, description))

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> metrics_api.Histogram:
        bounds = tuple(explicit_bucket_boundaries_advisory) if explicit_bucket_boundaries_advisory else None
        return self._register(
            ("histogram", name, unit, description, bounds),
            lambda: ProxyHistogram(name, unit, description, explicit_bucket_boundaries_advisory))

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> metrics_api._Gauge:
        return self._register(("gauge", name, unit, description), lambda: ProxyGauge(name, unit, description))

    # Observable instruments are keyed by identity: each call registers its own callbacks.
    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> metrics_api.ObservableCounter:
        return self._register(object(), lambda: ProxyObservableCounter(name, callbacks, unit, description))

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> metrics_api.ObservableGauge:
        return self._register(object(), lambda: ProxyObservableGauge(name, callbacks, unit, description))

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> metrics_api.ObservableUpDownCounter:
        return self._register(
            object(), lambda: ProxyObservableUpDownCounter(name, callbacks, unit, description))


def _get_meter(provider: metrics_api.MeterProvider, name: str, version: str | None, schema_url: str | None,
               attributes: Any) -> metrics_api.Meter:
    if attributes:
        return provider.get_meter(name, version, schema_url, attributes)
    return provider.get_meter(name, version, schema_url)


class ProxyMeterProvider(metrics_api.MeterProvider):
    """The global meter provider of an otelkit process."""

    def __init__(self) -> None:
        self._delegate: metrics_api.MeterProvider = metrics_api.NoOpMeterProvider()
        self._meters: dict[Any, ProxyMeter] = {}

    @property
    def delegate(self) -> metrics_api.MeterProvider:
        return self._delegate

    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None
    ) -> metrics_api.Meter:
        # Meters are kept (strongly): their instruments must survive swaps even if the meter object is dropped.
        key = (name, version, schema_url, _freeze(attributes))
        with _lock:
            meter = self._meters.get(key)
            if meter is None:
                meter = ProxyMeter(name, version, schema_url, attributes)
                meter._swap(self._delegate)
                self._meters[key] = meter
            return meter

    def _swap(self, delegate: metrics_api.MeterProvider) -> None:
        with _lock:
            self._delegate = delegate
            for meter in list(self._meters.values()):
                meter._swap(delegate)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        flush = getattr(self._delegate, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        shutdown = getattr(self._delegate, "shutdown", None)
        if shutdown is not None:
            shutdown(timeout_millis)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_delegate", "_meters"):
            raise AttributeError(name)
        return getattr(self._delegate, name)


# --- logs -----------------------------------------------------------------------------------------


class ProxyLogger(logs_api.Logger):
    """A logger whose ``emit``/``enabled`` are the current SDK logger's bound methods."""

    def __init__(self, delegate: logs_api.Logger) -> None:
        self._bind(delegate)

    def _bind(self, delegate: logs_api.Logger) -> None:
        self.__dict__["_delegate"] = delegate
        self.__dict__["emit"] = delegate.emit
        self.__dict__["enabled"] = logger_enabled(delegate)

    def emit(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_delegate"].emit(*args, **kwargs)

    def enabled(self, *args: Any, **kwargs: Any) -> bool:
        return bool(logger_enabled(self.__dict__["_delegate"])(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        delegate = self.__dict__.get("_delegate")
        if delegate is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(delegate, name)


class ProxyLoggerProvider(_DelegatingProvider, logs_api.LoggerProvider):
    """The global logger provider of an otelkit process."""

    def __init__(self) -> None:
        self._delegate: logs_api.LoggerProvider = logs_api.NoOpLoggerProvider()
        self._loggers: weakref.WeakValueDictionary[Any, ProxyLogger] = weakref.WeakValueDictionary()
        self._args: weakref.WeakKeyDictionary[ProxyLogger, tuple[Any, ...]] = weakref.WeakKeyDictionary()
        self._added_processors: list[Any] = []
        self._given: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def delegate(self) -> logs_api.LoggerProvider:
        return self._delegate

    def get_logger(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Any = None
    ) -> logs_api.Logger:
        args = (name, version, schema_url, attributes)
        key = (name, version, schema_url, _freeze(attributes))
        with _lock:
            found = self._loggers.get(key)
            if found is None:
                found = ProxyLogger(self._delegate.get_logger(*args))
                self._loggers[key] = found
                self._args[found] = args
            return found

    def _swap(self, delegate: logs_api.LoggerProvider) -> None:
        with _lock:
            if delegate not in self._given:
                for processor in self._added_processors:
                    _add_log_processor(delegate, SharedLogProcessor(_wrap_added(processor, "logs")))
                _remember(self._given, delegate)
            self._delegate = delegate
            for found, args in list(self._args.items()):
                found._bind(delegate.get_logger(*args))

    def add_log_record_processor(self, processor: Any) -> None:
        """For libraries that extend ``get_logger_provider()``: kept across re-inits."""
        with _lock:
            self._added_processors.append(processor)
            _add_log_processor(self._delegate, SharedLogProcessor(_wrap_added(processor, "logs")))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_delegate", "_loggers", "_args", "_added_processors", "_given"):
            raise AttributeError(name)
        return getattr(self._delegate, name)


def _add_log_processor(provider: Any, processor: Any) -> None:
    add = getattr(provider, "add_log_record_processor", None)
    if add is not None:
        add(processor)


# --- forwarding into providers someone else installed ---------------------------------------------


class _Forwarding:
    """Added once to a foreign SDK provider: hands what it gets to otelkit's current pipeline.

    ``target()`` returns that pipeline (a span or log record processor) or None; it is looked up on every
    call, so a re-init re-points the forwarding without touching the foreign provider again.
    """

    def __init__(self, target: Callable[[], Any]) -> None:
        self._target = target

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        target = self._target()
        return bool(target.force_flush(timeout_millis)) if target is not None else True


class ForwardingSpanProcessor(_Forwarding, SpanProcessor):
    """Added once to a foreign SDK TracerProvider: hands its spans to otelkit's current span pipeline."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        target = self._target()
        if target is not None:
            target.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        target = self._target()
        if target is not None:
            target.on_end(span)

    def shutdown(self) -> None:
        # otelkit shuts its own pipeline down; the foreign provider's shutdown must not reach it twice.
        return None


class ForwardingLogProcessor(_Forwarding):
    """Added once to a foreign SDK LoggerProvider: hands its records to otelkit's current log pipeline."""

    def on_emit(self, log_record: Any) -> None:
        target = self._target()
        if target is not None:
            target.on_emit(log_record)

    def shutdown(self) -> None:
        return None


# --- installation ---------------------------------------------------------------------------------

_tracer_provider = ProxyTracerProvider()
_meter_provider = ProxyMeterProvider()
_logger_provider = ProxyLoggerProvider()


def tracer_provider() -> ProxyTracerProvider:
    """otelkit's proxy tracer provider (global once :func:`install` ran, unless a foreign one was there)."""
    return _tracer_provider


def meter_provider() -> ProxyMeterProvider:
    return _meter_provider


def logger_provider() -> ProxyLoggerProvider:
    return _logger_provider


@dataclass(frozen=True, eq=False)  # identity (a generated __eq__/__hash__ is start-up cost)
class Installed:
    """What :func:`install` found in the OTel API globals; ``None`` means otelkit's proxy is the global."""

    foreign_tracer_provider: Any = None
    foreign_meter_provider: Any = None
    foreign_logger_provider: Any = None

    @property
    def any_foreign(self) -> bool:
        return any(p is not None for p in (self.foreign_tracer_provider, self.foreign_meter_provider,
                                           self.foreign_logger_provider))


_installed: Installed | None = None


def _current_globals() -> tuple[Any, Any, Any]:
    # The API keeps the set-once globals in module attributes; None means "never set".
    from otelkit._compat import global_providers

    return global_providers()


def install() -> Installed:
    """Set the OTel API globals to otelkit's proxies, once per process, without an "Overriding" warning.

    A global that somebody else already set is left alone and returned as foreign.
    """
    global _installed
    with _lock:
        if _installed is not None:
            return _installed
        tp, mp, lp = _current_globals()
        foreign_tp = foreign_mp = foreign_lp = None
        if tp is None:
            trace_api.set_tracer_provider(_tracer_provider)
        elif tp is not _tracer_provider:
            foreign_tp = tp
        if mp is None:
            metrics_api.set_meter_provider(_meter_provider)
        elif mp is not _meter_provider:
            foreign_mp = mp
        if lp is None:
            logs_api.set_logger_provider(_logger_provider)
        elif lp is not _logger_provider:
            foreign_lp = lp
        _installed = Installed(foreign_tp, foreign_mp, foreign_lp)
        if _installed.any_foreign:
            logger.debug("foreign OTel providers found: %s", _installed)
        return _installed


def installed() -> Installed | None:
    """The result of the first :func:`install`, or None before it."""
    return _installed


def swap(tracer_provider: trace_api.TracerProvider | None, meter_provider: metrics_api.MeterProvider | None,
         logger_provider: logs_api.LoggerProvider | None) -> None:
    """Point the proxies at new SDK providers (``None``: back to no-op). Existing tracers/instruments follow."""
    with _lock:
        _tracer_provider._swap(tracer_provider or trace_api.NoOpTracerProvider())
        _meter_provider._swap(meter_provider or metrics_api.NoOpMeterProvider())
        _logger_provider._swap(logger_provider or logs_api.NoOpLoggerProvider())
