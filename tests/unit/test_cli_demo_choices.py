"""How ``otelkit demo`` picks its queue, database and telemetry destination (no real services)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

import otelkit._demo as demo
from otelkit._config import Settings, resolve
from otelkit._demo import _backends


@pytest.fixture
def environ(swap_environ: Callable[[dict[str, str]], None]) -> dict[str, str]:
    """A private copy of the environment (the demo only reads it: the assertions check it stays as it was)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "REDIS_URL", "DATABASE_URL"))}
    swap_environ(env)
    return env


def settings_of(telemetry: demo.Telemetry) -> Settings:
    """What a demo process's ``otelkit.init(service_name=..., **telemetry.init_options)`` resolves to."""
    return resolve(service_name="token-enricher", **telemetry.init_options)


def listening(*ports: int) -> object:
    return lambda host, port, timeout=0.3: port in ports


def test_embedded_default_runs_its_own_receiver(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening())
    before = dict(environ)
    telemetry = demo._choose_telemetry("auto", "abc123", continuous=False)
    try:
        assert telemetry.mode == "terminal" and telemetry.receiver is not None
        settings = settings_of(telemetry)
        assert settings.traces.endpoint == telemetry.receiver.http_endpoint + "/v1/traces"
        assert settings.logs.protocol == "http/protobuf" and settings.metrics.exporters == ("otlp",)
        assert settings.metric_export_interval == 1.0
        assert "no collector on 127.0.0.1:4317/4318" in telemetry.description
        assert settings.environment == "demo"
        assert dict(settings.resource_attributes) == {"otelkit.demo.run": "abc123"}
        assert environ == before  # nothing written into the environment
    finally:
        telemetry.receiver.stop()


def test_configured_endpoint_is_used_as_is(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening())
    environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector.example:4317"
    environ["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment.name=staging"
    before = dict(environ)
    telemetry = demo._choose_telemetry("auto", "abc123", continuous=True)
    assert telemetry.mode == "configured" and telemetry.receiver is None
    assert "traces -> http://collector.example:4317" in telemetry.description
    settings = settings_of(telemetry)
    assert settings.traces.endpoint == "http://collector.example:4317" and settings.traces.protocol == "grpc"
    assert settings.environment == "staging"
    assert dict(settings.resource_attributes) == {"deployment.environment.name": "staging",
                                                  "otelkit.demo.run": "abc123"}
    assert settings.metric_export_interval == 5.0
    assert environ == before


def test_a_configured_metric_interval_is_kept(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening(4317))
    environ["OTEL_METRIC_EXPORT_INTERVAL"] = "7000"
    telemetry = demo._choose_telemetry("auto", "abc123", continuous=False)
    assert "metric_export_interval" not in telemetry.init_options
    assert settings_of(telemetry).metric_export_interval == 7.0


def test_bundled_stack_is_used_when_listening(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening(4317))
    telemetry = demo._choose_telemetry("auto", "abc123", continuous=False)
    assert telemetry.mode == "bundled" and "OTEL_EXPORTER_OTLP_ENDPOINT" not in environ
    assert settings_of(telemetry).traces.exporters == ("auto",)  # init() finds the bundled collector itself


def test_terminal_overrides_a_configured_endpoint(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening(4317))
    environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://elsewhere:4318/v1/traces"
    telemetry = demo._choose_telemetry("terminal", "abc123", continuous=False)
    try:
        assert telemetry.mode == "terminal"
        # The argument beats the per-signal variable, which stays in the environment untouched.
        assert settings_of(telemetry).traces.endpoint == telemetry.receiver.http_endpoint + "/v1/traces"
        assert environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://elsewhere:4318/v1/traces"
    finally:
        telemetry.receiver.stop()


def test_otlp_without_any_collector_is_an_error(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "tcp_reachable", listening())
    with pytest.raises(RuntimeError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        demo._choose_telemetry("otlp", "abc123", continuous=False)


def test_redis_choice(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backends, "tcp_reachable", listening(6379))
    assert _backends.choose_redis(None).target == _backends.DEFAULT_REDIS_URL
    assert _backends.choose_redis("none").kind == "local"
    environ["REDIS_URL"] = "redis://:pw@cache:6380/1"
    refused = _backends.choose_redis(None)
    assert refused.kind == "local" and "REDIS_URL=redis://:***@cache:6380/1 is not reachable" in refused.reason
    monkeypatch.setattr(_backends, "tcp_reachable", listening())
    del environ["REDIS_URL"]
    absent = _backends.choose_redis(None)
    assert absent.kind == "local" and "nothing listens on 127.0.0.1:6379 (pass --redis URL" in absent.reason


def test_postgres_choice(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_backends, "tcp_reachable", listening(5433))
    flagged = _backends.choose_postgres("host=db port=5433 dbname=x user=u password=secret")
    assert flagged.kind == "postgres" and flagged.reason == "from --postgres"
    environ["DATABASE_URL"] = "postgresql://u:secret@db:5432/x"
    refused = _backends.choose_postgres(None)
    assert refused.kind == "local" and "secret" not in refused.reason and "***" in refused.reason
    assert _backends.choose_postgres("sqlite").kind == "local"
    store = _backends.PostgresStore("host=db password=secret", "abc123")
    assert "secret" not in store.description and store.table == "otelkit_demo_tokens_abc123"
