"""Sentry for errors, OpenTelemetry for traces, linked both ways.

``setup(settings)`` (called by ``init()``) turns Sentry on when a DSN is
configured. Design choices, each answering a measured problem:

- **W3C propagation stays intact.** Sentry's ``OTLPIntegration`` replaces the
  global propagator, after which only ``sentry-trace`` goes out and
  ``traceparent``/``baggage`` are lost (``shared/reference/distros.md``). We do
  not use it: we only register the same *external propagation context* hook
  (``sentry_sdk.scope.register_external_propagation_context``), so Sentry
  events take their trace and span IDs from the active OpenTelemetry span and
  Sentry itself injects nothing.
- **Tracing stays in OpenTelemetry.** ``SENTRY_TRACES_SAMPLE_RATE`` defaults to
  0, which we pass to Sentry as "tracing off".
- **Cheap start.** ``auto_enabling_integrations=False`` (81 ms -> 4 ms in
  ``perf-baseline.md``); the default integrations stay (logging, excepthook,
  threading, dedupe...) except ``atexit``: otelkit's own shutdown flushes
  Sentry inside its single deadline.
- **One event per exception.** :mod:`otelkit._errors` marks reported
  exceptions; ``before_send`` drops a second event for the same exception
  object, whichever path (otelkit scope, excepthook, logging) came second.
- **No secrets.** Sentry scrubs by key name only (B17 in ``reliability.md``):
  ``before_send`` and ``before_breadcrumb`` also run the value scrubber over
  every string (exception messages, frame locals, breadcrumbs, extra, tags)
  and redact, at any depth, values under keys ``_scrub.is_sensitive_key``
  names (``db_password``, ``api_token``...), where Sentry knows exact names only.
  ``send_default_pii`` is off unless asked. If scrubbing fails the event is
  dropped, never sent raw.
- **Never blocks.** Capturing only enqueues (``transport_queue_size`` bounded,
  overflow counted by Sentry's client reports); :func:`shutdown` flushes with
  the remaining budget and the worker thread is a daemon, so a hung endpoint
  costs at most that budget.
- **Fork-safe.** A forked child gets a fresh transport, so the parent's queued
  events are not sent twice.
- **An application's own client is linked, not replaced** when otelkit has no
  DSN but ``sentry_sdk.init()`` already ran.
- **Sentry over OTLP is one more destination** (``OTELKIT_SENTRY_OTLP``, off by
  default; ``docs/sentry.md`` compares both paths): :func:`otlp_target` turns
  the DSN into Sentry's OTLP endpoint and ``X-Sentry-Auth`` header, and the
  export factory sends spans/log records there through otelkit's own pipeline
  (sender, retries, scrubbing, counted drops). sentry-sdk's ``OTLPIntegration``
  is not used even with ``setup_propagator=False``: its linking is the same
  external-propagation hook registered here, but as an integration it registers
  it once per process (``setup_once``) while otelkit removes and re-registers it
  with each client it closes and creates, and it always patches the SDK's
  ``Span.record_exception`` and needs the SDK's own OTLP/HTTP exporter package.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, format_span_id, format_trace_id

from otelkit import _errors, _fork
from otelkit._internal_log import logger
from otelkit._regex import deferred
from otelkit._scrub import REDACTED, is_sensitive_key
from otelkit._status import IntegrationStatus

if TYPE_CHECKING:
    from otelkit._config import SentrySettings, Settings

_TRACE_ID_PLACEHOLDER = "{trace_id}"
_SPAN_ID_PLACEHOLDER = "{span_id}"


def _grafana_explore_template() -> str:
    # Grafana "Explore" on the bundled stack's Tempo datasource (uid "tempo"),
    # querying the trace by ID. The panes JSON must be URL-encoded while the
    # placeholder stays literal, hence the marker swap.
    marker = "TRACEIDMARKER"
    panes = {
        "otelkit": {
            "datasource": "tempo",
            "queries": [
                {"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"}, "queryType": "traceql",
                 "query": marker}
            ],
            "range": {"from": "now-24h", "to": "now"},
        }
    }
    encoded = urllib.parse.quote(json.dumps(panes, separators=(",", ":")), safe="")
    base = "http://127.0.0.1:3000/explore?schemaVersion=1&orgId=1&panes="
    return base + encoded.replace(marker, _TRACE_ID_PLACEHOLDER)


DEFAULT_TRACE_URL_TEMPLATE = _grafana_explore_template()
"""Link to a trace in the bundled stack's Grafana (Tempo datasource uid ``tempo``); ``{trace_id}`` is replaced."""

_IGNORED_LOGGERS = ("otelkit", "otelkit.*", "opentelemetry.*")
"""Telemetry's own problems (export failures...) are not application errors: no Sentry events or breadcrumbs."""


def trace_url(template: str | None, trace_id: str, span_id: str = "") -> str | None:
    """The trace link for ``trace_id`` from a URL template (``{trace_id}``, optional ``{span_id}``)."""
    if not template:
        return None
    return template.replace(_TRACE_ID_PLACEHOLDER, trace_id).replace(_SPAN_ID_PLACEHOLDER, span_id)


# --- state -----------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # identity (a generated __eq__/__hash__ is start-up cost)
class _Enrichment:
    """What before_send adds to every event (refreshed on every setup)."""

    service_name: str | None
    environment: str | None
    trace_url_template: str | None
    scrub: Callable[[str], str] | None


@dataclass(frozen=True, eq=False)
class _Pending:
    """The report otelkit is sending right now (read by before_send in the same thread)."""

    span_context: SpanContext | None
    context: Mapping[str, object]


_lock = threading.Lock()
_init_key: tuple[object, ...] | None = None
_client: Any = None
_foreign_client: Any = None
_foreign_processor_added = False
_fork_hook_installed = False
_last_status: IntegrationStatus | None = None
_enrichment = _Enrichment(None, None, DEFAULT_TRACE_URL_TEMPLATE, None)
_pending: ContextVar[_Pending | None] = ContextVar("otelkit_sentry_pending", default=None)


# --- Sentry's OTLP endpoints ----------------------------------------------------------------------

_OTLP_PATHS = {"traces": "integration/otlp/v1/traces", "logs": "integration/otlp/v1/logs"}


def otlp_target(dsn: str, signal: str) -> tuple[str, dict[str, str]]:
    """Sentry's OTLP/HTTP endpoint for ``signal`` (``traces``/``logs``) and its auth headers, from ``dsn``.

    Uses sentry-sdk's own helpers (``Dsn.to_auth().get_api_url(EndpointType.OTLP_*)``, ``Auth.to_header()``)
    where the installed sentry-sdk has them, else computes Sentry's documented
    ``{scheme}://{host}{path}api/{project_id}/integration/otlp/v1/{signal}``. The trailing ``/`` sentry-sdk's
    helper adds is dropped: Sentry documents (and its project settings show) the URL without it. The DSN's
    key travels in the ``X-Sentry-Auth`` header only, never in the URL, so the URL may be printed.
    """
    from otelkit._version import __version__

    client = f"otelkit/{__version__}"
    try:
        from sentry_sdk.consts import EndpointType
        from sentry_sdk.utils import Dsn
    except ImportError:  # the `sentry` extra is not installed: OTLP needs no SDK
        return _otlp_target_fallback(dsn, signal, client)
    auth = Dsn(dsn).to_auth(client)
    endpoint_type = getattr(EndpointType, f"OTLP_{signal.upper()}", None)
    if endpoint_type is not None:
        url = auth.get_api_url(endpoint_type)
    else:  # sentry-sdk 2.76 knows OTLP_TRACES only
        url = f"{auth.scheme}://{auth.host}{auth.path}api/{auth.project_id}/{_OTLP_PATHS[signal]}"
    return url.rstrip("/"), {"X-Sentry-Auth": auth.to_header()}


def _otlp_target_fallback(dsn: str, signal: str, client: str) -> tuple[str, dict[str, str]]:
    parts = urllib.parse.urlsplit(dsn)
    path, _, project_id = parts.path.rstrip("/").rpartition("/")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    url = f"{parts.scheme}://{host}{path}/api/{project_id}/{_OTLP_PATHS[signal]}"
    header = f"Sentry sentry_key={urllib.parse.unquote(parts.username or '')}, sentry_version=7, sentry_client={client}"
    if parts.password:
        header += f", sentry_secret={urllib.parse.unquote(parts.password)}"
    return url, {"X-Sentry-Auth": header}


def _otlp_note(settings: Settings) -> str:
    signals = settings.sentry.otlp
    if not signals:
        return "traces stay in OpenTelemetry"
    return f"{' and '.join(signals)} also to Sentry over OTLP"


# --- setup / shutdown ------------------------------------------------------------------------------


def status() -> IntegrationStatus | None:
    """What the last :func:`setup` did (None before the first), for ``otelkit.integration_status()``."""
    return _last_status


def setup(settings: Settings) -> IntegrationStatus | None:
    """Turn Sentry on (or off) for ``settings``; idempotent. Returns the integration status.

    Raises ``ConfigError`` for a DSN Sentry cannot parse. Any other failure
    leaves the application running without Sentry and returns a "failed" status.
    """
    global _last_status
    result = _setup(settings)
    _last_status = result
    return result


def _setup(settings: Settings) -> IntegrationStatus | None:
    sentry_settings = settings.sentry
    dsn = sentry_settings.dsn
    _errors.install_record_hook()
    global _enrichment
    _enrichment = _Enrichment(
        service_name=settings.service_name,
        environment=_environment(settings),
        trace_url_template=_template(sentry_settings),
        scrub=_scrubber(settings),
    )
    if not dsn:
        _close_owned_client(timeout=1.0)
        unused = (f"; OTELKIT_SENTRY_OTLP={','.join(sentry_settings.otlp)} does nothing without a DSN"
                  if sentry_settings.otlp else "")
        linked = _link_foreign_client()
        if linked is not None:
            return dataclasses.replace(linked, reason=linked.reason + unused) if unused else linked
        return IntegrationStatus("sentry", "disabled", "no DSN: set SENTRY_DSN or init(sentry_dsn=...)" + unused)
    missing = sentry_sdk_problem()
    if missing is not None:
        # A DSN asks for Sentry: say once why it is off instead of raising ImportError in the app.
        logger.warning("otelkit: a Sentry DSN is set but %s; errors are not sent to Sentry", missing)
        otlp = f" ({_otlp_note(settings)})" if sentry_settings.otlp else ""
        return IntegrationStatus("sentry", "skipped", missing + otlp)
    _check_dsn(settings, dsn)
    traces_sample_rate = sentry_settings.traces_sample_rate
    release = sentry_settings.release or settings.service_version
    send_default_pii = sentry_settings.send_default_pii
    shutdown_timeout = min(2.0, settings.shutdown_timeout)
    key = (dsn, _enrichment.environment, release, traces_sample_rate, send_default_pii, shutdown_timeout)
    with _lock:
        try:
            return _init_sentry(key, dsn, release, traces_sample_rate, send_default_pii, shutdown_timeout,
                                _otlp_note(settings))
        except Exception as exc:
            logger.warning("otelkit: Sentry could not be initialised (%s); errors are not sent to Sentry",
                           type(exc).__name__, exc_info=logger.isEnabledFor(logging.DEBUG))
            _errors.set_sender(None)
            return IntegrationStatus("sentry", "failed", f"sentry_sdk.init failed: {type(exc).__name__}")


_MIN_SENTRY_SDK = (2, 75)
"""The oldest sentry-sdk otelkit drives (pyproject's ``sentry`` extra): the external propagation hook."""


def sentry_sdk_problem() -> str | None:
    """Why the installed sentry-sdk cannot be used (an installable fix named), or ``None`` when it can.

    sentry-sdk is an extra (``otelkit[sentry]``), so a DSN may meet a missing or older package.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("sentry-sdk")
    except PackageNotFoundError:
        return "sentry-sdk is not installed (pip install 'otelkit[sentry]')"
    release = tuple(int(part) for part in re.findall(r"\d+", installed)[:2])
    if release < _MIN_SENTRY_SDK:
        wanted = ".".join(map(str, _MIN_SENTRY_SDK))
        return f"sentry-sdk {installed} is older than {wanted} (pip install 'otelkit[sentry]' upgrades it)"
    return None


def _init_sentry(key: tuple[object, ...], dsn: str, release: str | None, traces_sample_rate: float,
                 send_default_pii: bool, shutdown_timeout: float, traces_note: str) -> IntegrationStatus:
    global _init_key, _client
    import sentry_sdk
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.scope import register_external_propagation_context
    from sentry_sdk.utils import Dsn

    host = Dsn(dsn).host
    if key == _init_key and _client is not None and _client.is_active():
        _errors.set_sender(_send)
        return IntegrationStatus("sentry", "enabled", f"errors to {host}; {traces_note} (unchanged)")
    _close_owned_client(timeout=0.5)
    options: dict[str, Any] = {}
    if send_default_pii:
        # Only when asked: left unset, sentry-sdk 2.75 resolves it to "no PII" and keeps its
        # key-name EventScrubber; set at all, it warns that the option is deprecated.
        options["send_default_pii"] = True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The send_default_pii option is deprecated", DeprecationWarning)
        _sentry_init(sentry_sdk, dsn, release, traces_sample_rate, shutdown_timeout, options)
    for name in _IGNORED_LOGGERS:
        ignore_logger(name)
    # Sentry events take trace_id/span_id from the active OTel span. Registering
    # this hook also makes Sentry stop injecting its own headers: propagation
    # is left to OpenTelemetry's W3C propagators.
    register_external_propagation_context(_otel_trace_ids)
    _client = sentry_sdk.get_client()
    _init_key = key
    _install_fork_hook()
    _errors.set_sender(_send)
    return IntegrationStatus("sentry", "enabled", f"errors to {host}; {traces_note}")


def _sentry_init(sentry_sdk: Any, dsn: str, release: str | None, traces_sample_rate: float,
                 shutdown_timeout: float, options: dict[str, Any]) -> None:
    from sentry_sdk.integrations.atexit import AtexitIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=_enrichment.environment,
        release=release,
        # None, not 0: Sentry then creates no transactions and leaves tracing to OpenTelemetry.
        traces_sample_rate=traces_sample_rate if traces_sample_rate > 0 else None,
        include_local_variables=True,
        max_request_body_size="never",
        auto_enabling_integrations=False,
        default_integrations=True,
        disabled_integrations=[AtexitIntegration],
        before_send=_before_send,
        before_breadcrumb=_before_breadcrumb,
        # Only with SENTRY_TRACES_SAMPLE_RATE > 0: Sentry's own spans hold URLs and queries too.
        before_send_transaction=_before_send_transaction,
        shutdown_timeout=shutdown_timeout,
        in_app_exclude=["otelkit"],
        **options,
    )


def shutdown(timeout: float) -> None:
    """Flush queued Sentry events within ``timeout`` seconds and close the client otelkit created.

    Never raises; returns within ``timeout`` (plus a few ms) even when the
    Sentry endpoint hangs: the transport thread is a daemon and is abandoned.
    An application's own client (see :func:`_link_foreign_client`) is flushed, not closed.
    """
    _close_owned_client(timeout=timeout)


def _install_fork_hook() -> None:
    global _fork_hook_installed
    if not _fork_hook_installed:
        _fork.at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_installed = True


def _after_fork_in_child() -> None:
    """Give the forked child an empty transport.

    The child inherits a copy of the parent's queue of unsent events; Sentry's
    worker restarts in the child and would send them a second time (measured:
    an event queued just before ``fork()`` arrived twice). A fresh transport
    also avoids locks another parent thread may have held at fork time.
    """
    client = _client
    if client is None or getattr(client, "transport", None) is None:
        return
    try:
        from sentry_sdk.transport import make_transport

        client.transport = make_transport(client.options)
        if getattr(client, "monitor", None) is not None and client.transport is not None:
            from sentry_sdk.monitor import Monitor

            client.monitor = Monitor(client.transport)
    except Exception:
        logger.debug("otelkit: could not reset Sentry's transport after fork", exc_info=True)


def _close_owned_client(timeout: float) -> None:
    global _client, _init_key, _foreign_client
    _errors.set_sender(None)
    client, _client, _init_key = _client, None, None
    foreign, _foreign_client = _foreign_client, None
    if client is None and foreign is None:
        return
    try:
        from sentry_sdk.scope import remove_external_propagation_context

        remove_external_propagation_context()
        if client is not None:
            client.close(timeout=max(0.0, timeout))
        elif foreign is not None and foreign.is_active():
            foreign.flush(timeout=max(0.0, timeout))
    except Exception:
        logger.debug("otelkit: closing the Sentry client failed", exc_info=True)


def _link_foreign_client() -> IntegrationStatus | None:
    """Link a Sentry client the application initialised itself (no DSN given to otelkit).

    Its events get the OTel trace/span IDs, tags, trace link and the
    one-event-per-exception rule (through a global event processor); otelkit
    scopes report through it. Its options (PII, scrubbing, propagation) stay
    the application's: otelkit's value scrubbing only runs on clients it creates.
    """
    global _foreign_client, _foreign_processor_added
    sentry_sdk = sys.modules.get("sentry_sdk")
    if sentry_sdk is None:
        return None  # never imported: nobody initialised it
    try:
        client = sentry_sdk.get_client()
        if not client.is_active() or getattr(client, "transport", None) is None:
            return None  # none, or closed by the application (a closed client keeps is_active())
        from sentry_sdk.scope import add_global_event_processor, register_external_propagation_context

        if not _foreign_processor_added:
            add_global_event_processor(_foreign_event_processor)
            _foreign_processor_added = True
        register_external_propagation_context(_otel_trace_ids)
        _foreign_client = client
        _errors.set_sender(_send)
        return IntegrationStatus("sentry", "enabled",
                                 "linked to the application's own sentry_sdk.init() (its options apply)")
    except Exception:
        logger.debug("otelkit: could not link the application's Sentry client", exc_info=True)
        return None


def _foreign_event_processor(event: Any, hint: Any) -> Any:
    client = _foreign_client
    if client is None or event.get("type") == "transaction":
        return event
    try:
        import sentry_sdk

        if sentry_sdk.get_client() is not client:
            return event
        return _process_event(event, hint or {}, scrub=False)
    except Exception:
        logger.debug("otelkit: could not link a Sentry event", exc_info=True)
        return event


def _check_dsn(settings: Settings, dsn: str) -> None:
    from sentry_sdk.utils import BadDsn, Dsn

    from otelkit._config import ConfigError

    try:
        Dsn(dsn)
    except BadDsn as exc:
        source = settings.sources.get("sentry.dsn", "SENTRY_DSN")
        raise ConfigError(
            f"invalid Sentry DSN {_mask_dsn(dsn)!r} (from {source}): {exc}; "
            "expected https://<public key>@<host>/<project id>"
        ) from None


def _mask_dsn(dsn: str) -> str:
    return re.sub(r"(?<=://)[^@/]*@", "***@", dsn)


def _environment(settings: Settings) -> str | None:
    return settings.sentry.environment or settings.environment


def _template(sentry_settings: SentrySettings) -> str | None:
    template = sentry_settings.trace_url_template
    if template is None:
        return DEFAULT_TRACE_URL_TEMPLATE
    return template or None  # an empty template turns the link off


def _scrubber(settings: Settings) -> Callable[[str], str] | None:
    # OTELKIT_SCRUB=false turns scrubbing off for every signal, Sentry included.
    if not settings.scrub.enabled:
        return None
    from otelkit._scrub import REDACTED, scrub_text

    def scrub(text: str) -> str:
        # scrub_text's cheap pre-check (":", "=", "@"...) lets a bare "Bearer <token>"
        # through, and a frame local holding an Authorization value is exactly that.
        return scrub_text(_AUTH_SCHEME.sub(lambda m: m.group(1) + REDACTED, text))

    return scrub


# A credential has a digit or a symbol: "Basic authentication" or "token validation" stay readable.
_AUTH_SCHEME = deferred(
    globals(), "_AUTH_SCHEME",
    r"(?i)\b((?:Bearer|Basic|Token|Digest)\s+)(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}")


# --- linking and sending ---------------------------------------------------------------------------


def _otel_trace_ids() -> tuple[str, str] | None:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format_trace_id(span_context.trace_id), format_span_id(span_context.span_id)


def _send(exc: BaseException, span_context: SpanContext | None, context: Mapping[str, object]) -> str | None:
    """Sender installed into :mod:`otelkit._errors`: one Sentry event for ``exc``."""
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception

    client = sentry_sdk.get_client()
    if not client.is_active():
        return None
    event, hint = event_from_exception(
        exc, client_options=client.options, mechanism={"type": "otelkit", "handled": False}
    )
    token = _pending.set(_Pending(span_context, dict(context)))
    try:
        return sentry_sdk.capture_event(event, hint=hint)
    finally:
        _pending.reset(token)


def _before_send(event: Any, hint: Any) -> Any:
    try:
        return _process_event(event, hint)
    except Exception:
        # Fail closed: an event we could not scrub is not sent.
        logger.warning("otelkit: dropped a Sentry event that could not be processed", exc_info=True)
        return None


def _before_send_transaction(event: Any, hint: Any) -> Any:
    try:
        return _scrub_event(event)
    except Exception:
        logger.warning("otelkit: dropped a Sentry transaction that could not be scrubbed", exc_info=True)
        return None


def _process_event(event: dict[str, Any], hint: dict[str, Any], *, scrub: bool = True) -> dict[str, Any] | None:
    pending = _pending.get()
    exc_info = hint.get("exc_info") if hint else None
    exc = exc_info[1] if exc_info else None
    origin: SpanContext | None = None
    if isinstance(exc, BaseException):
        report = _errors.get_report(exc, create=True)
        if report is not None:
            if pending is None:
                # Captured by a Sentry integration (excepthook, logging, thread).
                if report.sent:
                    logger.debug("otelkit: dropped a second Sentry event for one %s", type(exc).__name__)
                    return None
                report.sent = True
                report.event_id = event.get("event_id")
            origin = report.origin

    span_context = pending.span_context if pending is not None else None
    if span_context is None:
        current = trace.get_current_span().get_span_context()
        span_context = current if current.is_valid else origin
    context: Mapping[str, object] = pending.context if pending is not None else _errors.current_error_context()
    _link(event, span_context, context)
    return _scrub_event(event) if scrub else event


def _link(event: dict[str, Any], span_context: SpanContext | None, context: Mapping[str, object]) -> None:
    from otelkit._correlation import get_correlation_id

    enrichment = _enrichment
    tags = event.get("tags")
    if not isinstance(tags, dict):
        tags = event["tags"] = {}
    contexts = event.get("contexts")
    if not isinstance(contexts, dict):
        contexts = event["contexts"] = {}
    otel: dict[str, Any] = {}

    correlation_id = context.get("correlation_id") or get_correlation_id()
    if correlation_id:
        tags["correlation_id"] = str(correlation_id)
        otel["correlation_id"] = str(correlation_id)
    if enrichment.service_name:
        tags["service.name"] = enrichment.service_name
        otel["service.name"] = enrichment.service_name
    if enrichment.environment:
        tags.setdefault("deployment.environment.name", enrichment.environment)

    if span_context is not None and span_context.is_valid:
        trace_id = format_trace_id(span_context.trace_id)
        span_id = format_span_id(span_context.span_id)
        trace_context = contexts.get("trace")
        if not isinstance(trace_context, dict) or trace_context.get("trace_id") != trace_id:
            # Replace Sentry's own random propagation context entirely.
            trace_context = {}
        trace_context.update(trace_id=trace_id, span_id=span_id)
        trace_context.pop("parent_span_id", None)
        contexts["trace"] = trace_context
        tags["trace_id"] = trace_id
        otel.update(trace_id=trace_id, span_id=span_id)
        link = trace_url(enrichment.trace_url_template, trace_id, span_id)
        if link:
            otel["trace_url"] = link
    if otel:
        contexts["otel"] = otel
    if context:
        contexts["job"] = {str(_plain(k)): _plain(v) for k, v in context.items() if v is not None}


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    try:
        return str(value)
    except Exception:  # a job-context value whose __str__ raises must not cost the whole event
        return f"<unprintable {type(value).__name__}>"


def _scrub_event(event: dict[str, Any]) -> dict[str, Any]:
    scrub = _enrichment.scrub
    if scrub is None:
        return event
    return {k: v if k in _GENERATED_KEYS else _scrub_value(v, scrub) for k, v in event.items()}


# Top-level event keys Sentry fills from installed package names and versions only:
# no application data, and "modules" alone is most of an event's strings. "_meta" holds
# Sentry's own annotations (lengths, rule names) keyed by field name: redacting a key there
# would only break the annotation.
_GENERATED_KEYS = frozenset({"modules", "sdk", "platform", "timestamp", "event_id", "level", "_meta"})


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        # Sentry's EventScrubber only knows exact names ("password", "auth"...): "db_password",
        # "api_token", "client_secret" or a nested {"password": ...} in frame locals, extra,
        # contexts, tags, request data and breadcrumb data are redacted here by the same key
        # rule as span attributes and headers.
        return {k: _redact(v) if isinstance(k, str) and is_sensitive_key(k) else _scrub_value(v, scrub)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v, scrub) for v in value]
    return value


def _redact(value: Any) -> Any:
    # Whatever the type: Sentry serialises a frame local as its repr (a dict or list as such),
    # and a secret may be a number (a PIN) or a structure holding one. None and booleans say
    # nothing and stay readable ("api_token: None" is a useful clue), also as frame-local reprs.
    if value is None or isinstance(value, bool) or (isinstance(value, str) and value in _HARMLESS_REPRS):
        return value
    return REDACTED


_HARMLESS_REPRS = frozenset({"None", "True", "False", "''", '""'})


def _before_breadcrumb(crumb: Any, hint: Any) -> Any:
    scrub = _enrichment.scrub
    if scrub is None:
        return crumb
    try:
        # The hint holds the raw log record / request: it is not sent, so only the crumb is scrubbed.
        result = _scrub_value(crumb, scrub)
        assert isinstance(result, dict)
        return result
    except Exception:
        logger.debug("otelkit: dropped a breadcrumb that could not be scrubbed", exc_info=True)
        return None
