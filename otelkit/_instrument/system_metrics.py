"""Process and runtime metrics through ``opentelemetry-instrumentation-system-metrics``.

On by default (``OTELKIT_SYSTEM_METRICS``). otelkit asks for a subset: the process's CPU time and
utilization, memory (RSS and virtual), threads, open file descriptors, context switches and the
CPython GC counters, plus host CPU and memory utilization and network bytes (bandwidth to
external APIs). The other system-wide series (disks, packets, errors, connections, swap...) are
left out: they belong to a node exporter, not to each service.
``OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS`` (upstream's glob list, read into
``settings.system_metrics_excluded``) still removes names.

The instrumentation holds observable instruments of one meter provider, so a re-init with another
provider re-creates it; after a fork the child samples its own pid (upstream caches the parent's).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from otelkit import _compat, _fork
from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

if TYPE_CHECKING:
    from otelkit._config import Settings

NAME = "system_metrics"

CONFIG: dict[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.cpu.utilization": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "cpython.gc.collections": None,
    "cpython.gc.collected_objects": None,
    "cpython.gc.uncollectable_objects": None,
    "system.cpu.utilization": ["idle", "user", "system", "iowait"],
    "system.memory.utilization": ["used", "free", "cached"],
    "system.network.io": ["transmit", "receive"],
}
"""The metrics otelkit enables (name -> attribute values), a subset of upstream's default."""

_state: dict[str, Any] = {}


def _config(excluded: Sequence[str]) -> dict[str, list[str] | None]:
    """:data:`CONFIG` without the names matching ``excluded`` (``settings.system_metrics_excluded``)."""
    return {k: v for k, v in CONFIG.items() if not any(fnmatch.fnmatch(k, p) for p in excluded)}


def plan(settings: Settings) -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    status = _common.plan_library(NAME, ("psutil",), (0,), "any", "psutil",
                                  "opentelemetry.instrumentation.system_metrics")
    if status.state != "enabled":
        return status
    count = len(_config(settings.system_metrics_excluded))
    return IntegrationStatus(NAME, "enabled", f"{count} metrics would be recorded: process CPU/memory/"
                             "threads/fds, CPython GC, host CPU/memory/network", version=status.version)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    found = _common.dist_version("psutil")
    if found is None:
        return IntegrationStatus(NAME, "skipped", "psutil not installed")
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
    except ImportError as exc:
        return IntegrationStatus(NAME, "skipped",
                                 f"opentelemetry-instrumentation-system-metrics not importable ({exc})")
    provider = ctx.meter_provider if ctx.meter_provider is not None else _common.current_meter_provider()
    if _state.get("provider") is provider and _state.get("pid") == os.getpid():
        return IntegrationStatus(NAME, "enabled", _state["reason"], version=found[1])
    if _state:
        uninstrument()
    config = _config(ctx.settings.system_metrics_excluded)
    instrumentor = SystemMetricsInstrumentor(config=config)
    if instrumentor.is_instrumented_by_opentelemetry:
        return IntegrationStatus(NAME, "enabled", "already instrumented by the application", version=found[1])
    instrumentor.instrument(meter_provider=provider)
    reason = f"{len(config)} metrics: process CPU/memory/threads/fds, CPython GC, host CPU/memory/network"
    _state.update(provider=provider, pid=os.getpid(), reason=reason, instrumentor=instrumentor)
    _register_fork_hook()
    return IntegrationStatus(NAME, "enabled", reason, version=found[1])


_fork_hook_registered = False


def _after_fork_in_child() -> None:
    """Upstream caches ``psutil.Process(parent pid)``: a forked worker would report its parent."""
    instrumentor = _state.get("instrumentor")
    if instrumentor is None:
        return
    try:
        import psutil

        _compat.set_system_metrics_process(instrumentor, psutil.Process(os.getpid()))
        _state["pid"] = os.getpid()
    except Exception:
        pass


def _register_fork_hook() -> None:
    global _fork_hook_registered
    if not _fork_hook_registered:
        _fork.at_fork(after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def uninstrument() -> None:
    if not _state:
        return
    _state.clear()
    try:
        from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

        instrumentor = SystemMetricsInstrumentor()
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    except Exception:
        pass
