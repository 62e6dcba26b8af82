"""BullMQ for Python (PyPI ``bullmq``): jobs traced end to end, interoperable with Node's ``bullmq-otel``.

How Node BullMQ with ``bullmq-otel`` carries context (read from bullmq 6 / bullmq-otel 2): the
producer's ``Queue.add`` runs ``propagation.inject`` into a plain object, ``JSON.stringify``-s it and
stores it as the job option ``telemetry.metadata``, which the job's ``opts`` hash field holds under
the short key ``tm`` (a JSON string inside the opts JSON). The Node worker parses ``tm``, extracts
it with the global propagator (W3C ``traceparent``/``tracestate`` and ``baggage`` by default) and
makes its ``process {queue}`` span a child of it.

otelkit reads and writes that very field:

* ``Queue.add`` runs inside ``pipeline.emit(queue.name, system="bullmq")``: a PRODUCER span
  ``send {queue}``, the trace context, baggage (with the correlation ID) and otelkit's headers
  written as the ``tm`` JSON; ``messaging.message.id`` is the job ID. The EVALSHA that adds the job
  is that operation (no redis span of its own). A job whose options already carry ``tm`` (or
  ``telemetry.omitContext``) is left as it is.
* the worker's processor runs inside ``pipeline.receive(queue.name, <tm>, system="bullmq")``: a
  CONSUMER span linked to the producer (Node's or Python's), the correlation ID restored, attempt
  ``attemptsMade + 1``. The outcome is what BullMQ does next: ``ack`` on success; on an error
  ``retry`` while attempts remain (``opts.attempts``), ``dead_letter`` (the failed set) at the last
  attempt or for ``UnrecoverableError``.
* the worker's own polling, lock renewals and stalled checks (``Worker.run`` and what it starts) run
  with instrumentation suppressed: no root redis span per poll; the processor runs with it restored.

* ``Queue.addBulk``: one PRODUCER span ``send {queue}`` per job, all siblings under the caller's span, each
  job with its own ``tm``; each job gets a fresh correlation ID (as ``add`` does) unless one is current.
* ``FlowProducer.add`` / ``addBulk``: one PRODUCER span ``send {queueName}`` per node of the tree (parent and
  children), siblings under the caller's span, each node with its own ``tm``. A flow is one business
  event: all its nodes share the caller's correlation ID, or one fresh ID per flow.
  The spans of a batch or a flow stay open until BullMQ's single script/transaction has run, so a failed
  batch marks every one of its sends as failed.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import context as otel_context

from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS
from otelkit._correlation import get_correlation_id, new_correlation_id
from otelkit._instrument import _common, _lazy
from otelkit._internal_log import logger
from otelkit._names import SENT_AT_HEADER
from otelkit._pipeline.carriers import MAX_VALUE_BYTES
from otelkit._pipeline.scopes import Emission, Reception
from otelkit._status import IntegrationStatus

NAME = "bullmq"
MIN_VERSION = (3, 0)
SYSTEM = "bullmq"
TM = "tm"
"""The job option under which BullMQ (``telemetry.metadata``) keeps the propagation JSON."""
ATTR_JOB_NAME = "messaging.bullmq.job.name"

_state: dict[str, Any] = {}
_active = False


def job_carrier(job: Any) -> dict[str, Any] | None:
    """The propagation headers a BullMQ job carries (``opts.tm`` / ``opts.telemetry.metadata``), or None.

    Never raises: a missing, non-JSON, oversized or non-object value reads as absent.
    """
    try:
        opts = getattr(job, "opts", None)
        if not isinstance(opts, dict):
            return None
        raw = opts.get(TM)
        if raw is None:
            telemetry = opts.get("telemetry")
            raw = telemetry.get("metadata") if isinstance(telemetry, dict) else None
        if isinstance(raw, dict):
            return raw
        if not isinstance(raw, str) or len(raw) > MAX_VALUE_BYTES * 2:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None
    except Exception as error:
        logger.debug("otelkit: unreadable BullMQ telemetry metadata: %r", error)
        return None


def _server(instance: Any) -> tuple[str | None, int | None]:
    """(``server.address``, ``server.port``) of a Queue/Worker's Redis connection option, cached on the instance."""
    cached: tuple[str | None, int | None] | None = getattr(instance, "_otelkit_server", None)
    if cached is not None:
        return cached
    host: Any = None
    port: Any = None
    try:
        connection = (getattr(instance, "opts", None) or {}).get("connection")
        if isinstance(connection, str):
            from urllib.parse import urlsplit

            parts = urlsplit(connection)
            host, port = parts.hostname, parts.port or (6379 if parts.hostname else None)
        elif isinstance(connection, dict):
            host, port = connection.get("host", "localhost"), connection.get("port", 6379)
        else:
            kwargs = getattr(getattr(connection, "connection_pool", None), "connection_kwargs", None)
            if isinstance(kwargs, dict):
                host, port = kwargs.get("host"), kwargs.get("port")
    except Exception:  # an unusual connection option: no server attributes
        host = port = None
    result = (host if isinstance(host, str) else None, port if isinstance(port, int) else None)
    try:
        instance._otelkit_server = result
    except Exception:
        pass
    return result


_name_attrs: dict[str, dict[str, str]] = {}


def _attributes(name: object) -> dict[str, str] | None:
    """``messaging.bullmq.job.name`` (a job type, low cardinality), one dict per name (bounded)."""
    if not isinstance(name, str):
        return None
    attrs = _name_attrs.get(name)
    if attrs is None:
        attrs = {ATTR_JOB_NAME: name}
        if len(_name_attrs) < 1024:
            _name_attrs[name] = attrs
    return attrs


def _dated_carrier(job: Any) -> dict[str, Any]:
    """The job's carrier; a job from a producer without otelkit is dated by BullMQ's own ``timestamp`` (ms)."""
    carrier = dict(job_carrier(job) or {})
    if SENT_AT_HEADER not in carrier:
        stamp = getattr(job, "timestamp", None)
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            carrier[SENT_AT_HEADER] = str(stamp)
    return carrier


def _job_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    name = kwargs.get("name", args[0] if args else None)
    data = kwargs.get("data", args[1] if len(args) > 1 else None)
    opts = kwargs.get("opts", args[2] if len(args) > 2 else None)
    return name, data, opts


async def _add(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not _active or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    name, data, opts = _job_name(args, kwargs)
    telemetry = opts.get("telemetry") if isinstance(opts, dict) else None
    if opts is not None and (not isinstance(opts, dict) or TM in opts or (
            isinstance(telemetry, dict) and (telemetry.get("omitContext") or telemetry.get("metadata")))):
        return await wrapped(*args, **kwargs)  # context already there, or turned off for this job
    headers: dict[str, str] = {}
    address, port = _server(instance)
    with Emission(str(getattr(instance, "name", "")), headers, system=SYSTEM, attributes=_attributes(name),
                  server_address=address, server_port=port) as msg:
        new_opts = {**(opts or {}), TM: json.dumps(headers, separators=(",", ":"))}
        token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))  # the EVALSHA is this send
        try:
            job = await wrapped(name, data, new_opts)
        finally:
            otel_context.detach(token)
        job_id = getattr(job, "id", None)
        if job_id is not None:
            msg.message_id = job_id
    return job


class _Sends:
    """The PRODUCER spans of one batch (``addBulk``, a flow): siblings under the caller's context, strictly
    nested (each entered on a re-attached base context), closed in reverse order once the batch ran."""

    __slots__ = ("base", "emissions", "server", "tokens")

    def __init__(self, server: tuple[str | None, int | None]) -> None:
        self.base = otel_context.get_current()
        self.server = server
        self.tokens: list[object] = []
        self.emissions: list[Emission] = []

    def open(self, queue: object, name: object, opts: object, correlation_id: str | None = None) -> Any:
        """``opts`` with this job's ``tm``; ``opts`` as they are when they carry a context already."""
        telemetry = opts.get("telemetry") if isinstance(opts, dict) else None
        if opts is not None and (not isinstance(opts, dict) or TM in opts or (
                isinstance(telemetry, dict) and (telemetry.get("omitContext") or telemetry.get("metadata")))):
            return opts
        headers: dict[str, str] = {}
        job_id = opts.get("jobId") if isinstance(opts, dict) else None
        scope = Emission(str(queue or ""), headers, system=SYSTEM, attributes=_attributes(name),
                         message_id=job_id if isinstance(job_id, str) else None, correlation_id=correlation_id,
                         server_address=self.server[0], server_port=self.server[1])
        self.tokens.append(otel_context.attach(self.base))
        scope.__enter__()
        self.emissions.append(scope)
        return {**(opts or {}), TM: json.dumps(headers, separators=(",", ":"))}

    def close(self, error: BaseException | None) -> None:
        while self.emissions or self.tokens:
            if len(self.emissions) == len(self.tokens):
                try:
                    self.emissions.pop().__exit__(type(error) if error else None, error, None)
                except Exception:
                    pass
            else:
                otel_context.detach(self.tokens.pop())  # type: ignore[arg-type]


def _name_sends(sends: _Sends, jobs: list[Any]) -> None:
    """The job IDs BullMQ gave the jobs, on their send spans (in the order the sends were opened)."""
    if len(jobs) != len(sends.emissions):  # a node that carried a context of its own: no safe pairing
        return
    for scope, job in zip(sends.emissions, jobs, strict=False):
        job_id = getattr(job, "id", None)
        if scope.message_id is None and job_id is not None:
            scope.message_id = job_id


async def _run_batch(sends: _Sends, call: Any, jobs_of: Any) -> Any:
    token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))  # the batch's script is these sends
    error: BaseException | None = None
    try:
        result = await call()
        try:
            _name_sends(sends, jobs_of(result))
        except Exception:
            pass
        return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        otel_context.detach(token)
        sends.close(error)


async def _add_bulk(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Queue.addBulk``: one PRODUCER span per job."""
    if not _active or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    sends = _Sends(_server(instance))
    try:
        marked: list[Any] = []
        traced: list[bool] = []  # whether the job got a send of its own (not one that carried a context)
        for job in list(args[0] if args else kwargs["jobs"]):
            opts = job.get("opts") if isinstance(job, dict) else None
            new_opts = sends.open(getattr(instance, "name", ""), job.get("name"), opts) if isinstance(
                job, dict) else opts
            traced.append(new_opts is not opts)
            marked.append({**job, "opts": new_opts} if new_opts is not opts else job)
    except Exception as error:
        logger.debug("otelkit: BullMQ addBulk not traced: %r", error)
        sends.close(None)
        return await wrapped(*args, **kwargs)

    def jobs_of(result: Any) -> list[Any]:
        return [job for job, mine in zip(result, traced, strict=False) if mine]

    return await _run_batch(sends, lambda: wrapped(marked), jobs_of)


def _mark_tree(sends: _Sends, node: Any, correlation_id: str | None) -> Any:
    """A copy of a flow node (and its children) with each node's ``tm``, sends opened in pre-order."""
    if not isinstance(node, dict):
        return node
    marked = {**node, "opts": sends.open(node.get("queueName"), node.get("name"), node.get("opts"), correlation_id)}
    if marked["opts"] is None:
        del marked["opts"]
    children = node.get("children")
    if isinstance(children, list):
        marked["children"] = [_mark_tree(sends, child, correlation_id) for child in children]
    return marked


def _tree_jobs(tree: Any) -> list[Any]:
    """The jobs of a flow result tree ``{"job": Job, "children": [...]}`` in pre-order (the sends' order)."""
    if not isinstance(tree, dict):
        return []
    out = [tree.get("job")]
    for child in tree.get("children") or ():
        out += _tree_jobs(child)
    return out


async def _flow_add(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``FlowProducer.add``: one PRODUCER span per node; the whole flow shares one correlation ID."""
    if not _active or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    sends = _Sends(_server(instance))
    try:
        flow = args[0] if args else kwargs["flow"]
        rest = args[1:] if args else ()
        options = {k: v for k, v in kwargs.items() if k != "flow"}
        marked = _mark_tree(sends, flow, get_correlation_id() or new_correlation_id())
    except Exception as error:
        logger.debug("otelkit: BullMQ flow not traced: %r", error)
        sends.close(None)
        return await wrapped(*args, **kwargs)
    return await _run_batch(sends, lambda: wrapped(marked, *rest, **options), _tree_jobs)


async def _flow_add_bulk(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``FlowProducer.addBulk``: one PRODUCER span per node; each flow one correlation ID."""
    if not _active or not _common.instrumentation_enabled():
        return await wrapped(*args, **kwargs)
    sends = _Sends(_server(instance))
    try:
        flows = list(args[0] if args else kwargs["flows"])
        current = get_correlation_id()
        marked = [_mark_tree(sends, flow, current or new_correlation_id()) for flow in flows]
    except Exception as error:
        logger.debug("otelkit: BullMQ flows not traced: %r", error)
        sends.close(None)
        return await wrapped(*args, **kwargs)

    def jobs_of(result: Any) -> list[Any]:
        return [job for tree in result or () for job in _tree_jobs(tree)]

    return await _run_batch(sends, lambda: wrapped(marked), jobs_of)


def _outcome(msg: Reception, job: Any, attempt: int, exc: BaseException) -> None:
    from bullmq import UnrecoverableError  # bullmq is imported: its worker is running this job

    attempts = job.opts.get("attempts") if isinstance(getattr(job, "opts", None), dict) else None
    if isinstance(exc, UnrecoverableError):
        msg.dead_letter("unrecoverable")
    elif isinstance(attempts, int) and attempt < attempts:
        msg.retry(type(exc).__name__)
    else:
        msg.dead_letter("attempts exhausted")


def _wrap_processor(processor: Any, queue: str, server: tuple[str | None, int | None]) -> Any:
    if getattr(processor, "_otelkit_bullmq", False):
        return processor

    async def process(job: Any, *args: Any) -> Any:
        if not _active:
            return await processor(job, *args)
        made = getattr(job, "attemptsMade", 0)
        attempt = made + 1 if isinstance(made, int) and made >= 0 else None
        token = otel_context.attach(otel_context.set_value(_SUPPRESS, False))  # the job's own work is traced
        try:
            with Reception(queue, _dated_carrier(job), system=SYSTEM, message_id=getattr(job, "id", None),
                           attempt=attempt, attributes=_attributes(getattr(job, "name", None)),
                           server_address=server[0], server_port=server[1]) as msg:
                try:
                    return await processor(job, *args)
                except Exception as exc:
                    _outcome(msg, job, attempt or 1, exc)
                    raise
        finally:
            otel_context.detach(token)

    process._otelkit_bullmq = True  # type: ignore[attr-defined]
    process.__wrapped__ = processor  # type: ignore[attr-defined]
    return process


def _worker_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Suppressed while the worker is built: with autorun it starts its loop task here, which inherits this context.
    token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))
    try:
        result = wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)
    try:
        instance.processor = _wrap_processor(instance.processor, str(getattr(instance, "name", "")),
                                             _server(instance))
    except Exception as error:  # telemetry never breaks the worker
        logger.debug("otelkit: could not wrap the BullMQ processor: %r", error)
    return result


async def _worker_run(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))  # polls, lock renewals: housekeeping
    try:
        return await wrapped(*args, **kwargs)
    finally:
        otel_context.detach(token)


def plan() -> IntegrationStatus:
    """What :func:`instrument` would report, without importing anything (``otelkit doctor``)."""
    return _common.plan_library(NAME, ("bullmq",), MIN_VERSION, "3.0", "bullmq", None)


def _patch() -> None:
    import bullmq.queue
    import bullmq.worker

    targets = [(bullmq.queue.Queue, "add", _add), (bullmq.worker.Worker, "__init__", _worker_init),
               (bullmq.worker.Worker, "run", _worker_run)]
    if "addBulk" in vars(bullmq.queue.Queue):
        targets.append((bullmq.queue.Queue, "addBulk", _add_bulk))
    try:
        import bullmq.flow_producer

        flows = bullmq.flow_producer.FlowProducer
        targets += [(flows, attribute, wrapper) for attribute, wrapper in (("add", _flow_add),
                                                                           ("addBulk", _flow_add_bulk))
                    if attribute in vars(flows)]
    except ImportError:  # an older bullmq without flows
        pass
    for owner, attribute, wrapper in targets:
        _common.wrap(owner, attribute, wrapper)
    _state["targets"] = targets


def _on_import(_module: Any) -> None:
    if _active and "targets" not in _state:  # a failure at the import is logged by _lazy
        _patch()


def instrument(ctx: _common.Context) -> IntegrationStatus:
    """Patch bullmq now if the application imported it, else when it does (``init()`` never imports it)."""
    global _active
    found = _common.supported_dist(NAME, ("bullmq",), MIN_VERSION, "3.0", "bullmq")
    if isinstance(found, IntegrationStatus):
        return found
    _dist, version = found
    _active = True
    _lazy.when_imported(NAME, "bullmq", _on_import)  # now when bullmq is imported
    return IntegrationStatus(NAME, "enabled", f"bullmq {version}", version=version)


def uninstrument() -> None:
    global _active
    _active = False  # processors wrapped in existing workers call straight through from now on
    _lazy.cancel(NAME)
    for owner, attribute, _wrapper in _state.pop("targets", []):
        _common.unwrap(owner, attribute)
