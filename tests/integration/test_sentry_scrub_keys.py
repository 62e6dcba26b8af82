"""Secrets under secret-naming keys never reach Sentry, whatever the exact name.

Sentry's own ``EventScrubber`` only knows exact names (``password``, ``auth``,
``token``...) one level deep: ``db_password``, ``api_token``, ``client_secret``,
``session_id`` or ``cfg = {"password": ...}`` went out as they were. These tests
drive the real sentry-sdk transport against :class:`SentrySink` and look for the
planted values in the raw envelopes.
"""

# ruff: noqa: F841  (the locals below exist only to be captured as frame variables)
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sentry_sink import SentrySink, iter_strings

import otelkit
from otelkit._scrub import REDACTED
from otelkit.testing import capture_telemetry

# Built at run time: the source lines Sentry sends as frame context hold no copy of them.
_SECRETS = {name: f"OTK{name[:3]}{uuid.uuid4().hex[:16]}" for name in (
    "db_password", "api_token", "secret_key", "client_secret", "session_id", "cfg_password", "cfg_api_key",
    "stripe", "crumb", "extra", "context", "tag",
)}


@pytest.fixture
def sink() -> Iterator[SentrySink]:
    with SentrySink() as s:
        yield s


def _frame_vars(event: dict[str, Any], function: str) -> dict[str, Any]:
    for exception in event["exception"]["values"]:
        for frame in exception["stacktrace"]["frames"]:
            if frame.get("function") == function:
                return dict(frame.get("vars") or {})
    raise AssertionError(f"no frame {function!r} in the event")


def test_locals_breadcrumbs_extra_contexts_and_tags_are_redacted_by_key(sink: SentrySink) -> None:
    import sentry_sdk

    secrets = _SECRETS
    app_log = logging.getLogger("app.sentry-keys")

    def charge(order_id: int) -> None:
        db_password = secrets["db_password"]
        api_token = secrets["api_token"]
        secret_key = secrets["secret_key"]
        client_secret = secrets["client_secret"]
        session_id = secrets["session_id"]
        cfg = {"password": secrets["cfg_password"], "nested": {"apiKey": secrets["cfg_api_key"]}, "retries": 3}
        card_processor = "sk_live_" + secrets["stripe"]  # an innocently named local holding a Stripe key
        pin_code_secret = 4242  # a secret that is a number
        app_log.warning("charging order %s", order_id, extra={"upstream_token": secrets["crumb"]})
        sentry_sdk.set_extra("billing_api_key", secrets["extra"])
        sentry_sdk.set_context("gateway", {"name": "stripe", "auth": {"client_secret": secrets["context"]}})
        sentry_sdk.set_tag("x_session_token", secrets["tag"])
        raise RuntimeError(f"charge {order_id} declined")

    with capture_telemetry(service_name="billing", sentry_dsn=sink.dsn, instrument=()):
        with pytest.raises(RuntimeError):
            with otelkit.span("charge"):
                charge(1234)

    (event,) = sink.events()
    raw = sink.raw()
    leaked = [name for name, value in secrets.items() if value.encode() in raw]
    assert not leaked, f"leaked to Sentry: {leaked}"
    assert not any(value in s for s in iter_strings(event) for value in secrets.values())


def test_redacted_fields_keep_their_place_and_ordinary_values_stay(sink: SentrySink) -> None:
    def load(user_count: int) -> None:
        db_password = _SECRETS["db_password"]
        cfg = {"password": _SECRETS["cfg_password"], "retries": 3, "author": "bob"}
        api_token = None
        raise ValueError("bad config")

    with capture_telemetry(service_name="billing", sentry_dsn=sink.dsn, instrument=()):
        with pytest.raises(ValueError):
            with otelkit.span("load"):
                load(7)

    (event,) = sink.events()
    frame_vars = _frame_vars(event, "load")
    # The on-call engineer still sees which locals existed and the harmless values.
    assert frame_vars["db_password"] == REDACTED
    assert frame_vars["cfg"]["password"] == REDACTED
    assert frame_vars["cfg"]["retries"] in (3, "3")
    assert "bob" in str(frame_vars["cfg"]["author"])
    assert frame_vars["api_token"] in (None, "None")
    assert frame_vars["user_count"] in (7, "7")
    # Sentry's structural fields are left alone.
    assert event["exception"]["values"][-1]["value"] == "bad config"
    assert event["contexts"]["trace"]["trace_id"] == event["tags"]["trace_id"]


def test_scrub_off_leaves_values_to_sentry_alone(sink: SentrySink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELKIT_SCRUB", "false")

    def work() -> None:
        db_password = _SECRETS["db_password"]
        raise RuntimeError("x")

    with capture_telemetry(service_name="billing", sentry_dsn=sink.dsn, instrument=()):
        with pytest.raises(RuntimeError):
            with otelkit.span("work"):
                work()
    (event,) = sink.events()
    assert _SECRETS["db_password"] in str(_frame_vars(event, "work")["db_password"])
