"""asyncpg: statement spans and ``db.client.operation.duration`` in one wrapper per call, plus pool usage.

otelkit's own integration (it replaces ``opentelemetry-instrumentation-asyncpg``, which records no
metric and puts the raw SQL, literals included, in ``db.statement``). ``Connection.execute``,
``executemany``, ``fetch``, ``fetchval``, ``fetchrow``, ``fetchmany`` and the same methods of
``PreparedStatement`` are wrapped on the classes, so connections and pools opened before ``init()``
are traced too. Each call is one CLIENT span named by the operation (``SELECT``) with
``db.system.name=postgresql``, ``db.namespace``, ``server.address``/``server.port``,
``db.operation.name`` and ``db.query.text`` with literals scrubbed (cached by statement), and one
``db.client.operation.duration`` point on an attribute set cached per connection and operation.
``Pool.execute``/``fetch``... run through a connection, so they are traced there, once.

Pools (``asyncpg.Pool``) report ``db.client.connection.count`` (``idle``/``used``) and
``db.client.connection.max`` from ``get_idle_size()``/``get_size()``/``get_max_size()``, from their
first ``acquire()`` after ``init()``. A pool's release housekeeping (``Connection.reset``) is not
traced.

Server-side cursors (``conn.cursor()`` and ``PreparedStatement.cursor()``): one span per round trip
to the server, named and scrubbed like the cursor's statement: the bind of the portal (with the first
``prefetch`` rows when iterated, ``await conn.cursor(...)`` otherwise) and each later batch
(``async for`` fetching the next ``prefetch`` rows, ``Cursor.fetch(n)``, ``Cursor.fetchrow()``). A row
served from the prefetched buffer costs nothing. ``Cursor.forward(n)`` (a ``MOVE``) is not traced.

``copy_to_table``, ``copy_records_to_table``, ``copy_from_table`` and ``copy_from_query``: one ``COPY``
span each, ``db.operation.name=COPY``, ``db.collection.name`` the table (``schema.table`` when a
schema is given; for ``copy_from_query`` the query's one table, if any) and ``db.query.text``
``COPY <table> FROM STDIN`` / ``COPY <table> TO STDOUT`` / ``COPY (<scrubbed query>) TO STDOUT``
(never the mogrified query: asyncpg inlines ``copy_from_query``'s arguments as literals). asyncpg's
own statements inside a copy (argument and column introspection) are not traced separately.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from otelkit import _compat, _scrub
from otelkit._instrument import _common, _db_pools, _lazy, _sql
from otelkit._status import IntegrationStatus

NAME = "asyncpg"
SCOPE = "otelkit.instrument.asyncpg"
MIN_VERSION = (0, 27)
_CONNECTION_METHODS = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
_PREPARED_METHODS = ("executemany", "fetch", "fetchval", "fetchrow", "fetchmany")
_CURSOR_METHODS = ("_bind_exec", "_bind", "_exec")  # asyncpg.cursor.BaseCursor: each one round trip
_COPY_METHODS = ("copy_to_table", "copy_records_to_table", "copy_from_table", "copy_from_query")

_state: dict[str, Any] = {}
_tracer = _common.FOLLOWING_TRACER_PROVIDER.get_tracer(SCOPE)
_statements: dict[str, tuple[str, str, str | None]] = {}  # query -> (operation, scrubbed text, collection)
# connection -> (span attributes without the statement, metric attribute sets by (operation, collection, error
# type), span attribute sets by query: (operation, collection, span attributes))
_ConnectionInfo = tuple[dict[str, Any], dict[Any, dict[str, Any]],
                        dict[str, tuple[str, str | None, dict[str, Any]]]]
_connections: weakref.WeakKeyDictionary[Any, _ConnectionInfo] = weakref.WeakKeyDictionary()
# The last connection seen: (a weak reference to it, its info); skips the weak-dictionary lookup per statement.
_last: tuple[Any, _ConnectionInfo | None] = (lambda: None, None)
_SETS_MAX = 256  # span/metric attribute sets kept per connection (statements and operations are mostly constants)


def is_on() -> bool:
    """Whether this integration traces asyncpg now (SQLAlchemy then leaves asyncpg statements to it)."""
    return bool(_state.get("wrapped"))


def _connection_info(conn: Any) -> _ConnectionInfo:
    global _last
    last = _last
    if conn is not None and last[0]() is conn and last[1] is not None:
        return last[1]
    info = _connections.get(conn)
    if info is None:
        attributes: dict[str, Any] = {"db.system.name": "postgresql"}
        database = getattr(getattr(conn, "_params", None), "database", None)
        if database:
            attributes["db.namespace"] = str(database)
        addr = getattr(conn, "_addr", None)
        if isinstance(addr, tuple) and len(addr) >= 2:
            attributes["server.address"] = str(addr[0])
            attributes["server.port"] = int(addr[1])
        elif isinstance(addr, str):
            attributes["server.address"] = addr
        info = (attributes, {}, {})
        try:
            _connections[conn] = info
        except TypeError:
            return info
    try:
        _last = (weakref.ref(conn), info)
    except TypeError:
        pass
    return info


def _span_set(info: _ConnectionInfo, statement: tuple[str, str, str | None],
              query: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """(operation, collection, span attributes) of a statement on the connection of ``info``; kept by ``query``."""
    operation, text, collection = statement
    found = (operation, collection, _sql.span_attributes(info[0], text, operation, collection))
    if query is not None and len(info[2]) < _SETS_MAX:
        info[2][query] = found
    return found


def _statement(query: Any) -> tuple[str, str, str | None]:
    if not isinstance(query, str):
        return "", "", None
    found = _statements.get(query)
    if found is None:
        words = query.lstrip().split(None, 1)
        text = _scrub.scrub_sql(query) if _scrub.is_enabled() else query
        # From the scrubbed shape: a literal ('... FROM x') must not name a table.
        shape = text if _scrub.is_enabled() else _scrub.scrub_sql(query)
        found = (words[0].upper()[:64] if words else "", text, _sql.collection_name(shape))
        if len(_statements) < 2048:  # bounded: statements are mostly program constants
            _statements[query] = found
    return found


_copies: dict[tuple[str, Any, Any], tuple[str, str, str | None]] = {}  # (method, table or query, schema) -> statement


def _copy_statement(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str, str | None]:
    """The statement of a ``copy_*`` call: operation ``COPY``, the text without data or literals, the table."""
    first = args[0] if args else kwargs.get("query" if method == "copy_from_query" else "table_name")
    schema = kwargs.get("schema_name")
    key = (method, first, schema)
    found = _copies.get(key)
    if found is None:
        if method == "copy_from_query":
            _operation, text, collection = _statement(first)
            found = ("COPY", f"COPY ({text}) TO STDOUT", collection)
        else:
            table = f"{schema}.{first}" if schema else str(first)
            direction = "TO STDOUT" if method == "copy_from_table" else "FROM STDIN"
            found = ("COPY", f"COPY {table} {direction}", table[:128])
        if len(_copies) < 2048:  # bounded: table names and queries are mostly program constants
            _copies[key] = found
    return found


async def _traced(conn: Any, query: Any, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                  statement: tuple[str, str, str | None] | None = None, quiet: bool = False) -> Any:
    """One CLIENT span + one duration point around ``wrapped``; ``quiet``: asyncpg's own statements inside untraced."""
    info = _connection_info(conn)
    if statement is not None:  # a copy: its own text, not kept by query
        operation, collection, attributes = _span_set(info, statement, None)
    else:
        found = info[2].get(query) if type(query) is str else None
        if found is None:
            found = _span_set(info, _statement(query), query if type(query) is str else None)
        operation, collection, attributes = found
    # The kept dict is shared by every span of the statement: nothing here mutates it (the span copies it)
    span = _tracer.start_span(operation or "postgresql", kind=SpanKind.CLIENT, attributes=attributes)
    token = otel_context.attach(trace_api.set_span_in_context(span))
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        if quiet:
            with _common.suppressed():
                return await wrapped(*args, **kwargs)
        return await wrapped(*args, **kwargs)
    except BaseException as exc:
        error = exc
        if span.is_recording() and isinstance(exc, Exception):
            span.set_attribute("error.type", _common.error_type(exc))
            span.set_status(Status(StatusCode.ERROR, _scrub.scrub_db_message(f"{type(exc).__name__}: {exc}")))
        raise
    finally:
        try:
            key = (operation, collection, None if error is None else _common.error_type(error))
            metric = info[1].get(key)
            if metric is None:
                metric = dict(info[0])
                if operation:
                    metric["db.operation.name"] = operation
                bounded = _sql.for_metric(collection)
                if bounded is not None:
                    metric["db.collection.name"] = bounded
                if error is not None:
                    metric["error.type"] = key[2]
                if len(info[1]) < _SETS_MAX:
                    info[1][key] = metric
            _compat.record_point(_common.instruments().db_duration, time.perf_counter() - start, metric)
        except Exception:
            pass
        otel_context.detach(token)
        span.end()


def _connection_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    query = args[0] if args else kwargs.get("query")
    return _traced(instance, query, wrapped, args, kwargs)


def _prepared_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    return _traced(getattr(instance, "_connection", None), instance.get_query(), wrapped, args, kwargs)


def _cursor_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A cursor's round trip (bind, bind + first batch, next batch): a span named by the cursor's statement."""
    if not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    return _traced(getattr(instance, "_connection", None), getattr(instance, "_query", None), wrapped, args, kwargs)


def _copy_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    try:
        statement = _copy_statement(wrapped.__name__, args, kwargs)
    except Exception:  # telemetry never breaks the call
        return wrapped(*args, **kwargs)
    return _traced(instance, None, wrapped, args, kwargs, statement, quiet=True)


async def _quiet(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    with _common.suppressed():
        return await wrapped(*args, **kwargs)


def _reset_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Connection.reset`` (a pool's release housekeeping: ``SELECT pg_advisory_unlock_all()`` ...): not traced."""
    return _quiet(wrapped, args, kwargs)


def _pool_measures(pool: Any) -> tuple[str, int, int, int | None, int | None] | None:
    closing = getattr(pool, "is_closing", None)  # asyncpg 0.28+; on 0.27 a closed pool counts 0 connections
    if closing is not None and closing():
        return None
    size, idle = int(pool.get_size()), int(pool.get_idle_size())
    return f"asyncpg-{id(pool):x}", idle, max(size - idle, 0), int(pool.get_max_size()), None


def _acquire_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _db_pools.register(NAME, instance, _pool_measures)  # a dict lookup once registered
    return wrapped(*args, **kwargs)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("asyncpg",), MIN_VERSION, "0.27", "asyncpg", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when asyncpg is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "asyncpg", ("asyncpg",), MIN_VERSION, "0.27", "asyncpg",
                                          lambda _contrib, version: _instrument_now(ctx, version))


def _instrument_now(ctx: _common.Context, version: str) -> IntegrationStatus:
    try:
        import asyncpg
        from asyncpg import cursor, prepared_stmt
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped", f"not importable ({exc})", version=version)
    for method in _CONNECTION_METHODS:
        if hasattr(asyncpg.Connection, method):
            _common.wrap(asyncpg.Connection, method, _connection_wrapper)
    for method in _COPY_METHODS:
        if hasattr(asyncpg.Connection, method):
            _common.wrap(asyncpg.Connection, method, _copy_wrapper)
    for method in _CURSOR_METHODS:
        if hasattr(cursor.BaseCursor, method):
            _common.wrap(cursor.BaseCursor, method, _cursor_wrapper)
    for method in _PREPARED_METHODS:
        if hasattr(prepared_stmt.PreparedStatement, method):
            _common.wrap(prepared_stmt.PreparedStatement, method, _prepared_wrapper)
    _common.wrap(asyncpg.Pool, "acquire", _acquire_wrapper)
    _common.wrap(asyncpg.Connection, "reset", _reset_wrapper)
    _state["wrapped"] = True
    _db_pools.activate(NAME)
    return IntegrationStatus(NAME, "enabled", f"asyncpg {version}", version=version)


def uninstrument() -> None:
    _lazy.cancel(NAME)
    _db_pools.deactivate(NAME)
    if not _state.pop("wrapped", False):
        return
    import asyncpg
    from asyncpg import cursor, prepared_stmt

    for method in (*_CONNECTION_METHODS, *_COPY_METHODS):
        _common.unwrap(asyncpg.Connection, method)
    for method in _CURSOR_METHODS:
        _common.unwrap(cursor.BaseCursor, method)
    for method in _PREPARED_METHODS:
        _common.unwrap(prepared_stmt.PreparedStatement, method)
    _common.unwrap(asyncpg.Pool, "acquire")
    _common.unwrap(asyncpg.Connection, "reset")
