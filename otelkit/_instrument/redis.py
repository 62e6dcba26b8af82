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
"""

from __future__ import annotations

import time
from typing import Any

from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

NAME = "redis"
SCOPE = "opentelemetry.instrumentation.redis"
MIN_VERSION = (4, 0)

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
    return _common.plan_library(NAME, ("redis",), MIN_VERSION, "4.0", "redis", "opentelemetry.instrumentation.redis")


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.supported_dist(NAME, ("redis",), MIN_VERSION, "4.0", "redis")
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
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets
    return IntegrationStatus(NAME, "enabled", f"redis {version}{note}", version=version)


def uninstrument() -> None:
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
