"""Every use of OpenTelemetry's private names, in one place, for each supported release.

otelkit supports opentelemetry-sdk 1.40 up to (not including) 2 and the matching contrib releases
(0.61b0 and newer); CI runs the suite on the newest and a representative set on the lowest
(``.ci/otel-lowest.txt``). Anything with a leading underscore in ``opentelemetry.*`` -- a module, a
class, an attribute of an SDK or contrib object -- is reached through this module only, so that an
upstream rename is fixed here once, with a fallback for the releases that differ. A test
(``tests/unit/test_dependencies.py``) keeps the rest of the package free of such access.

Two groups of names are underscore-named upstream without being internals:

- the logs signal (``opentelemetry._logs``, ``opentelemetry.sdk._logs``) is the SDK's only logs
  API while upstream still calls it experimental;
- the OTLP log encoder (``opentelemetry.exporter.otlp.proto.common._log_encoder``), for the same reason.

They are re-exported here too, so that a rename lands in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import _logs as logs_api
from opentelemetry import trace as _trace_api
from opentelemetry._logs import LogRecord as ApiLogRecord
from opentelemetry._logs import NoOpLogger, SeverityNumber
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.metrics._internal.instrument import (  # the API's own re-pointable instruments
    _ProxyCounter as ProxyCounter,
)
from opentelemetry.metrics._internal.instrument import _ProxyGauge as ProxyGauge
from opentelemetry.metrics._internal.instrument import _ProxyHistogram as ProxyHistogram
from opentelemetry.metrics._internal.instrument import _ProxyInstrument as ProxyInstrument
from opentelemetry.metrics._internal.instrument import _ProxyObservableCounter as ProxyObservableCounter
from opentelemetry.metrics._internal.instrument import _ProxyObservableGauge as ProxyObservableGauge
from opentelemetry.metrics._internal.instrument import _ProxyObservableUpDownCounter as ProxyObservableUpDownCounter
from opentelemetry.metrics._internal.instrument import _ProxyUpDownCounter as ProxyUpDownCounter

try:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as SUPPRESS_INSTRUMENTATION_KEY
except ImportError:  # pragma: no cover - the key has been there since API 1.0; the string is its value
    SUPPRESS_INSTRUMENTATION_KEY = "suppress_instrumentation"

SPAN_KEY: str | None
try:  # the context key of the current span (trace.set_span_in_context's own): set directly, one call fewer per span
    from opentelemetry.trace.propagation import _SPAN_KEY as SPAN_KEY
except ImportError:  # pragma: no cover - callers fall back to trace.set_span_in_context
    SPAN_KEY = None

BAGGAGE_KEY: str | None
try:  # the context key the baggage API stores its dict under: reading it directly skips two calls per span
    from opentelemetry.baggage import _BAGGAGE_KEY as BAGGAGE_KEY
except ImportError:  # pragma: no cover - callers fall back to the public baggage API
    BAGGAGE_KEY = None

if TYPE_CHECKING:
    from opentelemetry.sdk._logs import (
        LoggerProvider,
        LogRecordLimits,
        LogRecordProcessor,
        ReadableLogRecord,
        ReadWriteLogRecord,
        SynchronousMultiLogRecordProcessor,
    )
    from opentelemetry.sdk._logs.export import (
        ConsoleLogRecordExporter,
        InMemoryLogRecordExporter,
        LogRecordExporter,
        LogRecordExportResult,
        SimpleLogRecordProcessor,
    )

_SDK_LOGS = ("LoggerProvider", "LogRecordLimits", "LogRecordProcessor", "ReadableLogRecord", "ReadWriteLogRecord",
             "SynchronousMultiLogRecordProcessor")
_SDK_LOGS_EXPORT = ("ConsoleLogRecordExporter", "InMemoryLogRecordExporter", "LogRecordExporter",
                    "LogRecordExportResult", "SimpleLogRecordProcessor")


def __getattr__(name: str) -> Any:
    # The SDK's logs modules are imported on first use, not with this module: on SDK 1.40 importing
    # them runs resource detection (a class attribute), which fails in code that runs at exit.
    if name in _SDK_LOGS:
        from opentelemetry.sdk import _logs as sdk_logs

        value = getattr(sdk_logs, name, None)
        if value is None:  # SynchronousMultiLogRecordProcessor: SDK 1.40 defines it in _internal only
            from opentelemetry.sdk._logs import _internal as sdk_logs_internal

            value = getattr(sdk_logs_internal, name)
    elif name in _SDK_LOGS_EXPORT:
        from opentelemetry.sdk._logs import export as sdk_logs_export

        value = getattr(sdk_logs_export, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = [
    "BAGGAGE_KEY",
    "SPAN_KEY",
    "SUPPRESS_INSTRUMENTATION_KEY",
    "VERIFIED_SDK",
    "ApiLogRecord",
    "ConsoleLogRecordExporter",
    "InMemoryLogRecordExporter",
    "LogRecordExportResult",
    "LogRecordExporter",
    "LogRecordProcessor",
    "LoggerProvider",
    "NoOpLogger",
    "ProxyCounter",
    "ProxyGauge",
    "ProxyHistogram",
    "ProxyInstrument",
    "ProxyObservableCounter",
    "ProxyObservableGauge",
    "ProxyObservableUpDownCounter",
    "ProxyUpDownCounter",
    "ReadWriteLogRecord",
    "ReadableLogRecord",
    "SeverityNumber",
    "SimpleLogRecordProcessor",
    "SynchronousMultiLogRecordProcessor",
    "add_point",
    "lean_end_span",
    "lean_start_span",
    "logs_api",
    "points_fast",
    "record_point",
    "reset_points",
    "sdk_version",
]


# --- logs -----------------------------------------------------------------------------------------


def log_record_limits(attribute_count: int | None, attribute_length: int | None,
                      logrecord_count: int | None, logrecord_length: int | None) -> LogRecordLimits:
    """``LogRecordLimits`` from the general and the log-record-specific limits (``None``: unlimited length).

    SDK 1.45 takes both sets; older releases (1.40) have one set for log records, which then gets the
    log-record-specific values where they are set (they win over the general ones in 1.45 too).
    """
    from opentelemetry.sdk._logs import LogRecordLimits

    unset = getattr(LogRecordLimits, "UNSET", -1)

    def length(value: int | None) -> int | None:
        return unset if value is None else value

    try:
        return LogRecordLimits(  # type: ignore[call-arg,unused-ignore]
            max_attributes=attribute_count,
            max_attribute_length=length(attribute_length),
            max_log_record_attributes=logrecord_count,
            max_log_record_attribute_length=length(logrecord_length),
        )
    except TypeError:  # older SDK (1.40): one set of limits for log records
        return LogRecordLimits(
            max_attributes=logrecord_count if logrecord_count is not None else attribute_count,
            max_attribute_length=length(logrecord_length if logrecord_length is not None else attribute_length),
        )


def logger_provider(resource: Any, limits: LogRecordLimits) -> LoggerProvider:
    """An SDK ``LoggerProvider`` that otelkit shuts down itself, with ``limits`` where the SDK takes them.

    SDK releases before ``log_record_limits`` existed apply ``LogRecordLimits()`` to every record,
    that is the ``OTEL_ATTRIBUTE_COUNT_LIMIT``/``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` variables only.
    """
    from opentelemetry.sdk._logs import LoggerProvider

    try:
        return LoggerProvider(resource=resource, shutdown_on_exit=False,  # type: ignore[call-arg,unused-ignore]
                              log_record_limits=limits)
    except TypeError:  # older SDK: no per-provider limits
        return LoggerProvider(resource=resource, shutdown_on_exit=False)


def encode_logs(batch: Any) -> Any:
    """The SDK's OTLP encoder for log records (``ExportLogsServiceRequest``)."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as encode

    return encode(batch)


def _always_enabled(*args: Any, **kwargs: Any) -> bool:
    return True


def logger_enabled(logger: Any) -> Callable[..., bool]:
    """A logger's ``enabled`` method; API releases before ``Logger.enabled`` want every record."""
    return getattr(logger, "enabled", None) or _always_enabled


def proxy_logger_delegate(logger: Any) -> Any:
    """The logger an API ``ProxyLogger`` forwards to (the logger itself when it is no proxy)."""
    return logger.__dict__.get("_delegate", logger)


# --- providers, processors, readers ---------------------------------------------------------------


def set_meter_provider() -> Any:
    """The meter provider set with ``metrics.set_meter_provider``, or None (one attribute read: the public
    ``get_meter_provider()`` looks ``OTEL_PYTHON_METER_PROVIDER`` up in ``os.environ`` at every call before)."""
    return getattr(_metrics_internal, "_METER_PROVIDER", None)


def is_unset_proxy_meter_provider(provider: Any) -> bool:
    """Whether ``provider`` is the API's placeholder before any ``set_meter_provider``: its instruments drop every
    point until a provider is set (the type is private to the API, hence read here)."""
    proxy = getattr(_metrics_internal, "_ProxyMeterProvider", None)
    return proxy is not None and type(provider) is proxy and set_meter_provider() is None


def composite_members(propagator: Any) -> tuple[Any, ...] | None:
    """The propagators inside a ``CompositePropagator`` (its ``_propagators``), or None when not readable."""
    members = getattr(propagator, "_propagators", None)
    return tuple(members) if isinstance(members, (list, tuple)) else None


def global_providers() -> tuple[Any, Any, Any]:
    """The API's set-once global tracer, meter and logger providers; ``None`` where never set."""
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.metrics import _internal as metrics_internal

    return (getattr(_trace_api, "_TRACER_PROVIDER", None), getattr(metrics_internal, "_METER_PROVIDER", None),
            getattr(logs_internal, "_LOGGER_PROVIDER", None))


def enable_provider(provider: Any) -> None:
    """Switch an SDK provider on that read ``OTEL_SDK_DISABLED=true`` (``init(disabled=False)`` wins)."""
    if getattr(provider, "_disabled", False) and type(provider).__module__.startswith("opentelemetry.sdk"):
        provider._disabled = False


def active_span_processor(tracer_provider: Any) -> Any:
    """An SDK ``TracerProvider``'s multi span processor, or ``None``."""
    return getattr(tracer_provider, "_active_span_processor", None)


def span_processors(tracer_provider: Any) -> tuple[Any, ...]:
    """The span processors added to an SDK ``TracerProvider`` (empty for any other provider)."""
    return tuple(getattr(active_span_processor(tracer_provider), "_span_processors", ()) or ())


def log_record_pipeline(logger_provider: Any) -> Any:
    """An SDK ``LoggerProvider``'s multi log record processor, or ``None``."""
    return getattr(logger_provider, "_multi_log_record_processor", None)


def metric_readers(meter_provider: Any) -> tuple[Any, ...]:
    """The readers of an SDK ``MeterProvider`` (empty for any other provider)."""
    readers = getattr(meter_provider, "_metric_readers", None)
    if readers is None:  # SDK before 1.43: the readers live in the provider's configuration only
        readers = getattr(getattr(meter_provider, "_sdk_config", None), "metric_readers", None)
    return tuple(readers or ())


def registered_metric_readers() -> Iterable[Any]:
    """Readers some SDK ``MeterProvider`` of this process already holds (the SDK refuses a second one)."""
    from opentelemetry.sdk.metrics import MeterProvider

    return getattr(MeterProvider, "_all_metric_readers", ())


def reader_exporter(reader: Any) -> Any:
    """The exporter of a ``PeriodicExportingMetricReader``, or ``None``."""
    return getattr(reader, "_exporter", None)


def exporter_preferences(exporter: Any) -> tuple[Any, Any]:
    """A metric exporter's preferred temporality and aggregation (``None``: the SDK defaults)."""
    return getattr(exporter, "_preferred_temporality", None), getattr(exporter, "_preferred_aggregation", None)


def on_ending(processor: Any) -> Callable[[Any], None] | None:
    """A span processor's ``_on_ending`` hook (SDK 1.33+), when it has one."""
    return getattr(processor, "_on_ending", None)


# --- span internals: the exporters read a finished span's fields without the property calls --------
# (its properties copy events and links and wrap attributes: measurable per span on the export path)


def span_fields(span: Any) -> tuple[Any, ...]:
    """(context, parent, name, kind, start, end, attributes, events, links, status) of an SDK span.

    Raises ``AttributeError`` for any other ``ReadableSpan``: callers then use the public properties.
    """
    return (span._context, span._parent, span._name, span._kind, span._start_time, span._end_time,
            span._attributes, span._events, span._links, span._status)


def scrub_fields(span: Any) -> tuple[Any, ...]:
    """(name, attributes, events, links, status) of an SDK span: what scrubbing reads and rewrites."""
    return span._name, span._attributes, span._events, span._links, span._status


BOUNDED_DICT = "_dict"
"""The plain dict inside the SDK's ``BoundedAttributes``: ``getattr(attributes, BOUNDED_DICT, attributes)``
iterates it without the Mapping protocol's Python-level calls (hot path: a name, not a function)."""

BOUNDED_DEQUE = "_dq"
"""The deque inside the SDK's ``BoundedList`` (span events and links), read the same way."""


def has_bounded_dict(attributes: Any) -> bool:
    """Whether ``attributes`` is a ``BoundedAttributes`` whose dict :func:`set_bounded_dict` may replace."""
    return isinstance(getattr(attributes, BOUNDED_DICT, None), dict)


def set_bounded_dict(attributes: Any, new: dict[str, Any]) -> None:
    """Replace the items of a ``BoundedAttributes`` in place (its limits already applied to ``new``)."""
    setattr(attributes, BOUNDED_DICT, new)


# --- SDK resource detection -----------------------------------------------------------------------


def host_resource_detector() -> Any:
    """The SDK's host detector (``host.name``, ``host.arch``); ``None`` where a release lacks it."""
    try:
        from opentelemetry.sdk.resources import _HostResourceDetector
    except ImportError:  # pragma: no cover - present from SDK 1.24 through 1.45
        return None
    return _HostResourceDetector()


# --- contrib --------------------------------------------------------------------------------------


# contrib's signal types -> (the mode an opt-in name selects, the "/dup" mode), as contrib's own
# _OpenTelemetrySemanticConventionStability._initialize maps them (same in 0.61b0 through 0.66b1).
_SEMCONV_SIGNAL_MODES = {
    "HTTP": ("HTTP", "HTTP_DUP"),
    "DATABASE": ("DATABASE", "DATABASE_DUP"),
    "GEN_AI": ("DEFAULT", "GEN_AI_LATEST_EXPERIMENTAL"),
}


def http_client_private() -> tuple[Any, Any, Any, Any]:
    """The private names of opentelemetry-api / -instrumentation / -util-http that otelkit's lean HTTP-client
    helpers (``_instrument._http_clients``) stand in for or read: the suppress-HTTP context key, ``httplib``'s
    IP-state key, ``_semconv._filter_semconv_duration_attrs`` and ``_StabilityMode.HTTP``. Raises when a
    release lacks one (the caller keeps upstream's helpers then)."""
    from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY
    from opentelemetry.instrumentation import _semconv
    from opentelemetry.util.http import httplib

    return (_SUPPRESS_HTTP_INSTRUMENTATION_KEY, httplib._STATE_KEY, _semconv._filter_semconv_duration_attrs,
            _semconv._StabilityMode.HTTP)


def set_semconv_stability(opt_in: str) -> bool:
    """Set contrib's cached semantic-convention modes to what ``opt_in`` (``"http,database"``) selects.

    Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once and caches the modes per signal type; otelkit sets
    the cache from its settings instead (no environment variable is written). Returns ``False`` where contrib
    lacks the switch or its shape differs (the instrumentations then keep the mode contrib read itself).
    """
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability as stability,
        )
        from opentelemetry.instrumentation._semconv import _OpenTelemetryStabilitySignalType as kinds
        from opentelemetry.instrumentation._semconv import _StabilityMode as modes
    except ImportError:
        return False
    names = {n.strip() for n in opt_in.split(",") if n.strip()}
    try:
        mapping = {}
        for kind in kinds:
            # A signal type of a later contrib release that otelkit does not know keeps contrib's default.
            stable, dup = _SEMCONV_SIGNAL_MODES.get(kind.name, ("DEFAULT", "DEFAULT"))
            stable_mode, dup_mode = getattr(modes, stable), getattr(modes, dup)
            # "http/dup" wins over "http", as in contrib.
            mapping[kind] = dup_mode if dup_mode.value in names else \
                stable_mode if stable_mode.value in names else modes.DEFAULT
        with stability._lock:
            stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = mapping
            stability._initialized = True
    except (AttributeError, TypeError):
        return False
    return True


def semconv_modes() -> dict[str, str]:
    """contrib's current semantic-convention mode per signal type (``{"http": "http", ...}``), for tests."""
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as stability,
    )
    from opentelemetry.instrumentation._semconv import _OpenTelemetryStabilitySignalType as kinds

    stability._initialize()  # what an instrumentation does first (a no-op once the mode is set)
    return {kind.value: stability._get_opentelemetry_stability_opt_in_mode(kind).value for kind in kinds}


def semconv_loaded(modules: Iterable[str]) -> bool:
    """Whether contrib's semantic-convention switch module is among ``modules`` (``sys.modules``)."""
    return "opentelemetry.instrumentation._semconv" in modules


def dbapi_server(tracer: Any) -> tuple[Any, Any, Any]:
    """(database, server address, server port) of a contrib dbapi ``CursorTracer``."""
    integration = getattr(tracer, "_db_api_integration", None)
    address = getattr(integration, "_server_address", None)
    port = getattr(integration, "_server_port", None)
    if address is None and port is None:  # contrib 0.61b0: only the old net.peer.* span attributes
        attributes = getattr(integration, "span_attributes", None) or {}
        address, port = attributes.get("net.peer.name"), attributes.get("net.peer.port")
    return getattr(integration, "database", ""), address, port


def has_record_metrics(tracer_class: type) -> bool:
    """Whether contrib's ``CursorTracer`` records its own duration metric (``_record_metrics``, 0.55b0+)."""
    return "_record_metrics" in vars(tracer_class) or hasattr(tracer_class, "_record_metrics")


def own_record_metrics(tracer_class: type) -> Any:
    """The ``_record_metrics`` defined on ``tracer_class`` itself (``None``: inherited or absent)."""
    return vars(tracer_class).get("_record_metrics")


def set_record_metrics(tracer_class: type, method: Any) -> None:
    """Replace (``method``) or drop (``None``: back to the inherited one) ``_record_metrics``."""
    if method is None:
        if "_record_metrics" in vars(tracer_class):
            delattr(tracer_class, "_record_metrics")
    else:
        tracer_class._record_metrics = method  # type: ignore[attr-defined]


def set_system_metrics_process(instrumentor: Any, process: Any) -> None:
    """Point contrib's system-metrics instrumentor at this process (it caches ``psutil.Process``)."""
    instrumentor._proc = process


# --- contrib redis / dbapi internals used by the one-layer integrations (0.61b0+) ----------------------
# Each raises ImportError/AttributeError when a contrib release lacks it: the integration then keeps
# upstream's own two-layer path (see otelkit/_instrument/redis.py and psycopg2.py).

def redis_tracer(contrib: Any, tracer_provider: Any) -> Any:
    """The tracer contrib's redis instrumentation records with (its scope, version and schema)."""
    return contrib.RedisInstrumentor._get_tracer(tracer_provider=tracer_provider)


def redis_span_helpers() -> tuple[Any, Any, Any, Any, Any, Any]:
    """(database semconv mode, HTTP semconv mode, format_command_args, extract_conn_attributes,
    build_span_name, set_db_statement): upstream's helpers, so the one-layer span is upstream's span."""
    from opentelemetry.instrumentation._semconv import (
        _get_semconv_opt_in_modes,
        _OpenTelemetryStabilitySignalType,
        _set_db_statement,
    )
    from opentelemetry.instrumentation.redis import util

    kinds = _OpenTelemetryStabilitySignalType
    modes = _get_semconv_opt_in_modes((kinds.DATABASE, kinds.HTTP))
    return (modes[kinds.DATABASE], modes[kinds.HTTP], util._format_command_args, util._extract_conn_attributes,
            util._build_span_name, _set_db_statement)


def dbapi_semconv_setters() -> tuple[Any, Any, Any]:
    """contrib dbapi's (set_db_system, set_db_name, set_db_statement), honouring the semconv opt-in mode."""
    from opentelemetry.instrumentation.dbapi import _set_db_name, _set_db_statement, _set_db_system

    return _set_db_system, _set_db_name, _set_db_statement


def dbapi_integration(cursor_tracer: Any) -> Any:
    """The ``DatabaseApiIntegration`` behind a contrib ``CursorTracer`` (None if absent)."""
    return getattr(cursor_tracer, "_db_api_integration", None)


def dbapi_db_mode(integration: Any) -> Any:
    """The database semconv opt-in mode a ``DatabaseApiIntegration`` was built with."""
    return integration._sem_conv_opt_in_mode_db


def dbapi_tracer(integration: Any) -> Any:
    """The tracer a ``DatabaseApiIntegration`` records its spans with."""
    return integration._tracer


def limit_attribute_sets(state: Any, overflow: Mapping[str, Any],
                         on_overflow: Callable[[str], None]) -> bool:
    """Cap each metric stream's attribute sets (the SDK has none: opentelemetry-python#3234).

    Wraps ``_ViewInstrumentMatch.consume_measurement`` once per process. A stream holding ``state.limit - 1``
    attribute sets sends a measurement with a new set to the ``overflow`` series instead, and calls
    ``on_overflow(stream name)``. Below the limit the cost is one ``len()`` per measurement. The stream's
    key is ``_hash_attributes`` on 1.44+ and ``frozenset(items)`` before. False if the SDK's shape is unknown.
    """
    try:
        from dataclasses import replace

        from opentelemetry.sdk.metrics._internal import _view_instrument_match as vim
    except ImportError:
        return False
    cls = getattr(vim, "_ViewInstrumentMatch", None)
    original = getattr(cls, "consume_measurement", None)
    if cls is None or original is None:
        return False
    if getattr(original, "__otelkit_limited__", False):
        return True
    hashed = getattr(vim, "_hash_attributes", None)

    def key(attributes: Mapping[str, Any]) -> Any:
        return hashed(attributes) if hashed is not None else frozenset(attributes.items())

    overflow_attributes = dict(overflow)

    def consume_measurement(self: Any, measurement: Any, *args: Any, **kwargs: Any) -> Any:
        aggregations = self._attributes_aggregation
        if len(aggregations) >= state.limit - 1:
            attributes = dict(measurement.attributes) if measurement.attributes else {}
            keys = self._view._attribute_keys
            if keys is not None:
                attributes = {k: v for k, v in attributes.items() if k in keys}
            if key(attributes) not in aggregations:
                measurement = replace(measurement, attributes=overflow_attributes)
                on_overflow(self._name)
        return original(self, measurement, *args, **kwargs)

    consume_measurement.__otelkit_limited__ = True  # type: ignore[attr-defined]
    consume_measurement.__wrapped__ = original  # type: ignore[attr-defined]
    cls.consume_measurement = consume_measurement
    return True


def starlette_span_details() -> Callable[[Any], tuple[str, dict[str, Any]]]:
    """The starlette contrib's span name/``http.route`` function (its ``instrument_app`` takes no
    ``excluded_urls`` or ``exclude_spans``, so otelkit adds the ASGI middleware itself)."""
    from opentelemetry.instrumentation import starlette as contrib

    details: Callable[[Any], tuple[str, dict[str, Any]]] = contrib._get_default_span_details
    return details


def http_stability_mode() -> Any:
    """The contrib's "stable HTTP conventions" mode (``OTEL_SEMCONV_STABILITY_OPT_IN=http``), None if unknown."""
    try:
        from opentelemetry.instrumentation._semconv import _StabilityMode
    except ImportError:
        return None
    return _StabilityMode.HTTP


def asgi_server_helpers() -> tuple[Any, Any, Any] | None:
    """The contrib ASGI middleware's private pieces otelkit's one-layer middleware uses, or None without them.

    ``(the HTTP stability mode, _parse_active_request_count_attrs, _parse_duration_attrs)`` of
    ``opentelemetry-instrumentation-asgi`` (:mod:`otelkit._instrument._asgi_middleware`): with them its metric
    attribute sets are the contrib's own. Without them (another contrib release) that middleware runs the
    contrib's ``__call__`` instead.
    """
    try:
        from opentelemetry.instrumentation._semconv import _StabilityMode
        from opentelemetry.instrumentation.asgi import _parse_active_request_count_attrs, _parse_duration_attrs
    except ImportError:
        return None
    return _StabilityMode.HTTP, _parse_active_request_count_attrs, _parse_duration_attrs


# --- a lean Tracer.start_span for the SDK's own tracer (issue 17 part 3) ------------------------------

# The SDK releases whose Tracer.start_span/Span construction the lean path was checked against line by line
# (tests/unit/test_span_path.py compares the spans). Others (1.40 sets no RANDOM_TRACE_ID flag and asks the
# provider whether a tracer is enabled) keep the SDK's own start_span until checked and added here.
VERIFIED_SDK = ("1.45.",)
_lean_for: Any = None  # the checked builder, once made; False if it could not be


def _is_sdk_code(function: Any, module: str, qualname: str) -> bool:
    """Whether ``function`` is the SDK's own ``module.qualname``: not replaced, subclassed or wrapped by anyone."""
    return (getattr(function, "__module__", None) == module and getattr(function, "__qualname__", None) == qualname
            and not hasattr(function, "__wrapped__"))


def lean_start_span(tracer: Any, inline_sampler: type | None = None) -> Callable[..., Any] | None:
    """A leaner ``tracer.start_span`` building the SDK's own ``_Span``, or None when the SDK's must be used.

    The SDK's ``start_span`` spends most of a span's application-thread cost in Python frames around
    small objects: ``get_current_span``, the ID generator, ``TraceFlags``/``SpanContext`` constructors,
    ``Span.__init__`` calling ``ReadableSpan.__init__`` with thirteen keywords, ``BoundedAttributes``
    cleaning the attributes through a generic recursive cleaner, two ``BoundedList`` and ``Span.start``
    taking a lock on a span nobody else can see yet (``benchmarks/bench_export.py``, callgrind row).

    The function returned does exactly what ``Tracer.start_span`` does, in the same
    order, for the SDK's own ``Tracer`` with the default ``RandomIdGenerator``: the sampler is asked as
    the SDK asks it (a sampler of type ``inline_sampler``, otelkit's
    :class:`~otelkit._sampling.ParentBasedAlwaysOn` passed by ``_proxy``, is decided inline: same
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
    lean = _lean()
    return lean[0](tracer, inline_sampler) if lean else None


def lean_end_span(tracer: Any, own_processors: Collection[type] = ()) -> Callable[[Any], None] | None:
    """``span.end()`` for the spans of ``tracer``, leaner, or None when the SDK's ``Span.end`` must be called.

    The SDK's ``end`` runs the multi-processor's two loops in frames of their own and copies the span into a
    ``ReadableSpan`` through a thirteen-keyword constructor. The function returned does what ``Span.end``
    does, in the same order, for an SDK ``_Span`` whose processor is the tracer's own
    ``SynchronousMultiSpanProcessor``: the lock, the end time from the SDK module's clock, the attributes made
    immutable, the span metrics hook, every processor's ``_on_ending`` then ``on_end`` (in their order; the
    ``SpanProcessor`` base class's no-op hooks are skipped), with a ``ReadableSpan`` holding the same fields.
    Any other span gets its own ``end()``.

    ``own_processors``: processor types (otelkit's own) known to only read a finished span (read at the first
    ``end`` after the processors change: a set filled later counts). When every
    processor is one of them, the ``ReadableSpan`` of a span with no events (no links) holds one shared empty
    ``BoundedList`` of the same size instead of the span's own: the same content, ``dropped`` and ``maxlen``,
    and four fewer objects per queued span for the cyclic GC to traverse until the export thread takes it.
    An ended span's events and links cannot change (the SDK refuses them after ``end``), so nothing differs.

    Guarded like :func:`lean_start_span`, and only while ``Span.end``, ``Span._readable_span``,
    ``ReadableSpan.__init__`` and the multi-processor's hooks are the SDK's own.
    """
    lean = _lean()
    return lean[1](tracer, own_processors) if lean else None


def _lean() -> Any:
    global _lean_for
    if _lean_for is None:
        try:
            _lean_for = _lean_factory()
        except Exception:  # an SDK this code does not know: its own start_span and end, as before
            _lean_for = False
    return _lean_for


def _lean_factory() -> tuple[Callable[[Any, type | None], Any], Callable[[Any, Collection[type]], Any]]:
    """Imports the SDK's trace internals only when the first tracer is bound (``_compat`` is imported at exit)."""
    import random
    import threading
    from collections import deque
    from collections.abc import Sequence
    from types import MappingProxyType

    from opentelemetry import trace as trace_api
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.context import Context, get_current
    from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, SynchronousMultiSpanProcessor, _Span
    from opentelemetry.sdk.trace import Tracer as SdkTracer
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, DEFAULT_ON, Decision, ParentBased
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.sdk.version import __version__ as sdk_version
    from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE
    from opentelemetry.util.types import Attributes

    from otelkit._internal_log import logger

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
    _STR_ONLY = frozenset({str})
    _new = object.__new__
    _Lock = threading.Lock
    _no_sampler = object()  # matches no sampler
    _Link = trace_api.Link
    _sdk_new_links = _Span._new_links  # a patch made later is seen (identity) and then taken


    def _sdk_default_on() -> Any:
        """The SDK's own default sampler object (``parentbased_always_on``: what a ``TracerProvider()`` without a
        sampler gets) when it is intact, else an object that matches no sampler. ``ParentBased(ALWAYS_ON)`` with the
        default delegates makes the decisions of otelkit's ParentBasedAlwaysOn, so ``start_span`` decides it inline
        too. Checked when a tracer is bound, like the other guards: another ParentBased instance, other delegates, a
        subclass or a patched ``should_sample`` is called as the SDK calls it."""
        delegates = (getattr(DEFAULT_ON, "_root", None), getattr(DEFAULT_ON, "_remote_parent_sampled", None),
                     getattr(DEFAULT_ON, "_remote_parent_not_sampled", None),
                     getattr(DEFAULT_ON, "_local_parent_sampled", None),
                     getattr(DEFAULT_ON, "_local_parent_not_sampled", None))
        should_sample = getattr(ParentBased.should_sample, "__qualname__", None)
        intact = (type(DEFAULT_ON) is ParentBased and "should_sample" not in vars(DEFAULT_ON)
                  and should_sample == "ParentBased.should_sample"
                  and ParentBased.should_sample.__module__ == "opentelemetry.sdk.trace.sampling"
                  and not hasattr(ParentBased.should_sample, "__wrapped__")
                  and delegates == (ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF))
        return DEFAULT_ON if intact else _no_sampler


    def _bounded_attributes(attributes: Any, maxlen: int | None, max_value_len: int | None) -> BoundedAttributes:
        """``BoundedAttributes(maxlen, attributes, immutable=False, max_value_len=...)``, without the generic cleaner.

        Only when cleaning would change nothing: string keys, values of the types above, strings within the
        length limit, no more attributes than the limit. Anything else goes through the SDK's constructor.
        """
        if attributes:
            # The checks run in C (set operations over map(type, ...)), not a Python loop per attribute: a
            # message span starts with ~11. Same conditions as a per-item loop: str keys, none empty, values
            # of the types above, strings within the length limit, no more than the limit.
            if (type(attributes) not in _PLAIN_MAPPINGS or (maxlen is not None and len(attributes) > maxlen)
                    or "" in attributes or not _STR_ONLY.issuperset(map(type, attributes))
                    or not _ATOMIC.issuperset(map(type, attributes.values()))
                    or (max_value_len is not None and any(
                        type(value) is str and len(value) > max_value_len for value in attributes.values()))):
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
        """What ``_Span(...)`` (``ReadableSpan.__init__``, then ``Span.__init__``) leaves in the instance, in order."""
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
            link = links[0]
            max_links = limits.max_links
            if (len(links) == 1 and type(link) is _Link and link._attributes is None
                    and type(link._context) is SpanContext and link._context.is_valid
                    and (max_links is None or max_links > 0) and _Span._new_links is _sdk_new_links):
                # One link without attributes to a valid context (a consumer span's link to its producer):
                # what _new_links leaves, an immutable empty BoundedAttributes on the link and a BoundedList of it.
                link_attributes: Any = _new(BoundedAttributes)
                link_attributes._dict = {}
                link_attributes.maxlen = limits.max_link_attributes
                link_attributes.dropped = 0
                link_attributes.max_value_len = limits.max_attribute_length
                link_attributes._lock = _Lock()
                link_attributes._immutable = True
                link._attributes = link_attributes
                one: Any = _new(BoundedList)
                one.dropped = 0
                one._dq = deque((link,), maxlen=max_links)
                one._lock = _Lock()
                span._links = one
            else:
                span._links = span._new_links(links)
        else:  # BoundedList(limits.max_links), as Span._new_links makes it for no links
            empty: Any = _new(BoundedList)
            empty.dropped = 0
            empty._dq = deque(maxlen=limits.max_links)
            empty._lock = _Lock()
            span._links = empty
        span._record_end_metrics = record_end_metrics
        return span  # type: ignore[no-any-return]


    def _make(tracer: Any, status: Any, inline_sampler: type | None) -> Callable[..., trace_api.Span]:
        getrandbits = random.getrandbits
        default_on = _sdk_default_on()
        sdk_trace = sdk_trace_module
        span_key = str(SPAN_KEY)  # not None: lean_start_span checked it
        # The SDK's multi-processor's on_start loop, inline (see _skip_base): the processors whose on_start is
        # not the SpanProcessor base class's no-op, per processor tuple (the SDK replaces the tuple on add).
        multi = tracer.span_processor
        inline_multi = _inline_multi(multi, "on_start")
        started: list[Any] = [None, None]

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
            if type(sampler) is inline_sampler or sampler is default_on:
                # ParentBasedAlwaysOn.should_sample (ParentBased(ALWAYS_ON)'s decisions), inline: the parent is
                # already looked up.
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
            processor = span._span_processor
            if inline_multi and processor is multi:
                processors = multi._span_processors
                if processors is started[0]:
                    starting = started[1]
                else:
                    starting = _skip_base(processors, "on_start", _base_on_start)
                    started[0], started[1] = processors, starting
                if starting is None:
                    processor.on_start(span, parent_context=context)
                else:
                    for each in starting:
                        each.on_start(span, parent_context=context)
            else:
                processor.on_start(span, parent_context=context)
            return span  # type: ignore[no-any-return]

        return start_span


    checked = False
    found_status: Any = None  # None after the check: the lean path is off
    sdk_trace_module: Any = None


    def _sdk_code(function: Any, qualname: str) -> bool:
        return _is_sdk_code(function, "opentelemetry.sdk.trace", qualname)


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
        if isinstance(value, (ReadableSpan, BoundedAttributes, BoundedList)):
            return type(value), [(key, _shape(item)) for key, item in vars(value).items()]
        if isinstance(value, deque):
            return deque, list(value), value.maxlen
        if type(value) is type(_Lock()):
            return "lock", value.locked()
        if isinstance(value, dict):
            return {key: _shape(item) for key, item in value.items()}
        return value


    def for_tracer(tracer: trace_api.Tracer, inline_sampler: type | None) -> Callable[..., trace_api.Span] | None:
        """The lean ``start_span`` for ``tracer``, or None when the SDK's own must be used (see the module doc)."""
        nonlocal checked, found_status, sdk_trace_module
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
        if not checked:
            checked = True
            try:
                import opentelemetry.sdk.trace as sdk_trace

                sdk_trace_module = sdk_trace
                found_status = _same_layout()
            except Exception:
                logger.debug("otelkit: the lean span path's layout check failed", exc_info=True)
                found_status = None
            if found_status is None:
                logger.debug("otelkit: this SDK's spans differ from the lean path's; using Tracer.start_span")
        if found_status is None:
            return None
        return _make(tracer, found_status, inline_sampler)


    # Compared with ``type(...) is``: typed Any so that mypy does not narrow the SDK's loosely typed objects.
    _span_type: Any = _Span
    _list_type: Any = BoundedList
    _base_on_start = SpanProcessor.on_start
    _base_on_ending = SpanProcessor._on_ending
    _base_on_end = SpanProcessor.on_end
    _shared_empty: dict[int | None, Any] = {}


    def _empty_list(maxlen: int | None) -> Any:
        """One empty ``BoundedList(maxlen)`` per size, shared by the ReadableSpans of spans with no events/links."""
        found = _shared_empty.get(maxlen)
        if found is None:
            found = _shared_empty.setdefault(maxlen, BoundedList(maxlen))
        return found


    def _readable(span: Any, share_empty: bool) -> ReadableSpan:
        """``span._readable_span()``: the ``ReadableSpan`` its ``__init__`` leaves, attribute for attribute."""
        readable: Any = _new(ReadableSpan)
        readable._name = span._name
        readable._context = span._context
        readable._kind = span._kind
        readable._instrumentation_info = span._instrumentation_info
        readable._instrumentation_scope = span._instrumentation_scope
        readable._parent = span._parent
        readable._start_time = span._start_time
        readable._end_time = span._end_time
        readable._attributes = span._attributes
        events = span._events
        links = span._links
        if share_empty:
            # Exact types only: a BoundedList subclass keeps its own object.
            # (An empty BoundedList is falsy: compared with None, not with ``or``.)
            if type(events) is _list_type and not events._dq and not events.dropped:
                shared = _shared_empty.get(events._dq.maxlen)
                events = shared if shared is not None else _empty_list(events._dq.maxlen)
            if type(links) is _list_type and not links._dq and not links.dropped:
                shared = _shared_empty.get(links._dq.maxlen)
                links = shared if shared is not None else _empty_list(links._dq.maxlen)
        readable._events = events
        readable._links = links
        readable._resource = span._resource
        readable._status = span._status
        return readable  # type: ignore[no-any-return]


    def _skip_base(processors: tuple[Any, ...], hook: str, base: Any) -> tuple[Any, ...] | None:
        """The processors whose ``hook`` is not the SpanProcessor base class's no-op (None: one has no such hook:
        the SDK's own loop must meet it). The hook itself is looked up per call, as the SDK's loop does."""
        found = []
        for processor in processors:
            method = getattr(type(processor), hook, None)
            if method is None:
                return None
            if method is not base or hook in getattr(processor, "__dict__", ()):
                found.append(processor)
        return tuple(found)


    def _inline_multi(multi: Any, hook: str) -> bool:
        """Whether ``multi`` is the SDK's SynchronousMultiSpanProcessor with its own ``hook`` loop."""
        return (type(multi) is SynchronousMultiSpanProcessor
                and _sdk_code(getattr(SynchronousMultiSpanProcessor, hook), f"SynchronousMultiSpanProcessor.{hook}")
                and hook not in vars(multi) and isinstance(getattr(multi, "_span_processors", None), tuple))


    def _hooks(processors: tuple[Any, ...], own: Collection[type]) -> Any:
        """(processors with an _on_ending, with an on_end, share empty lists) for a processor tuple; None: Span.end."""
        ending = _skip_base(processors, "_on_ending", _base_on_ending)
        ended = _skip_base(processors, "on_end", _base_on_end)
        if ending is None or ended is None:
            return None  # the SDK would fail on it: let it, in its own code
        share = bool(own) and all(type(processor) in own for processor in processors)
        return ending, ended, share


    def _make_end(multi: Any, own: Collection[type]) -> Callable[[Any], None]:
        sdk_trace = sdk_trace_module
        cached: list[Any] = [None, None]  # [the processor tuple, its hooks]: the SDK replaces the tuple on add

        def end(span: Any) -> None:
            if type(span) is not _span_type or span._span_processor is not multi:
                span.end()
                return
            processors = multi._span_processors
            if processors is cached[0]:
                hooks = cached[1]
            else:
                hooks = _hooks(processors, own)
                cached[0], cached[1] = processors, hooks
            if hooks is None:
                span.end()
                return
            # Span.end, in its order.
            with span._lock:
                if span._start_time is None:
                    raise RuntimeError("Calling end() on a not started span.")
                if span._end_time is not None:
                    sdk_trace.logger.warning("Calling end() on an ended span.")
                    return
                span._end_time = sdk_trace.time_ns()
                span._attributes._immutable = True
            if span._record_end_metrics:
                span._record_end_metrics()
            ending, ended, share = hooks
            for each in ending:
                each._on_ending(span)
            readable = _readable(span, share)
            for each in ended:
                each.on_end(readable)

        return end


    def _same_readable() -> bool:
        """Whether ``_readable`` leaves what ``Span._readable_span()`` does (checked once per process)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanLimits
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        scope = InstrumentationScope("otelkit-check")
        span = _Span(name="n", context=SpanContext(1, 2, False, _FLAGS[True, True]), parent=None, sampler=ALWAYS_ON,
                     resource=Resource.create({}), attributes={"k": "v"}, span_processor=SpanProcessor(),
                     kind=_INTERNAL, links=(), instrumentation_info=None, limits=SpanLimits(),
                     instrumentation_scope=scope)
        span.start(start_time=1)
        return all(_shape(span._readable_span()) == _shape(_readable(span, share)) for share in (False, True))


    end_checked: bool | None = None


    def end_for(tracer: Any, own: Collection[type]) -> Callable[[Any], None] | None:
        """The lean ``end`` for the spans of ``tracer``, or None when ``Span.end`` must be called (see above)."""
        nonlocal end_checked
        if for_tracer(tracer, None) is None:  # the start path's guards (and its one-time layout check)
            return None
        multi = getattr(tracer, "span_processor", None)
        if not (_inline_multi(multi, "on_end") and _inline_multi(multi, "_on_ending")
                and _sdk_code(Span.end, "Span.end") and _Span.end is Span.end
                and _sdk_code(Span._readable_span, "Span._readable_span")):
            return None
        if end_checked is None:
            try:
                end_checked = _same_readable()
            except Exception:
                logger.debug("otelkit: the lean end path's layout check failed", exc_info=True)
                end_checked = False
        if not end_checked:
            return None
        return _make_end(multi, own)

    return for_tracer, end_for


# --- cheaper metric points for otelkit's own cached attribute sets (issue 17 part 2) ------------------

# A point through the SDK's ``Counter.add``/``Histogram.record`` cleans its attributes into a new dict
# (``Measurement.__post_init__``), then each view's stream copies them again, filters them by the view's keys
# and derives the stream's key (``_hash_attributes``: a recursive walk that sorts the keys) to find the
# aggregation: about half of otelkit's own cost per message (benchmarks/RESULTS.md, 17.2e/17.3 session 6).
# otelkit passes the same few cached dicts again and again, so :func:`add_point`/:func:`record_point`
# remember, per dict object, its cleaned copy and, per instrument, the aggregations the SDK chose for it in each
# reader's view streams (until a reader is added or removed).
# Everything else is the SDK's own, in the SDK's order: the same ``Measurement`` fields, the exemplar filter,
# each reader's view streams, ``aggregation.aggregate`` (exemplar reservoir included). An attribute set the
# stream has not seen yet goes through the stream's own ``consume_measurement`` (the cardinality cap
# included), and is remembered only once the stream holds it (a set sent to the overflow series never is).
# SDK 1.45's streams only ever add aggregations (collection, delta temporality included, resets them in place),
# so a remembered aggregation stays the stream's own for that set.

_POINT_MEMO_MAX = 1024  # dict objects remembered at once; then forgotten together (a caller's per-call dicts)
_PLAIN_VALUES = (str, bool, int, float)  # the values the SDK's cleaner returns unchanged (no length limit)


def sdk_version() -> str:
    from opentelemetry.sdk.version import __version__

    return __version__


PointFunction = Callable[[Any, float, Mapping[str, Any], Any], None]  # (instrument, amount, attributes, context)


def _plain_add(counter: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
    if context is None:
        counter.add(amount, attributes)
    else:
        counter.add(amount, attributes, context=context)


def _plain_record(histogram: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
    if context is None:
        histogram.record(amount, attributes)
    else:
        histogram.record(amount, attributes, context=context)


def _first_add(counter: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
    _install_points()
    add_point(counter, amount, attributes, context)


def _first_record(histogram: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
    _install_points()
    record_point(histogram, amount, attributes, context)


#: ``counter.add(amount, attributes, context=context)`` (a ``Counter`` or an ``UpDownCounter``; ``context`` None:
#: the current one), with the same result; cheaper when ``attributes`` is a dict otelkit keeps and never mutates
#: (its cached attribute sets). Rebound on first use (the SDK's metrics internals are imported only then).
add_point: Callable[..., None] = _first_add
#: ``histogram.record(amount, attributes, context=context)``, likewise.
record_point: Callable[..., None] = _first_record


def points_fast() -> bool:
    """True when :func:`add_point`/:func:`record_point` take the remembered path (verified SDK, known shape)."""
    if add_point is _first_add:
        _install_points()
    return add_point is not _plain_add


def reset_points() -> None:
    """Forget the chosen point path (tests): the next point checks the SDK again."""
    global add_point, record_point
    add_point, record_point = _first_add, _first_record


def _install_points() -> None:
    global add_point, record_point
    from otelkit._internal_log import logger

    try:
        made = _points_factory()
    except Exception:  # an SDK this code does not know: its own add/record, as before
        logger.debug("otelkit: the SDK's metrics internals are not the verified ones; points take the SDK path",
                     exc_info=True)
        made = None
    add_point, record_point = made if made is not None else (_plain_add, _plain_record)


def _points_factory() -> tuple[PointFunction, PointFunction] | None:
    if not sdk_version().startswith(VERIFIED_SDK):
        return None
    from dataclasses import fields
    from math import inf
    from time import time_ns

    from opentelemetry.attributes import _clean_attribute_value
    from opentelemetry.context import get_current
    from opentelemetry.sdk.metrics._internal import _view_instrument_match as vim_module
    from opentelemetry.sdk.metrics._internal import instrument as sdk_instrument
    from opentelemetry.sdk.metrics._internal.exemplar import TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics._internal.measurement import Measurement
    from opentelemetry.sdk.metrics._internal.measurement_consumer import SynchronousMeasurementConsumer
    from opentelemetry.sdk.metrics._internal.metric_reader_storage import MetricReaderStorage
    from opentelemetry.trace import INVALID_SPAN
    from opentelemetry.trace import Span as ApiSpan

    sdk_counter, sdk_histogram = sdk_instrument._Counter, sdk_instrument._Histogram
    sdk_updown = sdk_instrument._UpDownCounter
    view_match = vim_module._ViewInstrumentMatch
    hash_attributes = vim_module._hash_attributes
    consume: Any = view_match.consume_measurement
    if getattr(consume, "__otelkit_limited__", False):  # otelkit's cardinality cap: what it wraps
        consume = consume.__wrapped__
    sdk_consume = consume

    sdk_code = _is_sdk_code
    # The SDK's own code, not patched or subclassed by someone else: what the remembered path stands in for.
    base = "opentelemetry.sdk.metrics._internal."
    if not (sdk_code(sdk_counter.add, base + "instrument", "Counter.add")
            and sdk_code(sdk_updown.add, base + "instrument", "UpDownCounter.add")
            and sdk_code(sdk_histogram.record, base + "instrument", "Histogram.record")
            and sdk_code(sdk_counter._is_enabled, base + "instrument", "_Synchronous._is_enabled")
            and sdk_code(SynchronousMeasurementConsumer.consume_measurement, base + "measurement_consumer",
                         "SynchronousMeasurementConsumer.consume_measurement")
            and sdk_code(MetricReaderStorage.consume_measurement, base + "metric_reader_storage",
                         "MetricReaderStorage.consume_measurement")
            and sdk_code(sdk_consume, base + "_view_instrument_match", "_ViewInstrumentMatch.consume_measurement")
            and sdk_code(Measurement.__post_init__, base + "measurement", "Measurement.__post_init__")):
        return None
    span_key: Any = SPAN_KEY
    # The default exemplar filter is decided inline only while it is the SDK's own (else it is called)
    trace_based: Any = (TraceBasedExemplarFilter if span_key is not None and sdk_code(
        TraceBasedExemplarFilter.should_sample, base + "exemplar.exemplar_filter",
        "TraceBasedExemplarFilter.should_sample") else None)

    def known_consume() -> bool:
        current = view_match.consume_measurement
        return current is sdk_consume or (getattr(current, "__otelkit_limited__", False)
                                          and getattr(current, "__wrapped__", None) is sdk_consume)

    if tuple(field.name for field in fields(Measurement)) != ("value", "time_unix_nano", "instrument", "context",
                                                              "attributes"):
        return None
    set_field = object.__setattr__
    new_object = object.__new__
    # The trace-based filter's decision for the last span seen: (span, sampled?). Only for span classes whose span
    # context never changes (the SDK's span, NonRecordingSpan), so the decision cannot either; holds that one span.
    from opentelemetry.sdk.trace import _Span
    from opentelemetry.trace import NonRecordingSpan

    fixed_context_spans = frozenset({_Span, NonRecordingSpan})
    last_decision: list[tuple[Any, bool]] = [(None, False)]
    # id(dict) -> (the dict, its cleaned copy, {SDK instrument: (its consumer's reader storages, the aggregation
    # of each of their streams for the set)}); the dict is held, so its id is not reused while remembered.
    memo: dict[int, tuple[Any, dict[str, Any], dict[Any, Any]]] = {}

    def learn(attributes: Any) -> tuple[Any, dict[str, Any], dict[Any, Any]] | None:
        if type(attributes) is not dict or not attributes:
            return None
        for key, value in attributes.items():
            if type(key) is not str or not key or type(value) not in _PLAIN_VALUES:
                return None  # the SDK's cleaner would change or warn about something: its path, every time
        cleaned: Any = _clean_attribute_value(attributes, None)
        if cleaned != attributes:
            return None
        if len(memo) >= _POINT_MEMO_MAX:
            memo.clear()
        entry: tuple[Any, dict[str, Any], dict[Any, Any]] = (attributes, cleaned, {})
        memo[id(attributes)] = entry
        return entry

    def found(stream: Any, cleaned: dict[str, Any]) -> Any:
        """The aggregation ``stream`` keeps for ``cleaned`` (as its ``consume_measurement`` keys it), or None."""
        if type(stream) is not view_match or not known_consume():
            return None
        keys = stream._view._attribute_keys
        kept = cleaned if keys is None else {k: v for k, v in cleaned.items() if k in keys}
        # None: this point went to the overflow series (cardinality cap), or a view dropped it
        return stream._attributes_aggregation.get(hash_attributes(kept))

    def consumed(real: Any, amount: float, attributes: Any, given: Any) -> bool:
        """The SDK's ``SynchronousMeasurementConsumer.consume_measurement`` of the point; False: not taken."""
        entry = memo.get(id(attributes))
        if entry is None or entry[0] is not attributes:
            entry = learn(attributes)
            if entry is None:
                return False
        consumer = real._measurement_consumer
        if type(consumer) is not SynchronousMeasurementConsumer:
            return False
        cleaned = entry[1]
        time_unix_nano = time_ns()
        context = given or get_current()  # as the SDK's add/record: a context given, else (also if empty) the current
        # Measurement(amount, time_unix_nano, real, context, attributes) as its frozen __init__ and __post_init__
        # leave it (the same fields in the same order, attributes the cleaned copy), without their five
        # object.__setattr__ calls and the second cleaning
        measurement = new_object(Measurement)
        set_field(measurement, "__dict__", {"value": amount, "time_unix_nano": time_unix_nano, "instrument": real,
                                            "context": context, "attributes": cleaned})
        exemplar_filter = consumer._sdk_config.exemplar_filter
        if type(exemplar_filter) is trace_based:  # the default: TraceBasedExemplarFilter.should_sample, inline
            span = context.get(span_key)
            last = last_decision[0]
            if span is last[0] and span is not None:  # the span of the previous point (a scope records several)
                should_sample = last[1]
            else:
                should_sample = (span is not None and isinstance(span, ApiSpan) and span != INVALID_SPAN
                                 and span.get_span_context().trace_flags.sampled)
                if type(span) in fixed_context_spans:
                    last_decision[0] = (span, should_sample)  # one tuple stored: atomic for other threads
        else:
            should_sample = exemplar_filter.should_sample(amount, time_unix_nano, cleaned, context)
        storages = consumer._reader_storages  # replaced, never mutated, when a reader is added or removed
        plan = entry[2].get(real)
        if plan is not None and plan[0] is storages:
            for aggregation in plan[1]:  # each reader's streams, in the SDK's order
                aggregation.aggregate(measurement, should_sample)
            return True
        # The first point of this set on this instrument (or the readers changed): the SDK's own streams, then
        # remember their aggregations if every stream now holds the set.
        aggregations: list[Any] | None = []
        for storage in storages.values():
            if type(storage) is not MetricReaderStorage:
                storage.consume_measurement(measurement, should_sample)
                aggregations = None
                continue
            for stream in storage._get_or_init_view_instrument_match(real):
                stream.consume_measurement(measurement, should_sample)
                if aggregations is not None:
                    aggregation = found(stream, cleaned)
                    if aggregation is None:
                        aggregations = None
                    else:
                        aggregations.append(aggregation)
        if aggregations is not None:
            entry[2][real] = (storages, tuple(aggregations))
        return True

    def add(counter: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
        real = counter
        kind = type(real)
        if kind is ProxyCounter or kind is ProxyUpDownCounter:
            real = real._real_instrument
            if not real:
                return  # the API proxy before a meter is set drops the point too
            kind = type(real)
        # A Counter takes non-negative finite amounts, an UpDownCounter any finite one (else the SDK's own add
        # warns and drops it)
        if (kind is sdk_counter and 0 <= amount < inf) or (kind is sdk_updown and -inf < amount < inf):
            config = real._meter_config
            if (config is None or config.is_enabled) and consumed(real, amount, attributes, context):
                return
        if context is None:
            real.add(amount, attributes)
        else:
            real.add(amount, attributes, context=context)

    def record(histogram: Any, amount: float, attributes: Mapping[str, Any], context: Any = None) -> None:
        real = histogram
        if type(real) is ProxyHistogram:
            real = real._real_instrument
            if not real:
                return
        if type(real) is sdk_histogram and 0 <= amount < inf:
            config = real._meter_config
            if (config is None or config.is_enabled) and consumed(real, amount, attributes, context):
                return
        if context is None:
            real.record(amount, attributes)
        else:
            real.record(amount, attributes, context=context)

    return add, record
