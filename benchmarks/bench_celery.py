"""Added cost per Celery task (publish + run): otelkit's celery integration vs ``opentelemetry-instrumentation-celery``.

One task = ``app.send_task`` through Celery's in-memory transport (``memory://``: no network noise, the same kombu
publish path as a broker) and its run by Celery's own worker tracer (``build_tracer``: prerun/postrun signals,
state handling), in one process. Three sides:

* ``none``: Celery uninstrumented;
* ``contrib``: ``CeleryInstrumentor`` (a PRODUCER ``apply_async/{task}`` and a CONSUMER ``run/{task}`` span, the
  consumer the producer's child, its ``flower.task.runtime.seconds`` histogram) **plus** the metric points
  otelkit records, added by a user through Celery's signals with cached attribute sets: sent messages and send
  duration; consumed messages, time in queue, process duration, settled outcome and end-to-end latency;
* ``otelkit``: otelkit's celery integration (a PRODUCER ``send {queue}`` and a CONSUMER ``process {queue}`` span
  linked to it, the correlation ID and emission time carried and restored, the same seven metric points).

Spans go to a ``BatchSpanProcessor`` with a null exporter, metrics to an ``InMemoryMetricReader``. callgrind
counts the application thread's instructions per task (``custom()``); ``PAIRS`` gives the wall ratio.

Run: ``.venv/bin/python benchmarks/run.py --only celery`` (``--fast`` for a smoke pass).
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

from bench_instrument import NullSpanExporter
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_state = "none"


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider]:
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(NullSpanExporter()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    # otelkit's pipeline scopes use the global providers; contrib gets them passed: the same ones.
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp


@functools.cache
def _app() -> tuple[Any, str, Any, Any]:
    import celery
    from celery.app.trace import build_tracer

    app = celery.Celery(f"bench{uuid.uuid4().hex[:6]}", broker="memory://")
    app.conf.task_ignore_result = True

    @app.task(name="bench.ok", shared=False)
    def ok(token: str) -> str:
        return token

    queue = f"bench-{uuid.uuid4().hex[:6]}"
    conn = app.connection_for_write()
    simple = conn.SimpleQueue(queue, no_ack=True)
    return app, queue, (conn, simple), build_tracer(ok.name, ok, app=app, eager=False)


# --- contrib + the same metric points, recorded by a user's signal handlers -----------------------------------

@functools.cache
def _user_metrics() -> dict[str, Any]:
    from otelkit._pipeline.instruments import Instruments

    meter = _providers()[1].get_meter("bench.user")
    inst = Instruments(meter)
    # The attribute sets otelkit's pipeline records (same keys, same values: same aggregation cost).
    base = {"messaging.system": "memory", "messaging.destination.name": "q"}
    send = {**base, "messaging.operation.name": "send", "messaging.operation.type": "send"}
    process = {**base, "messaging.operation.name": "process", "messaging.operation.type": "process"}
    return {"inst": inst, "send": send, "process": process, "ack": {**process, "otelkit.outcome": "ack"}, "t": {}}


def _user_before(headers: Any = None, **_kwargs: Any) -> None:
    if isinstance(headers, dict):
        headers["sent-at"] = time.time()
        _user_metrics()["t"]["send"] = time.perf_counter()


def _user_after(**_kwargs: Any) -> None:
    m = _user_metrics()
    m["inst"].sent.add(1, m["send"])
    m["inst"].operation_duration.record(time.perf_counter() - m["t"].pop("send", 0.0), m["send"])


def _user_prerun(task: Any = None, **_kwargs: Any) -> None:
    m = _user_metrics()
    sent = getattr(task.request, "sent-at", None)
    if sent is not None:
        m["inst"].time_in_queue.record(time.time() - sent, m["process"])
    m["t"]["run"] = (time.perf_counter(), sent)


def _user_postrun(**_kwargs: Any) -> None:
    m = _user_metrics()
    start, sent = m["t"].pop("run", (time.perf_counter(), None))
    inst = m["inst"]
    inst.consumed.add(1, m["process"])
    inst.process_duration.record(time.perf_counter() - start, m["process"])
    inst.settled.add(1, m["ack"])
    if sent is not None:
        inst.end_to_end.record(time.time() - sent, m["process"])


def _contrib(on: bool) -> None:
    from celery import signals
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    tp, mp = _providers()
    pairs = ((signals.before_task_publish, _user_before), (signals.after_task_publish, _user_after),
             (signals.task_prerun, _user_prerun), (signals.task_postrun, _user_postrun))
    if on:
        CeleryInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
        for signal, handler in pairs:
            signal.connect(handler, weak=False)
    else:
        CeleryInstrumentor().uninstrument()
        for signal, handler in pairs:
            signal.disconnect(handler)


def _switch(side: str) -> None:
    global _state
    if side == _state:
        return
    from otelkit import _instrument
    from otelkit._config import resolve

    _providers()
    if _state == "otelkit":
        _instrument.uninstrument_all()
    elif _state == "contrib":
        _contrib(False)
    if side == "otelkit":
        tp, mp = _providers()
        _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), tp, mp)
    elif side == "contrib":
        _contrib(True)
    _state = side


def _task(loops: int, side: str) -> float:
    """``loops`` tasks published and run; seconds."""
    _switch(side)
    app, queue, (conn, simple), tracer = _app()
    t0 = time.perf_counter()
    for _ in range(loops):
        app.send_task("bench.ok", args=["x"], queue=queue, connection=conn)
        message = simple.get(timeout=1)
        headers = message.headers
        args, kwargs, _embed = message.decode()
        request = dict(headers, delivery_info={"routing_key": queue, "exchange": ""}, args=args, kwargs=kwargs,
                       correlation_id=headers["id"])
        tracer(headers["id"], args, kwargs, request)
    return time.perf_counter() - t0


task_none = functools.partial(_task, side="none")
task_contrib = functools.partial(_task, side="contrib")
task_otelkit = functools.partial(_task, side="otelkit")

NOTE = ("Both instrumented sides record two spans per task and the same seven metric points (sent, send duration, "
        "consumed, time in queue, process duration, settled, end-to-end) into an InMemoryMetricReader; contrib also "
        "records its flower.task.runtime.seconds histogram; otelkit also carries and restores the correlation ID. "
        "'none' is Celery uninstrumented. Transport: memory://, publish and run in one process.")


def custom(fast: bool) -> list[dict[str, Any]]:
    """Instructions per task added by otelkit vs added by contrib + the same metrics, on the application thread."""
    import _callgrind

    if not _callgrind.available():
        return []
    lo, hi = (10, 30) if fast else (20, 80)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {side: pool.submit(_callgrind.per_op, f"bench_celery:task_{side}", lo, hi)
                   for side in ("none", "contrib", "otelkit")}
        counts = {side: future.result() for side, future in futures.items()}
    ours, theirs = counts["otelkit"] - counts["none"], counts["contrib"] - counts["none"]
    return [{"label": "celery task (publish + run): instructions added per task, otelkit vs contrib + same metrics "
                      "(callgrind)",
             "unit": "instr", "otelkit": [ours], "raw": [theirs], "ratios": [ours / theirs], "target": 1.0,
             "extra": {"instructions": {"otelkit": ours, "raw": theirs}, "per_call": counts},
             "note": (f"uninstrumented {counts['none']:,.0f}, contrib {counts['contrib']:,.0f}, otelkit "
                      f"{counts['otelkit']:,.0f} instructions per task. {NOTE}")}]


def _wall(side: str) -> Any:
    def fn(loops: int) -> float:
        return _task(loops, side)

    fn.__name__ = f"task_{side}_wall"
    return fn


PAIRS: list[tuple[Any, ...]] = [
    ("celery task (publish + run): otelkit vs contrib + same metrics (wall)", _wall("otelkit"), _wall("contrib"),
     1.0, {"callgrind": False}),
]
