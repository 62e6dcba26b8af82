"""Bad configuration: ConfigError names the variable/argument, the value and what is accepted; strict=False warns."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

import otelkit
from otelkit._config import ConfigError, ConfigWarning, resolve

# (environment, fragment naming the accepted values) -- every case must raise in strict mode
BAD_ENV: list[tuple[str, str, str]] = [
    ("OTEL_SDK_DISABLED", "maybe", "true or false"),
    ("OTEL_TRACES_EXPORTER", "zipkin", "otlp, console, none"),
    ("OTEL_METRICS_EXPORTER", "otlp,jaeger", "prometheus"),
    ("OTEL_LOGS_EXPORTER", "prometheus", "otlp, console, none"),
    ("OTEL_TRACES_EXPORTER", "none,otlp", "none alone"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "http:// or https:// URL"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317/v1", "host:port without a scheme"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x", "http:// or https:// URL"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift", "grpc, http/protobuf"),
    ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json", "grpc, http/protobuf"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s", "milliseconds"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5", "milliseconds"),
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "gzip, none"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue", "key=value"),
    ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem", "existing"),
    ("OTEL_EXPORTER_OTLP_INSECURE", "perhaps", "true or false"),
    ("OTEL_TRACES_SAMPLER", "probabilistic", "parentbased_traceidratio"),
    ("OTEL_TRACES_SAMPLER", "jaeger_remote", "not supported"),
    ("OTEL_TRACES_SAMPLER", "xray", "not supported"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5", "between 0 and 1"),
    ("OTEL_TRACES_SAMPLER_ARG", "half", "between 0 and 1"),
    ("OTEL_PROPAGATORS", "tracecontext,w3c", "tracecontext"),
    ("OTEL_PROPAGATORS", "b3", "opentelemetry-propagator-b3"),
    ("OTEL_BSP_SCHEDULE_DELAY", "soon", "milliseconds"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "integer >= 1"),
    ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "1.5", "integer >= 1"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "fast", "milliseconds"),
    ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes", "always_on, always_off, trace_based"),
    ("OTEL_ATTRIBUTE_COUNT_LIMIT", "-1", "integer >= 0"),
    ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "big", "no limit"),
    ("OTEL_EXPORTER_PROMETHEUS_PORT", "70000", "1-65535"),
    ("OTEL_RESOURCE_ATTRIBUTES", "team", "key=value"),
    ("OTELKIT_LOG_LEVEL", "LOUD", "DEBUG, INFO"),
    ("OTELKIT_SCRUB_EXTRA_PATTERNS", "(unclosed", "does not compile"),
    ("OTELKIT_SCRUB_EXTRA_PATTERNS", '["ok", 3]', "JSON list of strings"),
    ("OTELKIT_SHUTDOWN_TIMEOUT", "forever", "milliseconds"),
    ("SENTRY_TRACES_SAMPLE_RATE", "2", "between 0 and 1"),
]


@pytest.mark.parametrize(("var", "value", "accepted"), BAD_ENV, ids=[f"{v}={x}" for v, x, _ in BAD_ENV])
def test_bad_env_raises_config_error_naming_var_value_and_accepted(var: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={var: value}, service_name="x")
    message = str(info.value)
    assert var in message
    assert repr(value) in message or (var.endswith("HEADERS") and "***" in message)
    assert accepted in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "accepted"),
    [
        ({"protocol": "udp"}, "grpc, http/protobuf"),
        ({"sampler_arg": -0.1}, "between 0 and 1"),
        ({"timeout": "ten"}, "seconds"),
        ({"shutdown_timeout": -1}, "seconds"),
        ({"traces_exporter": ["otlp", 3]}, "otlp"),
        ({"endpoint": "localhost:4318"}, "http:// or https://"),
        ({"disabled": "sometimes"}, "true or false"),
        ({"log_level": True}, "logging level"),
    ],
)
def test_bad_argument_raises_naming_the_argument(kwargs: dict[str, Any], accepted: str) -> None:
    (name, value), = kwargs.items()
    with pytest.raises(ConfigError) as info:
        resolve(environ={}, service_name="x", **kwargs)
    assert f"argument {name}={value!r}" in str(info.value)
    assert accepted in str(info.value)


def test_batch_size_larger_than_queue_is_rejected() -> None:
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=600.*<= BSP max queue size \\(100\\)"):
        resolve(environ={"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "600"},
                service_name="x")


def test_client_key_without_certificate_is_rejected(tmp_path: Any) -> None:
    key = tmp_path / "key.pem"
    key.write_text("k")
    with pytest.raises(ConfigError, match="CLIENT_CERTIFICATE"):
        resolve(environ={"OTEL_EXPORTER_OTLP_CLIENT_KEY": str(key)}, service_name="x")


def test_secret_values_are_masked_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTEL_EXPORTER_OTLP_HEADERS": "supersecrettoken"}, service_name="x")
    assert "supersecrettoken" not in str(info.value)
    assert "***" in str(info.value)
    with pytest.raises(ConfigError) as info:
        resolve(environ={"SENTRY_DSN": "https://secretkey@host/notaproject"}, service_name="x")
    assert "secretkey" not in str(info.value)
    assert "'https://***@host/notaproject'" in str(info.value) and "Sentry DSN such as" in str(info.value)
    with pytest.raises(ConfigError, match="argument headers=\\*\\*\\* is not valid: expected key=value"):
        resolve(environ={}, service_name="x", headers={"authorization": 12345})


def test_strict_false_warns_once_per_bad_value_and_uses_defaults() -> None:
    env = {"OTELKIT_STRICT": "false", "OTEL_TRACES_SAMPLER": "bogus", "OTEL_EXPORTER_OTLP_TIMEOUT": "x",
           "OTEL_BSP_MAX_QUEUE_SIZE": "-3", "OTEL_TRACES_EXPORTER": "zipkin"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = resolve(environ=env, service_name="x")
    messages = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert s.strict is False
    assert s.sampler == "parentbased_always_on"
    assert s.traces.timeout == 10.0 and s.metrics.timeout == 10.0
    assert s.bsp.max_queue_size == 8192
    assert s.traces.exporters == ("auto",)
    # one warning per bad value, although the generic timeout is read once per signal
    assert sum("OTEL_EXPORTER_OTLP_TIMEOUT=" in m for m in messages) == 1
    assert sum("OTEL_TRACES_SAMPLER=" in m for m in messages) == 1
    assert sum("OTEL_BSP_MAX_QUEUE_SIZE=" in m for m in messages) == 1
    assert sum("OTEL_TRACES_EXPORTER=" in m for m in messages) == 1
    assert all("using the default" in m for m in messages)


def test_strict_argument_beats_env_and_bad_strict_is_always_an_error() -> None:
    with pytest.warns(ConfigWarning, match="OTEL_TRACES_SAMPLER"):
        resolve(environ={"OTELKIT_STRICT": "true", "OTEL_TRACES_SAMPLER": "bogus"}, service_name="x", strict=False)
    with pytest.raises(ConfigError, match="OTELKIT_STRICT"):
        resolve(environ={"OTELKIT_STRICT": "kinda"}, service_name="x")


def test_init_raises_config_error_and_sets_nothing() -> None:
    from otelkit import _init

    before = _init.get_settings()
    with pytest.raises(otelkit.ConfigError, match="OTEL_TRACES_SAMPLER"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OTEL_TRACES_SAMPLER", "nope")
            otelkit.init(service_name="x")
    assert _init.get_settings() is before
