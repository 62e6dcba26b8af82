"""scrub_text passes texts of hex-ID characters over without the hint search (otelkit._scrub._INERT_CHARS).

The shortcut must give exactly what the full path gives: no hint fragment can be made of those characters
alone, random IDs come back as the full path returns them, and configured extra patterns still apply.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterator

import pytest

from otelkit import _scrub
from otelkit._correlation import new_correlation_id


@pytest.fixture(autouse=True)
def _default_config() -> Iterator[None]:
    _scrub.configure()
    yield
    _scrub.configure()


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a regex without groups (the hint is a flat alternation)."""
    assert "(" not in pattern
    return pattern.split("|")


def _literals(alternative: str) -> str:
    """The characters an alternative must contain literally: bracket classes, class escapes and quantifiers out."""
    text = re.sub(r"\[[^\]]*\]", "", alternative)  # [^/\s], [pousr]
    text = re.sub(r"\\[sSdDwWbB]", "", text)  # class escapes
    text = re.sub(r"\\(.)", r"\1", text)  # \. is a literal dot
    return re.sub(r"[*+?]", "", text)


def test_every_hint_fragment_needs_a_character_outside_the_inert_set() -> None:
    inert = set(_scrub._INERT_CHARS.lower())
    for alternative in _alternatives(_scrub._TEXT_HINT_RX.lower()):
        literals = _literals(alternative)
        assert literals, alternative
        assert set(literals) - inert, f"hint fragment {alternative!r} could match a text of inert characters only"


def test_inert_texts_never_match_the_hint() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(_scrub._INERT_CHARS) for _ in range(rng.randint(1, 80)))
        assert _scrub._TEXT_HINT.search(text) is None
        assert _scrub._TEXT_HINT_LOWER.search(text.lower()) is None


@pytest.mark.parametrize("make", [new_correlation_id, lambda: str(uuid.uuid4()), lambda: uuid.uuid4().hex.upper(),
                                  lambda: f"{random.getrandbits(64):016x}"])
def test_hex_ids_come_back_as_the_full_path_returns_them(make) -> None:  # type: ignore[no-untyped-def]
    before = _scrub.cache_info()["text"]
    for _ in range(200):
        text = make()
        assert _scrub.scrub_text(text) == _scrub._scrub_text(text) == text
    after = _scrub.cache_info()["text"]
    # not cached: a unique ID per message would push repeating text out of the LRU
    assert (after.hits, after.misses) == (before.hits, before.misses)


def test_other_text_still_takes_the_full_path() -> None:
    assert _scrub.scrub_text("AKIAIOSFODNN7EXAMPLE") == _scrub.REDACTED
    assert _scrub.scrub_text("deadbeef password=abc123") == "deadbeef password=" + _scrub.REDACTED
    assert _scrub.scrub_text("cafe") == "cafe"


def test_extra_patterns_still_apply_to_hex_ids() -> None:
    _scrub.configure(True, [r"\b[0-9a-f]{32}\b"])
    cid = new_correlation_id()
    assert _scrub.scrub_text(cid) == _scrub.REDACTED
