"""Metric export: the OTLP metric exporter, the summary console reader and the Prometheus scrape reader."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from opentelemetry.context import attach, detach, set_value
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from otelkit import _compat
from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_INSTRUMENTATION_KEY
from otelkit._export import batching as _batching
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS
from otelkit._export.transport import MAX_REQUEST_BYTES, OK, RETRY, TOO_LARGE, Sender, _failure_cause
from otelkit._internal_log import logger

if TYPE_CHECKING:
    from otelkit._config import Settings


# ==================================================================================================
# Metrics


def _count_points(data: MetricsData) -> int:
    total = 0
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                total += len(getattr(metric.data, "data_points", ()) or ())
    return total


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _out_of_range(value: Any) -> bool:
    return type(value) is int and not _INT64[0] <= value <= _INT64[1]


def _ints_to_doubles(data: MetricsData) -> MetricsData:
    """A copy of ``data`` where integer values (and exemplar values) beyond int64 are floats."""
    from dataclasses import replace

    def point(p: Any) -> Any:
        changes: dict[str, Any] = {}
        if _out_of_range(getattr(p, "value", None)):
            changes["value"] = float(p.value)
        for name in ("sum", "min", "max"):
            if _out_of_range(getattr(p, name, None)):
                changes[name] = float(getattr(p, name))
        exemplars = getattr(p, "exemplars", None)
        if exemplars and any(_out_of_range(e.value) for e in exemplars):
            changes["exemplars"] = [replace(e, value=float(e.value)) if _out_of_range(e.value) else e
                                    for e in exemplars]
        return replace(p, **changes) if changes else p

    def metric(m: Any) -> Any:
        points = getattr(m.data, "data_points", None)
        if not points:
            return m
        return replace(m, data=replace(m.data, data_points=[point(p) for p in points]))

    return replace(data, resource_metrics=[
        replace(rm, scope_metrics=[replace(sm, metrics=[metric(m) for m in sm.metrics]) for sm in rm.scope_metrics])
        for rm in data.resource_metrics])


class OtlpMetricExporter(MetricExporter):
    """OTLP metric exporter on a :class:`Sender`: one attempt per collection, a short backlog of
    collections that met a transient failure (sent first, in order, when the collector is back),
    points counted in :data:`STATS`, and a pid check so a forked child never exports the parent's
    inherited cumulative state through this exporter."""

    def __init__(self, sender: Sender, *, timeout: float = 10.0, backlog: int = 8,
                 preferred_temporality: dict[type, AggregationTemporality] | None = None) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self._sender = sender
        self._timeout = timeout
        self._backlog: deque[tuple[bytes, int]] = deque()
        self._backlog_max = backlog
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._last_error = ""
        self.target = sender.target
        self._closed = False
        self._out_of_time = False  # the last export stopped at its deadline (not on a failing collector)
        self._sending = False  # a request is out (the oldest backlog entry)
        self._abandoned = False  # the shutdown deadline passed with an export stuck: outcomes are ignored

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self._closed:
            return MetricExportResult.FAILURE
        if os.getpid() != self._pid:
            # Inherited by a forked child: the parent's points are the parent's. init() re-creates the
            # meter provider in the child (see otelkit._fork), which brings a fresh exporter.
            return MetricExportResult.SUCCESS
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        points = _count_points(metrics_data)
        if not points:
            return MetricExportResult.SUCCESS
        deadline = time.monotonic() + min(self._timeout, (timeout_millis or 10_000) / 1000)
        if _batching._shutdown_deadline is not None:
            deadline = min(deadline, _batching._shutdown_deadline)
        try:
            payload = bytes(encode_metrics(metrics_data).SerializeToString())
        except Exception:
            # Usually one integer beyond int64 (counter.add(10**20)): with cumulative temporality it would
            # fail every export for the life of the process. Send such values as doubles, keep the rest.
            try:
                payload = bytes(encode_metrics(_ints_to_doubles(metrics_data)).SerializeToString())
            except Exception as exc:
                STATS.dropped("metrics", _stats.EXPORT_FAILED, points, f"encoding failed: {type(exc).__name__}")
                return MetricExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                self._backlog.append((payload, points))
                while len(self._backlog) > self._backlog_max:
                    _, lost = self._backlog.popleft()
                    STATS.dropped("metrics", _stats.QUEUE_FULL, lost, self._last_error)
                while self._backlog:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._out_of_time = True
                        return MetricExportResult.FAILURE
                    body, count = self._backlog[0]
                    if len(body) > MAX_REQUEST_BYTES:
                        self._backlog.popleft()
                        STATS.dropped("metrics", _stats.TOO_LARGE, count, f"{len(body)} bytes")
                        continue
                    self._sending = True
                    try:
                        result = self._sender.send(body, remaining)
                    finally:
                        self._sending = False
                    if self._abandoned:  # the shutdown accounted for these points meanwhile
                        return MetricExportResult.FAILURE
                    if result.kind == RETRY:
                        self._last_error = result.detail
                        self._out_of_time = time.monotonic() >= deadline - 0.01
                        return MetricExportResult.FAILURE
                    self._out_of_time = False
                    self._backlog.popleft()
                    if result.kind == OK:
                        rejected = min(result.rejected, count)
                        STATS.exported("metrics", count - rejected)
                        if rejected:
                            STATS.dropped("metrics", _stats.REJECTED, rejected, result.detail)
                    else:
                        reason = _stats.TOO_LARGE if result.kind == TOO_LARGE else _stats.EXPORT_FAILED
                        STATS.dropped("metrics", reason, count, f"{self.target}: {result.detail}")
            return MetricExportResult.SUCCESS
        except Exception:
            logger.debug("otelkit metric export failed", exc_info=True)
            return MetricExportResult.FAILURE
        finally:
            detach(token)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def abandon(self) -> None:
        """The shutdown deadline passed while an export is stuck in a request (a hung collector): count what
        the backlog holds now (the request out as unanswered, the rest as ``shutdown_timeout``), ignore the
        stuck export's outcome, and make its request return. Any thread; never raises."""
        if self._abandoned or self._closed and not self._sending:
            return
        self._abandoned = self._closed = True
        backlog = list(self._backlog)  # without the lock: the stuck export holds it
        out = backlog[0][1] if backlog and self._sending else 0
        rest = sum(count for _, count in backlog) - out
        may_have_arrived = self._sender.request_may_have_arrived()
        cause = (f"no answer from the collector at {self.target} before the deadline" if may_have_arrived
                 else f"no connection to the collector at {self.target} before the deadline")
        if out and may_have_arrived:
            STATS.unanswered("metrics", out, cause)
        else:
            rest += out
        if rest:
            STATS.dropped("metrics", _stats.SHUTDOWN_TIMEOUT, rest, cause)
        try:
            self._sender.abort()
        except Exception:
            logger.debug("otelkit: aborting the metric request in flight failed", exc_info=True)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            lost = 0 if self._abandoned else sum(count for _, count in self._backlog)  # abandon() counted them
            self._backlog.clear()
        if lost:
            if self._out_of_time or not self._last_error:
                STATS.dropped("metrics", _stats.SHUTDOWN_TIMEOUT, lost, self._last_error)
            else:  # the last attempt failed fast: the collector is down, the deadline was not the problem
                STATS.dropped("metrics", _stats.EXPORT_FAILED, lost, _failure_cause(self.target, self._last_error))
        self._sender.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._backlog.clear()
        self._sender.reset_after_fork()



_prometheus_servers: dict[tuple[str, int], Any] = {}
# (host, port) whose scrape server could not start in the last build, with the reason (for the destination line).
_prometheus_failed: dict[tuple[str, int], str] = {}
_prometheus_bound: dict[tuple[str, int], int] = {}  # configured (host, port) -> the port really served


class _SummaryAtExitReader(PeriodicExportingMetricReader):
    """Embedded default without a collector: metrics stay in memory and print once, as a summary, at shutdown."""

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(exporter, export_interval_millis=math.inf)
        self.print_summary = True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.print_summary:
            try:
                self.collect(timeout_millis=timeout_millis)
            except Exception:
                logger.debug("otelkit: metric summary failed", exc_info=True)
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


def silence_summaries(meter_provider: Any) -> None:
    """A re-``init()`` retires ``meter_provider``: its in-memory summary must not print then (only at exit)."""
    for reader in _compat.metric_readers(meter_provider):
        if isinstance(reader, _SummaryAtExitReader):
            reader.print_summary = False



def _prometheus_key(settings: Settings) -> tuple[str, int]:
    return settings.prometheus_host, settings.prometheus_port


def _prometheus_reader(settings: Settings) -> Any:
    """The scrape endpoint's reader, or None (and a warning naming the fix) when it cannot serve.

    One port serves one process. With ``OTELKIT_PROMETHEUS_SD_DIR`` set, a process whose port is
    taken (the other workers of a gunicorn/uvicorn/multiprocessing program) serves on a free port
    instead and announces it in a ``file_sd`` file there, so Prometheus scrapes every process; the
    file carries ``service_name`` and ``job`` so the scrape path has the labels of the OTLP path.
    """
    key = host, port = _prometheus_key(settings)
    try:  # the `prometheus` extra: without it the endpoint is off with a reason, never an ImportError
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        _stop_prometheus_servers(keep=None)
        _prometheus_failed[key] = f"{exc.name or exc} is missing: pip install 'otelkit[prometheus]'"
        logger.warning("otelkit: metrics exporter 'prometheus' needs the prometheus extra (%s); "
                       "the prometheus exporter is off", _prometheus_failed[key])
        return None
    sd_dir = settings.prometheus_sd_dir
    _stop_prometheus_servers(keep=key)
    if key not in _prometheus_servers or _prometheus_servers[key][0] != os.getpid():
        server: Any = None
        error: OSError | None = None
        try:
            server = start_http_server(port, addr=host)
        except OSError as exc:
            error = exc
            if sd_dir:  # the configured port is another process's: any free one, announced below
                try:
                    server = start_http_server(0, addr=host)
                except OSError as second:
                    error = second
        if server is None:
            reason = (os.strerror(error.errno) if error.errno else str(error)) if error else "not started"
            _prometheus_failed[key] = reason
            hint = ("" if sd_dir else "; with several processes set OTELKIT_PROMETHEUS_SD_DIR (one port and "
                    "file_sd entry per process) or export over OTLP to a collector")
            logger.warning("otelkit: cannot serve Prometheus metrics on %s:%d (%s); the prometheus exporter "
                           "of process %d is off, its metrics reach no one%s", host, port, error, os.getpid(), hint)
            return None
        _prometheus_failed.pop(key, None)
        _prometheus_servers[key] = (os.getpid(), server)
        _prometheus_bound[key] = _bound_port(server, port)
        if sd_dir:
            _announce_scrape_target(settings, str(sd_dir), host, _prometheus_bound[key])

    class _AnnouncedReader(PrometheusMetricReader):
        """Withdraws the file_sd entry at ``otelkit.shutdown()``: multiprocessing children end with
        ``os._exit`` and never run atexit. A re-init's newer reader keeps it."""

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            if _latest_reader.get(os.getpid()) is self:
                _withdraw_scrape_target(os.getpid())
            super().shutdown(timeout_millis=timeout_millis, **kwargs)

    reader = _AnnouncedReader()
    _latest_reader[os.getpid()] = reader
    return reader


def _bound_port(server: Any, default: int) -> int:
    httpd = server[0] if isinstance(server, tuple) else server
    try:
        return int(httpd.server_address[1])
    except Exception:
        return default


_sd_files: dict[int, str] = {}  # pid -> the file_sd file this process wrote
_latest_reader: dict[int, Any] = {}  # pid -> the prometheus reader of the current init()


def _announce_scrape_target(settings: Settings, directory: str, host: str, port: int) -> None:
    """Write this process's file_sd entry (atomically: Prometheus may read it at any moment)."""
    import json

    address = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    service = settings.service_name
    labels = {"service_name": service, "job": service}
    attrs = settings.resource_attributes
    instance_id = attrs.get("service.instance.id") if hasattr(attrs, "get") else None
    if instance_id:
        labels["service_instance_id"] = str(instance_id)
    path = os.path.join(directory, f"otelkit-{_safe_file_part(service)}-{os.getpid()}.json")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump([{"targets": [target], "labels": {k: v for k, v in labels.items() if v}}], fh)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("otelkit: cannot write the Prometheus file_sd entry %s (%s): Prometheus will not find the "
                       "scrape endpoint http://%s/metrics of process %d", path, exc, target, os.getpid())
        return
    _sd_files[os.getpid()] = path
    import atexit

    atexit.register(_withdraw_scrape_target, os.getpid())


def _withdraw_scrape_target(pid: int) -> None:
    """Remove this process's file_sd entry (at exit, or when its endpoint stops)."""
    if pid != os.getpid():
        return
    path = _sd_files.pop(pid, None)
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def _safe_file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64] or "service"


def _stop_prometheus_servers(keep: tuple[str, int] | None) -> None:
    """Stop this process's scrape servers other than ``keep`` (a re-init moved or dropped the endpoint)."""
    for key, (pid, server) in list(_prometheus_servers.items()):
        if key == keep or pid != os.getpid():
            continue
        del _prometheus_servers[key]
        _withdraw_scrape_target(pid)
        httpd = server[0] if isinstance(server, tuple) else server

        def stop(httpd: Any = httpd, key: tuple[str, int] = key) -> None:
            try:
                httpd.shutdown()  # waits for the serving loop's next poll (up to 0.5 s): not on init()'s thread
                httpd.server_close()
            except Exception:
                logger.debug("otelkit: stopping the Prometheus server on %s:%d failed", *key, exc_info=True)

        threading.Thread(target=stop, name="otelkit-prometheus-stop", daemon=True).start()
