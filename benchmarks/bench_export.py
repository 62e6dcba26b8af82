"""Export throughput to a real collector: spans/s delivered, otelkit defaults vs raw SDK defaults (issue 8, target 4).

Set-up per run, each in a fresh subprocess: the real ``rotel`` collector (PyPI ``rotel``) with its
``blackhole`` exporter on free loopback ports; a producer creating spans as fast as it can
(``start_as_current_span`` with two attributes), then shutting its provider down (which drains).

* **raw**: ``TracerProvider`` (the SDK's default resource and sampler, ``service.name=bench`` as on
  otelkit's side) + ``BatchSpanProcessor`` with the SDK defaults (queue 2048, batch 512, 5 s delay) +
  the SDK's ``OTLPSpanExporter`` (gRPC or HTTP). Delivered spans are counted by wrapping the
  exporter's ``export`` (spans of batches the collector acknowledged: ``SUCCESS``); the rest were
  dropped, with at most one "Queue full" log line.
* **otelkit**: ``otelkit.init(traces only)`` with its defaults (queue 8192, batch 2048, 1 s delay,
  scrubbing on, otelkit's processor and OTLP sender); delivered = ``otelkit.telemetry.exported``
  for traces. A second otelkit row runs with ``OTELKIT_SCRUB=false`` to show what scrubbing costs.

Both sides record the same spans (name ``op``, kind internal, attributes ``i`` and ``k``, scope
``bench``, no correlation scope so no ``otelkit.correlation_id``); otelkit's resource carries more
attributes (host, OS, process: more bytes per request, on otelkit's side). Both counts are what the
collector acknowledged (an OTLP success answer; otelkit also subtracts partial-success rejections).

Figure: delivered spans / wall time from the first span to the end of shutdown. Higher is better;
target 2x. The note lists spans dropped per side (otelkit's are counted, warned, reported).

Also (issue 7, item 1): span start+end latency on the application thread, p50 and p99, with the
collector refused / hung (TCP accepted, never answered) / answering 503, against the same program
with a healthy collector (rotel). Here the "raw" column is the healthy run, target <= 1.2x.

``PAIRS``: the producer loop of both sides in one process (gRPC to one blackhole rotel), for the
application thread's cost per span: paired wall time, and with ``run.py --callgrind`` the instructions
of the application thread alone.

Run: ``.venv/bin/python benchmarks/run.py --only export`` or ``.venv/bin/python benchmarks/bench_export.py``.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SPANS = 100_000
SPANS_FAST = 30_000

_PRODUCER = r"""
import json, os, sys, time
side, protocol, endpoint, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if side == "raw":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        exporter = OTLPSpanExporter(endpoint=endpoint + "/v1/traces")
    delivered = [0]
    real_export = exporter.export
    def export(spans):
        result = real_export(spans)
        if result is SpanExportResult.SUCCESS:
            delivered[0] += len(spans)
        return result
    exporter.export = export
    from opentelemetry.sdk.resources import Resource
    # The SDK's default resource with the same service.name as otelkit's (otelkit adds host/process/OS
    # attributes to its resource: more bytes per request on otelkit's side, once per batch).
    tp = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    tp.add_span_processor(BatchSpanProcessor(exporter))
    tracer = tp.get_tracer("bench")
    start = time.perf_counter()
    cpu0, main0 = time.process_time(), time.thread_time()
    for i in range(count):
        with tracer.start_as_current_span("op", attributes={"i": i, "k": "v"}):
            pass
    tp.shutdown()
    elapsed = time.perf_counter() - start
    exported = delivered[0]
elif side == "sdkbsp":
    # Issue 20 part 2: the SDK's own BatchSpanProcessor (otelkit's queue/batch/delay sizes) with otelkit's
    # encoder and sender as a plain exporter: what otelkit's own queue is measured against.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from otelkit._export.encoding import encode_spans
    from otelkit._export.transport import OK, GrpcSender, HttpSender
    sender = (GrpcSender("traces", endpoint) if protocol == "grpc"
              else HttpSender("traces", endpoint + "/v1/traces"))
    delivered = [0]
    class Exporter(SpanExporter):
        def export(self, spans):
            result = sender.send(encode_spans(spans), 10.0)
            if result.kind == OK:
                delivered[0] += len(spans) - result.rejected
                return SpanExportResult.SUCCESS
            return SpanExportResult.FAILURE
    tp = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    tp.add_span_processor(BatchSpanProcessor(Exporter(), max_queue_size=8192, max_export_batch_size=2048,
                                             schedule_delay_millis=1000))
    tracer = tp.get_tracer("bench")
    start = time.perf_counter()
    cpu0, main0 = time.process_time(), time.thread_time()
    for i in range(count):
        with tracer.start_as_current_span("op", attributes={"i": i, "k": "v"}):
            pass
    tp.shutdown()
    elapsed = time.perf_counter() - start
    exported = delivered[0]
else:
    os.environ.update({"OTEL_SERVICE_NAME": "bench", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                       "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc" if protocol == "grpc" else "http/protobuf",
                       "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "OTELKIT_INSTRUMENT": "",
                       "OTELKIT_SYSTEM_METRICS": "false", "OTELKIT_SHUTDOWN_TIMEOUT": "60000"})
    if side == "otelkit-noscrub":
        os.environ["OTELKIT_SCRUB"] = "false"
    import otelkit
    from opentelemetry import trace
    otelkit.init()
    tracer = trace.get_tracer("bench")
    start = time.perf_counter()
    cpu0, main0 = time.process_time(), time.thread_time()
    for i in range(count):
        with tracer.start_as_current_span("op", attributes={"i": i, "k": "v"}):
            pass
    report = otelkit.shutdown(timeout=60)
    elapsed = time.perf_counter() - start
    exported = report["traces"].exported
# CPU of every thread but the main one (the export thread, and the shutdown threads that drain it)
main = time.thread_time() - main0
other = (time.process_time() - cpu0) - main
print("@@" + json.dumps({"elapsed": elapsed, "exported": exported, "count": count, "other_cpu": other,
                         "main_cpu": main}))
"""


_LATENCY = r"""
import json, os, sys, time
endpoint, protocol, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ.update({"OTEL_SERVICE_NAME": "bench", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                   "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_METRICS_EXPORTER": "none",
                   "OTEL_LOGS_EXPORTER": "none", "OTELKIT_INSTRUMENT": "", "OTELKIT_SYSTEM_METRICS": "false",
                   "OTELKIT_SHUTDOWN_TIMEOUT": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200"})
import otelkit
from opentelemetry import trace
otelkit.init()
tracer = trace.get_tracer("bench")
ns = time.perf_counter_ns
samples = []
for i in range(count + 2000):
    t0 = ns()
    with tracer.start_as_current_span("op", attributes={"i": i}):
        pass
    t1 = ns()
    if i >= 2000:
        samples.append(t1 - t0)
samples.sort()
print("@@" + json.dumps({"p50": samples[len(samples) // 2] / 1000, "p99": samples[int(len(samples) * 0.99)] / 1000}))
"""


def _latency(endpoint: str, protocol: str, count: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    proc = subprocess.run([sys.executable, "-c", _LATENCY, endpoint, protocol, str(count)], capture_output=True,
                          text=True, timeout=300, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            data: dict[str, float] = json.loads(line[2:])
            return data
    raise RuntimeError(f"latency run failed: {proc.stderr[-2000:]}")


def latency_rows(fast: bool) -> list[dict[str, Any]]:
    from otelkit.testing._receiver import BlackholeServer, OtlpReceiver, refused_endpoint

    count = 20_000 if fast else 50_000
    rounds = 1 if fast else 3
    protocol = "grpc"
    rows: list[dict[str, Any]] = []
    healthy = _rotel().start()
    receiver = OtlpReceiver().start()
    receiver.fail(503, "UNAVAILABLE")
    hole = BlackholeServer().start()
    try:
        faults = {"refused": f"http://{refused_endpoint()}", "hung": f"http://{hole.endpoint}",
                  "503/UNAVAILABLE": receiver.grpc_endpoint}
        results: dict[str, dict[str, list[float]]] = {}
        for _ in range(rounds):
            for name, endpoint in [("healthy", healthy.grpc_endpoint), *faults.items()]:
                r = _latency(endpoint, protocol, count)
                for q in ("p50", "p99"):
                    results.setdefault(name, {}).setdefault(q, []).append(r[q])
        for name in faults:
            for q in ("p50", "p99"):
                rows.append({"label": f"span start+end {q}, collector {name} vs healthy", "unit": "µs",
                             "otelkit": results[name][q], "raw": results["healthy"][q], "target": 1.2,
                             "note": f"latency rows: 'raw' is the same otelkit program with a healthy collector "
                                     f"(rotel), {count} spans per run, gRPC"})
    finally:
        hole.stop()
        receiver.stop()
        healthy.close()
    return rows


def _rotel() -> Any:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from otelkit.testing._receiver import OtlpReceiver, RotelCollector

    class BlackholeRotel(RotelCollector):
        def _args(self) -> list[str]:
            args = super()._args()
            cut = args.index("--exporter")
            return [*args[:cut], "--exporter", "blackhole"]

    return BlackholeRotel(OtlpReceiver())  # the receiver is never started: blackhole exports nothing


_HOG = "while True: pass"


# --- the application thread, per span (callgrind pair) ---------------------------------------------------
#
# The producer loop of both sides above, in one process, against one blackhole rotel: run.py times it
# (paired wall time, both export threads live) and, with --callgrind, counts the instructions of the
# application thread alone (thread 1), which is what the load on the machine cannot move.


@functools.cache
def _collector_endpoint() -> str:
    import atexit

    collector = _rotel().start()
    atexit.register(collector.close)
    return str(collector.grpc_endpoint)


@functools.cache
def _raw_tracer() -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_collector_endpoint(), insecure=True)))
    return tp.get_tracer("bench")


@functools.cache
def _otelkit_tracer() -> Any:
    from opentelemetry import trace

    import otelkit

    otelkit.init(service_name="bench", endpoint=_collector_endpoint(), protocol="grpc", metrics_exporter="none",
                 logs_exporter="none", instrument=(), system_metrics=False)
    return trace.get_tracer("bench")


def _producer_loop(tracer: Any, loops: int) -> float:
    t0 = time.perf_counter()
    for i in range(loops):
        with tracer.start_as_current_span("op", attributes={"i": i, "k": "v"}):
            pass
    return time.perf_counter() - t0


def app_span_otelkit(loops: int) -> float:
    return _producer_loop(_otelkit_tracer(), loops)


def app_span_raw(loops: int) -> float:
    return _producer_loop(_raw_tracer(), loops)


PAIRS = [
    ("application thread per span of the export producer (start_as_current_span, 2 attributes, gRPC to rotel): "
     "otelkit.init() defaults vs TracerProvider + BatchSpanProcessor + OTLPSpanExporter defaults",
     app_span_otelkit, app_span_raw, None),
]


def _run(side: str, protocol: str, count: int, hog: bool = False) -> dict[str, float]:
    collector = _rotel().start()
    # With hog=True, two processes spin on the 2 cores for the whole run (CPU contention).
    hogs = [subprocess.Popen([sys.executable, "-c", _HOG]) for _ in range(2 if hog else 0)]
    try:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
        proc = subprocess.run([sys.executable, "-c", _PRODUCER, side, protocol, endpoint, str(count)],
                              capture_output=True, text=True, timeout=600, env=env)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        collector.close()
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            data: dict[str, float] = json.loads(line[2:])
            return data
    raise RuntimeError(f"{side} producer failed: {proc.stderr[-2000:]}")


def custom(fast: bool) -> list[dict[str, Any]]:
    count = SPANS_FAST if fast else SPANS
    rounds = 1 if fast else 3
    rows = []
    for protocol, hog in (("grpc", False), ("http", False), ("grpc", True)):
        sides = ("otelkit", "raw") if hog else ("otelkit", "raw", "otelkit-noscrub")
        rates: dict[str, list[float]] = {s: [] for s in sides}
        lost: dict[str, list[float]] = {s: [] for s in sides}
        per_span: dict[str, list[float]] = {s: [] for s in sides}
        app: dict[str, list[float]] = {s: [] for s in sides}
        for i in range(rounds):
            for side in (sides if i % 2 == 0 else tuple(reversed(sides))):
                result = _run(side, protocol, count, hog)
                rates[side].append(result["exported"] / result["elapsed"])
                lost[side].append(result["count"] - result["exported"])
                per_span[side].append(result["other_cpu"] / max(1, result["exported"]) * 1e6)
                app[side].append(result["main_cpu"] / result["count"] * 1e6)
        ours, raws, drops_ours, drops_raw = rates["otelkit"], rates["raw"], lost["otelkit"], lost["raw"]
        under = ", while 2 CPU-hog processes keep both cores busy" if hog else ""
        rows.append({
            "label": f"spans/s delivered to rotel, {protocol}, defaults{under}",
            "unit": "spans/s", "otelkit": ours, "raw": raws, "target": 2.0, "higher_is_better": True,
            "note": (f"{protocol}{under}: {count} spans per run; dropped per run: otelkit "
                     f"{statistics.median(drops_ours):.0f} (counted, warned, in the shutdown report), raw SDK "
                     f"{statistics.median(drops_raw):.0f} (one 'Queue full' line at most)"),
        })
        rows.append({
            "label": f"export thread CPU per delivered span, {protocol}{under}",
            "unit": "µs/span", "otelkit": per_span["otelkit"], "raw": per_span["raw"], "target": None,
            "note": "CPU of every non-application thread (export, and the shutdown drain) / spans delivered",
        })
        rows.append({
            "label": f"application thread CPU per span created, {protocol}{under}",
            "unit": "µs/span", "otelkit": app["otelkit"], "raw": app["raw"], "target": None,
            "note": ("CPU of the thread creating the spans (SDK span start/end, processors' on_start/on_end) / "
                     "spans created: the part of the cost both sides share"),
        })
        if not hog:
            rows.append({
                "label": f"spans/s delivered to rotel, {protocol}, defaults but OTELKIT_SCRUB=false",
                "unit": "spans/s", "otelkit": rates["otelkit-noscrub"], "raw": raws, "target": None,
                "higher_is_better": True,
                "note": (f"{protocol} without scrubbing: dropped per run "
                         f"{statistics.median(lost['otelkit-noscrub']):.0f}"),
            })
    return rows + latency_rows(fast)


def paired_runs(count: int, rounds: int, configs: list[tuple[str, bool]], order: str = "abba") -> None:
    """Paired producer runs, one JSON line per run with the load average around it, one ``"summary"`` line per round.

    ``bench_export.py --paired COUNT ROUNDS grpc:0,http:0,grpc:1`` (``:1`` = with the two CPU hogs).

    Each round is four runs in the order A B B A (A = otelkit in even rounds, raw in odd ones), and a side's rate
    for the round is the mean of its two runs: a load that rises or falls steadily across the round weighs on
    both sides alike. The earlier order (``--order ab``: one run per side, A B then B A in the next round) left
    the whole drift between the two runs of a round on the second one, so on a shared machine whose load moves
    by several units within a minute a single round's ratio was biased towards whichever side ran first (by
    design the bias alternates between rounds and cancels only in the ratio of medians).
    """
    import time as _time

    for protocol, hog in configs:
        for r in range(rounds):
            first, second = ("otelkit", "raw") if r % 2 == 0 else ("raw", "otelkit")
            sides = (first, second, second, first) if order == "abba" else (first, second)
            runs: dict[str, list[dict[str, Any]]] = {"otelkit": [], "raw": []}
            for side in sides:
                load0 = os.getloadavg()[0]
                res: dict[str, Any] = dict(_run(side, protocol, count, hog))
                res.update(side=side, protocol=protocol, hog=hog, round=r, load_start=load0,
                           load_end=os.getloadavg()[0], rate=res["exported"] / res["elapsed"],
                           dropped=res["count"] - res["exported"],
                           export_us=res["other_cpu"] / max(1, res["exported"]) * 1e6,
                           app_us=res["main_cpu"] / res["count"] * 1e6,
                           cpu_per_delivered_us=(res["main_cpu"] + res["other_cpu"]) / max(1, res["exported"]) * 1e6,
                           utc=_time.strftime("%H:%M:%S", _time.gmtime()))
                runs[side].append(res)
                print(json.dumps(res), flush=True)
            rate = {side: statistics.mean(x["rate"] for x in runs[side]) for side in runs}
            cpu = {side: statistics.mean(x["cpu_per_delivered_us"] for x in runs[side]) for side in runs}
            print(json.dumps({
                "summary": True, "protocol": protocol, "hog": hog, "round": r, "order": "".join(
                    "o" if side == "otelkit" else "r" for side in sides),
                "otelkit_rate": rate["otelkit"], "raw_rate": rate["raw"], "ratio": rate["otelkit"] / rate["raw"],
                "cpu_ratio": cpu["raw"] / cpu["otelkit"],
                "otelkit_dropped": [x["dropped"] for x in runs["otelkit"]],
                "raw_dropped": [x["dropped"] for x in runs["raw"]],
                "otelkit_export_us": [round(x["export_us"], 2) for x in runs["otelkit"]],
                "raw_export_us": [round(x["export_us"], 2) for x in runs["raw"]],
                "otelkit_app_us": [round(x["app_us"], 2) for x in runs["otelkit"]],
                "raw_app_us": [round(x["app_us"], 2) for x in runs["raw"]],
                "utc": _time.strftime("%H:%M:%S", _time.gmtime())}), flush=True)


if __name__ == "__main__":
    if "--paired" in sys.argv:
        at = sys.argv.index("--paired")
        paired_runs(int(sys.argv[at + 1]), int(sys.argv[at + 2]),
                    [(c.split(":")[0], c.split(":")[1] == "1") for c in sys.argv[at + 3].split(",")],
                    order=sys.argv[sys.argv.index("--order") + 1] if "--order" in sys.argv else "abba")
        sys.exit(0)
    fast = "--fast" in sys.argv
    for row in custom(fast):
        print(f"{row['label']}: otelkit {statistics.median(row['otelkit']):,.1f} vs raw "
              f"{statistics.median(row['raw']):,.1f} {row['unit']} -> "
              f"{statistics.median(row['otelkit']) / statistics.median(row['raw']):.2f}x; {row['note']}")

