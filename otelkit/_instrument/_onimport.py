"""Run a function when a module is first imported: integrations that must not import their library at init().

``init()`` must not import libraries the application does not use (FastStream pulls pydantic,
anyio and fast-depends; aio-pika pulls aiormq...). An integration whose library is installed but
not yet imported registers :func:`when_imported`; the hook runs right after the module's own code,
in the importing thread, and never raises into the import (a failing hook is logged).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from otelkit._internal_log import logger

_lock = threading.RLock()
_hooks: dict[str, list[Callable[[ModuleType], None]]] = {}
_finder: _Finder | None = None
_busy = threading.local()


def _run(name: str, module: ModuleType) -> None:
    with _lock:
        hooks = _hooks.pop(name, [])
    for hook in hooks:
        try:
            hook(module)
        except Exception:
            logger.warning("otelkit: instrumenting %s on import failed (the application continues without it)",
                           name, exc_info=True)


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the hooks of the module."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: ModuleType) -> None:
        # The real loader must look like the module's loader (importlib.resources, pkgutil read it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _run(self._name, module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None,
                  ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _hooks or getattr(_busy, "name", None) == fullname:
            return None
        _busy.name = fullname
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            _busy.name = None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _Loader(spec.loader, fullname)
        return spec


def when_imported(name: str, hook: Callable[[ModuleType], None]) -> None:
    """Call ``hook(module)`` once ``name`` is imported: now if it already is, else right after its import."""
    global _finder
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    with _lock:
        _hooks.setdefault(name, []).append(hook)
        if _finder is None:
            _finder = _Finder()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def cancel(name: str) -> None:
    """Forget the hooks waiting for ``name`` (uninstrument before the import happened)."""
    with _lock:
        _hooks.pop(name, None)
        if not _hooks and _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def pending(name: str) -> bool:
    """Whether hooks still wait for ``name`` to be imported."""
    with _lock:
        return name in _hooks
