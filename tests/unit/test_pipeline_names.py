"""The pipeline's names: one module defines them, they match the conventions, and the docs list them all."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pipeline_support import Telemetry, in_memory_providers
from opentelemetry.semconv._incubating.attributes import messaging_attributes as semconv_attrs
from opentelemetry.semconv._incubating.metrics import messaging_metrics as semconv_metrics
from opentelemetry.semconv.attributes import error_attributes

from otelkit import _names, pipeline
from otelkit._pipeline.instruments import instruments


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


DOC = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"
PIPELINE_METRICS = {_names.MESSAGING_SENT, _names.MESSAGING_CONSUMED, _names.MESSAGING_OPERATION_DURATION,
                    _names.MESSAGING_PROCESS_DURATION, _names.MESSAGE_END_TO_END, _names.MESSAGE_TIME_IN_QUEUE,
                    _names.MESSAGES_SETTLED, _names.QUEUE_LENGTH, _names.BATCH_SIZE, _names.STAGE_DURATION,
                    _names.STAGE_ITEMS, _names.DISCOVERED_ITEMS}


def test_semconv_names_match_the_conventions_package() -> None:
    assert _names.MESSAGING_SENT.name == semconv_metrics.MESSAGING_CLIENT_SENT_MESSAGES
    assert _names.MESSAGING_CONSUMED.name == semconv_metrics.MESSAGING_CLIENT_CONSUMED_MESSAGES
    assert _names.MESSAGING_OPERATION_DURATION.name == semconv_metrics.MESSAGING_CLIENT_OPERATION_DURATION
    assert _names.MESSAGING_PROCESS_DURATION.name == semconv_metrics.MESSAGING_PROCESS_DURATION
    assert _names.MESSAGING_SYSTEM == semconv_attrs.MESSAGING_SYSTEM
    assert _names.MESSAGING_DESTINATION == semconv_attrs.MESSAGING_DESTINATION_NAME
    assert _names.MESSAGING_OPERATION_TYPE == semconv_attrs.MESSAGING_OPERATION_TYPE
    assert _names.MESSAGING_OPERATION_NAME == semconv_attrs.MESSAGING_OPERATION_NAME
    assert _names.MESSAGING_MESSAGE_ID == semconv_attrs.MESSAGING_MESSAGE_ID
    assert _names.MESSAGING_CONVERSATION_ID == semconv_attrs.MESSAGING_MESSAGE_CONVERSATION_ID
    assert _names.MESSAGING_BATCH_COUNT == semconv_attrs.MESSAGING_BATCH_MESSAGE_COUNT
    assert _names.MESSAGING_CONSUMER_GROUP == semconv_attrs.MESSAGING_CONSUMER_GROUP_NAME
    assert _names.ERROR_TYPE == error_attributes.ERROR_TYPE


def test_own_names_stay_out_of_the_conventions_namespace() -> None:
    for metric in PIPELINE_METRICS - {_names.MESSAGING_SENT, _names.MESSAGING_CONSUMED,
                                      _names.MESSAGING_OPERATION_DURATION, _names.MESSAGING_PROCESS_DURATION}:
        assert metric.name.startswith("otelkit."), metric


def test_every_emitted_metric_comes_from_names(otel: Telemetry) -> None:
    with pipeline.observe_queue("q", lambda: 1, system="redis"):
        with pipeline.emit("q", {}, system="redis") as msg:
            raw = msg.wrap("x")
        with pipeline.receive("q", raw, system="redis"):
            pass
        with pipeline.receive_batch("q", [raw], system="redis"), pipeline.stage("s"):
            pass
        pipeline.discovered()
        emitted = {p_name for p_name in _metric_names(otel)}
    assert emitted == {m.name for m in PIPELINE_METRICS}
    assert PIPELINE_METRICS <= set(_names.ALL_METRICS)
    ins = instruments()
    assert all(getattr(ins, slot) is not None for slot in ins.__slots__)


def _metric_names(otel: Telemetry) -> set[str]:
    data = otel.reader.get_metrics_data()
    assert data is not None
    # SDK 1.40 reports its own otel.sdk.* metrics by default: not otelkit's to name
    return {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
            if not m.name.startswith("otel.sdk.")}


def test_docs_list_every_pipeline_metric_with_its_unit() -> None:
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \| [a-z ]+ \| `([^`]+)` \|", DOC.read_text(), re.M))
    assert rows == {m.name: m.unit for m in PIPELINE_METRICS}
