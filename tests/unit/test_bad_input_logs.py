"""Bad input at the logging entry points: ``otelkit.JsonFormatter`` and log records through otelkit's handler.

A log call with a broken format, odd arguments or unserializable ``extra`` values must neither raise
into the application nor make the stdlib print "--- Logging error ---"; the record is still written /
exported with whatever could be rendered.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import otelkit
from otelkit import _logs
from otelkit.testing import CapturedTelemetry

# Deterministic by default so CI stays reproducible; OTELKIT_FUZZ=N explores N times more random examples.
_FUZZ = int(os.environ.get("OTELKIT_FUZZ", "0") or 0)
FAST = settings(max_examples=60 * max(1, _FUZZ), derandomize=not _FUZZ, deadline=None, database=None,
                suppress_health_check=[])


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


def _strict_json(line: str) -> dict[str, Any]:
    """Parse as a log shipper would: RFC 8259 JSON (no NaN/Infinity), one object per line."""
    def no_constants(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    assert "\n" not in line
    value = json.loads(line, parse_constant=no_constants)
    assert isinstance(value, dict)
    return value


def _record(msg: Any, args: Any = (), **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


_circular: dict[str, Any] = {}
_circular["self"] = _circular

BAD_EXTRAS = {
    "object": object(),
    "circular dict": _circular,
    "non-str keys": {1: 2, (1, 2): 3},
    "bytes": b"\xff\x00",
    "set": {1, 2},
    "huge int": 2**200,
    "exception": ValueError("boom"),
    "type": int,
    "nested junk": {"a": [object(), {b"k": None}]},
}


@pytest.mark.parametrize("value", list(BAD_EXTRAS.values()), ids=list(BAD_EXTRAS))
def test_json_formatter_unserializable_extra(value: Any) -> None:
    out = _strict_json(otelkit.JsonFormatter().format(_record("m", extra_field=value)))
    assert out["message"] == "m" and "extra_field" in out


@pytest.mark.parametrize(("msg", "args"), [
    ("%d items", ("x",)),          # TypeError in %
    ("%s %s", ("one",)),            # not enough arguments
    ("no placeholders", ("x",)),   # not all arguments converted
    ("%(a)s", ({"b": 1},)),        # KeyError
    ("%", ()),                      # no args: message used as is
    (12345, ()),                    # non-str messages
    ({"a": 1}, ()),
    (None, ()),
    (b"\xff", ()),
    ("x" * 1_000_000, ()),
])
def test_json_formatter_bad_messages_and_format_errors(msg: Any, args: Any) -> None:
    out = _strict_json(otelkit.JsonFormatter().format(_record(msg, args)))
    assert isinstance(out["message"], str) and out["message"]
    assert out["level"] == "WARNING"


def test_json_formatter_core_keys_survive_odd_extras() -> None:
    record = _record("m", trace_id=5, span_id=None, correlation_id=object(), time="x", level=3)
    out = _strict_json(otelkit.JsonFormatter(static_fields={"service": object()}).format(record))
    assert out["message"] == "m" and out["level"] == "WARNING"


@given(msg=st.one_of(st.text(max_size=30), st.integers(), st.none()),
       args=st.one_of(st.tuples(), st.tuples(st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats())),
                      st.tuples(st.text(max_size=3), st.binary(max_size=3))),
       extra=st.dictionaries(st.text(min_size=1, max_size=8).filter(str.isidentifier),
                             st.one_of(st.none(), st.integers(), st.text(max_size=10), st.binary(max_size=5),
                                       st.floats(), st.lists(st.floats(), max_size=3)), max_size=4))
@FAST
def test_property_json_formatter_always_writes_one_json_object(msg: Any, args: Any, extra: dict[str, Any]) -> None:
    record = _record(msg, args)
    for key, value in extra.items():
        if key not in record.__dict__:
            setattr(record, key, value)
    out = _strict_json(otelkit.JsonFormatter().format(record))
    assert isinstance(out["message"], str)


# --- through otelkit's handler ---------------------------------------------------------------------------

@pytest.fixture
def stderr() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    old, sys.stderr = sys.stderr, buffer
    try:
        yield buffer
    finally:
        sys.stderr = old


class _OnlyOtelkit(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logs to otelkit's handler only.

    pytest's capture handlers (added around each test) format with the stdlib Formatter and re-raise its
    errors; they are not what is under test here, so each call goes to otelkit's handler alone.
    """

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        logger = self.logger
        handler = _logs.otlp_handler()
        assert handler is not None
        saved, saved_propagate = logger.handlers[:], logger.propagate
        logger.handlers[:] = [handler]
        logger.propagate = False
        try:
            logger.log(level, msg, *args, **kwargs)
        finally:
            logger.handlers[:] = saved
            logger.propagate = saved_propagate


@pytest.fixture
def app_logger(otelkit_capture: CapturedTelemetry) -> _OnlyOtelkit:
    return _OnlyOtelkit(logging.getLogger("app.bad_input"), {})


@pytest.mark.parametrize(("msg", "args", "kwargs"), [
    ("%d items", ("x",), {}),
    ("%s %s", ("one",), {}),
    (12345, (), {}),
    ({"a": 1}, (), {}),
    ("extras", (), {"extra": {"o": object(), "d": {"k": [1, {2}]}, "b": b"\xff", "n": None, "big": 2**100}}),
    ("bad exc_info", (), {"exc_info": 12345}),
    ("exc_info tuple", (), {"exc_info": (ValueError, ValueError("v"), None)}),
    ("stack", (), {"stack_info": True}),
], ids=["format-type", "format-count", "int-msg", "dict-msg", "junk-extra", "bad-exc-info", "exc-tuple", "stack"])
def test_bad_log_calls_are_exported_and_never_raise(otelkit_capture: CapturedTelemetry, app_logger: _OnlyOtelkit,
                                                     stderr: io.StringIO, msg: Any, args: Any,
                                                     kwargs: dict[str, Any]) -> None:
    app_logger.warning(msg, *args, **kwargs)
    assert len(otelkit_capture.logs) == 1
    assert isinstance(otelkit_capture.logs[0].body, str)
    assert "Logging error" not in stderr.getvalue()


def test_unprintable_log_message_is_not_an_error_in_user_code(otelkit_capture: CapturedTelemetry,
                                                             app_logger: _OnlyOtelkit, stderr: io.StringIO) -> None:
    app_logger.warning(_NoStr())
    app_logger.warning("arg %s", _NoStr())
    app_logger.warning("after")
    assert "Logging error" not in stderr.getvalue()
    assert [log.body for log in otelkit_capture.logs][-1] == "after"


# --- fixed bugs (were xfail strict) ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf"), [float("-inf")]])
def test_json_formatter_non_finite_floats_are_valid_json(value: Any) -> None:
    _strict_json(otelkit.JsonFormatter().format(_record("m", x=value)))


@pytest.mark.parametrize(("msg", "args"), [(_NoStr(), ()), ("%s", (_NoStr(),))], ids=["msg", "arg"])
def test_json_formatter_unprintable_message(msg: Any, args: Any) -> None:
    out = _strict_json(otelkit.JsonFormatter().format(_record(msg, args)))
    assert isinstance(out["message"], str)


def test_json_formatter_output_is_always_utf8_encodable() -> None:
    line = otelkit.JsonFormatter().format(_record("file \udcff.txt", path="\udcff"))
    line.encode("utf-8")
