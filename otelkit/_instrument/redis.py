"""redis-py (sync, asyncio, cluster) through ``opentelemetry-instrumentation-redis``, plus what it lacks.

Upstream patches the client *classes* (``Redis.execute_command``, ``Pipeline.execute``...), so
clients created before ``init()`` are traced too. otelkit adds, in a wrapper around the same
methods:

* ``db.client.operation.duration`` (upstream records no metric) by ``db.system.name=redis``,
  ``db.operation.name``, ``server.address``/``server.port``, ``db.namespace`` and ``error.type``;
* de-duplication: a per-client ``RedisInstrumentor.instrument_client(client)`` on top of the
  global instrumentation yields one span per command, not two;
* no values: upstream's ``db.statement`` is already ``SET ? ?``; its RediSearch helpers, which
  copy the ``FT.SEARCH`` query and every returned document field into attributes, are disabled.

One layer, not two: when otelkit owns the instrumentation (the application did not instrument
redis itself), ``Redis.execute_command`` -- the hot path -- is not wrapped twice. otelkit removes
upstream's wrapper there and starts the span itself with upstream's name and attributes (computed
by upstream's own helpers, once per connection pool and statement shape), and records the
histogram on an attribute set built once per pool and command. Pipelines, cluster and asyncio
clients keep upstream's span with otelkit's metric wrapper around it.

Inside ``pipeline.emit``/``pipeline.receive`` the command carrying the message is that messaging
operation: see :mod:`otelkit._pipeline.carrying` (no redis span or metric point of its own).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from otelkit import _compat
from otelkit._instrument import _common
from otelkit._pipeline import carrying as _carrying
from otelkit._status import IntegrationStatus

NAME = "redis"
SCOPE = "opentelemetry.instrumentation.redis"
MIN_VERSION = (5, 0)  # the extra's floor, tested (docs/install.md); redis.asyncio needs 4.2

_state: dict[str, Any] = {}


def _no_attributes(*_args: Any, **_kwargs: Any) -> None:
    """Replacement for upstream's RediSearch attribute helpers (they export values)."""


def _command_name(args: tuple[Any, ...]) -> str:
    if args and isinstance(args[0], (str, bytes)):
        name = args[0].decode("ascii", "replace") if isinstance(args[0], bytes) else args[0]
        return name.upper()[:64]
    return ""


def _attributes(instance: Any, operation: str, error: BaseException | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"db.system.name": "redis"}
    if operation:
        attributes["db.operation.name"] = operation
    pool = getattr(instance, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if isinstance(kwargs, dict):
        if "path" in kwargs:
            attributes["server.address"] = str(kwargs["path"])
        else:
            attributes["server.address"] = str(kwargs.get("host", "localhost"))
            attributes["server.port"] = int(kwargs.get("port", 6379) or 6379)
        attributes["db.namespace"] = str(kwargs.get("db") or 0)
    if error is not None:
        attributes["error.type"] = _common.error_type(error)
    return attributes


def _pipeline_name(instance: Any) -> str:
    return "MULTI" if getattr(instance, "transaction", False) else "PIPELINE"


def _sync_wrapper(pipeline: bool) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _common.instrumentation_enabled():
            return wrapped(*args, **kwargs)
        duplicate = _common.is_duplicate(SCOPE)
        operation = _pipeline_name(instance) if pipeline else _command_name(args)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            if duplicate:
                with _common.suppressed():
                    return wrapped(*args, **kwargs)
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(instance, operation, start, error)

    return wrapper


def _async_wrapper(pipeline: bool) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not _common.instrumentation_enabled():
            return await wrapped(*args, **kwargs)
        duplicate = _common.is_duplicate(SCOPE)
        operation = _pipeline_name(instance) if pipeline else _command_name(args)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            if duplicate:
                with _common.suppressed():
                    return await wrapped(*args, **kwargs)
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record(instance, operation, start, error)

    return wrapper


# --- the single-layer path for Redis.execute_command ------------------------------------------------

class _Fast:
    """Upstream's span name/attributes, computed by upstream's helpers and cached (see the module docstring)."""

    def __init__(self, contrib: Any, tracer: Any) -> None:
        (self.db_mode, self.http_mode, self.format_args, self.extract_conn, self.span_name,
         self.set_statement) = _compat.redis_span_helpers()
        self.tracer = tracer
        self.lock = threading.Lock()
        # pool -> (span attributes of the connection, {operation: metric attributes})
        self.pools: weakref.WeakKeyDictionary[Any, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = (
            weakref.WeakKeyDictionary())
        # (command, number of args) -> statement attributes ("GET ?"): the statement's shape
        self.statements: dict[tuple[Any, int], dict[str, Any]] = {}
        # (id of a pool's connection attributes, command) -> (those attributes, kept so the id is not reused;
        # the messaging span's attributes of a command carrying a message: otelkit.broker.command + server)
        self.carried: dict[tuple[int, str], tuple[dict[str, Any], dict[str, Any]]] = {}

    def carried_attributes(self, connection: dict[str, Any] | None, command: str) -> dict[str, Any]:
        """``{otelkit.broker.command: command, server.address/port...}``, built once per connection and command.

        Shared by every message: read-only for the callers (the span copies what it is given).
        """
        if connection is None:
            return {_carrying.ATTR_COMMAND: command}
        key = (id(connection), command)
        hit = self.carried.get(key)
        if hit is not None and hit[0] is connection:
            return hit[1]
        attributes = {_carrying.ATTR_COMMAND: command, **_carrying.server_attributes(connection)}
        if len(self.carried) >= 512:  # bounded: a few pools and commands in practice
            self.carried.clear()
        self.carried[key] = (connection, attributes)
        return attributes

    def pool(self, instance: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
        pool = getattr(instance, "connection_pool", None)
        try:
            return self.pools[pool]
        except KeyError:
            pass
        except TypeError:  # not weak-referenceable / hashable: no cache
            return None
        kwargs = getattr(pool, "connection_kwargs", None)
        if not isinstance(kwargs, dict):
            return None
        connection = dict(self.extract_conn(kwargs, self.db_mode, self.http_mode))
        made: tuple[dict[str, Any], dict[str, dict[str, Any]]] = (connection, {})
        with self.lock:
            self.pools[pool] = made
        return made

    def statement(self, args: tuple[Any, ...]) -> dict[str, Any]:
        key = (args[0] if args else None, len(args))
        try:
            return self.statements[key]
        except (KeyError, TypeError):
            pass
        attributes: dict[str, Any] = {}
        self.set_statement(attributes, self.format_args(list(args)), self.db_mode)
        attributes["db.redis.args_length"] = len(args)
        if len(self.statements) < 4096:  # bounded: a statement's shape is (command, argument count)
            try:
                self.statements[key] = attributes
            except TypeError:
                pass
        return attributes


_fast: _Fast | None = None


def _metric_attributes(instance: Any, pool: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None,
                       operation: str, error: BaseException | None) -> dict[str, Any]:
    if pool is None or error is not None:
        return _attributes(instance, operation, error)
    by_operation = pool[1]
    attributes = by_operation.get(operation)
    if attributes is None:
        attributes = _attributes(instance, operation, None)
        if len(by_operation) < 512:
            by_operation[operation] = attributes
    return attributes


def _fast_execute(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Redis.execute_command`` with upstream's span made here: one wrapper layer."""
    fast = _fast
    if fast is None or not _common.instrumentation_enabled():
        return wrapped(*args, **kwargs)
    if _carrying.active:  # a redis emit/receive ran in this process (see otelkit._pipeline.carrying)
        if _carrying._pending:
            _carrying.flush()  # a deferred pop of this thread is traced before the next command
        carrying = _carrying.kind(args)
        if carrying is not None:
            return _carried(wrapped, instance, args, kwargs, fast, carrying)
    operation = _command_name(args)
    pool = fast.pool(instance)
    if _common.is_duplicate(SCOPE):  # a per-client instrumentation's span is already open
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            _record_fast(instance, pool, operation, start, error)
    attributes = dict(pool[0]) if pool is not None else {}
    attributes.update(fast.statement(args))
    span = fast.tracer.start_span(fast.span_name(instance, args), kind=SpanKind.CLIENT, attributes=attributes)
    token = otel_context.attach(trace_api.set_span_in_context(span))
    start = time.perf_counter()
    error = None
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        error = exc
        if isinstance(exc, Exception) and span.is_recording():  # as start_as_current_span does
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        otel_context.detach(token)
        span.end()
        _record_fast(instance, pool, operation, start, error)


def _carried(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], fast: _Fast,
             carrying: str) -> Any:
    """The command carrying a message in an emit/receive flow: no redis span of its own."""
    pool = fast.pool(instance)
    command = _command_name(args)
    attributes = fast.carried_attributes(pool[0] if pool is not None else None, command)
    if carrying == "emit":  # inside the send span, which times it
        _carrying.fold_emit(attributes)
        return wrapped(*args, **kwargs)
    parent = otel_context.get_current()
    start_ns = time.time_ns()
    start = time.perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _span_after(fast, instance, args, pool, parent, start_ns, time.time_ns(), time.perf_counter() - start, exc)
        raise
    duration = time.perf_counter() - start
    end_ns = time.time_ns()
    if result is None or (isinstance(result, (list, tuple)) and not result):  # no message: traced as usual
        _span_after(fast, instance, args, pool, parent, start_ns, end_ns, duration, None)
        return result

    def emit() -> None:
        _span_after(fast, instance, args, pool, parent, start_ns, end_ns, duration, None)

    _carrying.defer(_carrying.Pending(command, result, duration, attributes, emit))
    return result


def _span_after(fast: _Fast, instance: Any, args: tuple[Any, ...], pool: Any, parent: Any, start_ns: int,
                end_ns: int, duration: float, error: BaseException | None) -> None:
    """The ordinary redis span and metric point of a command that already ran (real times and parent)."""
    try:
        attributes = dict(pool[0]) if pool is not None else {}
        attributes.update(fast.statement(args))
        span = fast.tracer.start_span(fast.span_name(instance, args), parent, kind=SpanKind.CLIENT,
                                      attributes=attributes, start_time=start_ns)
        if isinstance(error, Exception) and span.is_recording():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end(end_time=end_ns)
        _common.record("db", duration, _metric_attributes(instance, pool, _command_name(args), error))
    except Exception:  # telemetry never breaks the command
        pass


def _record_fast(instance: Any, pool: Any, operation: str, start: float, error: BaseException | None) -> None:
    try:
        _common.record("db", time.perf_counter() - start, _metric_attributes(instance, pool, operation, error))
    except Exception:  # telemetry never breaks the command
        pass


def _record(instance: Any, operation: str, start: float, error: BaseException | None) -> None:
    try:
        _common.record("db", time.perf_counter() - start, _attributes(instance, operation, error))
    except Exception:  # telemetry never breaks the command
        pass


def _targets() -> list[tuple[Any, str, Any]]:
    import redis
    import redis.client

    targets: list[tuple[Any, str, Any]] = [
        (redis.Redis, "execute_command", _sync_wrapper(False)),
        (redis.client.Pipeline, "execute", _sync_wrapper(True)),
        (redis.client.Pipeline, "immediate_execute_command", _sync_wrapper(False)),
    ]
    try:
        import redis.cluster

        targets += [
            (redis.cluster.RedisCluster, "execute_command", _sync_wrapper(False)),
            (redis.cluster.ClusterPipeline, "execute", _sync_wrapper(True)),
        ]
    except ImportError:
        pass
    try:
        import redis.asyncio
        import redis.asyncio.client

        targets += [
            (redis.asyncio.Redis, "execute_command", _async_wrapper(False)),
            (redis.asyncio.client.Pipeline, "execute", _async_wrapper(True)),
            (redis.asyncio.client.Pipeline, "immediate_execute_command", _async_wrapper(False)),
        ]
        import redis.asyncio.cluster

        targets += [
            (redis.asyncio.cluster.RedisCluster, "execute_command", _async_wrapper(False)),
            (redis.asyncio.cluster.ClusterPipeline, "execute", _async_wrapper(True)),
        ]
    except ImportError:
        pass
    return targets


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("redis",), MIN_VERSION, "5.0", "redis", "opentelemetry.instrumentation.redis")


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("redis",), MIN_VERSION, "5.0", "redis")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    try:
        import opentelemetry.instrumentation.redis as contrib
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped", f"opentelemetry-instrumentation-redis not importable ({exc})",
                                 version=version)

    instrumentor = contrib.RedisInstrumentor()
    note = ""
    if instrumentor.is_instrumented_by_opentelemetry:
        note = " (was already instrumented by the application; its provider is kept)"
    else:
        instrumentor.instrument(tracer_provider=ctx.tracer_provider, skip_dep_check=True)
        _state["owned"] = True
    for helper in ("_add_search_attributes", "_add_create_attributes"):
        if hasattr(contrib, helper) and helper not in _state:
            _state[helper] = getattr(contrib, helper)
            setattr(contrib, helper, _no_attributes)
    targets = _targets()
    if _state.get("owned") and _fast_path(contrib, ctx):
        import redis

        targets[0] = (redis.Redis, "execute_command", _fast_execute)
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets
    return IntegrationStatus(NAME, "enabled", f"redis {version}{note}", version=version)


def _fast_path(contrib: Any, ctx: _common.Context) -> bool:
    """Take ``Redis.execute_command`` over from upstream (one layer); False keeps both layers."""
    global _fast
    try:
        import redis
        from opentelemetry.instrumentation.utils import unwrap

        fast = _Fast(contrib, _compat.redis_tracer(contrib, ctx.tracer_provider))
        unwrap(redis.Redis, "execute_command")
    except Exception:  # an upstream release without these helpers: keep its wrapper
        return False
    _fast = fast
    return True


def uninstrument() -> None:
    global _fast
    _fast = None
    for owner, attribute, _wrapper in _state.pop("targets", []):
        _common.unwrap(owner, attribute)
    try:
        import opentelemetry.instrumentation.redis as contrib
    except ImportError:
        _state.clear()
        return
    for helper in ("_add_search_attributes", "_add_create_attributes"):
        if helper in _state:
            setattr(contrib, helper, _state.pop(helper))
    if _state.pop("owned", False):
        contrib.RedisInstrumentor().uninstrument()
