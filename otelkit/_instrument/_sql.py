"""``db.collection.name`` for SQL statements: the one table a simple statement works on, or None.

Derived from the scrubbed statement text (no literal reaches it) and cached per statement, so a
statement the program runs again costs one dict lookup. Rules:

* the table after ``FROM``, ``INTO``, ``UPDATE``, ``JOIN``, ``USING`` or ``TABLE``, as written (quotes
  removed, case kept, ``schema.table`` kept whole), as the semantic conventions ask ("as provided by
  the application, without case normalization");
* only when the statement names exactly one table: a join of two tables, ``FROM a, b``, a sub-query,
  ``UNION``/``INTERSECT``/``EXCEPT``, a ``WITH`` query, ``INSERT ... SELECT`` from another table,
  ``DELETE ... USING`` or a set-returning function (``FROM generate_series(...)``) give None, as does
  a statement without a table (``SELECT 1``).

Semantic conventions: ``db.collection.name`` is conditionally required on the span and on
``db.client.operation.duration`` "if readily available and if a database call is performed on a single
collection". The metric gets it too, bounded: once :data:`MAX_COLLECTIONS` distinct names have been
seen in this process (tables made per tenant or per day), further names go on spans only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_IDENT = r'(?:"[^"]{1,128}"|[A-Za-z_][\w$]*)'
_REFERENCE = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN|USING|TABLE)\s+({_IDENT}(?:\s*\.\s*{_IDENT}){{0,2}})", re.I)
# Statement shapes that involve more than one table (or none that can be named).
_AMBIGUOUS = re.compile(r"\(\s*SELECT\b|\b(?:UNION|INTERSECT|EXCEPT)\b|^\s*WITH\b", re.I)
# After the table (and an optional alias): a comma means a FROM list of several tables.
_LIST = re.compile(r"\s*(?:(?:AS\s+)?[A-Za-z_]\w*\s*)?,", re.I)
# Words the reference pattern matches that are not tables: ON CONFLICT DO UPDATE SET, FOR UPDATE OF/NOWAIT...
_NOT_TABLES = frozenset({"SET", "SELECT", "OF", "NOWAIT", "SKIP", "ONLY", "LATERAL", "VALUES", "DEFAULT"})

MAX_STATEMENTS = 2048
MAX_COLLECTIONS = 256

_cache: dict[str, str | None] = {}
_metric_names: set[str] = set()


def _parse(statement: str) -> str | None:
    if _AMBIGUOUS.search(statement):
        return None
    found: str | None = None
    for match in _REFERENCE.finditer(statement):
        name = match.group(2)
        if name.upper() in _NOT_TABLES:
            continue
        rest = statement[match.end():]
        stripped = rest.lstrip()
        if match.group(1).upper() in ("FROM", "JOIN", "USING") and stripped.startswith("("):
            return None  # a function (generate_series(...)) or a values list: no table to name
        if _LIST.match(rest):
            return None  # FROM a, b
        name = ".".join(part.strip().strip('"') for part in name.split("."))
        if found is not None and name != found:
            return None  # two tables
        found = name
    if found is not None and len(found) > 128:
        return None
    return found


def collection_name(statement: object) -> str | None:
    """The one table ``statement`` (scrubbed SQL text) works on, or None; cached per statement."""
    if type(statement) is not str:
        return None
    try:
        return _cache[statement]
    except KeyError:
        pass
    try:
        name = _parse(statement)
    except Exception:  # telemetry never breaks the statement
        name = None
    if len(_cache) < MAX_STATEMENTS:  # bounded: statements are mostly program constants
        _cache[statement] = name
    return name


def for_metric(name: str | None) -> str | None:
    """``name`` if it may go into metric attributes (bounded number of distinct values), else None."""
    if name is None or name in _metric_names:
        return name
    if len(_metric_names) < MAX_COLLECTIONS:
        _metric_names.add(name)
        return name
    return None


def span_attributes(base: Mapping[str, Any], text: str, operation: str, collection: str | None) -> dict[str, Any]:
    """A statement's client span attributes: the connection's ``base`` ones, the (scrubbed) query text, and the
    operation and collection when known. A new dict: callers keep it per statement and never change it after."""
    attributes = dict(base)
    attributes["db.query.text"] = text
    if operation:
        attributes["db.operation.name"] = operation
    if collection is not None:
        attributes["db.collection.name"] = collection
    return attributes
