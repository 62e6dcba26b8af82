"""What the requests, urllib3 and aiohttp-client integrations share: otelkit's URL rules inside contrib.

Each of these contrib instrumentations builds ``url.full`` with ``opentelemetry.util.http.redact_url``
(imported by name into its module) or through a ``url_filter``. otelkit puts its own scrubbing there,
so the span is right when it starts (no second ``set_attribute`` per request) and the cost is a dict
lookup per URL (``_scrub.scrub_url`` caches by URL; upstream's ``redact_url`` parses every time).

The helpers these contrib modules call per request by their module-level names (imported by name from
``urllib.parse``, ``opentelemetry.util.http``, ``...instrumentation.utils`` and ``..._semconv``) are replaced
in the contrib module's namespace only (:func:`lean_helpers`) by equivalents that return the same values
with less work: URL parses and metric attribute sets cached by URL / by content, context managers as
small classes instead of generators. Each is installed only where it takes exactly the parameters
upstream's function takes at the installed release (:func:`same_shape`), so no contrib release calls one
with arguments it lacks. The histograms upstream records into are given to ``_compat.record_point``
(:func:`point_histograms`), which remembers the SDK's work per cached attribute set. The spans, their
attributes and the metric points are upstream's, unchanged.
"""

from __future__ import annotations

import functools
import inspect
import urllib.parse
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from otelkit import _compat, _scrub

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


# --- upstream's per-request helpers, leaner (see the module docstring) --------------------------------

_HELPER_CACHE_SIZE = 1024  # URLs / user agents / metric attribute sets remembered; then no more are added


class _ParseResult(urllib.parse.ParseResult):
    """``urllib.parse.ParseResult`` whose ``hostname``/``port`` are computed once (upstream reads them up to five
    times per request); an error (a port out of range) is raised on every read, as before."""

    hostname = functools.cached_property(vars(urllib.parse._NetlocResultMixinBase)["hostname"].fget)
    port = functools.cached_property(vars(urllib.parse._NetlocResultMixinBase)["port"].fget)


_parsed: dict[str, _ParseResult] = {}


def _urlparse(url: Any, scheme: Any = "", allow_fragments: bool = True) -> Any:
    """``urllib.parse.urlparse``, the result cached per URL string (immutable: a named tuple)."""
    if type(url) is not str or scheme != "" or allow_fragments is not True:
        return urllib.parse.urlparse(url, scheme, allow_fragments)
    found = _parsed.get(url)
    if found is None:
        found = _ParseResult(*urllib.parse.urlparse(url))
        if len(_parsed) < _HELPER_CACHE_SIZE:
            _parsed[url] = found
    return found


# Every method some upstream release treats as known (``sanitize_method`` returns it upper-cased). Which of them
# the installed release knows is asked of its own function (:func:`_known_methods`): 0.61b0 does not know QUERY.
_CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
_UNKNOWN_METHOD = "OTELKIT-NOT-A-METHOD"  # "_OTHER" from upstream unless its capture-all switch is set


def _known_methods(original: Callable[[Any], Any]) -> frozenset[str]:
    """The candidate methods upstream's ``sanitize_method`` returns as themselves without its capture-all switch.

    With the switch (``OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS``) set, upstream returns every method
    as is, so nothing can be learnt: the empty set (every call goes to upstream's function). Whether it is set is
    asked of upstream's function too (a method nobody knows comes back as itself), before and after, so a switch
    set meanwhile is noticed, and the environment stays ``_config``'s to read.
    """
    try:
        if original(_UNKNOWN_METHOD) != "_OTHER":
            return frozenset()
        known = frozenset(m for m in _CANDIDATE_METHODS if original(m) == m)
        return frozenset() if original(_UNKNOWN_METHOD) != "_OTHER" else known
    except Exception:
        return frozenset()


def _sanitize_method_of(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    known = _known_methods(original)

    def sanitize_method(method: Any) -> Any:
        # A method upstream's own list holds, in upper case, is returned as is whatever the environment says
        # (as upstream does): no os.environ read.
        if type(method) is str and method in known:
            return method
        return original(method)

    return sanitize_method


def _synthetic_of(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    found: dict[str, Any] = {}

    def detect_synthetic_user_agent(user_agent: Any) -> Any:
        if type(user_agent) is not str:
            return original(user_agent)
        try:
            return found[user_agent]
        except KeyError:
            pass
        result = original(user_agent)  # a pure function of the string
        if len(found) < _HELPER_CACHE_SIZE:
            found[user_agent] = result
        return result

    return detect_synthetic_user_agent


def _header_attributes_of(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_custom_header_attributes(headers: Any, captured_headers: Any, sensitive_headers: Any,
                                     normalize_function: Any) -> Any:
        if not captured_headers:  # upstream returns {} too, after asking the headers for their length
            return {}
        return original(headers, captured_headers, sensitive_headers, normalize_function)

    return get_custom_header_attributes


def _filter_duration_of(original: Callable[..., Any]) -> Callable[..., Any]:
    # (the attribute items, the mode's allowed keys' identity) -> (those keys, the filtered dict). The dict is
    # shared by every point of the same content: upstream only passes it to Histogram.record (read, never
    # changed), and record_point remembers the SDK's work for it.
    found: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
    http_mode: Any = None

    def _filter_semconv_duration_attrs(attrs: Mapping[str, Any], old_attrs: Any, new_attrs: Any,
                                       sem_conv_opt_in_mode: Any = None) -> Any:
        nonlocal http_mode
        if sem_conv_opt_in_mode is None:
            return original(attrs, old_attrs, new_attrs)
        if http_mode is None:
            http_mode = _compat.http_client_private()[3]
        allowed = new_attrs if sem_conv_opt_in_mode == http_mode else old_attrs
        try:
            key = (*attrs.items(), id(allowed))
            entry = found.get(key)
        except TypeError:  # an unhashable value: upstream's filter, every time
            return original(attrs, old_attrs, new_attrs, sem_conv_opt_in_mode)
        if entry is not None and entry[0] is allowed:
            return entry[1]
        filtered = original(attrs, old_attrs, new_attrs, sem_conv_opt_in_mode)
        if len(found) < _HELPER_CACHE_SIZE:
            found[key] = (allowed, filtered)
        return filtered

    return _filter_semconv_duration_attrs


class _SuppressHttp:
    """``suppress_http_instrumentation()`` as a class: the same context value attached and detached, no generators."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _context.attach(_context.set_value(_SUPPRESS_HTTP_KEY, True))

    def __exit__(self, *_exc: Any) -> None:
        if self._token:
            _context.detach(self._token)


class _IpOnNextConnection:
    """``httplib.set_ip_on_next_http_connection(span)`` as a class: the same state in the context, no generator."""

    __slots__ = ("_span", "_spans", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span

    def __enter__(self) -> None:
        state: Any = _context.get_value(_IP_STATE_KEY)
        if not state:
            self._spans = None
            self._token = _context.attach(_context.set_value(_IP_STATE_KEY, {"need_ip": [self._span]}))
        else:
            self._token = None
            self._spans = state["need_ip"]
            self._spans.append(self._span)

    def __exit__(self, *_exc: Any) -> None:
        if self._spans is None:
            if self._token:
                _context.detach(self._token)
            return
        try:
            self._spans.remove(self._span)
        except ValueError:  # the span may have become non-recording (as upstream)
            pass


_context: Any = None  # opentelemetry.context, and the keys of the two context managers above (set by _helpers)
_SUPPRESS_HTTP_KEY: Any = None
_IP_STATE_KEY: Any = None


def _helpers() -> dict[str, tuple[Any, Callable[[Any], Any]]]:
    """name -> (upstream's function, a maker of the replacement from it)."""
    global _context, _SUPPRESS_HTTP_KEY, _IP_STATE_KEY
    from opentelemetry import context
    from opentelemetry.instrumentation import utils
    from opentelemetry.util import http as util_http
    from opentelemetry.util.http import httplib

    _SUPPRESS_HTTP_KEY, _IP_STATE_KEY, filter_duration, _ = _compat.http_client_private()
    _context = context

    return {
        "urlparse": (urllib.parse.urlparse, lambda _original: _urlparse),
        "sanitize_method": (util_http.sanitize_method, _sanitize_method_of),
        "detect_synthetic_user_agent": (util_http.detect_synthetic_user_agent, _synthetic_of),
        "get_custom_header_attributes": (util_http.get_custom_header_attributes, _header_attributes_of),
        "_filter_semconv_duration_attrs": (filter_duration, _filter_duration_of),
        "suppress_http_instrumentation": (utils.suppress_http_instrumentation, lambda _original: _SuppressHttp),
        "set_ip_on_next_http_connection": (httplib.set_ip_on_next_http_connection,
                                           lambda _original: _IpOnNextConnection),
    }


def _shape(function: Any) -> tuple[tuple[str, Any, bool], ...] | None:
    """A callable's parameters as (name, kind, has a default); None when Python cannot tell."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    return tuple((p.name, p.kind, p.default is not inspect.Parameter.empty) for p in parameters)


def same_shape(upstream: Any, replacement: Any) -> bool:
    """Whether ``replacement`` takes exactly the parameters ``upstream`` takes (names, kinds, which are optional).

    A replacement is put in upstream's place only then: a contrib release that calls its helper with other
    arguments (httpx's helpers gained a ``module`` parameter after 0.61b0) keeps upstream's helper, since a
    replacement called with arguments it does not take would raise inside the application's request. A default's
    value is not compared: each replacement passes an omitted argument on omitted.
    """
    found = _shape(upstream)
    return found is not None and found == _shape(replacement)


def lean_helpers(contrib: ModuleType, state: dict[str, Any],
                 own: Mapping[str, Callable[[Any], Any]] | None = None,
                 requires: Mapping[str, str] | None = None) -> None:
    """Replace the per-request helpers ``contrib`` imported by name (each only while it is upstream's own).

    ``own``: helpers of that contrib module itself, name -> a maker of the replacement from upstream's function
    (replaced while the module's attribute is not one of otelkit's already). Each replacement is installed only
    when it has upstream's parameters (:func:`same_shape`). ``requires``: name -> the name whose replacement it
    needs (it hands that one a value only that replacement understands); without it, upstream's is put back.
    """
    try:
        helpers = _helpers()
    except Exception:  # a contrib release without one of them: upstream's helpers, unchanged
        return
    replaced = state.setdefault("helpers", {})
    for name, (upstream, make) in helpers.items():
        if own is not None and name in own:
            continue
        if name not in replaced and getattr(contrib, name, None) is upstream:
            _replace(contrib, replaced, name, upstream, make)
    for name, make in (own or {}).items():
        current = getattr(contrib, name, None)
        if name not in replaced and callable(current):
            _replace(contrib, replaced, name, current, make)
    for name, needed in (requires or {}).items():
        if name in replaced and needed not in replaced:
            setattr(contrib, name, replaced.pop(name))


def _replace(contrib: ModuleType, replaced: dict[str, Any], name: str, upstream: Any,
             make: Callable[[Any], Any]) -> None:
    replacement = make(upstream)
    if same_shape(upstream, replacement):
        replaced[name] = upstream
        setattr(contrib, name, replacement)


def restore_helpers(contrib: ModuleType, state: dict[str, Any]) -> None:
    for name, upstream in state.pop("helpers", {}).items():
        setattr(contrib, name, upstream)


class PointHistogram:
    """An SDK histogram whose ``record`` goes through ``_compat.record_point``: the same point, remembered work."""

    __slots__ = ("histogram",)

    def __init__(self, histogram: Any) -> None:
        self.histogram = histogram

    def record(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        if context is None and type(attributes) is dict:
            _compat.record_point(self.histogram, amount, attributes)
        else:
            self.histogram.record(amount, attributes, context)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.histogram, name)


def point_histograms(function: Any, names: tuple[str, ...] = ("duration_histogram_old", "duration_histogram_new"),
                     ) -> list[tuple[Any, Any]]:
    """Put the histograms ``function`` closes over (by these names) behind :class:`PointHistogram`.

    Returns (cell, upstream's histogram) pairs, for :func:`restore_cells`; nothing when the closure has
    another shape.
    """
    done: list[tuple[Any, Any]] = []
    code = getattr(function, "__code__", None)
    closure = getattr(function, "__closure__", None)
    if code is None or closure is None:
        return done
    for name in names:
        if name in code.co_freevars:
            cell = closure[code.co_freevars.index(name)]
            histogram = cell.cell_contents
            if histogram is not None and not isinstance(histogram, PointHistogram):
                cell.cell_contents = PointHistogram(histogram)
                done.append((cell, histogram))
    return done


def restore_cells(done: list[tuple[Any, Any]]) -> None:
    for cell, histogram in done:
        cell.cell_contents = histogram
