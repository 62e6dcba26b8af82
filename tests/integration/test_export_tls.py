"""OTLP over TLS and mutual TLS, gRPC and HTTP, with certificates made for the test by openssl; HTTP through a proxy."""

from __future__ import annotations

import base64
import select
import shutil
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import TracerProvider

from otelkit._config import resolve
from otelkit._export import make_sender, make_span_processor
from otelkit.testing._receiver import OtlpReceiver
from tests.conftest import missing


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        missing("openssl is not installed (Debian package 'openssl')")
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=otelkit test CA",
             cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    _openssl("req", "-x509", *ec, "-keyout", "other.key", "-out", "other.pem", "-days", "1", "-subj", "/CN=other",
             cwd=d)
    return d


pytestmark = pytest.mark.usefixtures("fresh_stats")


def _send_one(receiver: OtlpReceiver, protocol: str, env: dict[str, str]) -> bool:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    settings = resolve(environ={"OTEL_SERVICE_NAME": "tls", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, **env})
    processor = make_span_processor(make_sender("traces", settings.traces), schedule_delay=0.05, export_timeout=3.0)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    with tp.get_tracer("tls").start_as_current_span("over-tls"):
        pass
    ok = processor.force_flush(5_000)
    processor.pipeline.shutdown(timeout_millis=500)
    return ok


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_with_the_configured_ca(pki: Path, protocol: str) -> None:
    with OtlpReceiver(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")) as receiver:
        assert _send_one(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem")})
        assert [s.name for s in receiver.spans()] == ["over-tls"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_tls_with_a_wrong_ca_is_refused(pki: Path, protocol: str) -> None:
    with OtlpReceiver(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")) as receiver:
        assert not _send_one(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "other.pem")})
        assert receiver.spans() == []


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_mutual_tls(pki: Path, protocol: str) -> None:
    with OtlpReceiver(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                      client_ca=str(pki / "ca.pem")) as receiver:
        assert not _send_one(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem")})
        assert _send_one(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem"),
                                              "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki / "client.pem"),
                                              "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki / "client.key")})
        assert [s.name for s in receiver.spans()] == ["over-tls"]


def _doctor_verdict(receiver: OtlpReceiver, protocol: str, env: dict[str, str]) -> tuple[bool, str]:
    """``otelkit doctor``'s test span over the exporters' own transport (issue 20: one TLS set-up, not two)."""
    from otelkit import _doctor

    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    settings = resolve(environ={"OTEL_SERVICE_NAME": "tls", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_METRICS_EXPORTER": "none",
                                "OTEL_LOGS_EXPORTER": "none", **env})
    (target,), _ = _doctor.targets(settings, probe=lambda host, port: False)
    outcome = _doctor.send_test(settings, target, "tls", timeout=5.0)
    return outcome.ok, outcome.summary


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_doctor_speaks_tls_as_the_exporter_does(pki: Path, protocol: str) -> None:
    with OtlpReceiver(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key"),
                      client_ca=str(pki / "ca.pem")) as receiver:
        ok, summary = _doctor_verdict(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem")})
        assert not ok, "mutual TLS without a client certificate must fail, as it does for the exporter"
        ok, summary = _doctor_verdict(receiver, protocol, {
            "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem"),
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": str(pki / "client.pem"),
            "OTEL_EXPORTER_OTLP_CLIENT_KEY": str(pki / "client.key")})
        assert ok, summary
        assert [s.name for s in receiver.spans()] == ["otelkit doctor test span"]
        ok, summary = _doctor_verdict(receiver, protocol, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "other.pem")})
        assert not ok
        if protocol != "grpc":
            assert summary.startswith("TLS failed:"), summary


# --- through an HTTP proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY) ---------------------------------------------


class _TestProxy:
    """A minimal HTTP proxy written for these tests (no proxy server is installed here): ``CONNECT`` tunnels,
    and absolute-URI requests forwarded one by one. Records ``(method, target, Proxy-Authorization)``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None]] = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    line = self.rfile.readline().decode("latin-1").strip()
                    if not line:
                        return
                    method, target, _ = line.split(" ", 2)
                    headers = []
                    while (header := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                        headers.append(header)
                    auth = next((h.split(b":", 1)[1].strip().decode() for h in headers
                                 if h.lower().startswith(b"proxy-authorization:")), None)
                    owner.requests.append((method, target, auth))
                    if method == "CONNECT":
                        host, port = target.rsplit(":", 1)
                        with socket.create_connection((host, int(port)), timeout=10) as upstream:
                            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            self.wfile.flush()
                            _relay(self.connection, upstream)
                        return
                    length = next((int(h.split(b":", 1)[1]) for h in headers
                                   if h.lower().startswith(b"content-length:")), 0)
                    body = self.rfile.read(length)
                    url = urlsplit(target)
                    kept = b"".join(h for h in headers if not h.lower().startswith((b"proxy-", b"connection:")))
                    with socket.create_connection((url.hostname or "", url.port or 80), timeout=10) as upstream:
                        upstream.sendall(f"{method} {url.path or '/'} HTTP/1.1\r\n".encode() + kept +
                                         b"Connection: close\r\n\r\n" + body)
                        answer = b""
                        while chunk := upstream.recv(65536):
                            answer += chunk
                    self.wfile.write(answer)
                    self.wfile.flush()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    sockets = [client, upstream]
    while True:
        readable, _, _ = select.select(sockets, [], [], 10)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (upstream if sock is client else client).sendall(data)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_TestProxy]:
    server = _TestProxy()
    for name in ("no_proxy", "NO_PROXY", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield server
    finally:
        server.close()


def _through(receiver: OtlpReceiver, endpoint: str, env: dict[str, str]) -> bool:
    settings = resolve(environ={"OTEL_SERVICE_NAME": "proxy", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", **env})
    processor = make_span_processor(make_sender("traces", settings.traces), schedule_delay=0.05, export_timeout=5.0)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    with tp.get_tracer("proxy").start_as_current_span("via-proxy"):
        pass
    ok = processor.force_flush(10_000)
    processor.pipeline.shutdown(timeout_millis=500)
    return ok


def test_http_endpoint_through_a_forwarding_proxy(proxy: _TestProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
    with OtlpReceiver() as receiver:
        assert _through(receiver, receiver.http_endpoint, {})
        assert [s.name for s in receiver.spans()] == ["via-proxy"]
    method, target, auth = proxy.requests[0]
    assert (method, target) == ("POST", f"{receiver.http_endpoint}/v1/traces")
    assert auth == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_https_endpoint_through_a_connect_tunnel(pki: Path, proxy: _TestProxy,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with OtlpReceiver(tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")) as receiver:
        assert _through(receiver, receiver.http_endpoint, {"OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki / "ca.pem")})
        assert [s.name for s in receiver.spans()] == ["via-proxy"]
    assert proxy.requests[0][:2] == ("CONNECT", receiver.http_endpoint.removeprefix("https://"))


def test_no_proxy_goes_direct(proxy: _TestProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with OtlpReceiver() as receiver:
        assert _through(receiver, receiver.http_endpoint, {})
        assert [s.name for s in receiver.spans()] == ["via-proxy"]
    assert proxy.requests == []


def test_tls_inside_a_tls_proxy_is_refused_with_a_reason(proxy: _TestProxy,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "https://"))
    settings = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318",
                                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    result = make_sender("traces", settings.traces).send(b"", 1.0)
    assert result.kind == "fail" and "give the proxy as http://" in result.detail, result
    assert proxy.requests == []
