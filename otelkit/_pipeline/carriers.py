"""Carriers: where trace context travels inside a message, for every transport shape users have.

* a mapping of headers: ``dict[str, str]`` (NATS, pika ``properties.headers``,
  Celery), or Redis stream fields exactly as redis-py returns them
  (``dict[bytes, bytes]``), or anything in between;
* a Kafka-style header list ``list[tuple[str, bytes]]``;
* a JSON envelope (:func:`wrap` / :func:`unwrap`) for transports that carry
  only a payload: Redis lists, pub/sub, sets.

The OTel ``DefaultGetter`` silently finds nothing under bytes keys, raises on
bytes values and on lists; :data:`GETTER` and :data:`SETTER` handle all of these
and never raise: an undecodable, non-string or oversized value reads as absent.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence
from typing import Any

from opentelemetry.propagators.textmap import Getter, Setter

from otelkit._internal_log import logger
from otelkit._names import CORRELATION_HEADER, ENVELOPE_MARKER

MAX_VALUE_BYTES = 8192
"""Longest header value read (the W3C baggage limit); longer values read as absent."""

_STR_TYPES = (str,)
_BYTES_TYPES = (bytes, bytearray, memoryview)


def _decode(value: object) -> str | None:
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_BYTES else None
    if isinstance(value, _BYTES_TYPES):
        if len(value) > MAX_VALUE_BYTES:
            return None
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


# The UTF-8 form of the (few, constant) header names read per message, encoded once.
_bytes_keys: dict[str, bytes] = {}


def get_raw(carrier: Any, key: str) -> object:
    """The value under ``key`` (str or its UTF-8 bytes form) in a mapping or header list, undecoded."""
    if type(carrier) is dict:  # the common case, without the ABC isinstance check below
        if not carrier:
            return None
        value = carrier.get(key)
        if value is None:
            bkey = _bytes_keys.get(key)
            if bkey is None:
                bkey = key.encode()
                if len(_bytes_keys) < 256:
                    _bytes_keys[key] = bkey
            value = carrier.get(bkey)
        return value
    if isinstance(carrier, Mapping):
        value = carrier.get(key)
        if value is None:
            value = carrier.get(key.encode())
        return value
    if isinstance(carrier, Iterable) and not isinstance(carrier, (str, *_BYTES_TYPES)):
        bkey = key.encode()
        for item in carrier:
            if isinstance(item, tuple) and len(item) == 2 and (item[0] == key or item[0] == bkey):
                return item[1]
    return None


def get_str(carrier: Any, key: str) -> str | None:
    """The value under ``key`` decoded to str, or None when absent, binary, non-string or oversized."""
    try:
        return _decode(get_raw(carrier, key))
    except Exception:  # a foreign carrier type: telemetry never raises into the consumer
        return None


def _keys(carrier: Any) -> list[str]:
    keys: list[str] = []
    try:
        items: Iterable[Any] = carrier.keys() if isinstance(carrier, Mapping) else (
            item[0] for item in carrier if isinstance(item, tuple) and len(item) == 2)
        for key in items:
            text = _decode(key)
            if text is not None:
                keys.append(text)
    except Exception:
        return []
    return keys


class BytesSafeGetter(Getter[Any]):
    """Reads str or bytes keys and values from mappings and ``(key, value)`` lists; never raises."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = get_str(carrier, key)
        return None if value is None else [value]

    def keys(self, carrier: Any) -> list[str]:
        return _keys(carrier)


class BytesSafeSetter(Setter[Any]):
    """Writes str values into mappings, ``(str, bytes)`` tuples into header lists; replaces existing keys."""

    def set(self, carrier: Any, key: str, value: str) -> None:
        set_header(carrier, key, value)


def set_header(carrier: Any, key: str, value: str) -> None:
    """Set ``key`` in a mutable mapping (str value) or a header list (bytes value), replacing old entries.

    A mapping that already holds the bytes form of ``key`` (fields read back from
    redis-py and re-sent) keeps one entry, not two.
    """
    if type(carrier) is dict or isinstance(carrier, MutableMapping):  # a dict without the ABC check
        if carrier:  # cheap: only a non-empty mapping can hold the bytes twin
            bkey = _bytes_keys.get(key) or key.encode()
            if bkey in carrier:
                del carrier[bkey]
        carrier[key] = value
    elif isinstance(carrier, MutableSequence):
        bkey = key.encode()
        for index in range(len(carrier) - 1, -1, -1):
            item = carrier[index]
            if isinstance(item, tuple) and len(item) == 2 and (item[0] == key or item[0] == bkey):
                del carrier[index]
        carrier.append((key, value.encode()))
    else:
        raise TypeError(
            f"otelkit.pipeline cannot write headers into a {type(carrier).__name__}; "
            "pass a dict, a list of (key, bytes) tuples, or no carrier and send msg.wrap(payload)")


GETTER = BytesSafeGetter()
SETTER = BytesSafeSetter()


# --- JSON envelope --------------------------------------------------------------------------------

_PREFIX = '{"' + ENVELOPE_MARKER + '":'
_PREFIX_SPACED = _PREFIX + " "
_BPREFIXES = (_PREFIX.encode(), _PREFIX_SPACED.encode())


def _text_headers(headers: Any) -> dict[str, str]:
    """The str->str entries of a mapping or ``(key, value)`` list, bytes decoded as UTF-8.

    Entries that cannot travel in a JSON envelope as text (undecodable bytes, a
    non-string value, a non-tuple list item) are left out; otelkit's own headers
    are always str (mapping) or UTF-8 bytes (header list), so the context survives.
    """
    items: Iterable[Any]
    if isinstance(headers, Mapping):
        items = headers.items()
    elif isinstance(headers, Iterable) and not isinstance(headers, (str, *_BYTES_TYPES)):
        items = headers
    else:
        return {}
    out: dict[str, str] = {}
    skipped = 0
    for item in items:
        if type(item) is not tuple or len(item) != 2:
            skipped += 1
            continue
        key, value = item
        if type(key) is not str:
            key = _decode(key)
        if type(value) is not str:
            value = _decode(value)
        if key is None or value is None:
            skipped += 1
            continue
        out[key] = value
    if skipped:
        logger.debug("otelkit: %d carrier entries are not text and were left out of the envelope", skipped)
    return out


def wrap(payload: Any, headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None) -> str:
    """A JSON envelope holding ``headers`` and ``payload``, for transports without headers.

    ``headers`` is a mapping or a ``(key, value)`` list; only entries that are text
    (str, or UTF-8 bytes) go into the envelope. ``unwrap`` gives back the payload
    with its original type: ``str`` stays ``str``, ``bytes`` stays ``bytes``
    (base64 when not UTF-8), any other value is stored as JSON and comes back decoded.
    """
    if isinstance(payload, str):
        body: dict[str, Any] = {"payload": payload}
    elif isinstance(payload, _BYTES_TYPES):
        raw = bytes(payload)
        try:
            body = {"payload": raw.decode("utf-8"), "encoding": "bytes"}
        except UnicodeDecodeError:
            body = {"payload": base64.b64encode(raw).decode("ascii"), "encoding": "base64"}
    else:
        body = {"payload": payload, "encoding": "json"}
    envelope = {ENVELOPE_MARKER: 1, "headers": _text_headers(headers), **body}
    try:
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        # Not a telemetry failure: this is the application's own payload, which otelkit never alters or drops.
        raise TypeError(f"otelkit.pipeline.wrap: the payload ({type(payload).__name__}) cannot be put in a JSON "
                        f"envelope ({exc}); pass str, bytes, or JSON-serialisable data (dict, list, numbers...)"
                        ) from None


def is_envelope(raw: object) -> bool:
    """Cheap prefix test: is ``raw`` (str or bytes) an otelkit envelope? Never parses JSON."""
    if isinstance(raw, str):
        return raw.startswith((_PREFIX, _PREFIX_SPACED))
    if isinstance(raw, _BYTES_TYPES):
        head = bytes(raw[:40])
        return head.startswith(_BPREFIXES)
    return False


def unwrap(raw: Any) -> tuple[Any, dict[str, Any]]:
    """Split an envelope into ``(payload, headers)``.

    Tolerant of legacy producers: anything that is not an otelkit envelope
    (plain JSON, text, bytes, a malformed envelope) comes back unchanged with
    empty headers, so an old consumer code path keeps working and the message
    starts a fresh trace.
    """
    if not is_envelope(raw):
        if isinstance(raw, _BYTES_TYPES) and bytes(raw[:8]) == FASTSTREAM_FRAME:
            return _faststream_frame(bytes(raw))
        return raw, {}
    try:
        envelope = json.loads(bytes(raw) if isinstance(raw, (bytearray, memoryview)) else raw)
        headers = envelope.get("headers")
        payload = envelope["payload"]
        encoding = envelope.get("encoding")
        if encoding == "bytes":
            payload = payload.encode("utf-8")
        elif encoding == "base64":
            payload = base64.b64decode(payload)
        return payload, headers if isinstance(headers, dict) else {}
    except Exception as exc:  # malformed envelope: hand back the raw message, never raise
        logger.debug("otelkit: malformed pipeline envelope (%s); treating it as a legacy payload", type(exc).__name__)
        return raw, {}


# --- FastStream's Redis frame ---------------------------------------------------------------------

FASTSTREAM_FRAME = b"\x89BIN\r\n\x1a\n"
"""First bytes of FastStream's binary Redis message (``BinaryMessageFormatV1``): headers live inside it."""


def _faststream_frame(raw: bytes) -> tuple[Any, dict[str, Any]]:
    """``(payload bytes, headers)`` of a FastStream binary frame; the raw bytes and no headers when malformed.

    Layout (version 1): magic (8), version (u16), headers offset (u32), data offset (u32), header count
    (u16), then per header a u16-length key and value, then the payload. Read so that a plain otelkit
    consumer (``pipeline.receive(queue, raw)``) continues the trace of a FastStream producer.
    """
    try:
        version, headers_at, data_at = int.from_bytes(raw[8:10], "big"), int.from_bytes(raw[10:14], "big"), \
            int.from_bytes(raw[14:18], "big")
        if version != 1 or not 18 <= headers_at <= data_at <= len(raw):
            return raw, {}
        count = int.from_bytes(raw[headers_at:headers_at + 2], "big")
        offset = headers_at + 2
        headers: dict[str, Any] = {}
        for _ in range(count):
            parts = []
            for _part in range(2):
                size = int.from_bytes(raw[offset:offset + 2], "big")
                parts.append(raw[offset + 2:offset + 2 + size].decode("utf-8"))
                offset += 2 + size
            if offset > data_at:
                return raw, {}
            headers[parts[0]] = parts[1]
        if CORRELATION_HEADER not in headers and "correlation_id" in headers:
            headers[CORRELATION_HEADER] = headers["correlation_id"]  # FastStream's ID, adopted (validated later)
        return raw[data_at:], headers
    except Exception as exc:  # a malformed frame: a legacy payload, never an error
        logger.debug("otelkit: malformed FastStream frame (%s)", type(exc).__name__)
        return raw, {}
