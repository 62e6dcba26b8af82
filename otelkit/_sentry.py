"""PLACEHOLDER (owner: sentry). Sentry errors linked to OTel traces."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otelkit._config import Settings
    from otelkit._instrument import IntegrationStatus


def setup(settings: Settings) -> IntegrationStatus | None:
    return None


def shutdown(timeout: float) -> None:
    return None
