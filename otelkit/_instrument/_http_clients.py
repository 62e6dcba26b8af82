"""What the requests, urllib3 and aiohttp-client integrations share: otelkit's URL rules inside contrib.

Each of these contrib instrumentations builds ``url.full`` with ``opentelemetry.util.http.redact_url``
(imported by name into its module) or through a ``url_filter``. otelkit puts its own scrubbing there,
so the span is right when it starts (no second ``set_attribute`` per request) and the cost is a dict
lookup per URL (``_scrub.scrub_url`` caches by URL; upstream's ``redact_url`` parses every time).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from otelkit import _scrub

# Scrubbed URLs by URL, valid while _scrub's URL cache object is the same one (a new scrub configuration
# replaces it): one dict lookup per request instead of three calls into _scrub.
_cache_owner: Any = None
_cache: dict[str, str] = {}
_CACHE_SIZE = 1024


def _scrubbed(url: str) -> str:
    global _cache_owner, _cache
    owner = _scrub.cache_owner()
    if owner is not _cache_owner:
        _cache_owner, _cache = owner, {}
    if not _scrub.is_enabled():
        return url
    found = _scrub.scrub_url(url)
    if len(_cache) < _CACHE_SIZE:
        _cache[url] = found
    return found


def make_redact(original: Any) -> Any:
    """A ``redact_url`` replacement: otelkit's full rules while scrubbing is on, upstream's otherwise."""

    def redact_url(url: str) -> str:
        if _cache_owner is _scrub.cache_owner():
            found = _cache.get(url)
            if found is not None:
                return found
        if _scrub.is_enabled():
            return _scrubbed(str(url))
        return original(url) if original is not None else url  # scrubbing off: upstream's rules

    redact_url._otelkit = True  # type: ignore[attr-defined]
    return redact_url


def replace_redact(contrib: ModuleType, state: dict[str, Any]) -> bool:
    """Point ``contrib.redact_url`` at otelkit's rules (once); False when the module has none."""
    current = getattr(contrib, "redact_url", None)
    if not callable(current):
        return False
    if getattr(current, "_otelkit", False):
        return True
    state["redact_url"] = current
    contrib.redact_url = make_redact(current)  # type: ignore[attr-defined]
    return True


def restore_redact(contrib: ModuleType, state: dict[str, Any]) -> None:
    original = state.pop("redact_url", None)
    if original is not None:
        contrib.redact_url = original  # type: ignore[attr-defined]


def url_filter(url: Any) -> Any:
    """urllib3's ``url_filter``: otelkit's URL rules (cached per URL), the URL unchanged when scrubbing is off."""
    if _cache_owner is _scrub.cache_owner():
        found = _cache.get(url)
        if found is not None:
            return found
    return _scrubbed(url) if isinstance(url, str) else url


def scrub_header_attributes(span: Any) -> None:
    """Replace captured values of secret-bearing request/response headers on an open span; never raises."""
    try:
        if not span.is_recording() or not _scrub.is_enabled():
            return
        for key, value in list(span.attributes.items()):
            if key.startswith(("http.request.header.", "http.response.header.")):
                name = key.rsplit(".", 1)[-1]
                if _scrub.is_sensitive_key(name) or _scrub.is_sensitive_key(name.replace("-", "_")):
                    span.set_attribute(key, [_scrub.REDACTED] * max(1, len(value) if isinstance(value, tuple) else 1))
    except Exception:
        pass


def captures_headers() -> bool:
    """Whether the contrib HTTP clients capture any header (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_*``)."""
    try:
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST,
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE,
            get_custom_headers,
        )
    except ImportError:
        return True
    return bool(get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST)
                or get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE))


ALREADY_NOTE = " (was already instrumented by the application; its providers and hooks are kept)"


def instrument_contrib(instrumentor: Any, ctx: Any, state: dict[str, Any], hooks: tuple[Any, Any],
                       **options: Any) -> str:
    """Instrument a contrib HTTP client with otelkit's providers, unless the application did; the status note.

    The header-scrubbing ``hooks`` (request, response) are given only when a header is captured: otherwise
    there would be a hook call per request for nothing. ``state["owned"]`` marks what ``uninstrument`` undoes.
    """
    if instrumentor.is_instrumented_by_opentelemetry:
        return ALREADY_NOTE
    if captures_headers():
        options["request_hook"], options["response_hook"] = hooks
    instrumentor.instrument(tracer_provider=ctx.tracer_provider, meter_provider=ctx.meter_provider,
                            skip_dep_check=True, **options)
    state["owned"] = True
    return ""
