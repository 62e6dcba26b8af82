"""Connection-pool usage read from the pools themselves: ``db.client.connection.count`` and friends.

Pools are registered when otelkit first sees them (psycopg_pool at ``getconn``, SQLAlchemy at a pool
event, asyncpg at ``acquire``), so a pool created before ``init()`` is reported from its first use
after it. The values are asked of the pool at each metric collection (observable instruments), never
counted from events, so connections opened before ``init()`` are counted right and a missed event
cannot make the numbers drift. Attributes follow the database semantic conventions:
``db.client.connection.pool.name`` and ``db.client.connection.state`` (``idle``/``used``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otelkit._instrument import _common
from otelkit._internal_log import logger

# Measures of one pool: (pool name, idle, used, max or None, pending requests or None); None: the pool is gone/closed.
Reader = Callable[[Any], "tuple[str, int, int, int | None, int | None] | None"]

_lock = threading.Lock()
_pools: dict[str, weakref.WeakKeyDictionary[Any, Reader]] = {}
_strong: dict[str, dict[int, tuple[Any, Reader]]] = {}  # pools without weak references (asyncpg), until closed
_meters: weakref.WeakSet[Any] = weakref.WeakSet()  # providers that have the instruments
_active: set[str] = set()


def register(kind: str, pool: Any, reader: Reader) -> None:
    """Report ``pool`` (of integration ``kind``) from now on; cheap when it is already registered."""
    pools = _pools.get(kind)
    if pools is None:
        with _lock:
            pools = _pools.setdefault(kind, weakref.WeakKeyDictionary())
    try:
        if pool not in pools:
            pools[pool] = reader
    except TypeError:  # no weak references (__slots__): held until its reader says it is closed
        strong = _strong.setdefault(kind, {})
        if id(pool) not in strong:
            strong[id(pool)] = (pool, reader)


def activate(kind: str) -> None:
    """Report the pools of ``kind`` (its integration is enabled); create the instruments once per provider."""
    _active.add(kind)
    provider = _common.current_meter_provider()
    with _lock:
        if provider in _meters:
            return
        _meters.add(provider)
    from otelkit._version import __version__

    meter = provider.get_meter(_common.INSTRUMENTATION_SCOPE, __version__)
    meter.create_observable_up_down_counter(
        "db.client.connection.count", callbacks=[_count], unit="{connection}",
        description="The number of connections that are currently in the state described by the state attribute.")
    meter.create_observable_up_down_counter(
        "db.client.connection.max", callbacks=[_max], unit="{connection}",
        description="The maximum number of open connections allowed.")
    meter.create_observable_up_down_counter(
        "db.client.connection.pending_requests", callbacks=[_pending], unit="{request}",
        description="The number of current pending requests for an open connection.")


def deactivate(kind: str) -> None:
    _active.discard(kind)


def _measures() -> Iterator[tuple[str, int, int, int | None, int | None]]:
    for kind in list(_active):
        strong = _strong.get(kind, {})
        pairs = [*_pools.get(kind, {}).items(), *strong.values()]
        for pool, reader in pairs:
            try:
                measured = reader(pool)
            except Exception:
                logger.debug("otelkit: reading %s pool usage failed", kind, exc_info=True)
                continue
            if measured is not None:
                yield measured
            else:
                strong.pop(id(pool), None)  # closed: let it go


def _count(_options: CallbackOptions) -> Iterable[Observation]:
    out = []
    for name, idle, used, _max_size, _pending in _measures():
        out.append(Observation(idle, {"db.client.connection.pool.name": name, "db.client.connection.state": "idle"}))
        out.append(Observation(used, {"db.client.connection.pool.name": name, "db.client.connection.state": "used"}))
    return out


def _max(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(m[3], {"db.client.connection.pool.name": m[0]}) for m in _measures() if m[3] is not None]


def _pending(_options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(m[4], {"db.client.connection.pool.name": m[0]}) for m in _measures() if m[4] is not None]
