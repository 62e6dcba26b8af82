"""otelkit's binder for upstream's urllib3 wrapper gives what ``inspect.Signature.bind`` + ``apply_defaults`` give."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from otelkit._instrument.urllib3 import _UrlopenBinder

urllib3_connectionpool = pytest.importorskip("urllib3.connectionpool")
SIGNATURE = inspect.signature(urllib3_connectionpool.HTTPConnectionPool.urlopen)
POOL = object()

CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((POOL, "GET", "/x"), {}),
    ((POOL, "GET", "/x"), {"headers": {"a": "b"}, "preload_content": False, "decode_content": False}),
    ((POOL, "POST", "/x", b"body", {"h": "v"}), {"retries": 3, "redirect": False}),
    ((POOL,), {"method": "GET", "url": "/y", "body": None}),
    ((POOL, "GET", "/x"), {"enforce_content_length": True, "custom": 1}),  # into **response_kw
    ((POOL, "GET", "/x", None, None, None, True, True, None, None, None, False, None, True, True), {}),
]
BAD: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((POOL, "GET"), {}),  # url missing
    ((POOL, "GET", "/x"), {"method": "POST"}),  # method twice
    ((POOL, "GET", "/x", *([None] * 20)), {}),  # too many positional arguments
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_same_arguments_args_and_kwargs_as_signature_bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    expected = SIGNATURE.bind(*args, **kwargs)
    expected.apply_defaults()
    found = _UrlopenBinder(SIGNATURE).bind(*args, **kwargs)
    found.apply_defaults()
    assert dict(found.arguments) == dict(expected.arguments)
    assert found.args == expected.args and found.kwargs == expected.kwargs
    found.arguments["headers"] = expected.arguments["headers"] = {"traceparent": "x"}  # what upstream does next
    assert found.args == expected.args and found.kwargs == expected.kwargs


@pytest.mark.parametrize(("args", "kwargs"), BAD)
def test_bad_calls_raise_the_same_type_error(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError) as expected:
        SIGNATURE.bind(*args, **kwargs)
    with pytest.raises(TypeError) as found:
        _UrlopenBinder(SIGNATURE).bind(*args, **kwargs)
    assert str(found.value) == str(expected.value)


def test_other_signature_shapes_are_refused() -> None:
    def keyword_only(self: object, *, url: str) -> None: ...

    with pytest.raises(ValueError, match="unexpected urlopen signature"):
        _UrlopenBinder(inspect.signature(keyword_only))
