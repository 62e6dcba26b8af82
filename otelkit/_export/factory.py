"""Building the export pipelines, metric readers and destination summary from :class:`Settings`."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from otelkit import _compat
from otelkit._compat import LogRecordExporter
from otelkit._export import lifecycle as _lifecycle  # noqa: F401  (registers the fork callbacks of what is built here)
from otelkit._export import spool as _spool
from otelkit._export import stats as _stats
from otelkit._export.batching import (
    _LIVE_READERS,
    ScrubbingLogProcessor,
    ScrubbingSpanProcessor,
    make_log_processor,
    make_span_processor,
)
from otelkit._export.metrics import (
    OtlpMetricExporter,
    _count_points,
    _prometheus_bound,
    _prometheus_failed,
    _prometheus_key,
    _prometheus_reader,
    _stop_prometheus_servers,
    _SummaryAtExitReader,
)
from otelkit._export.stats import STATS
from otelkit._export.transport import _PATHS, GrpcSender, HttpSender, Sender, mask_url
from otelkit._internal_log import logger

if TYPE_CHECKING:
    from otelkit._config import Settings, SignalSettings


def _scrubber(settings: Settings, name: str) -> Callable[[list[Any]], list[Any]] | None:
    if not settings.scrub.enabled:
        return None
    try:
        from otelkit import _scrub
    except ImportError:
        return None
    fn = getattr(_scrub, name, None)
    return fn if callable(fn) else None



def scrubbed_user_processor(processor: Any, settings: Settings, signal: str) -> Any:
    """``processor`` (the caller's, for ``traces`` or ``logs``) behind scrubbing when ``settings.scrub.enabled``."""
    if signal == "traces":
        scrub = _scrubber(settings, "scrub_spans")
        return ScrubbingSpanProcessor(processor, scrub) if scrub is not None else processor
    scrub = _scrubber(settings, "scrub_log_records")
    return ScrubbingLogProcessor(processor, scrub) if scrub is not None else processor



# ==================================================================================================
# Factories from Settings


def make_sender(signal: str, sig: SignalSettings) -> Sender:
    """The OTLP :class:`Sender` for ``signal`` from its ``SignalSettings``: the one transport of the export
    pipelines, the spool replay and ``otelkit doctor``."""
    endpoint = sig.endpoint
    headers = dict(sig.headers)
    tls = {"certificate": sig.certificate, "client_key": sig.client_key, "client_certificate": sig.client_certificate}
    if sig.protocol == "grpc":
        return GrpcSender(signal, endpoint or DEFAULT_GRPC_ENDPOINT, headers=headers, compression=sig.compression,
                          insecure=sig.insecure, **tls)
    url = endpoint or f"{DEFAULT_HTTP_ENDPOINT}{_PATHS[signal]}"
    return HttpSender(signal, url, headers=headers, compression=sig.compression, proxy=_proxy_for(url), **tls)


def sender_for(settings: Settings, destination: Destination) -> Sender:
    """The :class:`Sender` of an ``otlp`` :class:`Destination` (its protocol and endpoint, the signal's other
    settings: headers, TLS, compression). Sentry's endpoint gets only its own auth header: the headers, TLS
    files and compression of the user's collector are not Sentry's."""
    if destination.sentry:
        from otelkit._sentry import otlp_target

        url, headers = otlp_target(settings.sentry.dsn or "", destination.signal)
        return HttpSender(destination.signal, url, headers=headers, proxy=_proxy_for(url))
    sig: SignalSettings = settings.signal(destination.signal)
    if destination.protocol is not None:
        sig = dataclasses.replace(sig, protocol=destination.protocol, endpoint=destination.endpoint)  # type: ignore[arg-type]
    return make_sender(destination.signal, sig)


def _proxy_for(url: str) -> str | None:
    """The proxy URL that applies to ``url`` (``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme, honouring
    ``NO_PROXY``, as ``urllib`` reads them), or None."""
    from urllib.request import getproxies, proxy_bypass

    try:
        parts = urlsplit(url)
        proxy = getproxies().get(parts.scheme) or None
        if proxy is None or proxy_bypass(parts.hostname or ""):
            return None
        return proxy
    except Exception:
        return None


_PROBE_TTL = 2.0
_probe_cache: tuple[float, str | None] | None = None


def _tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_local_collector(timeout: float = 0.05, *,
                          connect: Callable[[str, int], bool] | None = None) -> str | None:
    """``"grpc"`` if something listens on 127.0.0.1:4317, else ``"http/protobuf"`` for :4318, else None.

    A TCP connect of a few ms each; cached briefly so one ``init()`` probes once. ``connect(host, port)``
    replaces the TCP connect (and the cache): the doctor and tests decide what is listening."""
    global _probe_cache
    now = time.monotonic()
    if connect is None and _probe_cache is not None and now - _probe_cache[0] < _PROBE_TTL:
        return _probe_cache[1]
    is_open = connect or (lambda host, port: _tcp_open(host, port, timeout))
    found: str | None = None
    for port, protocol in ((4317, "grpc"), (4318, "http/protobuf")):
        if is_open("127.0.0.1", port):
            found = protocol
            break
    if connect is None:
        _probe_cache = (now, found)
    return found


DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
LOCAL_GRPC_ENDPOINT = "http://127.0.0.1:4317"
LOCAL_HTTP_ENDPOINT = "http://127.0.0.1:4318"


@dataclass(frozen=True)
class Destination:
    """Where one signal goes: ``kind`` otlp | console | prometheus | memory; for otlp, the protocol, the full
    endpoint (HTTP: with ``/v1/<signal>``) and ``source``, where that endpoint came from (a variable name,
    ``argument``, ``default``, or ``auto (collector on 127.0.0.1:<port>)``). ``auto``: chosen by the embedded
    default (``exporters=auto`` and no endpoint). ``sentry``: Sentry's OTLP endpoint (``OTELKIT_SENTRY_OTLP``),
    one more destination next to the others; its auth header is made from the DSN by :func:`sender_for`."""

    signal: str
    kind: str
    protocol: str | None = None
    endpoint: str | None = None
    auto: bool = False
    source: str = "default"
    sentry: bool = False


def resolve_exporters(settings: Settings, signal: str, *,
                      probe: Callable[[], str | None] | None = None) -> list[Destination]:
    """Where ``signal`` goes: the configured exporters, with ``auto`` resolved by ``probe`` (the local TCP
    probe). The one resolution the pipelines, the start-up line and ``otelkit doctor`` share."""
    sig: SignalSettings = settings.signal(signal)
    out: list[Destination] = []
    for name in sig.exporters:
        if name == "none":
            continue
        if name == "auto":
            protocol = probe() if probe is not None else probe_local_collector()
            if protocol == "grpc":
                out.append(Destination(signal, "otlp", "grpc", LOCAL_GRPC_ENDPOINT, auto=True,
                                       source="auto (collector on 127.0.0.1:4317)"))
            elif protocol is not None:
                out.append(Destination(signal, "otlp", protocol, f"{LOCAL_HTTP_ENDPOINT}{_PATHS[signal]}",
                                       auto=True, source="auto (collector on 127.0.0.1:4318)"))
            elif settings.console_on_auto:
                out.append(Destination(signal, "memory" if signal == "metrics" else "console", auto=True))
            continue
        if name == "otlp":
            if sig.endpoint:
                endpoint, source = sig.endpoint, str(settings.sources.get(f"{signal}.endpoint", "default"))
            elif sig.protocol == "grpc":
                endpoint, source = DEFAULT_GRPC_ENDPOINT, "default"
            else:
                endpoint, source = f"{DEFAULT_HTTP_ENDPOINT}{_PATHS[signal]}", "default"
            out.append(Destination(signal, "otlp", sig.protocol, endpoint, source=source))
        elif name in ("console", "prometheus"):
            out.append(Destination(signal, name))
        else:
            logger.warning("otelkit: unknown %s exporter %r ignored", signal, name)
    sentry = settings.sentry
    if sentry.dsn and signal in sentry.otlp:
        from otelkit._sentry import otlp_target

        # Whatever the signal's exporters say (even none): OTELKIT_SENTRY_OTLP is its own switch.
        out.append(Destination(signal, "otlp", "http/protobuf", otlp_target(sentry.dsn, signal)[0],
                               source=str(settings.sources.get("sentry.otlp", "OTELKIT_SENTRY_OTLP")), sentry=True))
    return out


def _batch_kwargs(settings: Settings, group: str, signal: str) -> dict[str, Any]:
    batch = settings.bsp if group == "bsp" else settings.blrp
    return {
        "max_queue_size": batch.max_queue_size,
        "max_export_batch_size": batch.max_export_batch_size,
        "schedule_delay": batch.schedule_delay,
        "export_timeout": min(batch.export_timeout, settings.signal(signal).timeout),
    }


def make_spool(settings: Settings, signal: str) -> _spool.SpoolStore | None:
    """The disk spool of ``signal`` when ``settings.spool_dir`` is set (spans and logs; see :mod:`.spool`)."""
    directory = settings.spool_dir
    if not directory:
        return None
    return _spool.SpoolStore(directory, signal, settings.spool_max_bytes)


def _console(name: str, fallback: Callable[[], Any]) -> Any:
    try:
        from otelkit import _console
    except ImportError:
        return fallback()
    factory = getattr(_console, name, None)
    return factory() if callable(factory) else fallback()


def build_span_processors(settings: Settings) -> list[Any]:
    """Span processors for ``settings.traces.exporters`` (OTLP: :class:`OtelkitSpanProcessor`)."""
    processors: list[Any] = []
    kwargs = _batch_kwargs(settings, "bsp", "traces")
    scrub = _scrubber(settings, "scrub_spans")
    for dest in resolve_exporters(settings, "traces"):
        if dest.kind == "otlp":
            sender = sender_for(settings, dest)
            # The spool replays to the collector's endpoint: Sentry's pipeline has none (its queue and retries only).
            spool = None if dest.sentry else make_spool(settings, "traces")
            processors.append(make_span_processor(sender, scrub=scrub, spool=spool, **kwargs))
        elif dest.kind == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = _console("TreeConsoleSpanExporter", ConsoleSpanExporter)
            processors.append(make_span_processor(exporter, scrub=scrub, **{**kwargs, "schedule_delay": 0.2}))
        else:
            logger.warning("otelkit: %s is not an exporter for traces; ignored", dest.kind)
    return processors


def build_log_processors(settings: Settings) -> list[Any]:
    """Log record processors for ``settings.logs.exporters``."""
    processors: list[Any] = []
    kwargs = _batch_kwargs(settings, "blrp", "logs")
    scrub = _scrubber(settings, "scrub_log_records")
    for dest in resolve_exporters(settings, "logs"):
        if dest.kind == "otlp":
            sender = sender_for(settings, dest)
            spool = None if dest.sentry else make_spool(settings, "logs")
            processors.append(make_log_processor(sender, scrub=scrub, spool=spool, **kwargs))
        elif dest.kind == "console":
            from otelkit._compat import ConsoleLogRecordExporter, SimpleLogRecordProcessor

            # Printing is local and quick: print as it happens, in order with the application's output.
            exporter = _CountingLogExporter(_console("ConsoleLogExporter", ConsoleLogRecordExporter))
            # The console is a destination like OTLP: it prints a scrubbed copy (the record is shared).
            console: Any = SimpleLogRecordProcessor(exporter)
            processors.append(ScrubbingLogProcessor(console, scrub) if scrub is not None else console)
        else:
            logger.warning("otelkit: %s is not an exporter for logs; ignored", dest.kind)
    return processors




class _CountingLogExporter(LogRecordExporter):
    """A log record exporter (the console) whose records count as exported, like the OTLP pipeline's."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, batch: Sequence[Any]) -> Any:
        try:
            result = self._exporter.export(batch)
        except Exception as exc:
            STATS.dropped("logs", _stats.EXPORT_FAILED, len(batch), f"{type(self._exporter).__name__}: {exc!r}")
            raise
        if getattr(result, "name", "SUCCESS") == "SUCCESS":
            STATS.exported("logs", len(batch))
        else:
            STATS.dropped("logs", _stats.EXPORT_FAILED, len(batch), type(self._exporter).__name__)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self._exporter, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True


class _CountingMetricExporter(MetricExporter):
    """A metric exporter (console, in-memory summary) whose points count as exported."""

    def __init__(self, exporter: MetricExporter) -> None:
        temporality, aggregation = _compat.exporter_preferences(exporter)
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)
        self._exporter = exporter

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        result = self._exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        points = _count_points(metrics_data)
        if result == MetricExportResult.SUCCESS:
            STATS.exported("metrics", points)
        else:
            STATS.dropped("metrics", _stats.EXPORT_FAILED, points, type(self._exporter).__name__)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._exporter.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._exporter.shutdown(timeout_millis=timeout_millis, **kwargs)



def build_metric_readers(settings: Settings) -> list[Any]:
    """Metric readers for ``settings.metrics.exporters`` (OTLP periodic, console, prometheus, memory)."""
    readers: list[Any] = []
    try:
        _stats.register_self_metrics()
    except Exception:
        logger.debug("otelkit: registering self-metrics failed", exc_info=True)
    interval = settings.metric_export_interval
    timeout = settings.metric_export_timeout
    destinations = resolve_exporters(settings, "metrics")
    if not any(dest.kind == "prometheus" for dest in destinations):
        _stop_prometheus_servers(keep=None)
    for dest in destinations:
        reader: Any
        if dest.kind == "otlp":
            exporter = OtlpMetricExporter(sender_for(settings, dest), timeout=min(timeout, settings.metrics.timeout))
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000,
                                                   export_timeout_millis=timeout * 1000)
        elif dest.kind == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            reader = PeriodicExportingMetricReader(
                _CountingMetricExporter(_console("ConsoleMetricExporter", ConsoleMetricExporter)),
                export_interval_millis=interval * 1000)
        elif dest.kind == "memory":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter as SdkConsoleMetricExporter

            reader = _SummaryAtExitReader(
                _CountingMetricExporter(_console("ConsoleMetricExporter", SdkConsoleMetricExporter)))
        elif dest.kind == "prometheus":
            reader = _prometheus_reader(settings)
            if reader is None:
                continue
        else:
            continue
        _LIVE_READERS.add(reader)
        readers.append(reader)
    return readers



def describe_destinations(settings: Settings) -> str:
    """Where each signal goes, for the one line ``init()`` writes on stderr (without the ``otelkit:`` prefix)."""
    groups: dict[str, list[str]] = {}
    auto_console = False
    for signal in _stats.SIGNALS:
        names = []
        for dest in resolve_exporters(settings, signal):
            if dest.kind == "otlp":
                proto = "gRPC" if dest.protocol == "grpc" else "HTTP"
                endpoint = mask_url(dest.endpoint or "")
                if dest.protocol != "grpc":
                    endpoint = endpoint.removesuffix(_PATHS[signal])
                if dest.sentry:
                    names.append(f"Sentry OTLP {urlsplit(dest.endpoint or '').netloc}")
                    continue
                names.append(f"OTLP/{proto} {endpoint}" + (" (local collector found)" if dest.auto else ""))
            elif dest.kind == "console":
                names.append("this terminal")
                auto_console = auto_console or dest.auto
            elif dest.kind == "memory":
                names.append("an in-memory summary")
                auto_console = auto_console or dest.auto
            elif dest.kind == "prometheus":
                key = host, port = _prometheus_key(settings)
                if key in _prometheus_failed:  # build_metric_readers could not bind it: say so, claim nothing
                    names.append(f"no Prometheus scrape endpoint ({host}:{port}: {_prometheus_failed[key]})")
                else:
                    port = _prometheus_bound.get(key, port)
                    names.append(f"Prometheus scrape endpoint http://{host}:{port}/metrics")
        where = " + ".join(names) if names else "nowhere (exporter none)"
        groups.setdefault(where, []).append(signal)
    text = "; ".join(f"{', '.join(signals)} -> {where}" for where, signals in groups.items())
    line = text
    if auto_console:
        line += (" (no collector on 127.0.0.1:4317/4318; set OTEL_EXPORTER_OTLP_ENDPOINT to send telemetry to one)")
    return line
