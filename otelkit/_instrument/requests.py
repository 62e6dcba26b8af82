"""requests through ``opentelemetry-instrumentation-requests``, with otelkit's URL rules at the source.

Upstream replaces ``requests.Session.send`` on the class, so sessions created before ``init()`` are
traced too. It records one CLIENT span per request (``url.full``, ``http.request.method``,
``server.address``/``server.port``, ``http.response.status_code``, ``error.type``), the
``http.client.request.duration`` histogram (also for requests that fail without a response, with
``error.type``), and injects the W3C ``traceparent`` and ``baggage`` headers, so the correlation ID
(baggage ``correlation_id``) travels with every request. otelkit adds:

* Redaction at the source: upstream's ``redact_url`` is replaced by otelkit's rules (every sensitive
  query key, user:password in the authority), cached per URL; captured ``http.request.header.*`` /
  ``http.response.header.*`` values of secret-bearing headers are replaced (hooks installed only when
  header capture is configured).
* One span per request: requests runs over urllib3. Upstream's send wrapper suppresses HTTP
  instrumentation while urllib3 works, so otelkit's urllib3 integration (and any other client
  instrumented below requests) records nothing for that request. Rule: **the outermost client wins**.

Cost: upstream's per-request helpers are replaced in its module by leaner equivalents and its duration
histogram records through ``_compat.record_point`` (``_http_clients.lean_helpers``/``point_histograms``); the
spans and points are upstream's (``tests/integration/test_http_clients_same_as_contrib.py``).
"""

from __future__ import annotations

from typing import Any

from otelkit._instrument import _common, _http_clients, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "requests"
SCOPE = "opentelemetry.instrumentation.requests"
MIN_VERSION = (2, 25)  # the tested floor; requests 2.7 cannot import on Python 3.10+ (docs/install.md)
CONTRIB = "opentelemetry.instrumentation.requests"

_state: dict[str, Any] = {}


def _request_hook(span: Any, _request: Any) -> None:
    _http_clients.scrub_header_attributes(span)


def _response_hook(span: Any, _request: Any, _response: Any) -> None:
    _http_clients.scrub_header_attributes(span)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("requests",), MIN_VERSION, "2.25", "requests", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when requests is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "requests", ("requests",), MIN_VERSION, "2.25", "requests",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    _http_clients.replace_redact(contrib, _state)
    note = _http_clients.instrument_contrib(contrib.RequestsInstrumentor(), ctx, _state,
                                            (_request_hook, _response_hook))
    if _state.get("owned"):  # instrumented here just now: upstream's per-request helpers, leaner
        _lean(contrib)
    return IntegrationStatus(NAME, "enabled", f"requests {version}{note}", version=version)


def _lean(contrib: Any) -> None:
    """Upstream's helpers (see ``_http_clients.lean_helpers``) and its duration histogram through ``record_point``."""
    try:
        import requests

        _http_clients.lean_helpers(contrib, _state)
        send = vars(requests.Session).get("send")
        if getattr(send, "opentelemetry_instrumentation_requests_applied", False):
            _state["cells"] = _http_clients.point_histograms(send)
    except Exception:  # upstream's own helpers and recording: slower, the same telemetry
        logger.debug("otelkit: requests' lean helpers not installed", exc_info=True)


def uninstrument() -> None:
    _lazy.cancel(NAME)
    if not _state:  # never instrumented: importing contrib here would import the library
        return
    try:
        import opentelemetry.instrumentation.requests as contrib
    except ImportError:
        _state.clear()
        return
    _http_clients.restore_redact(contrib, _state)
    _http_clients.restore_helpers(contrib, _state)
    _http_clients.restore_cells(_state.pop("cells", []))
    if _state.pop("owned", False):
        contrib.RequestsInstrumentor().uninstrument()
