"""Shared machinery of the integrations: providers that follow re-init, dedup, metrics, versions."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind

from otelkit import _compat, _names
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider
    from opentelemetry.util.types import Attributes

    from otelkit._config import Settings

INSTRUMENTATION_SCOPE = "otelkit.instrument"
"""Scope of the metrics otelkit records itself (the contrib packages keep their own scope names)."""

# --- providers that follow init()/re-init ---------------------------------------------------------

_lock = threading.RLock()
_tracer_provider: TracerProvider | None = None
_meter_provider: MeterProvider | None = None


def set_providers(tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None) -> None:
    """Point every tracer and instrument handed out by this package at these providers.

    ``None`` means "the OTel global" (otelkit's proxy once ``init()`` ran). Called by every
    ``instrument_all``; instrumentations done at the first init keep working after a re-init
    swaps the SDK providers, because they hold :class:`_FollowingTracer` objects.
    """
    global _tracer_provider, _meter_provider
    with _lock:
        _tracer_provider = tracer_provider
        _meter_provider = meter_provider


def current_tracer_provider() -> TracerProvider:
    return _tracer_provider if _tracer_provider is not None else trace_api.get_tracer_provider()


def current_meter_provider() -> MeterProvider:
    return _meter_provider if _meter_provider is not None else metrics_api.get_meter_provider()


class _FollowingTracer(trace_api.Tracer):
    """A tracer that resolves the current provider at every span start (cached per provider)."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Attributes) -> None:
        self._args = (name, version, schema_url, attributes)
        # (provider, its tracer, start_span, start_as_current_span): the last two are the lean ones of an SDK
        # tracer (see _lean_methods), else None (the tracer's own methods, looked up per call: otelkit's
        # ProxyTracer rebinds its methods when init() swaps the SDK provider behind it).
        self._cache: tuple[object, Tracer, Any, Any] | None = None

    def _target(self) -> Tracer:
        provider = current_tracer_provider()
        cached = self._cache
        if cached is not None and cached[0] is provider:
            return cached[1]
        name, version, schema_url, attributes = self._args
        tracer = provider.get_tracer(name, version, schema_url, attributes)
        self._cache = (provider, tracer, *_lean_methods(tracer))
        return tracer

    # The provider check of _target inlined (one Python frame per span instead of three: these run per
    # instrumented call, and the contrib instrumentations they are compared with hold a concrete tracer).
    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        cached = self._cache
        if cached is None or cached[0] is not (_tracer_provider if _tracer_provider is not None
                                               else trace_api.get_tracer_provider()):
            self._target()
            cached = self._cache
            assert cached is not None
        lean = cached[2]
        return lean(*args, **kwargs) if lean is not None else cached[1].start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        cached = self._cache
        if cached is None or cached[0] is not (_tracer_provider if _tracer_provider is not None
                                               else trace_api.get_tracer_provider()):
            self._target()
            cached = self._cache
            assert cached is not None
        lean = cached[3]
        return lean(*args, **kwargs) if lean is not None else cached[1].start_as_current_span(*args, **kwargs)


def _lean_methods(tracer: Any) -> tuple[Any, Any]:
    """(start_span, start_as_current_span) for the SDK's own ``Tracer``, as otelkit's ``ProxyTracer`` binds them.

    When the providers given to ``instrument_all`` are SDK providers (not otelkit's proxies: ``init()`` passes
    its proxy, whose tracers already take this path), the contrib instrumentations' spans would otherwise go
    through the SDK's generator-based ``start_as_current_span``: the same spans, built by
    ``_compat.lean_start_span``/``lean_end_span`` and ``_proxy.CurrentSpan`` (each guarded: the SDK's own code
    of a verified release, else the SDK's methods). (None, None) for any other tracer.
    """
    try:
        from opentelemetry.sdk.trace import Tracer as SdkTracer

        if type(tracer) is not SdkTracer:
            return None, None
        from otelkit import _proxy
        from otelkit._sampling import ParentBasedAlwaysOn

        start = _compat.lean_start_span(tracer, ParentBasedAlwaysOn) or tracer.start_span
        end = _compat.lean_end_span(tracer, _proxy.READ_ONLY_SPAN_PROCESSORS)
        return start, functools.partial(_proxy.CurrentSpan, start, end)
    except Exception:  # the SDK's own methods, as before
        logger.debug("otelkit: no lean span path for %r", tracer, exc_info=True)
        return None, None


class FollowingTracerProvider(trace_api.TracerProvider):
    """Handed to the contrib instrumentors instead of a concrete provider (see :func:`set_providers`)."""

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> Tracer:
        return _FollowingTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


FOLLOWING_TRACER_PROVIDER = FollowingTracerProvider()


# --- metrics otelkit records itself ----------------------------------------------------------------

@dataclass(eq=False)  # identity (a generated __eq__ is start-up cost)
class _Instruments:
    http_duration: Histogram
    db_duration: Histogram
    db_rows: Histogram
    transactions: Counter


_instruments: tuple[object, _Instruments] | None = None

# Semantic-convention advisory buckets for request/operation durations (seconds).
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_DB_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def instruments() -> _Instruments:
    """The histograms/counters for the current meter provider (created once per provider)."""
    provider = _meter_provider if _meter_provider is not None else metrics_api.get_meter_provider()  # per call: inline
    cached = _instruments
    if cached is not None and cached[0] is provider:
        return cached[1]
    with _lock:
        return _create_instruments(provider)


def _create_instruments(provider: MeterProvider) -> _Instruments:
    global _instruments
    cached = _instruments
    if cached is not None and cached[0] is provider:  # another thread won the race
        return cached[1]
    from otelkit._version import __version__

    meter = provider.get_meter(INSTRUMENTATION_SCOPE, __version__)
    made = _Instruments(
        http_duration=meter.create_histogram(
            _names.HTTP_CLIENT_DURATION.name, unit=_names.HTTP_CLIENT_DURATION.unit,
            description=_names.HTTP_CLIENT_DURATION.description,
            explicit_bucket_boundaries_advisory=list(_DURATION_BUCKETS),
        ),
        db_duration=meter.create_histogram(
            _names.DB_CLIENT_DURATION.name, unit=_names.DB_CLIENT_DURATION.unit,
            description=_names.DB_CLIENT_DURATION.description,
            explicit_bucket_boundaries_advisory=list(_DB_BUCKETS),
        ),
        db_rows=meter.create_histogram(
            _names.DB_RETURNED_ROWS.name, unit=_names.DB_RETURNED_ROWS.unit,
            description=_names.DB_RETURNED_ROWS.description,
            explicit_bucket_boundaries_advisory=[0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000],
        ),
        transactions=meter.create_counter(
            _names.DB_TRANSACTIONS.name, unit=_names.DB_TRANSACTIONS.unit,
            description=_names.DB_TRANSACTIONS.description,
        ),
    )
    _instruments = (provider, made)
    return made


def record(kind: str, value: float, attributes: Mapping[str, Any]) -> None:
    """Record one measurement; never raises into the application."""
    try:
        inst = instruments()
        # _compat's point functions: the SDK's add/record, cheaper for the integrations' cached attribute sets
        if kind == "http":
            _compat.record_point(inst.http_duration, value, attributes)
        elif kind == "db":
            _compat.record_point(inst.db_duration, value, attributes)
        elif kind == "rows":
            _compat.record_point(inst.db_rows, int(value), attributes)
        else:
            _compat.add_point(inst.transactions, int(value), attributes)
    except Exception:
        logger.debug("otelkit: could not record %s metric", kind, exc_info=True)


# --- dedup ----------------------------------------------------------------------------------------

def is_duplicate(scope_name: str) -> bool:
    """True when the current span is an open CLIENT span of the same instrumentation.

    A client operation never nests another one of the same library (httpx transport,
    redis execute_command, cursor.execute), so this is a second instrumentation layer
    (global + per-client, or module + connection) around the same operation.
    """
    span = trace_api.get_current_span()
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    scope = getattr(span, "instrumentation_scope", None)
    return scope is not None and getattr(scope, "name", None) == scope_name


# opentelemetry.instrumentation.utils imports wrapt, packaging and asyncio (~20 ms): resolved at the
# first use (an instrumented call), not when init() merely loads this module to instrument nothing.
_is_instrumentation_enabled: Callable[[], Any] | None = None


def instrumentation_enabled() -> bool:
    """False inside ``suppress_instrumentation()`` (then otelkit's wrappers only call through)."""
    check = _is_instrumentation_enabled
    if check is None:
        check = _resolve_is_instrumentation_enabled()
    return bool(check())


def _resolve_is_instrumentation_enabled() -> Callable[[], Any]:
    global _is_instrumentation_enabled
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    _is_instrumentation_enabled = is_instrumentation_enabled
    return is_instrumentation_enabled


@contextmanager
def suppressed() -> Iterator[None]:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield


# --- versions -------------------------------------------------------------------------------------

def dist_version(*names: str) -> tuple[str, str] | None:
    """(distribution, version) of the first installed distribution among ``names``."""
    for name in names:
        try:
            return name, metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def supported_dist(integration: str, dists: Sequence[str], minimum: tuple[int, ...], needs: str,
                   install: str) -> tuple[str, str] | IntegrationStatus:
    """(distribution, version) of the library an integration instruments, or the ``skipped`` status saying why.

    ``dists`` are the distributions that provide it (first installed wins), ``minimum`` the oldest supported
    version, ``needs`` that version as the user reads it, ``install`` what to ``pip install``.
    """
    found = dist_version(*dists)
    if found is None:
        return IntegrationStatus(integration, "skipped", f"not installed (pip install {install})")
    dist, version = found
    if version_tuple(version) < minimum:
        return IntegrationStatus(integration, "skipped", f"version unsupported: {dist} {version} (needs >= {needs})",
                                 version=version)
    return found


def plan_library(integration: str, dists: Sequence[str], minimum: tuple[int, ...], needs: str, install: str,
                 contrib: str | None) -> IntegrationStatus:
    """What ``instrument()`` would say, from package metadata alone: nothing is imported (``otelkit doctor``)."""
    found = supported_dist(integration, dists, minimum, needs, install)
    if isinstance(found, IntegrationStatus):
        return found
    dist, version = found
    if contrib is not None:
        from importlib.util import find_spec

        try:
            missing = find_spec(contrib) is None
        except (ImportError, ValueError):
            missing = True
        if missing:
            return IntegrationStatus(integration, "skipped", f"{contrib} is not installed", version=version)
    return IntegrationStatus(integration, "enabled", f"{dist} {version} would be instrumented", version=version)


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


# --- wrapping helpers -----------------------------------------------------------------------------

def _static(owner: Any, attribute: str) -> Any:
    # On a class, getattr() would bind the wrapper; the marker lives on the unbound one.
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attribute in vars(klass):
                return vars(klass)[attribute] if klass is owner else None
        return None
    return getattr(owner, attribute, None)


def unwrap(owner: Any, attribute: str) -> None:
    """Undo otelkit's wrapt wrapper if it is the outermost one."""
    func = _static(owner, attribute)
    if func is not None and getattr(func, "_self_otelkit", False):
        setattr(owner, attribute, func.__wrapped__)


def wrap(owner: Any, attribute: str, wrapper: Any) -> None:
    """Wrap ``owner.attribute`` with a wrapt FunctionWrapper marked as otelkit's (idempotent)."""
    import wrapt

    if getattr(_static(owner, attribute), "_self_otelkit", False):
        return
    made = wrapt.wrap_function_wrapper(owner, attribute, wrapper)
    made._self_otelkit = True  # type: ignore[attr-defined]


def error_type(exc: BaseException) -> str:
    return type(exc).__qualname__


@dataclass(frozen=True, eq=False)
class Context:
    """What an integration module gets from ``instrument_all``."""

    settings: Settings
    tracer_provider: TracerProvider
    meter_provider: MeterProvider | None


def pid() -> int:
    return os.getpid()


def sequence_names(value: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip().lower() for v in value if v and v.strip())
