"""urllib3 through ``opentelemetry-instrumentation-urllib3``, with otelkit's URL rules at the source.

Upstream wraps ``urllib3.connectionpool.HTTPConnectionPool.urlopen`` on the class (pools created
before ``init()`` are traced too): one CLIENT span per request, ``http.client.request.duration``
(plus request/response body size histograms), and the ``traceparent``/``baggage`` headers, so the
correlation ID travels. otelkit passes its URL scrubbing as upstream's ``url_filter`` (cached per URL)
and replaces captured values of secret-bearing headers.

One span per request: when urllib3 runs under requests (or any client whose instrumentation
suppresses HTTP instrumentation while it sends), the outer client's span is the only one; this
integration records nothing for that request. Limit (upstream): a request that fails without a
response (connection refused) gets an error span but no duration point.
"""

from __future__ import annotations

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


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("urllib3",), MIN_VERSION, "1.26", "otelkit[urllib3]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when urllib3 is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "urllib3", ("urllib3",), MIN_VERSION, "1.26", "otelkit[urllib3]",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    instrumentor = contrib.URLLib3Instrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its providers and hooks are kept)"
    else:
        hooks: dict[str, Any] = {}
        if _http_clients.captures_headers():
            hooks = {"request_hook": _request_hook, "response_hook": _response_hook}
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, meter_provider=ctx.meter_provider,
                                url_filter=_http_clients.url_filter, skip_dep_check=True, **hooks)
        _state["owned"] = True
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
    if _state.pop("owned", False):
        contrib.URLLib3Instrumentor().uninstrument()
