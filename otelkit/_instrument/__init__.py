"""PLACEHOLDER (owner: instrumentation). One module per integration; status registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from otelkit._config import Settings


@dataclass(frozen=True)
class IntegrationStatus:
    """What happened to one integration at init()."""

    name: str
    state: Literal["enabled", "disabled", "skipped", "failed"]
    reason: str = ""


def instrument_all(settings: Settings, tracer_provider: Any, meter_provider: Any) -> list[IntegrationStatus]:
    return []


def uninstrument_all() -> None:
    return None


def integration_status() -> tuple[IntegrationStatus, ...]:
    return ()
