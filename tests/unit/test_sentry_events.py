"""otelkit._sentry event processing: linking, dedup, scrubbing, setup decisions (no network).

Events here are Sentry event dicts shaped like the ones ``before_send``
receives (already serialised: frame locals are repr strings).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, TraceFlags, format_span_id, format_trace_id

from otelkit import _errors, _sentry
from otelkit._config import ConfigError, resolve

_SECRETS = ("S3cr3tPw", "tok_9f8e7d6c5b4a", "hunter22pass", "ghp_" + "a1" * 18)
_CTX = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False,
                   trace_flags=TraceFlags(TraceFlags.SAMPLED))


@pytest.fixture(autouse=True)
def enrichment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings = resolve(service_name="billing", environment="prod")
    monkeypatch.setattr(_sentry, "_enrichment", _sentry._Enrichment(
        service_name="billing", environment="prod", trace_url_template="https://g.example/t/{trace_id}/{span_id}",
        scrub=_sentry._scrubber(settings)))
    yield


def _event(message: str) -> dict[str, Any]:
    return {
        "event_id": "a" * 32,
        "exception": {"values": [{"type": "ConnectionError", "value": message, "stacktrace": {"frames": [
            {"function": "connect", "vars": {"target": f"'postgresql://app:{_SECRETS[0]}@db:5432/app'",
                                             "hdr": f"'Bearer {_SECRETS[1]}'", "n": "3"}}]}}]},
        "breadcrumbs": {"values": [{"message": f"GET https://u:{_SECRETS[2]}@api.internal/x", "category": "log"}]},
        "extra": {"sys.argv": ["app.py", f"--token={_SECRETS[3]}"]},
        "contexts": {"trace": {"trace_id": "f" * 32, "span_id": "e" * 16, "parent_span_id": "d" * 16}},
        "tags": {},
    }


def test_default_trace_url_points_at_bundled_grafana() -> None:
    template = _sentry.DEFAULT_TRACE_URL_TEMPLATE
    assert template.startswith("http://127.0.0.1:3000/explore?")
    url = _sentry.trace_url(template, "0af7651916cd43dd8448eb211c80319c")
    assert url is not None and "{trace_id}" not in url
    assert "0af7651916cd43dd8448eb211c80319c" in url
    assert _sentry.trace_url(None, "x") is None
    assert _sentry.trace_url("t/{trace_id}/{span_id}", "abc", "def") == "t/abc/def"


def test_pending_report_links_event_to_its_span_and_job() -> None:
    token = _sentry._pending.set(_sentry._Pending(_CTX, {"destination": "orders", "attempt": 2,
                                                         "correlation_id": "corr-1"}))
    try:
        event = _sentry._process_event(_event("x"), {"exc_info": (ValueError, ValueError("x"), None)})
    finally:
        _sentry._pending.reset(token)
    assert event is not None
    trace_id, span_id = format_trace_id(_CTX.trace_id), format_span_id(_CTX.span_id)
    assert event["contexts"]["trace"] == {"trace_id": trace_id, "span_id": span_id}
    assert event["contexts"]["otel"]["trace_url"] == f"https://g.example/t/{trace_id}/{span_id}"
    assert event["tags"]["correlation_id"] == "corr-1"
    assert event["tags"]["service.name"] == "billing"
    assert event["tags"]["deployment.environment.name"] == "prod"
    assert event["contexts"]["job"] == {"destination": "orders", "attempt": 2, "correlation_id": "corr-1"}


def test_active_otel_span_links_events_from_sentry_integrations() -> None:
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("app")
    with tracer.start_as_current_span("handler") as span:
        event = _sentry._process_event(_event("logged"), {})
    assert event is not None
    assert event["contexts"]["trace"]["span_id"] == format_span_id(span.get_span_context().span_id)


def test_exception_seen_by_a_library_span_links_to_it_outside_any_span() -> None:
    exc = OSError("reset")
    report = _errors.get_report(exc, create=True)
    assert report is not None
    report.origin = _CTX
    event = _sentry._process_event(_event("reset"), {"exc_info": (OSError, exc, None)})
    assert event is not None
    assert event["contexts"]["trace"]["trace_id"] == format_trace_id(_CTX.trace_id)


def test_second_event_for_the_same_exception_is_dropped() -> None:
    exc = ValueError("once")
    first = _sentry._process_event(_event("once"), {"exc_info": (ValueError, exc, None)})
    assert first is not None
    report = _errors.get_report(exc)
    assert report is not None and report.sent and report.event_id == "a" * 32
    assert _sentry._process_event(_event("once"), {"exc_info": (ValueError, exc, None)}) is None
    # An event with no exception (logger.error without exc_info) is never deduplicated.
    assert _sentry._process_event(_event("message"), {}) is not None


def test_secrets_are_scrubbed_from_every_string() -> None:
    event = _sentry._process_event(_event(f"cannot reach postgresql://app:{_SECRETS[0]}@db/app"), {})
    assert event is not None
    dumped = json.dumps(event)
    for secret in _SECRETS:
        assert secret not in dumped
    assert event["exception"]["values"][0]["value"] == "cannot reach postgresql://REDACTED:REDACTED@db/app"
    frame_vars = event["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars["hdr"] == "'Bearer [REDACTED]'"
    assert frame_vars["n"] == "3"


def test_scrub_off_leaves_events_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(service_name="billing", scrub=False)
    assert _sentry._scrubber(settings) is None
    monkeypatch.setattr(_sentry, "_enrichment", dataclasses.replace(_sentry._enrichment, scrub=None))
    event = _sentry._process_event(_event("plain"), {})
    assert event is not None and _SECRETS[0] in json.dumps(event)


def test_before_send_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("scrubber bug")

    monkeypatch.setattr(_sentry, "_link", broken)
    assert _sentry._before_send(_event("x"), {}) is None


def test_breadcrumbs_are_scrubbed() -> None:
    crumb = {"message": f"calling http://svc:{_SECRETS[2]}@api/x", "data": {"header": f"Bearer {_SECRETS[1]}"}}
    out = _sentry._before_breadcrumb(crumb, {})
    assert out is not None
    assert _SECRETS[2] not in json.dumps(out) and _SECRETS[1] not in json.dumps(out)


def test_setup_without_dsn_is_disabled_and_installs_no_sender() -> None:
    status = _sentry.setup(resolve(service_name="billing"))
    assert status is not None and status.state == "disabled"
    assert "SENTRY_DSN" in status.reason
    assert not _errors.sentry_enabled()


def test_setup_rejects_a_dsn_sentry_cannot_parse() -> None:
    settings = resolve(service_name="billing")
    bad = dataclasses.replace(settings, sentry=dataclasses.replace(settings.sentry, dsn="http://127.0.0.1:9/1"))
    with pytest.raises(ConfigError, match="Sentry DSN"):
        _sentry.setup(bad)


def test_setup_does_not_import_sentry_without_dsn() -> None:
    code = ("import sys; from otelkit import _sentry; from otelkit._config import resolve; "
            "_sentry.setup(resolve(service_name='x')); print('sentry_sdk' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_default_trace_url_matches_the_bundled_grafana_and_tempo_datasource() -> None:
    """The link Sentry events carry must open in the stack otelkit ships (same uid, same port)."""
    import urllib.parse
    from pathlib import Path

    import yaml  # pyyaml is in the test extra: absent is a failure, not a skip
    root = Path(__file__).resolve().parents[2]
    datasources = yaml.safe_load((root / "collector/grafana/provisioning/datasources/datasources.yaml").read_text())
    tempo_uids = {d["uid"] for d in datasources["datasources"] if d["type"] == "tempo"}
    url = urllib.parse.urlsplit(_sentry.DEFAULT_TRACE_URL_TEMPLATE)
    panes = json.loads(urllib.parse.parse_qs(url.query)["panes"][0])
    (pane,) = panes.values()
    assert pane["datasource"] in tempo_uids
    assert pane["queries"][0]["query"] == "{trace_id}"
    assert "127.0.0.1:3000:3000" in (root / "compose.yaml").read_text()
    assert url.netloc == "127.0.0.1:3000"


def test_status_reports_the_last_setup() -> None:
    _sentry.setup(resolve(service_name="billing"))
    status = _sentry.status()
    assert status is not None and status.name == "sentry" and status.state == "disabled"
