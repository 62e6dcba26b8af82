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


def make_redact(original: Any) -> Any:
    """A ``redact_url`` replacement: otelkit's full rules while scrubbing is on, upstream's otherwise."""

    def redact_url(url: str) -> str:
        if _scrub.is_enabled():
            return _scrub.scrub_url(str(url))
        return original(url) if original is not None else url

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
    if _scrub.is_enabled() and isinstance(url, str):
        return _scrub.scrub_url(url)
    return url


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
