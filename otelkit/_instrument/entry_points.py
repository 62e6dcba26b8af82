"""Other installed OpenTelemetry instrumentations (the ``opentelemetry_instrumentor`` entry points).

Off by default: an installed instrumentation package is not consent to patch that library in every
service. ``OTELKIT_INSTRUMENT_ENTRY_POINTS=true`` (``init(instrument_entry_points=True)``) enables
all of them; naming one in ``OTELKIT_INSTRUMENT`` / ``init(instrument=[...])`` enables just that one;
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` still wins. Their dependency check is kept: a library
missing or outside the supported range is reported as skipped with upstream's message.
Their spans go through otelkit's provider (they follow a re-init); their metrics use the global
meter provider, which ``init()`` sets to otelkit's proxy.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

GROUP = "opentelemetry_instrumentor"
HANDLED = frozenset({"redis", "psycopg2", "httpx", "httpx2", "logging", "threading", "system_metrics", "celery",
                     "fastapi", "starlette", "flask", "django", "asgi", "wsgi",
                     "requests", "urllib3", "psycopg", "asyncpg", "sqlalchemy", "aiohttp-client",
                     "pika", "aio-pika", "faststream", "nats"})  # the last four: otelkit's own, replacing contrib
"""Entry points otelkit drives through its own modules (never loaded from here)."""

_enabled: dict[str, Any] = {}


def available() -> list[metadata.EntryPoint]:
    try:
        eps = metadata.entry_points(group=GROUP)
    except Exception:
        return []
    seen: dict[str, metadata.EntryPoint] = {}
    for ep in eps:
        if ep.name not in HANDLED and ep.name not in seen:
            seen[ep.name] = ep
    return [seen[name] for name in sorted(seen)]


def instrument_one(ep: metadata.EntryPoint, ctx: _common.Context) -> IntegrationStatus:
    name = ep.name
    if name in _enabled:
        return IntegrationStatus(name, "enabled", f"entry point {ep.value}")
    try:
        from opentelemetry import metrics
        from opentelemetry.instrumentation.dependencies import DependencyConflictError

        instrumentor = ep.load()()
        if instrumentor.is_instrumented_by_opentelemetry:
            return IntegrationStatus(name, "enabled", "already instrumented by the application")
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, meter_provider=metrics.get_meter_provider(),
                                raise_exception_on_conflict=True)
    except DependencyConflictError as exc:
        conflict = getattr(exc, "conflict", None)
        text = str(conflict) if conflict is not None else str(exc)
        found = getattr(conflict, "found", None) or getattr(conflict, "found_any", None)
        state_reason = "version unsupported" if found else "not installed"
        return IntegrationStatus(name, "skipped", f"{state_reason}: {text}")
    except ModuleNotFoundError as exc:
        return IntegrationStatus(name, "skipped", f"not installed: {exc}")
    if not instrumentor.is_instrumented_by_opentelemetry:
        return IntegrationStatus(name, "skipped", "the instrumentor declined (see its log message)")
    _enabled[name] = instrumentor
    return IntegrationStatus(name, "enabled", f"entry point {ep.value}")


def uninstrument_one(name: str) -> None:
    instrumentor = _enabled.pop(name, None)
    if instrumentor is not None and instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def enabled_names() -> list[str]:
    return list(_enabled)
