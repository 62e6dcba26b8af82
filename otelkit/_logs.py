"""PLACEHOLDER (owner: logs/console/span/testing). Log correlation, OTLP handler, JsonFormatter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelkit._config import Settings


class JsonFormatter(logging.Formatter):
    pass


def install(settings: Settings, logger_provider: Any) -> None:
    return None


def uninstall() -> None:
    return None
