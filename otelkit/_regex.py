"""Regular expressions compiled at their first use instead of at import.

Compiling otelkit's patterns at import cost ~50M instructions of every ``init()`` (most of it the free-text
secret rules, which only the export thread uses). :func:`deferred` stands in for a module-level pattern;
its first use compiles the pattern and puts it in its place in the module's namespace, so later uses are
plain global lookups of a compiled ``re.Pattern``, with no indirection on hot paths.
"""

from __future__ import annotations

import re
from typing import Any, cast


class _Deferred:
    __slots__ = ("_flags", "_name", "_namespace", "_source")

    def __init__(self, namespace: dict[str, Any], name: str, source: str, flags: int) -> None:
        self._namespace = namespace
        self._name = name
        self._source = source
        self._flags = flags

    def __getattr__(self, attribute: str) -> Any:
        # Two threads may both compile: the same pattern either way, and re caches it.
        compiled = re.compile(self._source, self._flags)
        self._namespace[self._name] = compiled
        return getattr(compiled, attribute)

    def __repr__(self) -> str:
        return f"deferred({self._source!r}, {self._flags!r})"


def deferred(namespace: dict[str, Any], name: str, source: str, flags: int = 0) -> re.Pattern[str]:
    """A pattern for the global ``name`` of ``namespace`` (a module's ``globals()``), compiled when first used.

    Only for patterns used through the module global (``NAME.search(...)``): a reference taken before the
    first use (``match = NAME.match`` at import) compiles it then.
    """
    if name in namespace and not isinstance(namespace[name], _Deferred):
        raise ValueError(f"otelkit._regex.deferred: {name!r} is already bound in its module")
    return cast("re.Pattern[str]", _Deferred(namespace, name, source, flags))
