"""Capacity on paper: what 1k, 10k and 100k pipeline events/s cost, from figures measured here (issue 15, part 5).

Measured inputs (this machine, this run):

* **per event**, from a real ``otelkit demo`` run that saved everything its receiver got
  (``--save-telemetry``, JSON lines): spans, log records and distinct trace IDs per event (an event
  = one correlation ID: discovery, the queue hop, enrichment with three HTTP calls, the DB write,
  retries and dead letters as they happened), and metric series per process (with cumulative
  temporality every series is one point per export interval, whatever the event rate);
* **bytes on the wire**: the saved spans and log records rebuilt as SDK objects and encoded by
  otelkit's own encoder (``otelkit/_export/encoding.py``), one request per process as the batch
  processor sends them at high rate, uncompressed and gzip;
* **CPU per span**: export-thread and application-thread CPU per span from ``benchmarks/run.py
  --json`` (``bench_export`` rows, gRPC, no hog), or measured here by ``bench_export``'s own
  producer against a real rotel collector when no JSON is given.

Assumed inputs (no otelcol, Tempo or Loki runs here) are the :class:`Assumptions` fields, each
with its public source; ``docs/capacity.md`` lists them beside the table.

Reproduce (about 2 minutes; the demo needs nothing but this virtualenv)::

    .venv/bin/python benchmarks/capacity.py --markdown
    .venv/bin/python benchmarks/capacity.py --telemetry demo.jsonl --bench-json results.json --markdown

``tests/unit/test_capacity_table.py`` runs :func:`capacity_rows` and :func:`limits` on fixed inputs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RATES = (1_000, 10_000, 100_000)
_DAY = 86_400


@dataclass(frozen=True)
class Measured:
    """Figures measured on this machine (see the module docstring)."""

    spans_per_event: float
    logs_per_event: float
    traces_per_event: float
    series_per_process: float
    span_bytes: float  # OTLP protobuf, uncompressed, per span
    span_bytes_gzip: float
    log_bytes: float
    log_bytes_gzip: float
    export_cpu_us_per_span: float  # otelkit's export thread (encode + send), per span delivered
    app_cpu_us_per_span: float  # application thread, per bare span created (start + end + processors)
    source: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Assumptions:
    """What cannot be measured here, each with where the figure comes from."""

    # OpenTelemetry Collector contrib load test TestTrace10kSPS, OTLP-gRPC in and out with the batch
    # processor: 10k spans/s within ExpectedMaxCPU 20 % of one core (testbed/tests/trace_test.go), i.e.
    # >= 50k spans/s per core. A gateway also load-balances or tail-samples, and must keep headroom:
    # we plan with 10k items/s per core (a 5x margin) on both tiers.
    collector_items_per_core: float = 10_000
    collector_cores_per_replica: float = 2
    # tail_sampling: decision_wait (ours: collector/gateway/otelcol-sampler.yaml) and its num_traces
    # default (50 000, the processor's README).
    decision_wait_s: float = 30
    num_traces_default: int = 50_000
    # In-memory size of a buffered span in the sampler, as a multiple of its OTLP wire size (pdata keeps
    # the decoded tree: maps, slices, strings). Planning factor, not measured.
    sampler_memory_factor: float = 3.0
    # Object storage per stored byte, as a multiple of the gzip'd OTLP size. Tempo's vParquet blocks
    # and Loki's compressed chunks + TSDB index are both compressed; we take gzip'd OTLP as the figure.
    storage_factor: float = 1.0
    # Per-tenant ingestion limits at their defaults: Tempo overrides ingestion_rate_limit_bytes = 15 MB/s;
    # Loki limits_config ingestion_rate_mb = 4 MB/s (both in their configuration reference).
    tempo_ingest_limit_mb_s: float = 15
    loki_ingest_limit_mb_s: float = 4
    # A log call in a span costs 172.0k instructions vs 126.3k for a span (benchmarks/RESULTS.md, core rows).
    log_vs_span_cpu: float = 172.0 / 126.3
    link_mb_s: float = 125  # 1 Gbit/s
    keep_ratio: float = 1.0  # head sampling ratio (OTEL_TRACES_SAMPLER_ARG); metrics are never sampled
    processes: int = 20  # application processes, for the Prometheus series count


@dataclass(frozen=True)
class CapacityRow:
    events_per_s: int
    spans_per_s: float
    logs_per_s: float
    sdk_cores: float
    network_mb_s: float
    network_mb_s_gzip: float
    gateway_replicas: int  # spans + log records (metrics are a few points per process)
    sampler_replicas: int  # spans only: logs and metrics go from the gateway to Loki / Prometheus
    sampler_traces_in_memory: float
    sampler_memory_gb: float
    tempo_gb_day: float
    loki_gb_day: float


def capacity_rows(m: Measured, a: Assumptions, rates: Iterable[int] = RATES) -> list[CapacityRow]:
    """The table: pure arithmetic on the measured and assumed figures."""
    rows = []
    for rate in rates:
        spans = rate * m.spans_per_event
        logs = rate * m.logs_per_event
        # The app thread's cost is counted for every span, kept or not (an upper bound: an unsampled span is
        # a non-recording span and costs less); only kept spans are exported. Logs are not sampled.
        cpu_us = (spans * m.app_cpu_us_per_span + spans * a.keep_ratio * m.export_cpu_us_per_span
                  + logs * (m.app_cpu_us_per_span * a.log_vs_span_cpu + m.export_cpu_us_per_span))
        kept_spans = spans * a.keep_ratio
        wire = kept_spans * m.span_bytes + logs * m.log_bytes
        wire_gz = kept_spans * m.span_bytes_gzip + logs * m.log_bytes_gzip
        per_replica = a.collector_items_per_core * a.collector_cores_per_replica
        traces_buffered = rate * m.traces_per_event * a.keep_ratio * a.decision_wait_s
        sampler_bytes = kept_spans * a.decision_wait_s * m.span_bytes * a.sampler_memory_factor
        rows.append(CapacityRow(
            events_per_s=rate, spans_per_s=spans, logs_per_s=logs, sdk_cores=cpu_us / 1e6,
            network_mb_s=wire / 1e6, network_mb_s_gzip=wire_gz / 1e6,
            gateway_replicas=max(1, math.ceil((kept_spans + logs) / per_replica)),
            sampler_replicas=max(1, math.ceil(kept_spans / per_replica)),
            sampler_traces_in_memory=traces_buffered, sampler_memory_gb=sampler_bytes / 1e9,
            tempo_gb_day=kept_spans * m.span_bytes_gzip * a.storage_factor * _DAY / 1e9,
            loki_gb_day=logs * m.log_bytes_gzip * a.storage_factor * _DAY / 1e9,
        ))
    return rows


def limits(m: Measured, a: Assumptions) -> dict[str, float]:
    """Events/s at which each limit is reached (linear in the rate, so one division each)."""
    per_event_span_cpu = m.spans_per_event * (m.app_cpu_us_per_span + a.keep_ratio * m.export_cpu_us_per_span)
    per_event_log_cpu = m.logs_per_event * (m.app_cpu_us_per_span * a.log_vs_span_cpu + m.export_cpu_us_per_span)
    wire_per_event = m.spans_per_event * a.keep_ratio * m.span_bytes + m.logs_per_event * m.log_bytes
    wire_gz_per_event = m.spans_per_event * a.keep_ratio * m.span_bytes_gzip + m.logs_per_event * m.log_bytes_gzip
    return {
        # One Python process has one GIL: all its telemetry work (both threads) fits in one core at most.
        "one process's telemetry fills a core (GIL)": 1e6 / (per_event_span_cpu + per_event_log_cpu),
        "one 1 Gbit/s link, uncompressed": a.link_mb_s * 1e6 / wire_per_event,
        "one 1 Gbit/s link, gzip": a.link_mb_s * 1e6 / wire_gz_per_event,
        "one gateway collector replica": a.collector_items_per_core * a.collector_cores_per_replica
        / (m.spans_per_event * a.keep_ratio + m.logs_per_event),
        "one tail-sampling collector replica": a.collector_items_per_core * a.collector_cores_per_replica
        / (m.spans_per_event * a.keep_ratio),
        "tail_sampling num_traces default (50 000) over decision_wait":
            a.num_traces_default / (m.traces_per_event * a.keep_ratio * a.decision_wait_s),
        "Tempo default per-tenant ingestion limit (15 MB/s)":
            a.tempo_ingest_limit_mb_s * 1e6 / (m.spans_per_event * a.keep_ratio * m.span_bytes),
        "Loki default per-tenant ingestion limit (4 MB/s)":
            a.loki_ingest_limit_mb_s * 1e6 / (m.logs_per_event * m.log_bytes),
    }


# --- Measuring ----------------------------------------------------------------------------------------------


def run_demo(path: str, events: int) -> None:
    """``otelkit demo`` with its in-process receiver, the in-process queue and SQLite, saving the telemetry."""
    cmd = [sys.executable, "-m", "otelkit", "demo", "--telemetry", "terminal", "--redis", "none",
           "--postgres", "none", "--events", str(events), "--save-telemetry", path]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    if not Path(path).exists():
        raise RuntimeError(f"otelkit demo saved nothing (exit {proc.returncode}): {proc.stdout[-2000:]}")


def _load(path: str) -> dict[str, list[dict[str, Any]]]:
    items: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                item = json.loads(line)
                items[item.pop("signal")].append(item)
    return items


def per_event(items: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Spans, logs, traces per event and series per process, from the saved demo telemetry."""
    spans, logs, points = items["span"], items["log"], items["metric"]
    events = {s["attributes"].get("otelkit.correlation_id") for s in spans} - {None}
    if not events:
        raise ValueError("no span carries otelkit.correlation_id: not a pipeline run")
    series: dict[str, set[str]] = defaultdict(set)
    for p in points:
        series[p["resource"].get("service.instance.id", "")].add(
            p["name"] + json.dumps(p["attributes"], sort_keys=True))
    # Traces per event with pipeline.receive()'s default parent="none" (each consumer span a linked root). The
    # demo passes parent="producer" (one trace per event); the sampler tier must plan for the default.
    roots = sum(1 for s in spans if not s["parent_span_id"])
    linked_consumers = sum(1 for s in spans if s["parent_span_id"] and s["links"] and "CONSUMER" in s["kind"])
    return {"events": len(events), "spans_per_event": len(spans) / len(events),
            "logs_per_event": len(logs) / len(events),
            "traces_per_event": (roots + linked_consumers) / len(events),
            "traces_per_event_as_run": len({s["trace_id"] for s in spans}) / len(events),
            "series_per_process": statistics.mean(len(v) for v in series.values()) if series else 0.0,
            "processes": len(series)}


def _rebuild(items: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """The saved spans and log records as SDK objects, grouped by process (one Resource object each)."""
    from types import SimpleNamespace

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    resources: dict[str, Any] = {}
    scopes: dict[str, Any] = {}

    def resource(attrs: dict[str, Any]) -> Any:
        key = json.dumps(attrs, sort_keys=True)
        if key not in resources:
            resources[key] = Resource(attrs)
        return resources[key]

    def scope(name: str) -> Any:
        return scopes.setdefault(name, InstrumentationScope(name))

    def ctx(trace_id: str, span_id: str, remote: bool = False) -> SpanContext:
        return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=remote,
                           trace_flags=TraceFlags(TraceFlags.SAMPLED))

    spans: dict[str, list[Any]] = defaultdict(list)
    for s in items["span"]:
        parent = ctx(s["trace_id"], s["parent_span_id"]) if s["parent_span_id"] else None
        status = Status(StatusCode[s["status_code"].replace("STATUS_CODE_", "") or "UNSET"],
                        s["status_message"] or None)
        spans[json.dumps(s["resource"], sort_keys=True)].append(ReadableSpan(
            name=s["name"], context=ctx(s["trace_id"], s["span_id"]), parent=parent,
            resource=resource(s["resource"]), attributes=s["attributes"],
            events=[Event(e["name"], e["attributes"], e["time_unix_nano"]) for e in s["events"]],
            links=[Link(ctx(lk["trace_id"], lk["span_id"], True), lk["attributes"]) for lk in s["links"]],
            kind=SpanKind[s["kind"].replace("SPAN_KIND_", "")], status=status,
            start_time=s["start_time_unix_nano"], end_time=s["end_time_unix_nano"],
            instrumentation_scope=scope(s["scope"])))
    logs: dict[str, list[Any]] = defaultdict(list)
    for r in items["log"]:
        record = SimpleNamespace(
            timestamp=r["time_unix_nano"], observed_timestamp=r["time_unix_nano"],
            severity_number=SimpleNamespace(value=r["severity_number"]), severity_text=r["severity_text"],
            body=r["body"], attributes=r["attributes"], trace_flags=1 if r["trace_id"] else 0,
            trace_id=int(r["trace_id"], 16) if r["trace_id"] else 0,
            span_id=int(r["span_id"], 16) if r["span_id"] else 0, event_name=r["event_name"] or None)
        logs[json.dumps(r["resource"], sort_keys=True)].append(SimpleNamespace(
            log_record=record, dropped_attributes=0, resource=resource(r["resource"]),
            instrumentation_scope=scope(r["scope"])))
    return spans, logs


def wire_bytes(items: dict[str, list[dict[str, Any]]], batch: int = 2048) -> dict[str, float]:
    """Bytes per span and per log record in otelkit's OTLP requests (one per process, <= batch items)."""
    from otelkit._export.encoding import encode_logs, encode_spans

    spans, logs = _rebuild(items)
    out: dict[str, float] = {}
    for name, groups, encode in (("span", spans, encode_spans), ("log", logs, encode_logs)):
        raw = gz = count = 0
        for group in groups.values():
            for i in range(0, len(group), batch):
                body = encode(group[i:i + batch])
                raw += len(body)
                gz += len(gzip.compress(body))
                count += len(group[i:i + batch])
        out[f"{name}_bytes"] = raw / max(1, count)
        out[f"{name}_bytes_gzip"] = gz / max(1, count)
    return out


def cpu_from_bench_json(path: str) -> dict[str, float]:
    """Export-thread and app-thread CPU per span (gRPC, no hog) from ``benchmarks/run.py --json`` output."""
    rows = json.loads(Path(path).read_text())["rows"]

    def median(prefix: str) -> float:
        for row in rows:
            if row["module"] == "export" and row["label"] == prefix and row["otelkit"]:
                return float(statistics.median(row["otelkit"]))
        raise KeyError(f"{path}: no bench_export row {prefix!r} (run benchmarks/run.py --only export --json)")

    return {"export_cpu_us_per_span": median("export thread CPU per delivered span, grpc"),
            "app_cpu_us_per_span": median("application thread CPU per span created, grpc")}


def cpu_measured(count: int, rounds: int) -> dict[str, float]:
    """The same figures from bench_export's producer against a real rotel collector (otelkit side, gRPC)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_export

    export, app = [], []
    for _ in range(rounds):
        result = bench_export._run("otelkit", "grpc", count)
        export.append(result["other_cpu"] / max(1, result["exported"]) * 1e6)
        app.append(result["main_cpu"] / result["count"] * 1e6)
    return {"export_cpu_us_per_span": statistics.median(export), "app_cpu_us_per_span": statistics.median(app)}


# --- Rendering ----------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_markdown(m: Measured, a: Assumptions, rows: Sequence[CapacityRow], lim: dict[str, float]) -> str:
    lines = [
        "| events/s | spans/s | log records/s | SDK CPU (cores) | network MB/s (gzip) | "
        "collector replicas: gateway / sampler | sampler: traces buffered / memory GB | Tempo GB/day | Loki GB/day |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.events_per_s:,} | {_num(r.spans_per_s)} | {_num(r.logs_per_s)} | {_num(r.sdk_cores)} | "
            f"{_num(r.network_mb_s)} ({_num(r.network_mb_s_gzip)}) | {r.gateway_replicas} / {r.sampler_replicas} | "
            f"{_num(r.sampler_traces_in_memory)} / {_num(r.sampler_memory_gb)} | {_num(r.tempo_gb_day)} | "
            f"{_num(r.loki_gb_day)} |")
    lines += ["", "| limit | reached at events/s |", "|---|---|"]
    lines += [f"| {name} | {_num(value)} |" for name, value in sorted(lim.items(), key=lambda kv: kv[1])]
    lines += ["", f"Prometheus: {_num(m.series_per_process)} series per process × {a.processes} processes = "
              f"{_num(m.series_per_process * a.processes)} series, the same at every event rate "
              "(metrics are aggregated in the process and never sampled; series grow with processes, "
              "stages, sources and outcomes, bounded by OTELKIT_METRIC_CARDINALITY_LIMIT per instrument)."]
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> Measured:
    """Run (or read) the demo telemetry and the CPU figures, as the command line says."""
    with tempfile.TemporaryDirectory() as tmp:
        path = args.telemetry
        if path is None:
            path = os.path.join(tmp, "demo.jsonl")
            run_demo(path, args.events)
        items = _load(path)
        counts = per_event(items)
        sizes = wire_bytes(items)
    cpu = cpu_from_bench_json(args.bench_json) if args.bench_json else cpu_measured(args.spans, args.rounds)
    return Measured(
        spans_per_event=counts["spans_per_event"], logs_per_event=counts["logs_per_event"],
        traces_per_event=counts["traces_per_event"], series_per_process=counts["series_per_process"],
        span_bytes=sizes["span_bytes"], span_bytes_gzip=sizes["span_bytes_gzip"], log_bytes=sizes["log_bytes"],
        log_bytes_gzip=sizes["log_bytes_gzip"], **cpu,
        source={"telemetry": args.telemetry or f"otelkit demo --events {args.events} (this run)",
                "cpu": args.bench_json or f"bench_export producer, otelkit side, gRPC, {args.rounds}x{args.spans}",
                "events": str(counts["events"]), "processes": str(counts["processes"]),
                "traces_per_event_as_run": f"{counts['traces_per_event_as_run']:.2f}"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--telemetry", metavar="JSONL", help="a saved `otelkit demo --save-telemetry` file "
                        "(default: run the demo now)")
    parser.add_argument("--events", type=int, default=48, help="demo events when running the demo (default 48)")
    parser.add_argument("--bench-json", metavar="PATH", help="benchmarks/run.py --json output with bench_export rows "
                        "(default: measure with bench_export's producer now)")
    parser.add_argument("--spans", type=int, default=30_000, help="spans per CPU measurement round (default 30000)")
    parser.add_argument("--rounds", type=int, default=3, help="CPU measurement rounds (default 3)")
    parser.add_argument("--keep-ratio", type=float, default=1.0, help="head sampling ratio to plan for (default 1)")
    parser.add_argument("--processes", type=int, default=20, help="application processes (Prometheus series)")
    parser.add_argument("--markdown", action="store_true", help="print the Markdown table of docs/capacity.md")
    parser.add_argument("--json", metavar="PATH", help="also write inputs and rows as JSON")
    parser.add_argument("--from-json", metavar="PATH", help="re-render from the measured inputs of an earlier --json "
                        "file (measures nothing)")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())["measured"]
        measured = Measured(**saved)
    else:
        measured = measure(args)
    assumptions = Assumptions(keep_ratio=args.keep_ratio, processes=args.processes)

    rows = capacity_rows(measured, assumptions)
    lim = limits(measured, assumptions)
    print("measured: " + ", ".join(f"{k}={_num(v)}" for k, v in asdict(measured).items() if k != "source"))
    print("from: " + ", ".join(f"{k}={v}" for k, v in measured.source.items()))
    for r in rows:
        print(f"{r.events_per_s:>7,} events/s: {_num(r.sdk_cores)} SDK cores, {_num(r.network_mb_s)} MB/s "
              f"({_num(r.network_mb_s_gzip)} gzip), {r.gateway_replicas} gateway + {r.sampler_replicas} sampler "
              f"replica(s), "
              f"Tempo {_num(r.tempo_gb_day)} GB/day, Loki {_num(r.loki_gb_day)} GB/day")
    for name, value in sorted(lim.items(), key=lambda kv: kv[1]):
        print(f"limit: {name}: {_num(value)} events/s")
    if args.markdown:
        print()
        print(render_markdown(measured, assumptions, rows, lim))
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": asdict(measured), "assumptions": asdict(assumptions),
                                               "rows": [asdict(r) for r in rows], "limits": lim}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
