"""SQLAlchemy (sync ``Engine`` and ``AsyncEngine``): statement spans, duration metric and pool usage.

otelkit's own integration (it replaces ``opentelemetry-instrumentation-sqlalchemy``, which patches
``create_engine`` and so misses engines created before ``init()``): event listeners on the ``Engine``
and ``Pool`` *classes*, so every engine is covered, whenever it was created.

**One span per statement: the driver's span wins.** When the DBAPI cursor SQLAlchemy executes on is
already traced by otelkit's driver integration (psycopg2 and psycopg: a traced cursor; asyncpg: the
asyncpg integration is on, it traces asyncpg's classes), SQLAlchemy records nothing for that
statement: the driver's span is the statement as sent, with the same scrubbing and the duration
metric. Otherwise (sqlite, mysql drivers, a psycopg2 connection the pool opened before ``init()``
(psycopg 3 adopts those at their first cursor), a server-side cursor) SQLAlchemy's span is the one:
a CLIENT span named by the operation, with ``db.system.name``, ``db.namespace``,
``server.address``/``server.port``, ``db.operation.name`` and the scrubbed ``db.query.text``, and
``db.client.operation.duration`` on attributes cached per engine and operation.

Pool usage: ``db.client.connection.count`` (``idle``/``used``) read from ``pool.checkedin()`` /
``pool.checkedout()`` at each collection, named by the engine URL without its password; a pool is
reported from its first statement after ``init()``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from otelkit import _compat, _scrub
from otelkit._instrument import _common, _db_pools, _lazy, _sql
from otelkit._status import IntegrationStatus

NAME = "sqlalchemy"
SCOPE = "otelkit.instrument.sqlalchemy"
MIN_VERSION = (1, 4)

_state: dict[str, Any] = {}
_tracer = _common.FOLLOWING_TRACER_PROVIDER.get_tracer(SCOPE)
# Metric attributes by (operation, collection, error type).
_MetricSets = dict[tuple[str, str | None, str | None], dict[str, Any]]
# Span attributes and what the point needs, by statement text: (operation, collection, span attributes).
_SpanSets = dict[str, tuple[str, str | None, dict[str, Any]]]
_EngineInfo = tuple[dict[str, Any], _MetricSets, _SpanSets]
# engine -> (span attributes without the statement, metric attribute sets, span attribute sets)
_engines: weakref.WeakKeyDictionary[Any, _EngineInfo] = weakref.WeakKeyDictionary()
# The last engine seen: (a weak reference to it, its pool then, its info). Statements mostly come from one
# engine, so this skips the two weak-dictionary lookups (engine info, pool registered) per statement.
_last: tuple[Any, Any, _EngineInfo | None] = (lambda: None, None, None)
_SETS_MAX = 256  # span/metric attribute sets kept per engine (statements and operations are mostly constants)
_traced_types: dict[type, bool] = {}
_operations: dict[str, tuple[str, str, str | None]] = {}  # statement -> (operation, scrubbed text, collection)

_SYSTEMS = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mariadb", "sqlite": "sqlite",
            "mssql": "microsoft.sql_server", "oracle": "oracle.db"}


def _driver_traces(engine: Any, cursor: Any) -> bool:
    """Whether otelkit's driver integration already traces this statement (then the driver's span wins)."""
    driver = engine.dialect.driver
    if driver == "asyncpg":
        from otelkit._instrument import asyncpg as _asyncpg

        return _asyncpg.is_on()
    if driver not in ("psycopg2", "psycopg", "psycopg_async"):
        return False
    klass = type(getattr(cursor, "_cursor", None) or cursor)
    traced = _traced_types.get(klass)
    if traced is None:  # contrib's traced cursor factories are named TracedCursor*
        traced = _traced_types[klass] = klass.__name__.startswith("Traced")
    return traced


def _pool_measures(pool: Any) -> tuple[str, int, int, int | None, int | None] | None:
    name = _state.get("pool_names", {}).get(pool)
    if name is None:
        return None
    return name, int(pool.checkedin()), max(int(pool.checkedout()), 0), None, None


def _engine_info(engine: Any) -> _EngineInfo:
    global _last
    last = _last
    pool = engine.pool
    if last[0]() is engine and last[1] is pool and last[2] is not None:
        return last[2]
    info = _engines.get(engine)
    if info is None:
        url = engine.url
        attributes: dict[str, Any] = {"db.system.name": _SYSTEMS.get(engine.dialect.name, engine.dialect.name)}
        if url.database:
            attributes["db.namespace"] = str(url.database)
        if url.host:
            attributes["server.address"] = str(url.host)
        if url.port:
            attributes["server.port"] = int(url.port)
        info = (attributes, {}, {})
        _engines[engine] = info
    names = _state.setdefault("pool_names", weakref.WeakKeyDictionary())
    if pool not in names:
        names[pool] = engine.url.render_as_string(hide_password=True)
        _db_pools.register(NAME, pool, _pool_measures)
    _last = (weakref.ref(engine), pool, info)
    return info


def _statement(statement: str) -> tuple[str, str, str | None]:
    found = _operations.get(statement)
    if found is None:
        words = statement.lstrip().split(None, 1)
        operation = words[0].upper()[:64] if words else ""
        text = _scrub.scrub_sql(statement) if _scrub.is_enabled() else statement
        # From the scrubbed shape: a literal ('... FROM x') must not name a table.
        shape = text if _scrub.is_enabled() else _scrub.scrub_sql(statement)
        found = (operation, text, _sql.collection_name(shape))
        if len(_operations) < 2048:  # bounded: statements are mostly program constants
            _operations[statement] = found
    return found


def _span_set(info: _EngineInfo, statement: str) -> tuple[str, str | None, dict[str, Any]]:
    """(operation, collection, span attributes) of ``statement`` on the engine of ``info``; kept (bounded)."""
    operation, text, collection = _statement(statement)
    found = (operation, collection, _sql.span_attributes(info[0], text, operation, collection))
    if len(info[2]) < _SETS_MAX:
        info[2][statement] = found
    return found


def _before(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
    try:
        if context is None or not _common.instrumentation_enabled():
            return
        engine = conn.engine
        info = _engine_info(engine)
        if _driver_traces(engine, cursor):
            return
        if not isinstance(statement, str):
            statement = str(statement)
        found = info[2].get(statement)
        if found is None:
            found = _span_set(info, statement)
        operation, collection, attributes = found
        # The kept dict is shared by every span of the statement: nothing here mutates it (the span copies it)
        span = _tracer.start_span(operation or attributes["db.system.name"], kind=SpanKind.CLIENT,
                                  attributes=attributes)
        context._otelkit = (span, time.perf_counter(), info, operation, collection)
    except Exception:
        pass


def _finish(context: Any, error: BaseException | None) -> None:
    started = getattr(context, "_otelkit", None)
    if started is None:
        return
    context._otelkit = None
    span, start, info, operation, collection = started
    try:
        elapsed = time.perf_counter() - start
        error_type = None if error is None else _common.error_type(error)
        key = (operation, collection, error_type)
        attributes = info[1].get(key)
        if attributes is None:
            attributes = {k: v for k, v in info[0].items()}
            if operation:
                attributes["db.operation.name"] = operation
            bounded = _sql.for_metric(collection)
            if bounded is not None:
                attributes["db.collection.name"] = bounded
            if error_type is not None:
                attributes["error.type"] = error_type
            if len(info[1]) < _SETS_MAX:
                info[1][key] = attributes
        _compat.record_point(_common.instruments().db_duration, elapsed, attributes)
        if error is not None and span.is_recording():
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, _scrub.scrub_db_message(f"{type(error).__name__}: {error}")))
    except Exception:
        pass
    finally:
        span.end()


def _after(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: bool) -> None:
    _finish(context, None)


def _error(exception_context: Any) -> None:
    context = getattr(exception_context, "execution_context", None)
    if context is not None:
        _finish(context, exception_context.original_exception)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("sqlalchemy", "SQLAlchemy"), MIN_VERSION, "1.4", "sqlalchemy", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when sqlalchemy is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "sqlalchemy", ("sqlalchemy", "SQLAlchemy"), MIN_VERSION, "1.4",
                                          "sqlalchemy",
                                          lambda _contrib, version: _instrument_now(ctx, version))


def _instrument_now(ctx: _common.Context, version: str) -> IntegrationStatus:
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped", f"not importable ({exc})", version=version)
    if not _state.get("listening"):
        event.listen(Engine, "before_cursor_execute", _before)
        event.listen(Engine, "after_cursor_execute", _after)
        event.listen(Engine, "handle_error", _error)
        _state["listening"] = True
    _db_pools.activate(NAME)
    return IntegrationStatus(NAME, "enabled", f"sqlalchemy {version} (the driver's span wins where otelkit traces "
                                              "the driver: psycopg2, psycopg, asyncpg)", version=version)


def uninstrument() -> None:
    _lazy.cancel(NAME)
    _db_pools.deactivate(NAME)
    if not _state.pop("listening", False):
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for name, fn in (("before_cursor_execute", _before), ("after_cursor_execute", _after), ("handle_error", _error)):
        if event.contains(Engine, name, fn):
            event.remove(Engine, name, fn)
