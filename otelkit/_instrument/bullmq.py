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

Only asyncio ``Queue.add`` and ``Worker`` are instrumented (``addBulk`` and flows are not, yet).
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import context as otel_context

from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS
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
