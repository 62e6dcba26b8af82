"""urllib3 through ``opentelemetry-instrumentation-urllib3``, with otelkit's URL rules at the source.

Upstream wraps ``urllib3.connectionpool.HTTPConnectionPool.urlopen`` on the class (pools created
before ``init()`` are traced too): one CLIENT span per request, ``http.client.request.duration``
(plus request/response body size histograms), and the ``traceparent``/``baggage`` headers, so the
correlation ID travels. otelkit passes its URL scrubbing as upstream's ``url_filter`` (cached per URL)
and replaces captured values of secret-bearing headers. Upstream's per-request helpers are replaced in its
module by leaner equivalents and its histograms record through ``_compat.record_point``
(``_http_clients.lean_helpers``/``point_histograms``; the same spans and points).

One span per request: when urllib3 runs under requests (or any client whose instrumentation
suppresses HTTP instrumentation while it sends), the outer client's span is the only one; this
integration records nothing for that request. Limit (upstream): a request that fails without a
response (connection refused) gets an error span but no duration point.

Cost: upstream binds every ``urlopen`` call's arguments with ``inspect.Signature.bind`` and
``apply_defaults`` (about a quarter of the Python calls it adds per request). otelkit gives upstream's
wrapper a binder made for that one signature (:class:`_UrlopenBinder`, put in place of the
``inspect.Signature`` upstream's wrapper closes over): the same ``arguments``/``args``/``kwargs``, any
call it does not handle exactly (too many positional arguments, a name given twice, a missing
argument) goes to ``inspect.Signature.bind`` as before. When upstream's wrapper does not have that
shape (another contrib version), nothing is replaced.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any

from otelkit._instrument import _common, _http_clients, _lazy
from otelkit._status import IntegrationStatus

NAME = "urllib3"
SCOPE = "opentelemetry.instrumentation.urllib3"
MIN_VERSION = (1, 26)
CONTRIB = "opentelemetry.instrumentation.urllib3"

_state: dict[str, Any] = {}


def _request_hook(span: Any, _pool: Any, _info: Any) -> None:
    _http_clients.scrub_header_attributes(span)


def _response_hook(span: Any, _pool: Any, _response: Any) -> None:
    _http_clients.scrub_header_attributes(span)


class _Bound:
    """What upstream reads of ``inspect.BoundArguments`` after ``apply_defaults()``: the same values."""

    __slots__ = ("_binder", "arguments")

    def __init__(self, binder: _UrlopenBinder, arguments: dict[str, Any]) -> None:
        self._binder = binder
        self.arguments = arguments

    def apply_defaults(self) -> None:  # the defaults are in ``arguments`` already
        pass

    @property
    def args(self) -> tuple[Any, ...]:
        return self._binder.getter(self.arguments)  # type: ignore[no-any-return]

    @property
    def kwargs(self) -> dict[str, Any]:
        extra = self._binder.extra
        return dict(self.arguments[extra]) if extra is not None else {}


class _UrlopenBinder:
    """``Signature.bind`` + ``apply_defaults`` for one signature of positional-or-keyword parameters and ``**kw``."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        kinds = {p.kind for p in params}
        extra = [p.name for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
        if kinds - {inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_KEYWORD} or len(extra) > 1:
            raise ValueError(f"unexpected urlopen signature {signature}")
        self.positional = tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.extra: str | None = extra[0] if extra else None
        self.defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
        self.required = frozenset(p.name for p in params
                                  if p.default is inspect.Parameter.empty and p.name != self.extra)
        self.names = frozenset(self.positional)
        if len(self.positional) < 3:  # self, method, url at least; itemgetter of 2+ names gives a tuple
            raise ValueError(f"unexpected urlopen signature {signature}")
        self.getter = operator.itemgetter(*self.positional)  # arguments -> the positional values, in order

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        positional = self.positional
        if len(args) > len(positional):
            return self.signature.bind(*args, **kwargs)
        arguments = dict(self.defaults)
        arguments.update(zip(positional, args, strict=False))  # fewer args than names
        extra: dict[str, Any] = {}
        if kwargs:
            bound = positional[:len(args)]
            for name, value in kwargs.items():
                if name in self.names:
                    if name in bound:
                        return self.signature.bind(*args, **kwargs)  # raises TypeError as before
                    arguments[name] = value
                else:
                    extra[name] = value
            if extra and self.extra is None:
                return self.signature.bind(*args, **kwargs)
        if not self.required.issubset(arguments):
            return self.signature.bind(*args, **kwargs)
        if self.extra is not None:
            arguments[self.extra] = extra
        return _Bound(self, arguments)


def _signature_cell(contrib_urlopen: Any) -> Any:
    """The closure cell of upstream's ``instrumented_urlopen`` that holds ``urlopen_signature``, or None."""
    wrapper: Any = getattr(contrib_urlopen, "_self_wrapper", None)
    code = getattr(wrapper, "__code__", None)
    closure = getattr(wrapper, "__closure__", None)
    if code is None or closure is None or "urlopen_signature" not in code.co_freevars:
        return None
    cell = closure[code.co_freevars.index("urlopen_signature")]
    return cell if isinstance(cell.cell_contents, (inspect.Signature, _UrlopenBinder)) else None


def _install_binder() -> None:
    import urllib3.connectionpool

    try:
        cell = _signature_cell(vars(urllib3.connectionpool.HTTPConnectionPool).get("urlopen"))
        if cell is not None and isinstance(cell.cell_contents, inspect.Signature):
            original = cell.cell_contents
            cell.cell_contents = _UrlopenBinder(original)
            _state["binder"] = (cell, original)
    except Exception:  # upstream's own binding stays: slower, same telemetry
        pass


_HISTOGRAMS = ("duration_histogram_old", "duration_histogram_new", "request_size_histogram_old",
               "request_size_histogram_new", "response_size_histogram_old", "response_size_histogram_new")


def _lean(contrib: Any) -> None:
    """Upstream's helpers (see ``_http_clients.lean_helpers``) and its three histograms through ``record_point``."""
    import urllib3.connectionpool

    try:
        _http_clients.lean_helpers(contrib, _state)
        wrapper = getattr(vars(urllib3.connectionpool.HTTPConnectionPool).get("urlopen"), "_self_wrapper", None)
        if wrapper is not None:
            _state["cells"] = _http_clients.point_histograms(wrapper, _HISTOGRAMS)
    except Exception:  # upstream's own helpers and recording: slower, the same telemetry
        pass


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("urllib3",), MIN_VERSION, "1.26", "otelkit[urllib3]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when urllib3 is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "urllib3", ("urllib3",), MIN_VERSION, "1.26", "otelkit[urllib3]",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    note = _http_clients.instrument_contrib(contrib.URLLib3Instrumentor(), ctx, _state, (_request_hook, _response_hook),
                                            url_filter=_http_clients.url_filter)
    if not note:  # instrumented here just now
        _install_binder()
        _lean(contrib)
    return IntegrationStatus(NAME, "enabled", f"urllib3 {version}{note}", version=version)


def uninstrument() -> None:
    _lazy.cancel(NAME)
    if not _state:  # never instrumented: importing contrib here would import the library
        return
    try:
        import opentelemetry.instrumentation.urllib3 as contrib
    except ImportError:
        _state.clear()
        return
    _http_clients.restore_helpers(contrib, _state)
    _http_clients.restore_cells(_state.pop("cells", []))
    binder = _state.pop("binder", None)
    if binder is not None:
        binder[0].cell_contents = binder[1]
    if _state.pop("owned", False):
        contrib.URLLib3Instrumentor().uninstrument()
