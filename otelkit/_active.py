"""The settings of the running configuration, for the modules ``init()`` itself sets up.

``_logs_third_party`` (the export threshold of structlog and loguru records) and ``_pools`` (the settings a
spawned child starts with) need the settings of the last ``init()``; importing :mod:`otelkit._init` for
that would make an import cycle, since ``_init`` sets those modules up. ``_init`` registers its getter
here instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otelkit._config import Settings

__all__ = ["register", "settings"]


def _none() -> Settings | None:
    return None


_getter: Callable[[], Settings | None] = _none


def register(getter: Callable[[], Settings | None]) -> None:
    """Make :func:`settings` answer with ``getter()`` (``otelkit._init.get_settings``)."""
    global _getter
    _getter = getter


def settings() -> Settings | None:
    """The settings of the last ``init()``; None before it (or when ``otelkit._init`` was never loaded)."""
    return _getter()
