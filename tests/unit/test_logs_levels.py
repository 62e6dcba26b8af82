"""Which logger levels ``init()`` changes, and the application's handlers seeing only what they saw before."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

import otelkit
from otelkit import _init
from otelkit.testing import CapturedTelemetry

BASE = {"service_name": "levels-test", "instrument": (), "system_metrics": False}


@pytest.fixture
def app_console() -> Iterator[io.StringIO]:
    """An application's console handler on the root logger (level NOTSET, like basicConfig's), root at WARNING."""
    root = logging.getLogger()
    saved_level = root.level
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        yield out
    finally:
        _init.reset()
        root.removeHandler(handler)
        root.setLevel(saved_level)


def test_exported_logs_lower_the_root_but_the_app_console_keeps_its_level(app_console: io.StringIO) -> None:
    captured = CapturedTelemetry()
    original_call_handlers = logging.Logger.callHandlers
    original_last_resort = logging.lastResort
    otelkit.init(**BASE, **captured.init_kwargs())
    root = logging.getLogger()
    assert root.level == logging.INFO  # records at log_level must exist to be exported
    assert not any(type(h).__module__ == "otelkit._logs" for h in root.handlers)  # basicConfig still works
    log = logging.getLogger("app.levels")
    log.info("only exported")
    log.warning("shown and exported")
    assert app_console.getvalue() == "WARNING shown and exported\n"
    assert [r.body for r in captured.logs] == ["only exported", "shown and exported"]

    # The application changes its level later (basicConfig(level=...), dictConfig): it rules its console,
    # otelkit keeps exporting INFO.
    root.setLevel(logging.ERROR)
    log.warning("exported only now")
    log.error("both")
    assert app_console.getvalue().splitlines()[1:] == ["ERROR both"]
    assert [r.body for r in captured.logs][2:] == ["exported only now", "both"]

    _init.reset()
    assert root.level == logging.ERROR  # the application's level, not otelkit's
    assert "setLevel" not in root.__dict__
    assert logging.Logger.callHandlers is original_call_handlers
    assert logging.lastResort is original_last_resort


def test_a_logger_with_its_own_level_is_the_applications_choice(app_console: io.StringIO) -> None:
    captured = CapturedTelemetry()
    otelkit.init(**BASE, **captured.init_kwargs())
    chatty = logging.getLogger("app.chatty")
    chatty.setLevel(logging.INFO)
    try:
        chatty.info("the app asked for INFO here")
    finally:
        chatty.setLevel(logging.NOTSET)
    assert app_console.getvalue() == "INFO the app asked for INFO here\n"
    assert [r.body for r in captured.logs] == ["the app asked for INFO here"]


def test_a_direct_assignment_of_the_root_level_hands_the_console_back(app_console: io.StringIO) -> None:
    captured = CapturedTelemetry()
    otelkit.init(**BASE, **captured.init_kwargs())
    root = logging.getLogger()
    root.level = logging.DEBUG  # not through setLevel: otelkit notices at the next record, the app's level rules
    logging.getLogger("app.levels").info("visible to the app")
    assert app_console.getvalue() == "INFO visible to the app\n"
    assert [r.body for r in captured.logs] == ["visible to the app"]


def test_logs_not_exported_change_no_level(app_console: io.StringIO) -> None:
    otelkit.init(**BASE, traces_exporter="none", metrics_exporter="none", logs_exporter="none")
    root = logging.getLogger()
    assert root.level == logging.WARNING
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)  # no "HTTP Request" record per call
    assert "setLevel" not in root.__dict__


def test_a_root_level_assigned_above_log_level_warns_once_with_the_fix(
        app_console: io.StringIO, caplog: pytest.LogCaptureFixture) -> None:
    captured = CapturedTelemetry()
    otelkit.init(**BASE, **captured.init_kwargs())
    root = logging.getLogger()
    root.level = logging.ERROR  # INFO records can no longer exist: otelkit says so, once
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        logging.getLogger("app.levels").error("first")
        logging.getLogger("app.levels").error("second")
    warnings = [r.getMessage() for r in caplog.records if r.name == "otelkit"]
    assert len(warnings) == 1
    assert "logging.getLogger().setLevel(...)" in warnings[0] and "OTELKIT_LOG_LEVEL=ERROR" in warnings[0]


def test_sentry_wrapping_callhandlers_between_inits_still_exports_each_record_once() -> None:
    """Sentry's logging integration wraps Logger.callHandlers too (over otelkit's, once per process): a reset and
    a second init() must find otelkit's wrapper inside Sentry's and not add another (records would go twice).
    Run in a subprocess: Sentry's patch lasts for the process."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import logging, sentry_sdk, otelkit
        from otelkit import _init
        from otelkit.testing import CapturedTelemetry
        base = dict(service_name="s", instrument=(), system_metrics=False)
        first = CapturedTelemetry()
        otelkit.init(**base, **first.init_kwargs())
        sentry_sdk.init()  # no DSN: its logging integration still patches callHandlers, over otelkit's wrapper
        _init.reset()
        second = CapturedTelemetry()
        otelkit.init(**base, **second.init_kwargs())
        logging.getLogger("app").warning("once")
        print([r.body for r in second.logs])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['once']"
