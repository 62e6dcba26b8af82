"""aiohttp's ``ClientSession`` through ``opentelemetry-instrumentation-aiohttp-client``, with otelkit's URL rules.

Upstream wraps ``ClientSession.__init__`` to add its ``TraceConfig``: one CLIENT span per request
(``url.full``, ``http.request.method``, ``server.address``/``server.port``,
``http.response.status_code``, ``error.type``), the ``http.client.request.duration`` histogram (also
for requests that fail without a response), and the ``traceparent``/``baggage`` headers, so the
correlation ID travels. otelkit replaces upstream's ``redact_url`` with its own rules (every sensitive
query key, credentials in the authority; cached per URL) and replaces captured values of
secret-bearing headers (hooks only when header capture is configured).

Limit, reported in the status line: a session created before ``init()`` has no trace config and is
not traced (create sessions after ``init()``, e.g. in the app's start-up hook).
"""

from __future__ import annotations

from typing import Any

from otelkit._instrument import _common, _http_clients, _lazy
from otelkit._status import IntegrationStatus

NAME = "aiohttp-client"
SCOPE = "opentelemetry.instrumentation.aiohttp_client"
MIN_VERSION = (3, 8)
CONTRIB = "opentelemetry.instrumentation.aiohttp_client"
PRE_INIT_NOTE = "ClientSession objects created before init() are not traced"

_state: dict[str, Any] = {}


def _sync_request_hook(span: Any, _params: Any) -> None:
    _http_clients.scrub_header_attributes(span)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("aiohttp",), MIN_VERSION, "3.8", "otelkit[aiohttp]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when aiohttp is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "aiohttp", ("aiohttp",), MIN_VERSION, "3.8", "otelkit[aiohttp]",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    _http_clients.replace_redact(contrib, _state)
    instrumentor = contrib.AioHttpClientInstrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its providers and hooks are kept)"
    else:
        hooks: dict[str, Any] = {}
        if _http_clients.captures_headers():  # upstream calls the hooks synchronously
            hooks = {"request_hook": _sync_request_hook, "response_hook": _sync_request_hook}
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, meter_provider=ctx.meter_provider,
                                skip_dep_check=True, **hooks)
        _state["owned"] = True
    return IntegrationStatus(NAME, "enabled", f"aiohttp {version}{note}; {PRE_INIT_NOTE}", version=version)


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
    if _state.pop("owned", False):
        contrib.AioHttpClientInstrumentor().uninstrument()
