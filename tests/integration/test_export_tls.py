"""OTLP over TLS and mutual TLS, gRPC and HTTP, with certificates made for the test by openssl."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
