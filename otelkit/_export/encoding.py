"""OTLP/protobuf encoding of spans and log records straight to bytes: the export thread's main cost, made cheap.

The SDK's encoder (``opentelemetry-exporter-otlp-proto-common``) builds a protobuf object per
span, attribute and value and then serializes the tree; that costs 15-60 us per span on the
export thread, which competes with the application for the GIL and caps throughput at about
20 000 spans/s (``perf-baseline.md``). This module writes the same wire format directly, caching
what repeats (resource and scope blocks, attribute keys), for several times less.

The output is the same ``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest`` the SDK encoder
produces (field for field: ``tests/unit/test_export_wire.py`` parses both and compares). Anything this encoder does not
handle raises, and the caller falls back to the SDK encoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from otelkit._compat import BOUNDED_DEQUE, BOUNDED_DICT, span_fields
from otelkit._internal_log import logger

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_pack_d = struct.Struct("<d").pack

_SMALL = [bytes([i]) for i in range(128)]
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FLAGS_LOCAL = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE | _IS_REMOTE)
_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)
# SDK SpanKind values 0..4 (INTERNAL..CONSUMER) are the proto's 1..5; field 6, varint.
_KINDS = [b"\x30" + bytes([v + 1]) for v in range(5)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + payload


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (undecodable bytes from os.environ, filenames, argv) are not valid UTF-8: a
        # collector refuses the whole request. Replace them, altering only this value.
        return value.encode("utf-8", "replace")


def _str(tag: bytes, value: str) -> bytes:
    raw = _utf8(value)
    n = len(raw)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + raw


def _any_value(value: Any) -> bytes:
    """An encoded ``AnyValue`` message body."""
    if value is None:
        return b""
    cls = type(value)
    if cls is str:
        return _str(b"\x0a", value)
    if cls is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if cls is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise OverflowError(f"integer attribute out of int64 range: {value}")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if cls is float:
        return b"\x21" + _pack_d(value)
    if isinstance(value, str):
        return _str(b"\x0a", str(value))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return _any_value(int(value))
    if isinstance(value, float):
        return b"\x21" + _pack_d(float(value))
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, Sequence):
        return _ld(b"\x2a", b"".join([_ld(b"\x0a", _any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join([_ld(b"\x0a", _key_value(str(k), v)) for k, v in value.items()]))
    raise TypeError(f"cannot encode attribute value of type {cls.__name__}")


_KEYS: dict[str, bytes] = {}
_NAMES: dict[str, bytes] = {}
# (key, short str value) -> the KeyValue's length prefix and body, whatever the repeated field's tag: the
# messaging system, destination and operation of every message span are the same few pairs.
_PAIRS: dict[tuple[str, str], bytes] = {}
_PAIRS_MAX = 4096


def _key_value(key: str, value: Any) -> bytes:  # kvlist entries (rare); span attributes use _attributes
    encoded_key = _KEYS.get(key)
    if encoded_key is None:
        encoded_key = _str(b"\x0a", key)
        if len(_KEYS) < 4096:  # keys repeat; a bounded cache, never a leak
            _KEYS[key] = encoded_key
    return encoded_key + _ld(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Repeated ``KeyValue`` under ``tag``; an attribute that cannot be encoded is skipped, like upstream."""
    if attributes is None:
        return b""
    # BoundedAttributes wraps a dict: iterate that, not the generic Mapping protocol (several times faster); its
    # emptiness too (its __len__ is Python code).
    plain = getattr(attributes, BOUNDED_DICT, attributes)
    if not plain:
        return b""
    items = plain.items()
    out = []
    keys = _KEYS
    pairs = _PAIRS
    for key, value in items:
        if type(value) is str:  # most attributes: a repeating (key, value) pair is encoded once
            entry = pairs.get((key, value))
            if entry is not None:
                out.append(tag + entry)
                continue
        encoded_key = keys.get(key)
        if encoded_key is None:
            encoded_key = _str(b"\x0a", key)
            if len(keys) < 4096:  # keys repeat; a bounded cache, never a leak
                keys[key] = encoded_key
        cls = type(value)
        try:
            if cls is str:
                raw = _utf8(value)
                n = len(raw)
                if n < 126:  # AnyValue and the value field both fit a one-byte length
                    kv = encoded_key + b"\x12" + _SMALL[n + 2] + b"\x0a" + _SMALL[n] + raw
                    n = len(kv)
                    entry = (_SMALL[n] if n < 128 else _varint(n)) + kv
                    if len(pairs) >= _PAIRS_MAX:  # unique values (IDs) churn through: bounded, refilled by use
                        pairs.clear()
                    pairs[(key, value)] = entry
                    out.append(tag + entry)
                    continue
                kv = encoded_key + _ld(b"\x12", _ld(b"\x0a", raw))
            elif cls is int and 0 <= value < 0x4000:  # small non-negative ints (counts, ids, codes)
                body = b"\x18" + (_SMALL[value] if value < 128 else _varint(value))
                kv = encoded_key + b"\x12" + _SMALL[len(body)] + body
            elif cls is bool:
                kv = encoded_key + (b"\x12\x02\x10\x01" if value else b"\x12\x02\x10\x00")
            else:
                kv = encoded_key + _ld(b"\x12", _any_value(value))
        except (TypeError, OverflowError, ValueError) as exc:
            logger.debug("otelkit: attribute %r not exported: %s", key, exc)
            continue
        n = len(kv)
        out.append(tag + (_SMALL[n] if n < 128 else _varint(n)) + kv)
    return b"".join(out)


def _resource(resource: Any) -> bytes:
    return _attributes(b"\x0a", resource.attributes)


def _scope(scope: Any) -> bytes:
    if scope is None:
        return b""
    body = _str(b"\x0a", scope.name) if scope.name else b""
    if scope.version:
        body += _str(b"\x12", scope.version)
    body += _attributes(b"\x1a", getattr(scope, "attributes", None))
    return body


def _trace_state(state: Any) -> str:
    if not state:
        return ""
    return ",".join([f"{k}={v}" for k, v in state.items()])


def _span(span: Any) -> bytes:
    try:  # the SDK's ReadableSpan fields directly: its properties copy events/links and wrap attributes
        ctx, parent, name, kind, start, end, attributes, events, links, status = span_fields(span)
    except AttributeError:
        ctx = span.get_span_context()
        parent = span.parent
        name = span.name
        kind = span.kind
        start = span.start_time
        end = span.end_time
        attributes = span.attributes
        events = span.events
        links = span.links
        status = span.status
    parts = [b"\x0a\x10", ctx.trace_id.to_bytes(16, "big"), b"\x12\x08", ctx.span_id.to_bytes(8, "big")]
    state = ctx.trace_state
    if state:
        parts.append(_str(b"\x1a", _trace_state(state)))
    if parent is not None:
        parts.append(b"\x22\x08")
        parts.append(parent.span_id.to_bytes(8, "big"))
    encoded_name = _NAMES.get(name)
    if encoded_name is None:
        encoded_name = _str(b"\x2a", name)
        if len(_NAMES) < 4096:  # span names repeat; bounded like _KEYS
            _NAMES[name] = encoded_name
    parts.append(encoded_name)
    # Enum members' plain _value_ attribute: .value is a Python-level property (enum's descriptor).
    parts.append(_KINDS[kind._value_])
    parts.append(b"\x39" + _pack_q(start or 0))
    parts.append(b"\x41" + _pack_q(end or 0))
    # The SDK containers' own storage for the emptiness checks: their __len__ is a Python-level call.
    if getattr(attributes, BOUNDED_DICT, attributes):
        parts.append(_attributes(b"\x4a", attributes))
        dropped = getattr(attributes, "dropped", 0)
        if dropped:
            parts.append(b"\x50" + _varint(dropped))
    if getattr(events, BOUNDED_DEQUE, events):
        for event in events:
            body = b"\x09" + _pack_q(event.timestamp or 0) + _str(b"\x12", event.name)
            body += _attributes(b"\x1a", event.attributes)
            if event.dropped_attributes:
                body += b"\x20" + _varint(event.dropped_attributes)
            parts.append(_ld(b"\x5a", body))
        dropped = getattr(events, "dropped", 0)
        if dropped:
            parts.append(b"\x60" + _varint(dropped))
    if getattr(links, BOUNDED_DEQUE, links):
        for link in links:
            lctx = link.context
            body = b"\x0a\x10" + lctx.trace_id.to_bytes(16, "big") + b"\x12\x08" + lctx.span_id.to_bytes(8, "big")
            body += _attributes(b"\x22", link.attributes)
            if link.dropped_attributes:
                body += b"\x28" + _varint(link.dropped_attributes)
            body += b"\x35" + _pack_i(_HAS_IS_REMOTE | (_IS_REMOTE if lctx.is_remote else 0))
            parts.append(_ld(b"\x6a", body))
        dropped = getattr(links, "dropped", 0)
        if dropped:
            parts.append(b"\x70" + _varint(dropped))
    if status is not None:
        code = status.status_code._value_
        if code or status.description:
            body = _str(b"\x12", status.description) if status.description else b""
            if code:
                body += b"\x18" + _SMALL[code]
            parts.append(_ld(b"\x7a", body))
        else:
            parts.append(b"\x7a\x00")
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


_RESOURCE_CACHE: dict[int, tuple[Any, bytes]] = {}
_SCOPE_CACHE: dict[int, tuple[Any, bytes]] = {}


def _cached(cache: dict[int, tuple[Any, bytes]], obj: Any, encode: Any) -> bytes:
    # Keyed by identity with the object kept alive alongside, so a recycled id can never alias.
    hit = cache.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    encoded: bytes = encode(obj)
    if len(cache) > 256:
        cache.clear()
    cache[id(obj)] = (obj, encoded)
    return encoded


def _encode_by_resource_and_scope(items: Sequence[Any], encode_item: Callable[[Any], bytes]) -> bytes:
    """The body shared by the trace and logs export requests (fields 1/2/3 have the same meaning in both).

    ``items`` (spans or log records, each with ``.resource`` and ``.instrumentation_scope``) are grouped
    into Resource{Spans,Logs} and Scope{Spans,Logs} messages, each item encoded by ``encode_item``.
    """
    groups: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for item in items:
        resource = item.resource
        scope = item.instrumentation_scope
        by_scope = groups.get(id(resource))
        if by_scope is None:
            by_scope = groups[id(resource)] = (resource, {})
        entry = by_scope[1].get(id(scope))
        if entry is None:
            entry = by_scope[1][id(scope)] = (scope, [])
        entry[1].append(_ld(b"\x12", encode_item(item)))
    out = []
    for resource, scopes in groups.values():
        body = [_ld(b"\x0a", _cached(_RESOURCE_CACHE, resource, _resource))]
        for scope, encoded in scopes.values():
            scope_body = [_ld(b"\x0a", _cached(_SCOPE_CACHE, scope, _scope)), *encoded]
            if scope is not None and getattr(scope, "schema_url", None):
                scope_body.append(_str(b"\x1a", scope.schema_url))
            body.append(_ld(b"\x12", b"".join(scope_body)))
        if getattr(resource, "schema_url", None):
            body.append(_str(b"\x1a", resource.schema_url))
        out.append(_ld(b"\x0a", b"".join(body)))
    return b"".join(out)


def encode_spans(spans: Sequence[Any]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` for ``spans`` (SDK ``ReadableSpan`` objects)."""
    return _encode_by_resource_and_scope(spans, _span)


def _log_record(item: Any) -> bytes:
    record = item.log_record
    parts = []
    timestamp = record.timestamp
    if timestamp:
        parts.append(b"\x09" + _pack_q(timestamp))
    severity = getattr(record.severity_number, "value", None)
    if severity:
        parts.append(b"\x10" + _varint(severity))
    if record.severity_text:
        parts.append(_str(b"\x1a", record.severity_text))
    parts.append(_ld(b"\x2a", _any_value(record.body)))
    attributes = record.attributes
    if attributes:
        parts.append(_attributes(b"\x32", attributes))
    dropped = item.dropped_attributes
    if dropped:
        parts.append(b"\x38" + _varint(dropped))
    flags = int(record.trace_flags or 0)
    if flags:
        parts.append(b"\x45" + _pack_i(flags))
    if record.trace_id:
        parts.append(b"\x4a\x10" + record.trace_id.to_bytes(16, "big"))
    if record.span_id:
        parts.append(b"\x52\x08" + record.span_id.to_bytes(8, "big"))
    observed = record.observed_timestamp
    if observed:
        parts.append(b"\x59" + _pack_q(observed))
    event_name = getattr(record, "event_name", None)
    if event_name:
        parts.append(_str(b"\x62", event_name))
    return b"".join(parts)


def encode_logs(records: Sequence[Any]) -> bytes:
    """A serialized ``ExportLogsServiceRequest`` for ``records`` (SDK ``ReadableLogRecord`` objects)."""
    return _encode_by_resource_and_scope(records, _log_record)
