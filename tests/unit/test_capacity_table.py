"""benchmarks/capacity.py: the capacity table's arithmetic on fixed inputs, and its measuring helpers on a
tiny saved-telemetry sample (no timing anywhere)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "capacity.py"


@pytest.fixture(scope="module")
def capacity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity_under_test", _PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _measured(capacity: ModuleType, **overrides: float) -> Any:
    values: dict[str, float] = dict(spans_per_event=10, logs_per_event=5, traces_per_event=2, series_per_process=50,
                                    span_bytes=400, span_bytes_gzip=80, log_bytes=300, log_bytes_gzip=60,
                                    export_cpu_us_per_span=10, app_cpu_us_per_span=30)
    values.update(overrides)
    return capacity.Measured(**values)


def test_rows_on_fixed_inputs(capacity: ModuleType) -> None:
    a = capacity.Assumptions(log_vs_span_cpu=1.5)
    rows = capacity.capacity_rows(_measured(capacity), a)
    assert [r.events_per_s for r in rows] == [1_000, 10_000, 100_000]
    r = rows[0]
    assert (r.spans_per_s, r.logs_per_s) == (10_000, 5_000)
    # spans: 10k x (30 + 10) us = 0.4 s; logs: 5k x (30 x 1.5 + 10) us = 0.275 s -> 0.675 cores
    assert r.sdk_cores == pytest.approx(0.675)
    assert r.network_mb_s == pytest.approx((10_000 * 400 + 5_000 * 300) / 1e6)
    assert r.network_mb_s_gzip == pytest.approx((10_000 * 80 + 5_000 * 60) / 1e6)
    assert (r.gateway_replicas, r.sampler_replicas) == (1, 1)  # 15k items/s <= 10k/core x 2 cores
    assert r.sampler_traces_in_memory == pytest.approx(1_000 * 2 * 30)
    assert r.sampler_memory_gb == pytest.approx(10_000 * 30 * 400 * 3 / 1e9)
    assert r.tempo_gb_day == pytest.approx(10_000 * 80 * 86_400 / 1e9)
    assert r.loki_gb_day == pytest.approx(5_000 * 60 * 86_400 / 1e9)
    # gateway: 150k items/s / 20k per replica, rounded up; sampler: the 100k spans/s only
    assert (rows[1].gateway_replicas, rows[1].sampler_replicas) == (8, 5)
    # Everything but the replica count (a ceiling) is linear in the rate.
    assert rows[2].tempo_gb_day == pytest.approx(100 * r.tempo_gb_day)
    assert rows[2].sdk_cores == pytest.approx(100 * r.sdk_cores)


def test_head_sampling_thins_spans_not_logs(capacity: ModuleType) -> None:
    m = _measured(capacity)
    full = capacity.capacity_rows(m, capacity.Assumptions(), rates=[10_000])[0]
    tenth = capacity.capacity_rows(m, capacity.Assumptions(keep_ratio=0.1), rates=[10_000])[0]
    assert tenth.tempo_gb_day == pytest.approx(full.tempo_gb_day / 10)
    assert tenth.loki_gb_day == pytest.approx(full.loki_gb_day)
    assert tenth.sampler_traces_in_memory == pytest.approx(full.sampler_traces_in_memory / 10)
    # The app thread still creates every span: CPU falls by the export share of the dropped spans only.
    assert tenth.sdk_cores == pytest.approx(full.sdk_cores - 0.9 * 10_000 * 10 * 10 / 1e6)


def test_limits_are_where_the_rows_cross_them(capacity: ModuleType) -> None:
    m, a = _measured(capacity), capacity.Assumptions()
    lim = capacity.limits(m, a)
    at = lim["one gateway collector replica"]
    assert at == pytest.approx(20_000 / 15)
    below, above = capacity.capacity_rows(m, a, rates=[int(at), int(at) + 1])
    assert (below.gateway_replicas, above.gateway_replicas) == (1, 2)
    assert lim["one tail-sampling collector replica"] == pytest.approx(20_000 / 10)
    gil = lim["one process's telemetry fills a core (GIL)"]
    assert capacity.capacity_rows(m, a, rates=[int(gil)])[0].sdk_cores <= 1.0
    assert capacity.capacity_rows(m, a, rates=[int(gil) + 2])[0].sdk_cores > 1.0
    num_traces = lim["tail_sampling num_traces default (50 000) over decision_wait"]
    assert capacity.capacity_rows(m, a, rates=[round(num_traces)])[0].sampler_traces_in_memory == \
        pytest.approx(50_000, rel=1e-3)
    assert lim["Tempo default per-tenant ingestion limit (15 MB/s)"] == pytest.approx(15e6 / (10 * 400))
    assert lim["one 1 Gbit/s link, gzip"] > lim["one 1 Gbit/s link, uncompressed"]


def test_markdown_says_prometheus_series_do_not_follow_the_rate(capacity: ModuleType) -> None:
    m, a = _measured(capacity), capacity.Assumptions(processes=4)
    text = capacity.render_markdown(m, a, capacity.capacity_rows(m, a), capacity.limits(m, a))
    assert "| 10,000 | 100,000 | 50,000 |" in text
    assert "50.0 series per process × 4 processes = 200 series, the same at every event rate" in text


_RESOURCE = {"service.name": "worker", "service.instance.id": "a"}


def _span(name: str, trace: str, span: str, parent: str | None, kind: str, corr: str,
          links: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"signal": "span", "name": name, "kind": kind, "trace_id": trace, "span_id": span,
            "parent_span_id": parent, "attributes": {"otelkit.correlation_id": corr}, "resource": _RESOURCE,
            "scope": "otelkit.pipeline", "links": links or [], "events": [], "status_code": "STATUS_CODE_ERROR",
            "status_message": "boom", "start_time_unix_nano": 1, "end_time_unix_nano": 2}


def test_per_event_and_wire_bytes_from_saved_telemetry(capacity: ModuleType, tmp_path: Path) -> None:
    t1, t2 = "1" * 32, "2" * 32
    lines = [
        _span("send", t1, "a" * 16, None, "SPAN_KIND_PRODUCER", "order-1"),
        _span("process", t1, "b" * 16, "a" * 16, "SPAN_KIND_CONSUMER", "order-1",
              links=[{"trace_id": t1, "span_id": "a" * 16, "attributes": {}}]),
        _span("send", t2, "c" * 16, None, "SPAN_KIND_PRODUCER", "order-2"),
        {"signal": "log", "body": "stored", "severity_text": "INFO", "severity_number": 9, "trace_id": t1,
         "span_id": "b" * 16, "attributes": {"otelkit.correlation_id": "order-1"}, "resource": _RESOURCE,
         "scope": "app", "event_name": "", "time_unix_nano": 3},
        {"signal": "metric", "name": "m", "attributes": {"x": "1"}, "resource": _RESOURCE},
        {"signal": "metric", "name": "m", "attributes": {"x": "1"}, "resource": _RESOURCE},  # same series, later
        {"signal": "metric", "name": "m", "attributes": {"x": "2"}, "resource": _RESOURCE},
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    items = capacity._load(str(path))
    counts = capacity.per_event(items)
    assert counts["events"] == 2 and counts["spans_per_event"] == 1.5 and counts["logs_per_event"] == 0.5
    assert counts["traces_per_event_as_run"] == 1.0
    assert counts["traces_per_event"] == 1.5  # the consumer would be its own linked root by default
    assert counts["series_per_process"] == 2
    sizes = capacity.wire_bytes(items)
    # What was measured is a real OTLP request with every span and record in it.
    from otelkit._export.encoding import encode_logs, encode_spans

    spans, logs = capacity._rebuild(items)
    request = ExportTraceServiceRequest.FromString(encode_spans(next(iter(spans.values()))))
    decoded = request.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in decoded] == ["send", "process", "send"]
    assert decoded[1].links[0].span_id == bytes.fromhex("a" * 16) and decoded[0].status.message == "boom"
    body = encode_logs(next(iter(logs.values())))
    assert ExportLogsServiceRequest.FromString(body).resource_logs[0].scope_logs[0].log_records[0].body.string_value \
        == "stored"
    assert sizes["log_bytes"] == len(body) and sizes["log_bytes_gzip"] == len(gzip.compress(body))
    assert 0 < sizes["span_bytes_gzip"] and sizes["span_bytes"] > 40


def test_per_event_refuses_telemetry_without_events(capacity: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="correlation_id"):
        capacity.per_event({"span": [], "log": [], "metric": []})


def test_cpu_figures_from_run_py_json(capacity: ModuleType, tmp_path: Path) -> None:
    rows = [
        {"module": "export", "label": "export thread CPU per delivered span, grpc", "otelkit": [9.0, 8.0, 7.0]},
        {"module": "export", "label": "export thread CPU per delivered span, grpc, while 2 CPU-hog processes keep "
                                    "both cores busy", "otelkit": [99.0]},
        {"module": "export", "label": "application thread CPU per span created, grpc", "otelkit": [30.0, 34.0]},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"versions": {}, "fast": False, "rows": rows}))
    assert capacity.cpu_from_bench_json(str(path)) == {"export_cpu_us_per_span": 8.0, "app_cpu_us_per_span": 32.0}
    path.write_text(json.dumps({"rows": rows[:1]}))
    with pytest.raises(KeyError, match="application thread CPU"):
        capacity.cpu_from_bench_json(str(path))


def test_docs_table_is_the_scripts_output_for_the_saved_inputs(capacity: ModuleType) -> None:
    """docs/capacity.md's tables are benchmarks/capacity.py's rendering of the measured inputs it saved."""
    root = Path(__file__).resolve().parents[2]
    saved = json.loads((root / "benchmarks" / "capacity_inputs.json").read_text())["measured"]
    m, a = capacity.Measured(**saved), capacity.Assumptions()
    rendered = capacity.render_markdown(m, a, capacity.capacity_rows(m, a), capacity.limits(m, a))
    tables = rendered.split("\n\nPrometheus:")[0]
    assert tables in (root / "docs" / "capacity.md").read_text()
