"""``otelkit demo``: an instrumented token pipeline, run and shown in one command.

The harness here starts the parts of the pipeline in :mod:`otelkit._demo._app`
(user code: a discoverer and N enrichment workers, each a separate spawned
process calling ``otelkit.init()``), a local stand-in for the three external
APIs, and picks the queue and database:

* Redis and PostgreSQL when they answer (``--redis``/``--postgres``,
  ``REDIS_URL``/``DATABASE_URL``, or the standard local ports); otherwise a
  ``multiprocessing`` queue and an SQLite file stand in;
* telemetry goes where ``init()`` would send it: the endpoint configured with
  ``OTEL_EXPORTER_OTLP_*``, or the bundled stack on 127.0.0.1:4317/4318. With
  neither (the embedded default) the demo runs an OTLP receiver in this
  process, points the workers at it over OTLP/HTTP, and prints what arrived:
  the trace of one event across the processes, its log records, and a summary
  of the pipeline metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from otelkit._demo._apistub import ApiStandIn
from otelkit._demo._backends import (
    Choice,
    LocalQueue,
    PostgresStore,
    Queue,
    RedisQueue,
    SqliteStore,
    Store,
    choose_postgres,
    choose_redis,
    tcp_reachable,
)

__all__ = ["run_demo"]

_CONFIGURED_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")


@dataclass
class Telemetry:
    """Where the workers' telemetry goes, and the receiver when the demo collects it itself."""

    mode: str  # "terminal" | "configured" | "bundled"
    description: str
    receiver: Any = None
    # The demo's own choices, given to every process's otelkit.init() as arguments (they beat the
    # OTEL_* variables the processes inherit; nothing is written into the environment).
    init_options: dict[str, Any] = field(default_factory=dict)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status (0: every token reached a final state)."""
    out = _Printer(colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    run_id = secrets.token_hex(3)
    out.title(f"otelkit demo: token pipeline (run {run_id})")
    try:
        _check_configuration()
        telemetry = _choose_telemetry(args.telemetry, run_id, continuous=args.continuous)
    except RuntimeError as exc:
        out.line(f"error: {exc}")
        return 2
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running server threads
    tmpdir = tempfile.mkdtemp(prefix="otelkit-demo-")
    queue, queue_choice = _make_queue(args.redis, run_id, ctx)
    store, store_choice = _make_store(args.postgres, run_id, tmpdir)
    out.section("Setup")
    out.kv("queue", f"{queue.description}  [{queue_choice.reason}]")
    out.kv("database", f"{store.description}  [{store_choice.reason}]")
    out.kv("telemetry", telemetry.description)
    for warning in _unreachable_targets(telemetry):
        out.kv("", f"WARNING: {warning}; the telemetry of this run will be lost (check with `otelkit doctor`)")
    try:
        with ApiStandIn(args.seed) as api:
            out.kv("external APIs", "stand-ins for Jupiter, Helius and DexScreener (slow, rate-limited) on "
                   + ", ".join(f"{k} {v}" for k, v in api.urls.items()))
            out.kv("processes", f"1 discoverer + {args.workers} enrichment workers (spawned), each calling "
                   "otelkit.init()")
            results = _run_pipeline(args, queue, store, api.urls, ctx, out, telemetry.init_options)
        stored = store.count()
        dead = queue.dead_letters()
        ok = _print_outcomes(out, results, args, stored, dead)
        if telemetry.receiver is not None:
            _show_telemetry(out, telemetry.receiver, results, args, api_ports=_ports(api.urls))
            if args.save_telemetry:
                _save(telemetry.receiver, args.save_telemetry)
                out.line(f"  saved to {args.save_telemetry} (JSON lines)")
        _print_where(out, telemetry, results, args)
        return 0 if ok else 1
    except KeyboardInterrupt:
        out.line("interrupted")
        return 130
    finally:
        with contextlib.suppress(Exception):
            if not args.keep:
                queue.cleanup()
                store.cleanup()
        if telemetry.receiver is not None:
            telemetry.receiver.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Choices


def _make_queue(flag: str | None, run_id: str, ctx: Any) -> tuple[Queue, Choice]:
    choice = choose_redis(flag)
    if choice.kind == "redis" and choice.target:
        queue = RedisQueue(choice.target, run_id)
        try:
            queue.connect()
            queue.length()
            return queue, choice
        except Exception as exc:  # wrong password, not Redis...: fall back, and say why
            choice = Choice("local", None, f"Redis at {choice.target} failed: {type(exc).__name__}: {exc}")
    return LocalQueue(ctx), choice


def _make_store(flag: str | None, run_id: str, tmpdir: str) -> tuple[Store, Choice]:
    choice = choose_postgres(flag)
    if choice.kind == "postgres" and choice.target:
        pg = PostgresStore(choice.target, run_id)
        try:
            pg.connect()
            pg.create()
            return pg, choice
        except Exception as exc:
            choice = Choice("local", None, f"PostgreSQL failed: {type(exc).__name__}: {str(exc).strip()}")
    sqlite = SqliteStore(os.path.join(tmpdir, "tokens.db"))
    sqlite.connect()
    sqlite.create()
    return sqlite, choice


def _choose_telemetry(choice: str, run_id: str, *, continuous: bool) -> Telemetry:
    """Decide where the processes export: the ``init()`` arguments each of them is given."""
    from otelkit._config import resolve

    settings = resolve()  # what the processes' init() reads from the environment they inherit
    configured = [v for v in _CONFIGURED_VARS if v in settings.sources.values()]
    bundled = tcp_reachable("127.0.0.1", 4317, 0.05) or tcp_reachable("127.0.0.1", 4318, 0.05)
    # Tag the run so its telemetry can be found (and told apart from a previous run) in a backend; the
    # variable's attributes stay (an argument's keys are merged over OTEL_RESOURCE_ATTRIBUTES).
    options: dict[str, Any] = {"resource_attributes": {"otelkit.demo.run": run_id}}
    if settings.environment is None:
        options["environment"] = "demo"
    if choice == "terminal" or (choice == "auto" and not configured and not bundled):
        try:
            from otelkit.testing._receiver import OtlpReceiver
        except ImportError as exc:
            raise RuntimeError(f"the in-process OTLP receiver cannot be imported ({exc}): pip install "
                               "'otelkit[test]', or send the telemetry to a collector with "
                               "OTEL_EXPORTER_OTLP_ENDPOINT") from exc

        receiver = OtlpReceiver().start()
        # Arguments beat every OTEL_* variable the processes inherit (a per-signal endpoint included).
        options.update(endpoint=receiver.http_endpoint, protocol="http/protobuf", traces_exporter="otlp",
                       metrics_exporter="otlp", logs_exporter="otlp",
                       metric_export_interval=1.0)  # queue depth sampled every second
        why = "--telemetry terminal" if choice == "terminal" else \
            "no OTEL_EXPORTER_OTLP_ENDPOINT and no collector on 127.0.0.1:4317/4318"
        return Telemetry("terminal", f"OTLP/HTTP to an in-process receiver at {receiver.http_endpoint} "
                                     f"[{why}]: shown below", receiver, options)
    if settings.sources.get("metric_export_interval") == "default":
        options["metric_export_interval"] = 5.0 if continuous else 2.0
    if configured:
        return Telemetry("configured", f"as configured ({', '.join(configured)}): {_configured_target()}",
                         init_options=options)
    if bundled:
        return Telemetry("bundled", "the collector listening on 127.0.0.1:4317/4318 (the bundled stack)",
                         init_options=options)
    raise RuntimeError("--telemetry otlp: no OTEL_EXPORTER_OTLP_ENDPOINT is set and no collector listens on "
                       "127.0.0.1:4317/4318; start the bundled stack or set OTEL_EXPORTER_OTLP_ENDPOINT")


def _check_configuration() -> None:
    """Fail before spawning anything when the workers' ``otelkit.init()`` would raise ConfigError."""
    from otelkit._config import ConfigError, resolve

    try:
        resolve()
    except ConfigError as exc:
        raise RuntimeError(f"{exc} (every process of the demo calls otelkit.init(); `otelkit doctor` "
                           "explains the whole configuration)") from exc


def _configured_target() -> str:
    try:
        from otelkit._config import mask_url, resolve

        settings = resolve()
    except Exception as exc:
        return f"(cannot read the configuration: {exc}; try `otelkit doctor`)"
    parts = []
    for signal_name in ("traces", "metrics", "logs"):
        sig = settings.signal(signal_name)
        target = mask_url(sig.endpoint) if sig.endpoint else ",".join(sig.exporters)
        parts.append(f"{signal_name} -> {target}")
    return "; ".join(parts)


def _unreachable_targets(telemetry: Telemetry) -> list[str]:
    """Configured OTLP endpoints nothing listens on (one bounded TCP connect each)."""
    if telemetry.mode != "configured":
        return []
    try:
        from otelkit._config import resolve
        from otelkit._doctor import mask_url, targets, tcp_connect

        found, _ = targets(resolve())
    except Exception:
        return []
    problems = []
    for host, port in sorted({t.address for t in found}):
        reach = tcp_connect(host, port, 1.0)
        if reach != "ok":
            signals = ", ".join(t.signal for t in found if t.address == (host, port))
            problems.append(f"the collector at {mask_url(f'{host}:{port}')} ({signals}) is not reachable ({reach})")
    return problems


def _ports(urls: dict[str, str]) -> dict[int, str]:
    return {int(url.rsplit(":", 1)[1]): source for source, url in urls.items()}


# --------------------------------------------------------------------------------------------------
# Running


def _run_pipeline(args: argparse.Namespace, queue: Queue, store: Store, api_urls: dict[str, str], ctx: Any,
                  out: _Printer, init_options: dict[str, Any]) -> list[dict[str, Any]]:
    from otelkit._demo._app import DemoConfig, discoverer_main, worker_main

    cfg = DemoConfig(queue=queue, store=store, api=api_urls, stop=ctx.Event(), results=ctx.Queue(),
                     init_options=init_options,
                     events=args.events, seed=args.seed, continuous=args.continuous,
                     interval=0.5 if args.continuous else 0.05)
    processes = [ctx.Process(target=discoverer_main, args=(cfg,), name="discoverer", daemon=True)]
    processes += [ctx.Process(target=worker_main, args=(cfg, i), name=f"enricher-{i}", daemon=True)
                  for i in range(args.workers)]
    out.section("Running" + (" (until Ctrl-C / SIGTERM)" if args.continuous else ""))
    stopping = {"signal": False}

    def on_term(signum: int, frame: Any) -> None:
        stopping["signal"] = True
        cfg.stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    for process in processes:
        process.start()
    results: list[dict[str, Any]] = []
    final: set[str] = set()
    started = time.monotonic()
    next_status = started + 5
    try:
        with _interrupts_stop(cfg.stop):
            while not cfg.stop.is_set():
                if not args.continuous and len(final) >= args.events:
                    break
                if not args.continuous and time.monotonic() - started > args.timeout:
                    out.line(f"  gave up after {args.timeout:g}s: {len(final)} of {args.events} tokens finished")
                    break
                if not any(p.is_alive() for p in processes[1:]):
                    out.line("  every worker exited early: " + ", ".join(
                        f"{p.name} exit code {p.exitcode}" for p in processes))
                    break
                result = _next_result(cfg.results, 0.2)
                if result is None:
                    if args.continuous and time.monotonic() >= next_status:
                        next_status += 5
                        out.line("  " + _tally(results) + f"   queue depth {queue.length()}")
                    continue
                results.append(result)
                if result["outcome"] in ("stored", "dead_letter"):
                    final.add(result["mint"])
                if result["outcome"] != "stored" and not args.continuous:
                    out.line(f"  {_short(result['mint'])} attempt {result['attempt']} "
                             f"({_process_name(result)}): {result.get('error', '')}"
                             f" -> {'retry' if result['outcome'] == 'retried' else 'DEAD-LETTER'}")
    finally:
        cfg.stop.set()
        for process in processes:
            process.join(timeout=20)
        for process in processes:
            if process.is_alive():
                out.line(f"  {process.name} did not stop within 20s: terminating it")
                process.terminate()
                process.join(timeout=5)
        while (result := _next_result(cfg.results, 0.05)) is not None:
            results.append(result)
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - started
    out.line(f"  {_tally(results)}   in {elapsed:.1f}s")
    return results


@contextlib.contextmanager
def _interrupts_stop(stop: Any) -> Iterator[None]:
    """Ctrl-C stops the pipeline gracefully (workers flush their telemetry) instead of killing it."""
    def on_int(signum: int, frame: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGINT, on_int)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _next_result(results: Any, timeout: float) -> dict[str, Any] | None:
    import queue as queue_mod

    try:
        item: dict[str, Any] = results.get(timeout=timeout)
        return item
    except queue_mod.Empty:
        return None


def _tally(results: list[dict[str, Any]]) -> str:
    counts = Counter(r["outcome"] for r in results)
    return (f"stored {counts['stored']}, retried {counts['retried']}, dead-lettered {counts['dead_letter']} "
            f"({len(results)} messages processed)")


def _short(mint: str) -> str:
    return f"token {mint[:6]}…{mint[-4:]}"


def _process_name(result: dict[str, Any]) -> str:
    return f"enricher-{result['worker']}"


# --------------------------------------------------------------------------------------------------
# Output


def _print_outcomes(out: _Printer, results: list[dict[str, Any]], args: argparse.Namespace, stored: int,
                    dead: int) -> bool:
    if args.continuous:
        return True
    finals = {r["mint"]: r["outcome"] for r in results if r["outcome"] in ("stored", "dead_letter")}
    ok: bool = len(finals) >= args.events
    out.line(f"  database rows: {stored}   dead-letter list: {dead}   "
             + ("every token reached a final state" if ok else f"only {len(finals)} of {args.events} tokens finished"))
    return ok


def _pick_event(results: list[dict[str, Any]], show: str) -> dict[str, Any] | None:
    stored_first = [r for r in results if r["outcome"] == "stored" and r["attempt"] == 1]
    retried = [r for r in results if r["outcome"] == "stored" and r["attempt"] > 1]
    dead = [r for r in results if r["outcome"] == "dead_letter"]
    order = {"ok": (stored_first, retried, dead), "retried": (retried, stored_first, dead),
             "dead-letter": (dead, retried, stored_first)}[show]
    for group in order:
        if group:
            return group[0]
    return None


def _show_telemetry(out: _Printer, receiver: Any, results: list[dict[str, Any]], args: argparse.Namespace, *,
                    api_ports: dict[int, str]) -> None:
    from otelkit._demo import _render

    event = _pick_event(results, getattr(args, "show", "ok"))
    processes: int = 1 + args.workers
    # Each process flushed at shutdown; wait (bounded) until every one's metrics arrived.
    def arrived() -> bool:
        pids = {p.resource.get("process.pid") for p in receiver.metrics()}
        return len(pids) >= processes

    with contextlib.suppress(AssertionError):
        receiver.wait_for(arrived, timeout=10)
    spans = receiver.spans()
    if event is not None:
        chosen = _render.trace_spans(spans, event["trace_id"])
        processes_seen = sorted({_render._process(s) for s in chosen})
        out.section(f"The trace of one event: {_short(event['mint'])}, {event['outcome']} after "
                    f"{event['attempt']} attempt(s), correlation_id {event['correlation_id']}")
        out.line(f"  trace_id {event['trace_id']}: {len(chosen)} spans in {len(processes_seen)} processes")
        out.line(_indent(_render.render_trace(chosen, colour=out.colour, unicode=out.unicode), "  "))
        exceptions = _render.render_exceptions(chosen)
        if exceptions:
            out.line("  its exceptions, with their tracebacks:")
            out.line(_indent(exceptions, "  "))
        logs = _render.render_logs(receiver.logs(), {s.trace_id for s in chosen})
        if logs:
            out.line("  its log records (same trace_id, span_id and correlation_id):")
            out.line(logs)
        others = {"retried": "retried", "dead_letter": "dead-letter"}
        hints = []
        for outcome, flag in others.items():
            if any(r["outcome"] == outcome for r in results) and flag != getattr(args, "show", "ok"):
                hints.append(f"--show {flag}")
        if hints:
            out.line(f"  (other paths: otelkit demo {' / '.join(hints)})")
    out.section("Pipeline metrics (as exported by the processes)")
    out.line(_indent(_render.render_metrics(receiver.metrics(), api_ports=api_ports), "  "))
    out.line(f"  received: {receiver.summary()}")


def _save(receiver: Any, path: str) -> None:
    import dataclasses
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for signal_name, items in (("span", receiver.spans()), ("metric", receiver.metrics()),
                                   ("log", receiver.logs())):
            for item in items:
                fh.write(json.dumps({"signal": signal_name, **dataclasses.asdict(item)}, default=str) + "\n")


def _print_where(out: _Printer, telemetry: Telemetry, results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    out.section("Where the telemetry went")
    event = _pick_event(results, getattr(args, "show", "ok"))
    if telemetry.mode == "terminal":
        out.line("  to this terminal (an OTLP receiver inside `otelkit demo`; nothing was kept).")
        out.line("  To see it in Grafana: start the bundled stack (docker compose up -d) and run `otelkit demo` again;")
        out.line("  for your own collector: export OTEL_EXPORTER_OTLP_ENDPOINT=http://<collector>:4317")
    elif telemetry.mode == "bundled":
        out.line(f"  to the bundled stack. Grafana: {args.grafana_url}  (Explore > Tempo"
                 + (f", trace {event['trace_id']}" if event else "") + ")")
        out.line("  dashboard 'otelkit / Pipeline overview': rates, queue depth, latency by source, failures")
    else:
        out.line(f"  {telemetry.description}")
        if event:
            out.line(f"  look up trace {event['trace_id']} (correlation_id {event['correlation_id']}) in your backend")
    out.line("  Check a setup with: otelkit doctor")


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())


class _Printer:
    def __init__(self, *, colour: bool) -> None:
        self.colour = colour
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        try:
            "█├─✗…".encode(encoding)
            self.unicode = True
        except (UnicodeEncodeError, LookupError):
            self.unicode = False

    def line(self, text: str = "") -> None:
        if not self.unicode:
            text = text.encode("ascii", "replace").decode()
        print(text, flush=True)

    def title(self, text: str) -> None:
        self.line(f"\x1b[1m{text}\x1b[0m" if self.colour else text)

    def section(self, text: str) -> None:
        self.line()
        self.line(f"\x1b[1m{text}\x1b[0m" if self.colour else text)

    def kv(self, key: str, value: str) -> None:
        self.line(f"  {key:<14}{value}")
