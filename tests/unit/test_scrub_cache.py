"""otelkit._scrub caches and fast paths: bounded, invalidated by configure(), never weaker than the slow path."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import SplitResult, urlsplit, urlunsplit

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelkit import _scrub


@pytest.fixture(autouse=True)
def _default_config() -> Iterator[None]:
    _scrub.configure()
    yield
    _scrub.configure()


def test_caches_are_bounded() -> None:
    info = _scrub.cache_info()
    for name in ("text", "url", "sql", "redis", "db_message", "key", "sensitive_key"):
        assert info[name].maxsize is not None and info[name].maxsize > 0, name
    text_max = info["text"].maxsize
    for i in range(text_max + 500):
        _scrub.scrub_text(f"order {i} processed")
    for i in range(_scrub.cache_info()["sql"].maxsize + 100):
        _scrub.scrub_sql(f"SELECT * FROM t{i} WHERE a = %s")
    for i in range(_scrub.cache_info()["key"].maxsize + 100):
        _scrub.scrub_attributes({f"app.key_{i}": "v"})
    info = _scrub.cache_info()
    assert info["text"].currsize == text_max
    assert info["sql"].currsize == info["sql"].maxsize
    assert info["key"].currsize <= info["key"].maxsize


def test_long_values_are_not_cached_but_still_scrubbed() -> None:
    before = _scrub.cache_info()["text"].currsize
    long_text = "x" * 5000 + " password=hunter2 " + "y" * 5000
    out = _scrub.scrub_text(long_text)
    assert "hunter2" not in out and out.endswith("y" * 5000)
    assert _scrub.cache_info()["text"].currsize == before
    long_sql = "SELECT 'OTK-1', " + ", ".join(f"c{i}" for i in range(1500))
    assert "OTK-1" not in _scrub.scrub_sql(long_sql)


def test_cache_hits_return_the_scrubbed_value() -> None:
    for _ in range(3):
        assert _scrub.scrub_text("login with password=OTK-2") == "login with password=[REDACTED]"
        assert _scrub.scrub_url("https://h/cb?code=OTK-3&page=2") == "https://h/cb?code=REDACTED&page=2"
        assert _scrub.scrub_sql("SELECT * FROM u WHERE pw = 'OTK-4'") == "SELECT * FROM u WHERE pw = ?"
        assert _scrub.scrub_redis_statement("AUTH admin OTK-5") == "AUTH ? ?"
    assert _scrub.cache_info()["text"].hits > 0


def test_configure_invalidates_cached_results() -> None:
    text = "customer CUST-123456 failed"
    assert _scrub.scrub_text(text) == text  # cached without the extra pattern
    assert _scrub.scrub_url("https://h/c/CUST-123456?a=1") == "https://h/c/CUST-123456?a=1"
    _scrub.configure(True, [r"CUST-\d{6}"])
    assert _scrub.scrub_text(text) == "customer [REDACTED] failed"
    assert "CUST-123456" not in _scrub.scrub_url("https://h/c/CUST-123456?a=1")
    _scrub.configure()
    assert _scrub.scrub_text(text) == text


def _reference_scrub_url(url: str) -> str:
    """The urlsplit-based rules, for comparison with the hand-split fast path."""
    parts = urlsplit(url)
    query = _scrub._scrub_query(parts.query)
    fragment = _scrub._scrub_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (query, fragment) != (parts.query, parts.fragment):
        url = urlunsplit(SplitResult(parts.scheme, parts.netloc, parts.path, query, fragment))
    return _scrub.scrub_text(url)


@pytest.mark.parametrize("url", [
    "https://api.example.com/v1/items/42?page=2&limit=50",
    "https://h/x?token=OTK-6&page=2#section",
    "https://h/x?page=1#access_token=OTK-7&state=s",
    "https://h/x#frag?sig=OTK-8",
    "https://h/x?X-Amz-Signature=OTK-9;a=1",
    "/relative/path?session=OTK-10",
    "https://h/x?flag&key=OTK-11&",
])
def test_url_fast_path_matches_the_urlsplit_rules(url: str) -> None:
    assert _scrub.scrub_url(url) == _reference_scrub_url(url)
    assert "OTK-" not in _scrub.scrub_url(url)


def test_non_ascii_text_keeps_the_case_insensitive_pre_check() -> None:
    # U+017F (long s) folds to "s" under IGNORECASE but not under lower(): the rules must still run.
    assert "OTK" not in _scrub.scrub_text("café paſſword=OTK13abcd")
    assert "OTK" not in _scrub.scrub_text("CAFÉ PASSWORD=OTK14ABCD")


def test_rebuilt_span_keeps_dropped_counts() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=3, max_events=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s") as span:
        for i in range(5):
            span.set_attribute(f"a{i}", i)
        span.set_attribute("user.password", "OTK-15")
        span.add_event("first")
        span.add_event("second", {"exception.message": "Bearer OTK-16abcdefgh"})
    (raw,) = exporter.get_finished_spans()
    assert raw.dropped_attributes == 3 and raw.dropped_events == 1
    (scrubbed,) = _scrub.scrub_spans([raw])
    assert scrubbed is not raw
    assert scrubbed.attributes["user.password"] == "[REDACTED]"
    assert "OTK-16" not in repr([dict(e.attributes or {}) for e in scrubbed.events])
    assert scrubbed.dropped_attributes == 3
    assert scrubbed.dropped_events == 1


def test_unchanged_attributes_are_returned_as_is() -> None:
    attributes = {"http.request.method": "GET", "server.port": 443, "ok": True, "ratio": 0.5,
                  "otelkit.correlation_id": "c-1", "tags": ("a", "b")}
    assert _scrub.scrub_attributes(attributes) is attributes


def test_url_fast_path_matches_the_urlsplit_rules_on_generated_urls() -> None:
    import random

    rng = random.Random(8)
    pieces = ["https://h", "http://h:8", "/p", "/a/b", "?", "#", "&", ";", "=", "token", "page", "sig", "x",
              "OTK", "2", "?a=1", "#s=2", "code=", "&&", "%20", "key"]
    for _ in range(3000):
        url = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        if "@" in url or "?" not in url:
            continue  # the fast path's domain
        # urlunsplit drops an empty query ("p?#f" -> "p#f") when it rebuilds; the fast path keeps the text.
        assert _scrub._scrub_url(url).replace("?#", "#") == _reference_scrub_url(url).replace("?#", "#"), url
