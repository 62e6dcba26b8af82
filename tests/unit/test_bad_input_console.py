"""Bad input on the terminal: the readable console exporters (the embedded default without a collector).

Span names and log messages come from user data (HTTP paths, job payloads). Printed raw, their control
characters reach the operator's terminal: ESC sequences recolour or clear it, rewrite the window title,
and a carriage return overwrites the line so a forged record can hide a real one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest

import otelkit
from otelkit import _init

HOSTILE = "evil\x1b[2K\x1b]0;pwned\x07\rFORGED"


@pytest.fixture
def console() -> Iterator[None]:
    otelkit.init(service_name="bad-input", traces_exporter="console", logs_exporter="console",
                 metrics_exporter="none", instrument=(), system_metrics=False)
    try:
        yield
    finally:
        _init.reset()


def test_console_output_of_ordinary_records(console: None, capsys: pytest.CaptureFixture[str]) -> None:
    # The control: user text without control characters is printed as is.
    with otelkit.span("load orders"):
        logging.getLogger("app.console").warning("loaded %d orders", 3)
    otelkit.shutdown(timeout=2)
    err = capsys.readouterr().err
    assert "load orders" in err and "loaded 3 orders" in err


def test_control_characters_from_user_data_never_reach_the_terminal(console: None,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with otelkit.span(HOSTILE):
        logging.getLogger("app.console").warning("message %s", HOSTILE)
    otelkit.shutdown(timeout=2)
    err = capsys.readouterr().err
    assert "evil" in err  # printed...
    assert not re.search(r"[\x1b\x07\r]", err), repr(err)  # ...but defused
