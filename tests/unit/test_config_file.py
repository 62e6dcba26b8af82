"""OTEL_CONFIG_FILE: the declarative configuration file mapped onto Settings, its errors, its precedence.

Files are checked against the spec's published JSON schema as shipped by the upstream package
(``opentelemetry-configuration``'s ``schema.json``, Apache-2.0): the valid ones validate, the schema-breaking
ones do not, independently of otelkit. Without the package (the lowest-SDK venv) the error names the install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelkit._config import ConfigError, ConfigWarning, resolve

HAVE_UPSTREAM = importlib.util.find_spec("opentelemetry.configuration") is not None
needs_upstream = pytest.mark.skipif(not HAVE_UPSTREAM, reason="opentelemetry-configuration needs SDK 1.44+")

FULL = """\
file_format: "1.0"
log_level: info
attribute_limits:
  attribute_count_limit: 64
resource:
  attributes:
    - name: service.name
      value: file-svc
    - name: service.version
      value: "2.0"
    - name: team
      value: core
  attributes_list: "region=eu,team=ignored"
tracer_provider:
  processors:
    - batch:
        schedule_delay: 200
        export_timeout: 4000
        max_queue_size: 100
        max_export_batch_size: 50
        exporter:
          otlp_http:
            endpoint: http://127.0.0.1:4318/v1/traces
            headers:
              - name: Api-Key
                value: ${CFG_TEST_KEY:-s3cret}
            compression: gzip
            timeout: 2500
    - simple:
        exporter:
          console: {}
  limits:
    event_count_limit: 10
  sampler:
    parent_based:
      root:
        trace_id_ratio_based:
          ratio: 0.25
meter_provider:
  readers:
    - periodic:
        interval: 5000
        timeout: 3000
        exporter:
          otlp_grpc:
            endpoint: collector:4317
            tls:
              insecure: true
  exemplar_filter: always_off
logger_provider:
  processors:
    - batch:
        max_queue_size: 300
        max_export_batch_size: 30
        exporter:
          otlp_grpc:
            endpoint: http://127.0.0.1:4317
propagator:
  composite:
    - tracecontext:
    - baggage:
  composite_list: "tracecontext"
instrumentation/development:
  general:
    stability_opt_in_list: "http/dup"
  python:
    redis:
      enabled: false
    httpx: {}
distribution:
  otelkit:
    shutdown_timeout: 3000
    correlation_header: X-Request-ID
    scrub:
      enabled: false
    sentry:
      send_default_pii: true
"""


def _write(tmp_path: Path, text: str, name: str = "otel.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _schema() -> dict[str, Any]:
    from importlib.resources import files

    loaded: dict[str, Any] = json.loads((files("opentelemetry.configuration") / "schema.json").read_text("utf-8"))
    return loaded


def _schema_errors(text: str) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    return [e.message for e in validator.iter_errors(yaml.safe_load(text))]


@needs_upstream
def test_a_full_file_maps_onto_settings_with_the_files_semantics(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CFG_TEST_KEY", raising=False)
    path = _write(tmp_path, FULL)
    assert _schema_errors(FULL) == []  # the spec's schema itself accepts it
    s = resolve(environ={"OTEL_CONFIG_FILE": path})
    assert s.config_file == path
    assert (s.service_name, s.service_version) == ("file-svc", "2.0")
    # attributes win over attributes_list (spec)
    assert dict(s.resource_attributes) == {"region": "eu", "team": "core", "service.name": "file-svc",
                                           "service.version": "2.0"}
    # per-signal endpoint used as is (no /v1/traces appended twice); durations in ms
    assert s.traces.exporters == ("otlp", "console")
    assert s.traces.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert s.traces.protocol == "http/protobuf"
    assert dict(s.traces.headers) == {"api-key": "s3cret"}  # ${VAR:-default} substituted upstream
    assert (s.traces.compression, s.traces.timeout) == ("gzip", 2.5)
    assert (s.bsp.schedule_delay, s.bsp.export_timeout, s.bsp.max_queue_size, s.bsp.max_export_batch_size) == (
        0.2, 4.0, 100, 50)
    assert (s.blrp.max_queue_size, s.blrp.max_export_batch_size) == (300, 30)
    assert (s.sampler, s.sampler_arg) == ("parentbased_traceidratio", 0.25)
    assert s.metrics.exporters == ("otlp",)
    assert (s.metrics.endpoint, s.metrics.protocol, s.metrics.insecure) == ("collector:4317", "grpc", True)
    assert (s.metric_export_interval, s.metric_export_timeout, s.exemplar_filter) == (5.0, 3.0, "always_off")
    assert (s.logs.exporters, s.logs.protocol, s.logs.endpoint) == (("otlp",), "grpc", "http://127.0.0.1:4317")
    assert s.propagators == ("tracecontext", "baggage")
    assert (s.limits.attribute_count, s.limits.span_event_count) == (64, 10)
    assert s.semconv_opt_in == "http/dup"
    assert s.instrument == ("httpx",) and s.disabled_instrumentations == frozenset({"redis"})
    assert (s.shutdown_timeout, s.correlation_header, s.scrub.enabled, s.sentry.send_default_pii) == (
        3.0, "X-Request-ID", False, True)
    assert s.debug is False
    label = f"OTEL_CONFIG_FILE {path}:"
    assert s.sources["traces.endpoint"] == label + "tracer_provider.processors[0].batch.exporter.otlp_http.endpoint"
    assert s.sources["bsp.schedule_delay"] == label + "tracer_provider.processors[0].batch.schedule_delay"
    assert s.sources["shutdown_timeout"] == label + "distribution.otelkit.shutdown_timeout"
    assert s.sources["service_name"].startswith(label + "resource.attributes")
    assert s.sources["config_file"] == "OTEL_CONFIG_FILE"
    assert s.sources["strict"] == "default"


@needs_upstream
def test_environment_is_ignored_with_a_file_and_arguments_still_win(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL)
    env = {"OTEL_CONFIG_FILE": path, "OTEL_SERVICE_NAME": "from-env", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:1",
           "OTEL_BSP_MAX_QUEUE_SIZE": "7", "OTELKIT_LOG_CORRELATION": "false", "OTEL_TRACES_SAMPLER": "always_off"}
    s = resolve(environ=env)
    assert s.service_name == "file-svc"
    assert s.traces.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert s.bsp.max_queue_size == 100
    assert s.log_correlation is True and s.sources["log_correlation"] == "default"  # not the variable's false
    assert s.sampler == "parentbased_traceidratio"
    # argument > file
    s = resolve(environ=env, service_name="from-arg", traces_endpoint="http://127.0.0.1:9/v1/traces",
                sampler="always_on", shutdown_timeout=1.5)
    assert (s.service_name, s.traces.endpoint, s.sampler, s.shutdown_timeout) == (
        "from-arg", "http://127.0.0.1:9/v1/traces", "always_on", 1.5)
    assert s.sources["shutdown_timeout"] == s.sources["sampler"] == "argument"
    # the argument config_file beats the variable
    other = _write(tmp_path, 'file_format: "1.0"\ndisabled: true\n', "other.yaml")
    s = resolve(environ=env, config_file=other)
    assert s.disabled is True and s.config_file == other and s.sources["config_file"] == "argument"


@needs_upstream
def test_omitted_sections_follow_the_spec(tmp_path: Path) -> None:
    """No provider: that signal is not exported; no propagator: none (the spec's "noop" defaults)."""
    path = _write(tmp_path, 'file_format: "1.0"\n')
    s = resolve(environ={"OTEL_CONFIG_FILE": path, "OTEL_TRACES_EXPORTER": "console"})
    assert (s.traces.exporters, s.metrics.exporters, s.logs.exporters) == (("none",),) * 3
    assert s.propagators == ()
    assert s.sampler == "parentbased_always_on"
    assert "omitted" in s.sources["propagators"]


@needs_upstream
@pytest.mark.parametrize(("sampler", "expected"), [
    ("always_on:", ("always_on", None)),
    ("always_off: {}", ("always_off", None)),
    ("trace_id_ratio_based: {ratio: 0.5}", ("traceidratio", 0.5)),
    ("parent_based: {root: {always_off: {}}}", ("parentbased_always_off", None)),
    ("parent_based: {}", ("parentbased_always_on", None)),
    ("otelkit_correlation_ratio: {ratio: 0.1}", ("otelkit_correlation_ratio", 0.1)),
])
def test_samplers(tmp_path: Path, sampler: str, expected: tuple[str, float | None]) -> None:
    text = ('file_format: "1.0"\ntracer_provider:\n  processors: [{simple: {exporter: {console: {}}}}]\n'
            f"  sampler:\n    {sampler}\n")
    s = resolve(environ={"OTEL_CONFIG_FILE": _write(tmp_path, text)})
    assert (s.sampler, s.sampler_arg) == expected


BROKEN = {
    "yaml": ('file_format: "1.0"\ntracer_provider: [unclosed\n', "YAML"),
    "schema type": ('file_format: "1.0"\ntracer_provider:\n  processors:\n    - batch:\n        schedule_delay: soon\n'
                    '        exporter: {console: {}}\n', "'tracer_provider.processors[0].batch.schedule_delay'"),
    "schema unknown key": ('file_format: "1.0"\ntracer_provider:\n  processors: [{simple: {exporter: {console: {}}}}]\n'
                           '  samplr: {}\n',
                           "'tracer_provider'"),
    "no file_format": ("disabled: false\n", "file_format"),
    "major version": ('file_format: "2.0"\n', "2.0"),
    "not a mapping": ("- a\n- b\n", "mapping"),
}


@needs_upstream
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_a_config_error_naming_path_key_and_what_is_accepted(tmp_path: Path, case: str) -> None:
    text, names = BROKEN[case]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        resolve(environ={"OTEL_CONFIG_FILE": path})
    message = str(exc.value)
    assert f"OTEL_CONFIG_FILE={path!r}" in message and "expected" in message, message
    assert names in message, message
    if case.startswith("schema"):
        assert _schema_errors(text), "the spec's schema must reject it too"
    # strict=False: one warning, the file ignored, telemetry still set up from the environment
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = resolve(environ={"OTEL_CONFIG_FILE": path, "OTEL_SERVICE_NAME": "env-svc"}, strict=False)
    assert [w for w in caught if issubclass(w.category, ConfigWarning)]
    assert s.config_file is None and s.service_name == "env-svc"


@needs_upstream
def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no such file") as exc:
        resolve(environ={"OTEL_CONFIG_FILE": missing})
    assert missing in str(exc.value)
    with pytest.raises(ConfigError, match="no such file"):
        resolve(environ={}, config_file=str(tmp_path))  # a directory
    path = _write(tmp_path, FULL)
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):  # root reads anything
            pytest.skip("running as root: every file is readable")
        with pytest.raises(ConfigError, match="not readable"):
            resolve(environ={"OTEL_CONFIG_FILE": path})
    finally:
        os.chmod(path, 0o644)


UNSUPPORTED = {
    "unknown otelkit key": ("distribution:\n  otelkit:\n    shutdown_timeot: 5\n",
                            "distribution.otelkit.shutdown_timeot", "shutdown_timeout"),
    "otelkit key with a standard place": ("distribution:\n  otelkit:\n    sampler: always_on\n",
                                          "distribution.otelkit.sampler", "tracer_provider.sampler"),
    "unknown group key": ("distribution:\n  otelkit:\n    sentry: {dns: x}\n", "distribution.otelkit.sentry.dns",
                          "dsn"),
    "unknown top-level key": ("tracer_providr: {}\n", "tracer_providr", "tracer_provider"),
    "two otlp exporters": ("tracer_provider:\n  processors:\n"
                           "    - batch: {exporter: {otlp_http: {endpoint: 'http://a:4318/v1/traces'}}}\n"
                           "    - batch: {exporter: {otlp_grpc: {endpoint: 'http://b:4317'}}}\n",
                           "tracer_provider.processors[1].batch.exporter.otlp_grpc", "one OTLP exporter"),
    "jaeger remote sampler": ("tracer_provider:\n  processors: [{simple: {exporter: {console: {}}}}]\n"
                              "  sampler:\n    jaeger_remote/development:\n"
                              "      endpoint: http://j:14250\n      initial_sampler: {always_on: {}}\n",
                              "tracer_provider.sampler", "trace_id_ratio_based"),
    "instrumentation option": ("instrumentation/development:\n  python:\n    redis: {capture: true}\n",
                               "instrumentation/development.python.redis.capture", "enabled"),
    "views": ("meter_provider:\n  readers: [{periodic: {exporter: {console: {}}}}]\n  views:\n"
              "    - selector: {instrument_name: x}\n      stream: {name: y}\n", "meter_provider.views", "no views"),
    "bad value": ("tracer_provider:\n  processors:\n    - batch:\n        exporter:\n          otlp_http:\n"
                  "            endpoint: 'ftp://x'\n", "otlp_http.endpoint", "http:// or https://"),
    "bad duration": ("distribution:\n  otelkit:\n    shutdown_timeout: -5\n", "distribution.otelkit.shutdown_timeout",
                     "milliseconds"),
}


@needs_upstream
@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_what_otelkit_cannot_honour_is_a_config_error(tmp_path: Path, case: str) -> None:
    body, key, accepted = UNSUPPORTED[case]
    text = 'file_format: "1.0"\n' + body
    path = _write(tmp_path, text)
    if case != "bad duration" and case != "bad value":
        assert _schema_errors(text) == [], "valid by the schema: only otelkit cannot use it"
    with pytest.raises(ConfigError) as exc:
        resolve(environ={"OTEL_CONFIG_FILE": path})
    message = str(exc.value)
    assert f"OTEL_CONFIG_FILE {path!r}: " in message and key in message and "expected" in message, message
    assert accepted in message, message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resolve(environ={"OTEL_CONFIG_FILE": path}, strict=False)
    assert any(key in str(w.message) for w in caught if issubclass(w.category, ConfigWarning))


@needs_upstream
def test_env_substitution_and_strict_from_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_TEST_ENDPOINT", "http://127.0.0.1:4999/v1/logs")
    monkeypatch.setenv("CFG_TEST_DELAY", "700")
    text = ('file_format: "1.0"\nlogger_provider:\n  processors:\n    - batch:\n'
            "        schedule_delay: ${CFG_TEST_DELAY}\n"
            "        exporter:\n          otlp_http:\n            endpoint: ${CFG_TEST_ENDPOINT}\n"
            "distribution:\n  otelkit:\n    strict: false\n    spool_max_bytes: 1\n")
    path = _write(tmp_path, text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = resolve(environ={"OTEL_CONFIG_FILE": path})
    assert (s.logs.endpoint, s.blrp.schedule_delay) == ("http://127.0.0.1:4999/v1/logs", 0.7)
    assert s.strict is False and s.sources["strict"].endswith("distribution.otelkit.strict")
    assert any("spool_max_bytes" in str(w.message) for w in caught)  # bad value: warned, default kept
    assert s.spool_max_bytes == 256 * 1024 * 1024


def test_without_the_upstream_package_the_error_names_the_install(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    if HAVE_UPSTREAM:  # simulate the lowest-SDK venv, where the package cannot be installed
        monkeypatch.setitem(sys.modules, "opentelemetry.configuration", None)
    path = _write(tmp_path, FULL)
    with pytest.raises(ConfigError) as exc:
        resolve(environ={"OTEL_CONFIG_FILE": path})
    message = str(exc.value)
    assert "OTEL_CONFIG_FILE" in message and path in message
    assert "pip install 'otelkit[config-file]'" in message and "opentelemetry-configuration" in message


@needs_upstream
def test_docs_example_is_valid_for_the_schema_and_otelkit(tmp_path: Path) -> None:
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "config-file.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert blocks, "docs/config-file.md lost its example"
    for block in blocks:
        if "file_format" not in block:
            continue
        assert _schema_errors(block) == [], block
        path = tmp_path / "example.yaml"
        path.write_text(block)
        resolve(environ={"OTEL_CONFIG_FILE": str(path)})


@needs_upstream
def test_doctor_shows_the_files_settings_sources_and_ignored_variables(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit._doctor import diagnose, render_text

    monkeypatch.delenv("OTEL_CONFIG_FILE", raising=False)
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "7")
    path = _write(tmp_path, 'file_format: "1.0"\nresource:\n  attributes:\n    - {name: service.name, value: doc-svc}\n'
                  "tracer_provider:\n  processors:\n    - batch: {exporter: {console: {}}, max_queue_size: 99}\n")
    report = diagnose(send=False, timeout=0.2, config_file=path, tempo_url="http://127.0.0.1:9")
    rows = {row["name"]: row for row in report.config}
    assert rows["service_name"]["value"] == "doc-svc"
    assert rows["bsp.max_queue_size"]["value"] == "99"
    assert rows["bsp.max_queue_size"]["source"] == (f"OTEL_CONFIG_FILE {path}:"
                                                     "tracer_provider.processors[0].batch.max_queue_size")
    checks = {(c.name, c.status): c for c in report.checks if c.section == "config"}
    assert ("configuration", "ok") in checks
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in checks[("ignored variables", "warn")].summary
    assert ("propagators", "warn") in checks  # no propagator section: nothing propagated
    text = render_text(report)
    assert f"OTEL_CONFIG_FILE {path}:tracer_provider.processors[0].batch.max_queue_size" in text

    bad = _write(tmp_path, 'file_format: "1.0"\ndistribution:\n  otelkit:\n    nonsense: 1\n', "bad.yaml")
    report = diagnose(send=False, timeout=0.2, config_file=bad, tempo_url="http://127.0.0.1:9")
    failures = [c.summary for c in report.failures if c.section == "config"]
    assert any("distribution.otelkit.nonsense" in f for f in failures), failures
    assert report.exit_code == 1


@needs_upstream
def test_doctor_cli_config_option_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from otelkit.__main__ import main

    monkeypatch.delenv("OTEL_CONFIG_FILE", raising=False)
    monkeypatch.delenv("OTELKIT_TEMPO_URL", raising=False)
    path = _write(tmp_path, 'file_format: "1.0"\npropagator:\n  composite_list: tracecontext\n'
                  "logger_provider:\n  processors:\n    - simple: {exporter: {console: {}}}\n")
    code = main(["doctor", "--config", path, "--json", "--no-send", "--timeout", "0.2"])
    out = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in out["configuration"]}
    assert rows["config_file"] == {"name": "config_file", "value": path, "source": "otelkit doctor --config"}
    assert rows["logs.exporters"]["value"] == "console"
    assert rows["logs.exporters"]["source"] == f"OTEL_CONFIG_FILE {path}:logger_provider.processors"
    assert rows["traces.exporters"]["value"] == "none"
    assert code == out["exit_code"] == 0
