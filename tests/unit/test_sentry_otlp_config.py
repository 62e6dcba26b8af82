"""OTELKIT_SENTRY_OTLP: the setting, the endpoint and auth made from the DSN, the destination it adds."""

from __future__ import annotations

import pytest

from otelkit._config import ConfigError, resolve
from otelkit._export import factory
from otelkit._sentry import _otlp_target_fallback, otlp_target
from otelkit._version import __version__

DSN = "https://abc123def@o77.ingest.sentry.io/4242"


@pytest.mark.parametrize(("raw", "expected"), [
    ("traces", ("traces",)), ("logs", ("logs",)), ("logs, traces", ("traces", "logs")),
    ("TRACES,logs", ("traces", "logs")),
    ("off", ()), ("none", ()), ("false", ()),
])
def test_accepted_values(raw: str, expected: tuple[str, ...]) -> None:
    assert resolve(environ={"OTELKIT_SENTRY_OTLP": raw}).sentry.otlp == expected


def test_default_is_off() -> None:
    settings = resolve(environ={"SENTRY_DSN": DSN})
    assert settings.sentry.otlp == ()
    assert not any(d.sentry for d in factory.resolve_exporters(settings, "traces", probe=lambda: None))


@pytest.mark.parametrize("raw", ["metrics", "traces,metrics", "all", "on", "traces;logs"])
def test_bad_values_name_the_setting_and_what_is_accepted(raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"OTELKIT_SENTRY_OTLP": raw})
    message = str(info.value)
    assert "OTELKIT_SENTRY_OTLP" in message and repr(raw) in message
    assert "off, traces, logs or traces,logs" in message and "no OTLP endpoint for metrics" in message


def test_traces_over_otlp_with_sentry_tracing_on_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ={"SENTRY_DSN": DSN, "SENTRY_TRACES_SAMPLE_RATE": "0.2", "OTELKIT_SENTRY_OTLP": "traces"})
    message = str(info.value)
    assert "OTELKIT_SENTRY_OTLP" in message and "SENTRY_TRACES_SAMPLE_RATE" in message and "twice" in message
    assert "abc123def" not in message
    # Logs alone do not collide with Sentry's transactions.
    assert resolve(environ={"SENTRY_TRACES_SAMPLE_RATE": "0.2", "OTELKIT_SENTRY_OTLP": "logs"}).sentry.otlp == ("logs",)


def test_refused_combination_falls_back_to_off_when_not_strict() -> None:
    with pytest.warns(UserWarning, match="twice"):
        settings = resolve(strict=False, sentry_dsn=DSN, sentry_traces_sample_rate=1.0, sentry_otlp="traces,logs")
    assert settings.sentry.otlp == ()
    assert settings.sentry.traces_sample_rate == 1.0


@pytest.mark.parametrize("dsn", [DSN, "http://key:secret@127.0.0.1:9000/prefix/path/7", "https://k@sentry.example.com/1"])
@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_sentry_sdk_helpers_and_the_fallback_agree(dsn: str, signal: str) -> None:
    """Without sentry-sdk (or with one that lacks a helper) the computed endpoint and header are the same."""
    url, headers = otlp_target(dsn, signal)
    assert (url, headers) == _otlp_target_fallback(dsn, signal, f"otelkit/{__version__}")
    assert url.endswith(f"/integration/otlp/v1/{signal}")


def test_endpoint_from_the_dsn_and_the_key_only_in_the_header() -> None:
    url, headers = otlp_target(DSN, "traces")
    assert url == "https://o77.ingest.sentry.io/api/4242/integration/otlp/v1/traces"
    assert "abc123def" not in url
    assert "sentry_key=abc123def" in headers["X-Sentry-Auth"]


def test_one_more_destination_with_its_own_header_only() -> None:
    settings = resolve(environ={
        "SENTRY_DSN": DSN, "OTELKIT_SENTRY_OTLP": "traces,logs",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://grafana.example:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Basic Z3JhZmFuYTpzZWNyZXQ=",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"})
    traces = factory.resolve_exporters(settings, "traces")
    assert [(d.sentry, d.endpoint) for d in traces] == [
        (False, "https://grafana.example:4318/v1/traces"),
        (True, "https://o77.ingest.sentry.io/api/4242/integration/otlp/v1/traces")]
    assert [d.sentry for d in factory.resolve_exporters(settings, "metrics")] == [False]
    sentry_sender = factory.sender_for(settings, traces[1])
    collector_sender = factory.sender_for(settings, traces[0])
    try:
        # The collector's credentials and compression are the collector's: Sentry gets its own auth only.
        assert "Authorization" not in sentry_sender._headers  # type: ignore[attr-defined]
        assert sentry_sender._headers["X-Sentry-Auth"].startswith("Sentry sentry_key=abc123def")  # type: ignore[attr-defined]
        assert "X-Sentry-Auth" not in collector_sender._headers  # type: ignore[attr-defined]
        assert "Content-Encoding" not in sentry_sender._headers  # type: ignore[attr-defined]
    finally:
        sentry_sender.close()
        collector_sender.close()
    line = factory.describe_destinations(settings)
    assert "Sentry OTLP o77.ingest.sentry.io" in line and "abc123def" not in line
    assert "abc123def" not in repr(traces)


def test_no_destination_without_a_dsn_or_for_metrics() -> None:
    settings = resolve(environ={"OTELKIT_SENTRY_OTLP": "traces,logs", "OTEL_TRACES_EXPORTER": "none"})
    assert factory.resolve_exporters(settings, "traces") == []


def test_sentry_is_its_own_switch_even_with_exporter_none() -> None:
    settings = resolve(environ={"SENTRY_DSN": DSN, "OTELKIT_SENTRY_OTLP": "traces", "OTEL_TRACES_EXPORTER": "none"})
    (only,) = factory.resolve_exporters(settings, "traces")
    assert only.sentry and only.protocol == "http/protobuf"


def test_endpoint_without_sentry_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OTLP path needs no sentry-sdk: without it the endpoint and header are computed."""
    import sys

    expected = otlp_target(DSN, "logs")
    monkeypatch.setitem(sys.modules, "sentry_sdk.consts", None)  # makes `from sentry_sdk.consts import` fail
    assert otlp_target(DSN, "logs") == expected


def test_doctor_checks_the_sentry_endpoint_and_names_the_dsn_when_unreachable() -> None:
    from otelkit._doctor import _unreachable_fix, targets

    settings = resolve(environ={"SENTRY_DSN": "http://k3y@127.0.0.1:1/5", "OTELKIT_SENTRY_OTLP": "traces",
                                "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                                "OTEL_METRICS_EXPORTER": "none"})
    found, _ = targets(settings, probe=lambda host, port: False)
    (target,) = found
    assert target.url == "http://127.0.0.1:1/api/5/integration/otlp/v1/traces"
    assert "SENTRY_DSN" in _unreachable_fix(target)
