"""The whole-event sampler: a deterministic function of the correlation ID, parent- and link-respecting."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.span import TraceState

from otelkit import _names
from otelkit._config import ConfigError, resolve
from otelkit._sampling import CorrelationRatioSampler, correlation_randomness, factory, threshold


def test_the_function_is_sha256_of_the_id() -> None:
    # The documented test vector: any language reproduces it with SHA-256.
    assert correlation_randomness("order-42") == 0x3BF8B157C4238E
    cid = uuid.uuid4().hex
    assert correlation_randomness(cid) == int.from_bytes(hashlib.sha256(cid.encode()).digest()[:7], "big")
    assert threshold(1.0) == 0
    assert threshold(0.0) == 1 << 56
    assert threshold(0.25) == 3 << 54


def _decide(sampler: CorrelationRatioSampler, cid: str, trace_id: int = 1) -> Decision:
    attrs = {_names.MESSAGING_CONVERSATION_ID: cid}
    return sampler.should_sample(None, trace_id, "send x", attributes=attrs).decision


def test_same_id_same_decision_whatever_the_trace() -> None:
    sampler = CorrelationRatioSampler(0.5)
    for _ in range(200):
        cid = uuid.uuid4().hex
        expected = correlation_randomness(cid) >= threshold(0.5)
        decisions = {_decide(sampler, cid, trace_id=t).is_sampled() for t in (1, 2**100, 12345)}
        assert decisions == {expected}


def test_the_ratio_is_kept_within_binomial_bounds() -> None:
    sampler = CorrelationRatioSampler(0.1)
    n = 4000
    kept = sum(_decide(sampler, f"event-{i}").is_sampled() for i in range(n))
    # mean 400, sd 19: six sigma either side
    assert 286 <= kept <= 514


def test_correlation_id_from_baggage_when_no_attribute() -> None:
    sampler = CorrelationRatioSampler(0.5)
    for i in range(100):
        cid = f"bag-{i}"
        ctx = baggage.set_baggage(_names.CORRELATION_BAGGAGE_KEY, cid, Context())
        got = sampler.should_sample(ctx, 7, "job").decision.is_sampled()
        assert got == (correlation_randomness(cid) >= threshold(0.5))


def test_without_correlation_id_the_trace_id_decides() -> None:
    sampler = CorrelationRatioSampler(0.5)
    low = (1 << 55) - 1  # low 56 bits below the threshold 2**55: dropped
    high = (1 << 56) - 1
    assert sampler.should_sample(None, (5 << 64) | low, "x").decision is Decision.DROP
    assert sampler.should_sample(None, (5 << 64) | high, "x").decision is Decision.RECORD_AND_SAMPLE


def _remote(sampled: bool, state: TraceState | None = None) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=state)


def test_a_parent_is_followed_whatever_the_id() -> None:
    sampler = CorrelationRatioSampler(0.0)  # would drop everything on its own
    parent_state = TraceState([("ot", "th:8"), ("vendor", "x")])
    ctx = trace.set_span_in_context(NonRecordingSpan(_remote(True, parent_state)))
    result = sampler.should_sample(ctx, 0xABC, "child", attributes={_names.MESSAGING_CONVERSATION_ID: "a"})
    assert result.decision is Decision.RECORD_AND_SAMPLE
    assert result.trace_state == parent_state
    always = CorrelationRatioSampler(1.0)
    ctx = trace.set_span_in_context(NonRecordingSpan(_remote(False)))
    assert always.should_sample(ctx, 0xABC, "child").decision is Decision.DROP


def test_a_consumer_follows_its_linked_producer() -> None:
    never = CorrelationRatioSampler(0.0)
    kept = never.should_sample(None, 9, "process q", links=[Link(_remote(False)), Link(_remote(True))])
    assert kept.decision is Decision.RECORD_AND_SAMPLE
    always = CorrelationRatioSampler(1.0)
    dropped = always.should_sample(None, 9, "process q", links=[Link(_remote(False))])
    assert dropped.decision is Decision.DROP


def test_sampled_roots_carry_the_threshold_and_randomness() -> None:
    sampler = CorrelationRatioSampler(0.25)
    cid = next(c for c in (f"c{i}" for i in range(1000)) if correlation_randomness(c) >= threshold(0.25))
    result = sampler.should_sample(None, 3, "send", attributes={_names.MESSAGING_CONVERSATION_ID: cid})
    assert result.trace_state is not None
    assert result.trace_state["ot"] == f"th:c;rv:{correlation_randomness(cid):014x}"
    full = CorrelationRatioSampler(1.0).should_sample(None, 3, "x")
    assert full.trace_state is not None and full.trace_state["ot"] == "th:0"


def test_bad_ratios_are_clear_errors() -> None:
    for bad in (1.5, -0.1, "abc", True):
        with pytest.raises(ValueError, match="ratio|OTEL_TRACES_SAMPLER_ARG"):
            factory(bad)
    assert factory("").ratio == 1.0
    assert factory(" 0.3 ").ratio == 0.3


def test_settings_accept_the_name_and_its_argument() -> None:
    settings = resolve(environ={"OTEL_TRACES_SAMPLER": "otelkit_correlation_ratio", "OTEL_TRACES_SAMPLER_ARG": "0.2"})
    assert settings.sampler == "otelkit_correlation_ratio"
    assert settings.sampler_arg == 0.2
    with pytest.raises(ConfigError, match="OTEL_TRACES_SAMPLER_ARG"):
        resolve(environ={"OTEL_TRACES_SAMPLER": "otelkit_correlation_ratio", "OTEL_TRACES_SAMPLER_ARG": "2"})


def test_spans_of_one_event_are_kept_or_dropped_together() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=CorrelationRatioSampler(0.5))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(100):
        cid = f"event-{i}"
        ctx = baggage.set_baggage(_names.CORRELATION_BAGGAGE_KEY, cid, Context())
        with tracer.start_as_current_span("send", context=ctx) as producer:
            with tracer.start_as_current_span("child"):
                pass
        producer_ctx = producer.get_span_context()
        with tracer.start_as_current_span("process", context=ctx, links=[Link(producer_ctx)]):
            pass
    names = [s.name for s in exporter.get_finished_spans()]
    assert names.count("send") == names.count("child") == names.count("process")
    assert 20 <= names.count("send") <= 80


def test_the_sdk_configurator_finds_it_by_entry_point() -> None:
    # Zero-code OpenTelemetry (opentelemetry-instrument, the distro) resolves OTEL_TRACES_SAMPLER through the
    # opentelemetry_traces_sampler entry points: the same variables select it without otelkit.init().
    code = ("from opentelemetry import trace; p = trace.get_tracer_provider(); "
            "print(type(p.sampler).__name__, p.sampler.ratio)")
    bindir = Path(sys.executable).parent
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "OTEL_TRACES_SAMPLER": "otelkit_correlation_ratio",
           "OTEL_TRACES_SAMPLER_ARG": "0.3", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
           "OTEL_LOGS_EXPORTER": "none", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}
    out = subprocess.run([str(bindir / "opentelemetry-instrument"), sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["CorrelationRatioSampler", "0.3"]
