"""Export building blocks without a network: accounting, report, retry hints, destinations, splitting."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import TracerProvider

from otelkit import _export, _fork, _shutdown
from otelkit._config import resolve
from otelkit._export import OK, RETRY, TOO_LARGE, Sender, SendResult, batching, factory, metrics, transport
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS, ShutdownReport, SignalReport


@pytest.fixture(autouse=True)
def _fresh_stats() -> Iterator[None]:
    STATS.reset()
    yield
    STATS.reset()


class ScriptedSender(Sender):
    """A test double (no network): answers each request with ``decide(item_count)``."""

    signal = "traces"
    target = "scripted://collector"

    def __init__(self, decide: Any) -> None:
        self.decide = decide
        self.requests: list[int] = []
        self.lock = threading.Lock()

    def send(self, payload: bytes, timeout: float) -> SendResult:
        count = payload.count(b"scripted-span")
        with self.lock:
            self.requests.append(count)
        return self.decide(count)  # type: ignore[no-any-return]


def spans(tp: TracerProvider, count: int, **attributes: Any) -> None:
    tracer = tp.get_tracer("unit")
    for i in range(count):
        with tracer.start_as_current_span("scripted-span", attributes={"i": i, **attributes}):
            pass


def pipeline(sender: Sender, **batch: Any) -> tuple[TracerProvider, _export.OtelkitSpanProcessor]:
    processor = _export.make_span_processor(sender, **{"schedule_delay": 0.02, **batch})
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    return tp, processor


def test_too_large_is_halved_until_requests_fit() -> None:
    # The collector refuses every request of more than one item: halving goes down to single items.
    sender = ScriptedSender(lambda n: SendResult(TOO_LARGE, "HTTP 413") if n > 1 else SendResult(OK))
    tp, processor = pipeline(sender, max_export_batch_size=8)
    spans(tp, 8)
    assert processor.force_flush(5_000)
    assert sender.requests == [8, 4, 2, 1, 1, 2, 1, 1, 4, 2, 1, 1, 2, 1, 1]
    assert STATS.exported_counts()["traces"] == 8
    tp.shutdown()


def test_single_item_refused_as_too_large_is_dropped_and_counted() -> None:
    sender = ScriptedSender(lambda n: SendResult(TOO_LARGE, "gRPC RESOURCE_EXHAUSTED"))
    tp, processor = pipeline(sender, max_export_batch_size=4)
    spans(tp, 4)
    processor.force_flush(5_000)
    assert STATS.dropped_for("traces") == {_stats.TOO_LARGE: 4}
    assert len(sender.requests) == 7  # 4 -> 2+2 -> 1+1+1+1: never a retry loop
    tp.shutdown()


def test_circuit_opens_after_three_failures_and_warns_once(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(batching, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(batching, "MAX_BACKOFF", 0.02)
    failing = threading.Event()
    failing.set()
    sender = ScriptedSender(lambda n: SendResult(RETRY, "HTTP 503") if failing.is_set() else SendResult(OK))
    tp, processor = pipeline(sender)
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        spans(tp, 3)
        deadline = time.monotonic() + 30
        while len(sender.requests) < 6 and time.monotonic() < deadline:
            processor.force_flush(100)
        assert len(sender.requests) >= 6, sender.requests  # what the loop waited for
        failing.clear()
        assert processor.force_flush(5_000)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot export spans" in m for m in messages) == 1
    assert sum("exports spans to scripted://collector again" in m for m in messages) == 1
    assert STATS.exported_counts()["traces"] == 3 and STATS.dropped_for("traces") == {}
    tp.shutdown()


def test_already_shutdown_is_counted() -> None:
    tp, processor = pipeline(ScriptedSender(lambda n: SendResult(OK)))
    processor.shutdown()
    spans(tp, 2)
    assert STATS.dropped_for("traces") == {_stats.ALREADY_SHUTDOWN: 2}


def test_drop_warnings_are_rate_limited(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    monkeypatch.setattr(_stats.time, "monotonic", lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        for _ in range(100):
            STATS.dropped("traces", _stats.QUEUE_FULL, 1)
        clock[0] += _stats.WARN_INTERVAL + 1
        STATS.dropped("logs", _stats.EXPORT_FAILED, 2, "HTTP 400")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "1 span (queue_full)" in messages[0]
    assert "99 spans (queue_full)" in messages[1] and "2 log records (export_failed)" in messages[1]
    assert "HTTP 400" in messages[1]
    assert STATS.dropped_counts() == {("traces", "queue_full"): 100, ("logs", "export_failed"): 2}


def test_shutdown_report_reads_well() -> None:
    report = ShutdownReport(signals={
        "traces": SignalReport(exported=10, dropped={"queue_full": 3}, timed_out=True),
        "logs": SignalReport(exported=1),
    }, duration=1.234, deadline=5.0)
    assert str(report) == ("otelkit shutdown in 1.23s (deadline 5.00s): traces: 10 spans exported, "
                           "3 dropped (queue_full), timed out; logs: 1 log record exported")
    assert report.timed_out and report.dropped == 3 and report.exported == 11
    assert report["traces"].dropped_total == 3


class _Provider:
    """A test double for an SDK provider whose shutdown hangs (until released) or raises."""

    HANG = 60.0

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.entered = threading.Event()
        self.release = threading.Event()

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.entered.set()
        if self.behaviour == "hang":
            self.release.wait(self.HANG)
        elif self.behaviour == "raise":
            raise RuntimeError("exporter exploded")


def test_shutdown_providers_one_deadline_never_raises() -> None:
    hang_a, hang_b, boom = _Provider("hang"), _Provider("hang"), _Provider("raise")
    start = time.monotonic()
    report = _shutdown.shutdown_providers(hang_a, boom, hang_b, timeout=0.5)
    elapsed = time.monotonic() - start
    try:
        # Concurrent, not one after the other: the second hung provider was entered while the first still
        # hangs (it is released only below). Sequential shutdowns would never get there.
        assert hang_a.entered.wait(30) and hang_b.entered.wait(30) and boom.entered.wait(30)
    finally:
        hang_a.release.set()
        hang_b.release.set()
    # It waited for its deadline (a lower bound no load can break), not for the hung providers: they
    # hang for 60 s, so returning in under half of that cannot be scheduling luck.
    assert 0.5 <= elapsed < _Provider.HANG / 2, elapsed
    assert report["traces"].timed_out and report["logs"].timed_out
    assert report["metrics"].error == "RuntimeError: exporter exploded"
    assert _shutdown.shutdown_providers(None, None, None, 1.0).signals == {}


def test_retry_after_parsing() -> None:
    assert transport._retry_after("3") == 3.0
    assert transport._retry_after("-1") == 0.0
    assert transport._retry_after("soon") is None
    assert transport._retry_after(None) is None
    later = transport._retry_after(formatdate(time.time() + 30, usegmt=True))
    assert later is not None and 25 < later <= 31


def test_partial_success_parsing() -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 4
    response.partial_success.error_message = "too old"
    assert transport._partial("traces", response.SerializeToString()) == (4, "too old")
    assert transport._partial("traces", b"") == (0, "")
    assert transport._partial("traces", b"\xff\xff garbage") == (0, "")


def test_mask_url_hides_credentials() -> None:
    assert _export.mask_url("https://user:s3cret@collector:4318/v1/traces") == "https://***@collector:4318/v1/traces"
    assert _export.mask_url("http://collector:4317") == "http://collector:4317"


def test_senders_from_settings() -> None:
    settings = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4317",
                                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_HEADERS": "x-token=abc"})
    sender = _export.make_sender("traces", settings.traces)
    assert isinstance(sender, _export.GrpcSender) and sender.target == "https://collector.example:4317"
    http = resolve(environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    hs = _export.make_sender("logs", http.logs)
    assert isinstance(hs, _export.HttpSender) and hs.url == "http://c:4318/v1/logs"
    assert hs._headers["Content-Encoding"] == "gzip"


def test_destinations_auto_without_and_with_a_local_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(environ={"OTEL_SERVICE_NAME": "unit"})
    monkeypatch.setattr(factory, "probe_local_collector", lambda timeout=0.05: None)
    line = _export.describe_destinations(settings)
    assert "traces, logs -> this terminal" in line and "metrics -> an in-memory summary" in line
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in line
    monkeypatch.setattr(factory, "probe_local_collector", lambda timeout=0.05: "grpc")
    line = _export.describe_destinations(settings)
    assert line == "traces, metrics, logs -> OTLP/gRPC http://127.0.0.1:4317 (local collector found)"


def test_destinations_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = resolve(environ={"OTEL_SERVICE_NAME": "unit", "OTEL_TRACES_EXPORTER": "otlp,console",
                                "OTEL_METRICS_EXPORTER": "prometheus", "OTEL_LOGS_EXPORTER": "none",
                                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://u:pw@collector:4318",
                                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    line = _export.describe_destinations(settings)
    assert "traces -> OTLP/HTTP http://***@collector:4318 + this terminal" in line
    assert "metrics -> Prometheus scrape endpoint http://localhost:9464/metrics" in line
    assert "logs -> nowhere" in line and "pw" not in line


def test_fork_model_warnings_detect_gunicorn_preload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/venv/bin/gunicorn", "--preload", "-w", "4", "app:app"])
    notes = _fork.fork_model_warnings()
    assert any("gunicorn --preload" in n and "no post_fork hook" in n for n in notes)
    monkeypatch.setattr(sys, "argv", ["/venv/bin/gunicorn", "-w", "4", "app:app"])
    assert not any("gunicorn" in n for n in _fork.fork_model_warnings())


def test_concurrent_flush_and_shutdown_are_safe() -> None:
    sender = ScriptedSender(lambda n: SendResult(OK))
    tp, processor = pipeline(sender)
    spans(tp, 200)
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            if i % 2:
                processor.force_flush(2_000)
            else:
                processor.shutdown()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors and not any(t.is_alive() for t in threads)
    assert STATS.exported_counts()["traces"] == 200
    assert processor.force_flush(100) is False  # closed


def test_int64_overflow_is_sent_as_double() -> None:
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    meter = mp.get_meter("unit")
    meter.create_counter("ok.count").add(2)
    meter.create_up_down_counter("huge.count").add(10**20)
    data = reader.get_metrics_data()
    assert data is not None
    with pytest.raises(Exception):  # noqa: B017 - the SDK encoder's own exception type varies
        encode_metrics(data)
    request = encode_metrics(metrics._ints_to_doubles(data))
    values = {m.name: m.sum.data_points[0] for rm in request.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}
    assert values["ok.count"].as_int == 2 and values["huge.count"].as_double == 1e20
    mp.shutdown()


class TimedSender(ScriptedSender):
    """A test double (no network) that also records the timeout each request was given."""

    def __init__(self, decide: Any) -> None:
        super().__init__(decide)
        self.timeouts: list[float] = []

    def send(self, payload: bytes, timeout: float) -> SendResult:
        self.timeouts.append(timeout)
        return super().send(payload, timeout)


def test_no_answer_is_resent_with_a_longer_wait_and_counted() -> None:
    answers = iter([SendResult(RETRY, "no answer within 1.0s", cause=_export.NO_ANSWER)])
    sender = TimedSender(lambda n: next(answers, SendResult(OK)))
    tp, processor = pipeline(sender, max_export_batch_size=5, export_timeout=1.0)
    spans(tp, 5)
    sender_done = threading.Event()
    deadline = time.monotonic() + 10
    while len(sender.requests) < 2 and time.monotonic() < deadline:
        sender_done.wait(0.01)
    assert sender.requests[:2] == [5, 5]
    assert sender.timeouts[:2] == [1.0, 2.0]  # the resend waits twice as long
    assert STATS.resent_counts()["traces"] == 5  # possible duplicates, counted
    tp.shutdown()
    assert STATS.exported_counts()["traces"] == 5 and STATS.dropped_for("traces") == {}


def test_longer_waits_are_capped() -> None:
    processor = _export.make_span_processor(ScriptedSender(lambda n: SendResult(OK)), export_timeout=10.0)
    p = processor.pipeline
    for boost, expected in ((1.0, 10.0), (2.0, 20.0), (4.0, 30.0)):
        p._boost = boost
        assert p._request_timeout() == expected
    processor.shutdown()


def test_a_size_refusal_lowers_the_request_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector takes requests under 6000 bytes: after the first refusals, later batches are cut
    # before sending instead of being refused again.
    monkeypatch.setattr(batching, "MIN_LEARNED_REQUEST_BYTES", 1024)
    sizes: list[int] = []

    class SizeSender(ScriptedSender):
        def send(self, payload: bytes, timeout: float) -> SendResult:
            sizes.append(len(payload))
            return SendResult(TOO_LARGE, "HTTP 413") if len(payload) > 6000 else SendResult(OK)

    sender = SizeSender(None)
    tp, processor = pipeline(sender, max_export_batch_size=16)
    spans(tp, 16, blob="x" * 1000)
    assert processor.force_flush(5_000)
    refused_first = sum(1 for n in sizes if n > 6000)
    spans(tp, 16, blob="x" * 1000)
    assert processor.force_flush(5_000)
    assert sum(1 for n in sizes if n > 6000) == refused_first  # the second batch: nothing refused
    assert STATS.exported_counts()["traces"] == 32
    tp.shutdown()


_FIRST_SEND = """
import sys
from otelkit._export import HttpSender
from otelkit.testing._receiver import refused_endpoint
sender = HttpSender("traces", f"http://{refused_endpoint()}/v1/traces")
before = set(sys.modules)
sender.send(b"", 1.0)
print(sorted(set(sys.modules) - before))
"""


def test_the_first_http_send_imports_nothing() -> None:
    # A gunicorn worker lost its spans: its first send was the flush at exit, where importing the idna codec
    # failed ("LookupError: unknown encoding: idna"). Everything a send needs is imported with the sender.
    import subprocess

    done = subprocess.run([sys.executable, "-c", _FIRST_SEND], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


_FIRST_GRPC_SEND = """
import sys
from otelkit._export import GrpcSender
from otelkit.testing._receiver import refused_endpoint
answering = GrpcSender("traces", sys.argv[1])
refused = GrpcSender("traces", f"http://{refused_endpoint()}")
before = set(sys.modules)
results = [answering.send(b"", 10.0).kind, refused.send(b"", 10.0).kind]
print(sorted(set(sys.modules) - before), results)
"""


def test_the_first_grpc_send_imports_nothing(otelkit_otlp_receiver: Any) -> None:
    # As for HTTP: grpc._channel and the response types were imported by the first request, which may be the
    # flush at exit; and a child forked while the export thread imported got a half-initialised grpc._channel.
    import subprocess

    done = subprocess.run([sys.executable, "-c", _FIRST_GRPC_SEND, otelkit_otlp_receiver.grpc_endpoint],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] ['ok', 'retry']", done.stdout


def test_http_error_answers_carry_the_collectors_reason() -> None:
    from google.rpc.status_pb2 import Status

    from otelkit._export.transport import FAIL, _http_result

    refused = _http_result("traces", 400, Status(code=3, message="span  has\nno name").SerializeToString(), None)
    assert (refused.kind, refused.code, refused.detail) == (FAIL, "400", "HTTP 400: span has no name")
    assert _http_result("traces", 401, b"Unauthorized", None).detail == "HTTP 401: Unauthorized"
    assert _http_result("traces", 503, b"\x00\xff\x01", "2").detail == "HTTP 503", "no binary noise in messages"
    assert _http_result("traces", 413, b"x" * 1000, None).detail.endswith("...")
    ok = _http_result("traces", 200, b"", None)
    assert (ok.kind, ok.code, ok.detail) == (OK, "200", "")


def test_a_filling_queue_hands_the_gil_to_the_export_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """From half full on, each enqueue releases the GIL once (the export thread can take its turn at once)."""
    released: list[float] = []
    monkeypatch.setattr(batching, "_release_gil", released.append)
    tp, processor = pipeline(ScriptedSender(lambda n: SendResult(OK)), max_queue_size=8, max_export_batch_size=8,
                             schedule_delay=30.0)  # nothing leaves the queue before 8 are in it
    spans(tp, 4)
    assert released == []  # 0..3 held before each enqueue: below half of 8
    spans(tp, 4)
    assert released == [0, 0, 0, 0]  # 4..7 held: one release each
    assert processor.force_flush(10_000)
    assert STATS.exported_counts()["traces"] == 8 and STATS.dropped_for("traces") == {}
    tp.shutdown()


def test_no_gil_release_while_the_collector_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batching, "FIRST_BACKOFF", 30.0)
    released: list[float] = []
    monkeypatch.setattr(batching, "_release_gil", released.append)
    failing = threading.Event()
    failing.set()
    sender = ScriptedSender(lambda n: SendResult(RETRY, "HTTP 503") if failing.is_set() else SendResult(OK))
    tp, processor = pipeline(sender, max_queue_size=8, max_export_batch_size=8)
    spans(tp, 1)
    deadline = time.monotonic() + 30
    while not processor.pipeline._failures and time.monotonic() < deadline:
        processor.force_flush(100)
    assert processor.pipeline._failures, "the first request failed"
    spans(tp, 7)
    assert released == []  # up to 7 held after a failed export: no release
    failing.clear()
    assert processor.force_flush(10_000)
    assert STATS.exported_counts()["traces"] == 8
    tp.shutdown()
