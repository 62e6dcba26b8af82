"""Queue-depth gauge: probes feed otelkit.messaging.queue.length; failures skip one sample only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pipeline_support import Telemetry, in_memory_providers
from opentelemetry import context as otel_context

from otelkit import pipeline
from otelkit._names import ATTR_QUEUE_STATE, QUEUE_LENGTH


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    with in_memory_providers() as telemetry:
        yield telemetry


def test_probes_are_observed_until_closed(otel: Telemetry) -> None:
    depth = {"value": 7}
    suppressed: list[object] = []

    def probe() -> int:
        suppressed.append(otel_context.get_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY))
        return depth["value"]

    def broken() -> int:
        raise ConnectionError("redis down")

    ready = pipeline.observe_queue("enrich", probe, system="redis", state="ready")
    failing = pipeline.observe_queue("broken", broken, system="redis")
    skipped = pipeline.observe_queue("empty", lambda: None, system="redis")
    try:
        point = otel.point(QUEUE_LENGTH.name, **{"messaging.destination.name": "enrich"})
        assert point.value == 7 and point.attributes[ATTR_QUEUE_STATE] == "ready"
        assert suppressed == [True]  # the probe's own Redis command is not traced every interval
        names = {p.attributes["messaging.destination.name"] for p in otel.points(QUEUE_LENGTH.name)}
        assert names == {"enrich"}
        depth["value"] = 3
        assert otel.point(QUEUE_LENGTH.name, **{"messaging.destination.name": "enrich"}).value == 3
    finally:
        ready.close()
        failing.close()
        skipped.close()


def test_closed_probe_is_not_called(otel: Telemetry) -> None:
    calls: list[int] = []
    with pipeline.observe_queue("q", lambda: calls.append(1) or 1, system="redis"):
        otel.reader.get_metrics_data()
    otel.reader.get_metrics_data()
    assert calls == [1]


def test_redis_probe_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind='hash' is not valid: expected one of list, set, stream, zset"):
        pipeline.redis_probe(object(), "key", "hash")  # type: ignore[arg-type]
