"""resolve(): spec variables, precedence, per-signal OTLP forms, durations, masking, the docs table."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from otelkit._config import (
    PARAMS,
    Settings,
    config_table_markdown,
    mask_url,
    resolve,
)

# --- precedence: argument > OTELKIT_* > OTEL_* > default ---------------------------------------------


@pytest.mark.parametrize(
    ("field", "arg", "otelkit_var", "otel_var", "values", "default"),
    [
        ("service_name", "service_name", "OTELKIT_SERVICE_NAME", "OTEL_SERVICE_NAME", ("a", "k", "o"), None),
        ("sentry.dsn", "sentry_dsn", "OTELKIT_SENTRY_DSN", "SENTRY_DSN",
         ("https://a@h/1", "https://k@h/2", "https://o@h/3"), None),
    ],
)
def test_precedence_matrix(monkeypatch: pytest.MonkeyPatch, field: str, arg: str, otelkit_var: str, otel_var: str,
                           values: tuple[str, str, str], default: object) -> None:
    a, k, o = values
    # every subset of sources; the highest-precedence present one must win
    for use_arg in (True, False):
        for use_k in (True, False):
            for use_o in (True, False):
                env = {}
                if use_k:
                    env[otelkit_var] = k
                if use_o:
                    env[otel_var] = o
                kwargs = {arg: a} if use_arg else {}
                s = resolve(environ=env, service_name="x", **kwargs) if field != "service_name" else \
                    resolve(environ=env, **kwargs)
                expected, source = (a, "argument") if use_arg else (k, otelkit_var) if use_k else \
                    (o, otel_var) if use_o else (None, None)
                if expected is None:
                    assert s.sources[field] != "argument"
                    continue
                actual = s.sentry.dsn if field == "sentry.dsn" else getattr(s, field)
                assert actual == expected, (use_arg, use_k, use_o)
                assert s.sources[field] == source


@pytest.mark.parametrize(
    ("field", "arg", "var", "attr_key"),
    [("service_version", "service_version", "OTELKIT_SERVICE_VERSION", "service.version"),
     ("environment", "environment", "OTELKIT_ENVIRONMENT", "deployment.environment.name")],
)
def test_identity_precedence_argument_env_then_resource_attributes(field: str, arg: str, var: str,
                                                                   attr_key: str) -> None:
    attrs = {"OTEL_RESOURCE_ATTRIBUTES": f"{attr_key}=from-attrs"}
    s = resolve(environ={**attrs, var: "from-env"}, service_name="x", **{arg: "from-arg"})
    assert (getattr(s, field), s.sources[field]) == ("from-arg", "argument")
    s = resolve(environ={**attrs, var: "from-env"}, service_name="x")
    assert (getattr(s, field), s.sources[field]) == ("from-env", var)
    s = resolve(environ=attrs, service_name="x")
    assert (getattr(s, field), s.sources[field]) == ("from-attrs", "OTEL_RESOURCE_ATTRIBUTES")


def test_settings_are_hashable() -> None:
    a = resolve(environ={}, service_name="x")
    assert hash(a) == hash(resolve(environ={"OTEL_SERVICE_NAME": "x"}))
    assert {a: 1}[a] == 1


def test_bool_and_number_precedence() -> None:
    env = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    s = resolve(environ=env, service_name="x")
    assert s.disabled is True and s.sources["disabled"] == "OTEL_SDK_DISABLED"
    assert (s.sampler, s.sampler_arg) == ("traceidratio", 0.25)
    s = resolve(environ=env, service_name="x", disabled=False, sampler_arg=0.5)
    assert s.disabled is False and s.sources["disabled"] == "argument"
    assert s.sampler_arg == 0.5
    s = resolve(environ={}, service_name="x")
    assert s.disabled is False and s.sources["disabled"] == "default"
    assert (s.sampler, s.sampler_arg) == ("parentbased_always_on", None)


def test_empty_env_var_counts_as_unset() -> None:
    s = resolve(environ={"OTEL_SERVICE_NAME": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, service_name=None)
    assert s.sources["service_name"].startswith("derived")
    assert s.traces.endpoint is None


def test_ratio_sampler_defaults_arg_to_one_and_others_ignore_it() -> None:
    assert resolve(environ={}, service_name="x", sampler="parentbased_traceidratio").sampler_arg == 1.0
    s = resolve(environ={"OTEL_TRACES_SAMPLER_ARG": "0.1"}, service_name="x", sampler="always_on")
    assert s.sampler_arg is None
    assert "ignored" in s.sources["sampler_arg"]


@pytest.mark.parametrize("name", ["always_on", "always_off", "traceidratio", "parentbased_always_on",
                                  "parentbased_always_off", "parentbased_traceidratio", "ALWAYS_ON"])
def test_every_spec_sampler_name(name: str) -> None:
    assert resolve(environ={"OTEL_TRACES_SAMPLER": name}, service_name="x").sampler == name.lower()


# --- per-signal OTLP -------------------------------------------------------------------------------


def test_generic_http_endpoint_gets_signal_path_appended() -> None:
    s = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, service_name="x")
    assert s.traces.endpoint == "http://collector:4318/v1/traces"
    assert s.metrics.endpoint == "http://collector:4318/v1/metrics"
    assert s.logs.endpoint == "http://collector:4318/v1/logs"
    assert s.traces.protocol == "http/protobuf"
    assert s.traces.exporters == ("otlp",)


def test_generic_grpc_endpoint_used_as_is_and_port_4317_implies_grpc() -> None:
    s = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, service_name="x")
    assert s.traces.protocol == "grpc"
    assert s.traces.endpoint == "http://collector:4317"
    assert "inferred" in s.sources["traces.protocol"]
    s = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:9999", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
                service_name="x")
    assert (s.logs.protocol, s.logs.endpoint) == ("grpc", "http://c:9999")


def test_per_signal_endpoint_protocol_headers_beat_generic() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://generic:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:1234/custom/path",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "b=2",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "700",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "none",
    }
    s = resolve(environ=env, service_name="x")
    assert s.traces.endpoint == "http://traces:1234/custom/path"
    assert s.sources["traces.endpoint"] == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    assert s.metrics.protocol == "grpc" and s.metrics.endpoint == "http://generic:4318"
    assert s.logs.endpoint == "http://generic:4318/v1/logs"
    assert dict(s.traces.headers) == {"a": "1"} and dict(s.logs.headers) == {"b": "2"}
    assert s.traces.timeout == 2.5 and s.logs.timeout == 0.7
    assert s.metrics.compression == "gzip" and s.traces.compression == "none"


def test_generic_argument_beats_per_signal_env_and_per_signal_argument_beats_all() -> None:
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env-traces:4318/v1/traces"}
    s = resolve(environ=env, service_name="x", endpoint="http://arg:4318")
    assert s.traces.endpoint == "http://arg:4318/v1/traces"
    s = resolve(environ=env, service_name="x", endpoint="http://arg:4318", traces_endpoint="http://t:1/x")
    assert s.traces.endpoint == "http://t:1/x"
    assert s.metrics.endpoint == "http://arg:4318/v1/metrics"


def test_timeouts_are_milliseconds_in_env_and_seconds_as_arguments() -> None:
    env = {"OTEL_EXPORTER_OTLP_TIMEOUT": "10", "OTEL_BSP_SCHEDULE_DELAY": "250", "OTEL_BLRP_EXPORT_TIMEOUT": "1500",
           "OTEL_METRIC_EXPORT_INTERVAL": "15000", "OTEL_METRIC_EXPORT_TIMEOUT": "5000",
           "OTELKIT_SHUTDOWN_TIMEOUT": "3000"}
    s = resolve(environ=env, service_name="x")
    # 10 means 10 ms per the spec, not 10 s as the upstream exporters read it
    assert s.traces.timeout == pytest.approx(0.010)
    assert s.bsp.schedule_delay == pytest.approx(0.25)
    assert s.blrp.export_timeout == pytest.approx(1.5)
    assert s.metric_export_interval == 15.0 and s.metric_export_timeout == 5.0
    assert s.shutdown_timeout == 3.0
    s = resolve(environ=env, service_name="x", timeout=2, shutdown_timeout=1.5, metric_export_interval=1)
    assert s.traces.timeout == 2.0 and s.shutdown_timeout == 1.5 and s.metric_export_interval == 1.0


def test_defaults_follow_the_spec() -> None:
    s = resolve(environ={}, service_name="x")
    assert s.traces.timeout == 10.0 and s.traces.compression == "none"
    # otelkit's deliberate deviation from the spec's 5000 ms / 2048 / 512 (see BatchSettings in _config)
    assert (s.bsp.schedule_delay, s.bsp.export_timeout, s.bsp.max_queue_size, s.bsp.max_export_batch_size) == \
        (1.0, 30.0, 8192, 2048)
    assert s.blrp.schedule_delay == 1.0
    assert (s.metric_export_interval, s.metric_export_timeout) == (60.0, 30.0)
    assert s.exemplar_filter == "trace_based"
    assert s.propagators == ("tracecontext", "baggage")
    assert s.traces.exporters == ("auto",) and s.metrics.exporters == ("auto",)
    assert s.shutdown_timeout == 5.0
    assert s.log_level == logging.INFO
    assert (s.prometheus_host, s.prometheus_port) == ("localhost", 9464)
    assert s.limits.attribute_count == 128 and s.limits.attribute_value_length == 8192  # on by default (issue 7 item 5)


def test_exporter_lists() -> None:
    env = {"OTEL_TRACES_EXPORTER": "otlp,console", "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_LOGS_EXPORTER": "none"}
    s = resolve(environ=env, service_name="x")
    assert s.traces.exporters == ("otlp", "console")
    assert s.metrics.exporters == ("prometheus",)
    assert s.logs.exporters == ("none",)
    s = resolve(environ={}, service_name="x", traces_exporter=["console"], metrics_exporter="otlp")
    assert s.traces.exporters == ("console",) and s.metrics.exporters == ("otlp",)


def test_batch_limits_and_exemplar_env() -> None:
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "50",
           "OTEL_ATTRIBUTE_COUNT_LIMIT": "10", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "64",
           "OTEL_SPAN_EVENT_COUNT_LIMIT": "5", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT": "7",
           "OTEL_METRICS_EXEMPLAR_FILTER": "always_off"}
    s = resolve(environ=env, service_name="x")
    assert (s.bsp.max_queue_size, s.bsp.max_export_batch_size) == (100, 50)
    lim = s.limits
    assert lim.attribute_count == 10 and lim.span_attribute_count == 10  # falls back to the general limit
    assert lim.attribute_value_length == 64 and lim.span_attribute_value_length == 64
    assert lim.span_event_count == 5 and lim.logrecord_attribute_count == 7
    assert s.exemplar_filter == "always_off"


def test_headers_are_percent_decoded_and_arguments_accept_mappings() -> None:
    s = resolve(environ={"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-tenant=t1"}, service_name="x")
    assert dict(s.traces.headers) == {"authorization": "Bearer abc", "x-tenant": "t1"}
    s = resolve(environ={}, service_name="x", headers={"X-Key": "v"})
    assert dict(s.metrics.headers) == {"x-key": "v"}


def test_tls_files(tmp_path: Path) -> None:
    ca, key, cert = (tmp_path / n for n in ("ca.pem", "key.pem", "cert.pem"))
    for f in (ca, key, cert):
        f.write_text("-----BEGIN X-----\n")
    env = {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(ca), "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY": str(key),
           "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE": str(cert)}
    s = resolve(environ=env, service_name="x")
    assert s.traces.certificate == str(ca) and s.logs.certificate == str(ca)
    assert s.traces.client_key == str(key) and s.traces.client_certificate == str(cert)
    assert s.logs.client_key is None


def test_sentry_settings_default_from_service() -> None:
    s = resolve(environ={"SENTRY_DSN": "https://pub@o1.ingest.sentry.io/42"}, service_name="x",
                service_version="1.2.3", environment="prod")
    assert s.sentry.dsn == "https://pub@o1.ingest.sentry.io/42"
    assert s.sentry.release == "1.2.3" and s.sources["sentry.release"] == "service_version"
    assert s.sentry.environment == "prod"
    assert s.sentry.traces_sample_rate == 0.0 and s.sentry.send_default_pii is False
    s = resolve(environ={"SENTRY_RELEASE": "r9", "OTELKIT_TRACE_URL_TEMPLATE": "http://g/{trace_id}"},
                service_name="x", service_version="1")
    assert s.sentry.release == "r9" and s.sentry.trace_url_template == "http://g/{trace_id}"


def test_propagators() -> None:
    assert resolve(environ={"OTEL_PROPAGATORS": "baggage,tracecontext"}, service_name="x").propagators == \
        ("baggage", "tracecontext")
    assert resolve(environ={"OTEL_PROPAGATORS": "none"}, service_name="x").propagators == ()


def test_resource_attributes_merge_argument_wins() -> None:
    env = {"OTEL_RESOURCE_ATTRIBUTES": "team=a,region=eu%2Dwest,service.name=from-attrs,deployment.environment=qa"}
    s = resolve(environ=env, resource_attributes={"team": "b"})
    assert dict(s.resource_attributes) == {"team": "b", "region": "eu-west", "service.name": "from-attrs",
                                           "deployment.environment": "qa"}
    assert s.service_name == "from-attrs" and s.sources["service_name"] == "OTEL_RESOURCE_ATTRIBUTES"
    assert s.environment == "qa"
    # OTEL_SERVICE_NAME beats service.name in OTEL_RESOURCE_ATTRIBUTES (spec)
    s = resolve(environ={**env, "OTEL_SERVICE_NAME": "svc"})
    assert s.service_name == "svc"


# --- immutability, equality, masking ---------------------------------------------------------------


def test_settings_are_frozen_and_equality_ignores_sources() -> None:
    a = resolve(environ={"OTEL_SERVICE_NAME": "svc"})
    b = resolve(environ={}, service_name="svc")
    assert a.sources["service_name"] != b.sources["service_name"]
    assert a == b
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.service_name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.traces.headers["x"] = "y"  # type: ignore[index]
    assert a != resolve(environ={}, service_name="svc2")


def test_secrets_are_masked_in_repr_and_str() -> None:
    s = resolve(
        environ={"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20topsecret-token",
                 "SENTRY_DSN": "https://publickey123:dsnpassword@o1.ingest.sentry.io/42"},
        service_name="x", endpoint="https://user:endpointpass@collector:4318",
    )
    for text in (repr(s), str(s), repr(s.traces), str(s.sentry), repr(s.as_dict())):
        assert "topsecret" not in text
        assert "dsnpassword" not in text
        assert "endpointpass" not in text
        assert "publickey123" in text or "sentry" not in text.lower() or "***" in text
    assert "authorization" in repr(s.traces)
    assert s.as_dict(masked=False)["traces.headers"] == {"authorization": "Bearer topsecret-token"}


def test_mask_url() -> None:
    assert mask_url("https://u:p@h:1/x?q") == "https://u:***@h:1/x?q"
    assert mask_url("https://key@o1.ingest.sentry.io/1") == "https://***@o1.ingest.sentry.io/1"
    assert mask_url("http://h:4318") == "http://h:4318"
    assert mask_url(None) is None


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="servce_name"):
        resolve(environ={}, servce_name="x")


def test_config_table_markdown_lists_every_param() -> None:
    table = config_table_markdown()
    assert table.startswith("| setting |")
    for p in PARAMS:
        assert p.field in table
        for var in p.env:
            assert var in table
    assert "OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT" in table
    assert table.count("\n") == len(PARAMS) + 2


def test_every_settings_field_has_a_source() -> None:
    s = resolve(environ={}, service_name="x")
    flat = s.as_dict()
    missing = [k for k in flat if k not in s.sources]
    assert missing == []
    assert isinstance(s, Settings)


def test_attribute_value_length_limit_is_on_by_default_and_can_be_lifted() -> None:
    """Oversized values are truncated unless the user says -1/unlimited (issue 7: limits on by default)."""
    assert resolve(service_name="x", environ={}).limits.span_attribute_value_length == 8192
    lifted = resolve(service_name="x", environ={"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "-1"})
    assert lifted.limits.attribute_value_length is None and lifted.limits.span_attribute_value_length is None
