"""Local Sentry endpoints for tests: an envelope-accepting HTTP server and a hung one.

``SentrySink`` is a real HTTP server on a free 127.0.0.1 port speaking the
part of Sentry's ingest protocol the SDK uses: ``POST /api/<project>/envelope/``
with an (optionally gzip-compressed) envelope body. It parses envelopes
(``header\\n(item_header\\npayload\\n)*``) and keeps the raw bytes so tests can
grep for secrets. It also records OTLP/HTTP requests to Sentry's OTLP endpoints
(``POST /api/<project>/integration/otlp/v1/{traces,logs}``): path, headers and
the protobuf body (:class:`OtlpPost`), answered with ``otlp_status``.
``HungEndpoint`` accepts TCP connections and never answers. :func:`header_recorder` is the upstream an
instrumented client calls: it keeps the lower-cased headers of each request it answers.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Envelope:
    """One received envelope: header, items as (item header, parsed payload), raw decompressed bytes."""

    header: dict[str, Any]
    items: list[tuple[dict[str, Any], Any]]
    raw: bytes
    request_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class OtlpPost:
    """One OTLP/HTTP request to Sentry's OTLP endpoint: path, lower-cased headers, decompressed protobuf body."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def signal(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def spans(self) -> list[Any]:
        """The spans of a traces request (protobuf ``Span`` messages)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest.FromString(self.body)
        return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]

    def log_records(self) -> list[Any]:
        """The records of a logs request (protobuf ``LogRecord`` messages)."""
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        request = ExportLogsServiceRequest.FromString(self.body)
        return [rec for rl in request.resource_logs for sl in rl.scope_logs for rec in sl.log_records]


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], Any]]]:
    """Parse the Sentry envelope format (https://develop.sentry.dev/sdk/envelopes/)."""
    first, _, rest = body.partition(b"\n")
    header = json.loads(first) if first.strip() else {}
    items: list[tuple[dict[str, Any], Any]] = []
    while rest.strip():
        line, _, rest = rest.partition(b"\n")
        if not line.strip():
            continue
        item_header = json.loads(line)
        length = item_header.get("length")
        if length is not None:
            payload, rest = rest[:length], rest[length:]
            if rest.startswith(b"\n"):
                rest = rest[1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            parsed: Any = json.loads(payload)
        except ValueError:
            parsed = payload
        items.append((item_header, parsed))
    return header, items


class SentrySink:
    """A local Sentry ingest endpoint; use as a context manager."""

    def __init__(self, project_id: int = 1, public_key: str = "publickey", otlp_status: int = 200) -> None:
        self.envelopes: list[Envelope] = []
        self.otlp_posts: list[OtlpPost] = []
        self.otlp_status = otlp_status
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                if "/integration/otlp/" in self.path:
                    self._otlp(body)
                    return
                header, items = parse_envelope(body)
                envelope = Envelope(header, items, body, {k.lower(): v for k, v in self.headers.items()})
                with sink._cond:
                    sink.envelopes.append(envelope)
                    sink._cond.notify_all()
                reply = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def _otlp(self, body: bytes) -> None:
                post = OtlpPost(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with sink._cond:
                    sink.otlp_posts.append(post)
                    sink._cond.notify_all()
                # An empty Export*ServiceResponse (no partial success) is zero bytes of protobuf.
                self.send_response(sink.otlp_status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.project_id = project_id
        self.dsn = f"http://{public_key}@127.0.0.1:{self.port}/{project_id}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sentry-sink", daemon=True)

    def __enter__(self) -> SentrySink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def events(self) -> list[dict[str, Any]]:
        """Every error event received so far (item type ``event``)."""
        with self._cond:
            return [payload for env in self.envelopes for head, payload in env.items if head.get("type") == "event"]

    def posts(self, signal: str | None = None) -> list[OtlpPost]:
        """OTLP requests received so far (of ``signal`` only, when given)."""
        with self._cond:
            return [p for p in self.otlp_posts if signal is None or p.signal == signal]

    def otlp_spans(self) -> list[Any]:
        """Every span received on the OTLP traces endpoint so far."""
        return [span for post in self.posts("traces") for span in post.spans()]

    def transactions(self) -> list[Any]:
        """Transactions sent by sentry-sdk's own tracing (item type ``transaction``)."""
        with self._cond:
            return [p for env in self.envelopes for h, p in env.items if h.get("type") == "transaction"]

    def raw(self) -> bytes:
        """All received envelope bytes, decompressed, for secret greps."""
        with self._cond:
            return b"\n".join(env.raw for env in self.envelopes)

    def wait_for_events(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until at least ``count`` events arrived; fail with what arrived at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = [p for env in self.envelopes for h, p in env.items if h.get("type") == "event"]
                remaining = deadline - time.monotonic()
                if len(events) >= count or remaining <= 0:
                    break
                self._cond.wait(timeout=remaining)
        assert len(events) >= count, f"expected {count} Sentry event(s) within {timeout}s, got {len(events)}"
        return events


class HungEndpoint:
    """Accepts TCP connections on a free 127.0.0.1 port and never reads or answers."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.dsn = f"http://publickey@127.0.0.1:{self.port}/1"
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, name="hung-endpoint", daemon=True)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._held.append(conn)

    def __enter__(self) -> HungEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._sock.close()


def iter_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value (for secret searches)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from iter_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from iter_strings(v)


@dataclass
class HeaderRecorder:
    """A local upstream at ``url``; ``requests`` holds the lower-cased headers of each request, in order."""

    url: str
    requests: list[dict[str, str]]


class _RecordHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append({k.lower(): v for k, v in self.headers.items()})  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def header_recorder() -> Iterator[HeaderRecorder]:
    """A :class:`HeaderRecorder` served by a thread on a free 127.0.0.1 port for the ``with`` block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordHeaders)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HeaderRecorder(f"http://127.0.0.1:{server.server_address[1]}/", server.requests)  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
