"""psycopg 3 (``Connection`` and ``AsyncConnection``) through ``opentelemetry-instrumentation-psycopg``.

Upstream patches ``psycopg.connect``, ``Connection.connect`` and ``AsyncConnection.connect`` and gives
each new connection a traced cursor factory: one CLIENT span per ``execute``/``executemany``/
``callproc`` named by the operation (``SELECT``), with ``db.system.name``, ``db.namespace``,
``db.query.text``, ``server.address``/``server.port`` (stable database conventions: otelkit's default
opt-in). otelkit changes, on upstream's cursor tracer class (one layer, no extra wrapper per call):

* ``db.query.text`` is scrubbed at the source: literals become ``?``, comments are removed
  (``sql.Composed`` statements are rendered first), cached by statement.
* ``db.client.operation.duration`` and ``db.client.response.returned_rows`` are recorded by otelkit
  inside the span, whatever ``OTEL_SEMCONV_STABILITY_OPT_IN`` says, on an attribute set built once
  per connection and operation (upstream rebuilds it per statement).
* ``psycopg_pool`` pools (``ConnectionPool``, ``AsyncConnectionPool``) report
  ``db.client.connection.count`` (state ``idle``/``used``), ``db.client.connection.max`` and
  ``db.client.connection.pending_requests``, read from ``pool.get_stats()`` at each collection; a pool
  is reported from its first ``getconn``/``connection()`` after ``init()``.

Connections opened before ``init()`` (upstream only reaches connections made through its patched
``connect``) are traced too: ``Connection.cursor`` and ``AsyncConnection.cursor`` (which
``conn.execute`` also goes through) are replaced on the classes by a function that, the first time it
sees a connection whose cursor factory is not upstream's traced one, gives it upstream's traced cursor
factory built over the connection's own factory (``ClientCursor``, a ``row_factory``... are kept), with
the connection's attributes read once, as upstream's ``connect`` does. The connection is then moved to a
subclass of its class (same name) whose ``cursor`` is psycopg's own, so its later ``cursor()`` calls run no
otelkit code (a class whose own ``cursor`` override calls ``super()`` keeps a one-attribute test per call).
Server-side cursors (``conn.cursor(name=...)``) are not traced, as
upstream. A pool's connections opened before ``init()`` are adopted the same way at their first cursor.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from opentelemetry import trace as trace_api

from otelkit import _compat, _scrub
from otelkit._instrument import _common, _db_pools, _lazy, _sql
from otelkit._instrument.psycopg2 import _record_metrics as _otelkit_record_metrics
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "psycopg"
SCOPE = "opentelemetry.instrumentation.psycopg"
MIN_VERSION = (3, 1)
CONTRIB = "opentelemetry.instrumentation.psycopg"
PRE_INIT_NOTE = "connections opened before init() are traced from their first cursor"
_SEEN = "_otelkit_cursor_checked"  # set on a connection once its cursor factory has been checked/adopted

_state: dict[str, Any] = {}
_statements: dict[str, str] = {}  # statement -> scrubbed text, valid for _statements_owner's rules
_statements_owner: Any = None
_operations: dict[str, tuple[Any, str | None]] = {}  # statement -> (operation name, table), for _operations_owner
_operations_owner: Any = None
_CACHE_SIZE = 2048  # bounded: statements are mostly program constants


def _get_statement(self: Any, cursor: Any, args: Any) -> Any:
    """Replaces upstream's ``CursorTracer.get_statement``: the scrubbed text, cached by statement."""
    global _statements_owner, _statements
    query = args[0] if args else None
    if type(query) is str:
        owner = _scrub.cache_owner()
        if owner is _statements_owner:
            found = _statements.get(query)
            if found is not None:
                return found
        else:
            _statements_owner, _statements = owner, {}
        found = _scrub.scrub_sql(query) if _scrub.is_enabled() else query
        if len(_statements) < _CACHE_SIZE:
            _statements[query] = found
        return found
    statement = _state["get_statement"](self, cursor, args)  # sql.Composed, bytes: upstream renders it
    return _scrub.scrub_sql(statement) if isinstance(statement, str) and _scrub.is_enabled() else statement


# The table of the statement being executed (set with its operation name, read when its metrics are
# recorded): a context variable, so the async cursors' concurrent tasks on one thread keep theirs.
_collection: ContextVar[str | None] = ContextVar("otelkit_psycopg_collection", default=None)


def _record_metrics(self: Any, cursor: Any, operation_name: str, start_time: float,
                    error: BaseException | None) -> None:
    """Upstream's record-metrics hook (inside its span): ``db.collection.name`` on the span, then the metrics."""
    collection = _collection.get()
    if collection is not None:
        try:
            span = trace_api.get_current_span()
            if span.is_recording():
                span.set_attribute("db.collection.name", collection)
        except Exception:
            pass
    _otelkit_record_metrics(self, cursor, operation_name, start_time, error, collection)


def _get_operation_name(self: Any, cursor: Any, args: Any) -> Any:
    """Replaces upstream's ``CursorTracer.get_operation_name``: cached by statement text.

    Called once per statement before upstream's span starts: also finds the statement's table
    (``db.collection.name``, from the scrubbed text) for :func:`_record_metrics`. Both are cached together
    per statement, for the scrubbing rules in force (the table is read from the scrubbed text).
    """
    global _operations_owner, _operations
    query = args[0] if args else None
    if type(query) is not str:  # sql.Composed, bytes: upstream's, no table
        if _collection.get() is not None:
            _collection.set(None)
        return _state["get_operation_name"](self, cursor, args)
    owner = _scrub.cache_owner()
    if owner is not _operations_owner:
        _operations_owner, _operations = owner, {}
    entry = _operations.get(query)
    if entry is None:
        entry = (_state["get_operation_name"](self, cursor, args),
                 _sql.collection_name(_get_statement(self, cursor, args)))
        if len(_operations) < _CACHE_SIZE:
            _operations[query] = entry
    if _collection.get() is not entry[1]:  # a set (new context mapping and token) only when it changes
        _collection.set(entry[1])
    return entry[0]


def _adopt(conn: Any) -> None:
    """A connection not opened through upstream's ``connect`` (before ``init()``): upstream's traced cursors, once."""
    try:
        setattr(conn, _SEEN, True)
        factory = conn.cursor_factory
        if getattr(conn, "_is_instrumented_by_opentelemetry", False) or factory.__name__.startswith("Traced"):
            return  # upstream's connect (or the application's instrument_connection) gave it traced cursors
        import psycopg
        from opentelemetry.instrumentation import psycopg as contrib

        is_async = isinstance(conn, psycopg.AsyncConnection)
        integration: Any = contrib.DatabaseApiAsyncIntegration if is_async else contrib.DatabaseApiIntegration
        db_api = integration(contrib.__name__, contrib.PsycopgInstrumentor._DATABASE_SYSTEM,
                             connection_attributes=contrib.PsycopgInstrumentor._CONNECTION_ATTRIBUTES,
                             version=getattr(contrib, "__version__", ""), tracer_provider=_state.get("tracer_provider"),
                             connect_module=psycopg)
        db_api.get_connection_attributes(conn)  # what upstream's connect reads (db.namespace, server.*)
        make: Any = contrib._new_cursor_async_factory if is_async else contrib._new_cursor_factory
        traced = make(db_api=db_api, base_factory=factory)
        setattr(conn, contrib._OTEL_CURSOR_FACTORY_KEY, factory)  # so uninstrument_connection restores it
        conn.cursor_factory = traced
        conn._is_instrumented_by_opentelemetry = True
    except Exception:  # telemetry never breaks the application's cursor
        logger.debug("otelkit: adopting a psycopg connection opened before init() failed", exc_info=True)


# Per connection class, a subclass whose ``cursor`` is psycopg's own: a connection is moved to it (``__class__``
# assignment) once checked, so its later ``cursor()`` calls run no otelkit frame at all. Not an instance
# attribute holding a bound method: that would be a reference cycle (connection -> method -> connection) and a
# connection the application forgot to close would then wait for the cyclic collector to be closed.
_checked_classes: dict[type, type] = {}


def _checked_class(klass: type, original: Any) -> type | None:
    """The subclass of ``klass`` with psycopg's ``cursor`` back, same name (``repr``); None if it cannot be made."""
    found = _checked_classes.get(klass)
    if found is None:
        try:
            found = type(klass.__name__, (klass,), {"cursor": original, "__module__": klass.__module__,
                                                    "__qualname__": klass.__qualname__, "_otelkit_checked": True})
        except Exception:
            return None
        _checked_classes[klass] = found
    return found


def _cursor_method(original: Any) -> Any:
    """``Connection.cursor`` / ``AsyncConnection.cursor``: adopt the connection the first time, then call through.

    After the first call the connection is moved to a subclass whose ``cursor`` is ``original`` (see
    :func:`_checked_class`), unless its class overrides ``cursor`` (its override reaches this function through
    ``super()``, and keeps the one attribute test per call).
    """

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(self, _SEEN, False):
            _adopt(self)
            klass = type(self)
            if getattr(klass, "cursor", None) is cursor and not getattr(klass, "_otelkit_checked", False):
                checked = _checked_class(klass, original)
                if checked is not None:
                    try:
                        self.__class__ = checked
                    except Exception:  # an incompatible layout: the attribute test per call stays
                        pass
        return original(self, *args, **kwargs)

    cursor._otelkit_original = original  # type: ignore[attr-defined]
    cursor.__doc__, cursor.__name__, cursor.__qualname__ = original.__doc__, original.__name__, original.__qualname__
    return cursor


def _patch_cursors() -> bool:
    """Replace ``cursor`` on psycopg's connection classes (once); False when their layout is not the expected one."""
    import psycopg
    from opentelemetry.instrumentation import psycopg as contrib

    needed = ("DatabaseApiIntegration", "DatabaseApiAsyncIntegration", "_new_cursor_factory",
              "_new_cursor_async_factory", "_OTEL_CURSOR_FACTORY_KEY", "__version__")
    if not all(hasattr(contrib, name) for name in needed):
        return False
    for klass in (psycopg.Connection, psycopg.AsyncConnection):
        current = vars(klass).get("cursor")
        if current is None:
            return False
        if not hasattr(current, "_otelkit_original"):
            _checked_classes.clear()  # made for an earlier patch's original
            klass.cursor = _cursor_method(current)  # type: ignore[method-assign]
    _state["cursors"] = True
    return True


def _unpatch_cursors() -> None:
    import psycopg

    for klass in (psycopg.Connection, psycopg.AsyncConnection):
        current = vars(klass).get("cursor")
        if hasattr(current, "_otelkit_original"):
            klass.cursor = current._otelkit_original  # type: ignore[method-assign,union-attr]


def _pool_measures(pool: Any) -> tuple[str, int, int, int | None, int | None] | None:
    if getattr(pool, "closed", False):
        return None
    stats = pool.get_stats()
    size, available = int(stats.get("pool_size", 0)), int(stats.get("pool_available", 0))
    return (str(pool.name), available, max(size - available, 0), stats.get("pool_max"),
            stats.get("requests_waiting", 0))


def _register_pool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _db_pools.register(NAME, instance, _pool_measures)
    return wrapped(*args, **kwargs)


def _wrap_pools() -> None:
    try:
        import psycopg_pool
    except ImportError:
        return
    for klass in (psycopg_pool.ConnectionPool, psycopg_pool.AsyncConnectionPool):
        _common.wrap(klass, "getconn", _register_pool)
    _state["pools"] = True


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("psycopg",), MIN_VERSION, "3.1", "otelkit[psycopg]", CONTRIB)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Instrument now when psycopg is imported, else when the application imports it (see ``_lazy``)."""
    return _lazy.instrument_when_imported(NAME, "psycopg", ("psycopg",), MIN_VERSION, "3.1", "otelkit[psycopg]",
                                          lambda contrib, version: _instrument_now(ctx, contrib, version), CONTRIB)


def _instrument_now(ctx: _common.Context, contrib: Any, version: str) -> IntegrationStatus:
    instrumentor = contrib.PsycopgInstrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its provider is kept)"
    else:
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, skip_dep_check=True)
        _state["owned"] = True
        _state["tracer_provider"] = ctx.tracer_provider
    tracer_class = contrib.CursorTracer
    if _compat.has_record_metrics(tracer_class) and "record_metrics" not in _state:
        _state["record_metrics"] = _compat.own_record_metrics(tracer_class)
        _compat.set_record_metrics(tracer_class, _record_metrics)
    for method, replacement in (("get_statement", _get_statement), ("get_operation_name", _get_operation_name)):
        if method not in _state:  # plain functions on upstream's class: no wrapper layer per statement
            _state[method] = getattr(tracer_class, method)  # what the replacement calls through to
            _state[f"own_{method}"] = method in vars(tracer_class)  # else inherited from dbapi's tracer
            setattr(tracer_class, method, replacement)
    _lazy.when_imported(NAME, "psycopg_pool", lambda _module: _wrap_pools())  # when the app imports it
    _db_pools.activate(NAME)
    pre_init = PRE_INIT_NOTE
    if not _state.get("owned"):
        pre_init = "connections opened before init() keep the application's instrumentation"
    elif not _patch_cursors():
        pre_init = ("connections opened before init() are not traced (this contrib version's internals differ): "
                    "PsycopgInstrumentor.instrument_connection(conn)")
    return IntegrationStatus(NAME, "enabled", f"psycopg {version}{note}; {pre_init}", version=version)


def uninstrument() -> None:
    _lazy.cancel(NAME)  # psycopg's hook and psycopg_pool's
    if not _state:  # never instrumented: importing contrib here would import the library
        return
    _db_pools.deactivate(NAME)
    try:
        import opentelemetry.instrumentation.psycopg as contrib
    except ImportError:
        _state.clear()
        return
    if _state.pop("cursors", False):
        _unpatch_cursors()
    _state.pop("tracer_provider", None)
    if _state.pop("pools", False):
        import psycopg_pool

        for klass in (psycopg_pool.ConnectionPool, psycopg_pool.AsyncConnectionPool):
            _common.unwrap(klass, "getconn")
    tracer_class = contrib.CursorTracer
    for method in ("get_statement", "get_operation_name"):
        if method in _state:
            original = _state.pop(method)
            if _state.pop(f"own_{method}", True):
                setattr(tracer_class, method, original)
            else:
                delattr(tracer_class, method)
    if "record_metrics" in _state:
        _compat.set_record_metrics(tracer_class, _state.pop("record_metrics"))
    if _state.pop("owned", False):
        contrib.PsycopgInstrumentor().uninstrument()
