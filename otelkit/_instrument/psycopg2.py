"""psycopg2 / psycopg2-binary through ``opentelemetry-instrumentation-psycopg2``, plus what it lacks.

* Works with ``psycopg2-binary``: otelkit checks both distributions itself and calls upstream
  with ``skip_dep_check=True`` (older upstream releases skipped themselves for the binary wheel).
* ``db.statement`` / ``db.query.text`` is sanitized at the source: literals (``SELECT 'x'``,
  numbers, ``sql.Literal(...)`` rendered by ``Composed.as_string``, dollar-quoted and ``E''``
  strings) become ``?`` and comments are removed, before any span processor sees it.
* ``db.client.operation.duration`` is recorded by otelkit for every ``execute``/``executemany``/
  ``callproc`` whatever ``OTEL_SEMCONV_STABILITY_OPT_IN`` says (upstream records it only with
  ``database`` opt-in; its own recording is switched off so there is one stream).
* ``db.client.response.returned_rows``: ``cursor.rowcount`` per statement (rows returned by a
  SELECT, rows written by INSERT/UPDATE/DELETE), by the same attributes.
* Transaction outcomes: ``otelkit.db.client.transactions`` counts ``commit``/``rollback`` from
  ``conn.commit()``, ``conn.rollback()`` and ``with conn:`` exits (a commit of a failed
  transaction is a rollback in PostgreSQL and is counted as one). Autocommit connections and
  commits with no open transaction are not counted.
* De-duplication: ``Psycopg2Instrumentor.instrument_connection(conn)`` on top of the global
  instrumentation yields one span per statement.

Limits: upstream patches ``psycopg2.connect``; a connection opened before ``init()``, or through
a ``connect`` imported by name before ``init()``, is not traced (instrument it with
``Psycopg2Instrumentor.instrument_connection``). ``conn.cursor(cursor_factory=X)`` bypasses the
traced cursor factory (upstream limitation).
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from otelkit import _compat, _names, _scrub
from otelkit._instrument import _common, _sql
from otelkit._status import IntegrationStatus

NAME = "psycopg2"
SCOPE = "opentelemetry.instrumentation.psycopg2"
MIN_VERSION = (2, 7, 3)

_state: dict[str, Any] = {}
_connection_classes: dict[type, type] = {}


def _integration_attributes(tracer: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system.name": "postgresql"}
    database, address, port = _compat.dbapi_server(tracer)
    if database:
        attributes["db.namespace"] = str(database)
    if address:
        attributes["server.address"] = str(address)
    if port:
        try:
            attributes["server.port"] = int(port)
        except (TypeError, ValueError):
            pass
    return attributes


def _traced_execution(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Around upstream ``CursorTracer.traced_execution(cursor, query_method, *query_args)``: de-duplication only.

    The metrics are recorded by :func:`_record_metrics`, which replaces upstream's own recording
    inside its span (one layer does the work; this one only steps aside for a stacked one).
    """
    if len(args) >= 2 and _common.is_duplicate(SCOPE):
        # Per-connection cursor factory stacked on the global one: the outer layer already
        # has the span and records the metric.
        return args[1](*args[2:], **kwargs)
    return wrapped(*args, **kwargs)


def _record_metrics(self: Any, cursor: Any, operation_name: str, start_time: float,
                    error: BaseException | None, collection: str | None = None) -> None:
    """Replaces upstream's record-metrics hook of ``CursorTracer``: duration and rows, whatever the semconv opt-in.

    Called by upstream inside its span (so the histograms get exemplars), with the operation name it
    already computed. The attribute set is built once per connection and operation.
    """
    try:
        elapsed = time.perf_counter() - start_time
        attributes = _metric_attributes(self, operation_name, error, collection)
        inst = _common.instruments()
        _compat.record_point(inst.db_duration, elapsed, attributes)
        if error is None:
            rowcount = getattr(cursor, "rowcount", -1)
            if type(rowcount) is int and rowcount >= 0:
                _compat.record_point(inst.db_rows, rowcount, attributes)
    except Exception:  # telemetry never breaks the statement
        pass


def _metric_attributes(tracer: Any, operation_name: str, error: BaseException | None,
                       collection: str | None = None) -> dict[str, Any]:
    integration = _compat.dbapi_integration(tracer)
    cache: dict[tuple[str, str | None], dict[str, Any]] | None = getattr(
        integration, "_otelkit_metric_attributes", None)
    if cache is None:
        cache = {}
        try:
            integration._otelkit_metric_attributes = cache
        except Exception:
            pass
    key = (operation_name, collection)
    attributes = cache.get(key) if error is None else None
    if attributes is None:
        attributes = _integration_attributes(tracer)
        if operation_name:
            attributes["db.operation.name"] = operation_name.upper()[:64]
        bounded = _sql.for_metric(collection)
        if bounded is not None:
            attributes["db.collection.name"] = bounded
        if error is not None:
            attributes["error.type"] = _common.error_type(error)
        elif len(cache) < 256:  # bounded: operation names and tables are small sets
            cache[key] = attributes
    return attributes


# --- one layer: CursorTracer.traced_execution replaced -----------------------------------------------

_original_traced_execution: Any = None
_semconv_helpers: tuple[Any, Any, Any] | None = None
_operations: dict[str, str] = {}


def _span_base(tracer: Any) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """(connection attributes as upstream sets them, statement keys), once per connection."""
    integration = _compat.dbapi_integration(tracer)
    cached: tuple[dict[str, Any], tuple[str, ...]] | None = getattr(integration, "_otelkit_span_base", None)
    if cached is not None:
        return cached
    if _semconv_helpers is None:
        return None
    set_system, set_name, set_statement = _semconv_helpers
    mode = _compat.dbapi_db_mode(integration)
    base: dict[str, Any] = {}
    set_system(base, integration.database_system, mode)
    set_name(base, integration.database, mode)
    base.update(integration.span_attributes)
    probe: dict[str, Any] = {}
    set_statement(probe, "?", mode)
    made = (base, tuple(probe))
    integration._otelkit_span_base = made
    return made


def _operation_name(tracer: Any, cursor: Any, args: tuple[Any, ...]) -> str:
    query = args[0] if args else None
    if type(query) is str:
        name = _operations.get(query)
        if name is None:
            name = tracer.get_operation_name(cursor, args)
            if len(_operations) < 2048:  # bounded: statements are mostly program constants
                _operations[query] = name
        return name
    return str(tracer.get_operation_name(cursor, args))


def _fast_traced_execution(self: Any, cursor: Any, query_method: Any, *args: Any, **kwargs: Any) -> Any:
    """Replaces upstream ``CursorTracer.traced_execution``: its span, made in one layer with cached attributes.

    Same span name, kind, attributes and metrics as upstream (its own helpers build the connection
    attributes once per connection); the statement is otelkit's scrubbed text (cached by statement).
    sqlcommenter and parameter capture keep upstream's code.
    """
    if not _common.instrumentation_enabled():
        return query_method(*args, **kwargs)
    integration = _compat.dbapi_integration(self)
    base = None if (self._commenter_enabled or integration.capture_parameters) else _span_base(self)
    if base is None:
        return _original_traced_execution(self, cursor, query_method, *args, **kwargs)
    if _common.is_duplicate(SCOPE):  # a per-connection cursor factory stacked on the global one
        return query_method(*args, **kwargs)
    operation_name = _operation_name(self, cursor, args)
    attributes = dict(base[0])
    statement = self.get_statement(cursor, args)  # otelkit's scrubbing wrapper (cached by statement)
    for key in base[1]:
        attributes[key] = statement
    collection = _sql.collection_name(statement)  # from the scrubbed text, cached per statement
    if collection is not None:
        attributes["db.collection.name"] = collection
    span = _compat.dbapi_tracer(integration).start_span(operation_name or integration.database or integration.name,
                                          kind=SpanKind.CLIENT, attributes=attributes)
    token = otel_context.attach(trace_api.set_span_in_context(span))
    try:
        start = time.perf_counter()
        error: Exception | None = None
        try:
            return query_method(*args, **kwargs)
        except Exception as exc:
            error = exc
            if span.is_recording():  # as start_as_current_span does
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            _record_metrics(self, cursor, operation_name, start, error, collection)  # inside the span, as upstream
    finally:
        otel_context.detach(token)
        span.end()


def _take_over(tracer_class: Any) -> bool:
    """Replace upstream's ``traced_execution`` (one layer); False when its helpers are not there."""
    global _original_traced_execution, _semconv_helpers
    try:
        setters = _compat.dbapi_semconv_setters()
        # psycopg2's CursorTracer inherits traced_execution from dbapi's: take the first definition.
        original = next(vars(klass)["traced_execution"] for klass in tracer_class.__mro__
                        if "traced_execution" in vars(klass))
    except (ImportError, StopIteration):
        return False
    if getattr(original, "_self_otelkit", False):  # our two-layer wrapper from an older instrument()
        return False
    _state["own_traced_execution"] = "traced_execution" in vars(tracer_class)
    _semconv_helpers = setters
    if _original_traced_execution is None:
        _original_traced_execution = original
    tracer_class.traced_execution = _fast_traced_execution
    return True


def _traced_execution_two_layers(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """For an upstream release without ``_record_metrics``: time and record around its span."""
    if len(args) < 2 or not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    cursor, query_method, query_args = args[0], args[1], args[2:]
    if _common.is_duplicate(SCOPE):
        return query_method(*query_args, **kwargs)
    try:
        operation = instance.get_operation_name(cursor, query_args) or ""
    except Exception:
        operation = ""
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _record_metrics(instance, cursor, operation, start, error)


def _get_statement(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    statement = wrapped(*args, **kwargs)
    if isinstance(statement, str) and _scrub.is_enabled():
        return _scrub.scrub_sql(statement)
    return statement


# --- transactions ---------------------------------------------------------------------------------

def _connection_attributes(conn: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system.name": "postgresql"}
    info = getattr(conn, "info", None)
    try:
        if info is not None:
            if info.dbname:
                attributes["db.namespace"] = info.dbname
            if info.host:
                attributes["server.address"] = info.host
            if info.port:
                attributes["server.port"] = int(info.port)
    except Exception:
        pass
    return attributes


def _transaction_open(conn: Any) -> tuple[bool, bool]:
    """(a transaction is open, it is in the failed state) for a non-autocommit connection."""
    try:
        if conn.autocommit or conn.closed:
            return False, False
        from psycopg2 import extensions

        status = conn.info.transaction_status
        return (status in (extensions.TRANSACTION_STATUS_INTRANS, extensions.TRANSACTION_STATUS_INERROR),
                status == extensions.TRANSACTION_STATUS_INERROR)
    except Exception:
        return False, False


def _count(conn: Any, outcome: str, error: BaseException | None = None) -> None:
    attributes = _connection_attributes(conn)
    attributes[_names.ATTR_OUTCOME] = outcome
    if error is not None:
        attributes["error.type"] = _common.error_type(error)
    _common.record("transaction", 1, attributes)


def _traced_connection_class(base: type) -> type:
    cached = _connection_classes.get(base)
    if cached is not None:
        return cached

    class OtelkitConnection(base):  # type: ignore[misc]  # the connection class is chosen at run time
        """Counts transaction outcomes; everything else is the base connection's."""

        def commit(self) -> None:
            open_, failed = _transaction_open(self)
            try:
                super().commit()
            except BaseException as exc:
                if open_:
                    _count(self, "rollback" if failed else "commit", exc)
                raise
            if open_:
                _count(self, "rollback" if failed else "commit")

        def rollback(self) -> None:
            open_, _failed = _transaction_open(self)
            super().rollback()
            if open_:
                _count(self, "rollback")

        # No __exit__ override: psycopg2's `with conn:` exit calls self.commit()/self.rollback()
        # through the method table, so it is counted by the two methods above.

    OtelkitConnection.__name__ = base.__name__
    OtelkitConnection.__qualname__ = base.__qualname__
    _connection_classes[base] = OtelkitConnection
    return OtelkitConnection


def _extras_cursor(base: type) -> type | None:
    try:
        from psycopg2 import extras
    except ImportError:
        return None
    for connection_class, cursor_class in (
        (extras.RealDictConnection, extras.RealDictCursor),
        (extras.DictConnection, extras.DictCursor),
        (extras.NamedTupleConnection, extras.NamedTupleCursor),
    ):
        if issubclass(base, connection_class):
            return cursor_class
    return None


def _connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Around ``psycopg2.connect``: a connection class that counts transaction outcomes."""
    try:
        from psycopg2.extensions import connection as base_connection

        base = kwargs.get("connection_factory") or base_connection
        if isinstance(base, type) and issubclass(base, base_connection):
            kwargs["connection_factory"] = _traced_connection_class(base)
            if kwargs.get("cursor_factory") is None:
                # Upstream sets the connection's cursor_factory to its traced plain cursor, which
                # silently turns a RealDictConnection into a tuple-returning one; hand it the
                # cursor class the extras connection would have used as the base instead.
                default_cursor = _extras_cursor(base)
                if default_cursor is not None:
                    kwargs["cursor_factory"] = default_cursor
    except Exception:
        pass
    return wrapped(*args, **kwargs)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("psycopg2", "psycopg2-binary"), MIN_VERSION, "2.7.3.1", "psycopg2-binary",
                                "opentelemetry.instrumentation.psycopg2")


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("psycopg2", "psycopg2-binary"), MIN_VERSION, "2.7.3.1", "psycopg2-binary")
    if isinstance(found, IntegrationStatus):
        return found
    dist, version = found
    try:
        import opentelemetry.instrumentation.psycopg2 as contrib
        import psycopg2
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped", f"not importable ({exc})", version=version)

    instrumentor = contrib.Psycopg2Instrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its provider is kept)"
    else:
        # skip_dep_check: the dependency check knows only one of the two distributions in
        # some upstream releases; we checked both above.
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, skip_dep_check=True)
        _state["owned"] = True
    tracer_class = contrib.CursorTracer
    one_layer = _compat.has_record_metrics(tracer_class)
    if one_layer and "record_metrics" not in _state:
        _state["record_metrics"] = _compat.own_record_metrics(tracer_class)
        _compat.set_record_metrics(tracer_class, _record_metrics)
    _common.wrap(tracer_class, "get_statement", _get_statement)
    if not (one_layer and (vars(tracer_class).get("traced_execution") is _fast_traced_execution
                           or _take_over(tracer_class))):
        _common.wrap(tracer_class, "traced_execution", _traced_execution if one_layer else _traced_execution_two_layers)
    _common.wrap(psycopg2, "connect", _connect)
    return IntegrationStatus(NAME, "enabled", f"{dist} {version}{note}", version=version)


def uninstrument() -> None:
    try:
        import opentelemetry.instrumentation.psycopg2 as contrib
        import psycopg2
    except ImportError:
        _state.clear()
        return
    _common.unwrap(psycopg2, "connect")
    tracer_class = contrib.CursorTracer
    global _original_traced_execution
    if vars(tracer_class).get("traced_execution") is _fast_traced_execution and _original_traced_execution is not None:
        if _state.pop("own_traced_execution", True):
            tracer_class.traced_execution = _original_traced_execution  # type: ignore[method-assign]
        else:
            del tracer_class.traced_execution  # inherited again from dbapi's CursorTracer
        _original_traced_execution = None
    _common.unwrap(tracer_class, "traced_execution")
    _common.unwrap(tracer_class, "get_statement")
    if "record_metrics" in _state:
        _compat.set_record_metrics(tracer_class, _state.pop("record_metrics"))
    if _state.pop("owned", False):
        contrib.Psycopg2Instrumentor().uninstrument()
