"""arq: a PRODUCER span per enqueued job, a CONSUMER span per run, pipeline metrics.

No contrib instrumentation exists for arq; otelkit builds the telemetry from :mod:`otelkit.pipeline`'s scopes:

* ``ArqRedis.enqueue_job`` runs inside an :class:`~otelkit._pipeline.scopes.Emission`: span ``send {queue}``
  (PRODUCER, ``messaging.system=arq``, ``messaging.message.id`` = job ID). The carrier is one more key,
  ``"otelkit"``, in the job's serialized dict (next to arq's ``f``, ``a``, ``k``, ``t``, ``et``), through the
  pool's own serializer: arq reads its keys by name, so a worker without otelkit ignores it, and the
  function's arguments are untouched.
* ``Worker.run_job`` runs inside a :class:`~otelkit._pipeline.scopes.Reception` (started when arq
  deserializes the job): span ``process {queue}`` (CONSUMER), a root span *linked* to the producer
  (otelkit's rule for ``receive``). The job's coroutine is a task created inside it, so its spans and log
  records carry the correlation ID; ``otelkit.message.attempt`` is arq's ``job_try``.
* Outcomes: the function returned -> ``ack``; it raised ``arq.Retry`` (or ``RetryJob``, or was cancelled)
  and arq re-queues it -> ``retry``; it raised anything else (arq does not retry that) -> ``dead_letter``;
  arq failed the job without running it (``max_tries`` exceeded at the next pick-up, expired, aborted,
  unknown function) -> ``dead_letter``. A retry keeps the original carrier: end-to-end latency counts from
  the first enqueue, time in queue from the job's score (when it became due).
* Queue depth: ``otelkit.messaging.queue.length`` (``state=ready``): ZCARD of the queue's sorted set,
  deferred jobs included, on a synchronous client of the probe's own (same host, port, db, credentials).
* arq's own Redis traffic (the poll's ZRANGEBYSCORE, the run/finish pipelines, health checks, the
  enqueue's WATCH/MULTI) is not traced; the job's own commands are.
"""

from __future__ import annotations

import contextvars
import dataclasses
import pickle
from typing import Any

from otelkit import _names
from otelkit._instrument import _common, _jobs, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "arq"
SYSTEM = "arq"
MIN_VERSION = (0, 25)

_state: dict[str, Any] = {"wanted": False, "patched": []}
_carrying: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("otelkit_arq_carrier",
                                                                                  default=None)
_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("otelkit_arq_run", default=None)


class _Run:
    """One ``run_job`` call: its Reception once the job is deserialized, and what the function did."""

    __slots__ = ("error", "job_id", "queue", "queued_at", "ran", "scope")

    def __init__(self, job_id: object, queue: str, queued_at: float | None) -> None:
        self.job_id = job_id
        self.queue = queue
        self.queued_at = queued_at
        self.scope: Any = None
        self.ran = False
        self.error: BaseException | None = None


# --- producer ---------------------------------------------------------------------------------------

async def _enqueue_job(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _state["wanted"] or _jobs.is_quiet():
        return await wrapped(*args, **kwargs)
    try:
        from otelkit._pipeline.scopes import Emission

        queue = kwargs.get("_queue_name") or getattr(instance, "default_queue_name", None) or "arq:queue"
        job_id = kwargs.get("_job_id")
        carrier: dict[str, Any] = {}
        scope = Emission(str(queue), carrier, system=SYSTEM, message_id=job_id)
    except Exception as exc:
        logger.debug("otelkit: arq enqueue not traced: %r", exc)
        return await wrapped(*args, **kwargs)
    _observe(instance, str(queue))
    with scope:
        marker = _carrying.set(carrier)
        token = _jobs.quiet()
        try:
            job = await wrapped(*args, **kwargs)
        finally:
            _jobs.detach(token)
            _carrying.reset(marker)
        if job is not None and job_id is None:
            scope.message_id = getattr(job, "job_id", None)
        return job


def _serialize_job(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``serialize_job`` inside an instrumented enqueue: the carrier goes in as one more key of the job dict."""
    carrier = _carrying.get()
    if carrier is None:
        return wrapped(*args, **kwargs)
    serializer = kwargs.get("serializer") or pickle.dumps

    def with_carrier(data: Any) -> Any:
        if isinstance(data, dict):
            data = {**data, _jobs.CARRIER_KEY: carrier}
        return serializer(data)

    return wrapped(*args, **{**kwargs, "serializer": with_carrier})


# --- worker -----------------------------------------------------------------------------------------

async def _main(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Worker.main``: the worker's own Redis commands (and every task it starts) are not traced."""
    if not _state["wanted"]:
        return await wrapped(*args, **kwargs)
    _ensure_wrapped(instance)
    token = _jobs.quiet()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)


async def _create_pool(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``create_pool`` (its PING and INFO): arq's own commands, not traced."""
    token = _jobs.quiet()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)


async def _close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Worker.close`` (deletes the health-check key): arq's own command, not traced."""
    token = _jobs.quiet()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)


async def _run_job(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _state["wanted"]:
        return await wrapped(*args, **kwargs)
    _ensure_wrapped(instance)
    score = args[1] if len(args) > 1 else kwargs.get("score")
    job_id = args[0] if args else kwargs.get("job_id")
    queue = str(getattr(instance, "queue_name", ""))
    if not _jobs.observed(SYSTEM, queue, "ready"):  # the worker's pool exists once it runs jobs
        _observe(getattr(instance, "_pool", None), queue)
    run = _Run(job_id, queue, _jobs.epoch(score))
    marker = _run.set(run)
    token = _jobs.quiet()  # arq's pick-up and finish pipelines, also when run_job is called outside main()
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if run.scope is not None:
            _settle(run)
        _jobs.detach(token)
        _run.reset(marker)


def _settle(run: _Run) -> None:
    scope, error = run.scope, run.error
    try:
        if not run.ran:
            scope.dead_letter("arq failed the job before running it (max_tries exceeded, expired, aborted or "
                              "unknown function)")
        elif error is None:
            scope.ack()
        elif type(error).__name__ in ("Retry", "RetryJob", "CancelledError"):
            scope.retry(type(error).__name__)
        else:
            scope.dead_letter(f"arq job failed: {type(error).__name__}")
    except Exception:
        pass
    if error is not None and not _requested_retry(error):
        scope.__exit__(type(error), error, error.__traceback__)
    else:
        scope.__exit__(None, None, None)


def _requested_retry(error: BaseException) -> bool:
    """``arq.Retry``: the job asks to run again later; not an error (arq logs it at INFO)."""
    return type(error).__name__ == "Retry" and type(error).__module__.startswith("arq")


def _deserialize_job_raw(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """arq's job deserialization in ``run_job``: the moment the job's carrier is known; the CONSUMER span starts."""
    run = _run.get()
    if run is None or run.scope is not None:
        return wrapped(*args, **kwargs)
    deserializer = kwargs.get("deserializer") or pickle.loads
    seen: dict[str, Any] = {}

    def capture(raw: Any) -> Any:
        data = deserializer(raw)
        if isinstance(data, dict):
            seen["carrier"] = data.get(_jobs.CARRIER_KEY)
            seen["function"] = data.get("f")
        return data

    result = wrapped(*args, **{**kwargs, "deserializer": capture})
    try:
        from otelkit._pipeline.scopes import Reception

        carrier = seen.get("carrier")
        scope = Reception(run.queue, carrier if isinstance(carrier, dict) else None, system=SYSTEM,
                          message_id=run.job_id, queued_at=run.queued_at)
        scope.__enter__()  # attached in run_job's task: the job's task, created next, inherits it
        run.scope = scope
    except Exception as exc:
        logger.debug("otelkit: arq job not traced: %r", exc)
    return result


def _wrap_function(coroutine: Any) -> Any:
    if getattr(coroutine, "_otelkit_arq", False):
        return coroutine

    async def run(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        current = _run.get()
        if current is None or current.scope is None:
            return await coroutine(ctx, *args, **kwargs)
        current.ran = True
        scope = current.scope
        try:
            job_try = ctx.get("job_try")
            if type(job_try) is int:  # known once arq counted this pick-up
                scope.attempt = job_try
                scope.span.set_attribute(_names.ATTR_ATTEMPT, job_try)
        except Exception:
            pass
        token = _jobs.loud()
        try:
            return await coroutine(ctx, *args, **kwargs)
        except BaseException as exc:
            current.error = exc
            raise
        finally:
            _jobs.detach(token)

    run._otelkit_arq = True  # type: ignore[attr-defined]
    run.__wrapped__ = coroutine  # type: ignore[attr-defined]
    return run


def _ensure_wrapped(worker: Any) -> None:
    """Wrap each registered function once per worker, to note whether it ran and how it ended."""
    if worker.__dict__.get("_otelkit_arq"):
        return
    try:
        functions = worker.functions
        for name, function in list(functions.items()):
            coroutine = getattr(function, "coroutine", None)
            if coroutine is None:
                continue
            if dataclasses.is_dataclass(function) and not isinstance(function, type):
                # arq >= 0.26: a copy, the application's object is untouched
                functions[name] = dataclasses.replace(function, coroutine=_wrap_function(coroutine))
            elif hasattr(function, "_replace"):  # older arq: a NamedTuple
                functions[name] = function._replace(coroutine=_wrap_function(coroutine))
        worker.__dict__["_otelkit_arq"] = True
    except Exception as exc:
        logger.debug("otelkit: arq functions not wrapped: %r", exc)


# --- queue depth ------------------------------------------------------------------------------------

def _observe(client: Any, queue: str) -> None:
    if client is None or not queue:
        return
    try:
        params = client.connection_pool.connection_kwargs
        settings = {k: params[k] for k in ("host", "port", "db", "username", "password") if params.get(k) is not None}
    except Exception:
        return

    state: dict[str, Any] = {}

    def probe() -> int:
        sync = state.get("client")
        if sync is None:
            import redis

            sync = state["client"] = redis.Redis(socket_timeout=2, socket_connect_timeout=2, **settings)
        count: Any = sync.zcard(queue)
        return int(count)

    _jobs.observe(SYSTEM, queue, probe, "ready")


# --- patching ---------------------------------------------------------------------------------------

def _patch(_module: Any) -> None:
    if not _state["wanted"] or _state["patched"]:
        return
    import arq
    import arq.connections
    import arq.worker

    targets = [(arq.connections.ArqRedis, "enqueue_job", _enqueue_job),
               (arq.connections, "serialize_job", _serialize_job),
               (arq.worker.Worker, "main", _main), (arq.worker.Worker, "run_job", _run_job),
               (arq.worker.Worker, "close", _close),
               (arq.connections, "create_pool", _create_pool), (arq, "create_pool", _create_pool),
               (arq.worker, "create_pool", _create_pool),
               (arq.worker, "deserialize_job_raw", _deserialize_job_raw)]
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["patched"] = targets


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("arq",), MIN_VERSION, "0.25", "arq", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    return _jobs.enable(NAME, "arq", MIN_VERSION, "0.25", _state, lambda: _lazy.when_imported(NAME, "arq", _patch))


def uninstrument() -> None:
    _jobs.unpatch(_state, SYSTEM)
