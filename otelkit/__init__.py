"""otelkit: one-call OpenTelemetry for Python services and job pipelines.

``otelkit.init()`` at start-up configures traces, metrics and logs over OTLP
from the standard ``OTEL_*`` variables, instruments redis, psycopg2 and httpx,
correlates logs with traces and links Sentry errors to them.
``otelkit.pipeline`` follows one event from emission to reception.

Names are imported lazily, so ``import otelkit`` stays cheap until ``init()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from otelkit._version import __version__

if TYPE_CHECKING:
    from otelkit._config import ConfigError, Settings
    from otelkit._correlation import correlation_id
    from otelkit._export.stats import ShutdownReport
    from otelkit._init import get_settings, init, shutdown
    from otelkit._instrument import IntegrationStatus, integration_status
    from otelkit._instrument.faststream import faststream_middleware
    from otelkit._logs import JsonFormatter
    from otelkit._logs_third_party import LoguruExporter, LoguruFields, StructlogExporter, StructlogFields
    from otelkit._span import span

_LAZY = {
    "ConfigError": "otelkit._config",
    "IntegrationStatus": "otelkit._instrument",
    "JsonFormatter": "otelkit._logs",
    "LoguruExporter": "otelkit._logs_third_party",
    "LoguruFields": "otelkit._logs_third_party",
    "Settings": "otelkit._config",
    "ShutdownReport": "otelkit._export.stats",
    "StructlogExporter": "otelkit._logs_third_party",
    "StructlogFields": "otelkit._logs_third_party",
    "correlation_id": "otelkit._correlation",
    "faststream_middleware": "otelkit._instrument.faststream",
    "get_settings": "otelkit._init",
    "init": "otelkit._init",
    "integration_status": "otelkit._instrument",
    "shutdown": "otelkit._init",
    "span": "otelkit._span",
}

__all__ = [
    "ConfigError",
    "IntegrationStatus",
    "JsonFormatter",
    "LoguruExporter",
    "LoguruFields",
    "Settings",
    "ShutdownReport",
    "StructlogExporter",
    "StructlogFields",
    "__version__",
    "correlation_id",
    "faststream_middleware",
    "get_settings",
    "init",
    "integration_status",
    "shutdown",
    "span",
]


_SUBMODULES = ("pipeline", "testing")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        # ``import otelkit; otelkit.pipeline.emit(...)`` works without a separate import.
        submodule = importlib.import_module(f"otelkit.{name}")
        globals()[name] = submodule
        return submodule
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
