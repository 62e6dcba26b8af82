"""``otelkit doctor`` probes through the exporters' own transport and resolution (issue 20, part 1).

The doctor has no OTLP client of its own: its targets are the export factory's destinations, and its test
request goes through the ``Sender`` the factory builds. Here a scripted sender (a FAKE: it answers what
each case needs without a network) stands in for the real one, to pin how each transport answer becomes
a verdict; the real collectors and broken endpoints are in tests/integration/test_doctor_endpoints.py.
"""

from __future__ import annotations

import pytest

from otelkit import _config, _doctor
from otelkit._export import factory
from otelkit._export.transport import FAIL, NO_ANSWER, OK, RETRY, TLS, UNREACHABLE, Sender, SendResult


class ScriptedSender(Sender):
    """FAKE sender: returns ``result`` for every request and records the payloads."""

    def __init__(self, signal: str, target: str, result: SendResult) -> None:
        self.signal, self.target, self.result = signal, target, result
        self.payloads: list[bytes] = []
        self.closed = False

    def send(self, payload: bytes, timeout: float) -> SendResult:
        self.payloads.append(payload)
        return self.result

    def close(self) -> None:
        self.closed = True


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> _config.Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return _config.resolve()


@pytest.mark.parametrize("local", [None, "grpc", "http/protobuf"])
def test_targets_are_the_factory_destinations(monkeypatch: pytest.MonkeyPatch, local: str | None) -> None:
    settings = _settings(monkeypatch)
    ports = {"grpc": 4317, "http/protobuf": 4318}
    found, _ = _doctor.targets(settings, probe=lambda host, port: ports.get(local or "") == port)
    expected = [d for s in ("traces", "metrics", "logs")
                for d in factory.resolve_exporters(settings, s, probe=lambda: local) if d.kind == "otlp"]
    assert [t.destination for t in found] == expected
    assert len(found) == (3 if local else 0)


def _answer(monkeypatch: pytest.MonkeyPatch, settings: _config.Settings, result: SendResult,
            signal: str = "traces") -> tuple[_doctor.SendOutcome, list[ScriptedSender]]:
    built: list[ScriptedSender] = []

    def sender_for(settings_: _config.Settings, destination: factory.Destination) -> Sender:
        assert settings_ is settings
        built.append(ScriptedSender(destination.signal, destination.endpoint or "", result))
        return built[-1]

    monkeypatch.setattr(factory, "sender_for", sender_for)
    found, _ = _doctor.targets(settings, probe=lambda host, port: False)
    (target,) = [t for t in found if t.signal == signal]
    return _doctor.send_test(settings, target, "svc", timeout=1.0), built


def test_the_test_span_goes_through_the_factory_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318",
                         OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    outcome, built = _answer(monkeypatch, settings, SendResult(OK, code="200"))
    assert outcome.ok and outcome.details["http_status"] == 200
    assert len(built) == 1 and built[0].closed and len(built[0].payloads) == 1
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(built[0].payloads[0])
    assert request.resource_spans[0].scope_spans[0].spans[0].name == "otelkit doctor test span"


@pytest.mark.parametrize(("protocol", "result", "summary", "fix"), [
    ("http/protobuf", SendResult(FAIL, "HTTP 404: not found", code="404"), "the collector answered HTTP 404 Not Found",
     "/v1/traces"),
    ("http/protobuf", SendResult(FAIL, "TLS error: wrong version number", cause=TLS), "TLS failed: wrong version",
     "OTEL_EXPORTER_OTLP_CERTIFICATE"),
    ("http/protobuf", SendResult(RETRY, "no answer within 1.0s", cause=NO_ANSWER, timed_out=True), "hung:", "4318"),
    ("http/protobuf", SendResult(OK, "span too old", rejected=2, code="200"),
     "rejected 2 item(s): span too old", "collector's log"),
    ("grpc", SendResult(FAIL, "gRPC UNIMPLEMENTED: unknown service", code="UNIMPLEMENTED"),
     "the collector answered gRPC UNIMPLEMENTED: unknown service", "http/protobuf"),
    ("grpc", SendResult(RETRY, "no connection within 1.0s", cause=UNREACHABLE, code="DEADLINE_EXCEEDED",
                        timed_out=True), "hung: connected, but no gRPC answer", "4317"),
    ("grpc", SendResult(RETRY, "Errno 111", cause=UNREACHABLE), "request failed: Errno 111", "start the collector"),
])
def test_each_transport_answer_is_a_verdict(monkeypatch: pytest.MonkeyPatch, protocol: str, result: SendResult,
                                            summary: str, fix: str) -> None:
    port = 4317 if protocol == "grpc" else 4318
    settings = _settings(monkeypatch, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://collector:{port}",
                         OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
    outcome, _ = _answer(monkeypatch, settings, result)
    assert not outcome.ok
    assert summary in outcome.summary, outcome
    assert fix in outcome.fix, outcome


def test_doctor_has_no_otlp_client_of_its_own() -> None:
    import inspect

    source = inspect.getsource(_doctor)
    for name in ("import grpc", "_pb2_grpc", "x-protobuf", "secure_channel", "insecure_channel"):
        assert name not in source, name
