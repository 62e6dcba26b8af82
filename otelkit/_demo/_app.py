"""The demo pipeline, written the way an otelkit user writes theirs (seed 000).

A *discoverer* finds new tokens, remembers them in a set and queues each one;
*enrichment workers* (separate processes) take tokens off the queue, ask three
external APIs about them (Jupiter for the price, Helius for metadata,
DexScreener for liquidity: the slow one), and write the result to the
database. A transient API failure puts the token back on the queue for another
attempt; a permanent one, or too many attempts, sends it to the dead-letter
list.

Everything about telemetry here is otelkit's public API: ``otelkit.init()``
once per process, ``pipeline.emit``/``pipeline.receive`` around the queue,
``pipeline.stage`` around each step, ``pipeline.observe_queue`` for the queue
depth; Redis, PostgreSQL and HTTP calls are traced by the instrumentations
``init()`` switches on. The only other thing the demo harness adds is a result
line per token on ``results`` so the terminal can show what happened.
"""

from __future__ import annotations

import logging
import signal
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import otelkit
from otelkit import pipeline
from otelkit._demo._apistub import token_mint
from otelkit._demo._backends import Queue, Store

MAX_ATTEMPTS = 3
DESTINATION = "tokens"
log = logging.getLogger("token_pipeline")


@dataclass
class DemoConfig:
    """Everything a demo process needs; picklable, handed to spawned processes."""

    queue: Queue
    store: Store
    api: dict[str, str]  # source -> base URL
    stop: Any  # multiprocessing Event
    results: Any  # multiprocessing Queue of result dicts
    events: int
    seed: int
    continuous: bool = False
    interval: float = 0.05  # seconds between discoveries
    # Where telemetry goes, chosen by `otelkit demo` (its receiver, the run's resource attributes): passed to
    # otelkit.init() as arguments. A real service would simply rely on its OTEL_* environment.
    init_options: dict[str, Any] = field(default_factory=dict)


def _leave_ctrl_c_to_the_parent() -> None:
    # Ctrl-C reaches the whole process group; `otelkit demo` then sets ``stop`` and every process
    # finishes its current token and flushes its telemetry instead of dying mid-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- the discoverer -------------------------------------------------------------------------------


def discoverer_main(cfg: DemoConfig) -> None:
    """Process entry point: discover tokens and queue them."""
    _leave_ctrl_c_to_the_parent()
    otelkit.init(service_name="token-discoverer", **cfg.init_options)
    logging.getLogger().setLevel(logging.INFO)
    queue = cfg.queue
    queue.connect()
    system = queue.system
    # What waits (ready) and what was given up on (dead_letter), as two states of one queue: the
    # backlog alerts count only the waiting ones, the dashboard shows both.
    depth = pipeline.observe_queue(DESTINATION, queue.length, system=system, state="ready")
    dead = pipeline.observe_queue(DESTINATION, queue.dead_letters, system=system, state="dead_letter")
    try:
        index = 0
        while not cfg.stop.is_set() and (cfg.continuous or index < cfg.events):
            discover(queue, token_mint(cfg.seed, index), system)
            index += 1
            cfg.stop.wait(cfg.interval)  # the pace of the upstream source
        cfg.stop.wait()  # a service: it stays up (reporting the queue depth) until told to stop
    finally:
        # Shut down first: its final collection then samples the queue once more, so even a run
        # shorter than one export interval reports its queue depth.
        otelkit.shutdown()
        depth.close()
        dead.close()


def discover(queue: Queue, mint: str, system: str) -> None:
    """One discovered token: dedup in the seen-set, then emit it onto the queue."""
    # The business event is born here: one correlation ID from discovery to the database row.
    with pipeline.correlate(), pipeline.stage("discover", source="pumpfun"):
        if not queue.mark_seen(mint):  # SADD: already known
            return
        pipeline.discovered(source="pumpfun")
        with pipeline.emit(DESTINATION, system=system, attempt=1) as message:
            queue.put(message.wrap({"mint": mint}))
        log.info("discovered token %s", mint)


# --- the enrichment workers -----------------------------------------------------------------------


def worker_main(cfg: DemoConfig, worker: int) -> None:
    """Process entry point: take tokens off the queue until told to stop."""
    _leave_ctrl_c_to_the_parent()
    options = dict(cfg.init_options)
    attributes = {**options.pop("resource_attributes", {}), "worker.index": str(worker)}
    otelkit.init(service_name="token-enricher", resource_attributes=attributes, **options)
    logging.getLogger().setLevel(logging.INFO)
    import httpx  # only the workers call the APIs (a client made before init() would be traced too)

    queue, store = cfg.queue, cfg.store
    queue.connect()
    store.connect()
    system = queue.system
    # The three API calls of a token run in parallel on this pool; otelkit carries the trace context
    # and correlation ID into its threads, so their spans still sit under "process tokens".
    # An A/B experiment on the fetch step (seed 000: "controlled experiments with processing
    # parameters"): even workers call the three APIs in parallel, odd ones one after the other; the
    # variant label puts both arms side by side on the dashboard.
    parallel = worker % 2 == 0
    with httpx.Client(timeout=2.0) as http, ThreadPoolExecutor(max_workers=3, thread_name_prefix="fetch") as pool:
        try:
            while not cfg.stop.is_set():
                raw = queue.get(timeout=1.0)  # a blocking pop (BRPOP); stop is checked in between
                if raw is None:
                    continue
                cfg.results.put(handle(raw, queue, store, http, cfg.api, system, worker, pool if parallel else None))
        finally:
            otelkit.shutdown()


def handle(raw: str, queue: Queue, store: Store, http: Any, api: dict[str, str], system: str,
           worker: int, pool: ThreadPoolExecutor | None = None) -> dict[str, Any]:
    """Process one queued token: enrich, persist, or retry / dead-letter."""
    with pipeline.receive(DESTINATION, raw, system=system, parent="producer", max_attempts=MAX_ATTEMPTS) as msg:
        mint = msg.payload["mint"]
        attempt = msg.attempt or 1
        outcome, error = "stored", ""
        try:
            row = enrich(http, api, mint, pool)
            row["attempts"] = attempt
            with pipeline.stage("persist", source="database"):
                store.write(row)
            log.info("stored token %s after %d attempt(s)", mint, attempt)
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if pipeline.classify_failure(exc) == "transient" and attempt < MAX_ATTEMPTS:
                msg.retry(error)
                with pipeline.emit(DESTINATION, system=system, attempt=attempt + 1) as again:
                    queue.put(again.wrap({"mint": mint}))
                log.warning("token %s failed (%s), queued attempt %d", mint, exc, attempt + 1)
                outcome = "retried"
            else:
                msg.dead_letter(error)
                queue.dead_letter({"mint": mint, "error": str(exc), "attempts": attempt,
                                   "correlation_id": msg.correlation_id})
                log.error("token %s dead-lettered after %d attempt(s): %s", mint, attempt, exc)
                outcome = "dead_letter"
        span_context = msg.span.get_span_context()
        return {"mint": mint, "outcome": outcome, "attempt": attempt, "worker": worker,
                "trace_id": format(span_context.trace_id, "032x"), "correlation_id": msg.correlation_id,
                "error": error}


def enrich(http: Any, api: dict[str, str], mint: str, pool: ThreadPoolExecutor | None = None) -> dict[str, Any]:
    """Ask the three APIs about ``mint``, in parallel on ``pool``; each call is a stage labelled with its source."""
    calls = {
        "jupiter": lambda: _get(http, f"{api['jupiter']}/jupiter/v6/price", "jupiter", {"ids": mint}),
        "helius": lambda: _get(http, f"{api['helius']}/helius/v0/token-metadata", "helius", {"mint": mint}),
        "dexscreener": lambda: _get(http, f"{api['dexscreener']}/dexscreener/latest/dex/tokens/{mint}",
                                    "dexscreener"),
    }

    variant = "sequential" if pool is None else "parallel"

    def fetch(source: str) -> Any:
        with pipeline.stage("fetch", source=source, variant=variant):
            return calls[source]()

    if pool is None:
        answers = {source: fetch(source) for source in calls}
    else:
        futures = {source: pool.submit(fetch, source) for source in calls}
        wait(futures.values())  # all three finish (or fail) before the token is settled
        answers = {source: future.result() for source, future in futures.items()}  # the first failure raises
    return {"mint": mint, "symbol": answers["helius"]["symbol"], "price": answers["jupiter"]["data"][mint]["price"],
            "liquidity_usd": sum(p["liquidity"]["usd"] for p in answers["dexscreener"]["pairs"])}


class ApiError(Exception):
    """An API answered with an error status; ``response`` lets otelkit's classifier read the status code."""

    def __init__(self, source: str, response: Any) -> None:
        super().__init__(f"{source} answered HTTP {response.status_code}")
        self.response = response  # 429 / 5xx: transient; other 4xx: permanent (otelkit's default rules)


def _get(http: Any, url: str, source: str, params: dict[str, str] | None = None) -> Any:
    response = http.get(url, params=params)
    if response.status_code >= 400:
        raise ApiError(source, response)
    return response.json()
