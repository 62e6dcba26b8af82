"""``otelkit doctor`` pieces that need no network: configuration view, targets, fork model, output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otelkit import _config
from otelkit._doctor import (
    Check,
    Report,
    _check_config,
    _check_sentry,
    fork_model_findings,
    render_text,
    targets,
)


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> _config.Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _config.resolve()


def _never(host: str, port: int) -> bool:
    return False


def test_configuration_is_masked_and_sourced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://user:hunter2@collector.example:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cr3t-token")
    monkeypatch.setenv("SENTRY_DSN", "https://abcdef0123456789@o1.ingest.sentry.io/42")
    report = Report()
    settings = _check_config(report)
    assert settings is not None
    rows = {r["name"]: r for r in report.config}
    assert rows["service_name"] == {"name": "service_name", "value": "orders", "source": "OTEL_SERVICE_NAME"}
    assert rows["traces.endpoint"]["source"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert rows["traces.headers"]["value"] == "authorization=***"
    assert "***@o1.ingest.sentry.io" in rows["sentry.dsn"]["value"]
    dumped = json.dumps(report.to_dict()) + render_text(report)
    for secret in ("hunter2", "s3cr3t-token", "abcdef0123456789"):
        assert secret not in dumped
    assert [c.status for c in report.checks if c.section == "config"] == ["ok"]


def test_bad_configuration_fails_names_the_variable_and_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "bogus")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    report = Report()
    settings = _check_config(report)
    assert settings is not None, "the lenient reading keeps the other checks going"
    failure = report.failures[0]
    assert failure.section == "config"
    assert "OTEL_TRACES_SAMPLER" in failure.summary and "bogus" in failure.summary
    assert "parentbased_always_on" in failure.summary, "says what is accepted"
    assert report.exit_code == 1


def test_bad_sentry_dsn_is_a_configuration_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", "not a dsn")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    report = Report()
    _check_config(report)
    assert report.exit_code == 1
    assert "SENTRY_DSN" in report.failures[0].summary


@pytest.mark.parametrize("variable", ["SENTRY_DSN", "OTELKIT_SENTRY_DSN"])
def test_invalid_sentry_dsn_fails_in_the_sentry_section_too(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    # The lenient read turns the bad DSN into "off": the Sentry section must not then say "no DSN".
    monkeypatch.setenv(variable, "https://key0123@bad")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders")
    report = Report()
    settings = _check_config(report)
    _check_sentry(report, settings, timeout=0.1, send=False)
    (sentry,) = [c for c in report.checks if c.section == "sentry"]
    assert sentry.status == "fail", sentry
    assert variable in sentry.summary and "https://***@bad" in sentry.summary
    assert "key0123" not in sentry.summary
    assert "https://<key>@<host>/<project-id>" in sentry.fix
    assert "FAIL dsn: invalid DSN" in render_text(report)


def test_unset_sentry_dsn_is_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", "  ")
    report = Report()
    _check_sentry(report, _check_config(report), timeout=0.1, send=False)
    (sentry,) = [c for c in report.checks if c.section == "sentry"]
    assert sentry.status == "skip"


def test_unset_service_name_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    report = Report()
    _check_config(report)
    warning = [c for c in report.checks if c.name == "service name"]
    assert warning and warning[0].status == "warn" and "OTEL_SERVICE_NAME" in warning[0].fix
    assert report.exit_code == 0


def test_targets_generic_http_endpoint_gets_signal_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
                         OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    found, notes = targets(settings, probe=_never)
    assert not notes
    expected = {s: f"http://collector:4318/v1/{s}" for s in ("traces", "metrics", "logs")}
    assert {t.signal: t.url for t in found} == expected
    assert all(t.source == "OTEL_EXPORTER_OTLP_ENDPOINT" for t in found)


def test_targets_grpc_and_per_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4317",
                         OTEL_EXPORTER_OTLP_PROTOCOL="grpc", OTEL_EXPORTER_OTLP_LOGS_ENDPOINT="http://logs:4317",
                         OTEL_METRICS_EXPORTER="none")
    found, notes = targets(settings, probe=_never)
    assert {t.signal: (t.protocol, t.url) for t in found} == {
        "traces": ("grpc", "http://collector:4317"), "logs": ("grpc", "http://logs:4317")}
    assert [n.name for n in notes] == ["metrics"] and "none" in notes[0].summary
    assert found[0].address == ("collector", 4317)


def test_embedded_default_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    found, notes = targets(settings, probe=_never)
    assert found == []
    assert [n.status for n in notes] == ["info"] * 3
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in notes[0].fix


def test_embedded_default_uses_a_local_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch)
    found, _ = targets(settings, probe=lambda host, port: port == 4317)
    assert {(t.protocol, t.url) for t in found} == {("grpc", "http://127.0.0.1:4317")}


def test_gunicorn_preload_is_detected(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\npreload_app = True\n")
    found = fork_model_findings({"GUNICORN_CMD_ARGS": "--preload --workers 2"}, str(tmp_path))
    assert [c.name for c in found] == ["gunicorn --preload (GUNICORN_CMD_ARGS)",
                                       "gunicorn --preload (gunicorn.conf.py)"]
    assert all(c.status == "warn" for c in found)


def test_uwsgi_without_lazy_apps_is_detected(tmp_path: Path) -> None:
    (tmp_path / "app.ini").write_text("[uwsgi]\nmodule = app:application\nprocesses = 4\n")
    (tmp_path / "ok.ini").write_text("[uwsgi]\nlazy-apps = true\nenable-threads = true\n")
    (tmp_path / "threads.ini").write_text("[uwsgi]\nlazy-apps = true\n")
    (tmp_path / "other.ini").write_text("[tool]\nx = 1\n")
    found = fork_model_findings({}, str(tmp_path))
    names = [c.name for c in found]
    assert names == ["uwsgi without lazy-apps (app.ini)", "uwsgi without enable-threads (threads.ini)"]
    assert "enable-threads" in found[0].summary and "lazy-apps = true" in found[0].fix


def test_no_fork_configuration_means_no_findings(tmp_path: Path) -> None:
    assert fork_model_findings({}, str(tmp_path)) == []


def test_render_text_verdicts() -> None:
    report = Report()
    report.add(Check("endpoints", "traces -> http://c:4317 (grpc)", "fail", "connection refused", "start it"))
    report.add(Check("fork", "fork model", "warn", "preload", "do this"))
    text = render_text(report)
    assert "FAIL traces -> http://c:4317 (grpc): connection refused" in text
    assert "-> start it" in text and "-> do this" in text
    assert "BROKEN: 1 problem(s), 1 warning(s)" in text
    healthy = Report()
    healthy.add(Check("fork", "fork model", "ok", "nothing"))
    assert render_text(healthy).endswith("HEALTHY")
    assert healthy.to_dict()["verdict"] == "healthy" and healthy.exit_code == 0
