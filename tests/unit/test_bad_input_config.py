"""Bad input at configuration time: every ``init()`` argument and every environment variable, fed garbage.

The contract (issue 7 item 8, architecture "Conventions"): a value otelkit cannot use raises
``otelkit.ConfigError`` naming the argument or variable, the value and what is accepted (or
``TypeError`` for an unknown keyword) -- never another exception from deep inside, and never a value
that is accepted now and breaks telemetry later (a duration that kills the export thread, a header
value that fails every request, text that cannot be encoded for the wire).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otelkit
from otelkit import _init
from otelkit._config import (
    ARGUMENTS,
    MAX_DURATION_SECONDS,
    MAX_INT,
    PARAMS,
    SIGNALS,
    ConfigError,
    ConfigWarning,
    Settings,
    resolve,
)

# Deterministic by default so CI stays reproducible; OTELKIT_FUZZ=N explores N times more random examples.
_FUZZ = int(os.environ.get("OTELKIT_FUZZ", "0") or 0)
FAST = settings(max_examples=15 * max(1, _FUZZ), derandomize=not _FUZZ, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "<unprintable>"


# Anything a caller might pass by mistake. None is excluded: it means "not given" for every keyword.
GARBAGE = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e309, -1e309, float("nan"), 10**400, -1, 0, 2**63]),
    st.text(max_size=40),
    st.sampled_from(["", "   ", "\t\n", "\x00", "é" * 5, "\udcff", "x" * 20_000, "1e309", "nan", "-1", "a=b=c",
                     ",,,", "%zz", "none,otlp", "http://", "http://h:99999", "true\r\nX-Injected: 1"]),
    st.binary(max_size=20),
    st.lists(st.one_of(st.integers(), st.text(max_size=5), st.none()), max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), st.one_of(st.text(max_size=5), st.none(),
                                                                               st.integers()), max_size=3),
    st.builds(object),
    st.builds(_Unprintable),
)

ENV_VARS = sorted({v for p in PARAMS for v in p.env} | {
    p.signal_env.replace("{SIGNAL}", s.upper()) for p in PARAMS if p.per_signal and p.signal_env for s in SIGNALS
} | {"OTEL_RESOURCE_ATTRIBUTES"})

ENV_GARBAGE = st.one_of(
    st.text(max_size=30),
    st.sampled_from([" ", "\t", "é", "\u202e", "\udcff", "x" * 20_000, "-1", "-5", "NaN", "nan", "inf", "-inf",
                     "1e309", "0", "99999999999999999999999", "0x10", "=", ",,,", "a=b=c", "%zz", "%", "[", "[1,2]",
                     "null", "k=v\r\nX: y", "k=\udcff"]),
)


def _check_error_names(message: str, name: str) -> None:
    assert name in message, message
    assert "is not valid: expected" in message, message


def _call_resolve(**kwargs: Any) -> Settings:
    """resolve() with the environment empty and ConfigWarnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return resolve(environ={}, service_name="x", **kwargs)


@pytest.mark.parametrize("name", sorted(n for n in ARGUMENTS if n != "service_name"))
@FAST
@given(value=GARBAGE)
def test_every_argument_with_garbage_raises_config_error_or_resolves(name: str, value: Any) -> None:
    try:
        result = _call_resolve(**{name: value})
    except ConfigError as exc:
        _check_error_names(str(exc), f"argument {name}")
        return
    assert isinstance(result, Settings)


@FAST
@given(value=GARBAGE)
def test_service_name_with_garbage(value: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            result = resolve(environ={}, service_name=value)
    except ConfigError as exc:
        _check_error_names(str(exc), "argument service_name")
        return
    assert isinstance(result.service_name, str) and result.service_name.strip()
    result.service_name.encode("utf-8")  # must be sendable


@pytest.mark.parametrize("var", ENV_VARS)
@FAST
@given(value=ENV_GARBAGE)
def test_every_environment_variable_with_garbage(var: str, value: str) -> None:
    try:
        result = resolve(environ={var: value}, service_name="x")
    except ConfigError as exc:
        _check_error_names(str(exc), var)
        return
    assert isinstance(result, Settings)


@pytest.mark.parametrize("var", ENV_VARS)
def test_empty_and_blank_environment_variables_count_as_unset(var: str) -> None:
    default = resolve(environ={}, service_name="x")
    for blank in ("", " ", "\t\n "):
        assert resolve(environ={var: blank}, service_name="x") == default


@FAST
@given(env=st.dictionaries(st.sampled_from(ENV_VARS), ENV_GARBAGE, max_size=6), value=GARBAGE,
       name=st.sampled_from(sorted(n for n in ARGUMENTS if n != "strict")))  # strict=True would beat the env
def test_strict_false_never_raises_and_only_warns(env: dict[str, str], value: Any, name: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = resolve(environ={**env, "OTELKIT_STRICT": "false"}, **{name: value})
    assert isinstance(result, Settings)
    assert all(issubclass(w.category, ConfigWarning) for w in caught), [str(w.message) for w in caught]


def test_unknown_keyword_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="servce_name"):
        otelkit.init(servce_name="x")
    with pytest.raises(TypeError, match="environ"):
        otelkit.init(environ={})


# --- values that used to be accepted and broke telemetry later ------------------------------------

@pytest.mark.parametrize(("var", "value"), [
    ("OTEL_BSP_SCHEDULE_DELAY", "99999999999999999999999"),
    ("OTEL_BLRP_SCHEDULE_DELAY", "1e15"),
    ("OTEL_METRIC_EXPORT_INTERVAL", "1e15"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "1e309"),
    ("OTELKIT_SHUTDOWN_TIMEOUT", "inf"),
    ("OTEL_BSP_EXPORT_TIMEOUT", "NaN"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "-1"),
])
def test_durations_beyond_what_threads_can_wait_are_rejected(var: str, value: str) -> None:
    # Event.wait() raises OverflowError beyond threading.TIMEOUT_MAX: the export thread died, spans were lost.
    with pytest.raises(ConfigError, match=f"{var}.*milliseconds"):
        resolve(environ={var: value}, service_name="x")


@pytest.mark.parametrize("name", ["timeout", "traces_timeout", "metric_export_interval", "metric_export_timeout",
                                  "shutdown_timeout"])
@pytest.mark.parametrize("value", [1e10, float("inf"), float("nan"), 10**400, -0.001])
def test_duration_arguments_are_bounded(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"argument {name}=.*seconds"):
        resolve(environ={}, service_name="x", **{name: value})


def test_a_week_is_the_longest_duration() -> None:
    week_ms = str(int(MAX_DURATION_SECONDS * 1000))
    assert resolve(environ={"OTEL_METRIC_EXPORT_INTERVAL": week_ms}, service_name="x").metric_export_interval \
        == MAX_DURATION_SECONDS
    assert MAX_DURATION_SECONDS < __import__("threading").TIMEOUT_MAX


@pytest.mark.parametrize("var", ["OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_SPAN_LINK_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
                                 "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT"])
def test_counts_beyond_a_c_integer_are_rejected(var: str) -> None:
    # deque(maxlen=10**23) raises in every span start: all spans were silently replaced by no-op spans.
    with pytest.raises(ConfigError, match=f"{var}.*integer"):
        resolve(environ={var: "99999999999999999999999"}, service_name="x")
    assert resolve(environ={var: str(MAX_INT)}, service_name="x") is not None


@pytest.mark.parametrize("headers", [
    "x-api-key=abc%0D%0AX-Injected: 1",  # CR/LF after percent-decoding: header injection
    "bad key=1",
    {"x-k": "line\nbreak"},
    {"x-k": "\udcff"},
    {"x\udcff": "v"},
])
def test_header_values_that_cannot_be_sent_are_rejected(headers: Any) -> None:
    with pytest.raises(ConfigError, match="argument headers"):
        resolve(environ={}, service_name="x", headers=headers)


def test_header_rejection_from_the_environment_masks_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cret%0A"}, service_name="x")
    assert "OTEL_EXPORTER_OTLP_HEADERS" in str(info.value)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(("kwargs", "env"), [
    ({"service_name": "svc\udcff"}, {}),
    ({}, {"OTEL_SERVICE_NAME": "svc\udcff"}),
    ({}, {"OTEL_RESOURCE_ATTRIBUTES": "team=\udcff"}),
    ({"resource_attributes": {"k": "v\ud800"}}, {}),
    ({}, {"OTELKIT_ENVIRONMENT": "prod\udcff"}),
])
def test_text_that_is_not_utf8_is_rejected(kwargs: dict[str, Any], env: dict[str, str]) -> None:
    # os.environ holds undecodable bytes as lone surrogates; they made every span export fail (HTTP 400).
    if "OTEL_SERVICE_NAME" not in env:
        kwargs.setdefault("service_name", "x")
    with pytest.raises(ConfigError, match="UTF-8"):
        resolve(environ=env, **kwargs)


@pytest.mark.parametrize("value", [",,,", " , "])
def test_an_empty_propagator_list_is_an_error_not_silently_no_propagation(value: str) -> None:
    with pytest.raises(ConfigError, match="OTEL_PROPAGATORS"):
        resolve(environ={"OTEL_PROPAGATORS": value}, service_name="x")
    assert resolve(environ={"OTEL_PROPAGATORS": "none"}, service_name="x").propagators == ()


def test_negative_log_level_is_rejected() -> None:
    with pytest.raises(ConfigError, match="argument log_level"):
        resolve(environ={}, service_name="x", log_level=-1)


def test_resource_attribute_value_whose_str_raises_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="argument resource_attributes"):
        resolve(environ={}, service_name="x", resource_attributes={"k": _Unprintable()})


# --- init() itself -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("span_processors", 5),
    ("span_processors", [object()]),
    ("log_processors", "abc"),
    ("log_processors", [object()]),
    ("metric_readers", [object()]),
    ("metric_readers", {"a": 1}),
])
def test_init_rejects_objects_that_are_not_processors(name: str, value: Any) -> None:
    # A non-processor used to be accepted: every span start then raised AttributeError into application code.
    try:
        with pytest.raises(ConfigError, match=f"argument {name}=.*expected a sequence of SDK"):
            otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                         instrument=(), system_metrics=False, **{name: value})
        assert otelkit.get_settings() is None
    finally:
        _init.reset()


def test_init_strict_false_skips_bad_processors_with_a_warning() -> None:
    from opentelemetry import trace

    try:
        with pytest.warns(ConfigWarning, match="span_processors"):
            otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
                         instrument=(), system_metrics=False, strict=False, span_processors=[object()])
        with trace.get_tracer("t").start_as_current_span("fine"):
            pass
    finally:
        _init.reset()


@pytest.mark.parametrize("kwargs", [
    {"metric_export_interval": 1e12},
    {"shutdown_timeout": math.inf},
    {"timeout": "soon"},
    {"headers": {"k": "a\r\nb"}},
])
def test_init_raises_config_error_before_touching_anything(kwargs: dict[str, Any]) -> None:
    try:
        with pytest.raises(ConfigError):
            otelkit.init(service_name="x", instrument=(), system_metrics=False, **kwargs)
        assert otelkit.get_settings() is None
    finally:
        _init.reset()


def test_config_error_is_raised_from_init_not_from_deep_inside() -> None:
    with pytest.raises(ConfigError) as info:
        otelkit.init(service_name="x", metric_export_interval=float("nan"))
    # The traceback ends in otelkit's resolver, the message reads on its own.
    assert "argument metric_export_interval=nan" in str(info.value)
    frames = []
    tb = info.value.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert all("site-packages" not in f for f in frames), frames
    assert sys.exc_info()[0] is None


def test_a_small_queue_alone_caps_the_default_batch_size() -> None:
    # Found by the property test above: OTEL_BSP_MAX_QUEUE_SIZE=1 alone raised an error blaming
    # OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512, a variable the user never set.
    s = resolve(environ={"OTEL_BSP_MAX_QUEUE_SIZE": "1", "OTEL_BLRP_MAX_QUEUE_SIZE": "100"}, service_name="x")
    assert (s.bsp.max_queue_size, s.bsp.max_export_batch_size) == (1, 1)
    assert (s.blrp.max_queue_size, s.blrp.max_export_batch_size) == (100, 100)
    with pytest.raises(ConfigError, match="OTEL_BSP_MAX_EXPORT_BATCH_SIZE=20"):
        resolve(environ={"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20"}, service_name="x")


@pytest.mark.parametrize(("var", "value"), [("OTELKIT_LOG_LEVEL", "²"), ("OTELKIT_LOG_LEVEL", "٣"),
                                            ("SENTRY_DSN", "https://k@o0.ingest.sentry.io/²")])
def test_unicode_digits_are_config_errors_not_value_errors(var: str, value: str) -> None:
    # Found by the property tests: str.isdigit() accepts "²", int() does not -- a bare ValueError escaped
    # init(), even with strict=False.
    with pytest.raises(ConfigError, match=var):
        resolve(environ={var: value}, service_name="x")
    with pytest.warns(ConfigWarning, match=var):
        resolve(environ={var: value, "OTELKIT_STRICT": "false"}, service_name="x")


@pytest.mark.parametrize("endpoint", ["http://collector:0", "http://collector:4318/\tv1", "http://collector:4318/a b",
                                      "http://collector:4318/\x00", "http://collector:4318/\udcff",
                                      "http://user:pa ss@collector:4318", "https://collector:4318/#frag"])
def test_endpoints_that_can_never_be_requested_are_rejected(endpoint: str) -> None:
    # Each was accepted, and then every export request failed (or went to port 0) for the process lifetime.
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, service_name="x")


def test_generic_endpoint_with_a_query_gets_the_signal_path_before_the_query() -> None:
    s = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/base/?tenant=a"}, service_name="x")
    assert s.traces.endpoint == "https://collector:4318/base/v1/traces?tenant=a"  # was ".../?tenant=a/v1/traces"
