"""What the web-framework integrations share: correlation at the edge, excluded URLs, lazy patching.

**Correlation at the edge.** The framework's entry point (``Starlette.__call__``, ``Flask.__call__``,
Django's ``WSGIHandler.__call__``) is wrapped once, at class level, so apps created before ``init()`` get it
too. Per request it:

1. reads the correlation header (``OTELKIT_CORRELATION_HEADER``, default ``X-Correlation-ID``); a valid
   value (:func:`otelkit._correlation.is_valid_correlation_id`) is trusted, anything else (missing, too
   long, binary, a header injection attempt) is replaced by a fresh ID, never an error;
2. runs the request inside that correlation scope (logs, outgoing calls, ``pipeline.emit``);
3. adds ``X-Correlation-ID`` to the response.

The contrib server middleware starts the SERVER span from the *extracted* context (``traceparent``,
``baggage``), which replaces the current one; its request hook (:func:`adopt`) puts the ID back into the
context it attached and onto the span. Without a trusted header, an ID arriving in W3C baggage from an
upstream otelkit service is kept instead of the fresh one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry.context.context import Context

from otelkit._compat import BAGGAGE_KEY
from otelkit._correlation import get_correlation_id, is_valid_correlation_id, with_correlation_id
from otelkit._internal_log import logger
from otelkit._names import CORRELATION_ATTRIBUTE, CORRELATION_BAGGAGE_KEY

if TYPE_CHECKING:
    from otelkit._config import Settings

RESPONSE_HEADER = "X-Correlation-ID"
DEFAULT_HEADER = "X-Correlation-ID"

# Probes and scrapes are not requests anyone wants a trace of: excluded unless OTEL_PYTHON_EXCLUDED_URLS (or the
# framework's own variable) says otherwise. Matched (re.search) against the full URL, query string included.
DEFAULT_EXCLUDED_URLS = (r"/(?:health|healthz|healthcheck|livez|readyz|ping|metrics)/?(?:\?|$),"
                         r"/-/(?:healthy|ready)(?:\?|$)")


class Edge:
    """The correlation header this process reads, in the three spellings the servers use."""

    def __init__(self, header: str) -> None:
        self.header = header
        self.asgi_key = header.lower().encode("latin-1")
        self.wsgi_key = "HTTP_" + header.upper().replace("-", "_")


_edge = Edge(DEFAULT_HEADER)
_flush_seconds = 5.0
_excluded: dict[str, str] = {}


def configure(settings: Settings) -> Edge:
    """Read ``correlation_header`` from the settings of this init (re-init may change it)."""
    global _edge, _flush_seconds, _excluded
    _flush_seconds = settings.shutdown_timeout
    general = settings.excluded_urls or DEFAULT_EXCLUDED_URLS
    _excluded = {"fastapi": settings.fastapi_excluded_urls or general,
                 "starlette": settings.starlette_excluded_urls or general,
                 "flask": settings.flask_excluded_urls or general,
                 "django": settings.django_excluded_urls or general}
    header = settings.correlation_header or DEFAULT_HEADER
    if header != _edge.header:
        _edge = Edge(header)
    return _edge


def edge() -> Edge:
    return _edge


def incoming(value: Any) -> list[Any]:
    """``[correlation ID, trusted]`` for a raw header value (str, bytes or None); never raises."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            value = None
    if value is not None and is_valid_correlation_id(value):
        return [value, True]
    # The format of new_correlation_id() (32 hex characters) without building a UUID object: 1 µs, not 6.
    return [os.urandom(16).hex(), False]


def from_asgi_headers(headers: Any) -> list[Any]:
    key = _edge.asgi_key
    try:
        for name, value in headers or ():
            if name == key or (len(name) == len(key) and name.lower() == key):
                return incoming(value)
    except (TypeError, ValueError):
        pass
    return incoming(None)


def _with_id(value: str, ctx: Context) -> Context:
    """``ctx`` with the correlation ID in its baggage: what ``baggage.set_baggage`` returns, in one copy.

    Per request this runs twice (before the contrib middleware, and in its request hook after it replaced
    the context with the extracted one): the public API's three calls and two dict copies each time were
    a measurable part of the edge's cost (benchmarks/bench_servers.py).
    """
    if BAGGAGE_KEY is None:  # pragma: no cover - an API without the private key: the public path
        return with_correlation_id(value, ctx)
    entries: Any = ctx.get(BAGGAGE_KEY)
    if entries:
        bag = dict(entries)
        bag[CORRELATION_BAGGAGE_KEY] = value
    else:
        bag = {CORRELATION_BAGGAGE_KEY: value}
    return Context(ctx, **{BAGGAGE_KEY: bag})


def with_request_id(state: list[Any], ctx: Context) -> Context:
    """``ctx`` carrying the request's correlation ID. Unless the request's header gave one (``state[1]``), an ID
    in ``ctx``'s W3C baggage (an upstream otelkit service's, extracted with ``traceparent``) replaces the
    generated one in ``state``."""
    if not state[1]:
        upstream = get_correlation_id(ctx)
        if upstream is not None:
            state[0] = upstream
            state[1] = True
    return _with_id(state[0], ctx)


def enter(state: list[Any]) -> object:
    """Attach the request's correlation scope; return the token for :func:`leave`."""
    return otel_context.attach(_with_id(state[0], otel_context.get_current()))


def leave(token: object) -> None:
    try:
        otel_context.detach(token)  # type: ignore[arg-type]
    except Exception:
        pass


def adopt(span: Any, state: list[Any] | None) -> None:
    """The contrib request hook's work (see the module docstring); never raises."""
    if state is None:
        return
    try:
        # the current context is the one the middleware extracted from traceparent/baggage
        ctx = with_request_id(state, otel_context.get_current())
        if span is not None and span.is_recording():
            span.set_attribute(CORRELATION_ATTRIBUTE, state[0])
        # Not detached here: the middleware's own detach of the extracted context (after the request)
        # restores the context from before it, which drops this one as well.
        otel_context.attach(ctx)
    except Exception:
        logger.debug("otelkit: correlation at the edge failed", exc_info=True)


_KEPT_MAX = 512  # distinct metric attribute sets kept at once; then forgotten together (and learnt again)
_kept: dict[tuple[Any, ...], dict[str, Any]] = {}


def kept(attributes: dict[str, Any]) -> dict[str, Any]:
    """One dict object for each distinct metric attribute set: ``attributes`` itself the first time, after that the
    dict kept then (equal items, of the same types and order). Neither may be mutated after.

    ``_compat.add_point``/``record_point`` remember, per dict object, its cleaned copy and the aggregation each
    stream keeps for it: a server's request attributes (method, scheme, route, status...) are a few sets built
    anew per request, so without this every point would take the SDK's path (cleaning, hashing, a
    ``Measurement``). Never raises: a set it cannot key (an unhashable value) is returned as it is.
    """
    try:
        key = (*attributes.items(), *map(type, attributes.values()))  # 1 and True are equal: the types tell them apart
        found = _kept.get(key)
    except TypeError:
        return attributes
    if found is None:
        if len(_kept) >= _KEPT_MAX:
            _kept.clear()
        _kept[key] = found = attributes
    return found


def excluded_urls(framework: str) -> str:
    """``excluded_urls`` for the contrib middleware: the framework's variable, else the general one, else the default.

    From ``OTEL_PYTHON_<FRAMEWORK>_EXCLUDED_URLS``, else ``OTEL_PYTHON_EXCLUDED_URLS``, else the default, as
    resolved into the settings of this ``init()`` (:func:`configure`). Passed explicitly, never left to the
    contrib: it reads these variables once, when its module is imported.
    """
    return _excluded.get(framework, DEFAULT_EXCLUDED_URLS)


# --- patch when the framework is imported ----------------------------------------------------------

def when_imported(module: str, apply: Callable[[Any], None], state: dict[str, Any]) -> str:
    """Run ``apply(module)`` now if ``module`` is imported, else when the application imports it (``_lazy``).

    ``init()`` must not import a framework the application does not use (FastAPI and Django take 100s of
    ms). ``state["active"]`` is cleared by ``uninstrument``: a hook registered earlier then does nothing.
    Returns a note for the status line.
    """
    from otelkit._instrument import _lazy

    state["active"] = True

    def hook(mod: Any) -> None:
        if state.get("active"):
            apply(mod)

    return "; instrumented when imported" if _lazy.when_imported(f"web:{module}", module, hook) else ""


def flush_at_server_shutdown(timeout: float | None = None) -> None:
    """Flush every signal when the ASGI server shuts the app down (its lifespan "shutdown" completed).

    uvicorn re-raises the SIGTERM it handled once its graceful shutdown is over, with the default
    handler back: the process dies without running ``atexit``, where otelkit would flush. A flush, not
    a shutdown: test clients run the lifespan many times in one process. ``timeout`` (seconds) bounds
    each signal's flush; default the ``shutdown_timeout`` of the web integrations' init. Never raises.
    """
    from otelkit import _proxy

    millis = int(max(0.0, _flush_seconds if timeout is None else timeout) * 1000)
    for provider in (_proxy.tracer_provider(), _proxy.meter_provider(), _proxy.logger_provider()):
        try:
            provider.force_flush(millis)
        except Exception:
            logger.debug("otelkit: flush at server shutdown failed", exc_info=True)
