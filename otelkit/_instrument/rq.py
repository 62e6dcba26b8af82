"""RQ (Redis Queue): a PRODUCER span per enqueued job, a CONSUMER span per execution, pipeline metrics.

No contrib instrumentation exists for RQ; otelkit builds the telemetry from :mod:`otelkit.pipeline`'s scopes,
so a job gets exactly what ``pipeline.emit``/``pipeline.receive`` give a message:

* ``Queue.enqueue_job``/``Queue.schedule_job`` (every ``enqueue*`` path of one job) run inside an
  :class:`~otelkit._pipeline.scopes.Emission`: span ``send {queue}`` (PRODUCER), ``messaging.system=rq``,
  ``messaging.message.id`` = the job ID. The carrier (trace context, baggage with the correlation ID,
  emission time) is a dict in ``job.meta["otelkit"]``: saved with the job, never in its arguments, and
  ignored by a worker without otelkit.
* ``Queue.enqueue_many`` (a batch of ``Queue.prepare_data`` entries, written in one Redis pipeline): one
  PRODUCER span ``send {queue}`` per job, all siblings under the caller's span, each job with its own carrier
  in its ``meta`` (the ``meta`` given to ``prepare_data`` is kept). The spans stay open until the batch's
  pipeline has run, so a failed batch marks every one of its sends as failed. Each job gets a fresh
  correlation ID, as ``enqueue`` does, unless a correlation ID is current (``otelkit.correlate()``, or the
  job being performed): then every job of the batch carries that one.
* ``Worker.perform_job`` (in the work horse, or in-process for ``SimpleWorker``) runs inside a
  :class:`~otelkit._pipeline.scopes.Reception`: span ``process {queue}`` (CONSUMER), a root span *linked*
  to the producer (otelkit's rule for ``receive``), with the correlation ID current for the whole job:
  every span and log record of the job carries it. (The ``rq worker`` CLI's own ``rq.worker`` logger does not
  propagate to the root logger, so its lines reach only RQ's console handler.)
* Outcomes from the job's status once RQ has handled it: finished -> ``ack``; re-queued or scheduled for
  another try (``Retry`` on enqueue, or a returned ``Retry``) -> ``retry``; failed for good (in the
  ``FailedJobRegistry``) -> ``dead_letter``; stopped or canceled -> ``drop``. The attempt number travels in
  the carrier; a retry keeps the original emission time (end-to-end latency counts every attempt) while
  time in queue counts from the job's last ``enqueued_at``.
* Queue depth: ``otelkit.messaging.queue.length`` of every queue a process enqueues to or works on
  (LLEN, ``state=ready``) and of its ``FailedJobRegistry`` (ZCARD, ``state=dead_letter``).
* RQ's own Redis traffic (the worker's BLMOVE/BLPOP loop, heartbeats, registries, the enqueue pipeline) is
  not traced: the enqueue and the job spans cover it. The job function's own Redis calls are traced.
"""

from __future__ import annotations

import contextvars
from typing import Any

from otelkit import _names
from otelkit._instrument import _common, _jobs, _lazy
from otelkit._internal_log import logger
from otelkit._status import IntegrationStatus

NAME = "rq"
SYSTEM = "rq"
MIN_VERSION = (1, 15)

_state: dict[str, Any] = {"wanted": False, "patched": []}
# The Reception of the job this thread performs, and whether this thread runs a worker loop.
_performing: contextvars.ContextVar[Any] = contextvars.ContextVar("otelkit_rq_job", default=None)
_in_worker: contextvars.ContextVar[bool] = contextvars.ContextVar("otelkit_rq_worker", default=False)


def _carrier(job: Any) -> dict[str, Any] | None:
    meta = getattr(job, "meta", None)
    carrier = meta.get(_jobs.CARRIER_KEY) if isinstance(meta, dict) else None
    return carrier if isinstance(carrier, dict) else None


def _observe(queue: Any) -> None:
    try:
        name = queue.name
        if _jobs.observed(SYSTEM, name, "ready"):  # every enqueue asks: answered by one dict lookup
            return
        key, connection = queue.key, queue.connection
        failed_key = queue.failed_job_registry.key
    except Exception:
        return
    _jobs.observe(SYSTEM, name, lambda: int(connection.llen(key)), "ready")
    _jobs.observe(SYSTEM, name, lambda: int(connection.zcard(failed_key)), "dead_letter")


def _enqueue(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Queue.enqueue_job`` / ``Queue.schedule_job``: one PRODUCER span; RQ's own commands untraced."""
    if not _state["wanted"] or _jobs.is_quiet() and not _in_worker.get():
        return wrapped(*args, **kwargs)
    job: Any = args[0] if args else kwargs.get("job")
    if _in_worker.get() and _carrier(job) is not None:
        # RQ re-queues a job it retries: the same message, its original carrier (send time, correlation ID).
        return wrapped(*args, **kwargs)
    try:
        from otelkit._pipeline.scopes import Emission

        carrier: dict[str, Any] = {}
        meta = getattr(job, "meta", None)
        # A copy: the application's meta dict may be shared by several enqueue calls.
        job.meta = {**(meta if isinstance(meta, dict) else {}), _jobs.CARRIER_KEY: carrier}
        scope = Emission(instance.name, carrier, system=SYSTEM, message_id=job.id)
    except Exception as exc:
        logger.debug("otelkit: rq enqueue not traced: %r", exc)
        return wrapped(*args, **kwargs)
    _observe(instance)
    if not getattr(instance, "_is_async", True):  # Queue(is_async=False) runs the job right here: trace it
        with scope:
            return wrapped(*args, **kwargs)
    with scope:
        token = _jobs.quiet()
        try:
            return wrapped(*args, **kwargs)
        finally:
            _jobs.detach(token)


def _enqueue_many(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Queue.enqueue_many``: one PRODUCER span per job, ended when the batch's pipeline has run."""
    if not _state["wanted"] or _jobs.is_quiet() and not _in_worker.get():
        return wrapped(*args, **kwargs)
    from opentelemetry import context as otel_context

    tokens: list[object] = []  # strictly nested: (base context, emission) pairs, undone in reverse order
    emissions: list[Any] = []
    try:
        from otelkit._pipeline.scopes import Emission

        datas = list(args[0] if args else kwargs["job_datas"])  # the caller's iterable may be one-shot
        base = otel_context.get_current()
        prepared = []
        for data in datas:
            carrier: dict[str, Any] = {}
            meta = getattr(data, "meta", None)
            # A copy: the application's meta dict may be shared by several entries.
            data = data._replace(meta={**(meta if isinstance(meta, dict) else {}), _jobs.CARRIER_KEY: carrier})
            scope = Emission(instance.name, carrier, system=SYSTEM, message_id=getattr(data, "job_id", None))
            # Every send a sibling under the caller's span, not the child of the previous one.
            tokens.append(otel_context.attach(base))
            scope.__enter__()
            emissions.append(scope)
            prepared.append(data)
        args = (prepared, *args[1:]) if args else args
        if not args:
            kwargs = {**kwargs, "job_datas": prepared}
    except Exception as exc:
        logger.debug("otelkit: rq enqueue_many not traced: %r", exc)
        _close_many(emissions, tokens, None)
        return wrapped(*args, **kwargs)
    _observe(instance)
    token = _jobs.quiet() if getattr(instance, "_is_async", True) else None
    error: BaseException | None = None
    try:
        jobs = wrapped(*args, **kwargs)
        _name_jobs(emissions, jobs)
        return jobs
    except BaseException as exc:
        error = exc
        raise
    finally:
        if token is not None:
            _jobs.detach(token)
        _close_many(emissions, tokens, error)


def _name_jobs(emissions: list[Any], jobs: Any) -> None:
    """Give each send span the ID RQ gave its job (an entry without ``job_id`` gets one inside the batch)."""
    try:
        by_carrier = {id(scope.headers): scope for scope in emissions}
        for job in jobs:
            scope = by_carrier.get(id(_carrier(job)))
            if scope is not None and scope.message_id is None:
                scope.message_id = job.id
    except Exception:
        pass


def _close_many(emissions: list[Any], tokens: list[object], error: BaseException | None) -> None:
    while emissions or tokens:
        if len(emissions) == len(tokens):
            scope = emissions.pop()
            try:
                scope.__exit__(type(error) if error else None, error, None)
            except Exception:
                pass
        else:
            _jobs.detach(tokens.pop())


def _work(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Worker.work``: the worker loop's own Redis commands are not traced."""
    if not _state["wanted"]:
        return wrapped(*args, **kwargs)
    for queue in list(getattr(instance, "queues", ()) or ()):
        _observe(queue)
    flag = _in_worker.set(True)
    token = _jobs.quiet()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)
        _in_worker.reset(flag)


def _quietly(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Worker.__init__`` (CLIENT SETNAME, CLIENT INFO...): RQ's own commands, not traced."""
    if not _state["wanted"]:
        return wrapped(*args, **kwargs)
    token = _jobs.quiet()
    try:
        return wrapped(*args, **kwargs)
    finally:
        _jobs.detach(token)


def _attempt(carrier: dict[str, Any] | None) -> int:
    raw = carrier.get(_names.ATTEMPT_HEADER) if carrier else None
    try:
        value = int(raw) if raw is not None else 1
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 1_000_000 else 1


class _Run:
    """What the Job._execute wrapper tells the perform_job wrapper: the job's exception, if any."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: BaseException | None = None


def _perform_job(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Worker.perform_job``: the CONSUMER span around the whole job, outcome from RQ's verdict."""
    if not _state["wanted"]:
        return wrapped(*args, **kwargs)
    job: Any = args[0] if args else kwargs.get("job")
    queue = args[1] if len(args) > 1 else kwargs.get("queue")
    try:
        from otelkit._pipeline.scopes import Reception

        carrier = _carrier(job)
        attempt = _attempt(carrier)
        if carrier is not None:
            # Saved with the job if RQ re-queues it: the next execution is the next attempt.
            carrier[_names.ATTEMPT_HEADER] = str(attempt + 1)
        destination = getattr(queue, "name", None) or getattr(job, "origin", None) or "default"
        scope = Reception(destination, carrier, system=SYSTEM, message_id=job.id, attempt=attempt,
                          queued_at=_jobs.epoch(getattr(job, "enqueued_at", None)))
    except Exception as exc:
        logger.debug("otelkit: rq job not traced: %r", exc)
        return wrapped(*args, **kwargs)
    run = _Run()
    flag = _in_worker.set(True)
    scope.__enter__()
    marker = _performing.set(run)
    result: Any = None
    try:
        result = wrapped(*args, **kwargs)
        return result
    finally:
        _performing.reset(marker)
        _in_worker.reset(flag)
        _settle(scope, job, run.error)


def _settle(scope: Any, job: Any, error: BaseException | None) -> None:
    try:
        status = str(getattr(job.get_status(refresh=False), "value", "") or "")
    except Exception:
        status = ""
    try:
        if status == "finished":
            scope.ack()
        elif status in ("queued", "scheduled"):
            scope.retry("rq retry")
        elif status == "failed":
            scope.dead_letter("rq FailedJobRegistry")
        elif status in ("stopped", "canceled"):
            scope.drop(f"rq job {status}")
    except Exception:
        pass
    if error is not None:
        scope.__exit__(type(error), error, error.__traceback__)
    else:
        scope.__exit__(None, None, None)


def _perform(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Job._execute`` (inside ``Job.perform``): the job's own code is traced again; its exception is noted."""
    run = _performing.get()
    if run is None:
        return wrapped(*args, **kwargs)
    token = _jobs.loud()
    try:
        return wrapped(*args, **kwargs)
    except BaseException as exc:
        run.error = exc
        raise
    finally:
        _jobs.detach(token)


def _patch(_module: Any) -> None:
    if not _state["wanted"] or _state["patched"]:
        return
    import rq.worker
    from rq.job import Job
    from rq.queue import Queue

    # rq >= 2: rq.worker is a package with BaseWorker defining everything; rq 1.x: perform_job is on Worker.
    workers = [c for c in (getattr(rq.worker, "BaseWorker", None), getattr(rq.worker, "Worker", None)) if c]

    def owner(attribute: str) -> Any:
        return next((c for c in workers if attribute in vars(c)), workers[-1])

    targets = [(Queue, "enqueue_job", _enqueue), (Queue, "schedule_job", _enqueue), (owner("work"), "work", _work),
               (Queue, "enqueue_many", _enqueue_many),
               (owner("__init__"), "__init__", _quietly),
               (owner("perform_job"), "perform_job", _perform_job),
               # _execute, not perform: rq < 3's Job.perform sends RQ's own PERSIST before calling the job
               (Job, "_execute", _perform)]
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["patched"] = targets


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("rq",), MIN_VERSION, "1.15", "rq", None)


def instrument(ctx: _common.Context) -> IntegrationStatus:
    return _jobs.enable(NAME, "rq", MIN_VERSION, "1.15", _state, lambda: _lazy.when_imported(NAME, "rq", _patch))


def uninstrument() -> None:
    _jobs.unpatch(_state, SYSTEM)
