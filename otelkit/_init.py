"""``otelkit.init()``, ``otelkit.shutdown()``: build the SDK pipeline from resolved settings, swap it in, tear it down.

See ``docs/architecture.md`` for the flow. Everything runs under one RLock, so
concurrent ``init()`` calls (or ``init()`` racing ``shutdown()``) serialise.
Apart from :class:`~otelkit.ConfigError` (bad settings) and ``TypeError``
(unknown keyword, positional argument), nothing here raises into the application: a failing part is
logged on the ``otelkit`` logger and the rest carries on.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from otelkit import _active, _compat, _proxy, _scrub
from otelkit._config import (
    MAX_DURATION_SECONDS,
    ConfigError,
    ConfigWarning,
    Settings,
    caller_stacklevel,
    mask_url,
    resolve,
    unknown_arguments_message,
)
from otelkit._export.stats import ShutdownReport
from otelkit._internal_log import logger

__all__ = ["get_settings", "init", "reset", "shutdown"]

_lock = threading.RLock()


@dataclass(eq=False)  # identity; each generated method costs init() ~1M instructions
class _State:
    settings: Settings
    user: tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]
    tracer_provider: Any = None
    meter_provider: Any = None
    logger_provider: Any = None
    # Providers behind the proxies that belong to someone else (opentelemetry-instrument, another library):
    # otelkit never shuts those down.
    owns_tracer_provider: bool = True
    owns_meter_provider: bool = True
    owns_logger_provider: bool = True
    # otelkit's readers added to a foreign MeterProvider (removed again on re-init/shutdown).
    readers_on_foreign: tuple[Any, ...] = ()
    # otelkit's processors when a foreign provider is used as is: fed by the one Forwarding*Processor.
    span_pipeline: Any = None
    log_pipeline: Any = None
    # Log records go somewhere (an exporter, a processor, a foreign provider's pipeline): only then may the
    # root logger's level be lowered to log_level. logs_to_console: otelkit prints them on the console.
    logs_exported: bool = False
    logs_to_console: bool = False
    # False when a ConfigError escaped half-way: the next init() with the same settings must retry.
    complete: bool = True


_state: _State | None = None
_atexit_registered = False
_fork_installed = False
_foreign_attached = False
_warned_derived_name = False
_retiring: list[threading.Thread] = []


def init(
    *positional: NoReturn,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    resource_attributes: Mapping[str, Any] | str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | str | None = None,
    timeout: float | None = None,
    compression: str | None = None,
    traces_exporter: str | Sequence[str] | None = None,
    metrics_exporter: str | Sequence[str] | None = None,
    logs_exporter: str | Sequence[str] | None = None,
    sampler: str | None = None,
    sampler_arg: float | None = None,
    propagators: str | Sequence[str] | None = None,
    metric_export_interval: float | None = None,
    instrument: str | Sequence[str] | None = None,
    disabled_instrumentations: str | Sequence[str] | None = None,
    system_metrics: bool | None = None,
    log_level: int | str | None = None,
    log_correlation: bool | None = None,
    scrub: bool | None = None,
    sentry_dsn: str | None = None,
    sentry_environment: str | None = None,
    sentry_traces_sample_rate: float | None = None,
    trace_url_template: str | None = None,
    send_default_pii: bool | None = None,
    sentry_otlp: str | Sequence[str] | None = None,
    shutdown_timeout: float | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
    spool_max_bytes: int | None = None,
    disabled: bool | None = None,
    strict: bool | None = None,
    debug: bool | None = None,
    certificate: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
    client_certificate: str | os.PathLike[str] | None = None,
    insecure: bool | None = None,
    traces_endpoint: str | None = None,
    traces_protocol: str | None = None,
    traces_headers: Mapping[str, str] | str | None = None,
    traces_timeout: float | None = None,
    traces_compression: str | None = None,
    traces_certificate: str | os.PathLike[str] | None = None,
    traces_client_key: str | os.PathLike[str] | None = None,
    traces_client_certificate: str | os.PathLike[str] | None = None,
    traces_insecure: bool | None = None,
    metrics_endpoint: str | None = None,
    metrics_protocol: str | None = None,
    metrics_headers: Mapping[str, str] | str | None = None,
    metrics_timeout: float | None = None,
    metrics_compression: str | None = None,
    metrics_certificate: str | os.PathLike[str] | None = None,
    metrics_client_key: str | os.PathLike[str] | None = None,
    metrics_client_certificate: str | os.PathLike[str] | None = None,
    metrics_insecure: bool | None = None,
    logs_endpoint: str | None = None,
    logs_protocol: str | None = None,
    logs_headers: Mapping[str, str] | str | None = None,
    logs_timeout: float | None = None,
    logs_compression: str | None = None,
    logs_certificate: str | os.PathLike[str] | None = None,
    logs_client_key: str | os.PathLike[str] | None = None,
    logs_client_certificate: str | os.PathLike[str] | None = None,
    logs_insecure: bool | None = None,
    metric_export_timeout: float | None = None,
    instrument_entry_points: bool | None = None,
    scrub_extra_patterns: str | Sequence[str] | None = None,
    sentry_release: str | None = None,
    console_on_auto: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
    span_processors: Sequence[Any] = (),
    metric_readers: Sequence[Any] = (),
    log_processors: Sequence[Any] = (),
    **unknown: NoReturn,
) -> Settings:
    """Configure OpenTelemetry traces, metrics and logs for this process, and return the resolved settings.

    Every argument defaults to ``None``, meaning "take it from the environment, else the default";
    an explicit argument beats the environment. Call it as early as possible; calling it again with
    the same settings changes nothing, with different settings reconfigures cleanly.

    Args:
        service_name: ``service.name``. Defaults to the ``OTEL_SERVICE_NAME`` environment variable, then
            ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``, else a name derived from the program (with a warning).
        service_version: ``service.version``. Defaults to ``OTEL_SERVICE_VERSION``, then the installed version of
            the program's distribution.
        environment: ``deployment.environment.name``. Defaults to ``OTELKIT_ENVIRONMENT`` or
            ``deployment.environment.name`` in ``OTEL_RESOURCE_ATTRIBUTES``.
        resource_attributes: Extra resource attributes; merged over ``OTEL_RESOURCE_ATTRIBUTES`` (argument wins).
        endpoint: OTLP endpoint for all signals. Defaults to the ``OTEL_EXPORTER_OTLP_ENDPOINT`` environment
            variable; ``/v1/traces`` etc. is appended for http/protobuf. Per signal: ``traces_endpoint=`` etc.
        protocol: ``"grpc"`` or ``"http/protobuf"``. Defaults to ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
            http/protobuf (grpc when the endpoint's port is 4317 or it has no scheme, as in ``collector:4317``).
        headers: Headers for every export (mapping or ``"k=v,k2=v2"``). Defaults to ``OTEL_EXPORTER_OTLP_HEADERS``.
        timeout: Export timeout in seconds. Defaults to ``OTEL_EXPORTER_OTLP_TIMEOUT`` (milliseconds), else 10 s.
        compression: ``"gzip"`` or ``"none"``. Defaults to ``OTEL_EXPORTER_OTLP_COMPRESSION``, else none.
        traces_exporter: ``otlp``, ``console``, ``none`` or a list. Defaults to ``OTEL_TRACES_EXPORTER``, else
            ``otlp`` when an endpoint is set, else the embedded default (``auto``).
        metrics_exporter: As ``traces_exporter``, plus ``prometheus``. Defaults to ``OTEL_METRICS_EXPORTER``.
        logs_exporter: As ``traces_exporter``. Defaults to ``OTEL_LOGS_EXPORTER``.
        sampler: A spec sampler name, or ``otelkit_correlation_ratio`` (whole events by correlation ID,
            docs/sampling.md). Defaults to ``OTEL_TRACES_SAMPLER``, else ``parentbased_always_on``.
        sampler_arg: Ratio for the ``traceidratio`` and ``otelkit_correlation_ratio`` samplers. Defaults to
            ``OTEL_TRACES_SAMPLER_ARG``, else 1.0.
        propagators: Propagator names. Defaults to ``OTEL_PROPAGATORS``, else ``tracecontext,baggage``.
        metric_export_interval: Seconds between metric exports. Defaults to ``OTEL_METRIC_EXPORT_INTERVAL`` (ms).
        instrument: Integrations to enable. Defaults to ``OTELKIT_INSTRUMENT``, else every available one.
        disabled_instrumentations: Integrations to skip. Defaults to ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``.
        system_metrics: Process/runtime metrics. Defaults to ``OTELKIT_SYSTEM_METRICS``, else true.
        log_level: Lowest ``logging`` level exported. Defaults to ``OTELKIT_LOG_LEVEL``, else INFO.
        log_correlation: trace/span/correlation IDs on log records. Defaults to ``OTELKIT_LOG_CORRELATION``.
        scrub: Redact secrets before export. Defaults to ``OTELKIT_SCRUB``, else true.
        sentry_dsn: Sentry DSN. Defaults to the ``SENTRY_DSN`` environment variable; unset: Sentry stays off.
        sentry_environment: Defaults to ``SENTRY_ENVIRONMENT``, else ``environment``.
        sentry_traces_sample_rate: Defaults to ``SENTRY_TRACES_SAMPLE_RATE``, else 0.
        trace_url_template: Link to a trace on Sentry events. Defaults to ``OTELKIT_TRACE_URL_TEMPLATE``.
        send_default_pii: Defaults to ``OTELKIT_SENTRY_SEND_DEFAULT_PII``, else false.
        sentry_otlp: Also send ``traces`` and/or ``logs`` to Sentry's OTLP endpoint (from the DSN), next to the
            other exporters. Defaults to ``OTELKIT_SENTRY_OTLP``, else off (docs/sentry.md says why).
        shutdown_timeout: Seconds allowed for flushing at shutdown/exit. Defaults to ``OTELKIT_SHUTDOWN_TIMEOUT``
            (milliseconds), else 5 s.
        spool_dir: Directory where spans and log records are kept on disk while the collector is unavailable
            (and across a restart), sent when it is back. Defaults to ``OTELKIT_SPOOL_DIR``, else off.
        spool_max_bytes: Bytes the spool may hold per signal. Defaults to ``OTELKIT_SPOOL_MAX_BYTES``, else 256 MiB.
        disabled: Turn telemetry off. Defaults to ``OTEL_SDK_DISABLED``.
        strict: Bad settings raise ``ConfigError``; false: one warning each, and the default. Defaults to
            ``OTELKIT_STRICT``, else true.
        debug: Log otelkit's decisions at DEBUG. Defaults to ``OTELKIT_DEBUG``.
        span_processors: Extra SDK span processors, after otelkit's own. Kept (not shut down) across a
            re-init that passes them again; shut down by ``shutdown()``.
        metric_readers: Extra SDK metric readers. The SDK ties a reader to one MeterProvider for life, so a
            re-init that builds a new provider needs new reader objects (a reused one is skipped with a warning).
        log_processors: Extra SDK log record processors (kept across re-inits like ``span_processors``).
        certificate: CA certificate (PEM file) to verify the collector. Defaults to
            ``OTEL_EXPORTER_OTLP_CERTIFICATE``.
        client_key: Client private key (PEM file) for mTLS. Defaults to ``OTEL_EXPORTER_OTLP_CLIENT_KEY``.
        client_certificate: Client certificate (PEM file) for mTLS. Defaults to
            ``OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE``.
        insecure: gRPC with a scheme-less endpoint (``collector:4317``): true sends plaintext, false uses TLS.
            Defaults to ``OTEL_EXPORTER_OTLP_INSECURE``, else false. An ``http://``/``https://`` scheme wins.
        traces_endpoint: The export settings above for one signal (``traces_``, ``metrics_``, ``logs_`` +
            ``endpoint``, ``protocol``, ``headers``, ``timeout``, ``compression``, ``certificate``,
            ``client_key``, ``client_certificate``, ``insecure``); they win over the generic ones. A per-signal
            endpoint is used as is (no ``/v1/<signal>`` appended). Defaults to the per-signal variables
            (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``...).
        metric_export_timeout: Seconds allowed for one metric export. Defaults to ``OTEL_METRIC_EXPORT_TIMEOUT`` (ms).
        instrument_entry_points: Also load every installed ``opentelemetry_instrumentor`` entry point. Defaults to
            ``OTELKIT_INSTRUMENT_ENTRY_POINTS``, else false.
        scrub_extra_patterns: More regular expressions to redact. Defaults to ``OTELKIT_SCRUB_EXTRA_PATTERNS``.
        sentry_release: Defaults to ``SENTRY_RELEASE``, else ``service_version``.
        console_on_auto: With no collector found, print traces and logs on the terminal. Defaults to
            ``OTELKIT_CONSOLE``, else true.
        config_file: A declarative configuration file (``OTEL_CONFIG_FILE``; needs ``otelkit[config-file]``).
            With a file, its values replace the environment's and the other arguments still win
            (docs/config-file.md).

    Every argument is keyword-only: a positional argument raises ``TypeError``, and so does an unknown name
    (naming it and the closest accepted one); mypy reports both (their type is ``NoReturn``).

    Raises:
        ConfigError: a setting has a value otelkit cannot use (unless ``strict=False``); the message names the
            setting, the value and what is accepted.
        TypeError: a positional argument or an unknown keyword (a mistake in the call itself, whatever
            ``strict`` says).
    """
    if positional:
        # Keyword-only (mypy flags a positional argument: its type is NoReturn); at run time, say what to write.
        raise TypeError(f"otelkit.init() takes keyword arguments only; got {len(positional)} positional "
                        f"argument(s), the first {positional[0]!r:.60}. Did you mean "
                        f"init(service_name={positional[0]!r:.60})?")
    if unknown:
        raise TypeError(unknown_arguments_message(sorted(unknown), ("span_processors", "metric_readers",
                                                                    "log_processors")))
    kwargs = {k: v for k, v in locals().items() if k not in ("positional", "unknown", "span_processors",
                                                             "metric_readers", "log_processors")}
    settings = resolve(**kwargs)
    user = (_user_objects("span_processors", span_processors, settings.strict),
            _user_objects("metric_readers", metric_readers, settings.strict),
            _user_objects("log_processors", log_processors, settings.strict))
    with _lock:
        if _state is not None and _state.complete and _state.settings == settings and _same(_state.user, user):
            return _state.settings
        try:
            _configure(settings, user)
        except ConfigError:
            if _state is not None:
                _state.complete = False
            raise
        except Exception:
            logger.exception("otelkit.init() failed; telemetry is off for this process")
            _fallback_noop(settings, user)
    _prepare_if_child()
    return settings


def init_in_child(settings: Settings) -> None:
    """Set up a spawn/forkserver ``multiprocessing`` child like its parent (``_pools``): same settings,
    fresh providers, no start-up line (the parent printed it). Does nothing once ``init()`` ran here."""
    global _warned_derived_name
    with _lock:
        if _state is not None:
            return
        _warned_derived_name = True
        try:
            _configure(settings, ((), (), ()), announce=False)
        except Exception:
            logger.debug("otelkit: initialising the child process failed; telemetry is off here", exc_info=True)
            _fallback_noop(settings, ((), (), ()))


def _prepare_if_child() -> None:
    """A ``multiprocessing`` child that calls ``init()`` itself: flush before its ``os._exit``."""
    try:
        from otelkit import _pools

        if _pools.in_child_process():
            _pools.prepare_child()
            _pools.guard_current_pool_worker()
    except Exception:
        logger.debug("otelkit: preparing the child process failed", exc_info=True)


_USER_KINDS = {
    "span_processors": ("SDK span processors (on_start, on_end, shutdown, force_flush)",
                        ("on_start", "on_end", "shutdown", "force_flush")),
    "metric_readers": ("SDK metric readers (opentelemetry.sdk.metrics.export.MetricReader)", ()),
    "log_processors": ("SDK log record processors (on_emit, shutdown, force_flush)",
                       ("on_emit", "shutdown", "force_flush")),
}


def _user_objects(name: str, value: Any, strict: bool) -> tuple[Any, ...]:
    """The caller's processors/readers, checked now: a wrong object would otherwise raise on every span start
    (into application code) or at shutdown. Bad ones raise ConfigError (strict) or are skipped with a warning."""
    what, methods = _USER_KINDS[name]
    if value is None:  # None means "not given", as for every other argument
        return ()
    if isinstance(value, (str, bytes, Mapping)):
        items: list[Any] | None = None
    else:
        try:
            items = list(value)
        except TypeError:
            items = None
    if items is None:
        bad: list[Any] = [value]
        items = []
    elif name == "metric_readers":
        from opentelemetry.sdk.metrics.export import MetricReader

        bad = [i for i in items if not isinstance(i, MetricReader)]
    else:
        bad = [i for i in items if not all(callable(getattr(i, m, None)) for m in methods)]
    if bad:
        message = f"argument {name}={value!r:.200} is not valid: expected a sequence of {what}; got {bad[0]!r:.80}"
        if strict:
            raise ConfigError(message)
        warnings.warn(f"otelkit: {message}; ignoring {len(bad)} item(s)", ConfigWarning,
                      stacklevel=caller_stacklevel())
    return tuple(i for i in items if not any(i is b for b in bad))


def _same(a: tuple[tuple[Any, ...], ...], b: tuple[tuple[Any, ...], ...]) -> bool:
    return all(len(x) == len(y) and all(i is j for i, j in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True))


def get_settings() -> Settings | None:
    """The settings of the last ``init()``, or None before it (and after ``shutdown()``)."""
    state = _state
    return state.settings if state is not None else None


_active.register(get_settings)


# --- building -------------------------------------------------------------------------------------


def _sampler(settings: Settings) -> Any:
    from opentelemetry.sdk.trace import sampling

    from otelkit._sampling import CorrelationRatioSampler, ParentBasedAlwaysOn

    ratio = settings.sampler_arg if settings.sampler_arg is not None else 1.0
    factories: dict[str, Callable[[], Any]] = {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": ParentBasedAlwaysOn,
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(ratio),
        "otelkit_correlation_ratio": lambda: CorrelationRatioSampler(ratio),
    }
    return factories[settings.sampler]()


def _exemplar_filter(settings: Settings) -> Any:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter

    factories: dict[str, Any] = {"always_on": AlwaysOnExemplarFilter, "always_off": AlwaysOffExemplarFilter,
                                 "trace_based": TraceBasedExemplarFilter}
    return factories[settings.exemplar_filter]()


def _span_limits(settings: Settings) -> Any:
    from opentelemetry.sdk.trace import SpanLimits

    lim = settings.limits

    def length(value: int | None) -> int:
        return SpanLimits.UNSET if value is None else value

    return SpanLimits(
        max_attributes=lim.attribute_count,
        max_events=lim.span_event_count,
        max_links=lim.span_link_count,
        max_span_attributes=lim.span_attribute_count,
        max_event_attributes=lim.event_attribute_count,
        max_link_attributes=lim.link_attribute_count,
        max_attribute_length=length(lim.attribute_value_length),
        max_span_attribute_length=length(lim.span_attribute_value_length),
    )


def _log_limits(settings: Settings) -> Any:
    from otelkit._compat import log_record_limits

    lim = settings.limits
    return log_record_limits(lim.attribute_count, lim.attribute_value_length,
                             lim.logrecord_attribute_count, lim.logrecord_attribute_value_length)


def _builtin_propagator(name: str) -> Any:
    """The two propagators ``opentelemetry-api`` registers itself, built without an entry point scan."""
    if name == "tracecontext":
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        return TraceContextTextMapPropagator()
    if name == "baggage":
        from opentelemetry.baggage.propagation import W3CBaggagePropagator

        return W3CBaggagePropagator()
    return None


def _propagator(settings: Settings) -> Any:
    from opentelemetry.propagators.composite import CompositePropagator

    # Scanning every installed distribution's entry points costs ~15M instructions of each start-up; the
    # default pair comes from opentelemetry-api itself (as the API's own default does), so only other names
    # (b3, jaeger, xray, sentry...) pay for the scan.
    found: dict[str, Any] | None = None
    propagators = []
    for name in settings.propagators:
        try:
            propagator = _builtin_propagator(name)
            if propagator is None:
                if found is None:
                    from importlib.metadata import entry_points

                    found = {ep.name: ep for ep in entry_points(group="opentelemetry_propagator")}
                propagator = found[name].load()()
            propagators.append(propagator)
        except Exception:  # resolve() checked the name exists; a broken plugin costs that propagator only
            logger.warning("otelkit: could not load propagator %r", name, exc_info=True)
    return CompositePropagator(propagators)


def _scrub_added(settings: Settings) -> Any:
    """Processors added later through ``trace.get_tracer_provider().add_span_processor()`` get scrubbed data too."""
    from otelkit import _export

    return lambda processor, signal: _export.scrubbed_user_processor(processor, settings, signal)


def _build_providers(settings: Settings, user: tuple[tuple[Any, ...], ...],
                     installed: _proxy.Installed | None = None) -> _State:
    """New SDK providers for ``settings``, or, where :func:`_defer_to_agent` says so, the agent's own ones."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from otelkit import _cardinality, _correlation, _export
    from otelkit._resource import build_resource

    _cardinality.configure(settings.metric_cardinality_limit)
    foreign = installed or _proxy.Installed()
    defer = _defer_to_agent(foreign)
    defer_tp = defer and foreign.foreign_tracer_provider is not None
    defer_mp = defer and foreign.foreign_meter_provider is not None
    defer_lp = defer and foreign.foreign_logger_provider is not None
    if defer_tp or defer_mp or defer_lp:
        # The agent already exports these signals from the same OTEL_* variables: building otelkit's exporters
        # too would send everything twice.
        import dataclasses

        def off(signal: Any, deferred: bool) -> Any:
            return dataclasses.replace(signal, exporters=("none",)) if deferred else signal

        settings = dataclasses.replace(settings, traces=off(settings.traces, defer_tp),
                                       metrics=off(settings.metrics, defer_mp), logs=off(settings.logs, defer_lp))

    resource = build_resource(settings)
    user_spans, user_readers, user_logs = user
    # The caller's processors export too (their own exporters): they get spans/records scrubbed like otelkit's.
    # otelkit's own processors only read finished spans: the lean end may hand them shared empty event lists.
    _proxy.READ_ONLY_SPAN_PROCESSORS.update((_correlation.CorrelationSpanProcessor, _export.OtelkitSpanProcessor))
    span_processors = [_correlation.CorrelationSpanProcessor(), *_export.build_span_processors(settings),
                       *(_proxy.SharedSpanProcessor(_export.scrubbed_user_processor(p, settings, "traces"))
                         for p in user_spans)]
    own_readers = list(_export.build_metric_readers(settings))
    log_processors = [*_export.build_log_processors(settings),
                      *(_proxy.SharedLogProcessor(_export.scrubbed_user_processor(p, settings, "logs"))
                        for p in user_logs)]
    logs_exported = bool(log_processors) or defer_lp
    logs_to_console = any(d.kind == "console" for d in _export.resolve_exporters(settings, "logs"))

    # shutdown_on_exit=False: the SDK's own atexit hooks shut down serially and unbounded; otelkit's one
    # atexit hook shuts all signals down concurrently under settings.shutdown_timeout.
    tp: Any
    span_pipeline = log_pipeline = None
    if defer_tp:
        from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

        tp = foreign.foreign_tracer_provider
        span_pipeline = SynchronousMultiSpanProcessor()
        for processor in span_processors:
            span_pipeline.add_span_processor(processor)
    else:
        tp = TracerProvider(sampler=_sampler(settings), resource=resource, shutdown_on_exit=False,
                            span_limits=_span_limits(settings))
        for processor in span_processors:
            tp.add_span_processor(processor)
    lp: Any
    if defer_lp:
        from otelkit._compat import SynchronousMultiLogRecordProcessor

        lp = foreign.foreign_logger_provider
        log_pipeline = SynchronousMultiLogRecordProcessor()
        for processor in log_processors:
            log_pipeline.add_log_record_processor(processor)
    else:
        lp = _compat.logger_provider(resource, _log_limits(settings))
        for processor in log_processors:
            lp.add_log_record_processor(processor)

    # The SDK providers read OTEL_SDK_DISABLED themselves; init(disabled=False) must beat the variable.
    if not defer_tp:
        _enable(tp)
    if not defer_lp:
        _enable(lp)

    foreign_mp = foreign.foreign_meter_provider
    if foreign_mp is not None and hasattr(foreign_mp, "add_metric_reader"):
        # Someone else's MeterProvider is the global one: record into it and add otelkit's readers to it.
        # A caller's reader kept from the previous init() is already attached: not added twice.
        registered = _compat.registered_metric_readers()
        readers = [*own_readers, *user_readers]
        for reader in readers:
            if reader not in registered:
                foreign_mp.add_metric_reader(reader)
        return _State(settings, tuple(user), tp, foreign_mp, lp, owns_tracer_provider=not defer_tp,  # type: ignore[arg-type]
                      owns_meter_provider=False, owns_logger_provider=not defer_lp,
                      readers_on_foreign=tuple(readers), span_pipeline=span_pipeline, log_pipeline=log_pipeline,
                      logs_exported=logs_exported, logs_to_console=logs_to_console)
    readers = [*own_readers, *_fresh_readers(user_readers)]
    mp = MeterProvider(metric_readers=readers, resource=resource, exemplar_filter=_exemplar_filter(settings),
                       shutdown_on_exit=False)
    _enable(mp)
    return _State(settings, tuple(user), tp, mp, lp, owns_tracer_provider=not defer_tp,  # type: ignore[arg-type]
                  owns_logger_provider=not defer_lp, span_pipeline=span_pipeline, log_pipeline=log_pipeline,
                  logs_exported=logs_exported, logs_to_console=logs_to_console)


def _enable(provider: Any) -> None:
    _compat.enable_provider(provider)


def _defer_to_agent(installed: _proxy.Installed) -> bool:
    """Under ``opentelemetry-instrument``, its providers were configured from the same OTEL_* variables."""
    return installed.any_foreign and "opentelemetry.instrumentation.auto_instrumentation" in sys.modules


def _fresh_readers(readers: Sequence[Any]) -> list[Any]:
    """Drop (with a warning) readers still registered with an earlier MeterProvider: the SDK refuses them."""
    registered = _compat.registered_metric_readers()
    out = []
    for reader in readers:
        if reader in registered:
            logger.warning("otelkit: metric reader %r is already attached to an earlier MeterProvider (a reader "
                           "belongs to one provider for life); pass a new reader to init()", reader)
        else:
            out.append(reader)
    return out


def _configure(settings: Settings, user: tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]],
               announce: bool = True) -> None:
    global _state
    _set_debug(settings.debug)
    logger.debug("configuring with %r (sources: %s)", settings, dict(settings.sources))
    # Before anything is built: the export pipelines, the integrations and Sentry all scrub with it.
    _scrub.configure(settings.scrub.enabled, settings.scrub.extra_patterns)
    installed = _proxy.install()
    old = _state

    if settings.disabled:
        _teardown_integrations()
        _proxy.swap(None, None, None)
        try:
            from otelkit import _logs

            # With settings.disabled it only keeps the record fields (trace_id="" ...), so formats stay safe.
            _logs.install(settings, None)
        except Exception:
            logger.exception("otelkit: setting up log record fields failed")
        _state = _State(settings, user)
        _retire(old, _state)
        _announce(settings, "otelkit: telemetry is disabled (OTEL_SDK_DISABLED); nothing is exported")
        return

    _warn_derived_name(settings)
    new = _build_providers(settings, user, installed)
    _proxy.set_added_processor_wrapper(_scrub_added(settings))
    _proxy.swap(new.tracer_provider, new.meter_provider, new.logger_provider)
    _state = new
    _attach_foreign(installed)
    _retire(old, new)
    _install_parts(settings)
    _install_process_hooks(settings)
    if announce:
        _announce(settings, _describe(settings))


def _install_parts(settings: Settings) -> None:
    """Logs, propagation, instrumentation, Sentry: each isolated, so one failing part never stops the others."""
    from opentelemetry import propagate

    from otelkit import _instrument, _logs, _sentry

    steps: list[tuple[str, Any]] = [
        # A foreign OTel LoggingHandler already ships root records (to the foreign provider, which otelkit
        # extends or defers to): a second handler would send every record twice; keep only the record fields.
        ("logs", lambda: _logs.install(settings, None if _foreign_log_handler() else _proxy.logger_provider(),
                                       **_log_flags(_state))),
        # Before Sentry: its setup may wrap the global propagator to add sentry-trace.
        ("propagators", lambda: propagate.set_global_textmap(_propagator(settings))),
        # Unused entry points are listed lazily, by integration_status(): no metadata scan at start-up.
        ("instrumentation", lambda: _instrument.instrument_all(settings, _proxy.tracer_provider(),
                                                               _proxy.meter_provider(),
                                                               report_unused_entry_points=False)),
        ("sentry", lambda: _sentry.setup(settings)),
    ]
    for name, step in steps:
        try:
            step()
        except ConfigError:
            raise
        except Exception:
            logger.exception("otelkit: setting up %s failed; continuing without it", name)


def _log_flags(state: _State | None) -> dict[str, bool]:
    return {"export": bool(state and state.logs_exported), "console": bool(state and state.logs_to_console)}


def _foreign_log_handler() -> bool:
    """True when someone else's OpenTelemetry LoggingHandler sits on the root logger of a foreign provider."""
    import logging

    installed = _proxy.installed()
    if installed is None or installed.foreign_logger_provider is None:
        return False
    return any(type(h).__name__ == "LoggingHandler" and type(h).__module__.startswith("opentelemetry")
               for h in logging.getLogger().handlers)


def _teardown_integrations() -> None:
    from otelkit import _instrument, _logs

    for name, step in (("instrumentation", _instrument.uninstrument_all), ("logs", _logs.uninstall)):
        try:
            step()
        except Exception:
            logger.exception("otelkit: removing %s failed", name)


def _fallback_noop(settings: Settings, user: tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]]) -> None:
    global _state
    try:
        _proxy.swap(None, None, None)
    except Exception:
        logger.debug("swap to no-op failed", exc_info=True)
    old, _state = _state, _State(settings, user)
    _retire(old, _state)


def _current_span_pipeline() -> Any:
    """Where spans of a foreign TracerProvider go: otelkit's current span processors, or None."""
    state = _state
    if state is None or state.tracer_provider is None:
        return None
    if state.span_pipeline is not None:
        return state.span_pipeline
    if state.owns_tracer_provider:
        return _compat.active_span_processor(state.tracer_provider)
    return None


def _current_log_pipeline() -> Any:
    state = _state
    if state is None or state.logger_provider is None:
        return None
    if state.log_pipeline is not None:
        return state.log_pipeline
    if state.owns_logger_provider:
        return _compat.log_record_pipeline(state.logger_provider)
    return None


def _attach_foreign(installed: _proxy.Installed) -> None:
    """Hook into SDK providers that somebody else installed before otelkit (once), and say so in one message."""
    global _foreign_attached
    if _foreign_attached or not installed.any_foreign:
        return
    _foreign_attached = True
    defer = _defer_to_agent(installed)
    done: list[str] = []
    tp, mp, lp = (installed.foreign_tracer_provider, installed.foreign_meter_provider,
                  installed.foreign_logger_provider)
    if defer:
        done.append("they export what the OTEL_* variables say, so otelkit added no exporters of its own "
                    "(nothing is sent twice); otelkit's integrations, log handler and processors record into them")
    if tp is not None:
        if hasattr(tp, "add_span_processor"):
            tp.add_span_processor(_proxy.ForwardingSpanProcessor(_current_span_pipeline))
            if not defer:
                done.append(f"spans of its {_name(tp)} also go through otelkit's exporters (its sampler and "
                            "resource apply to them)")
        else:
            done.append(f"its {_name(tp)} cannot be extended: spans from trace.get_tracer() are not exported "
                        "by otelkit (integrations set up by otelkit are)")
    if lp is not None:
        if hasattr(lp, "add_log_record_processor"):
            lp.add_log_record_processor(_proxy.ForwardingLogProcessor(_current_log_pipeline))
            if not defer:
                done.append(f"log records of its {_name(lp)} also go through otelkit's exporters")
        else:
            done.append(f"its {_name(lp)} cannot be extended")
    if mp is not None:
        if hasattr(mp, "add_metric_reader"):
            if not defer:
                done.append(f"otelkit's metric readers were added to its {_name(mp)}, and otelkit's meters record "
                            "into it (its resource applies)")
        else:
            done.append(f"its {_name(mp)} cannot take new readers, so metrics.get_meter() keeps using it; "
                        "otelkit's integrations record into otelkit's own meter provider")
    who = "opentelemetry-instrument" if defer else "another library (Sentry, a framework, application code)"
    message = (f"otelkit: OpenTelemetry providers were already installed by {who} before otelkit.init(); "
               f"otelkit kept them instead of overriding: {'; '.join(done)}.")
    logger.debug("%s", message)
    _announce(_state.settings if _state is not None else None, message)


def _name(provider: Any) -> str:
    cls = type(provider)
    return f"{cls.__module__}.{cls.__qualname__}"


def _retire(old: _State | None, new: _State | None) -> None:
    """Shut the replaced pipeline down in the background (bounded), so a re-init never blocks the app.

    The caller's own processors that the new configuration keeps are flushed, not shut down.
    """
    if old is None or old.tracer_provider is None:
        return
    from otelkit import _shutdown

    timeout = old.settings.shutdown_timeout
    kept = new.user if new is not None else ((), (), ())
    dropped = [p for old_list, new_list in zip(old.user[::2], kept[::2], strict=True) for p in old_list
               if not any(p is q for q in new_list)]

    if old.owns_meter_provider:
        try:
            from otelkit import _export

            _export.silence_summaries(old.meter_provider)  # the summary is printed once, at the final shutdown
        except Exception:
            logger.debug("silencing the replaced metric summary failed", exc_info=True)

    def run() -> None:
        try:
            _shutdown.shutdown_providers(*_owned(old), timeout)
            for pipeline in (old.span_pipeline, old.log_pipeline):
                if pipeline is not None:
                    pipeline.shutdown()
            still_used = new.readers_on_foreign if new is not None else ()
            for reader in old.readers_on_foreign:
                if not any(reader is r for r in still_used):
                    old.meter_provider.remove_metric_reader(reader)  # also shuts the reader down
            for processor in dropped:
                processor.shutdown()
        except Exception:
            logger.debug("shutting down replaced providers failed", exc_info=True)

    thread = _start_thread(run, "otelkit-retire")
    if thread is not None:
        _retiring.append(thread)


def _owned(state: _State) -> tuple[Any, Any, Any]:
    """The providers of ``state`` that otelkit may shut down (None for someone else's)."""
    return (state.tracer_provider if state.owns_tracer_provider else None,
            state.meter_provider if state.owns_meter_provider else None,
            state.logger_provider if state.owns_logger_provider else None)


def _start_thread(target: Any, name: str) -> threading.Thread | None:
    """Run ``target`` in a daemon thread; inline when threads cannot start (interpreter shutdown, 3.12+)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    try:
        thread.start()
    except RuntimeError:
        target()
        return None
    return thread


def _join_retiring(deadline: float) -> None:
    while _retiring:
        thread = _retiring[0]
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return
        _retiring.pop(0)


_debug_handler: Any = None


def _set_debug(debug: bool) -> None:
    """``debug=True``: otelkit's own DEBUG records go to stderr (they are never exported)."""
    import logging

    global _debug_handler
    if debug and _debug_handler is None:
        _debug_handler = logging.StreamHandler(sys.stderr)
        _debug_handler.setFormatter(logging.Formatter("otelkit %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(_debug_handler)
        logger.setLevel(logging.DEBUG)
    elif not debug and _debug_handler is not None:
        logger.removeHandler(_debug_handler)
        logger.setLevel(logging.NOTSET)
        _debug_handler = None


def _warn_derived_name(settings: Settings) -> None:
    global _warned_derived_name
    source = settings.sources.get("service_name", "")
    if source.startswith("derived") and not _warned_derived_name:
        _warned_derived_name = True
        warnings.warn(
            f"otelkit: no service name configured; using {settings.service_name!r} ({source}). "
            "Set OTEL_SERVICE_NAME or init(service_name=...).", ConfigWarning, stacklevel=caller_stacklevel())


def _describe(settings: Settings) -> str:
    from otelkit import _export

    describe = getattr(_export, "describe_destinations", None)
    if describe is not None:
        try:
            line = str(describe(settings))
            return f"otelkit: {settings.service_name}: {line.removeprefix('otelkit: ')}"
        except Exception:
            logger.debug("describe_destinations failed", exc_info=True)
    parts = []
    for signal in ("traces", "metrics", "logs"):
        sig = settings.signal(signal)
        exporters = ",".join(sig.exporters)
        if "otlp" in sig.exporters and sig.endpoint:
            exporters += f" {sig.protocol} {mask_url(sig.endpoint)}"
        parts.append(f"{signal} → {exporters}")
    return f"otelkit: {settings.service_name}: " + "; ".join(parts)


def _announce(settings: Settings | None, line: str) -> None:
    """The one line on stderr that says where telemetry goes."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:  # a closed stderr is not the application's problem
        pass


# --- process hooks --------------------------------------------------------------------------------


def _install_process_hooks(settings: Settings) -> None:
    global _atexit_registered, _fork_installed
    if not _atexit_registered:
        atexit.register(_at_exit)
        _atexit_registered = True
    try:
        from otelkit import _fork

        _fork.set_exit_flush_timeout(settings.child_exit_timeout)
    except Exception:
        logger.exception("otelkit: setting the child exit flush deadline failed")
    if not _fork_installed:
        _fork_installed = True
        try:
            from otelkit import _fork

            _fork.install(_reinit_after_fork)
        except Exception:
            logger.exception("otelkit: installing fork hooks failed")
        try:
            from otelkit import _pools

            _pools.install(init_in_child)
        except Exception:
            logger.exception("otelkit: installing the multiprocessing hooks failed")


def _reinit_after_fork() -> None:
    """In a forked child: fresh providers (new service.instance.id, new export threads), same settings.

    The parent's providers are dropped, not shut down: their threads do not exist here, and flushing
    their inherited queues would export the parent's telemetry twice.
    """
    global _state
    try:
        _lock._at_fork_reinit()  # type: ignore[attr-defined]  # another thread may have held it at fork time
    except AttributeError:
        pass
    _retiring.clear()
    state = _state
    if state is None or state.tracer_provider is None:
        return
    try:
        user = (state.user[0], (), state.user[2])  # the parent's readers belong to the parent's provider
        new = _build_providers(state.settings, user, _proxy.installed())
        _proxy.set_added_processor_wrapper(_scrub_added(state.settings))
        _proxy.swap(new.tracer_provider, new.meter_provider, new.logger_provider)
        _state = new
        from otelkit import _logs

        _logs.install(state.settings, _proxy.logger_provider(), **_log_flags(new))
    except Exception:
        logger.exception("otelkit: re-initialising after fork failed; telemetry is off in pid %s", os.getpid())
        _proxy.swap(None, None, None)


def _at_exit() -> None:
    state = _state
    if state is not None:
        shutdown(timeout=state.settings.shutdown_timeout)


# --- shutdown -------------------------------------------------------------------------------------


def shutdown(*, timeout: float | None = None) -> ShutdownReport:
    """Flush and stop traces, metrics, logs and Sentry concurrently under one deadline; never raises.

    ``timeout`` is in seconds (default: the ``shutdown_timeout`` setting, 5 s). Runs at interpreter
    exit too. After it, telemetry is off until the next ``init()``.
    """
    global _state
    try:
        with _lock:
            state = _state
            if state is None:
                return ShutdownReport()
            budget = _budget(timeout, state.settings.shutdown_timeout)
            deadline = time.monotonic() + budget
            _state = None
            _proxy.swap(None, None, None)
            return _shutdown_state(state, budget, deadline)
    except Exception:
        logger.exception("otelkit.shutdown() failed")
        return ShutdownReport()


def _budget(timeout: object, default: float) -> float:
    """The shutdown budget in seconds: ``timeout`` clamped to [0, one week]; not a number -> ``default``.

    Clamped, not passed through: a deadline beyond ``threading.TIMEOUT_MAX`` makes every ``join()``
    raise, and the providers would be dropped without being flushed.
    """
    if timeout is None:
        return default
    try:
        value = float(timeout)  # type: ignore[arg-type]
    except OverflowError:  # an int beyond the float range: "as long as it takes"
        value = math.inf
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value):
        logger.warning("otelkit.shutdown(timeout=%.40r): not a number of seconds; using the shutdown_timeout "
                       "setting (%ss)", timeout, default)
        return default
    return min(max(0.0, value), MAX_DURATION_SECONDS)


def _shutdown_state(state: _State, budget: float, deadline: float) -> ShutdownReport:
    from otelkit import _sentry, _shutdown

    def sentry() -> None:
        try:
            _sentry.shutdown(budget)
        except Exception:
            logger.debug("sentry shutdown failed", exc_info=True)

    sentry_thread = _start_thread(sentry, "otelkit-sentry-shutdown")
    report = ShutdownReport()
    if state.tracer_provider is not None:
        try:
            report = _shutdown.shutdown_providers(*_owned(state), max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("otelkit: shutting down providers failed")

        def extras() -> None:
            # otelkit's pipelines fed by foreign providers, its readers added to a foreign MeterProvider,
            # and the caller's own processors.
            for pipeline in (state.span_pipeline, state.log_pipeline):
                if pipeline is not None:
                    _quietly(pipeline.shutdown)
            for reader in state.readers_on_foreign:
                _quietly(lambda r=reader: state.meter_provider.remove_metric_reader(r))
            for processor in (*state.user[0], *state.user[2]):
                _quietly(lambda p=processor: p.shutdown())

        extras_thread = _start_thread(extras, "otelkit-shutdown-extras")
        if extras_thread is not None:
            extras_thread.join(max(0.0, deadline - time.monotonic()))
    if sentry_thread is not None:
        sentry_thread.join(max(0.0, deadline - time.monotonic()))
    _join_retiring(deadline)
    return report


def _quietly(call: Any) -> None:
    try:
        call()
    except Exception:
        logger.debug("otelkit: shutdown step failed", exc_info=True)


def reset() -> None:
    """Back to a clean, un-initialised process (for tests): shutdown, uninstrument, remove log handlers.

    The proxies stay installed as the OTel globals (they cannot be unset) and point at no-op providers,
    so the next ``init()`` starts from scratch.
    """
    with _lock:
        shutdown(timeout=2.0)
        _teardown_integrations()
        _set_debug(False)
        from otelkit import _sentry

        _sentry._last_status = None  # integration_status() is empty again, as before the first init()
        try:
            from opentelemetry import propagate
            from opentelemetry.baggage.propagation import W3CBaggagePropagator
            from opentelemetry.propagators.composite import CompositePropagator
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

            propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(),
                                                              W3CBaggagePropagator()]))
        except Exception:
            logger.debug("resetting the propagator failed", exc_info=True)
        _join_retiring(time.monotonic() + 2.0)
        _retiring.clear()
