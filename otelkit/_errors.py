"""PLACEHOLDER (owner: sentry). The one place an exception passing through otelkit is reported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def report_exception(exc: BaseException, span: Any = None, *, context: Mapping[str, object] | None = None) -> None:
    return None
