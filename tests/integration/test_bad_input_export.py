"""Bad input that only shows on the wire: real processes exporting to a real OTLP receiver on loopback.

* configuration from a real environment with garbage in it (undecodable bytes, durations beyond what a
  thread can wait, header values with CR/LF): a clear ``ConfigError`` at ``init()``, or with
  ``OTELKIT_STRICT=false`` the default and telemetry that still arrives -- never a process that looks
  fine and silently exports nothing;
* data the application produces: a 5 MB attribute, text with lone surrogates (undecodable bytes from
  ``os.environ``, ``os.listdir``, ``sys.argv``): the rest of the batch must still arrive.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import otelkit
from otelkit import _init
from otelkit._export.stats import STATS
from otelkit.testing._receiver import OtlpReceiver

APP = r'''
import logging, os, sys
import otelkit
try:
    otelkit.init(instrument=(), system_metrics=False, metrics_exporter="none")
except otelkit.ConfigError as exc:
    print("CONFIG-ERROR", exc, file=sys.stderr)
    sys.exit(3)
for i in range(3):
    with otelkit.span(f"work{i}"):
        logging.getLogger("app").warning("line %d", i)
report = otelkit.shutdown(timeout=5)
print("REPORT", report)
'''


def _run(receiver: OtlpReceiver, extra: dict[bytes, bytes]) -> subprocess.CompletedProcess[bytes]:
    env = {k.encode(): v.encode() for k, v in os.environ.items() if not k.startswith(("OTEL", "SENTRY"))}
    env[b"OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint.encode()
    env[b"OTEL_SERVICE_NAME"] = b"bad-input-app"
    env.update(extra)
    return subprocess.run([sys.executable, "-c", APP], env=env, capture_output=True, timeout=60)  # type: ignore[arg-type]


def _drops_since(before: dict[tuple[str, str], int], signal: str, reason: str) -> int:
    """Items of ``signal`` dropped for ``reason`` since ``before`` (shutdown reports hold process totals)."""
    key = (signal, reason)
    return STATS.dropped_counts().get(key, 0) - before.get(key, 0)


@pytest.fixture
def drops_before() -> dict[tuple[str, str], int]:
    return dict(STATS.dropped_counts())


GARBAGE_ENV = {
    "service name not UTF-8": (b"OTEL_SERVICE_NAME", b"svc\xff"),
    "resource attribute not UTF-8": (b"OTEL_RESOURCE_ATTRIBUTES", b"team=\xff\xfe"),
    "header with CR/LF": (b"OTEL_EXPORTER_OTLP_HEADERS", b"x-api-key=abc%0D%0AX-Evil: 1"),
    "header not UTF-8": (b"OTEL_EXPORTER_OTLP_HEADERS", b"x-api-key=\xff"),
    "batch delay beyond TIMEOUT_MAX": (b"OTEL_BSP_SCHEDULE_DELAY", b"99999999999999999999999"),
    "log batch delay 1e309": (b"OTEL_BLRP_SCHEDULE_DELAY", b"1e309"),
    "link limit beyond ssize_t": (b"OTEL_SPAN_LINK_COUNT_LIMIT", b"99999999999999999999999"),
    "queue beyond ssize_t": (b"OTEL_BSP_MAX_QUEUE_SIZE", b"99999999999999999999999"),
}


@pytest.mark.parametrize(("var", "value"), list(GARBAGE_ENV.values()), ids=list(GARBAGE_ENV))
def test_garbage_environment_is_a_config_error_naming_the_variable(otelkit_otlp_receiver: OtlpReceiver, var: bytes,
                                                                   value: bytes) -> None:
    result = _run(otelkit_otlp_receiver, {var: value})
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 3, stderr
    assert "CONFIG-ERROR" in stderr and var.decode() in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(("var", "value"), list(GARBAGE_ENV.values()), ids=list(GARBAGE_ENV))
def test_garbage_environment_with_strict_false_still_delivers(otelkit_otlp_receiver: OtlpReceiver, var: bytes,
                                                              value: bytes) -> None:
    # Each of these values used to be accepted and then broke export silently: the export thread died on
    # Event.wait(1e20), every span start raised inside the SDK (no-op spans), every request failed with
    # HTTP 400 (invalid UTF-8 on the wire) or in the HTTP client (CR/LF in a header).
    result = _run(otelkit_otlp_receiver, {var: value, b"OTELKIT_STRICT": b"false"})
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 0, stderr
    assert "ConfigWarning" in stderr and var.decode() in stderr
    spans = otelkit_otlp_receiver.wait_for_spans(3, timeout=30)
    assert sorted(s.name for s in spans) == ["work0", "work1", "work2"]
    otelkit_otlp_receiver.wait_for_logs(3, timeout=30)
    assert "Traceback" not in stderr


@pytest.fixture(params=["http/protobuf", "grpc"])
def exporting(otelkit_otlp_receiver: OtlpReceiver, request: pytest.FixtureRequest) -> Any:
    endpoint = otelkit_otlp_receiver.grpc_endpoint if request.param == "grpc" else otelkit_otlp_receiver.http_endpoint
    otelkit.init(service_name="bad-input", endpoint=endpoint, protocol=request.param, instrument=(),
                 system_metrics=False, metrics_exporter="none")
    try:
        yield otelkit_otlp_receiver
    finally:
        _init.reset()


def test_a_5mb_attribute_never_blocks_and_never_costs_the_other_spans(exporting: OtlpReceiver,
                                                                      drops_before: dict[tuple[str, str], int]) -> None:
    for i in range(3):
        with otelkit.span(f"before{i}"):
            pass
    with otelkit.span("huge", big="x" * 5_000_000):
        pass
    for i in range(3):
        with otelkit.span(f"after{i}"):
            pass
    report = otelkit.shutdown(timeout=5)
    names = {s.name for s in exporting.spans()}
    assert {"before0", "before1", "before2", "after0", "after1", "after2"} <= names, report
    # The huge span is delivered (truncated) or dropped and counted -- never retried forever.
    assert "huge" in names or _drops_since(drops_before, "traces", "too_large") == 1, str(report)
    assert not report.timed_out


def test_a_5mb_attribute_is_truncated_by_default(exporting: OtlpReceiver) -> None:
    # Issue 7 item 5: value-length limits on by default, so one huge value costs that value, not the span.
    with otelkit.span("huge", big="x" * 5_000_000, small="kept"):
        pass
    report = otelkit.shutdown(timeout=5)
    spans = exporting.spans("huge")
    assert len(spans) == 1, str(report)
    assert spans[0].attributes["small"] == "kept" and 0 < len(spans[0].attributes["big"]) < 5_000_000


def test_one_undecodable_string_does_not_drop_the_batch(exporting: OtlpReceiver,
                                                        drops_before: dict[tuple[str, str], int]) -> None:
    for i in range(3):
        with otelkit.span(f"ok{i}"):
            pass
    with otelkit.span("surrogate", path="report-\udcff.csv"):
        pass
    report = otelkit.shutdown(timeout=5)
    names = {s.name for s in exporting.spans()}
    assert {"ok0", "ok1", "ok2", "surrogate"} <= names, str(report)
    assert _drops_since(drops_before, "traces", "export_failed") == 0, str(report)


def test_one_undecodable_log_message_does_not_drop_the_batch(exporting: OtlpReceiver,
                                                             drops_before: dict[tuple[str, str], int]) -> None:
    import logging

    log = logging.getLogger("app.bad_input")
    for i in range(3):
        log.warning("ok %d", i)
    log.warning("cannot open %s", "report-\udcff.csv")
    report = otelkit.shutdown(timeout=5)
    bodies = [str(r.body) for r in exporting.logs()]
    assert {"ok 0", "ok 1", "ok 2"} <= set(bodies), str(report)
    assert len(bodies) == 4 and _drops_since(drops_before, "logs", "export_failed") == 0, str(report)


def test_one_out_of_range_metric_value_does_not_kill_all_metrics(otelkit_otlp_receiver: OtlpReceiver) -> None:
    from opentelemetry import metrics

    otelkit.init(service_name="bad-input", endpoint=otelkit_otlp_receiver.http_endpoint, instrument=(),
                 system_metrics=False,
                 traces_exporter="none", logs_exporter="none")
    try:
        meter = metrics.get_meter("app")
        meter.create_counter("app.good").add(1)
        meter.create_up_down_counter("app.huge").add(10**20)
        report = otelkit.shutdown(timeout=5)
        assert "app.good" in {p.name for p in otelkit_otlp_receiver.metrics()}, str(report)
    finally:
        _init.reset()


def test_a_10mb_log_message_is_dropped_and_counted_never_the_batch(exporting: OtlpReceiver,
                                                                   drops_before: dict[tuple[str, str], int]) -> None:
    import logging

    log = logging.getLogger("app.bad_input")
    log.warning("before")
    log.warning("x" * 10_000_000)
    log.warning("after")
    report = otelkit.shutdown(timeout=5)
    bodies = [str(r.body) for r in exporting.logs()]
    assert "before" in bodies and "after" in bodies, str(report)
    # Delivered (truncated) or dropped and counted as too large -- never silently, never retried forever.
    assert len(bodies) == 3 or _drops_since(drops_before, "logs", "too_large") == 1, str(report)
    assert not report.timed_out
