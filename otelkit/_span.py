"""``otelkit.span``: one helper that is a context manager and a decorator.

Why not ``tracer.start_as_current_span``: the API builds a generator-based
context manager (``_agnosticcontextmanager``) around another one
(``use_span``); that machinery costs about 2 µs per span, a fifth of an SDK
span. :class:`span` is a small class whose ``__enter__``/``__exit__`` call
``tracer.start_span`` and ``context.attach``/``detach`` directly, so it is
cheaper than the raw API with the same processors (``benchmarks/bench_core.py``).

Behaviour, for every form (``with``, sync function, coroutine, generator,
async generator):

* an ``Exception`` passing through goes to
  :func:`otelkit._errors.report_exception` for each span it crosses, which
  deduplicates per exception object: one ``exception`` event (on the
  innermost span), ERROR status ``"<Type>: <message>"`` on every span, one
  Sentry event (when Sentry is on) whose ID is put on every span.
  ``_record_exception=False`` only sets the ERROR status (no event, no report:
  for exceptions that are part of the normal flow);
* ``BaseException`` that is not an ``Exception`` (``GeneratorExit``,
  ``KeyboardInterrupt``, ``SystemExit``, ``asyncio.CancelledError``) ends the
  span without marking it as an error, as the API does;
* attribute values the OTel data model cannot hold (``None``, dicts, objects,
  mixed-type sequences) are dropped with a debug log, never raised;
* for generators the span covers the whole iteration, and is the current span
  only while the generator body runs (between two ``next()`` calls the
  caller's own context is current, so nothing leaks into the consumer).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from otelkit._internal_log import logger as _log
from otelkit._version import __version__

__all__ = ["span"]

F = TypeVar("F", bound=Callable[..., Any])

_TRACER_NAME = "otelkit"
_SCALARS = frozenset((str, bool, int, float))
_OPTIONS = frozenset(("_kind", "_links", "_context", "_record_exception"))
_KINDS = {k.name.lower(): k for k in SpanKind}
_warned_options: set[str] = set()

# The tracer is cached against the identity of the global provider. otelkit
# sets the global once, to its proxy provider (``_proxy``), whose tracers follow
# re-init; comparing identities keeps us correct if someone else (a test, a
# library) sets a different global before otelkit does.
_provider_seen: object = None
_tracer: trace.Tracer | None = None


_get_tracer_provider = trace.get_tracer_provider


def _get_tracer() -> trace.Tracer:
    global _provider_seen, _tracer
    provider = _get_tracer_provider()
    tracer = _tracer
    if tracer is None or provider is not _provider_seen:
        tracer = provider.get_tracer(_TRACER_NAME, __version__)
        _tracer = tracer
        _provider_seen = provider
    return tracer


def _valid_value(value: object) -> bool:
    if type(value) in _SCALARS:
        return True
    if isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        kinds = {type(v) for v in value if v is not None}
        if not kinds:
            return True
        if len(kinds) == 1:
            return next(iter(kinds)) in _SCALARS
        # bool is an int subclass; the SDK rejects sequences mixing them, so do we.
        return False
    return False


def _clean_attributes(name: str, attributes: dict[str, Any]) -> dict[str, Any] | None:
    """Attributes the OTel data model accepts; the rest dropped with a debug log."""
    if not attributes:
        return None
    for value in attributes.values():
        if type(value) not in _SCALARS:
            break
    else:
        return attributes  # the common case: every value is a plain scalar
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        try:
            valid = _valid_value(value)
        except Exception:  # a sequence whose iteration raises, an odd __eq__...: drop the value
            valid = False
        if valid:
            cleaned[key] = value
        else:
            _log.debug("otelkit.span(%r): dropped attribute %r of type %s (not a str, bool, int, float "
                       "or a homogeneous sequence of those)", name, key, type(value).__name__)
    return cleaned or None


def _safe_name(name: object) -> str:
    try:
        return str(name)
    except Exception:
        _log.debug("otelkit.span: the span name's str() raised; using its type name", exc_info=True)
        return type(name).__name__


def _parse_kind(name: str, value: object) -> SpanKind:
    if isinstance(value, SpanKind):
        return value
    if isinstance(value, str) and value.lower() in _KINDS:
        return _KINDS[value.lower()]
    _log.debug("otelkit.span(%r): ignored _kind=%r (accepted: a SpanKind or one of %s)",
               name, value, ", ".join(_KINDS))
    return SpanKind.INTERNAL


def _parse_links(name: str, value: object) -> list[Link] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (Link, SpanContext, trace.Span)) else value
    links: list[Link] = []
    try:
        for item in cast("Sequence[object]", items):
            if isinstance(item, Link):
                links.append(item)
            elif isinstance(item, SpanContext):
                links.append(Link(item))
            elif isinstance(item, trace.Span):
                links.append(Link(item.get_span_context()))
            else:
                _log.debug("otelkit.span(%r): ignored link %r (accepted: Link, SpanContext or Span)", name, item)
    except TypeError:
        _log.debug("otelkit.span(%r): ignored _links=%r (not a sequence)", name, value)
    return links or None


def _handle_exception(otel_span: trace.Span, exc: BaseException, record: bool) -> None:
    """Hand ``exc`` to :func:`otelkit._errors.report_exception` for this span. Never raises.

    ``report_exception`` is called for every otelkit span the exception crosses
    (while the span is open) and deduplicates per exception object: one
    ``exception`` event (on the innermost span that saw it), ERROR status on
    each span, one Sentry event whose ID lands on each span.
    """
    if not isinstance(exc, Exception):
        return
    if record:
        try:
            from otelkit._errors import report_exception

            report_exception(exc, otel_span)
            return
        except Exception:
            _log.debug("otelkit.span: report_exception failed", exc_info=True)
    try:
        if otel_span.is_recording():
            otel_span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    except Exception:  # telemetry must never turn one error into two
        _log.debug("otelkit.span: could not set the error status", exc_info=True)


class span:  # lower-case: it is the public function-like API ``otelkit.span``
    """A span that is a context manager and a decorator.

    As a context manager it yields the OTel span, current inside the block::

        with otelkit.span("load", table="orders") as s:
            s.set_attribute("rows", n)

    As a decorator it wraps sync functions, coroutines, generators and async
    generators; each call (or each full iteration) is one span::

        @otelkit.span("fetch", source="api")
        async def fetch(): ...

    Args:
        name: The span name (positional only, so an attribute may be called ``name``).
        _kind: A ``SpanKind`` or its name (``"server"``, ``"client"``, ``"producer"``,
            ``"consumer"``, ``"internal"``). Default internal.
        _links: Links (``Link``, ``SpanContext`` or ``Span``, or a sequence of them).
        _context: Parent context instead of the current one.
        _record_exception: Record and report an exception that passes (default True);
            ``False`` only sets the ERROR status.
        **attributes: Span attributes. Values must be str, bool, int, float or a
            homogeneous sequence of those; others are dropped with a debug log.
    """

    __slots__ = ("_attributes", "_context", "_kind", "_links", "_name", "_record", "_span", "_token")

    def __init__(self, name: str, /, **attributes: Any) -> None:
        self._name = name if isinstance(name, str) else _safe_name(name)
        self._kind = SpanKind.INTERNAL
        self._links: list[Link] | None = None
        self._context: Context | None = None
        self._record = True
        if attributes:
            # Reserved options start with "_" so they can never collide with an attribute.
            for key in [k for k in attributes if k[:1] == "_"]:
                value = attributes.pop(key)
                if key == "_kind":
                    self._kind = _parse_kind(self._name, value)
                elif key == "_links":
                    self._links = _parse_links(self._name, value)
                elif key == "_context":
                    self._context = value if isinstance(value, Context) else None
                elif key == "_record_exception":
                    self._record = bool(value)
                elif key not in _warned_options:  # once per option name: spans are made in loops
                    _warned_options.add(key)
                    _log.warning("otelkit.span(%r): unknown option %s ignored (options: %s); attribute "
                                 "names cannot start with '_'", self._name, key, ", ".join(sorted(_OPTIONS)))
        self._attributes = _clean_attributes(self._name, attributes) if attributes else None
        self._span: trace.Span | None = None
        self._token: Any = None

    # --- context manager --------------------------------------------------------------------------

    def _start(self) -> trace.Span:
        try:
            return _get_tracer().start_span(self._name, self._context, self._kind, self._attributes, self._links)
        except Exception:
            _log.debug("otelkit.span(%r): could not start a span", self._name, exc_info=True)
            return trace.INVALID_SPAN

    def __enter__(self) -> trace.Span:
        # _start() inlined: this is the hot path the benchmark compares with the raw API.
        try:
            provider = _get_tracer_provider()
            tracer = _tracer if provider is _provider_seen and _tracer is not None else _get_tracer()
            otel_span = tracer.start_span(self._name, self._context, self._kind, self._attributes, self._links)
        except Exception:
            _log.debug("otelkit.span(%r): could not start a span", self._name, exc_info=True)
            otel_span = trace.INVALID_SPAN
        self._span = otel_span
        self._token = context_api.attach(trace.set_span_in_context(otel_span))
        return otel_span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        otel_span = self._span
        token = self._token
        if token is not None:
            self._token = None
            context_api.detach(token)
        if otel_span is None:
            return
        self._span = None
        if exc is not None:
            _handle_exception(otel_span, exc, self._record)
        otel_span.end()

    async def __aenter__(self) -> trace.Span:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # --- decorator --------------------------------------------------------------------------------

    def __call__(self, func: F) -> F:
        """Wrap ``func`` so each call (each full iteration, for generators) is one span."""
        if inspect.isasyncgenfunction(func):
            return cast(F, self._wrap_async_gen(func))
        if inspect.isgeneratorfunction(func):
            return cast(F, self._wrap_gen(func))
        if inspect.iscoroutinefunction(func):
            return cast(F, self._wrap_coroutine(func))
        return cast(F, self._wrap_sync(func))

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        start = self._start
        record = self._record
        attach = context_api.attach
        detach = context_api.detach
        in_context = trace.set_span_in_context

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            otel_span = start()
            token = attach(in_context(otel_span))
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                _handle_exception(otel_span, exc, record)
                raise
            finally:
                detach(token)
                otel_span.end()

        return wrapper

    def _wrap_coroutine(self, func: Callable[..., Any]) -> Callable[..., Any]:
        start = self._start
        record = self._record

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            otel_span = start()
            token = context_api.attach(trace.set_span_in_context(otel_span))
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                _handle_exception(otel_span, exc, record)
                raise
            finally:
                context_api.detach(token)
                otel_span.end()

        return wrapper

    def _wrap_gen(self, func: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Generator[Any, Any, Any]]:
        start = self._start
        record = self._record
        attach = context_api.attach
        detach = context_api.detach

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            otel_span = start()
            ctx = trace.set_span_in_context(otel_span)
            try:
                # The span is current only while the generator body runs: attach
                # around each step, never across a yield.
                token = attach(ctx)
                try:
                    gen = func(*args, **kwargs)
                    value = next(gen)
                finally:
                    detach(token)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        token = attach(ctx)
                        try:
                            gen.close()
                        finally:
                            detach(token)
                        raise
                    except BaseException as thrown:
                        token = attach(ctx)
                        try:
                            value = gen.throw(thrown)
                        finally:
                            detach(token)
                        continue
                    token = attach(ctx)
                    try:
                        value = gen.send(sent)
                    finally:
                        detach(token)
            except StopIteration as stop:
                return stop.value
            except BaseException as exc:
                _handle_exception(otel_span, exc, record)
                raise
            finally:
                otel_span.end()

        return wrapper

    def _wrap_async_gen(
        self, func: Callable[..., AsyncGenerator[Any, Any]]
    ) -> Callable[..., AsyncGenerator[Any, Any]]:
        start = self._start
        record = self._record
        attach = context_api.attach
        detach = context_api.detach

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            otel_span = start()
            ctx = trace.set_span_in_context(otel_span)
            try:
                token = attach(ctx)
                try:
                    agen = func(*args, **kwargs)
                    value = await agen.__anext__()
                finally:
                    detach(token)
                while True:
                    try:
                        sent = yield value
                    except GeneratorExit:
                        token = attach(ctx)
                        try:
                            await agen.aclose()
                        finally:
                            detach(token)
                        raise
                    except BaseException as thrown:
                        token = attach(ctx)
                        try:
                            value = await agen.athrow(thrown)
                        finally:
                            detach(token)
                        continue
                    token = attach(ctx)
                    try:
                        value = await agen.asend(sent)
                    finally:
                        detach(token)
            except StopAsyncIteration:
                return
            except BaseException as exc:
                _handle_exception(otel_span, exc, record)
                raise
            finally:
                otel_span.end()

        return wrapper

    def __repr__(self) -> str:
        return f"otelkit.span({self._name!r})"

