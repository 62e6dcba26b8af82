"""otelkit's export pipeline against a real OTLP receiver that fails on purpose (gRPC and HTTP).

Each test drives otelkit's processors from plain SDK providers, injects one fault with the
receiver, and checks what arrived against what was sent and what was counted as dropped.
"""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otelkit._export import (
    GrpcSender,
    HttpSender,
    OtelkitSpanProcessor,
    OtlpMetricExporter,
    Sender,
    make_log_processor,
    make_span_processor,
)
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS
from otelkit.testing._receiver import OtlpReceiver

PROTOCOLS = ["grpc", "http"]


pytestmark = pytest.mark.usefixtures("fresh_stats")


def sender(receiver: OtlpReceiver, protocol: str, signal: str = "traces") -> Sender:
    if protocol == "grpc":
        return GrpcSender(signal, receiver.grpc_endpoint)
    return HttpSender(signal, f"{receiver.http_endpoint}/v1/{signal}")


def provider(receiver: OtlpReceiver, protocol: str, **batch: object) -> tuple[TracerProvider, OtelkitSpanProcessor]:
    options: dict[str, object] = {"schedule_delay": 0.05, "export_timeout": 2.0, **batch}
    processor = make_span_processor(sender(receiver, protocol), **options)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    return tp, processor


def emit(tp: TracerProvider, count: int, prefix: str = "s", **attributes: object) -> None:
    tracer = tp.get_tracer("faults")
    for i in range(count):
        with tracer.start_as_current_span(f"{prefix}{i}", attributes={"seq": i, **attributes}):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_transient_failures_are_retried_and_delivered_once(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE", times=2)
    tp, processor = provider(otelkit_otlp_receiver, protocol)
    emit(tp, 50)
    spans = otelkit_otlp_receiver.wait_for_spans(50, timeout=15)
    assert sorted(s.attributes["seq"] for s in spans) == list(range(50))  # every span, none twice
    outcomes = [a.outcome for a in otelkit_otlp_receiver.attempts]
    assert outcomes[:2] == (["status:503"] * 2 if protocol == "http" else ["grpc:UNAVAILABLE"] * 2)
    tp.shutdown()
    assert STATS.exported_counts()["traces"] == 50
    assert STATS.dropped_for("traces") == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_hint_is_honoured(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    # 429 + Retry-After / RESOURCE_EXHAUSTED + RetryInfo is throttling: retried after the hint, not dropped.
    # Retry-After carries whole seconds, hence a 1 s hint for both protocols.
    otelkit_otlp_receiver.fail(429, "RESOURCE_EXHAUSTED", retry_after=1, times=1)
    tp, _ = provider(otelkit_otlp_receiver, protocol)
    emit(tp, 10)
    spans = otelkit_otlp_receiver.wait_for_spans(10, timeout=10)
    assert sorted(s.attributes["seq"] for s in spans) == list(range(10))
    throttled, retry = otelkit_otlp_receiver.attempts[:2]
    assert throttled.outcome == ("status:429" if protocol == "http" else "grpc:RESOURCE_EXHAUSTED")
    assert (retry.outcome, retry.items) == ("ok", throttled.items)  # the same batch, whole
    # No earlier than the hint, by the receiver's own arrival times: a lower bound no load can break.
    assert retry.at - throttled.at >= 1.0, retry.at - throttled.at
    tp.shutdown()
    assert STATS.dropped_for("traces") == {}


def test_resource_exhausted_without_retry_info_backs_off_and_does_not_split(
        otelkit_otlp_receiver: OtlpReceiver) -> None:
    # RESOURCE_EXHAUSTED without RetryInfo and without gRPC's size text is a memory limiter refusing under load:
    # the same batch is retried whole after a back-off (never split into more requests), and delivered once.
    otelkit_otlp_receiver.fail(429, "RESOURCE_EXHAUSTED", times=1)
    tp, processor = provider(otelkit_otlp_receiver, "grpc", max_export_batch_size=64)
    emit(tp, 64)
    spans = otelkit_otlp_receiver.wait_for_spans(64)
    assert sorted(s.attributes["seq"] for s in spans) == list(range(64))
    attempts = [(a.outcome, a.items) for a in otelkit_otlp_receiver.attempts]
    # On a loaded machine the batch processor may have sent fewer than 64 in its first request (its delay
    # expired before all were queued): whatever was refused is retried whole, never split, and nothing twice.
    refused = attempts[0]
    assert refused[0] == "grpc:RESOURCE_EXHAUSTED"
    assert attempts[1] == ("ok", refused[1]), attempts
    assert [o for o, _n in attempts[2:]] == ["ok"] * (len(attempts) - 2), attempts
    assert sum(n for o, n in attempts if o == "ok") == 64, attempts
    tp.shutdown()
    assert STATS.dropped_for("traces") == {}
    assert STATS.exported_counts()["traces"] == 64


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_oversized_span_is_dropped_and_counted_others_delivered(protocol: str) -> None:
    # A real size limit: the gRPC server refuses messages over 64 KiB (RESOURCE_EXHAUSTED), the HTTP
    # server answers 413 over 64 KiB. One span carries 200 KB; it is dropped alone, never retried.
    with OtlpReceiver(grpc_max_message_bytes=64 * 1024, http_max_body_bytes=64 * 1024) as receiver:
        tp, processor = provider(receiver, protocol, max_export_batch_size=20)
        tracer = tp.get_tracer("faults")
        for i in range(20):
            attrs = {"seq": i, "blob": "x" * 200_000} if i == 7 else {"seq": i}
            with tracer.start_as_current_span(f"s{i}", attributes=attrs):
                pass
        assert processor.force_flush(10_000) is False  # one span could not be delivered
        spans = receiver.spans()
        assert sorted(s.attributes["seq"] for s in spans) == [i for i in range(20) if i != 7]
        tp.shutdown()
        assert STATS.dropped_for("traces") == {_stats.TOO_LARGE: 1}
        assert STATS.exported_counts()["traces"] == 19
        # Halving 20 -> 10 -> 5 -> 3/2 -> ... : a handful of attempts, not a retry loop.
        assert len(receiver.attempts) <= 12


def test_request_cap_splits_before_sending(otelkit_otlp_receiver: OtlpReceiver) -> None:
    # Batches whose encoded size is over the cap are split on our side: the collector never sees them.
    processor = make_span_processor(GrpcSender("traces", otelkit_otlp_receiver.grpc_endpoint), schedule_delay=0.05,
                                    max_export_batch_size=40)
    processor.pipeline._max_bytes = 20_000
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    emit(tp, 40, blob="y" * 1000)
    assert processor.force_flush(10_000)
    assert len(otelkit_otlp_receiver.spans()) == 40
    assert all(a.outcome == "ok" and a.items < 40 for a in otelkit_otlp_receiver.attempts)
    tp.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_is_counted_warned_and_not_retried(
        otelkit_otlp_receiver: OtlpReceiver, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    otelkit_otlp_receiver.reject_partially(3, "3 spans too old", times=1)
    tp, processor = provider(otelkit_otlp_receiver, protocol)
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        emit(tp, 10)
        assert processor.force_flush(10_000) is False  # 3 of them were rejected
    assert len(otelkit_otlp_receiver.attempts) == 1
    assert STATS.dropped_for("traces") == {_stats.REJECTED: 3}
    assert STATS.exported_counts()["traces"] == 7
    assert any("rejected 3 of 10" in r.getMessage() and "3 spans too old" in r.getMessage()
               for r in caplog.records)
    tp.shutdown()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_permanent_error_drops_the_batch_once(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    otelkit_otlp_receiver.fail(400, "INVALID_ARGUMENT", times=1)
    tp, processor = provider(otelkit_otlp_receiver, protocol)
    emit(tp, 5)
    processor.force_flush(10_000)
    emit(tp, 5, prefix="after")
    otelkit_otlp_receiver.wait_for_spans(5)
    tp.shutdown()
    assert len(otelkit_otlp_receiver.attempts) == 2
    assert {s.name for s in otelkit_otlp_receiver.spans()} == {f"after{i}" for i in range(5)}
    assert STATS.dropped_for("traces") == {_stats.EXPORT_FAILED: 5}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_queue_full_drops_newest_counts_and_warns_once(
        otelkit_otlp_receiver: OtlpReceiver, protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE")  # collector down: everything stays queued
    tp, processor = provider(otelkit_otlp_receiver, protocol, max_queue_size=100, max_export_batch_size=50)
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        emit(tp, 1000)
        otelkit_otlp_receiver.wait_for(lambda: len(otelkit_otlp_receiver.attempts) >= 1)
        otelkit_otlp_receiver.heal()
        spans = otelkit_otlp_receiver.wait_for_spans(100, timeout=15)
        tp.shutdown()
    # The oldest 100 (those that fitted) survive; the 900 that came later were refused and counted.
    assert sorted(s.attributes["seq"] for s in spans) == list(range(100))
    assert STATS.dropped_for("traces") == {_stats.QUEUE_FULL: 900}
    drop_warnings = [r for r in caplog.records if "dropped telemetry" in r.getMessage()]
    assert len(drop_warnings) == 1 and "spans (queue_full)" in drop_warnings[0].getMessage()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hung_collector_flush_and_shutdown_respect_their_deadline(otelkit_otlp_receiver: OtlpReceiver,
                                                                  protocol: str) -> None:
    otelkit_otlp_receiver.hang()
    tp, processor = provider(otelkit_otlp_receiver, protocol, export_timeout=30.0)
    emit(tp, 20)
    assert processor.force_flush(500) is False
    assert processor.pipeline.shutdown(timeout_millis=500) is not None
    # The batch was sent and never answered: counted as such (the collector may hold it), not as dropped,
    # and the cause names the collector that did not answer.
    assert STATS.unanswered_counts()["traces"] == 20
    assert STATS.dropped_for("traces") == {}
    assert "no answer" in STATS.causes_for("traces")["unanswered"]
    otelkit_otlp_receiver.heal()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_logs_pipeline_retries_and_counts(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE", times=1)
    processor = make_log_processor(sender(otelkit_otlp_receiver, protocol, "logs"), schedule_delay=0.05)
    lp = LoggerProvider(shutdown_on_exit=False)
    lp.add_log_record_processor(processor)
    otel_logger = lp.get_logger("faults")
    from opentelemetry._logs import LogRecord

    for i in range(30):
        otel_logger.emit(LogRecord(body=f"line {i}", severity_text="INFO"))
    records = otelkit_otlp_receiver.wait_for_logs(30, timeout=10)
    assert sorted(r.body for r in records) == sorted(f"line {i}" for i in range(30))
    lp.shutdown()
    assert STATS.exported_counts()["logs"] == 30


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metrics_backlog_is_sent_after_an_outage(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    exporter = OtlpMetricExporter(sender(otelkit_otlp_receiver, protocol, "metrics"), timeout=2)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    counter = mp.get_meter("faults").create_counter("faults.count")
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE")
    counter.add(1)
    reader.force_flush(5_000)  # collection 1 fails and is kept (the SDK's reader returns True regardless)
    counter.add(2)
    reader.force_flush(5_000)  # collection 2 fails and is kept
    expected = "status:503" if protocol == "http" else "grpc:UNAVAILABLE"
    assert {a.outcome for a in otelkit_otlp_receiver.attempts} == {expected}
    otelkit_otlp_receiver.heal()
    counter.add(4)
    reader.force_flush(5_000)  # backlog (1, then 3) then 7, in order
    values = [p.value for p in otelkit_otlp_receiver.metrics("faults.count")]
    assert values == [1, 3, 7]
    mp.shutdown()
    assert STATS.dropped_for("metrics") == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_slow_collector_within_the_timeout_gets_everything_once(otelkit_otlp_receiver: OtlpReceiver,
                                                                protocol: str) -> None:
    otelkit_otlp_receiver.delay(0.3)
    tp, processor = provider(otelkit_otlp_receiver, protocol, max_export_batch_size=20)
    emit(tp, 60)
    assert processor.force_flush(10_000)
    assert sorted(s.attributes["seq"] for s in otelkit_otlp_receiver.spans()) == list(range(60))
    tp.shutdown()
    assert STATS.dropped_for("traces") == {}


def test_oversized_http_response_is_not_read_whole(otelkit_otlp_receiver: OtlpReceiver) -> None:
    # OTLP: clients MUST cap the response they read (4 MiB suggested); upstream reads it all.
    otelkit_otlp_receiver.oversized_response(16 * 1024 * 1024, times=1)
    tp, processor = provider(otelkit_otlp_receiver, "http")
    emit(tp, 5)
    assert processor.force_flush(10_000)
    emit(tp, 5, prefix="next")
    assert processor.force_flush(10_000)  # the connection was dropped and re-opened, not left half-read
    assert len(otelkit_otlp_receiver.spans()) == 10
    assert [a.outcome for a in otelkit_otlp_receiver.attempts] == ["bigresp", "ok"]
    tp.shutdown()
    assert STATS.exported_counts()["traces"] == 10


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_never_answered_does_not_block_the_queue_forever(otelkit_otlp_receiver: OtlpReceiver,
                                                                    protocol: str) -> None:
    # The first batch is never answered, three times in a row: it is given up (reported as sent without an
    # answer, not as dropped), and the batches behind it are delivered.
    otelkit_otlp_receiver.hang(times=3)
    tp, processor = provider(otelkit_otlp_receiver, protocol, export_timeout=0.3, max_export_batch_size=10)
    emit(tp, 10, prefix="first")
    otelkit_otlp_receiver.wait_for(lambda: len(otelkit_otlp_receiver.attempts) >= 3, timeout=30)
    emit(tp, 10, prefix="later")
    spans = otelkit_otlp_receiver.wait_for_spans(10, timeout=30)
    assert {s.name for s in spans} == {f"later{i}" for i in range(10)}
    tp.shutdown()
    assert [a.outcome for a in otelkit_otlp_receiver.attempts[:3]] == ["hang"] * 3
    assert STATS.unanswered_counts()["traces"] == 10
    assert STATS.resent_counts()["traces"] == 20  # attempts 2 and 3 of the first batch: possible duplicates
    assert STATS.dropped_for("traces") == {}
    assert STATS.exported_counts()["traces"] == 10


def test_grpc_size_text_splits_and_load_refusal_does_not(otelkit_otlp_receiver: OtlpReceiver) -> None:
    # Unit-level view of the classification on a real gRPC server: its own size limit is a size refusal
    # (split), an application's RESOURCE_EXHAUSTED is a load refusal (back off, same batch, never split).
    from otelkit._export import LOAD, RETRY, TOO_LARGE

    with OtlpReceiver(grpc_max_message_bytes=1000) as small:
        result = GrpcSender("traces", small.grpc_endpoint).send(b"\x0a\xff\x0f" + b"x" * 2047, 5)
        assert result.kind == TOO_LARGE and "larger than max" in result.detail
    otelkit_otlp_receiver.fail(429, "RESOURCE_EXHAUSTED", times=1)
    result = GrpcSender("traces", otelkit_otlp_receiver.grpc_endpoint).send(b"", 5)
    assert (result.kind, result.cause) == (RETRY, LOAD)
    http = HttpSender("traces", f"{otelkit_otlp_receiver.http_endpoint}/v1/traces")
    otelkit_otlp_receiver.fail(503, "UNAVAILABLE", times=1)
    assert (http.send(b"", 5).cause) == LOAD
    otelkit_otlp_receiver.fail(413, "UNAVAILABLE", times=1)
    assert http.send(b"", 5).kind == TOO_LARGE
