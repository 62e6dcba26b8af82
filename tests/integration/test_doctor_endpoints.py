"""``otelkit doctor`` as a user runs it (a subprocess), against real and broken collectors.

Healthy: the real ``rotel`` collector, over gRPC and HTTP; the test span and log record the
doctor sends must arrive behind it. Broken: a refused port, a hung one (TCP accepted, never
answered), a collector answering 401 / partial success, a bad configuration. Tempo and Sentry
cannot run here, so small named fakes stand in for their HTTP APIs.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from otelkit.testing._receiver import BlackholeServer, OtlpReceiver, RotelCollector, refused_endpoint


def doctor(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """Run ``python -m otelkit doctor --json`` with exactly ``env`` (plus PATH/HOME); return (exit code, report)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    done = subprocess.run([sys.executable, "-m", "otelkit", "doctor", "--json", *args], env={**base, **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        message = f"doctor printed no JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
        raise AssertionError(message) from None
    assert report["exit_code"] == done.returncode
    return done.returncode, report


def checks(report: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["section"] == section]


def endpoint_checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["details"]["signal"]: c for c in checks(report, "endpoints") if "signal" in c["details"]}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_healthy_collector(otelkit_collector: RotelCollector, protocol: str) -> None:
    endpoint = otelkit_collector.grpc_endpoint if protocol == "grpc" else otelkit_collector.http_endpoint
    code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                           "OTEL_SERVICE_NAME": "doctor-test"}, "--timeout", "5")
    assert code == 0, report
    assert report["verdict"] == "healthy"
    found = endpoint_checks(report)
    assert set(found) == {"traces", "metrics", "logs"}
    assert all(c["status"] == "ok" for c in found.values()), found
    trace_id = found["traces"]["details"]["trace_id"]
    assert "accepted" in found["traces"]["summary"] and trace_id in found["traces"]["summary"]
    # What the doctor sent went through the real collector to the receiver behind it.
    receiver = otelkit_collector.receiver
    span = receiver.wait_for(lambda: [s for s in receiver.spans() if s.trace_id == trace_id], timeout=30)[0]
    assert span.name == "otelkit doctor test span"
    assert span.resource["service.name"] == "doctor-test"
    log = receiver.wait_for(lambda: [r for r in receiver.logs() if r.trace_id == trace_id], timeout=30)[0]
    assert log.body == "otelkit doctor test log record"
    config = {row["name"]: row for row in report["configuration"]}
    assert config["traces.endpoint"]["source"] == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert config["traces.protocol"]["value"] == protocol


def test_refused_endpoint() -> None:
    endpoint = "http://" + refused_endpoint()
    code, report = doctor({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_METRICS_EXPORTER": "none",
                           "OTEL_LOGS_EXPORTER": "none", "OTEL_SERVICE_NAME": "x"}, "--timeout", "2")
    assert code == 1
    traces = endpoint_checks(report)["traces"]
    assert traces["status"] == "fail"
    assert traces["summary"].startswith("connection refused: nothing listens on 127.0.0.1:")
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in traces["fix"], "names the variable that set the endpoint"
    assert report["verdict"] == "broken"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_hung_endpoint(protocol: str) -> None:
    with BlackholeServer() as hole:
        code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{hole.endpoint}",
                               "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_SERVICE_NAME": "x"},
                              "--timeout", "1", timeout=30)
        assert hole.accepted >= 1
    assert code == 1
    found = endpoint_checks(report)
    assert [c["status"] for c in found.values()] == ["fail"] * 3
    assert all(c["summary"].startswith("hung:") for c in found.values()), found
    assert "4317" in found["traces"]["fix"] and "4318" in found["traces"]["fix"]


def test_collector_rejecting_credentials() -> None:
    with OtlpReceiver() as receiver:
        receiver.fail(http_status=401, grpc_code="UNAUTHENTICATED")
        code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
                               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20wrong-token",
                               "OTEL_SERVICE_NAME": "x"}, "--timeout", "2")
        code_grpc, report_grpc = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
                                         "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"},
                                        "--timeout", "2")
    assert (code, code_grpc) == (1, 1)
    traces = endpoint_checks(report)["traces"]
    assert "HTTP 401" in traces["summary"] and "OTEL_EXPORTER_OTLP_HEADERS" in traces["fix"]
    assert "wrong-token" not in json.dumps(report)
    assert "UNAUTHENTICATED" in endpoint_checks(report_grpc)["traces"]["summary"]


def test_partial_success_is_a_failure() -> None:
    with OtlpReceiver() as receiver:
        receiver.reject_partially(1, "span too old")
        code, report = doctor({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.grpc_endpoint,
                               "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_METRICS_EXPORTER": "none",
                               "OTEL_LOGS_EXPORTER": "none", "OTEL_SERVICE_NAME": "x"}, "--timeout", "2")
    assert code == 1
    assert "rejected 1 item(s): span too old" in endpoint_checks(report)["traces"]["summary"]


def test_bad_configuration() -> None:
    code, report = doctor({"OTEL_TRACES_SAMPLER": "bogus", "OTEL_SERVICE_NAME": "x",
                           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + refused_endpoint()}, "--no-send")
    assert code == 1
    config = checks(report, "config")[0]
    assert config["status"] == "fail"
    assert "OTEL_TRACES_SAMPLER='bogus'" in config["summary"] and "traceidratio" in config["summary"]
    assert "OTELKIT_STRICT" in config["fix"]
    # The other checks still ran on the lenient reading.
    assert set(endpoint_checks(report)) == {"traces", "metrics", "logs"}
    assert checks(report, "instrumentations")


def test_text_output_of_a_broken_setup() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env = {**base, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + refused_endpoint(), "OTEL_SERVICE_NAME": "x"}
    done = subprocess.run([sys.executable, "-m", "otelkit", "doctor", "--timeout", "1"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    out = done.stdout
    for heading in ("Configuration", "OTLP endpoints", "Instrumentations", "Sentry", "Fork model", "Tempo"):
        assert heading in out
    assert "FAIL traces ->" in out and "connection refused" in out and "-> start the collector" in out
    assert "BROKEN: 3 problem(s)" in out


# --- Tempo and Sentry: named fakes of their HTTP APIs -------------------------------------------


class _FakeHttp:
    """A tiny HTTP server answering with ``handler(method, path) -> (status, body)``; records requests."""

    def __init__(self, handler: Any) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                owner.requests.append((self.command, self.path, dict(self.headers)))
                status, body = handler(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _FakeHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_tempo(otelkit_collector: RotelCollector) -> Iterator[_FakeHttp]:
    """FAKE Tempo: ``/api/traces/<id>`` answers 200 once the trace reached the collector's receiver."""
    def handler(method: str, path: str) -> tuple[int, bytes]:
        trace_id = path.rsplit("/", 1)[-1]
        found = any(s.trace_id == trace_id for s in otelkit_collector.receiver.spans())
        return (200, b'{"batches": []}') if found else (404, b"trace not found")

    with _FakeHttp(handler) as server:
        yield server


def test_test_span_queryable_in_tempo(otelkit_collector: RotelCollector, fake_tempo: _FakeHttp) -> None:
    code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.grpc_endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"},
                          "--timeout", "2", "--tempo-url", fake_tempo.url)
    assert code == 0, report
    tempo = checks(report, "tempo")[0]
    trace_id = endpoint_checks(report)["traces"]["details"]["trace_id"]
    assert tempo["status"] == "ok" and trace_id in tempo["summary"]
    assert any(path == f"/api/traces/{trace_id}" for _, path, _ in fake_tempo.requests)


def test_trace_missing_from_tempo_is_a_failure(otelkit_collector: RotelCollector) -> None:
    with _FakeHttp(lambda method, path: (404, b"trace not found")) as tempo_server:
        code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.grpc_endpoint,
                               "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x"},
                              "--timeout", "1", "--tempo-url", tempo_server.url)
    assert code == 1
    tempo = checks(report, "tempo")[0]
    assert tempo["status"] == "fail" and "does not return trace" in tempo["summary"]
    assert "traces pipeline exports to Tempo" in tempo["fix"]


def test_tempo_absent_is_skipped_not_failed(otelkit_collector: RotelCollector) -> None:
    code, report = doctor({"OTEL_EXPORTER_OTLP_ENDPOINT": otelkit_collector.grpc_endpoint,
                           "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "x",
                           "OTELKIT_TEMPO_URL": ""}, "--timeout", "1")
    tempo = checks(report, "tempo")[0]
    if tempo["status"] != "skip":  # something really listens on 127.0.0.1:3200 on this machine
        pytest.skip(f"a Tempo seems to run on 127.0.0.1:3200: {tempo['summary']}")
    assert code == 0
    assert "start the bundled stack" in tempo["summary"]


@pytest.mark.parametrize(("status", "verdict"), [(200, "ok"), (401, "fail")])
def test_sentry_dsn_checked_with_a_test_envelope(status: int, verdict: str) -> None:
    """FAKE Sentry ingest: answers the envelope endpoint with ``status``."""
    with _FakeHttp(lambda method, path: (status, b"{}")) as sentry:
        port = sentry.url.rsplit(":", 1)[1]
        dsn = f"http://0123456789abcdef@127.0.0.1:{port}/42"
        code, report = doctor({"SENTRY_DSN": dsn, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                               "OTEL_LOGS_EXPORTER": "none", "OTEL_SERVICE_NAME": "x"}, "--timeout", "2")
    check = checks(report, "sentry")[0]
    assert check["status"] == verdict, check
    assert code == (0 if verdict == "ok" else 1)
    method, path, headers = sentry.requests[0]
    assert (method, path) == ("POST", "/api/42/envelope/")
    assert "sentry_key=0123456789abcdef" in headers["X-Sentry-Auth"]
    assert "0123456789abcdef" not in json.dumps(report), "the key is masked in the report"
