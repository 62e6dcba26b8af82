"""``otelkit doctor``: diagnose a telemetry setup in one command.

Each check yields :class:`Check` results (ok / warn / fail / skip / info) with
what to do about anything that is not ok:

1. the effective configuration (``otelkit._config.resolve()``), secrets
   masked, with where each value came from; a configuration error is a failure
   and the rest of the checks continue on the lenient (``strict=False``) reading;
2. every configured OTLP endpoint: TCP reachability, then a real export (a test
   span for traces, a test log record for logs, an empty request for metrics)
   with a short deadline, reporting exactly what the collector answered;
3. instrumentations that would be active or skipped, and why;
4. the Sentry DSN (parsed; then an empty envelope to check the key);
5. fork-model hazards (gunicorn ``--preload``, uWSGI without lazy-apps/threads);
6. with the bundled stack running, whether the test span can be queried in Tempo.

The exit status is 1 when any check failed, else 0. ``--json`` prints the same
as one JSON document.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import http
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from otelkit._version import __version__

if TYPE_CHECKING:
    from otelkit._config import Settings, SignalSettings
    from otelkit._export.factory import Destination
    from otelkit._export.transport import Sender, SendResult

Status = Literal["ok", "warn", "fail", "skip", "info"]

SIGNALS = ("traces", "metrics", "logs")
DEFAULT_TEMPO_URL = "http://127.0.0.1:3200"


@dataclass
class Check:
    """One verdict of the doctor."""

    section: str
    name: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """Everything the doctor found; ``exit_code`` is 1 when something is broken."""

    checks: list[Check] = field(default_factory=list)
    config: list[dict[str, str]] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "otelkit_version": __version__,
            "python": platform.python_version(),
            "verdict": "broken" if self.failures else "healthy",
            "exit_code": self.exit_code,
            "configuration": self.config,
            "checks": [asdict(c) for c in self.checks],
        }


# --------------------------------------------------------------------------------------------------
# Entry point


def run_doctor(args: argparse.Namespace) -> int:
    """``otelkit doctor``: print the report and return the exit status."""
    report = diagnose(timeout=args.timeout, tempo_url=args.tempo_url, send=not args.no_send,
                      config_file=getattr(args, "config", None))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        color = sys.stdout.isatty() and not args.no_color and not os.environ.get("NO_COLOR")
        print(render_text(report, color=color))
    return report.exit_code


def diagnose(*, timeout: float = 3.0, tempo_url: str | None = None, send: bool = True,
             environ: Mapping[str, str] | None = None, config_file: str | None = None) -> Report:
    """Run every check against the current environment and return the report.

    ``config_file``: check this declarative configuration file as if ``OTEL_CONFIG_FILE`` named it."""
    env = os.environ if environ is None else environ
    report = Report()
    settings = _check_config(report, config_file)
    trace_id: str | None = None
    accepted_by: str | None = None
    if settings is not None:
        trace_id, accepted_by = _check_endpoints(report, settings, timeout=timeout, send=send)
        _check_spool(report, settings)
        _check_instrumentations(report, settings)
        _check_sentry(report, settings, timeout=timeout, send=send)
    _check_fork_model(report, env)
    _check_tempo(report, trace_id, accepted_by, tempo_url or env.get("OTELKIT_TEMPO_URL") or None,
                 timeout=timeout)
    return report


# --------------------------------------------------------------------------------------------------
# 1. Configuration




def _check_config(report: Report, config_file: str | None = None) -> Any | None:
    try:
        from otelkit import _config
    except ImportError as exc:  # only in a broken install
        report.add(Check("config", "configuration", "fail", f"cannot import otelkit._config: {exc}",
                         "reinstall otelkit: pip install --force-reinstall otelkit"))
        return None
    settings: Any
    fix = ("fix the variable named above (see the configuration table in the README); "
           "OTELKIT_STRICT=false makes init() warn and use the default instead of raising")
    given: dict[str, Any] = {"config_file": config_file} if config_file else {}
    try:
        settings = _config.resolve(**given)
    except _config.ConfigError as exc:
        # The strict read stops at the first bad value; the lenient read warns once per bad value,
        # so every bad variable is listed in one run (the user does not fix them one run at a time).
        first = str(exc)
        problems: list[str] = []
        try:
            with _quiet_logging(), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                settings = _config.resolve(strict=False, **given)
            problems = [_config_problem(w.message) for w in caught
                        if isinstance(w.message, _config.ConfigWarning)]
        except Exception as lenient_exc:
            report.add(Check("config", "configuration", "fail", first, fix))
            report.add(Check("config", "lenient configuration", "fail",
                             f"even strict=False cannot read the configuration: {lenient_exc}"))
            return None
        if not any(problem.startswith(first) for problem in problems):
            problems.insert(0, first)
        for problem in problems:
            report.add(Check("config", "configuration", "fail", problem, fix))
    else:
        report.add(Check("config", "configuration", "ok", f"the configuration file {settings.config_file} is valid"
                         if settings.config_file else "the OTEL_* / OTELKIT_* configuration is valid"))
    report.config = flatten_settings(settings)
    for row in report.config:
        if row["name"] == "config_file" and config_file and row["source"] == "argument":
            row["source"] = "otelkit doctor --config"
    if settings.config_file:
        _check_config_file(report, settings)
    if report.failures:
        for row in report.config:
            if row["name"] == "strict":
                row["source"] = "read leniently by the doctor: invalid values are shown at their defaults"
    sources = settings.sources
    # A set but invalid OTEL_SERVICE_NAME is already a FAIL above; "not set" would be wrong.
    if str(sources.get("service_name", "")).startswith("derived") and settings.config_file:
        report.add(Check("config", "service name", "warn",
                         f"the configuration file sets no service.name: derived {settings.service_name!r} "
                         f"({sources['service_name']})",
                         "add resource.attributes: [{name: service.name, value: ...}] to the file"))
    elif str(sources.get("service_name", "")).startswith("derived") and "OTEL_SERVICE_NAME" not in os.environ:
        report.add(Check("config", "service name", "warn",
                         f"OTEL_SERVICE_NAME is not set: every program derives its own service.name (here "
                         f"{settings.service_name!r}, {sources['service_name']})",
                         "set OTEL_SERVICE_NAME (or init(service_name=...)) so your services are named on purpose"))
    if settings.disabled:
        report.add(Check("config", "sdk", "warn", "OTEL_SDK_DISABLED=true: otelkit.init() sets up nothing",
                         "unset OTEL_SDK_DISABLED to export telemetry"))
    return settings


def _check_config_file(report: Report, settings: Settings) -> None:
    """With a declarative configuration file: what it set, which variables it made ignored, and no propagator."""
    from otelkit._config import PARAMS

    prefix = f"OTEL_CONFIG_FILE {settings.config_file}:"
    from_file = sorted(name for name, source in settings.sources.items() if str(source).startswith(prefix))
    report.add(Check("config", "configuration file", "info",
                     f"{len(from_file)} settings come from {settings.config_file} (source column); the rest are "
                     "otelkit's defaults", details={"file": settings.config_file, "settings": from_file}))
    ignored = sorted({var for p in PARAMS if p.field != "config_file"
                      for var in (*p.env, *((p.signal_env.replace("{SIGNAL}", s.upper()) for s in SIGNALS)
                                            if p.signal_env else ()))
                      if os.environ.get(var, "").strip()})
    if ignored:
        report.add(Check("config", "ignored variables", "warn",
                         f"OTEL_CONFIG_FILE is used, so these variables are ignored (the spec): {', '.join(ignored)}",
                         "move them into the file (a value may reference the environment: ${VAR} or "
                         "${VAR:-default}), or unset them"))
    if str(settings.sources.get("propagators", "")).startswith(f"{prefix}propagator (omitted"):
        report.add(Check("config", "propagators", "warn",
                         "the file has no propagator section: no trace context is propagated (the spec's default)",
                         "add propagator: {composite: [{tracecontext: }, {baggage: }]} to the file"))


def _config_problem(message: Warning) -> str:
    """A ``ConfigWarning`` as a doctor line: ``VAR='value' is not valid: expected ...; using the default``."""
    text = str(message)
    return text.removeprefix("otelkit: ")


def flatten_settings(settings: Settings) -> list[dict[str, str]]:
    """``[{"name", "value", "source"}]`` for every setting, secrets masked (``Settings.as_dict``)."""
    sources: Mapping[str, str] = settings.sources
    flat: Mapping[str, Any] = settings.as_dict(masked=True)
    return [{"name": name, "value": _show(value), "source": str(sources.get(name, "default"))}
            for name, value in flat.items()]


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, (tuple, list, frozenset, set)):
        return ",".join(str(v) for v in (sorted(value) if isinstance(value, (set, frozenset)) else value)) or "-"
    return str(value)


def mask_url(url: str) -> str:
    """The URL with its secret user-info replaced by ``***`` (DSN keys, basic-auth passwords)."""
    from otelkit._config import mask_url as config_mask_url

    return config_mask_url(url) or url


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


# --------------------------------------------------------------------------------------------------
# 2. Endpoints


@dataclass(frozen=True)
class Target:
    """Where one signal goes: an ``otlp`` destination of :func:`otelkit._export.resolve_exporters`."""

    destination: Destination

    @property
    def signal(self) -> str:
        return self.destination.signal

    @property
    def protocol(self) -> str:
        return self.destination.protocol or "grpc"

    @property
    def url(self) -> str:
        return self.destination.endpoint or ""

    @property
    def source(self) -> str:
        return self.destination.source

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url if "://" in self.url else f"//{self.url}")
        default = 443 if parts.scheme == "https" else (4317 if self.protocol == "grpc" else 4318)
        return parts.hostname or "localhost", parts.port or default


def targets(settings: Settings, *, probe: Callable[[str, int], bool] | None = None) -> tuple[list[Target], list[Check]]:
    """The OTLP destinations ``init()`` would use (the export factory's own resolution), and notes on the
    signals that have none. ``probe(host, port)`` says whether a local collector listens (default: TCP)."""
    from otelkit._export.factory import probe_local_collector, resolve_exporters

    connect = probe or (lambda host, port: tcp_connect(host, port, 0.05) == "ok")
    found: list[Target] = []
    notes: list[Check] = []
    for signal in SIGNALS:
        sig: SignalSettings = settings.signal(signal)
        if signal == "metrics" and "prometheus" in sig.exporters:
            extra = (("opentelemetry.exporter.prometheus", "opentelemetry-exporter-prometheus"),
                     ("prometheus_client", "prometheus-client"))
            missing = [dist for module, dist in extra if importlib.util.find_spec(module) is None]
            if missing:  # an extra: its absence is a finding with the fix, not an ImportError at init()
                notes.append(Check("endpoints", "prometheus", "fail",
                                   f"metrics exporter 'prometheus' needs {', '.join(missing)}: no scrape endpoint",
                                   "pip install 'otelkit[prometheus]'"))
        with _quiet_logging():
            destinations = resolve_exporters(settings, signal, probe=lambda: probe_local_collector(connect=connect))
        otlp = [Target(d) for d in destinations if d.kind == "otlp"]
        if otlp:
            found.extend(otlp)
        elif "auto" in sig.exporters:
            # The embedded default: a collector on the standard local ports, else the terminal.
            notes.append(Check(
                "endpoints", signal, "info",
                "embedded default: no endpoint configured and no collector on 127.0.0.1:4317/4318, so "
                + ("metrics stay in memory for the terminal summary" if signal == "metrics"
                   else f"{signal} print to the terminal"),
                "set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://collector:4317) or start the bundled stack"))
        else:
            notes.append(Check("endpoints", signal, "info",
                               f"exporters: {', '.join(sig.exporters) or 'none'} (no OTLP endpoint to check)",
                               details={"exporters": list(sig.exporters)}))
    return found, notes


def tcp_connect(host: str, port: int, timeout: float) -> str:
    """``"ok"``, ``"refused"``, ``"timeout"`` or ``"dns: ..."``/``"error: ..."`` for one bounded connect."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "ok"
    except ConnectionRefusedError:
        return "refused"
    except socket.gaierror as exc:
        return f"dns: {exc.strerror or exc}"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def _check_endpoints(report: Report, settings: Settings, *, timeout: float,
                     send: bool) -> tuple[str | None, str | None]:
    found, notes = targets(settings)
    for note in notes:
        report.add(note)
    service = settings.service_name or "otelkit-doctor"
    # One trace for the whole run: the test log record carries the test span's IDs.
    ids = (secrets.token_hex(16), secrets.token_hex(8))
    # Concurrently: three signals on one hung collector cost one timeout, not three.
    with ThreadPoolExecutor(max_workers=max(1, len(found)), thread_name_prefix="otelkit-doctor") as pool:
        checks = list(pool.map(lambda t: _check_target(settings, t, service, ids, timeout=timeout, send=send),
                               found))
    trace_id: str | None = None
    accepted_by: str | None = None
    for target, check in zip(found, checks, strict=True):
        report.add(check)
        if target.signal == "traces" and check.status == "ok" and check.details.get("trace_id"):
            trace_id, accepted_by = check.details["trace_id"], target.url
    return trace_id, accepted_by


def _check_target(settings: Settings, target: Target, service: str, ids: tuple[str, str], *, timeout: float,
                  send: bool) -> Check:
    label = f"{target.signal} -> {mask_url(target.url)} ({target.protocol})"
    details = {"signal": target.signal, "endpoint": mask_url(target.url), "protocol": target.protocol,
               "source": target.source}
    host, port = target.address
    reach = tcp_connect(host, port, timeout)
    if reach != "ok":
        return Check("endpoints", label, "fail", _unreachable_text(reach, host, port), _unreachable_fix(target),
                     {**details, "tcp": reach})
    if not send:
        return Check("endpoints", label, "ok", f"{host}:{port} accepts TCP connections (no test data sent)",
                     details={**details, "tcp": "ok"})
    outcome = send_test(settings, target, service, timeout=timeout, ids=ids)
    details.update(outcome.details)
    if outcome.ok:
        return Check("endpoints", label, "ok", outcome.summary, details=details)
    return Check("endpoints", label, "fail", outcome.summary, outcome.fix, details)


def _unreachable_text(reach: str, host: str, port: int) -> str:
    if reach == "refused":
        return f"connection refused: nothing listens on {host}:{port}"
    if reach == "timeout":
        return f"no TCP answer from {host}:{port} (filtered, or the host is down)"
    return f"cannot connect to {host}:{port}: {reach}"


def _unreachable_fix(target: Target) -> str:
    if target.destination.sentry:
        return "check the host of the Sentry DSN (SENTRY_DSN), or set OTELKIT_SENTRY_OTLP=off"
    variable = target.source if target.source.startswith("OTEL_") else "OTEL_EXPORTER_OTLP_ENDPOINT"
    return (f"start the collector, or point {variable} at a running one "
            "(the bundled stack listens on 127.0.0.1:4317 gRPC / 4318 HTTP)")


@dataclass
class SendOutcome:
    ok: bool
    summary: str
    fix: str = ""
    trace_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def send_test(settings: Settings, target: Target, service: str, *, timeout: float,
              ids: tuple[str, str] | None = None) -> SendOutcome:
    """Export one real test item to ``target`` through the exporters' own transport and say what the
    collector answered.

    The export runs in a daemon thread joined with a deadline, so even a
    transport that ignores its own timeout cannot hang the doctor.
    """
    from otelkit._export.factory import sender_for

    trace_id, span_id = ids or (secrets.token_hex(16), secrets.token_hex(8))
    payload = _test_request(target.signal, service, trace_id, span_id).SerializeToString()
    result: list[SendOutcome] = []

    def work() -> None:
        try:
            sender = sender_for(settings, target.destination)
            try:
                result.append(_outcome(target, sender, sender.send(payload, timeout), timeout))
            finally:
                sender.close()
        except Exception as exc:
            result.append(SendOutcome(False, f"export failed: {type(exc).__name__}: {exc}"))

    started = time.monotonic()
    thread = threading.Thread(target=work, name="otelkit-doctor-send", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    elapsed_ms = round((time.monotonic() - started) * 1000)
    if not result:
        return SendOutcome(False, f"hung: the collector accepted the TCP connection but did not answer within "
                                  f"{timeout:g}s", _hung_fix(target), details={"elapsed_ms": elapsed_ms})
    outcome = result[0]
    outcome.details["elapsed_ms"] = elapsed_ms
    if outcome.ok:
        what = {"traces": "test span", "logs": "test log record", "metrics": "empty metrics request"}[target.signal]
        outcome.summary = f"{what} accepted in {elapsed_ms} ms" + (
            f" (trace_id {trace_id})" if target.signal == "traces" else "") + outcome.summary
        if target.signal == "traces":
            outcome.trace_id = trace_id
            outcome.details["trace_id"] = trace_id
    return outcome


def _outcome(target: Target, sender: Sender, result: SendResult, timeout: float) -> SendOutcome:
    """A :class:`SendResult` of the shared transport as the doctor's verdict: the exact HTTP status or gRPC
    code, and what to do about it."""
    from otelkit._export.transport import OK, TLS

    grpc = target.protocol == "grpc"
    if result.timed_out:
        return SendOutcome(False, f"hung: connected, but no {'gRPC' if grpc else 'HTTP'} answer within {timeout:g}s"
                                  f" ({result.detail})", _hung_fix(target), details={"error": "timeout"})
    if result.cause == TLS:
        return SendOutcome(False, f"TLS failed: {result.detail.removeprefix('TLS error: ')}",
                           "check OTEL_EXPORTER_OTLP_CERTIFICATE, or use http:// for a plaintext collector")
    if grpc and result.code:
        details: dict[str, Any] = {"grpc_status": result.code}
        if result.kind == OK:
            if result.rejected or result.detail:
                return SendOutcome(False, f"gRPC OK{_rejected_text(result)}",
                                   "read the collector's log for why it rejected data", details=details)
            # A schemeless endpoint: OTEL_EXPORTER_OTLP_INSECURE decided (as for the exporters).
            note = "" if "://" in target.url else f" (no scheme in the endpoint: sent to {sender.target})"
            return SendOutcome(True, note, details=details)
        text = result.detail.removeprefix(f"gRPC {result.code}").removeprefix(": ")
        return SendOutcome(False, f"the collector answered gRPC {result.code}: {text}",
                           _GRPC_FIXES.get(result.code, "read the collector's log for the reason"), details=details)
    if not grpc and result.code:
        status = int(result.code)
        if result.kind == OK:
            if result.rejected or result.detail:
                return SendOutcome(False, f"HTTP {status}{_rejected_text(result)}",
                                   "read the collector's log for why it rejected data", details={"http_status": status})
            return SendOutcome(True, "", details={"http_status": status})
        reason = http.HTTPStatus(status).phrase if status in http.HTTPStatus._value2member_map_ else ""
        text = result.detail.removeprefix(f"HTTP {status}").removeprefix(": ")
        summary = f"the collector answered HTTP {status}" + (f" {reason}" if reason else "") + (
            f": {text}" if text else "")
        return SendOutcome(False, summary, _http_fix(status, target), details={"http_status": status})
    return SendOutcome(False, f"request failed: {result.detail}", _unreachable_fix(target),
                       details={"error": result.detail})


def _rejected_text(result: SendResult) -> str:
    return f"; the collector rejected {result.rejected} item(s): {result.detail or 'no reason given'}"


def _hung_fix(target: Target) -> str:
    if target.protocol == "grpc":
        return ("something accepts connections but does not speak OTLP/gRPC: check the port is the collector's "
                "gRPC receiver (4317; 4318 is HTTP: set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf), or that the "
                "collector is not overloaded")
    return ("something accepts connections but does not answer HTTP: check the port is the collector's OTLP/HTTP "
            "receiver (4318; 4317 is gRPC: set OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or that it is not overloaded")


def _test_request(signal: str, service: str, trace_id: str, span_id: str) -> Any:
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    resource = resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service)),
        common_pb2.KeyValue(key="telemetry.sdk.name", value=common_pb2.AnyValue(string_value="otelkit-doctor")),
    ])
    scope = common_pb2.InstrumentationScope(name="otelkit.doctor", version=__version__)
    now = time.time_ns()
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        span = trace_pb2.Span(
            trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id), name="otelkit doctor test span",
            kind=trace_pb2.Span.SPAN_KIND_INTERNAL, start_time_unix_nano=now - 1_000_000, end_time_unix_nano=now,
            attributes=[common_pb2.KeyValue(key="otelkit.doctor", value=common_pb2.AnyValue(bool_value=True))])
        return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
            resource=resource, scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=[span])])])
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.logs.v1 import logs_pb2

        record = logs_pb2.LogRecord(
            time_unix_nano=now, observed_time_unix_nano=now, severity_number=logs_pb2.SEVERITY_NUMBER_INFO,
            severity_text="INFO", body=common_pb2.AnyValue(string_value="otelkit doctor test log record"),
            trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id))
        return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
            resource=resource, scope_logs=[logs_pb2.ScopeLogs(scope=scope, log_records=[record])])])
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    # An empty request proves reachability, protocol and authentication without adding a series.
    return metrics_service_pb2.ExportMetricsServiceRequest()


def _http_fix(code: int, target: Target) -> str:
    if code in (401, 403):
        return "the collector refused the credentials: check OTEL_EXPORTER_OTLP_HEADERS (e.g. authorization=Bearer ...)"
    if code == 404:
        return (f"no OTLP receiver at {urlsplit(target.url).path}: HTTP endpoints end in /v1/{target.signal}; "
                "with OTEL_EXPORTER_OTLP_ENDPOINT give only the base URL (otelkit appends the path)")
    if code == 415:
        return "the collector does not accept protobuf here: check the endpoint is an OTLP/HTTP receiver"
    if code in (429, 503):
        return "the collector is overloaded or starting: retry later, or give it more resources"
    return "read the collector's log for the reason"


_GRPC_FIXES = {
    "UNAUTHENTICATED": "the collector refused the credentials: check OTEL_EXPORTER_OTLP_HEADERS",
    "PERMISSION_DENIED": "the collector refused the credentials: check OTEL_EXPORTER_OTLP_HEADERS",
    "UNIMPLEMENTED": "no OTLP/gRPC service there: is this the HTTP port (4318)? set OTEL_EXPORTER_OTLP_PROTOCOL="
                     "http/protobuf, or use the gRPC port (4317)",
    "UNAVAILABLE": "the collector is unreachable, restarting or speaks another protocol (4318 is HTTP: set "
                   "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf); for TLS check OTEL_EXPORTER_OTLP_CERTIFICATE / "
                   "use http:// for a plaintext collector",
    "RESOURCE_EXHAUSTED": "the collector is overloaded (memory limiter) or the request too large",
}


# --------------------------------------------------------------------------------------------------
# 3. Instrumentations

# What otelkit instruments by default and the library each needs (the instrumentation module
# decides for real; this is the fallback when it offers no dry run).
_KNOWN_INTEGRATIONS = {
    "redis": ("redis", ("redis",)),
    "psycopg2": ("psycopg2", ("psycopg2", "psycopg2-binary")),
    "httpx": ("httpx", ("httpx",)),
    "logging": ("logging", ()),
    "system_metrics": ("psutil", ("psutil",)),
}


def _check_instrumentations(report: Report, settings: Any) -> None:
    statuses = _planned_integrations(settings)
    for status in statuses:
        state = getattr(status, "state", "skipped")
        reason = getattr(status, "reason", "") or ""
        name = getattr(status, "name", "?")
        verdict: Status = {"enabled": "ok", "failed": "fail"}.get(state, "info")  # type: ignore[assignment]
        fix = "see the error above; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=" + name + " turns it off" \
            if state == "failed" else ""
        details = {"state": state}
        version = getattr(status, "version", None)
        if version:
            details["version"] = str(version)
        report.add(Check("instrumentations", name, verdict, state + (f": {reason}" if reason else ""), fix,
                         details))


def _planned_integrations(settings: Any) -> list[Any]:
    """What ``init()`` would instrument here, asked of otelkit's instrumentation module itself.

    ``otelkit._instrument.plan`` answers from the settings and package metadata without importing the
    libraries (importing redis, httpx, psycopg2 and their instrumentations took most of the doctor's
    time). Without it, the doctor instruments its own throwaway process against the no-op global
    providers and removes it again; the static fallback below only runs if that fails.
    """
    try:
        instrument = importlib.import_module("otelkit._instrument")
    except ImportError:
        return [_fallback_status(name, settings) for name in _KNOWN_INTEGRATIONS]
    for name in ("plan", "dry_run", "planned_integrations"):
        planner = getattr(instrument, name, None)
        if callable(planner):
            try:
                return list(planner(settings))
            except Exception as exc:
                return [_Status("instrumentation", "failed", f"dry run failed: {exc}")]
    try:
        with _quiet_logging():
            statuses = list(instrument.instrument_all(settings, None, None))
            instrument.uninstrument_all()
        return statuses
    except Exception:
        return [_fallback_status(name, settings) for name in _KNOWN_INTEGRATIONS]


@dataclass(frozen=True)
class _Status:
    name: str
    state: str
    reason: str = ""


def _fallback_status(name: str, settings: Settings) -> _Status:
    module, dists = _KNOWN_INTEGRATIONS[name]
    chosen = settings.instrument
    disabled = settings.disabled_instrumentations
    if name in disabled:
        return _Status(name, "disabled", "listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    if chosen is not None and name not in chosen:
        return _Status(name, "disabled", "not listed in OTELKIT_INSTRUMENT / init(instrument=...)")
    if name == "system_metrics" and not settings.system_metrics:
        return _Status(name, "disabled", "OTELKIT_SYSTEM_METRICS=false")
    if importlib.util.find_spec(module) is None:
        return _Status(name, "skipped", f"{module} is not installed")
    for dist in dists:
        try:
            return _Status(name, "enabled", f"{dist} {importlib.metadata.version(dist)} would be instrumented")
        except importlib.metadata.PackageNotFoundError:
            continue
    return _Status(name, "enabled", "would be instrumented")


# --------------------------------------------------------------------------------------------------
# 4. Sentry


_DSN_FIX = ("copy the DSN from Sentry: Settings > Projects > Client Keys (DSN); it looks like "
            "https://<key>@<host>/<project-id>")
_DSN_VARIABLES = ("OTELKIT_SENTRY_DSN", "SENTRY_DSN")  # the order otelkit._config reads them in


def _rejected_dsn() -> tuple[str, str] | None:
    """The variable and value of a DSN that is set but was not accepted (the settings say "off")."""
    for variable in _DSN_VARIABLES:
        raw = os.environ.get(variable, "").strip()
        if raw:
            return variable, raw
    return None


def _check_sentry(report: Report, settings: Settings, *, timeout: float, send: bool) -> None:
    dsn = settings.sentry.dsn
    from otelkit._sentry import sentry_sdk_problem

    if not dsn and _rejected_dsn() is None:
        report.add(Check("sentry", "dsn", "skip", "no Sentry DSN (SENTRY_DSN): errors are not sent to Sentry"))
        return
    missing = sentry_sdk_problem()
    if missing is not None:  # sentry-sdk is an extra: a DSN without it is a finding, not an ImportError
        report.add(Check("sentry", "dsn", "fail", f"a Sentry DSN is set but {missing}; errors are not sent to Sentry",
                         "pip install 'otelkit[sentry]'"))
        return
    from sentry_sdk.utils import BadDsn, Dsn

    if not dsn:
        rejected = _rejected_dsn()
        assert rejected is not None
        # The lenient read replaced an invalid DSN by "off": saying "no DSN" here would contradict
        # the configuration FAIL above and hide that the user's errors are not reaching Sentry.
        variable, raw = rejected
        try:
            Dsn(raw)
            why = "expected https://<key>@<host>/<project-id>"
        except BadDsn as exc:
            why = str(exc)
        report.add(Check("sentry", "dsn", "fail",
                         f"invalid DSN {mask_url(raw)} (from {variable}): {why}; errors are not sent to Sentry",
                         _DSN_FIX))
        return

    shown = mask_url(str(dsn))
    try:
        parsed = Dsn(str(dsn))
    except BadDsn as exc:
        report.add(Check("sentry", "dsn", "fail", f"invalid DSN {shown}: {exc}", _DSN_FIX))
        return
    details = {"host": parsed.netloc, "project_id": parsed.project_id}
    reach = tcp_connect(parsed.host, parsed.port, timeout)
    if reach != "ok":
        why = _unreachable_text(reach, parsed.host, parsed.port)
        report.add(Check("sentry", "dsn", "fail", f"DSN {shown} parses, but {why}",
                         "check the network path to Sentry (proxy, firewall) or the DSN host", details))
        return
    if not send:
        report.add(Check("sentry", "dsn", "ok", f"DSN {shown} parses and {parsed.netloc} is reachable",
                         details=details))
        return
    # An envelope with a header and no items: Sentry checks the key and project, stores nothing.
    url = f"{parsed.scheme}://{parsed.netloc}{parsed.path}api/{parsed.project_id}/envelope/"
    auth = f"Sentry sentry_version=7, sentry_client=otelkit-doctor/{__version__}, sentry_key={parsed.public_key}"
    body = json.dumps({"dsn": str(dsn)}).encode() + b"\n"
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": auth})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        fix = ("the key or project is wrong or disabled: copy the DSN again from Sentry"
               if exc.code in (401, 403, 404) else "Sentry is rate limiting or failing: retry later")
        report.add(Check("sentry", "dsn", "fail", f"Sentry answered HTTP {exc.code} to a test envelope for {shown}",
                         fix, {**details, "http_status": exc.code}))
        return
    except (urllib.error.URLError, OSError) as exc:
        report.add(Check("sentry", "dsn", "fail", f"sending a test envelope to {parsed.netloc} failed: {exc}",
                         "check the network path to Sentry (proxy, firewall, TLS)", details))
        return
    report.add(Check("sentry", "dsn", "ok", f"DSN {shown} is valid: Sentry accepted a test envelope (HTTP {status})",
                     details={**details, "http_status": status}))


# --------------------------------------------------------------------------------------------------
# 5. Fork model


def fork_model_findings(environ: Mapping[str, str], cwd: str = ".") -> list[Check]:
    """Pre-fork servers configured here (environment, gunicorn.conf.py, uwsgi ini files)."""
    found: list[Check] = []
    gunicorn_args = environ.get("GUNICORN_CMD_ARGS", "")
    preload_sources = []
    if "--preload" in gunicorn_args.split():
        preload_sources.append("GUNICORN_CMD_ARGS")
    conf = os.path.join(cwd, "gunicorn.conf.py")
    if os.path.exists(conf):
        with open(conf, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        if any(line.replace(" ", "").startswith("preload_app=True") for line in text.splitlines()):
            preload_sources.append("gunicorn.conf.py")
    for source in preload_sources:
        found.append(Check(
            "fork", f"gunicorn --preload ({source})", "warn",
            "the app (and otelkit.init()) is loaded in the master, then workers are forked: otelkit's fork hooks "
            "restart the export threads in each worker and drop the master's queued spans",
            "nothing to do if otelkit.init() runs at import time; do not start exporters by hand in the master "
            "(or call otelkit.init() in a post_fork hook instead of at import)"))
    for name in sorted(os.listdir(cwd)) if os.path.isdir(cwd) else []:
        if not name.endswith(".ini"):
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(os.path.join(cwd, name), encoding="utf-8")
        except configparser.Error:
            continue
        if not parser.has_section("uwsgi"):
            continue
        section = parser["uwsgi"]
        lazy = _truthy(section.get("lazy-apps")) or _truthy(section.get("lazy"))
        threads = _truthy(section.get("enable-threads")) or bool(section.get("threads"))
        if not lazy:
            found.append(Check(
                "fork", f"uwsgi without lazy-apps ({name})", "warn",
                "uWSGI loads the app in the master and forks workers without running Python's at-fork hooks "
                "reliably" + ("" if threads else ", and without enable-threads no export thread runs at all"),
                "set lazy-apps = true (and enable-threads = true) in the [uwsgi] section"))
        elif not threads:
            found.append(Check("fork", f"uwsgi without enable-threads ({name})", "warn",
                               "uWSGI disables Python threads by default: otelkit's background exporters never run",
                               "set enable-threads = true in the [uwsgi] section"))
    return found


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _check_spool(report: Report, settings: Settings) -> None:
    """The disk spool (only when ``spool_dir`` is set): writable, and what is waiting in it."""
    directory = settings.spool_dir
    if not directory:
        return
    try:
        from otelkit._export import spool as _spool

        backlog = _spool.backlog(directory, ("traces", "logs"))
        skipped = sum(_spool.unusable(directory, ("traces", "logs")).values())
    except Exception as exc:
        report.add(Check("endpoints", "disk spool", "warn", f"{directory}: cannot be read ({exc})"))
        return
    files = sum(n for n, _ in backlog.values())
    size = sum(b for _, b in backlog.values())
    limit = settings.spool_max_bytes
    writable = os.access(directory, os.W_OK | os.X_OK) if os.path.isdir(directory) else os.access(
        os.path.dirname(os.path.abspath(directory)) or ".", os.W_OK | os.X_OK)
    details = {"directory": directory, "requests": files, "bytes": size, "max_bytes_per_signal": limit,
               "by_signal": {s: {"requests": n, "bytes": b} for s, (n, b) in backlog.items()},
               "not_regular_files": skipped}
    if skipped:
        report.add(Check("endpoints", "disk spool entries", "warn",
                         f"{directory}: {skipped} entr{'y' if skipped == 1 else 'ies'} named *.otlp that "
                         "are not regular files (FIFO, device, link): skipped, never sent",
                         "remove them; only otelkit should write to the spool directory"))
    if not writable:
        report.add(Check("endpoints", "disk spool", "warn", f"{directory} is not writable by this user",
                         "make the directory writable (telemetry is dropped instead of spooled)", details))
    elif files:
        per = ", ".join(f"{s} {n} ({b / 1048576:.1f} MiB)" for s, (n, b) in backlog.items() if n)
        report.add(Check("endpoints", "disk spool", "warn",
                         f"{directory}: {files} request(s) waiting for the collector: {per}",
                         "they are sent by the next otelkit process that reaches the collector", details))
    else:
        report.add(Check("endpoints", "disk spool", "ok",
                         f"{directory}: empty (up to {limit / 1048576:.0f} MiB per signal)", details=details))


def _check_fork_model(report: Report, environ: Mapping[str, str]) -> None:
    findings: list[Check] = []
    try:
        fork = importlib.import_module("otelkit._fork")
        warnings_fn = getattr(fork, "fork_model_warnings", None)
        if callable(warnings_fn):
            for text in warnings_fn() or ():
                findings.append(Check("fork", "fork model", "warn", str(text)))
    except Exception as exc:
        findings.append(Check("fork", "fork model", "info", f"otelkit._fork could not be asked: {exc}"))
    findings.extend(fork_model_findings(environ))
    if not findings:
        findings.append(Check("fork", "fork model", "ok",
                              "no pre-fork server configuration found here (gunicorn --preload, uwsgi ini)"))
    for check in findings:
        report.add(check)


# --------------------------------------------------------------------------------------------------
# 6. Tempo


def _check_tempo(report: Report, trace_id: str | None, accepted_by: str | None, tempo_url: str | None, *,
                 timeout: float) -> None:
    explicit = tempo_url is not None
    base = (tempo_url or DEFAULT_TEMPO_URL).rstrip("/")
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    reach = tcp_connect(host, port, min(timeout, 1.0))
    if reach != "ok":
        status: Status = "fail" if explicit else "skip"
        report.add(Check("tempo", "trace query", status,
                         f"Tempo is not reachable at {base} ({reach}): " +
                         ("cannot check that traces are queryable" if explicit else
                          "skipped (start the bundled stack, or pass --tempo-url, to check end to end)"),
                         "check --tempo-url / OTELKIT_TEMPO_URL" if explicit else ""))
        return
    if trace_id is None:
        report.add(Check("tempo", "trace query", "skip",
                         f"Tempo answers at {base}, but no test span was accepted by a collector to look up"))
        return
    url = f"{base}/api/traces/{trace_id}"
    # The collector batches and Tempo's ingester needs a moment: poll with a deadline.
    deadline = time.monotonic() + max(5.0, 5 * timeout)
    last = ""
    attempts = 0
    while attempts < 200:
        attempts += 1
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                if response.status == 200:
                    report.add(Check("tempo", "trace query", "ok",
                                     f"the test span is queryable in Tempo: {url}", details={"url": url}))
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        threading.Event().wait(min(0.5, remaining))  # polling interval of an external system
    report.add(Check("tempo", "trace query", "fail",
                     f"the collector at {mask_url(accepted_by or '?')} accepted the test span, but Tempo at {base} "
                     f"does not return trace {trace_id} ({last})",
                     "check that the collector's traces pipeline exports to Tempo (collector config, exporter "
                     "endpoint) and the collector's log for export errors", {"url": url, "last": last}))


# --------------------------------------------------------------------------------------------------
# Text output

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip", "info": "info"}
_COLOR = {"ok": "32", "warn": "33", "fail": "31;1", "skip": "2", "info": "36"}
_SECTIONS = (("config", "Configuration"), ("endpoints", "OTLP endpoints"), ("instrumentations", "Instrumentations"),
             ("sentry", "Sentry"), ("fork", "Fork model"), ("tempo", "Tempo (bundled stack)"))
# Shown even at their defaults: what a person checks first.
_KEY_SETTINGS = ("service_name", "traces.exporters", "traces.endpoint", "traces.protocol", "metrics.exporters",
                 "logs.exporters", "sampler", "propagators", "metric_cardinality_limit", "sentry.dsn")


def render_text(report: Report, *, color: bool = False) -> str:
    """The report as aligned text: sections, one line per check, fixes under failures."""

    def paint(status: str, text: str) -> str:
        return f"\033[{_COLOR[status]}m{text}\033[0m" if color else text

    out = [f"otelkit doctor {__version__} (Python {platform.python_version()}, {_sdk_version()})", ""]
    for key, title in _SECTIONS:
        checks = [c for c in report.checks if c.section == key]
        if not checks and not (key == "config" and report.config):
            continue
        out.append(title)
        if key == "config" and report.config:
            rows = [r for r in report.config if r["source"] != "default" or r["name"] in _KEY_SETTINGS]
            width = max(len(r["name"]) for r in rows) if rows else 0
            vwidth = min(max((len(r["value"]) for r in rows), default=0), 48)
            for row in rows:
                out.append(f"    {row['name']:<{width}}  {row['value']:<{vwidth}}  ({row['source']})")
            hidden = len(report.config) - len(rows)
            if hidden:
                out.append(f"    ... and {hidden} more at their defaults (--json shows all)")
        if key == "instrumentations":
            # One screen: the enabled ones on one line; only what is off or broken gets a line of its own.
            enabled = [c for c in checks if c.status == "ok"]
            if enabled:
                names = ", ".join(c.name + (f" {c.details['version']}" if c.details.get("version") and
                                            c.name not in ("threading", "system_metrics") else "") for c in enabled)
                out.append(f"  {paint('ok', _MARK['ok'])} enabled: {names}")
            checks = [c for c in checks if c.status != "ok"]
        shown_fixes: set[str] = set()
        for check in checks:
            name = f"{check.name}: " if check.name and check.section not in ("config",) else ""
            out.append(f"  {paint(check.status, _MARK[check.status])} {name}{check.summary}")
            # Notes (info) carry a next step too (e.g. how to ship telemetry): shown once per section.
            if check.fix and (check.status in ("fail", "warn") or
                              (check.status == "info" and check.fix not in shown_fixes)):
                out.append(f"         -> {check.fix}")
                shown_fixes.add(check.fix)
        out.append("")
    failures = report.failures
    warns = [c for c in report.checks if c.status == "warn"]
    if failures:
        tail = f", {len(warns)} warning(s)" if warns else ""
        out.append(paint("fail", f"BROKEN: {len(failures)} problem(s)") + tail)
        for check in failures:
            summary = check.summary if len(check.summary) <= 110 else check.summary[:107] + "..."
            out.append(f"  - [{check.section}] {check.name}: {summary}")
    else:
        out.append(paint("ok", "HEALTHY") + (f" with {len(warns)} warning(s)" if warns else ""))
    todo = list(dict.fromkeys(c.fix for c in (*failures, *warns) if c.fix))
    if todo:
        out.append("What to do:")
        out.extend(f"  {i}. {fix}" for i, fix in enumerate(todo, 1))
    return "\n".join(out)


def _sdk_version() -> str:
    try:
        return f"opentelemetry-sdk {importlib.metadata.version('opentelemetry-sdk')}"
    except importlib.metadata.PackageNotFoundError:
        return "opentelemetry-sdk not installed"
