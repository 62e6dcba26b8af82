"""PLACEHOLDER (owner: export/reliability). Fork hooks."""

from __future__ import annotations

from collections.abc import Callable


def install(reinit: Callable[[], None]) -> None:
    return None
