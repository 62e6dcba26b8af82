"""Auto-instrumentation: one module per integration and a status registry.

``instrument_all(settings, tracer_provider, meter_provider)`` is called by every ``init()``:

* **Which.** redis, psycopg2 and httpx are instrumented whenever importable; requests, urllib3,
  aiohttp-client, psycopg, asyncpg and sqlalchemy when installed, at the application's import of
  the library (``_lazy``: init() never imports them); ``threading``
  carries the trace context into threads and thread pools; ``logging`` reports
  that ``otelkit._logs`` does log correlation; ``system_metrics`` is on unless
  ``OTELKIT_SYSTEM_METRICS=false``. ``init(instrument=[...])`` / ``OTELKIT_INSTRUMENT`` limits the
  libraries (and can name any installed ``opentelemetry_instrumentor`` entry point);
  ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (names or ``*``) always wins. Other entry points are
  opt-in: ``OTELKIT_INSTRUMENT_ENTRY_POINTS=true`` (see :mod:`otelkit._instrument.entry_points`).
* **Semantic conventions.** ``settings.semconv_opt_in`` (``OTEL_SEMCONV_STABILITY_OPT_IN``) is set as
  the contrib instrumentations' mode. When it is unset otelkit opts in to the stable HTTP and database
  conventions (``http,database``: ``url.full``, ``http.request.method``, ``db.query.text``...), which is
  what the metric names and dashboards use. Upstream caches the mode for the process; otelkit sets the
  cache at each ``init()`` (a change re-instruments its integrations). An ``init()``
  that instruments nothing (``instrument=()``, no entry points) leaves it alone unless an
  instrumentation module already loaded it: nothing slow is imported for integrations not in use.
* **Re-init.** Idempotent: an integration is instrumented once per process; a re-init only
  re-points it (tracers given to the contrib instrumentors resolve the provider at each span
  start), enables what became wanted and removes what is no longer wanted.
* **Never raises.** A failing integration is reported as ``failed`` with the error, and logged.

``integration_status()`` (public as ``otelkit.integration_status()``) returns the last result.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from otelkit import _compat, _sentry
from otelkit._instrument import _common, entry_points
from otelkit._instrument import logging as _logging
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from otelkit._config import Settings

__all__ = ["IntegrationStatus", "instrument_all", "integration_status", "plan", "uninstrument_all"]

class _Integration:
    """An integration module imported on first use: its ``NAME`` is known without importing it.

    ``init()`` touches only the names of the integrations it leaves off (``instrument=``,
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``), so their modules (and what they import: the pipeline, asyncio,
    psutil...) are never loaded: measured, importing every integration module eagerly cost about a third of
    ``import otelkit; otelkit.init(instrument=())`` in instructions (benchmarks/RESULTS.md, 17.5, session 7).
    """

    __slots__ = ("NAME", "_path", "_module")

    def __init__(self, name: str, module: str) -> None:
        self.NAME = name
        self._path = f"otelkit._instrument.{module}"
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._path)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<otelkit integration {self.NAME!r} ({self._path})>"

    def loaded(self) -> bool:
        """Whether its module was imported (through this object or directly): else it instrumented nothing."""
        return self._module is not None or self._path in sys.modules


LIBRARIES: tuple[Any, ...] = tuple(_Integration(name, module) for name, module in (
    ("redis", "redis"), ("psycopg2", "psycopg2"), ("httpx", "httpx"), ("threading", "threads"),
    ("requests", "requests"), ("urllib3", "urllib3"), ("aiohttp-client", "aiohttp_client"), ("psycopg", "psycopg"),
    ("asyncpg", "asyncpg"), ("sqlalchemy", "sqlalchemy"),
    ("bullmq", "bullmq"), ("celery", "celery"), ("rq", "rq"), ("dramatiq", "dramatiq"), ("arq", "arq"),
    ("fastapi", "fastapi"), ("starlette", "starlette"), ("flask", "flask"), ("django", "django"),
    ("uvicorn", "uvicorn"),
    ("faststream", "faststream"), ("pika", "pika"), ("aio-pika", "aio_pika"), ("nats", "nats"),
))
_system_metrics: Any = _Integration("system_metrics", "system_metrics")
"""Integrations selected by ``instrument=`` (plus entry points)."""
BUILTIN_NAMES = (
    "logging", "redis", "psycopg2", "httpx", "threading", "system_metrics",
    "requests", "urllib3", "aiohttp-client", "psycopg", "asyncpg", "sqlalchemy",
    "bullmq", "celery", "rq", "dramatiq", "arq",
    "fastapi", "starlette", "flask", "django", "uvicorn",
    "faststream", "pika", "aio-pika", "nats",
)


_lock = threading.RLock()
_enabled: dict[str, IntegrationStatus] = {}
_status: tuple[IntegrationStatus, ...] = ()
_semconv_applied: str | None = None
_unscanned: Settings | None = None  # settings of an init() that left unused entry points unscanned


def integration_status() -> tuple[IntegrationStatus, ...]:
    """What the last ``init()`` did for each integration: enabled, disabled (by choice), skipped, failed.

    Example: ``redis: enabled (redis 8.1.0)``, ``httpx: skipped (not installed (pip install httpx))``.
    Empty before ``init()``. Sentry is listed too once ``init()`` has considered it.
    """
    _report_unused_entry_points()
    sentry = _sentry.status()
    return _status if sentry is None or not _status else (*_status, sentry)


def _report_unused_entry_points() -> None:
    """Add the "disabled" lines of entry points init() did not scan (see ``report_unused_entry_points``)."""
    global _status, _unscanned
    with _lock:
        settings = _unscanned
        if settings is None:
            return
        _unscanned = None
        try:
            extra = [IntegrationStatus(ep.name, "disabled", _disabled_reason(ep.name, settings, "entry_point") or "")
                     for ep in entry_points.available()]
        except Exception:
            logger.debug("otelkit: listing entry points failed", exc_info=True)
            return
        _status = (*_status, *extra)


def _prepare_semconv(settings: Settings) -> bool:
    """Apply the semantic-convention opt-in of ``settings``; True when it changed since the last init."""
    global _semconv_applied
    effective = settings.semconv_opt_in
    previous = _semconv_applied
    # Upstream caches the mode for the process when it is first asked; something may have asked before
    # init() (an import-time instrumentation), so set it again now, at every init().
    if not _compat.set_semconv_stability(effective):
        logger.debug("otelkit: this contrib release has no semantic-convention switch otelkit can set; the "
                     "instrumentations keep the mode they read from OTEL_SEMCONV_STABILITY_OPT_IN themselves")
        return False
    _semconv_applied = effective
    return previous is not None and previous != effective


def _names(value: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return _common.sequence_names(value)


def _disabled_reason(name: str, settings: Settings, kind: str) -> str | None:
    disabled = {n.strip().lower() for n in settings.disabled_instrumentations}
    if "*" in disabled or name in disabled:
        return f"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS contains {'*' if '*' in disabled else name!r}"
    chosen = _names(settings.instrument)
    if kind == "library":
        if chosen is not None and name not in chosen:
            return f"not in instrument={list(chosen)!r} ({_source(settings, 'instrument', 'OTELKIT_INSTRUMENT')})"
    elif kind == "system_metrics":
        if not settings.system_metrics:
            return f"system_metrics=False ({_source(settings, 'system_metrics', 'OTELKIT_SYSTEM_METRICS')})"
    elif kind == "entry_point":
        if chosen is not None and name in chosen:
            return None
        if not settings.instrument_entry_points:
            return f"entry points are opt-in: OTELKIT_INSTRUMENT_ENTRY_POINTS=true or instrument=[..., {name!r}]"
        if chosen is not None:
            return f"not in instrument={list(chosen)!r}"
    return None


def _source(settings: Settings, field: str, env: str) -> str:
    source = settings.sources.get(field)
    return "argument" if source == "argument" else (source or env)


def _run(name: str, module: Any, ctx: _common.Context) -> IntegrationStatus:
    try:
        status: IntegrationStatus = module.instrument(ctx)
    except Exception as exc:
        logger.warning("otelkit: instrumenting %s failed: %s: %s (the application continues without it)",
                       name, type(exc).__name__, exc, exc_info=logger.isEnabledFor(10))
        try:
            module.uninstrument()
        except Exception:
            pass
        return IntegrationStatus(name, "failed", f"{type(exc).__name__}: {exc}")
    return status


def _stop(name: str, module: Any) -> None:
    try:
        if isinstance(module, _Integration) and not module.loaded():
            pass  # never imported, so never instrumented: nothing to undo (and nothing to import for it)
        elif module is not None:
            module.uninstrument()
        else:
            entry_points.uninstrument_one(name)
    except Exception:
        logger.debug("otelkit: uninstrumenting %s failed", name, exc_info=True)
    _enabled.pop(name, None)


def instrument_all(
    settings: Settings, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None,
    *, report_unused_entry_points: bool = True,
) -> list[IntegrationStatus]:
    """Instrument what ``settings`` asks for; return (and remember) one status per integration.

    ``tracer_provider``/``meter_provider`` are the providers of this init (``None``: the OTel
    globals). Safe to call on every ``init()``; never raises.

    ``report_unused_entry_points=False`` (what ``init()`` passes): when no entry point can be enabled
    (not opted in, none named, none enabled before), the installed ones are not scanned now (a few ms
    of ``importlib.metadata``); their "disabled" lines are added when ``integration_status()`` is
    first asked for.
    """
    global _status
    try:
        with _lock:
            return _instrument_all(settings, tracer_provider, meter_provider, report_unused_entry_points)
    except Exception as exc:  # the contract: telemetry never breaks start-up
        logger.warning("otelkit: instrumentation failed: %s: %s", type(exc).__name__, exc, exc_info=True)
        _status = (IntegrationStatus("instrumentation", "failed", f"{type(exc).__name__}: {exc}"),)
        return list(_status)


def _entry_points_wanted(settings: Settings) -> bool:
    """Whether this init may enable or disable an entry point (else scanning them only yields status lines)."""
    if entry_points.enabled_names() or settings.instrument_entry_points:
        return True
    chosen = _names(settings.instrument)
    return chosen is not None and any(name not in BUILTIN_NAMES for name in chosen)


def _instrument_all(
    settings: Settings, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None,
    report_unused_entry_points: bool = True,
) -> list[IntegrationStatus]:
    global _status, _unscanned
    _common.set_providers(tracer_provider, meter_provider)
    ctx = _common.Context(settings, _common.FOLLOWING_TRACER_PROVIDER, meter_provider)
    scan = report_unused_entry_points or _entry_points_wanted(settings)
    # The opt-in only matters to instrumentations: skip importing and re-initialising the upstream mode
    # (10-20 ms) when this init instruments nothing and no instrumentation module has loaded it.
    semconv_needed = scan or _compat.semconv_loaded(sys.modules) or any(
        _disabled_reason(module.NAME, settings, "library") is None for module in LIBRARIES)
    if semconv_needed and _prepare_semconv(settings):
        # Contrib instrumentations captured the old mode when they were instrumented.
        for module in LIBRARIES:
            if module.NAME in _enabled:
                _stop(module.NAME, module)

    statuses: list[IntegrationStatus] = [_logging.instrument(ctx)]
    for module in LIBRARIES:
        name = module.NAME
        reason = _disabled_reason(name, settings, "library")
        if reason is not None:
            if name in _enabled:
                _stop(name, module)
            statuses.append(IntegrationStatus(name, "disabled", reason))
        elif name in _enabled:
            statuses.append(_enabled[name])
        else:
            status = _run(name, module, ctx)
            if status.state == "enabled":
                _enabled[name] = status
            statuses.append(status)

    reason = _disabled_reason("system_metrics", settings, "system_metrics")
    if reason is not None:
        _stop("system_metrics", _system_metrics)
        statuses.append(IntegrationStatus("system_metrics", "disabled", reason))
    else:
        status = _run("system_metrics", _system_metrics, ctx)
        if status.state == "enabled":
            _enabled["system_metrics"] = status
        statuses.append(status)

    known = set(BUILTIN_NAMES)
    _unscanned = None if scan else settings
    for ep in (entry_points.available() if scan else ()):
        known.add(ep.name)
        reason = _disabled_reason(ep.name, settings, "entry_point")
        if reason is not None:
            if ep.name in _enabled:
                _stop(ep.name, None)
            statuses.append(IntegrationStatus(ep.name, "disabled", reason))
            continue
        try:
            status = entry_points.instrument_one(ep, ctx)
        except Exception as exc:
            logger.warning("otelkit: instrumenting %s failed: %s: %s", ep.name, type(exc).__name__, exc)
            status = IntegrationStatus(ep.name, "failed", f"{type(exc).__name__}: {exc}")
        if status.state == "enabled":
            _enabled[ep.name] = status
        statuses.append(status)

    for name in _names(settings.instrument) or ():
        if name not in known:
            reason = f"unknown integration (known here: {', '.join(sorted(known))})"
            # A typo in instrument= would otherwise leave a library silently untraced.
            logger.warning("otelkit: instrument= names %r: %s", name, reason)
            statuses.append(IntegrationStatus(name, "skipped", reason))
    _status = tuple(statuses)
    return statuses


def plan(settings: Settings) -> list[IntegrationStatus]:
    """What ``instrument_all(settings, ...)`` would do here, from settings and package metadata only.

    Nothing is imported or patched (``otelkit doctor`` answers in well under a second): a library that is
    installed in a supported version, with its contrib instrumentation present, is "enabled (would be
    instrumented)". Entry points are listed with the reason they are off, or as "would be enabled".
    """
    ctx = _common.Context(settings, _common.FOLLOWING_TRACER_PROVIDER, None)
    statuses: list[IntegrationStatus] = [_logging.instrument(ctx)]
    for module in (*LIBRARIES, _system_metrics):
        name = module.NAME
        reason = _disabled_reason(name, settings, "system_metrics" if module is _system_metrics else "library")
        try:
            statuses.append(IntegrationStatus(name, "disabled", reason) if reason is not None else
                            _system_metrics.plan(settings) if module is _system_metrics else module.plan())
        except Exception as exc:
            statuses.append(IntegrationStatus(name, "failed", f"{type(exc).__name__}: {exc}"))
    known = set(BUILTIN_NAMES)
    for ep in entry_points.available():
        known.add(ep.name)
        reason = _disabled_reason(ep.name, settings, "entry_point")
        statuses.append(IntegrationStatus(ep.name, "disabled", reason) if reason is not None else
                        IntegrationStatus(ep.name, "enabled", f"entry point {ep.value} would be instrumented"))
    for name in _names(settings.instrument) or ():
        if name not in known:
            statuses.append(IntegrationStatus(name, "skipped",
                                              f"unknown integration (known here: {', '.join(sorted(known))})"))
    return statuses


def uninstrument_all() -> None:
    """Remove every instrumentation otelkit applied (tests, ``otelkit._init.reset()``). Never raises."""
    global _status, _unscanned
    with _lock:
        _unscanned = None
        for name in list(_enabled):
            module = {m.NAME: m for m in (*LIBRARIES, _system_metrics)}.get(name)
            if module is None and name not in entry_points.enabled_names():
                _enabled.pop(name, None)
                continue
            _stop(name, module)
        _stop("system_metrics", _system_metrics)
        _status = ()
