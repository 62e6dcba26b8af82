"""Bad input at ``otelkit.span(name, **attributes)``: never raises into user code, drops bad values with a debug log.

Valid attribute values (OTel data model): str, bool, int, float, or a homogeneous sequence of those.
Everything else is dropped (with a debug record on the ``otelkit`` logger); the span itself and the
valid attributes always survive, whatever the name.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otelkit
from otelkit.testing import CapturedTelemetry

# Deterministic by default so CI stays reproducible; OTELKIT_FUZZ=N explores N times more random examples.
_FUZZ = int(os.environ.get("OTELKIT_FUZZ", "0") or 0)
FAST = settings(max_examples=60 * max(1, _FUZZ), derandomize=not _FUZZ, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class _NoStr:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


class _ExplodingList(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise RuntimeError("iteration explodes")


INVALID = {
    "dict": {"a": 1},
    "object": object(),
    "None": None,
    "bytes": b"\xff\x00",
    "bytearray": bytearray(b"x"),
    "set": {1, 2},
    "generator": (i for i in range(3)),
    "nested list": [[1, 2], ["a"]],
    "mixed list": [1, "a"],
    "bool and int": [True, 1],
    "list with dict": [{"a": 1}],
    "unprintable": _NoStr(),
    "exception": ValueError("x"),
    "type": int,
    "function": print,
}

VALID = {
    "str": "s",
    "empty str": "",
    "int": -3,
    "float": 2.5,
    "bool": False,
    "str list": ["a", "b"],
    "int tuple": (1, 2),
    "empty list": [],
    "nan": float("nan"),
    "inf": float("inf"),
    "unicode": "é✓\u202e",
}


@pytest.mark.parametrize("value", list(INVALID.values()), ids=list(INVALID))
def test_invalid_attribute_value_is_dropped_with_a_debug_log(otelkit_capture: CapturedTelemetry,
                                                            caplog: pytest.LogCaptureFixture, value: Any) -> None:
    with caplog.at_level(logging.DEBUG, logger="otelkit"):
        with otelkit.span("s", bad=value, good="kept") as s:
            s.set_attribute("later", 1)
    span = otelkit_capture.spans.span("s")
    assert span.attributes is not None
    assert "bad" not in span.attributes
    assert span.attributes["good"] == "kept" and span.attributes["later"] == 1
    assert any("bad" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records if r.name == "otelkit")


@pytest.mark.parametrize("value", list(VALID.values()), ids=list(VALID))
def test_valid_values_are_kept(otelkit_capture: CapturedTelemetry, value: Any) -> None:
    with otelkit.span("s", v=value):
        pass
    attrs = otelkit_capture.spans.span("s").attributes
    assert attrs is not None and "v" in attrs


@pytest.mark.parametrize("form", ["with", "sync", "async", "generator"])
def test_invalid_values_never_raise_in_any_form(otelkit_capture: CapturedTelemetry, form: str) -> None:
    bad = dict(INVALID)
    bad.pop("generator")  # consumed once; the decorator forms reuse the attributes
    if form == "with":
        with otelkit.span("s", **bad):
            pass
    elif form == "sync":
        @otelkit.span("s", **bad)
        def f() -> int:
            return 1

        assert f() == 1 and f() == 1
    elif form == "async":
        @otelkit.span("s", **bad)
        async def g() -> int:
            return 2

        assert asyncio.run(g()) == 2
    else:
        @otelkit.span("s", **bad)
        def h() -> Any:
            yield 1
            yield 2

        assert list(h()) == [1, 2]
    assert otelkit_capture.spans.names()[0] == "s"
    for span in otelkit_capture.spans:
        assert not set(bad) & set(span.attributes or {})


def test_huge_string_attribute_does_not_raise(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("s", big="x" * 5_000_000, small="y"):
        pass
    attrs = otelkit_capture.spans.span("s").attributes
    assert attrs is not None and attrs["small"] == "y"
    assert len(attrs["big"]) <= 8192  # the default value-length limit (issue 7 item 5)


def test_many_attributes_are_capped_by_the_count_limit(otelkit_capture: CapturedTelemetry) -> None:
    attrs = {f"k{i}": i for i in range(1000)}
    with otelkit.span("s", **attrs):
        pass
    span = otelkit_capture.spans.span("s")
    assert span.attributes is not None and len(span.attributes) <= 128
    assert span.dropped_attributes >= 1000 - 128


@pytest.mark.parametrize("name", [None, 5, b"bytes", "", "x" * 100_000, "\x00\udcff", "é✓", 3.5, ("a",)],
                         ids=["None", "int", "bytes", "empty", "100KB", "NUL+surrogate", "unicode", "float", "tuple"])
def test_weird_names_still_give_a_span(otelkit_capture: CapturedTelemetry, name: Any) -> None:
    with otelkit.span(name, a=1):
        pass
    assert len(otelkit_capture.spans) == 1
    assert isinstance(otelkit_capture.spans[0].name, str)


@pytest.mark.parametrize(("option", "value"), [("_kind", 5), ("_kind", "nope"), ("_links", 5), ("_links", [5, None]),
                                                ("_context", "not a context"), ("_bogus", 1)])
def test_bad_options_are_ignored(otelkit_capture: CapturedTelemetry, option: str, value: Any) -> None:
    with otelkit.span("s", **{option: value}):
        pass
    assert otelkit_capture.spans.names() == ["s"]


_ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=5), children,
                                                                                  max_size=3),
                               st.tuples(children, children)),
    max_leaves=6,
)


@FAST
@given(attrs=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda k: not k.startswith("_")), _ANY,
                             max_size=6),
       name=st.one_of(st.text(max_size=30), st.integers(), st.none()))
def test_property_span_never_raises_and_keeps_only_valid_values(otelkit_capture: CapturedTelemetry,
                                                                attrs: dict[str, Any], name: Any) -> None:
    otelkit_capture.clear()
    with otelkit.span(name, **attrs):
        pass
    (span,) = otelkit_capture.spans
    for key, value in (span.attributes or {}).items():
        if key == "otelkit.correlation_id":
            continue
        assert isinstance(value, (str, bool, int, float, tuple)), (key, value)
        if isinstance(value, tuple):
            assert len({type(v) for v in value if v is not None}) <= 1, (key, value)


def test_name_whose_str_raises(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span(_NoStr()):  # type: ignore[arg-type]
        pass
    assert len(otelkit_capture.spans) == 1


def test_attribute_value_whose_iteration_raises(otelkit_capture: CapturedTelemetry) -> None:
    with otelkit.span("s", bad=_ExplodingList([1]), good=1):
        pass
    attrs = otelkit_capture.spans.span("s").attributes
    assert attrs is not None and attrs["good"] == 1 and "bad" not in attrs


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__


@pytest.mark.parametrize("form", ["with", "decorator"])
def test_exception_whose_str_raises_is_still_recorded(otelkit_capture: CapturedTelemetry, form: str) -> None:
    # The SDK's record_exception calls str(exc): it raised inside otelkit and the error was lost (status UNSET).
    error = _UnprintableError()
    with pytest.raises(_UnprintableError) as info:
        if form == "with":
            with otelkit.span("s"):
                raise error
        else:
            @otelkit.span("s")
            def f() -> None:
                raise error

            f()
    assert info.value is error  # the application's exception passes through untouched
    span = otelkit_capture.spans.span("s")
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "_UnprintableError: <unprintable _UnprintableError>"
    assert [e.name for e in span.events] == ["exception"]
