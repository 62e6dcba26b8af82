"""``OTEL_CONFIG_FILE``: the OpenTelemetry declarative configuration file, mapped onto otelkit's settings.

Parsing, ``${VAR}`` substitution, the ``file_format`` check and validation against the spec's published
JSON schema are upstream's (the ``opentelemetry-configuration`` package, extra ``otelkit[config-file]``):
this module only wraps :func:`opentelemetry.configuration.load_config_file`, turns its errors into
:class:`~otelkit._config.ConfigError` naming the path and the key, and maps the parsed model onto the
raw values of otelkit's parameter table. ``otelkit._config.resolve`` casts and validates those values
exactly as it does the environment's (durations in milliseconds, as in the file).

otelkit's own settings (the ones the schema has no place for) live in the schema's extension section
``distribution: {otelkit: {...}}``. See docs/config-file.md.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["INSTALL_HINT", "OTELKIT_KEYS", "FileError", "FileSettings", "load"]


class FileError(ValueError):
    """The file cannot be used; ``otelkit._config`` raises it as ``ConfigError`` (this module sits below it)."""


Pairs = Callable[[str], Mapping[str, str]]

INSTALL_HINT = "pip install 'otelkit[config-file]'"

# distribution.otelkit: the parameter-table fields the schema has no place for (nested groups for scrub/sentry).
OTELKIT_KEYS: tuple[str, ...] = (
    "strict", "service_version", "environment", "metric_cardinality_limit", "prometheus_sd_dir",
    "instrument_entry_points", "system_metrics", "system_metrics_excluded", "pika_queue_depth", "nats_queue_depth",
    "excluded_urls", "fastapi_excluded_urls", "starlette_excluded_urls", "flask_excluded_urls",
    "django_excluded_urls", "log_level", "log_correlation", "correlation_header", "shutdown_timeout",
    "child_exit_timeout", "console_on_auto", "spool_dir", "spool_max_bytes", "correlation_headers",
)
_GROUPS: Mapping[str, tuple[str, ...]] = {
    "scrub": ("enabled", "extra_patterns"),
    "sentry": ("dsn", "environment", "release", "traces_sample_rate", "trace_url_template", "send_default_pii"),
}
# Settings of distribution.otelkit that the standard sections carry: say where they go instead.
_ELSEWHERE: Mapping[str, str] = {
    "service_name": "resource.attributes (name: service.name)",
    "resource_attributes": "resource.attributes",
    "sampler": "tracer_provider.sampler", "sampler_arg": "tracer_provider.sampler",
    "propagators": "propagator.composite", "disabled": "disabled (top level)",
    "instrument": "instrumentation/development.python", "disabled_instrumentations":
        "instrumentation/development.python (<name>: {enabled: false})",
    "semconv_opt_in": "instrumentation/development.general.stability_opt_in_list",
    "debug": "log_level (top level: debug)", "exemplar_filter": "meter_provider.exemplar_filter",
}
_TOP_LEVEL = ("file_format", "disabled", "log_level", "attribute_limits", "logger_provider", "meter_provider",
              "propagator", "tracer_provider", "resource", "instrumentation/development", "distribution")


@dataclass
class FileSettings:
    """What a configuration file says, as raw values keyed like ``Settings.sources`` (``traces.endpoint``).

    ``values[name] = (raw value, key in the file)``; ``problems`` are valid-by-schema constructs otelkit
    cannot honour, as ``(key, value, what otelkit accepts there)``: ``resolve()`` reports them like bad values.
    """

    path: str
    values: dict[str, tuple[Any, str]] = field(default_factory=dict)
    problems: list[tuple[str, Any, str]] = field(default_factory=list)
    sections: frozenset[str] = frozenset()

    def label(self, key: str) -> str:
        """The ``Settings.sources`` entry of a value read from ``key``."""
        return f"OTEL_CONFIG_FILE {self.path}:{key}"


@contextmanager
def _quiet_upstream() -> Iterator[None]:
    # The loader logs each failure (with a traceback) before raising it; the ConfigError says it once.
    log = logging.getLogger("opentelemetry.configuration.file._loader")
    previous = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = previous


_AT = re.compile(r"^(?P<message>.*) \(at (?P<path>.*)\)$", re.S)


def _dotted(parts: list[str]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def load(path: str, pairs: Pairs) -> FileSettings:
    """Read, validate (upstream) and map the configuration file at ``path``; raise FileError when it is bad.

    ``pairs`` parses the schema's ``k=v,k2=v2`` strings (``headers_list``, ``attributes_list``) as the
    environment's variables are parsed; it raises an exception carrying ``accepted`` for a bad one."""
    where = f"OTEL_CONFIG_FILE={path!r}"
    accepted = ("a readable .yaml/.yml (or .json) file in the OpenTelemetry declarative configuration format "
                "(file_format: \"1.0\"), see docs/config-file.md")
    if not os.path.isfile(path):
        raise FileError(f"{where} is not valid: expected {accepted} (there is no such file)")
    if not os.access(path, os.R_OK):
        raise FileError(f"{where} is not valid: expected {accepted} (the file is not readable)")
    try:
        from opentelemetry.configuration import ConfigurationError, load_config_file
    except ImportError:
        raise FileError(f"{where} is not valid here: expected the package opentelemetry-configuration to read it "
                        f"(OpenTelemetry SDK 1.44 or newer), which is not installed: {INSTALL_HINT}") from None
    try:
        with _quiet_upstream():
            model = load_config_file(path)
    except ConfigurationError as exc:
        text = str(exc)
        found = _AT.match(text)
        if found:
            key = _dotted(found.group("path").split(" -> "))
            raise FileError(f"{where}: key {key!r} is not valid: expected what the OpenTelemetry configuration "
                              f"schema accepts there: {found.group('message')} (see docs/config-file.md)") from None
        raise FileError(f"{where} is not valid: expected {accepted} ({text})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FileError(f"{where} is not valid: expected {accepted} (reading it failed: {exc})") from None
    out = FileSettings(path=path)
    _Mapper(out, pairs).map(model)
    return out


class _Mapper:
    def __init__(self, out: FileSettings, pairs: Pairs) -> None:
        self.out = out
        self.pairs = pairs

    def parse_pairs(self, key: str, text: str, secret: bool = False) -> Mapping[str, str]:
        try:
            return self.pairs(text)
        except Exception as exc:
            self.problem(key, "***" if secret else text, str(getattr(exc, "accepted", exc)))
            return {}

    def put(self, name: str, value: Any, key: str) -> None:
        if value is not None:
            self.out.values[name] = (value, key)

    def problem(self, key: str, value: Any, accepted: str) -> None:
        self.out.problems.append((key, value, accepted))

    def map(self, m: Any) -> None:
        extra = getattr(m, "additional_properties", {}) or {}
        for key in extra:
            self.problem(key, "...", "the schema's top-level keys (" + ", ".join(_TOP_LEVEL) + "); otelkit's own "
                         "settings go under distribution.otelkit")
        self.out.sections = frozenset(k for k in ("tracer_provider", "meter_provider", "logger_provider", "propagator")
                                      if getattr(m, k) is not None)
        self.put("disabled", m.disabled, "disabled")
        if m.log_level is not None:
            self.put("debug", m.log_level.value.startswith(("debug", "trace")), "log_level")
        if m.attribute_limits is not None:
            self.put("limits.attribute_count", m.attribute_limits.attribute_count_limit,
                     "attribute_limits.attribute_count_limit")
            self.put("limits.attribute_value_length", m.attribute_limits.attribute_value_length_limit,
                     "attribute_limits.attribute_value_length_limit")
        self.resource(m.resource)
        self.traces(m.tracer_provider)
        self.metrics(m.meter_provider)
        self.logs(m.logger_provider)
        self.propagator(m.propagator)
        self.instrumentation(m.instrumentation_development)
        self.distribution(m.distribution)

    # --- resource -------------------------------------------------------------------------------
    def resource(self, r: Any) -> None:
        if r is None:
            return
        attrs: dict[str, str] = {}
        if r.attributes_list:
            attrs.update(self.parse_pairs("resource.attributes_list", r.attributes_list))
        for i, a in enumerate(r.attributes or ()):
            if isinstance(a.value, list):
                self.problem(f"resource.attributes[{i}].value", a.value, "a string, number or boolean (otelkit "
                             "resource attributes are scalars)")
            elif a.value is not None:
                attrs[a.name] = str(a.value).lower() if isinstance(a.value, bool) else str(a.value)
        if attrs:
            self.put("resource_attributes", attrs, "resource.attributes")
        if r.detection_development is not None:
            self.problem("resource.detection/development", "...", "nothing: otelkit always detects host, OS and "
                         "process attributes itself (remove the section)")

    # --- exporters ------------------------------------------------------------------------------
    def exporter(self, signal: str, exp: Any, key: str, kinds: list[str]) -> None:
        extra = getattr(exp, "additional_properties", {}) or {}
        for name in extra:
            self.problem(f"{key}.{name}", "...", "otlp_http, otlp_grpc or console")
        if getattr(exp, "otlp_file_development", None) is not None:
            self.problem(f"{key}.otlp_file/development", "...", "otlp_http, otlp_grpc or console")
        if exp.console is not None:
            kinds.append("console")
        for attr, protocol in (("otlp_http", "http/protobuf"), ("otlp_grpc", "grpc")):
            o = getattr(exp, attr)
            if o is None:
                continue
            k = f"{key}.{attr}"
            if "otlp" in kinds:
                self.problem(k, "...", f"one OTLP exporter per signal ({signal}): otelkit sends each signal to one "
                             "endpoint (let a collector fan out)")
                continue
            kinds.append("otlp")
            self.put(f"{signal}.protocol", protocol, k)
            self.put(f"{signal}.endpoint", o.endpoint, f"{k}.endpoint")
            self.put(f"{signal}.compression", o.compression, f"{k}.compression")
            self.put(f"{signal}.timeout", o.timeout, f"{k}.timeout")
            headers: dict[str, str] = {}
            if o.headers_list:
                headers.update({n.lower(): v for n, v in self.parse_pairs(f"{k}.headers_list", o.headers_list,
                                                                         secret=True).items()})
            for h in o.headers or ():  # the spec: headers win over headers_list
                headers[h.name.lower()] = h.value or ""
            if headers:
                self.put(f"{signal}.headers", headers, f"{k}.headers")
            tls = o.tls
            if tls is not None:
                self.put(f"{signal}.certificate", tls.ca_file, f"{k}.tls.ca_file")
                self.put(f"{signal}.client_key", tls.key_file, f"{k}.tls.key_file")
                self.put(f"{signal}.client_certificate", tls.cert_file, f"{k}.tls.cert_file")
                self.put(f"{signal}.insecure", getattr(tls, "insecure", None), f"{k}.tls.insecure")
            if getattr(o, "encoding", None) is not None and o.encoding.value != "protobuf":
                self.problem(f"{k}.encoding", o.encoding.value, "protobuf (otelkit sends OTLP/HTTP as protobuf)")

    def kinds(self, signal: str, kinds: list[str], key: str) -> None:
        self.put(f"{signal}.exporters", ",".join(kinds) if kinds else "none", key)

    def batch(self, prefix: str, b: Any, key: str) -> None:
        for name in ("schedule_delay", "export_timeout", "max_queue_size", "max_export_batch_size"):
            self.put(f"{prefix}.{name}", getattr(b, name), f"{key}.{name}")

    def processors(self, signal: str, prefix: str, processors: Any, key: str) -> None:
        kinds: list[str] = []
        for i, p in enumerate(processors or ()):
            k = f"{key}[{i}]"
            for name in getattr(p, "additional_properties", {}) or {}:
                self.problem(f"{k}.{name}", "...", "batch or simple")
            if p.batch is not None:
                self.batch(prefix, p.batch, f"{k}.batch")
                self.exporter(signal, p.batch.exporter, f"{k}.batch.exporter", kinds)
            elif p.simple is not None:
                before = len(kinds)
                self.exporter(signal, p.simple.exporter, f"{k}.simple.exporter", kinds)
                if "otlp" in kinds[before:]:
                    self.problem(f"{k}.simple", "...", "batch for an OTLP exporter (otelkit always batches OTLP "
                                 "exports; simple is accepted with console)")
            elif getattr(p, "event_to_span_event_bridge_development", None) is not None:
                self.problem(f"{k}.event_to_span_event_bridge/development", "...", "batch or simple")
        self.kinds(signal, kinds, key)

    def traces(self, t: Any) -> None:
        if t is None:
            self.put("traces.exporters", "none", "tracer_provider (omitted: no traces are exported)")
            return
        self.processors("traces", "bsp", t.processors, "tracer_provider.processors")
        if t.limits is not None:
            lim, k = t.limits, "tracer_provider.limits"
            self.put("limits.span_attribute_count", lim.attribute_count_limit, f"{k}.attribute_count_limit")
            self.put("limits.span_attribute_value_length", lim.attribute_value_length_limit,
                     f"{k}.attribute_value_length_limit")
            self.put("limits.span_event_count", lim.event_count_limit, f"{k}.event_count_limit")
            self.put("limits.span_link_count", lim.link_count_limit, f"{k}.link_count_limit")
            self.put("limits.event_attribute_count", lim.event_attribute_count_limit,
                     f"{k}.event_attribute_count_limit")
            self.put("limits.link_attribute_count", lim.link_attribute_count_limit, f"{k}.link_attribute_count_limit")
        self.sampler(t.sampler, "tracer_provider.sampler")
        for name in ("id_generator", "tracer_configurator_development"):
            if getattr(t, name, None) is not None:
                self.problem(f"tracer_provider.{name.replace('_development', '/development')}", "...",
                             "processors, limits and sampler (otelkit uses the SDK's random IDs and one tracer config)")

    _SIMPLE = {"always_on": "always_on", "always_off": "always_off", "trace_id_ratio_based": "traceidratio"}
    _PARENT_DEFAULTS = {"remote_parent_sampled": "always_on", "remote_parent_not_sampled": "always_off",
                        "local_parent_sampled": "always_on", "local_parent_not_sampled": "always_off"}
    _SAMPLERS_ACCEPTED = ("always_on, always_off, trace_id_ratio_based, parent_based (root one of those, children at "
                          "their defaults) or otelkit_correlation_ratio: {ratio: 0..1}")

    def _simple_sampler(self, s: Any) -> tuple[str, Any] | None:
        set_ = [n for n in ("always_on", "always_off", "trace_id_ratio_based", "parent_based",
                            "composite_development", "jaeger_remote_development", "probability_development")
                if getattr(s, n, None) is not None]
        extra = getattr(s, "additional_properties", {}) or {}
        if len(set_) + len(extra) != 1:
            return None
        if extra:
            name, conf = next(iter(extra.items()))
            if name == "otelkit_correlation_ratio":
                return name, (conf or {}).get("ratio", 1.0)
            return None
        name = set_[0]
        if name in self._SIMPLE:
            ratio = s.trace_id_ratio_based.ratio if name == "trace_id_ratio_based" else None
            return self._SIMPLE[name], (1.0 if name == "trace_id_ratio_based" and ratio is None else ratio)
        return (name, None) if name == "parent_based" else None

    def sampler(self, s: Any, key: str) -> None:
        if s is None:
            return  # the spec's default: parent_based(always_on), otelkit's default too
        found = self._simple_sampler(s)
        if found is None:
            self.problem(key, "...", self._SAMPLERS_ACCEPTED)
            return
        name, ratio = found
        if name == "parent_based":
            pb = s.parent_based
            for child, default in self._PARENT_DEFAULTS.items():
                c = getattr(pb, child)
                if c is not None and (self._simple_sampler(c) or ("", None))[0] != default:
                    self.problem(f"{key}.parent_based.{child}", "...", f"{default} (the default; otelkit's "
                                 "parent-based samplers keep the spec's defaults for the parent cases)")
            root = ("always_on", None) if pb.root is None else self._simple_sampler(pb.root)
            if root is None or root[0] not in ("always_on", "always_off", "traceidratio"):
                self.problem(f"{key}.parent_based.root", "...", "always_on, always_off or trace_id_ratio_based")
                return
            name, ratio = f"parentbased_{root[0]}", root[1]
        self.put("sampler", name, key)
        self.put("sampler_arg", ratio, key)

    def metrics(self, mp: Any) -> None:
        key = "meter_provider.readers"
        if mp is None:
            self.put("metrics.exporters", "none", "meter_provider (omitted: no metrics are exported)")
            return
        kinds: list[str] = []
        for i, reader in enumerate(mp.readers or ()):
            k = f"{key}[{i}]"
            if reader.periodic is not None:
                p = reader.periodic
                self.put("metric_export_interval", p.interval, f"{k}.periodic.interval")
                self.put("metric_export_timeout", p.timeout, f"{k}.periodic.timeout")
                self.exporter("metrics", p.exporter, f"{k}.periodic.exporter", kinds)
                limits = p.cardinality_limits
                if limits is not None:
                    self.put("metric_cardinality_limit", limits.default, f"{k}.periodic.cardinality_limits.default")
            elif reader.pull is not None:
                prom = reader.pull.exporter.prometheus_development
                if prom is None:
                    self.problem(f"{k}.pull.exporter", "...", "prometheus/development")
                    continue
                kinds.append("prometheus")
                self.put("prometheus_host", prom.host, f"{k}.pull.exporter.prometheus/development.host")
                self.put("prometheus_port", prom.port, f"{k}.pull.exporter.prometheus/development.port")
        self.kinds("metrics", kinds, key)
        if mp.exemplar_filter is not None:
            self.put("exemplar_filter", mp.exemplar_filter.value, "meter_provider.exemplar_filter")
        if mp.views:
            self.problem("meter_provider.views", "...", "no views (otelkit does not configure metric views)")

    def logs(self, lp: Any) -> None:
        if lp is None:
            self.put("logs.exporters", "none", "logger_provider (omitted: no logs are exported)")
            return
        self.processors("logs", "blrp", lp.processors, "logger_provider.processors")
        if lp.limits is not None:
            k = "logger_provider.limits"
            self.put("limits.logrecord_attribute_count", lp.limits.attribute_count_limit, f"{k}.attribute_count_limit")
            self.put("limits.logrecord_attribute_value_length", lp.limits.attribute_value_length_limit,
                     f"{k}.attribute_value_length_limit")

    def propagator(self, p: Any) -> None:
        if p is None:
            self.put("propagators", "none", "propagator (omitted: no context propagation, as the spec says)")
            return
        names: list[str] = []
        for entry in p.composite or ():
            for name in ("tracecontext", "baggage", "b3", "b3multi"):
                if getattr(entry, name, None) is not None:
                    names.append(name)
            names.extend(getattr(entry, "additional_properties", {}) or {})
        if p.composite_list:
            names.extend(n.strip() for n in p.composite_list.split(",") if n.strip())
        key = "propagator.composite" if p.composite else "propagator.composite_list"
        self.put("propagators", ",".join(dict.fromkeys(names)) or "none", key)

    def instrumentation(self, inst: Any) -> None:
        if inst is None:
            return
        key = "instrumentation/development"
        general = inst.general
        if general is not None:
            self.put("semconv_opt_in", general.stability_opt_in_list, f"{key}.general.stability_opt_in_list")
            for name in ("http", "code", "db", "gen_ai", "messaging", "rpc", "sanitization"):
                if getattr(general, name, None) is not None:
                    self.problem(f"{key}.general.{name}", "...", "stability_opt_in_list only (otelkit's "
                                 "integrations take their options from distribution.otelkit)")
        python = inst.python
        if python is None:
            return
        enabled: list[str] = []
        disabled: list[str] = []
        for name, options in python.items():
            opts = dict(options or {})
            on = opts.pop("enabled", True)
            for option in opts:
                self.problem(f"{key}.python.{name}.{option}", "...", "enabled: true or false only")
            (enabled if on is not False else disabled).append(name)
        if enabled:
            self.put("instrument", enabled, f"{key}.python")
        if disabled:
            self.put("disabled_instrumentations", disabled, f"{key}.python")

    def distribution(self, dist: Any) -> None:
        if not dist or "otelkit" not in dist:
            return
        section = dist["otelkit"] or {}
        base = "distribution.otelkit"
        for name, value in section.items():
            key = f"{base}.{name}"
            if name in OTELKIT_KEYS:
                self.put(name, value, key)
            elif name in _GROUPS and isinstance(value, Mapping):
                for sub, subvalue in value.items():
                    if sub in _GROUPS[name]:
                        self.put(f"{name}.{sub}", subvalue, f"{key}.{sub}")
                    else:
                        self.problem(f"{key}.{sub}", subvalue, "one of " + ", ".join(_GROUPS[name]))
            elif name in _ELSEWHERE:
                self.problem(key, value, f"nothing here: set it in {_ELSEWHERE[name]}")
            else:
                self.problem(key, value, "one of " + ", ".join((*OTELKIT_KEYS, *_GROUPS)))
