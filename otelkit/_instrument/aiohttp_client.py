"""aiohttp's ``ClientSession`` through ``opentelemetry-instrumentation-aiohttp-client``, with otelkit's URL rules.

Upstream wraps ``ClientSession.__init__`` to add its ``TraceConfig``: one CLIENT span per request
(``url.full``, ``http.request.method``, ``server.address``/``server.port``,
``http.response.status_code``, ``error.type``), the ``http.client.request.duration`` histogram (also
for requests that fail without a response), and the ``traceparent``/``baggage`` headers, so the
correlation ID travels. otelkit replaces upstream's ``redact_url`` with its own rules (every sensitive
query key, credentials in the authority; cached per URL) and replaces captured values of
secret-bearing headers (hooks only when header capture is configured).

Sessions created before ``init()`` (upstream adds its trace config in ``ClientSession.__init__``, so
it misses them) are traced too: ``ClientSession._request`` (every request method goes through it) is
replaced on the class by a function that, when the session's trace configs lack upstream's, asks
upstream's own ``__init__`` wrapper for the trace config it would have added (same providers, hooks and
header capture) and appends it to that session (a new list: a list the application passed is not
changed). Afterwards the check is one attribute test on the session's last trace config per request.
If upstream's wrapper cannot be found (another instrumentation wrapped ``__init__`` over it), such
sessions stay untraced and the status line says so.

Cost: upstream's per-request helpers are replaced in its module by leaner equivalents and the duration
histogram of each trace config it creates records through ``_compat.record_point``
(``_http_clients.lean_helpers``/``point_histograms``); the spans and points are upstream's
(``tests/integration/test_http_clients_same_as_contrib.py``).
"""

from __future__ import annotations

from typing import Any

from otelkit._instrument import _common, _http_clients, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "aiohttp-client"
SCOPE = "opentelemetry.instrumentation.aiohttp_client"
MIN_VERSION = (3, 8)
CONTRIB = "opentelemetry.instrumentation.aiohttp_client"
PRE_INIT_NOTE = "ClientSession objects created before init() are traced from their next request"
_MARK = "_is_instrumented_by_opentelemetry"  # upstream's mark on its trace config

_state: dict[str, Any] = {}


def _sync_request_hook(span: Any, _params: Any) -> None:
    _http_clients.scrub_header_attributes(span)


def _upstream_trace_config() -> Any:
    """The trace config upstream's ``ClientSession.__init__`` wrapper would add to a new session, or None."""
    import aiohttp

    init_wrapper = getattr(vars(aiohttp.ClientSession).get("__init__"), "_self_wrapper", None)
    if init_wrapper is None or getattr(init_wrapper, "__name__", "") != "instrumented_init":
        return None
    made: list[Any] = []
    init_wrapper(lambda *_a, **kw: made.extend(kw.get("trace_configs") or ()), None, (), {})
    found = [tc for tc in made if getattr(tc, _MARK, False)]
    if not found:
        return None
    found[-1].freeze()  # as ClientSession.__init__ does: a signal must be frozen to be sent
    return found[-1]


def _adopt(session: Any) -> None:
    """A session created before ``init()``: append upstream's trace config (once per session); never raises."""
    try:
        configs = list(session._trace_configs)
        if any(getattr(tc, _MARK, False) for tc in configs):
            return
        trace_config = _upstream_trace_config()
        if trace_config is not None:
            session._trace_configs = [*configs, trace_config]  # a new list: the application's is not changed
    except Exception:
        logger.debug("otelkit: adopting an aiohttp ClientSession created before init() failed", exc_info=True)


def _request_method(original: Any) -> Any:
    def _request(self: Any, *args: Any, **kwargs: Any) -> Any:
        configs = self._trace_configs
        if not configs or not hasattr(configs[-1], _MARK):  # upstream appends its config last
            _adopt(self)
        return original(self, *args, **kwargs)

    _request._otelkit_original = original  # type: ignore[attr-defined]
    _request.__doc__, _request.__name__, _request.__qualname__ = (original.__doc__, original.__name__,
                                                                  original.__qualname__)
    return _request


def _patch_sessions() -> bool:
    """Replace ``ClientSession._request`` (once); False when upstream's ``__init__`` wrapper is not found."""
    import aiohttp

    current = vars(aiohttp.ClientSession).get("_request")
    if current is None or _upstream_trace_config() is None:
        return False
    if not hasattr(current, "_otelkit_original"):
        aiohttp.ClientSession._request = _request_method(current)  # type: ignore[method-assign]
    _state["sessions"] = True
    return True


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("aiohttp",), MIN_VERSION, "3.8", "otelkit[aiohttp]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when aiohttp is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "aiohttp", ("aiohttp",), MIN_VERSION, "3.8", "otelkit[aiohttp]",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    _http_clients.replace_redact(contrib, _state)
    # upstream calls the hooks synchronously
    note = _http_clients.instrument_contrib(contrib.AioHttpClientInstrumentor(), ctx, _state,
                                            (_sync_request_hook, _sync_request_hook))
    if _state.get("owned"):  # instrumented here just now: upstream's per-request helpers, leaner
        _lean(contrib)
    pre_init = PRE_INIT_NOTE
    if not _state.get("owned"):
        pre_init = "ClientSession objects created before init() keep the application's instrumentation"
    elif not _patch_sessions():
        pre_init = "ClientSession objects created before init() are not traced (upstream's session wrapper not found)"
    return IntegrationStatus(NAME, "enabled", f"aiohttp {version}{note}; {pre_init}", version=version)


def _create_trace_config_of(original: Any) -> Any:
    """Upstream's ``create_trace_config`` (called per new session): its histograms through ``record_point``."""

    def create_trace_config(*args: Any, **kwargs: Any) -> Any:
        trace_config = original(*args, **kwargs)
        try:
            _http_clients.point_histograms(trace_config._trace_config_ctx_factory)
        except Exception:  # upstream's own recording: slower, the same points
            logger.debug("otelkit: aiohttp trace config histograms left as they are", exc_info=True)
        return trace_config

    create_trace_config._otelkit_original = original  # type: ignore[attr-defined]
    return create_trace_config


def _lean(contrib: Any) -> None:
    """Upstream's helpers (see ``_http_clients.lean_helpers``) and its duration histogram through ``record_point``."""
    try:
        _http_clients.lean_helpers(contrib, _state)
        current = getattr(contrib, "create_trace_config", None)
        if callable(current) and not hasattr(current, "_otelkit_original"):
            contrib.create_trace_config = _create_trace_config_of(current)
            _state["create_trace_config"] = current
    except Exception:  # upstream's own helpers and recording: slower, the same telemetry
        logger.debug("otelkit: aiohttp-client's lean helpers not installed", exc_info=True)


def uninstrument() -> None:
    _lazy.cancel(NAME)
    if not _state:  # never instrumented: importing contrib here would import the library
        return
    try:
        import opentelemetry.instrumentation.aiohttp_client as contrib
    except ImportError:
        _state.clear()
        return
    _http_clients.restore_redact(contrib, _state)
    _http_clients.restore_helpers(contrib, _state)
    original = _state.pop("create_trace_config", None)
    if original is not None:
        contrib.create_trace_config = original
    if _state.pop("sessions", False):
        import aiohttp

        current = vars(aiohttp.ClientSession).get("_request")
        if hasattr(current, "_otelkit_original"):
            aiohttp.ClientSession._request = current._otelkit_original  # type: ignore[method-assign,union-attr]
    if _state.pop("owned", False):
        contrib.AioHttpClientInstrumentor().uninstrument()
