"""``OTEL_EXPORTER_OTLP_COMPRESSION=gzip`` really compresses what ``otelkit.init()`` puts on the wire.

* HTTP/protobuf: ``otelkit.testing.OtlpReceiver`` does not record request headers, so a test stand-in
  (``_RecordingOtlpHttp``, a tiny ``http.server`` on a free port) keeps each request's headers and raw
  body, gunzips it and parses the ``ExportTraceServiceRequest``; without the setting (the control) there
  is no ``Content-Encoding`` and the body is plain protobuf.
* HTTP/protobuf + gzip through the real ``rotel`` collector: it decodes the body and forwards the span.
* gRPC + gzip: delivered through rotel, and a byte-counting TCP relay in front of the ``OtlpReceiver``
  shows the request bytes shrink (a 60 kB repetitive attribute travels as a few kB; the uncompressed
  control sends more than 60 kB). No sleeps: every wait polls with a deadline.
"""

from __future__ import annotations

import gzip
import http.server
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

import otelkit
from otelkit.testing._receiver import OtlpReceiver, RotelCollector
from tests.integration.instrument_support import serve_http, wait_for

BIG = "compress-me " * 5000  # 60 000 bytes, highly repetitive


pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def _configure(monkeypatch: pytest.MonkeyPatch, endpoint: str, protocol: str, gzip_on: bool) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", str(2 * len(BIG)))  # otelkit caps at 8192
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol)
    if gzip_on:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")


def _send_one_span(name: str, **attributes: Any) -> None:
    settings = otelkit.init(service_name="compression-test", instrument=(), system_metrics=False)
    with trace.get_tracer("compression").start_as_current_span(name, attributes=attributes):
        pass
    otelkit.shutdown(timeout=5)
    assert settings is not None


# --- HTTP: a stand-in that records headers ---------------------------------------------------------


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = gzip.decompress(raw) if (self.headers.get("Content-Encoding") or "").lower() == "gzip" else raw
        request = trace_service_pb2.ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.seen.append((dict(self.headers), raw, request))  # type: ignore[attr-defined]
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


def _recording_otlp_http() -> AbstractContextManager[tuple[str, list[tuple[dict[str, str], bytes, Any]]]]:
    """Test stand-in for an OTLP/HTTP collector that keeps each request's headers and raw body."""
    return serve_http(_RecordingHandler, "/v1/traces")


def _span_names(request: Any) -> list[str]:
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


@pytest.mark.parametrize("gzip_on", [True, False], ids=["gzip", "control-none"])
def test_http_protobuf_sends_content_encoding_gzip(monkeypatch: pytest.MonkeyPatch, gzip_on: bool) -> None:
    name = f"gz-{uuid.uuid4().hex[:8]}"
    with _recording_otlp_http() as (endpoint, seen):
        _configure(monkeypatch, endpoint, "http/protobuf", gzip_on)
        _send_one_span(name, payload=BIG)
        found = wait_for(lambda: next((r for r in seen if name in _span_names(r[2])), None), timeout=30,
                         interval=0.02, what="span at the stand-in")
        assert found is not None
        headers, raw, _request = found
    encoding = {k.lower(): v for k, v in headers.items()}.get("content-encoding")
    if gzip_on:
        assert encoding == "gzip"
        assert raw[:2] == b"\x1f\x8b"  # the gzip magic: the body itself is compressed
        assert len(raw) < len(BIG) // 4
    else:
        assert encoding is None
        assert len(raw) > len(BIG)


def test_http_protobuf_gzip_is_decoded_by_the_real_collector(otelkit_collector: RotelCollector,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gz-rotel-http-{uuid.uuid4().hex[:8]}"
    _configure(monkeypatch, otelkit_collector.http_endpoint + "/v1/traces", "http/protobuf", True)
    _send_one_span(name, payload=BIG)
    (span,) = otelkit_collector.receiver.wait_for_spans(1, name=name)
    assert span.attributes["payload"] == BIG


# --- gRPC ------------------------------------------------------------------------------------------


def test_grpc_gzip_delivers_through_the_real_collector(otelkit_collector: RotelCollector,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"gz-rotel-grpc-{uuid.uuid4().hex[:8]}"
    _configure(monkeypatch, otelkit_collector.grpc_endpoint, "grpc", True)
    _send_one_span(name, payload=BIG)
    (span,) = otelkit_collector.receiver.wait_for_spans(1, name=name)
    assert span.attributes["payload"] == BIG


class _CountingRelay:
    """A TCP relay that counts the bytes the client sends (test stand-in for a network tap)."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.upstream_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(self._target, timeout=5)
            self._sockets += [client, upstream]
            for src, dst, count in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, count), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if count:
                    with self._lock:
                        self.upstream_bytes += len(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.mark.parametrize("gzip_on", [True, False], ids=["gzip", "control-none"])
def test_grpc_gzip_shrinks_the_bytes_on_the_wire(otelkit_otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch,
                                                 gzip_on: bool) -> None:
    relay = _CountingRelay(otelkit_otlp_receiver.grpc_port)
    try:
        name = f"gz-wire-{uuid.uuid4().hex[:8]}"
        _configure(monkeypatch, f"http://127.0.0.1:{relay.port}", "grpc", gzip_on)
        _send_one_span(name, payload=BIG)
        (span,) = otelkit_otlp_receiver.wait_for_spans(1, name=name)
        assert span.attributes["payload"] == BIG
        sent = relay.upstream_bytes
    finally:
        relay.close()
    if gzip_on:
        assert sent < len(BIG) // 4, f"{sent} bytes sent for a {len(BIG)}-byte attribute: not compressed"
    else:
        assert sent > len(BIG)
