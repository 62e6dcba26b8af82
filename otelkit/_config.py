"""Resolved configuration: one declarative parameter table, one pure resolver, one frozen object.

Precedence, for every setting (tested as a matrix in ``tests/unit/test_config_precedence.py``):

1. the explicit keyword argument of :func:`otelkit.init` (code beats environment);
2. the ``OTELKIT_*`` environment variable, when the setting has one;
3. the standard ``OTEL_*`` (or ``SENTRY_*``) environment variable;
4. the default (sometimes computed: the service name is derived from the program).

An empty environment variable counts as unset, as the OpenTelemetry spec says.
With ``OTEL_CONFIG_FILE`` (or the argument ``config_file``) the declarative configuration file takes the
place of steps 2 and 3: the environment is then ignored, as the spec says, except through ``${VAR}``
substitution inside the file (``otelkit/_config_file.py``, docs/config-file.md).
For the per-signal OTLP settings (endpoint, protocol, headers, ...) the order is:
per-signal argument, generic argument, per-signal variable, generic variable, default.

Durations are stored in **seconds** (float) and read from the environment in
**milliseconds**, as the spec defines them (the upstream OTLP exporters read
``OTEL_EXPORTER_OTLP_TIMEOUT`` as seconds; otelkit does not inherit that).

Bad values raise :class:`ConfigError` naming the variable or argument, the
value (masked when secret) and what is accepted. With ``strict=False`` (or
``OTELKIT_STRICT=false``) each bad value gives one :class:`ConfigWarning`
and the safe default instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from otelkit import _resource
from otelkit._regex import deferred

__all__ = [
    "PARAMS",
    "BatchSettings",
    "ConfigError",
    "ConfigWarning",
    "LimitSettings",
    "Param",
    "ScrubSettings",
    "SentrySettings",
    "Settings",
    "SignalSettings",
    "config_table_markdown",
    "mask_url",
    "resolve",
]

SIGNALS: tuple[str, ...] = ("traces", "metrics", "logs")
MASK = "***"


class ConfigError(ValueError):
    """A setting has a value otelkit cannot use.

    The message names the argument or environment variable, the value (masked
    when it is a secret) and what is accepted.
    """


class ConfigWarning(UserWarning):
    """A bad setting was replaced by its safe default (``strict=False``), or a default was guessed."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# Frames between the caller and otelkit that are not the caller's code (``with capture_telemetry():``).
_PASS_THROUGH = (os.sep + "contextlib.py",)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first line outside otelkit (the caller's).

    Call it in the function that calls ``warnings.warn``. A fixed number breaks as soon as the call path
    changes (``init()`` -> ``resolve()`` -> ... or a test helper in between); this walks the stack instead.
    """
    level = 1
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_PACKAGE_DIR) and not filename.endswith(_PASS_THROUGH):
            return level
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


# --- masking --------------------------------------------------------------------------------------


def mask_url(url: str | None) -> str | None:
    """Return ``url`` with any password (or a lone user token, as in a Sentry DSN) replaced by ``***``."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    # A Sentry DSN carries its secret as the user part ("https://<key>@host/1"), so mask it too.
    userinfo = f"{parts.username}:{MASK}" if parts.password is not None else MASK
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", parts.path, parts.query, parts.fragment))


def _mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: MASK for k in headers}


# --- settings objects -----------------------------------------------------------------------------

Protocol = Literal["grpc", "http/protobuf"]


@dataclass(frozen=True, repr=False)  # its own __repr__ masks secrets; not generating one saves start-up
class SignalSettings:
    """Export settings of one signal (traces, metrics or logs)."""

    exporters: tuple[str, ...] = ("auto",)
    endpoint: str | None = None
    protocol: Protocol = "http/protobuf"
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float = 10.0
    compression: Literal["gzip", "none"] = "none"
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None
    insecure: bool | None = None

    def __repr__(self) -> str:
        return (
            f"SignalSettings(exporters={self.exporters!r}, endpoint={mask_url(self.endpoint)!r}, "
            f"protocol={self.protocol!r}, headers={_mask_headers(self.headers)!r}, timeout={self.timeout!r}, "
            f"compression={self.compression!r}, certificate={self.certificate!r}, client_key={self.client_key!r}, "
            f"client_certificate={self.client_certificate!r}, insecure={self.insecure!r})"
        )

    __str__ = __repr__

    def __hash__(self) -> int:
        return hash(repr(self))


@dataclass(frozen=True)
class BatchSettings:
    """Batch processor settings (``OTEL_BSP_*`` / ``OTEL_BLRP_*``); durations in seconds."""

    schedule_delay: float
    export_timeout: float
    max_queue_size: int
    max_export_batch_size: int


@dataclass(frozen=True)
class LimitSettings:
    """Attribute, event and link limits. ``None`` for a length means unlimited."""

    attribute_count: int = 128
    attribute_value_length: int | None = None
    span_attribute_count: int = 128
    span_attribute_value_length: int | None = None
    span_event_count: int = 128
    span_link_count: int = 128
    event_attribute_count: int = 128
    link_attribute_count: int = 128
    logrecord_attribute_count: int = 128
    logrecord_attribute_value_length: int | None = None


@dataclass(frozen=True)
class ScrubSettings:
    """Redaction of secrets and personal data before export."""

    enabled: bool = True
    extra_patterns: tuple[str, ...] = ()


@dataclass(frozen=True, repr=False)  # its own __repr__ masks the DSN
class SentrySettings:
    """Sentry error reporting, linked to OTel traces. Off while ``dsn`` is None."""

    dsn: str | None = None
    environment: str | None = None
    release: str | None = None
    traces_sample_rate: float = 0.0
    trace_url_template: str | None = None
    send_default_pii: bool = False
    otlp: tuple[str, ...] = ()
    """Signals also sent to Sentry's OTLP endpoint (``traces``, ``logs``); empty: errors only."""

    def __repr__(self) -> str:
        return (
            f"SentrySettings(dsn={mask_url(self.dsn)!r}, environment={self.environment!r}, "
            f"release={self.release!r}, traces_sample_rate={self.traces_sample_rate!r}, "
            f"trace_url_template={self.trace_url_template!r}, send_default_pii={self.send_default_pii!r}, "
            f"otlp={self.otlp!r})"
        )

    __str__ = __repr__


DEFAULT_CORRELATION_HEADERS: tuple[str, ...] = (
    "correlation_id", "correlation-id", "x-correlation-id", "messaging.message.conversation_id")
"""Headers a consumer reads a foreign correlation ID from (after otelkit's own baggage and header)."""


@dataclass(frozen=True)
class Settings:
    """The resolved, validated, immutable configuration of otelkit.

    ``sources[field]`` tells where each value came from: ``"argument"``, the
    environment variable's name, ``"default"``, or a note such as
    ``"derived from sys.argv[0]"``. Nested fields use dotted names
    (``"traces.endpoint"``). ``sources`` is ignored when comparing settings.
    """

    disabled: bool = False
    strict: bool = True
    debug: bool = False
    service_name: str = "unknown_service"
    service_version: str | None = None
    environment: str | None = None
    resource_attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    traces: SignalSettings = field(default_factory=SignalSettings)
    metrics: SignalSettings = field(default_factory=SignalSettings)
    logs: SignalSettings = field(default_factory=SignalSettings)
    sampler: str = "parentbased_always_on"
    sampler_arg: float | None = None
    propagators: tuple[str, ...] = ("tracecontext", "baggage")
    # Queue 8192 / delay 1 s instead of the spec's 2048 / 5 s: the spec sizes drop 15-50 % of spans under an
    # ordinary burst (shared/reference/perf-baseline.md); 8192 dropped none. Span batches of 2048, not 512:
    # each request costs the export thread a GIL hand-back (up to the 5 ms switch interval) besides the
    # round trip, so under load 512-span requests starve it (benchmarks/RESULTS.md, target 4).
    bsp: BatchSettings = field(default_factory=lambda: BatchSettings(1.0, 30.0, 8192, 2048))
    blrp: BatchSettings = field(default_factory=lambda: BatchSettings(1.0, 30.0, 8192, 512))
    metric_export_interval: float = 60.0
    metric_export_timeout: float = 30.0
    exemplar_filter: str = "trace_based"
    metric_cardinality_limit: int = 2000
    limits: LimitSettings = field(default_factory=LimitSettings)
    prometheus_host: str = "localhost"
    prometheus_port: int = 9464
    prometheus_sd_dir: str | None = None
    instrument: tuple[str, ...] | None = None
    disabled_instrumentations: frozenset[str] = frozenset()
    instrument_entry_points: bool = False
    system_metrics: bool = True
    system_metrics_excluded: tuple[str, ...] = ()
    excluded_urls: str | None = None
    pika_queue_depth: bool = True
    nats_queue_depth: bool = True
    fastapi_excluded_urls: str | None = None
    starlette_excluded_urls: str | None = None
    flask_excluded_urls: str | None = None
    django_excluded_urls: str | None = None
    semconv_opt_in: str = "http,database"
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    log_level: int = logging.INFO
    log_correlation: bool = True
    correlation_header: str = "X-Correlation-ID"
    sentry: SentrySettings = field(default_factory=SentrySettings)
    shutdown_timeout: float = 5.0
    child_exit_timeout: float = 2.0
    console_on_auto: bool = True
    spool_dir: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    correlation_headers: tuple[str, ...] = DEFAULT_CORRELATION_HEADERS
    config_file: str | None = None
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), compare=False, repr=False)

    def __hash__(self) -> int:
        # The generated hash would fail on the mapping fields; repr covers every compared field.
        return hash(repr(self))

    def signal(self, name: str) -> SignalSettings:
        """The :class:`SignalSettings` of ``"traces"``, ``"metrics"`` or ``"logs"``."""
        if name == "traces":
            return self.traces
        if name == "metrics":
            return self.metrics
        if name == "logs":
            return self.logs
        raise KeyError(name)

    def as_dict(self, *, masked: bool = True) -> dict[str, Any]:
        """A flat ``{"field" or "group.field": value}`` view, secrets masked (for ``otelkit doctor``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                for sub in dataclasses.fields(value):
                    out[f"{f.name}.{sub.name}"] = _plain(getattr(value, sub.name))
            else:
                out[f.name] = _plain(value)
        if masked:
            for key in list(out):
                if key.endswith(".headers"):
                    out[key] = _mask_headers(out[key])
                elif key.endswith(".endpoint") or key == "sentry.dsn":
                    out[key] = mask_url(out[key])
        return out

    def without_sources(self) -> Settings:
        """A copy with an empty ``sources`` map (sources never take part in equality anyway)."""
        return dataclasses.replace(self, sources=MappingProxyType({}))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, frozenset):
        return sorted(value)
    return value


# --- casters --------------------------------------------------------------------------------------
# A caster turns a raw value (a string from the environment, or whatever the caller passed as an
# argument) into the typed value, or raises _Invalid with the text "what is accepted".


class _Invalid(Exception):
    def __init__(self, accepted: str) -> None:
        super().__init__(accepted)
        self.accepted = accepted


Caster = Callable[[Any], Any]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise _Invalid("true or false (also 1/0, yes/no, on/off)")


# Upper bounds: larger values are not "more", they break the SDK. A count or queue size beyond a C
# ssize_t makes deque(maxlen=...) raise in every span start (all spans silently lost); a duration beyond
# threading.TIMEOUT_MAX makes Event.wait() raise in the export threads (they die, telemetry stops).
MAX_INT = 2**31 - 1
MAX_DURATION_SECONDS = 7 * 24 * 3600.0


def _utf8(text: str) -> bool:
    """False for text that cannot be sent: lone surrogates (non-UTF-8 bytes in the environment)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(raw: Any) -> str:
    if isinstance(raw, str) and raw.strip() and _utf8(raw):
        return raw.strip()
    raise _Invalid("a non-empty string (valid UTF-8)")


MAX_SERVICE_NAME_LENGTH = 255
_CONTROL_CHARS = deferred(globals(), "_CONTROL_CHARS", r"[\x00-\x1f\x7f-\x9f]")


# A header name a setting names (the correlation ID header): at most 64 characters.
_SETTING_HEADER_NAME = deferred(globals(), "_SETTING_HEADER_NAME", r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")


def _header_name(raw: Any) -> str:
    if isinstance(raw, str) and _SETTING_HEADER_NAME.fullmatch(raw.strip()):
        return raw.strip()
    raise _Invalid("an HTTP header name (letters, digits, '-', at most 64 characters), e.g. X-Request-ID")


def _service_name(raw: Any) -> str:
    """A name backends can index and people can read: no control characters (NUL, newline...), bounded."""
    accepted = (f"a non-empty name (valid UTF-8) of at most {MAX_SERVICE_NAME_LENGTH} characters without control "
                "characters (NUL, newline, tab...)")
    try:
        text = _str(raw)
    except _Invalid:
        raise _Invalid(accepted) from None
    if len(text) > MAX_SERVICE_NAME_LENGTH or _CONTROL_CHARS.search(text):
        raise _Invalid(accepted)
    return text


def _int(minimum: int = 0, maximum: int = MAX_INT) -> Caster:
    accepted = f"an integer >= {minimum} (at most {maximum})"

    def cast(raw: Any) -> int:
        if isinstance(raw, bool):
            raise _Invalid(accepted)
        try:
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError, OverflowError):
            raise _Invalid(accepted) from None
        if isinstance(raw, float) and raw != value:
            raise _Invalid(accepted)
        if value < minimum or value > maximum:
            raise _Invalid(accepted)
        return value

    return cast


def _port(raw: Any) -> int:
    value = _int(1)(raw) if not isinstance(raw, bool) else None
    if value is None or value > 65535:
        raise _Invalid("a TCP port number 1-65535")
    return int(value)


def _optional_length(raw: Any) -> int | None:
    """Value-length limits: an integer >= 0; -1 or "unlimited" means no limit."""
    if isinstance(raw, str) and raw.strip().lower() in ("unlimited", "none", "-1"):
        return None
    if raw is None or raw == -1:
        return None
    try:
        return int(_int(0)(raw))
    except _Invalid:
        raise _Invalid("an integer >= 0 (or -1 for no limit)") from None


def _float(minimum: float | None = None, maximum: float | None = None) -> Caster:
    if minimum is not None and maximum is not None:
        accepted = f"a number between {minimum:g} and {maximum:g}"
    elif minimum is not None:
        accepted = f"a number >= {minimum:g}"
    else:
        accepted = "a number"

    def cast(raw: Any) -> float:
        if isinstance(raw, bool):
            raise _Invalid(accepted)
        try:
            value = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond the float range
            raise _Invalid(accepted) from None
        if math.isnan(value) or math.isinf(value):
            raise _Invalid(accepted)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _Invalid(accepted)
        return value

    return cast


def _millis(raw: Any, *, from_env: bool) -> float:
    """Durations: milliseconds in the environment (spec), seconds as a Python argument (float)."""
    if from_env:
        max_ms = MAX_DURATION_SECONDS * 1000.0
        try:
            if isinstance(raw, str):
                text = raw.strip().lower()
                text = text[:-2].strip() if text.endswith("ms") else text
                ms = _float(0, max_ms)(text)
            else:
                ms = _float(0, max_ms)(raw)
        except _Invalid:
            raise _Invalid(f"a duration in milliseconds, a number >= 0 (e.g. 10000; at most {max_ms:.0f}, "
                           "one week)") from None
        return float(ms) / 1000.0
    try:
        return float(_float(0, MAX_DURATION_SECONDS)(raw))
    except _Invalid:
        raise _Invalid(f"a duration in seconds, a number >= 0 (at most {MAX_DURATION_SECONDS:.0f}, one week)") from None


def _ms(raw: Any) -> float:
    return _millis(raw, from_env=True)


def _choice(options: Sequence[str], *, aliases: Mapping[str, str] | None = None) -> Caster:
    def cast(raw: Any) -> str:
        if isinstance(raw, str):
            key = raw.strip().lower()
            key = (aliases or {}).get(key, key)
            if key in options:
                return key
        raise _Invalid("one of " + ", ".join(options))

    return cast


def _split_list(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [p.strip() for p in raw.split(",") if p.strip()]
    if isinstance(raw, Iterable) and not isinstance(raw, (bytes, Mapping)):
        items = list(raw)
        if all(isinstance(i, str) for i in items):
            return [i.strip() for i in items if i.strip()]
    raise _Invalid("a comma-separated list or a sequence of strings")


def _str_list(raw: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_split_list(raw)))


def _exporters(options: Sequence[str]) -> Caster:
    accepted = "a comma-separated list of " + ", ".join(options) + " (or none alone)"

    def cast(raw: Any) -> tuple[str, ...]:
        try:
            names = [n.lower() for n in _split_list(raw)]
        except _Invalid:
            raise _Invalid(accepted) from None
        names = list(dict.fromkeys(names))
        if not names or any(n not in options for n in names):
            raise _Invalid(accepted)
        if "none" in names and len(names) > 1:
            raise _Invalid(accepted)
        if "auto" in names and len(names) > 1:
            raise _Invalid(accepted)
        return tuple(names)

    return cast


# An HTTP header name (RFC 9110 token) and a value without control characters: anything else makes
# every export request fail in the HTTP client or gRPC (CR/LF would even allow header injection).
_HEADER_NAME = deferred(globals(), "_HEADER_NAME", r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+")
_HEADER_VALUE = deferred(globals(), "_HEADER_VALUE", r"[\t\x20-\x7e\x80-\xff]*")


def _headers(raw: Any) -> Mapping[str, str]:
    """``key=value,key2=value2`` with percent-encoded values (W3C baggage format, as the spec says)."""
    accepted = ("key=value pairs separated by commas (values percent-encoded), or a mapping of str to str; "
                "names are HTTP tokens, values have no control characters")
    out: dict[str, str] = {}
    if isinstance(raw, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
            raise _Invalid(accepted)
        out = {k.strip().lower(): v for k, v in raw.items()}
    elif isinstance(raw, str):
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise _Invalid(accepted)
            out[unquote(key.strip()).lower()] = unquote(value.strip())
    else:
        raise _Invalid(accepted)
    for key, value in out.items():
        if not _HEADER_NAME.fullmatch(key) or not _HEADER_VALUE.fullmatch(value):
            raise _Invalid(accepted)
    return MappingProxyType(out)


def _resource_attrs(raw: Any) -> Mapping[str, str]:
    accepted = "key=value pairs separated by commas (values percent-encoded), or a mapping"
    if isinstance(raw, Mapping):
        if not all(isinstance(k, str) for k in raw):
            raise _Invalid(accepted)
        try:
            out = {k: str(v) for k, v in raw.items()}
        except Exception:  # a value whose __str__ fails
            raise _Invalid(accepted) from None
    elif isinstance(raw, str):
        out = {}
        for item in raw.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise _Invalid(accepted)
            out[unquote(key.strip())] = unquote(value.strip())
    else:
        raise _Invalid(accepted)
    # Non-UTF-8 text (lone surrogates from undecodable environment bytes) would make every export fail.
    if not all(_utf8(k) and _utf8(v) for k, v in out.items()):
        raise _Invalid(accepted + " (valid UTF-8)")
    return MappingProxyType(out)


_ENDPOINT_ACCEPTED = ("an http:// or https:// URL with a host, e.g. http://localhost:4318, or (protocol grpc only) "
                      "a host:port without a scheme, e.g. collector:4317")


def schemeless(endpoint: str) -> bool:
    """True for a gRPC endpoint given as ``host:port`` (TLS then follows the ``insecure`` setting)."""
    return "://" not in endpoint


def endpoint_parts(endpoint: str) -> SplitResult:
    """``urlsplit`` of an endpoint, a scheme-less ``host:port`` included (its netloc is ``host:port``)."""
    return urlsplit("//" + endpoint if schemeless(endpoint) else endpoint)


def _endpoint(raw: Any) -> str:
    accepted = _ENDPOINT_ACCEPTED
    if not isinstance(raw, str):
        raise _Invalid(accepted)
    text = raw.strip()
    # Whitespace/control characters (urlsplit silently drops some of them) and undecodable text make
    # every export request fail; a fragment is meaningless in a request URL.
    if _URL_JUNK.search(text) or not _utf8(text):
        raise _Invalid(accepted + " (no spaces or control characters)")
    try:
        parts = endpoint_parts(text)
        port = parts.port
    except ValueError:
        raise _Invalid(accepted) from None
    if not parts.hostname or port == 0 or "#" in text:
        raise _Invalid(accepted)
    if schemeless(text):
        # The spec's gRPC form: host[:port] and nothing else (a path or credentials need a URL).
        if parts.path or parts.query or "@" in text:
            raise _Invalid(accepted)
    elif parts.scheme not in ("http", "https"):
        raise _Invalid(accepted)
    return text


_URL_JUNK = deferred(globals(), "_URL_JUNK", r"[\x00-\x20\x7f]")


def _existing_file(raw: Any) -> str:
    if isinstance(raw, (str, os.PathLike)):
        path = os.fspath(raw)
        if isinstance(path, str) and path.strip() and os.path.isfile(path):
            return path
    raise _Invalid("the path of an existing, readable file (PEM)")


def _directory(raw: Any) -> str:
    if isinstance(raw, (str, os.PathLike)):
        path = os.fspath(raw)
        if isinstance(path, str) and path.strip() and _utf8(path) and "\x00" not in path and (
                not os.path.exists(path) or os.path.isdir(path)):
            return path
    raise _Invalid("the path of a directory (created if missing), not an existing file")


def _log_level(raw: Any) -> int:
    accepted = ("a logging level: NOTSET, DEBUG, INFO, WARNING, ERROR, CRITICAL, their numbers (0, 10, 20, 30, 40, "
                "50), or a level registered with logging.addLevelName")
    if isinstance(raw, bool):
        raise _Invalid(accepted)
    number: int | None = None
    if isinstance(raw, int):
        number = raw
    elif isinstance(raw, str):
        text = raw.strip().upper()
        if text.isascii() and text.isdigit():  # str.isdigit() is also true for "²", which int() rejects
            number = int(text)
        else:
            level = logging.getLevelName(text)
            if isinstance(level, int):
                return level
    # A bare number is a level only when it has a name: 5 or 25 is most likely a typo (or a scale of 1-5).
    if number is not None and isinstance(logging.getLevelName(number), str) and \
            not logging.getLevelName(number).startswith("Level "):
        return number
    raise _Invalid(accepted)


def _patterns(raw: Any) -> tuple[str, ...]:
    accepted = "regular expressions: a JSON list of strings, or one pattern per line"
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError:
                raise _Invalid(accepted) from None
        else:
            # Newline-separated, because a regex may contain commas ("\d{1,3}").
            items = [line for line in text.splitlines() if line.strip()]
    elif isinstance(raw, Iterable) and not isinstance(raw, (bytes, Mapping)):
        items = list(raw)
    else:
        raise _Invalid(accepted)
    if not all(isinstance(i, str) for i in items):
        raise _Invalid(accepted)
    for item in items:
        try:
            compiled = re.compile(item)
        except re.error as exc:
            raise _Invalid(f"{accepted}; {item!r} does not compile: {exc}") from None
        if compiled.fullmatch("") is not None:
            raise _Invalid(f"{accepted}; {item!r} matches the empty string (it would redact between every "
                           "character)")
        problem = _backtracking_risk(item)
        if problem is not None:
            raise _Invalid(f"{accepted} that cannot backtrack catastrophically; {item!r} has {problem} (it would "
                           "run on the export thread for every string). Rewrite it with a character class, a "
                           "bounded repeat {m,n}, or (Python 3.11+) an atomic group (?>...) / possessive a++")
    return tuple(items)


def _backtracking_risk(pattern: str) -> str | None:
    """Why ``pattern`` may take exponential time on some input (Python's ``re`` backtracks), or None.

    A static check on the parsed pattern, since ``re`` cannot be interrupted: it rejects the two shapes behind
    catastrophic backtracking, an unbounded repeat inside a repeat (``(a+)+``, ``(\\w+\\s?)*``) and a repeat
    over alternatives that can start with the same character (``(a|ab)*``). Atomic groups and possessive
    repeats never backtrack into and are accepted. It errs on the side of rejecting (``(?:ab+)+`` is in fact
    safe): the message says how to rewrite it."""
    try:
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser as parser  # type: ignore[attr-defined]
    except ImportError:  # Python 3.10
        import sre_constants as c
        import sre_parse as parser
    try:
        tree = parser.parse(pattern)
    except Exception:
        return None
    repeats = {c.MAX_REPEAT, c.MIN_REPEAT}
    opaque = {getattr(c, "POSSESSIVE_REPEAT", None), getattr(c, "ATOMIC_GROUP", None)} - {None}

    def children(op: Any, av: Any) -> list[Any]:
        if op in repeats:
            return [av[2]]
        if op == c.SUBPATTERN:
            return [av[-1]]
        if op == c.BRANCH:
            return list(av[1])
        if op in (c.ASSERT, c.ASSERT_NOT):
            return [av[1]]
        if op == c.GROUPREF_EXISTS:
            return [x for x in av[1:] if x is not None]
        return []

    def first_chars(items: Any) -> set[int] | None:
        """Characters (below 256) the sequence can start with; None: cannot tell (treated as anything)."""
        for op, av in items:
            if op == c.LITERAL:
                return {av}
            if op == c.IN:
                chars: set[int] = set()
                for iop, iav in av:
                    if iop == c.LITERAL:
                        chars.add(iav)
                    elif iop == c.RANGE:
                        chars.update(range(iav[0], min(iav[1], 255) + 1))
                    else:
                        return None
                return chars
            if op == c.SUBPATTERN:
                return first_chars(av[-1])
            if op == c.AT:
                continue
            return None
        return None

    def walk(items: Any, in_repeat: bool) -> str | None:
        for op, av in items:
            if op in opaque:
                continue
            if op in repeats:
                high = av[1]
                unbounded = high == c.MAXREPEAT
                if unbounded and in_repeat:
                    return "an unbounded repeat inside another repeat"
                if unbounded:
                    body = list(av[2])
                    while len(body) == 1 and body[0][0] == c.SUBPATTERN:
                        body = list(body[0][1][-1])
                    # The parser factors common prefixes out (a|aa -> a(?:|a)): check every alternation at the
                    # body's top level; an empty alternative starts like anything.
                    for bop, bav in body:
                        if bop != c.BRANCH:
                            continue
                        seen: set[int] = set()
                        for alternative in bav[1]:
                            chars = first_chars(alternative)
                            if chars is None or chars & seen:
                                return "a repeat over alternatives that can start alike"
                            seen |= chars
                found = walk(av[2], in_repeat or high > 1)
            else:
                found = None
                for child in children(op, av):
                    found = found or walk(child, in_repeat)
            if found:
                return found
        return None

    return walk(tree, False)


def _config_path(raw: Any) -> str:
    if isinstance(raw, (str, os.PathLike)):
        path = os.fspath(raw)
        if isinstance(path, str) and path.strip() and _utf8(path) and "\x00" not in path:
            return path.strip()
    raise _Invalid("the path of a declarative configuration file (.yaml, .yml or .json)")


def _dsn(raw: Any) -> str:
    accepted = "a Sentry DSN such as https://<public_key>@o0.ingest.sentry.io/<project_id>"
    if not isinstance(raw, str):
        raise _Invalid(accepted)
    text = raw.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _Invalid(accepted) from None
    project = parts.path.rstrip("/").rsplit("/", 1)[-1]
    numeric = project.isascii() and project.isdigit()  # isdigit() alone accepts "²"
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.username or not numeric:
        raise _Invalid(accepted)
    return text


SENTRY_OTLP_SIGNALS = ("traces", "logs")
"""What Sentry's OTLP endpoints accept (it has none for metrics)."""


def _sentry_otlp(raw: Any) -> tuple[str, ...]:
    accepted = "off, traces, logs or traces,logs (Sentry has no OTLP endpoint for metrics)"
    if isinstance(raw, bool):
        raise _Invalid(accepted)
    try:
        names = [n.lower() for n in _split_list(raw)]
    except _Invalid:
        raise _Invalid(accepted) from None
    if names in (["off"], ["none"], ["false"]):
        return ()
    if not names or any(n not in SENTRY_OTLP_SIGNALS for n in names):
        raise _Invalid(accepted)
    return tuple(s for s in SENTRY_OTLP_SIGNALS if s in names)


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "otelkit_correlation_ratio",  # whole-event sampling by correlation ID: otelkit/_sampling.py
)
# Samplers that take OTEL_TRACES_SAMPLER_ARG (a ratio).
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio", "otelkit_correlation_ratio")
# Spec sampler names otelkit knows but does not ship (remote sampling needs an agent).
UNSUPPORTED_SAMPLERS = ("jaeger_remote", "parentbased_jaeger_remote", "xray")


def _sampler(raw: Any) -> str:
    accepted = "one of " + ", ".join(SAMPLERS)
    if isinstance(raw, str):
        key = raw.strip().lower()
        if key in SAMPLERS:
            return key
        if key in UNSUPPORTED_SAMPLERS:
            raise _Invalid(f"{accepted} ({key} needs a remote sampling agent and is not supported by otelkit)")
    raise _Invalid(accepted)


# Propagators otelkit knows by name, and the package that provides each one.
KNOWN_PROPAGATORS: Mapping[str, str] = MappingProxyType({
    "tracecontext": "opentelemetry-api",
    "baggage": "opentelemetry-api",
    "b3": "opentelemetry-propagator-b3",
    "b3multi": "opentelemetry-propagator-b3",
    "jaeger": "opentelemetry-propagator-jaeger",
    "xray": "opentelemetry-propagator-aws-xray",
    "ottrace": "opentelemetry-propagator-ot-trace",
    "sentry": "sentry-sdk",
})


def available_propagators() -> frozenset[str]:
    """Propagator names registered under the ``opentelemetry_propagator`` entry point group."""
    from importlib.metadata import entry_points

    return frozenset(ep.name for ep in entry_points(group="opentelemetry_propagator"))


def _propagators(raw: Any) -> tuple[str, ...]:
    available = available_propagators()
    accepted = "a comma-separated list of " + ", ".join(sorted(available)) + " (or none)"
    try:
        names = [n.lower() for n in _split_list(raw)]
    except _Invalid:
        raise _Invalid(accepted) from None
    names = list(dict.fromkeys(names))
    if names == ["none"]:
        return ()
    if not names:  # ",,," is a typo, not a request to turn propagation off (that is "none")
        raise _Invalid(accepted)
    for name in names:
        if name not in available:
            if name in KNOWN_PROPAGATORS:
                raise _Invalid(f"{accepted}; {name!r} needs the package {KNOWN_PROPAGATORS[name]} installed")
            raise _Invalid(accepted)
    return tuple(names)


_MAX_CORRELATION_HEADERS = 16


def _correlation_headers(raw: Any) -> tuple[str, ...]:
    """A comma list of header names (RFC 9110 tokens, at most 64 characters, at most 16 names), or ``none``."""
    accepted = ("a comma-separated list of at most 16 header names (letters, digits and !#$%&'*+-.^_`|~, "
                "at most 64 characters each), or none")
    try:
        names = _split_list(raw)
    except _Invalid:
        raise _Invalid(accepted) from None
    if [n.lower() for n in names] == ["none"]:
        return ()
    names = list(dict.fromkeys(names))
    if (not names or len(names) > _MAX_CORRELATION_HEADERS
            or any(len(n) > 64 or _HEADER_NAME.fullmatch(n) is None for n in names)):
        raise _Invalid(accepted)
    return tuple(names)


SEMCONV_OPT_INS = ("http", "http/dup", "database", "database/dup", "gen_ai_latest_experimental")


def _semconv_opt_in(raw: Any) -> str:
    """``OTEL_SEMCONV_STABILITY_OPT_IN``: the contrib opt-in names, normalised to one comma list."""
    accepted = "a comma-separated list of " + ", ".join(SEMCONV_OPT_INS) + " (or none: the older conventions)"
    try:
        names = list(dict.fromkeys(n.lower() for n in _split_list(raw)))
    except _Invalid:
        raise _Invalid(accepted) from None
    if names == ["none"]:
        return "none"
    if not names or any(n not in SEMCONV_OPT_INS for n in names):
        raise _Invalid(accepted)
    return ",".join(names)


# --- the parameter table --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # compared by identity: generating __eq__/__hash__ cost start-up
class Param:
    """One setting: where it lives in :class:`Settings`, where it is read from, how it is cast.

    For ``per_signal`` params, ``field`` is the attribute of :class:`SignalSettings`;
    ``env`` holds the generic variables and the per-signal variable is
    ``signal_env`` with ``{SIGNAL}`` replaced by ``TRACES``/``METRICS``/``LOGS``.
    """

    field: str
    env: tuple[str, ...]
    cast: Caster
    default: Any
    doc: str
    arg: str | None = None
    secret: bool = False
    duration: bool = False
    per_signal: bool = False
    signal_env: str | None = None
    default_doc: str | None = None
    minimum: float | None = None  # durations: the shortest accepted, in seconds (0 and tiny values spin a thread)

    def env_for(self, signal: str | None) -> tuple[str, ...]:
        if signal is None or not self.per_signal or self.signal_env is None:
            return self.env
        return (self.signal_env.replace("{SIGNAL}", signal.upper()), *self.env)


def _p(name: str, env: str | tuple[str, ...], cast: Caster, default: Any, doc: str, **kw: Any) -> Param:
    return Param(name, (env,) if isinstance(env, str) else env, cast, default, doc, **kw)


_OTLP = "OTEL_EXPORTER_OTLP_"
_SIG = "OTEL_EXPORTER_OTLP_{SIGNAL}_"

PARAMS: tuple[Param, ...] = (
    _p("config_file", "OTEL_CONFIG_FILE", _config_path, None,
       "Declarative configuration file (YAML, OpenTelemetry file_format 1.x; needs `otelkit[config-file]`). When "
       "set, the file replaces the environment: see docs/config-file.md.", arg="config_file", default_doc="unset"),
    _p("disabled", "OTEL_SDK_DISABLED", _bool, False, "Turn all telemetry off (no-op providers).", arg="disabled"),
    _p("strict", "OTELKIT_STRICT", _bool, True,
       "Bad configuration raises ConfigError; false: one warning per bad value and the safe default.", arg="strict"),
    _p("debug", "OTELKIT_DEBUG", _bool, False, "Log otelkit's own decisions at DEBUG on the `otelkit` logger.",
       arg="debug"),
    _p("service_name", ("OTELKIT_SERVICE_NAME", "OTEL_SERVICE_NAME"), _service_name, None,
       "`service.name`. Else `service.name` in OTEL_RESOURCE_ATTRIBUTES, else derived from the program (warning).",
       arg="service_name", default_doc="derived from the program"),
    _p("service_version", "OTELKIT_SERVICE_VERSION", _str, None,
       "`service.version`. Else `service.version` in OTEL_RESOURCE_ATTRIBUTES, else the installed version of the "
       "program's distribution (not of a runner such as pytest, gunicorn or celery).", arg="service_version",
       default_doc="installed distribution version"),
    _p("environment", "OTELKIT_ENVIRONMENT", _str, None,
       "`deployment.environment.name` (e.g. production, staging). Else `deployment.environment.name` (or the "
       "older `deployment.environment`) in OTEL_RESOURCE_ATTRIBUTES.", arg="environment"),
    _p("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", _resource_attrs, MappingProxyType({}),
       "Extra resource attributes `k=v,k2=v2`; the argument's keys win over the variable's.",
       arg="resource_attributes", default_doc="{}"),
    # OTLP export, generic + per signal.
    _p("exporters", (), _exporters(()), ("auto",), "Exporters per signal.", per_signal=True,
       signal_env="OTEL_{SIGNAL}_EXPORTER", default_doc="auto"),
    _p("endpoint", _OTLP + "ENDPOINT", _endpoint, None,
       "OTLP endpoint, an http(s) URL; for grpc also `host:port` (TLS unless `insecure`). Generic: `/v1/<signal>` "
       "is appended for http/protobuf; per-signal: used as is.",
       arg="endpoint", per_signal=True, signal_env=_SIG + "ENDPOINT", default_doc="unset"),
    _p("protocol", _OTLP + "PROTOCOL", _choice(("grpc", "http/protobuf"), aliases={"http": "http/protobuf"}),
       "http/protobuf", "OTLP transport: grpc or http/protobuf (port 4317 or a scheme-less endpoint implies grpc).",
       arg="protocol", per_signal=True, signal_env=_SIG + "PROTOCOL"),
    _p("headers", _OTLP + "HEADERS", _headers, MappingProxyType({}),
       "Headers sent with every export, `k=v,k2=v2` (printed masked).", arg="headers", secret=True,
       per_signal=True, signal_env=_SIG + "HEADERS", default_doc="{}"),
    _p("timeout", _OTLP + "TIMEOUT", _ms, 10.0, "Export timeout (ms in the environment, seconds as argument).",
       arg="timeout", duration=True, per_signal=True, signal_env=_SIG + "TIMEOUT", default_doc="10000 ms"),
    _p("compression", _OTLP + "COMPRESSION", _choice(("gzip", "none")), "none", "OTLP compression: gzip or none.",
       arg="compression", per_signal=True, signal_env=_SIG + "COMPRESSION"),
    _p("certificate", _OTLP + "CERTIFICATE", _existing_file, None, "CA certificate (PEM) to verify the collector.",
       arg="certificate", per_signal=True, signal_env=_SIG + "CERTIFICATE"),
    _p("client_key", _OTLP + "CLIENT_KEY", _existing_file, None, "Client private key (PEM) for mTLS.",
       arg="client_key", per_signal=True, signal_env=_SIG + "CLIENT_KEY"),
    _p("client_certificate", _OTLP + "CLIENT_CERTIFICATE", _existing_file, None, "Client certificate (PEM) for mTLS.",
       arg="client_certificate", per_signal=True, signal_env=_SIG + "CLIENT_CERTIFICATE"),
    _p("insecure", _OTLP + "INSECURE", _bool, None,
       "gRPC with a scheme-less endpoint (`collector:4317`): true sends plaintext, false (default) uses TLS. "
       "An `http://` endpoint is always plaintext, an `https://` one always TLS.",
       arg="insecure", per_signal=True, signal_env=_SIG + "INSECURE"),
    # Traces.
    _p("sampler", "OTEL_TRACES_SAMPLER", _sampler, "parentbased_always_on", "Head sampler (spec names).",
       arg="sampler"),
    _p("sampler_arg", "OTEL_TRACES_SAMPLER_ARG", _float(0.0, 1.0), None,
       "Ratio for the traceidratio and otelkit_correlation_ratio samplers, 0..1 (default 1.0).",
       arg="sampler_arg"),
    _p("propagators", "OTEL_PROPAGATORS", _propagators, ("tracecontext", "baggage"),
       "Context propagators: tracecontext, baggage, b3, b3multi, jaeger, xray, sentry (installed ones), none.",
       arg="propagators", default_doc="tracecontext,baggage"),
    _p("bsp.schedule_delay", "OTEL_BSP_SCHEDULE_DELAY", _ms, 1.0, "Span batch delay (spec default: 5000 ms).",
       duration=True, default_doc="1000 ms"),
    _p("bsp.export_timeout", "OTEL_BSP_EXPORT_TIMEOUT", _ms, 30.0, "Span batch export timeout.", duration=True,
       default_doc="30000 ms"),
    _p("bsp.max_queue_size", "OTEL_BSP_MAX_QUEUE_SIZE", _int(1), 8192,
       "Spans queued before dropping (spec default: 2048, which drops spans under ordinary bursts)."),
    _p("bsp.max_export_batch_size", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _int(1), 2048,
       "Spans per export (<= queue size; spec default: 512, which halves throughput under load)."),
    _p("blrp.schedule_delay", "OTEL_BLRP_SCHEDULE_DELAY", _ms, 1.0, "Log batch delay.", duration=True,
       default_doc="1000 ms"),
    _p("blrp.export_timeout", "OTEL_BLRP_EXPORT_TIMEOUT", _ms, 30.0, "Log batch export timeout.",
       duration=True, default_doc="30000 ms"),
    _p("blrp.max_queue_size", "OTEL_BLRP_MAX_QUEUE_SIZE", _int(1), 8192,
       "Log records queued before dropping (spec default: 2048)."),
    _p("blrp.max_export_batch_size", "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", _int(1), 512,
       "Log records per export (<= queue size)."),
    # Metrics.
    _p("metric_export_interval", "OTEL_METRIC_EXPORT_INTERVAL", _ms, 60.0, "Metric export interval (at least 100 ms).",
       arg="metric_export_interval", duration=True, default_doc="60000 ms", minimum=0.1),
    _p("metric_export_timeout", "OTEL_METRIC_EXPORT_TIMEOUT", _ms, 30.0, "Metric export timeout.",
       arg="metric_export_timeout", duration=True, default_doc="30000 ms"),
    _p("exemplar_filter", "OTEL_METRICS_EXEMPLAR_FILTER", _choice(("always_on", "always_off", "trace_based")),
       "trace_based", "Which measurements become exemplars: always_on, always_off, trace_based."),
    _p("metric_cardinality_limit", "OTELKIT_METRIC_CARDINALITY_LIMIT", _int(2, 1_000_000), 2000,
       "Attribute sets per metric stream; beyond it new sets go to the `otel.metric.overflow=true` series "
       "(counted in the shutdown report)."),
    _p("prometheus_host", "OTEL_EXPORTER_PROMETHEUS_HOST", _str, "localhost",
       "Host of the `prometheus` metrics scrape endpoint."),
    _p("prometheus_port", "OTEL_EXPORTER_PROMETHEUS_PORT", _port, 9464,
       "Port of the `prometheus` metrics scrape endpoint."),
    _p("prometheus_sd_dir", "OTELKIT_PROMETHEUS_SD_DIR", _directory, None,
       "Several processes with the `prometheus` exporter: each serves its own port (the configured one when "
       "free, else any free one) and announces it in a Prometheus `file_sd` file in this directory "
       "(removed at exit).", default_doc="off"),
    # Limits.
    _p("limits.attribute_count", "OTEL_ATTRIBUTE_COUNT_LIMIT", _int(0), 128, "Max attributes per span/event/record."),
    # On by default (the spec's default is unlimited): one 5 MB attribute would otherwise make a whole
    # batch too large for the collector. -1 or "unlimited" turns it off.
    _p("limits.attribute_value_length", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", _optional_length, 8192,
       "Max length of a string attribute value (-1: unlimited)."),
    _p("limits.span_attribute_count", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", _int(0), None,
       "Max attributes per span.", default_doc="OTEL_ATTRIBUTE_COUNT_LIMIT"),
    _p("limits.span_attribute_value_length", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", _optional_length, None,
       "Max length of a span attribute value.", default_doc="OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
    _p("limits.span_event_count", "OTEL_SPAN_EVENT_COUNT_LIMIT", _int(0), 128, "Max events per span."),
    _p("limits.span_link_count", "OTEL_SPAN_LINK_COUNT_LIMIT", _int(0), 128, "Max links per span."),
    _p("limits.event_attribute_count", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", _int(0), 128,
       "Max attributes per span event."),
    _p("limits.link_attribute_count", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", _int(0), 128,
       "Max attributes per span link."),
    _p("limits.logrecord_attribute_count", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT", _int(0), None,
       "Max attributes per log record.", default_doc="OTEL_ATTRIBUTE_COUNT_LIMIT"),
    _p("limits.logrecord_attribute_value_length", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT", _optional_length,
       None, "Max length of a log record attribute value.", default_doc="OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"),
    # Instrumentation and logs.
    _p("instrument", "OTELKIT_INSTRUMENT", _str_list, None,
       "Integrations to enable (comma list); default: every available one.", arg="instrument",
       default_doc="all available"),
    _p("disabled_instrumentations", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", _str_list, (),
       "Integrations to skip (comma list).", arg="disabled_instrumentations", default_doc="none"),
    _p("instrument_entry_points", "OTELKIT_INSTRUMENT_ENTRY_POINTS", _bool, False,
       "Also load every installed `opentelemetry_instrumentor` entry point.", arg="instrument_entry_points"),
    _p("system_metrics", "OTELKIT_SYSTEM_METRICS", _bool, True, "Process/runtime metrics (CPU, memory, GC).",
       arg="system_metrics"),
    _p("system_metrics_excluded", "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS", _str_list, (),
       "System metrics to leave out: comma list of names or globs (`process.cpu.*`).", default_doc="none"),
    _p("pika_queue_depth", "OTELKIT_PIKA_QUEUE_DEPTH", _bool, True,
       "pika / aio-pika: report consumed queues' depth (a passive declare at each metric collection)."),
    _p("nats_queue_depth", "OTELKIT_NATS_QUEUE_DEPTH", _bool, True,
       "nats-py: report JetStream consumers' pending count at each metric collection."),
    _p("excluded_urls", "OTEL_PYTHON_EXCLUDED_URLS", _str, None,
       "Web frameworks: comma list of URL regexes not traced (health and metrics endpoints by default).",
       default_doc="health/metrics paths"),
    _p("fastapi_excluded_urls", "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", _str, None,
       "FastAPI only: overrides OTEL_PYTHON_EXCLUDED_URLS.", default_doc="OTEL_PYTHON_EXCLUDED_URLS"),
    _p("starlette_excluded_urls", "OTEL_PYTHON_STARLETTE_EXCLUDED_URLS", _str, None,
       "Starlette only: overrides OTEL_PYTHON_EXCLUDED_URLS.", default_doc="OTEL_PYTHON_EXCLUDED_URLS"),
    _p("flask_excluded_urls", "OTEL_PYTHON_FLASK_EXCLUDED_URLS", _str, None,
       "Flask only: overrides OTEL_PYTHON_EXCLUDED_URLS.", default_doc="OTEL_PYTHON_EXCLUDED_URLS"),
    _p("django_excluded_urls", "OTEL_PYTHON_DJANGO_EXCLUDED_URLS", _str, None,
       "Django only: overrides OTEL_PYTHON_EXCLUDED_URLS.", default_doc="OTEL_PYTHON_EXCLUDED_URLS"),
    _p("semconv_opt_in", "OTEL_SEMCONV_STABILITY_OPT_IN", _semconv_opt_in, "http,database",
       "Semantic conventions of the contrib instrumentations (comma list): http, http/dup, database, "
       "database/dup, gen_ai_latest_experimental, or none (the older ones); default: the stable HTTP and database "
       "ones.",
       default_doc="http,database"),
    _p("scrub.enabled", "OTELKIT_SCRUB", _bool, True, "Redact secrets (URL credentials, tokens, SQL literals).",
       arg="scrub"),
    _p("scrub.extra_patterns", "OTELKIT_SCRUB_EXTRA_PATTERNS", _patterns, (),
       "More regexes to redact: a JSON list, or one per line.", arg="scrub_extra_patterns", default_doc="none"),
    _p("log_level", "OTELKIT_LOG_LEVEL", _log_level, logging.INFO,
       "Lowest `logging` level exported over OTLP. Only when logs are exported is the root logger lowered to "
       "it; your handlers still show only your level.", arg="log_level", default_doc="INFO"),
    _p("log_correlation", "OTELKIT_LOG_CORRELATION", _bool, True,
       "Put trace_id, span_id, correlation_id on every log record.", arg="log_correlation"),
    _p("correlation_header", "OTELKIT_CORRELATION_HEADER", _header_name, "X-Correlation-ID",
       "Request header the web-framework integrations take the correlation ID from (e.g. `X-Request-ID`); a "
       "missing or malformed one is replaced by a fresh ID, and the response carries it in `X-Correlation-ID`."),
    # Sentry.
    _p("sentry.dsn", ("OTELKIT_SENTRY_DSN", "SENTRY_DSN"), _dsn, None, "Sentry DSN; errors are linked to traces.",
       arg="sentry_dsn", secret=True, default_doc="off"),
    _p("sentry.environment", "SENTRY_ENVIRONMENT", _str, None, "Sentry environment.", arg="sentry_environment",
       default_doc="environment"),
    _p("sentry.release", "SENTRY_RELEASE", _str, None, "Sentry release.", arg="sentry_release",
       default_doc="service_version"),
    _p("sentry.traces_sample_rate", "SENTRY_TRACES_SAMPLE_RATE", _float(0.0, 1.0), 0.0,
       "Sentry's own performance tracing rate (OTel does the tracing).", arg="sentry_traces_sample_rate"),
    _p("sentry.trace_url_template", "OTELKIT_TRACE_URL_TEMPLATE", _str, None,
       "Link put on Sentry events, e.g. `http://grafana:3000/explore?...{trace_id}`.", arg="trace_url_template"),
    _p("sentry.send_default_pii", "OTELKIT_SENTRY_SEND_DEFAULT_PII", _bool, False,
       "Let Sentry attach personal data (users, IPs, cookies).", arg="send_default_pii"),
    _p("sentry.otlp", "OTELKIT_SENTRY_OTLP", _sentry_otlp, (),
       "Also send these signals to Sentry's OTLP endpoint (from the DSN), next to your own exporters: off, "
       "traces, logs or traces,logs. Needs a DSN; refuses SENTRY_TRACES_SAMPLE_RATE > 0 with traces (every "
       "span would reach Sentry twice). See docs/sentry.md.", arg="sentry_otlp", default_doc="off"),
    _p("shutdown_timeout", "OTELKIT_SHUTDOWN_TIMEOUT", _ms, 5.0,
       "Deadline for flushing all signals at shutdown and exit.", arg="shutdown_timeout", duration=True,
       default_doc="5000 ms"),
    _p("child_exit_timeout", "OTELKIT_CHILD_EXIT_TIMEOUT", _ms, 2.0,
       "Deadline for a forked or pool child leaving through `os._exit` (or SIGTERM while idle) to flush "
       "its telemetry.", duration=True, default_doc="2000 ms"),
    _p("console_on_auto", "OTELKIT_CONSOLE", _bool, True,
       "With no collector found, print traces and logs readably on the terminal.", arg="console_on_auto"),
    _p("spool_dir", "OTELKIT_SPOOL_DIR", _directory, None,
       "Directory where spans and log records the collector cannot take (outage, restart) are kept "
       "until it is back; may be shared by processes.", arg="spool_dir", default_doc="off"),
    _p("spool_max_bytes", "OTELKIT_SPOOL_MAX_BYTES", _int(1024 * 1024, 1 << 40), 256 * 1024 * 1024,
       "Bytes the spool may hold per signal; beyond it new data is dropped (`spool_full`).",
       arg="spool_max_bytes", default_doc="268435456 (256 MiB)"),
    _p("correlation_headers", "OTELKIT_CORRELATION_HEADERS", _correlation_headers, DEFAULT_CORRELATION_HEADERS,
       "Message headers a consumer adopts a foreign correlation ID from, first found wins (after otelkit's own "
       "baggage and `otelkit-correlation-id`, and the AMQP `correlation_id` property); `none` turns it off. "
       "An invalid value there is never trusted: a fresh ID."),
)

_EXPORTER_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "traces": ("auto", "otlp", "console", "none"),
    "metrics": ("auto", "otlp", "console", "prometheus", "none"),
    "logs": ("auto", "otlp", "console", "none"),
})

_BY_FIELD = {p.field: p for p in PARAMS}
SIGNAL_FIELDS = tuple(p.field for p in PARAMS if p.per_signal)


def _arguments() -> dict[str, tuple[Param, str | None]]:
    """Every keyword ``resolve()`` accepts -> (param, signal or None)."""
    out: dict[str, tuple[Param, str | None]] = {}
    for p in PARAMS:
        if p.per_signal:
            for s in SIGNALS:
                out[f"{s}_{p.field}" if p.field != "exporters" else f"{s}_exporter"] = (p, s)
        if p.arg:
            out[p.arg] = (p, None)
    return out


ARGUMENTS: Mapping[str, tuple[Param, str | None]] = MappingProxyType(_arguments())


# --- the resolver ---------------------------------------------------------------------------------


class _Resolver:
    def __init__(self, kwargs: Mapping[str, Any], environ: Mapping[str, str], strict: bool,
                 file: Any = None) -> None:
        self.kwargs = kwargs
        self.file = file  # otelkit._config_file.FileSettings: between the arguments and the environment
        self.environ = environ
        self.strict = strict
        self.sources: dict[str, str] = {}
        self._warned: set[str] = set()

    def env(self, name: str) -> str | None:
        value = self.environ.get(name)
        return value if value is not None and value.strip() != "" else None

    def fail(self, where: str, value: Any, accepted: str, *, secret: bool, default: Any,
             default_doc: str | None = None) -> Any:
        shown = repr(value) if not secret else (
            repr(mask_url(value)) if isinstance(value, str) and "://" in value else MASK)
        if len(shown) > 200:  # a 100k-character value must not become a 100k-character message
            shown = f"{shown[:120]}... ({len(value) if isinstance(value, (str, bytes)) else len(shown)} characters)"
        message = f"{where}={shown} is not valid: expected {accepted}"
        if self.strict:
            raise ConfigError(message)
        shown_default = default_doc if default_doc is not None else repr(default)
        # A generic variable is read once per signal: still one warning for one bad value.
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(f"otelkit: {message}; using the default ({shown_default}) instead", ConfigWarning,
                          stacklevel=caller_stacklevel())
        return default

    def candidates(self, p: Param, signal: str | None) -> list[tuple[str, str, Any]]:
        """(source label, where (for messages), raw value) in precedence order."""
        out: list[tuple[str, str, Any]] = []
        if signal is not None and p.per_signal:
            name = f"{signal}_exporter" if p.field == "exporters" else f"{signal}_{p.field}"
            if self.kwargs.get(name) is not None:
                out.append(("argument", f"argument {name}", self.kwargs[name]))
        if p.arg and self.kwargs.get(p.arg) is not None:
            out.append(("argument", f"argument {p.arg}", self.kwargs[p.arg]))
        if self.file is not None:
            found = self.file.values.get(f"{signal}.{p.field}" if signal is not None and p.per_signal else p.field)
            if found is not None:
                raw, key = found
                out.append((self.file.label(key), f"OTEL_CONFIG_FILE {self.file.path!r}: {key}", raw))
        for var in p.env_for(signal):
            raw = self.env(var)
            if raw is not None:
                out.append((var, f"environment variable {var}", raw))
        return out

    def get(self, p: Param, signal: str | None = None, *, cast: Caster | None = None,
            default: Any = dataclasses.MISSING) -> tuple[Any, str]:
        """The first candidate that casts; a bad value raises (strict) or warns and falls back to the default."""
        default = p.default if default is dataclasses.MISSING else default
        caster = cast or p.cast
        for source, where, raw in self.candidates(p, signal):
            try:
                if p.duration:
                    value = _millis(raw, from_env=source != "argument")  # the file's durations are ms too
                    if p.minimum is not None and value < p.minimum:
                        unit = f"{p.minimum:g} seconds" if source == "argument" else f"{p.minimum * 1000:g} ms"
                        raise _Invalid(f"a duration of at least {unit}")
                else:
                    value = caster(raw)
            except _Invalid as exc:
                return self.fail(where, raw, exc.accepted, secret=p.secret, default=default,
                                 default_doc=p.default_doc), "default"
            return value, source
        return default, "default"

    def field(self, p: Param, **kw: Any) -> Any:
        value, source = self.get(p, **kw)
        self.sources[p.field] = source
        return value


def _derived_endpoint(base: str, signal: str, protocol: str) -> str:
    if protocol == "grpc":
        return base
    parts = urlsplit(base)  # the path goes before a query string ("?tenant=a"), not after it
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/v1/" + signal))


def unknown_arguments_message(unknown: Sequence[str], extra: Sequence[str] = ()) -> str:
    """``init(bad=...)``: name the argument, suggest the closest accepted one, say where the list is."""
    import difflib

    accepted = sorted({*ARGUMENTS, *extra})
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, accepted, n=1, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"otelkit.init() got unexpected keyword argument(s): {', '.join(hints)}. Accepted: "
            f"{', '.join(accepted)} (the README's configuration table lists each with its variable)")


def resolve(*, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Settings:
    """Resolve ``init()`` keyword arguments and the environment into validated :class:`Settings`.

    Pure apart from reading the environment (``environ`` defaults to ``os.environ``),
    the interpreter's program name and, for file settings, checking the file exists.
    Unknown keywords raise ``TypeError``; bad values raise :class:`ConfigError`
    (or warn with ``strict=False``). ``None`` means "not given" for every keyword.
    A configuration file (``OTEL_CONFIG_FILE`` in ``environ``, or ``config_file=``) replaces ``environ``;
    its ``${VAR}`` references are substituted from the process environment (upstream's loader).
    """
    unknown = sorted(k for k in kwargs if k not in ARGUMENTS)
    if unknown:
        raise TypeError(unknown_arguments_message(unknown, ("span_processors", "metric_readers", "log_processors")))
    env = os.environ if environ is None else environ

    # OTEL_CONFIG_FILE first: with a file, the spec says the environment is ignored (it enters only through
    # ${VAR} substitution inside the file), so the file takes the environment's place below the arguments.
    # How a file that cannot be used fails is decided before it is read: argument strict, else OTELKIT_STRICT.
    pre = _Resolver(kwargs, env, strict=True)
    pre.strict = bool(pre.field(_BY_FIELD["strict"]))
    config_file = pre.field(_BY_FIELD["config_file"])
    file = None
    if config_file is not None:
        from otelkit import _config_file

        try:
            file = _config_file.load(config_file, _resource_attrs)
        except _config_file.FileError as exc:
            if pre.strict:
                raise ConfigError(str(exc)) from None
            warnings.warn(f"otelkit: {exc}; ignoring the file (reading the environment instead)", ConfigWarning,
                          stacklevel=caller_stacklevel())
        else:
            env = MappingProxyType({})

    # strict decides how every other value fails, so it is resolved first and always strictly.
    r = _Resolver(kwargs, env, strict=True, file=file)
    r.sources["config_file"] = pre.sources["config_file"]
    strict = bool(r.field(_BY_FIELD["strict"]))
    r.strict = strict
    if file is not None:
        for key, value, accepted in file.problems:
            r.fail(f"OTEL_CONFIG_FILE {file.path!r}: {key}", value, accepted, secret=False, default=None,
                   default_doc="ignored")

    values: dict[str, Any] = {"strict": strict, "config_file": config_file if file is not None else None}
    for name in ("disabled", "debug", "sampler", "propagators", "metric_export_interval", "metric_export_timeout",
                 "exemplar_filter", "metric_cardinality_limit", "prometheus_host", "prometheus_port",
                 "prometheus_sd_dir", "instrument_entry_points", "semconv_opt_in", "excluded_urls",
                 "pika_queue_depth", "nats_queue_depth",
                 "fastapi_excluded_urls", "starlette_excluded_urls", "flask_excluded_urls", "django_excluded_urls",
                 "system_metrics", "log_level", "log_correlation", "correlation_header",
                 "shutdown_timeout", "child_exit_timeout",
                 "console_on_auto",
                 "spool_dir", "spool_max_bytes", "correlation_headers"):
        values[name] = r.field(_BY_FIELD[name])
    values["disabled_instrumentations"] = frozenset(r.field(_BY_FIELD["disabled_instrumentations"]))
    values["system_metrics_excluded"] = tuple(r.field(_BY_FIELD["system_metrics_excluded"]))
    instrument = r.field(_BY_FIELD["instrument"])
    values["instrument"] = None if instrument is None else tuple(instrument)

    _resolve_sampler_arg(r, values)
    _resolve_service(r, values)

    for signal in SIGNALS:
        values[signal] = _resolve_signal(r, signal)

    values["bsp"] = _resolve_batch(r, "bsp")
    values["blrp"] = _resolve_batch(r, "blrp")
    values["limits"] = _resolve_limits(r)
    values["scrub"] = ScrubSettings(
        enabled=r.field(_BY_FIELD["scrub.enabled"]),
        extra_patterns=tuple(r.field(_BY_FIELD["scrub.extra_patterns"])),
    )
    values["sentry"] = _resolve_sentry(r, values)
    return Settings(**values, sources=MappingProxyType(dict(sorted(r.sources.items()))))


def _resolve_sampler_arg(r: _Resolver, values: dict[str, Any]) -> None:
    arg = r.field(_BY_FIELD["sampler_arg"])
    if values["sampler"] in RATIO_SAMPLERS:
        if arg is None:
            arg = 1.0
    elif arg is not None:
        # The spec says the argument is ignored by samplers that take none; keep it out of Settings.
        arg = None
        r.sources["sampler_arg"] = "ignored (sampler takes no argument)"
    values["sampler_arg"] = arg


def _resolve_service(r: _Resolver, values: dict[str, Any]) -> None:
    env_attrs: Mapping[str, str] = {}
    env_label = "OTEL_RESOURCE_ATTRIBUTES"
    raw_env = r.env("OTEL_RESOURCE_ATTRIBUTES")
    if r.file is not None and "resource_attributes" in r.file.values:
        # The file's resource takes the variable's place (the environment is ignored with a file).
        file_attrs, key = r.file.values["resource_attributes"]
        env_attrs, env_label = MappingProxyType(dict(file_attrs)), r.file.label(key)
    elif raw_env is not None:
        try:
            env_attrs = _resource_attrs(raw_env)
        except _Invalid as exc:
            r.fail("environment variable OTEL_RESOURCE_ATTRIBUTES", raw_env, exc.accepted, secret=False, default={},
                   default_doc="{}")
    arg_attrs: Mapping[str, str] = {}
    if r.kwargs.get("resource_attributes") is not None:
        try:
            arg_attrs = _resource_attrs(r.kwargs["resource_attributes"])
        except _Invalid as exc:
            r.fail("argument resource_attributes", r.kwargs["resource_attributes"], exc.accepted, secret=False,
                   default={}, default_doc="{}")
    merged = {**env_attrs, **arg_attrs}
    r.sources["resource_attributes"] = (
        f"argument+{env_label}" if arg_attrs and env_attrs
        else "argument" if arg_attrs else env_label if env_attrs else "default"
    )

    def from_attrs(fieldname: str, keys: tuple[str, ...]) -> None:
        if r.sources.get(fieldname) != "default":
            return
        for key in keys:
            if merged.get(key, "").strip():
                values[fieldname] = merged[key].strip()
                r.sources[fieldname] = "argument resource_attributes" if key in arg_attrs else \
                    (env_label if env_label == "OTEL_RESOURCE_ATTRIBUTES" else f"{env_label} ({key})")
                return

    values["service_name"] = r.field(_BY_FIELD["service_name"])
    values["service_version"] = r.field(_BY_FIELD["service_version"])
    values["environment"] = r.field(_BY_FIELD["environment"])
    from_attrs("service_name", ("service.name",))
    from_attrs("service_version", ("service.version",))
    from_attrs("environment", ("deployment.environment.name", "deployment.environment"))

    if values["service_name"] is None:
        name, how = _resource.derive_service_name()
        values["service_name"] = name
        r.sources["service_name"] = f"derived from {how}"
    if values["service_version"] is None:
        version, how = _resource.derive_service_version()
        if version is not None:
            values["service_version"] = version
            r.sources["service_version"] = f"derived from {how}"
    values["resource_attributes"] = MappingProxyType(merged)


def _infer_protocol(endpoint: str | None) -> Protocol | None:
    if not endpoint:
        return None
    try:
        port = endpoint_parts(endpoint).port
    except ValueError:
        return None
    return "grpc" if port == 4317 else "http/protobuf" if port == 4318 else None


def _resolve_signal(r: _Resolver, signal: str) -> SignalSettings:
    def get(name: str, **kw: Any) -> tuple[Any, str]:
        value, source = r.get(_BY_FIELD[name], signal, **kw)
        r.sources[f"{signal}.{name}"] = source
        return value, source

    # Which endpoint applies: the per-signal one is used as is, a generic one gets /v1/<signal> for HTTP.
    endpoint, endpoint_source = get("endpoint")
    per_signal_endpoint = endpoint_source == f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT" or (
        endpoint_source == "argument" and r.kwargs.get(f"{signal}_endpoint") is not None) or (
        endpoint_source.startswith("OTEL_CONFIG_FILE "))  # the file's endpoints are per signal, used as is

    protocol, protocol_source = get("protocol")
    if protocol_source == "default":
        inferred = _infer_protocol(endpoint)
        if inferred is not None:
            protocol = inferred
            r.sources[f"{signal}.protocol"] = "default (inferred from the endpoint's port)"
        elif endpoint is not None and schemeless(endpoint):
            protocol = "grpc"
            r.sources[f"{signal}.protocol"] = "default (a scheme-less host:port endpoint is gRPC)"
    if endpoint is not None and protocol != "grpc" and schemeless(endpoint):
        # host:port is the gRPC form (the spec's "insecure" decides TLS); an HTTP request needs a URL.
        name = f"{signal}_endpoint" if per_signal_endpoint else "endpoint"
        where = f"argument {name}" if endpoint_source == "argument" else f"environment variable {endpoint_source}"
        endpoint = r.fail(where, endpoint, f"{_ENDPOINT_ACCEPTED} (the {signal} protocol is {protocol}, "
                          f"from {r.sources[f'{signal}.protocol']})", secret=False, default=None, default_doc="unset")
        r.sources[f"{signal}.endpoint"] = "default"
    if endpoint is not None and not per_signal_endpoint:
        endpoint = _derived_endpoint(endpoint, signal, protocol)

    exporters, exp_source = get("exporters", cast=_exporters(_EXPORTER_OPTIONS[signal]))
    if exp_source == "default" and endpoint is not None:
        # An explicit endpoint means "ship over OTLP": no probing, no console.
        exporters = ("otlp",)
        r.sources[f"{signal}.exporters"] = "default (an OTLP endpoint is configured)"

    headers, _ = get("headers")
    timeout, _ = get("timeout")
    compression, _ = get("compression")
    certificate, _ = get("certificate")
    client_key, key_source = get("client_key")
    client_certificate, cert_source = get("client_certificate")
    insecure, _ = get("insecure")
    if (client_key is None) != (client_certificate is None):
        missing = "client_certificate" if client_certificate is None else "client_key"
        given = key_source if client_certificate is None else cert_source
        given = f"argument {'client_key' if missing == 'client_certificate' else 'client_certificate'}" \
            if given == "argument" else given
        # Name the setting that was given as well as the ones that would complete it.
        where = (f"OTEL_EXPORTER_OTLP_{signal.upper()}_{missing.upper()} / OTEL_EXPORTER_OTLP_{missing.upper()} "
                 f"(or argument {missing}; {given} is set)")
        r.fail(where, None, f"both a client key and a client certificate for mTLS ({signal})", secret=False,
               default=None)
        client_key = client_certificate = None
    return SignalSettings(
        exporters=tuple(exporters), endpoint=endpoint, protocol=protocol, headers=MappingProxyType(dict(headers)),
        timeout=timeout, compression=compression, certificate=certificate, client_key=client_key,
        client_certificate=client_certificate, insecure=insecure,
    )


def _resolve_batch(r: _Resolver, prefix: str) -> BatchSettings:
    vals = {name: r.field(_BY_FIELD[f"{prefix}.{name}"])
            for name in ("schedule_delay", "export_timeout", "max_queue_size", "max_export_batch_size")}
    if vals["max_export_batch_size"] > vals["max_queue_size"] and \
            r.sources.get(f"{prefix}.max_export_batch_size") == "default":
        # Only the queue size was set (smaller than the default batch): the batch follows it; blaming the
        # batch-size variable the user never set would be wrong.
        vals["max_export_batch_size"] = vals["max_queue_size"]
        r.sources[f"{prefix}.max_export_batch_size"] = f"default (capped at {prefix}.max_queue_size)"
    elif vals["max_export_batch_size"] > vals["max_queue_size"]:
        var = f"OTEL_{prefix.upper()}_MAX_EXPORT_BATCH_SIZE"
        vals["max_export_batch_size"] = r.fail(
            var, vals["max_export_batch_size"], f"an integer <= {prefix.upper()} max queue size "
            f"({vals['max_queue_size']})", secret=False, default=min(512, vals["max_queue_size"]))
        r.sources[f"{prefix}.max_export_batch_size"] = "default"
    return BatchSettings(**vals)


def _resolve_limits(r: _Resolver) -> LimitSettings:
    def f(name: str) -> Any:
        return r.field(_BY_FIELD[f"limits.{name}"])

    count = f("attribute_count")
    length = f("attribute_value_length")
    span_count = f("span_attribute_count")
    span_length = f("span_attribute_value_length")
    log_count = f("logrecord_attribute_count")
    log_length = f("logrecord_attribute_value_length")
    # The signal-specific limits fall back to the general ones (spec), not to the table's default.
    return LimitSettings(
        attribute_count=count,
        attribute_value_length=length,
        span_attribute_count=count if span_count is None else span_count,
        span_attribute_value_length=length if r.sources["limits.span_attribute_value_length"] == "default"
        else span_length,
        span_event_count=f("span_event_count"),
        span_link_count=f("span_link_count"),
        event_attribute_count=f("event_attribute_count"),
        link_attribute_count=f("link_attribute_count"),
        logrecord_attribute_count=count if log_count is None else log_count,
        logrecord_attribute_value_length=length if r.sources["limits.logrecord_attribute_value_length"] == "default"
        else log_length,
    )


def _resolve_sentry(r: _Resolver, values: Mapping[str, Any]) -> SentrySettings:
    def f(name: str) -> Any:
        return r.field(_BY_FIELD[f"sentry.{name}"])

    environment = f("environment")
    if environment is None and values.get("environment"):
        environment = values["environment"]
        r.sources["sentry.environment"] = "environment"
    release = f("release")
    if release is None and values.get("service_version"):
        release = values["service_version"]
        r.sources["sentry.release"] = "service_version"
    traces_sample_rate = f("traces_sample_rate")
    otlp = f("otlp")
    if "traces" in otlp and traces_sample_rate > 0:
        # Sentry's own transactions and otelkit's OTLP spans would describe the same operations twice.
        source = r.sources.get("sentry.otlp", "OTELKIT_SENTRY_OTLP")
        where = "argument sentry_otlp" if source == "argument" else f"environment variable {source}"
        rate_source = r.sources.get("sentry.traces_sample_rate")
        rate_source = "argument sentry_traces_sample_rate" if rate_source == "argument" else rate_source
        otlp = r.fail(where, ",".join(otlp),
                      "off or logs while SENTRY_TRACES_SAMPLE_RATE is above 0 "
                      f"({traces_sample_rate:g}, from {rate_source}): "
                      "with both, every span would reach Sentry twice; set SENTRY_TRACES_SAMPLE_RATE=0 to send "
                      "traces over OTLP", secret=False, default=(), default_doc="off")
        if not otlp:
            r.sources["sentry.otlp"] = "default"
    return SentrySettings(
        dsn=f("dsn"), environment=environment, release=release, traces_sample_rate=traces_sample_rate,
        trace_url_template=f("trace_url_template"), send_default_pii=f("send_default_pii"), otlp=otlp,
    )


# --- documentation --------------------------------------------------------------------------------


def _default_text(p: Param) -> str:
    if p.default_doc is not None:
        return p.default_doc
    if p.default is None:
        return "unset"
    if isinstance(p.default, bool):
        return str(p.default).lower()
    if isinstance(p.default, tuple):
        return ",".join(p.default) or "none"
    return str(p.default)


def config_table_markdown() -> str:
    """The configuration table as Markdown (setting, argument, environment variables, default, meaning).

    Generated from :data:`PARAMS`, so the README never drifts from the code.
    """
    rows = ["| setting | `init()` argument | environment (first wins) | default | meaning |",
            "|---|---|---|---|---|"]
    for p in PARAMS:
        env = list(p.env)
        args = [p.arg] if p.arg else []
        if p.per_signal:
            sig = (p.signal_env or "").replace("{SIGNAL}", "{TRACES,METRICS,LOGS}")
            env = [sig, *env]
            args = ([f"{{traces,metrics,logs}}_{'exporter' if p.field == 'exporters' else p.field}"] + args)
        name = f"{{traces,metrics,logs}}.{p.field}" if p.per_signal else p.field
        if p.field == "exporters":
            doc = ("Exporters per signal (comma list): otlp, console, none (metrics also: prometheus). Default `auto`: "
                   "otlp when an endpoint is set, else a collector listening on 127.0.0.1:4317/4318, else the "
                   "readable console output.")
        else:
            doc = p.doc
        arg_text = ", ".join(f"`{a}`" for a in args) or "–"
        env_text = ", ".join(f"`{e}`" for e in env) or "–"
        rows.append(f"| `{name}` | {arg_text} | {env_text} | {_default_text(p)} | {doc} |")
    return "\n".join(rows) + "\n"


def _main(argv: Sequence[str]) -> int:  # pragma: no cover - `python -m otelkit._config` prints the table
    sys.stdout.write(config_table_markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main(sys.argv))
