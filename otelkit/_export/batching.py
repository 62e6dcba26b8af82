"""otelkit's batch processors: the bounded queue, retries, splitting, drop accounting, the spool hand-off."""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from copy import copy as _copy
from typing import Any, Generic, TypeVar

from opentelemetry.context import Context, attach, detach, set_value
from opentelemetry.sdk.metrics.export import (
    MetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otelkit import _compat, _fork
from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_INSTRUMENTATION_KEY
from otelkit._compat import ApiLogRecord as _ApiLogRecord
from otelkit._compat import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from otelkit._export import encoding as _wire
from otelkit._export import spool as _spool
from otelkit._export import stats as _stats
from otelkit._export.stats import STATS
from otelkit._export.transport import (
    FAIL,
    LOAD,
    MAX_REQUEST_BYTES,
    NO_ANSWER,
    OK,
    RETRY,
    TOO_LARGE,
    UNANSWERED,
    Sender,
    SendResult,
    _failure_cause,
)
from otelkit._internal_log import logger

Item = TypeVar("Item")
_EMPTY_CONTEXT = Context()

FAILURES_TO_OPEN = 3
MAX_BACKOFF = 5.0
FIRST_BACKOFF = 0.5
MIN_LEARNED_REQUEST_BYTES = 16 * 1024
"""A size refusal lowers the pipeline's request cap to half the refused size, never below this."""
MAX_UNANSWERED_ATTEMPTS = 3
"""Attempts of one batch that may end without an answer (timeout) before it is given up (or spooled): each
resend of a request the collector may have stored is a possible duplicate and more load on a slow collector."""
MAX_TIMEOUT_BOOST = 4.0
"""After a request got no answer, the next ones wait up to this multiple of the configured timeout (doubling per
unanswered attempt, halving again once answers come quickly): a collector that answers late gets each request
once or twice instead of a resend storm, and the export thread only ever waits, it never blocks the app."""
MAX_BOOSTED_TIMEOUT = 30.0
"""...but the longer wait never goes past this many seconds (unless the configured timeout is longer): a hung
connection is given up on and a fresh one tried within half a minute."""
DEFAULT_SHUTDOWN_BUDGET = 5.0


# ==================================================================================================
# Encoding


def _encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    try:
        return _wire.encode_spans(spans)
    except Exception:  # something the direct encoder does not know: the SDK's encoder knows everything
        logger.debug("otelkit: direct span encoding failed; using the SDK encoder", exc_info=True)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return bytes(encode_spans(spans).SerializeToString())


def _encode_logs(records: Sequence[ReadableLogRecord]) -> bytes:
    try:
        return _wire.encode_logs(records)
    except Exception:
        logger.debug("otelkit: direct log encoding failed; using the SDK encoder", exc_info=True)
    from otelkit._compat import encode_logs

    return bytes(encode_logs(records).SerializeToString())



# ==================================================================================================
# The batch pipeline (spans and logs)

_LIVE: weakref.WeakSet[_BatchPipeline[Any]] = weakref.WeakSet()
_LIVE_READERS: weakref.WeakSet[MetricReader] = weakref.WeakSet()
_shutdown_deadline: float | None = None


def set_shutdown_deadline(deadline: float | None) -> None:
    """A ``time.monotonic()`` deadline every processor's ``shutdown()``/``force_flush()`` honours."""
    global _shutdown_deadline
    _shutdown_deadline = deadline


class _BatchPipeline(Generic[Item]):
    """Bounded queue + one export thread + circuit breaker; counts everything in :data:`STATS`."""

    def __init__(self, signal: str, *, sender: Sender | None = None, exporter: Any = None,
                 encode: Callable[[Sequence[Item]], bytes] | None = None,
                 scrub: Callable[[list[Item]], list[Item]] | None = None,
                 max_queue_size: int = 8192, max_export_batch_size: int = 512, schedule_delay: float = 1.0,
                 export_timeout: float = 10.0, max_request_bytes: int = MAX_REQUEST_BYTES,
                 spool: _spool.SpoolStore | None = None) -> None:
        if (sender is None) == (exporter is None):
            raise ValueError("give exactly one of sender (OTLP) or exporter (an SDK exporter)")
        self.signal = signal
        # The disk spool needs encoded OTLP requests: only for a sender.
        self._spool = spool if sender is not None and encode is not None else None
        self._sender = sender
        self._exporter = exporter
        self._encode = encode
        self._scrub = scrub
        self._max_queue = max(1, int(max_queue_size))
        self._batch_size = max(1, min(int(max_export_batch_size), self._max_queue))
        self._delay = max(0.001, float(schedule_delay))
        self._export_timeout = max(0.001, float(export_timeout))
        self._max_bytes = max_request_bytes
        self.target = sender.target if sender is not None else type(exporter).__name__
        self._init_runtime()
        _LIVE.add(self)
        ref = weakref.ref(self)

        def probe() -> int:
            me = ref()
            return me.queue_length() if me is not None else 0

        self._probe = probe
        STATS.add_queue_probe(signal, probe)

    def _init_runtime(self, start: bool = True) -> None:
        self._queue: deque[Item] = deque()
        self._inflight: list[Item] = []
        self._inflight_n = 0
        self._wake = threading.Event()
        self._idle = threading.Condition(threading.Lock())
        self._closed = False
        self._stopping = False
        self._done = 0  # items finished (exported or dropped), written by the worker only
        self._failed = 0  # items of those that were dropped
        self._flush_seq = 0
        self._flush_seq_done = 0
        self._abandoned = False
        self._failures = 0
        self._next_attempt = 0.0
        self._circuit_open = False
        self._last_error = ""
        self._last_cause = ""
        self._boost = 1.0  # request timeout multiplier after unanswered requests (see MAX_TIMEOUT_BOOST)
        self._inflight_unanswered = 0  # attempts of the in-flight batch that ended without an answer
        self._sending_since: float | None = None  # monotonic start of the request in flight, if any
        self._unanswered_files: set[str] = set()  # spool files whose replay got no answer (resent = counted)
        self._forked_at = 0
        self._pid = os.getpid()
        self._spool_pending = self._spool is not None  # a previous process may have left a spool: look at once
        self._spool_check_at = 0.0
        self._spool_paused_until = 0.0  # after a spool write error: keep items in memory a while
        self._spool_full_until = 0.0  # after a full spool: spill only what memory cannot hold
        self._start_lock = threading.Lock()
        self._shutdown_lock = threading.Lock()
        self._take_lock = threading.Lock()  # the export thread and the spool writer both take batches
        # Held by whoever does the final accounting at shutdown (spill, leftovers): the export thread, or the
        # shutdown thread when the export thread is stuck in a request. Never both.
        self._drain_lock = threading.Lock()
        self._drained = False
        # Re-entrant: the shutdown's snapshot of an abandoned spool writer (``_abandon_writer``) counts under it.
        self._count_lock = threading.RLock()
        # Items a spool writer (the spiller, or the export thread spilling at shutdown) has taken out of the
        # queue or the in-flight batch and not yet accounted for: what a shutdown that gives up on a writer
        # still holding the drain lock at the deadline must count itself. Raised under ``_take_lock``,
        # lowered under ``_count_lock`` (the snapshot holds both).
        self._in_hand = 0
        # With a spool: the queue drains to disk when it nears full, whatever the sender is doing (a request
        # to a hung collector can block the export thread for its whole timeout). Started on first need.
        self._spill_at = max(1, self._max_queue * 3 // 4)
        self._yield_at = max(1, self._max_queue // 2)  # see _enqueue
        self._spill_wake = threading.Event()
        self._spiller: threading.Thread | None = None
        self._worker = threading.Thread(target=self._run, name=f"otelkit-export-{self.signal}", daemon=True)
        # Dormant: no thread until the first item (an inherited pipeline a forked child never uses).
        self._dormant = not start
        if start:
            self._worker.start()

    def _start_worker(self) -> None:
        with self._start_lock:
            if self._dormant:
                self._dormant = False
                self._worker.start()

    # -- hot path ------------------------------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        if self._pid != _getpid():
            # Forked without Python's at-fork hooks (uWSGI forks in C): reset the process state now.
            _forked_without_hooks()
        if self._dormant:
            self._start_worker()
        queue = self._queue
        # In flight counts against the bound too: max_queue_size is what the pipeline holds in memory.
        held = len(queue) + self._inflight_n
        if held >= self._max_queue:
            STATS.dropped(self.signal, _stats.QUEUE_FULL, 1, warn=False)
            return
        queue.append(item)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()
        if held >= self._yield_at:
            if self._spool is not None and held + 1 >= self._spill_at and not self._spill_wake.is_set():
                self._wake_spiller()
            if not self._failures:
                # The queue is filling faster than the export thread empties it while the collector answers:
                # a thread that produces items without ever releasing the GIL makes the export thread wait
                # up to a switch interval (5 ms) for the GIL after each of its I/O calls, and its batches fall
                # behind. Releasing the GIL here lets it run at once when it is waiting (when it is not, this
                # returns at once); never a wait for the collector: after a failed export it is skipped.
                _release_gil(0)

    def _wake_spiller(self) -> None:
        if self._spiller is None:
            with self._start_lock:
                if self._spiller is None and not self._stopping:
                    self._spiller = threading.Thread(target=self._run_spiller, name=f"otelkit-spool-{self.signal}",
                                                     daemon=True)
                    self._spiller.start()
        self._spill_wake.set()

    def _run_spiller(self) -> None:
        """Spool writer: moves the oldest queued batches to disk while the queue is above 3/4 full, down to
        half, so the application's items are refused (``queue_full``) only when the disk cannot keep up."""
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while not self._stopping and not self._abandoned:
                self._spill_wake.wait(1.0)
                self._spill_wake.clear()
                if self._stopping or self._abandoned or time.monotonic() < self._spool_paused_until:
                    continue
                if len(self._queue) + self._inflight_n < self._spill_at:
                    continue
                while (len(self._queue) + self._inflight_n > self._max_queue // 2 and self._queue
                       and not self._stopping and not self._abandoned):
                    with self._drain_lock:  # never while the shutdown accounts for what is in memory
                        if self._abandoned or self._drained:
                            break
                        items = self._take_batch(hold=True)
                        if not items:
                            break
                        left = self._spool_items(items, held=True)
                        if left:  # the disk failed: back at the head of the queue, memory only for a while
                            with self._take_lock, self._count_lock:
                                if not self._abandoned:  # else the shutdown counted them already
                                    self._in_hand -= len(left)
                                    self._queue.extendleft(reversed(left))
                            break
        except Exception:  # never let the thread die with an exception on the console
            logger.debug("otelkit %s spool writer error", self.signal, exc_info=True)
        finally:
            detach(token)

    def _set_inflight(self, items: list[Item]) -> None:
        self._inflight = items
        self._inflight_n = len(items)

    def queue_length(self) -> int:
        return len(self._queue) + len(self._inflight)

    # -- worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        # The export thread never reports its own HTTP/gRPC calls as telemetry.
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while not self._stopping:
                wait = self._delay
                if self._failures:
                    wait = max(0.0, min(wait, self._next_attempt - time.monotonic()))
                self._wake.wait(wait)
                self._wake.clear()
                if self._stopping:
                    break
                STATS.maybe_warn(self._last_error)
                flush_seq = self._flush_seq
                flushing = flush_seq > self._flush_seq_done
                if self._spool is not None and self._failures:
                    try:
                        self._maybe_spill()
                    except Exception:
                        logger.debug("otelkit %s spooling error", self.signal, exc_info=True)
                if self._failures and time.monotonic() < self._next_attempt and not flushing:
                    continue
                try:
                    if self._export_available(flushing, deadline=None) and self._spool is not None:
                        self._replay()
                except Exception:  # never let the export thread die
                    logger.debug("otelkit %s export loop error", self.signal, exc_info=True)
                if flushing:
                    # One attempt per flush request, even in backoff; the flush then reports the outcome.
                    self._flush_seq_done = flush_seq
                self._notify_idle()
            self._drain()
        finally:
            detach(token)
            self._notify_idle()

    def _notify_idle(self) -> None:
        with self._idle:
            self._idle.notify_all()

    def _take_batch(self, *, hold: bool = False, force: bool = False) -> list[Item]:
        """The next batch from the queue, scrubbed. ``hold``: a spool writer takes it (counted in ``_in_hand``
        until accounted for with ``held=True``), unless the shutdown gave up on the writers (``force``: the
        shutdown thread itself)."""
        queue = self._queue
        batch: list[Item] = []
        with self._take_lock:
            if hold and self._abandoned and not force:
                return batch
            try:
                for _ in range(min(self._batch_size, len(queue))):
                    batch.append(queue.popleft())
            except IndexError:  # the shutdown took the queue over meanwhile
                pass
            if hold:
                self._in_hand += len(batch)
        if batch and self._scrub is not None:
            try:
                batch = list(self._scrub(batch))
            except Exception:
                logger.debug("otelkit scrubbing failed; exporting %s unscrubbed is not allowed, dropping",
                             self.signal, exc_info=True)
                self._finish(len(batch), _stats.EXPORT_FAILED, "scrubbing failed", held=hold)
                return []
        return batch

    def _hold_inflight_or_batch(self, *, force: bool = False) -> list[Item]:
        """For a spool writer: the in-flight batch (already scrubbed), else the next batch; held (see
        :meth:`_take_batch`)."""
        with self._take_lock:
            if self._abandoned and not force:
                return []
            items = self._inflight
            if items:
                self._set_inflight([])
                self._in_hand += len(items)
                return items
        return self._take_batch(hold=True, force=force)

    def _export_available(self, flushing: bool, deadline: float | None) -> bool:
        """Export at least one batch, continuing while a full batch is queued (or all, when flushing).

        Returns False when it stopped on a transient failure (the batch stays in flight)."""
        first = True
        while True:
            if self._abandoned:
                return True
            if not self._inflight:
                if not self._queue or not (first or flushing or len(self._queue) >= self._batch_size):
                    return True
                self._inflight_unanswered = 0
                self._set_inflight(self._take_batch())
                if not self._inflight:
                    continue
            first = False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            retry = self._send(self._inflight, deadline)
            if self._abandoned:
                return True
            if retry:
                self._set_inflight(retry)
                self._on_failure()
                return False
            self._set_inflight([])
            self._on_success()

    def _on_failure(self) -> None:
        self._failures += 1
        backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (self._failures - 1)) * random.uniform(0.8, 1.2)
        if self._retry_after is not None:
            backoff = min(max(self._retry_after, 0.0), 60.0)
        self._next_attempt = time.monotonic() + backoff
        if self._failures >= FAILURES_TO_OPEN and not self._circuit_open:
            self._circuit_open = True
            _stats.warn("otelkit cannot export %s to %s (%s); keeping up to %d queued and retrying every %.0fs",
                           _stats.ITEM_NAMES[self.signal], self.target, self._last_error, self._max_queue,
                           MAX_BACKOFF)

    def _on_success(self) -> None:
        if self._circuit_open:
            logger.warning("otelkit exports %s to %s again", _stats.ITEM_NAMES[self.signal], self.target)
        self._failures = 0
        self._circuit_open = False

    def _finish(self, count: int, reason: str | None, detail: str = "", *, force: bool = False,
                held: bool = False) -> None:
        """Count ``count`` items as exported (``reason`` None) or dropped. ``force``: the shutdown's own
        accounting after it took the pipeline over from a stuck export thread (whose reports are ignored).
        ``held``: items a spool writer took (``_in_hand``); deciding and counting under ``_count_lock`` makes
        each of them counted exactly once, here or by the shutdown's snapshot (``_abandon_writer``)."""
        if count <= 0:
            return
        with self._count_lock:
            if self._abandoned and not force:
                return
            if held:
                self._in_hand -= count
            if reason is None:
                STATS.exported(self.signal, count)
            elif reason == UNANSWERED:
                STATS.unanswered(self.signal, count, detail)
            else:
                STATS.dropped(self.signal, reason, count, detail, warn=False)
            if reason is not None:
                self._failed += count
            self._done += count

    def _cause_text(self) -> str:
        """Why the collector has not taken the data, never empty (also while the first request is in flight)."""
        since = self._sending_since
        if since is not None:
            waited = time.monotonic() - since
            if self._sender is not None and not self._sender.request_may_have_arrived():
                return f"no connection to the collector at {self.target} after {waited:.1f}s"
            return f"no answer from the collector at {self.target} after {waited:.1f}s (request in flight)"
        if self._last_error:
            return f"collector {self.target}: {self._last_error}"
        return f"nothing sent to the collector at {self.target} before the deadline"

    def _drop_leftovers(self, count: int, *, deadline_passed: bool, force: bool = False,
                        cause: str | None = None) -> None:
        """Count items that never got out at shutdown, under the reason the last failure says."""
        if count <= 0:
            return
        if self._last_cause == LOAD:
            self._finish(count, _stats.REFUSED, f"collector at {self.target} refusing under load: "
                         f"{self._last_error}", force=force)
        elif deadline_passed:
            self._finish(count, _stats.SHUTDOWN_TIMEOUT, cause or self._cause_text(), force=force)
        else:  # gave up before the deadline: the collector is down (circuit open), not slow
            self._finish(count, _stats.EXPORT_FAILED, _failure_cause(self.target, self._last_error), force=force)

    def _encode_or_drop(self, items: list[Item], *, force: bool = False, held: bool = False) -> bytes | None:
        """The OTLP request for ``items``; None (the items counted as dropped) if encoding failed."""
        assert self._encode is not None
        try:
            return self._encode(items)
        except Exception as exc:
            logger.debug("otelkit could not encode %s", self.signal, exc_info=True)
            self._finish(len(items), _stats.EXPORT_FAILED, f"encoding failed: {type(exc).__name__}", force=force,
                         held=held)
            return None

    def _send(self, items: list[Item], deadline: float | None) -> list[Item]:
        """Send ``items``; returns those to retry later (transient failure), counting the rest."""
        self._retry_after = None
        if self._exporter is not None:
            return self._send_via_exporter(items)
        assert self._sender is not None and self._encode is not None
        payload = self._encode_or_drop(items)
        if payload is None:
            return []
        if len(payload) > self._max_bytes:
            return self._split(items, deadline, f"request of {len(payload)} bytes over the {self._max_bytes} cap")
        timeout = self._request_timeout()
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                return items
        if self._inflight_unanswered:
            STATS.resent(self.signal, len(items))  # the collector may hold these already: possible duplicates
        start = self._sending_since = time.monotonic()
        try:
            result = self._sender.send(payload, timeout)
        except Exception as exc:  # a sender bug must not kill the pipeline
            logger.debug("otelkit sender error", exc_info=True)
            result = SendResult(FAIL, f"{type(exc).__name__}: {exc}")
        finally:
            self._sending_since = None
        if self._abandoned:
            return []  # the shutdown took over (spooled or counted these) while this request was out
        if result.kind == OK and time.monotonic() - start < self._export_timeout / 2:
            self._boost = max(1.0, self._boost / 2)
        if result.kind == OK:
            rejected = min(result.rejected, len(items))
            if rejected:
                self._finish(rejected, _stats.REJECTED, result.detail)
                _stats.warn("otelkit: the collector at %s rejected %d of %d %s: %s", self.target, rejected,
                               len(items), _stats.ITEM_NAMES[self.signal], result.detail or "no reason given")
            elif result.detail:
                logger.debug("otelkit: collector message: %s", result.detail)
            self._finish(len(items) - rejected, None)
            return []
        if result.kind == RETRY:
            self._last_error = result.detail
            self._last_cause = result.cause
            self._retry_after = result.retry_after
            if result.cause == NO_ANSWER:
                return self._unanswered(items)
            return items
        self._last_cause = ""
        if result.kind == TOO_LARGE:
            if len(items) > 1:
                # The collector's limit is below this size: cut later requests before sending them, instead
                # of having each refused and halved again (fewer requests for the collector to refuse).
                self._max_bytes = max(MIN_LEARNED_REQUEST_BYTES, min(self._max_bytes, len(payload) // 2))
            return self._split(items, deadline, result.detail)
        self._last_error = result.detail
        self._finish(len(items), _stats.EXPORT_FAILED, f"{self.target}: {result.detail}")
        return []

    def _request_timeout(self) -> float:
        """The configured timeout, longer after unanswered requests (``MAX_TIMEOUT_BOOST``, ``MAX_BOOSTED_TIMEOUT``)."""
        if self._boost <= 1.0:
            return self._export_timeout
        return max(self._export_timeout, min(self._export_timeout * self._boost, MAX_BOOSTED_TIMEOUT))

    def _unanswered(self, items: list[Item]) -> list[Item]:
        """A request of ``items`` got no answer in time: retry it (bounded), waiting longer next time."""
        self._boost = min(MAX_TIMEOUT_BOOST, self._boost * 2)
        self._inflight_unanswered += 1
        if self._inflight_unanswered < MAX_UNANSWERED_ATTEMPTS:
            return items
        # Given up: later batches must flow. On disk it waits for a collector that answers (maybe a duplicate);
        # without a spool it is reported as sent without an answer, neither delivered nor lost.
        detail = f"{self._inflight_unanswered} requests to {self.target} without an answer ({self._last_error})"
        if self._spool is not None and time.monotonic() >= self._spool_paused_until:
            left = self._spool_items(items)
            if not left:
                return []
            items = left
        self._finish(len(items), UNANSWERED, detail)
        return []

    def _split(self, items: list[Item], deadline: float | None, detail: str) -> list[Item]:
        """Halve a batch refused for its size (HTTP 413, gRPC's message-size limit), down to single items."""
        if len(items) == 1:
            self._finish(1, _stats.TOO_LARGE, detail)
            logger.debug("otelkit dropped one %s too large to export: %s", self.signal, detail)
            return []
        half = len(items) // 2
        first = self._send(items[:half], deadline)
        if first:  # collector went away mid-split: keep both halves for later
            return first + items[half:]
        return self._send(items[half:], deadline)

    def _send_via_exporter(self, items: list[Item]) -> list[Item]:
        try:
            result = self._exporter.export(items)
            ok = getattr(result, "name", "SUCCESS") == "SUCCESS"
        except Exception as exc:
            logger.debug("otelkit %s exporter raised", self.target, exc_info=True)
            ok = False
            self._last_error = f"{type(exc).__name__}: {exc}"
        self._finish(len(items), None if ok else _stats.EXPORT_FAILED, self._last_error)
        return []

    def _drain(self) -> None:
        """Final export at shutdown: until empty or the deadline; then what a previous process spooled;
        the rest is written to the spool (with one) or counted by the last failure's cause."""
        deadline = self._deadline
        circuit_was_open = self._circuit_open
        send_deadline = deadline
        if self._spool is not None:
            # Keep time to write the rest to disk; with the collector known to be down, do not even try.
            send_deadline = deadline - _spill_reserve(deadline - time.monotonic())
            if circuit_was_open:
                send_deadline = time.monotonic()
        while (self._inflight or self._queue) and not self._abandoned:
            remaining = send_deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._export_available(True, send_deadline):
                break
            # A transient failure. With the circuit open the collector is known to be down: one try only.
            if circuit_was_open or self._stopped_early.is_set():
                break
            pause = min(max(0.0, self._next_attempt - time.monotonic()), send_deadline - time.monotonic())
            if pause > 0 and self._stopped_early.wait(pause):
                break
        if self._abandoned:
            return
        if (self._spool is not None and not self._inflight and not self._queue and not self._failures
                and time.monotonic() < send_deadline):
            # Live data first, then the backlog of earlier runs: a short-lived process (a cron job) never
            # lives long enough for the background replay.
            try:
                self._spool_pending = True
                self._replay(budget=send_deadline - time.monotonic(), deadline=send_deadline)
            except Exception:
                logger.debug("otelkit %s replay at shutdown failed", self.signal, exc_info=True)
        with self._drain_lock:
            if self._abandoned:
                return
            if self._spool is not None and (self._inflight or self._queue) and not self._stopped_early.is_set():
                self._spill_at_shutdown(deadline)
            self._count_leftovers(deadline_passed=time.monotonic() >= deadline or self._stopped_early.is_set())
            self._drained = True

    def _count_leftovers(self, *, deadline_passed: bool, force: bool = False, in_flight: bool | None = None,
                         cause: str | None = None) -> None:
        """Count what is still in memory: an in-flight batch already sent without an answer as unanswered
        (delivery unknown), the rest as dropped, under the reason the last failure gives."""
        inflight, self._inflight = self._inflight, []
        self._inflight_n = 0
        queued = 0
        try:
            while True:
                self._queue.popleft()
                queued += 1
        except IndexError:
            pass
        if in_flight is None:
            in_flight = bool(self._inflight_unanswered) or self._sending_since is not None
        if inflight and in_flight:
            self._finish(len(inflight), UNANSWERED, cause or self._cause_text(), force=force)
        else:
            queued += len(inflight)
        self._drop_leftovers(queued, deadline_passed=deadline_passed, force=force, cause=cause)

    # -- disk spool (export thread only) -------------------------------------------------------

    def _spooled(self, count: int, *, force: bool = False, held: bool = False) -> None:
        """``count`` items left memory for the spool: finished here, not delivered (a flush reports False).
        ``held`` as for :meth:`_finish`."""
        if count <= 0:
            return
        with self._count_lock:
            if self._abandoned and not force:
                return
            if held:
                self._in_hand -= count
            _stats.STATS.spooled(self.signal, count)
            self._done += count
            self._failed += count

    def _spool_items(self, items: list[Item], *, force: bool = False, held: bool = False) -> list[Item]:
        """Write ``items`` to the spool (split to the request cap); returns those a write error left over.

        A full spool refuses them: counted as ``spool_full``. ``held``: they are a spool writer's
        (``_in_hand``); what is counted here leaves it, what is returned is the caller's to account for."""
        assert self._spool is not None and self._encode is not None
        payload = self._encode_or_drop(items, force=force, held=held)
        if payload is None:
            return []
        if len(payload) > self._max_bytes:
            if len(items) == 1:
                self._finish(1, _stats.TOO_LARGE, f"request of {len(payload)} bytes over the {self._max_bytes} cap",
                             force=force, held=held)
                return []
            half = len(items) // 2
            return (self._spool_items(items[:half], force=force, held=held)
                    + self._spool_items(items[half:], force=force, held=held))
        outcome = self._spool.write(payload, len(items))
        if outcome == _spool.WRITTEN:
            self._spooled(len(items), force=force, held=held)
            self._spool_pending = True
            return []
        if outcome == _spool.FULL:
            self._finish(len(items), _stats.SPOOL_FULL,
                         f"spool {self._spool.path} holds {self._spool.max_bytes} bytes", force=force, held=held)
            self._spool_full_until = time.monotonic() + 5.0
            return []
        self._spool_paused_until = time.monotonic() + 30.0
        return items

    def _maybe_spill(self) -> None:
        """During failures: move what is in memory to the spool, all of it with the circuit open, else
        down to half the queue once it is nearly full (so the hot path does not have to refuse items)."""
        now = time.monotonic()
        if now < self._spool_paused_until:  # the disk failed lately: memory only, as without a spool
            return
        held = len(self._queue) + self._inflight_n
        near_full = held >= self._max_queue - self._batch_size
        spill_all = self._circuit_open and now >= self._spool_full_until
        if not held or not (near_full or spill_all):
            return
        keep = 0 if spill_all else self._max_queue // 2
        while len(self._queue) + self._inflight_n > keep and not self._abandoned:
            items = self._hold_inflight_or_batch()
            if not items:
                if not self._queue:
                    return
                continue
            left = self._spool_items(items, held=True)
            if left:  # a write error keeps them (oldest) at the head, in memory
                with self._take_lock, self._count_lock:
                    if not self._abandoned:  # else the shutdown counted them already
                        self._in_hand -= len(left)
                        self._set_inflight(left)
                return

    def _spill_at_shutdown(self, deadline: float, *, force: bool = False) -> None:
        """Write everything still in memory to the spool, before ``deadline`` (the in-flight batch too: a
        request without an answer may have been lost; at least once, so at worst a duplicate later)."""
        while self._inflight or self._queue:
            if time.monotonic() >= deadline or (self._abandoned and not force):
                return  # the caller counts the rest as shutdown_timeout
            items = self._hold_inflight_or_batch(force=force)
            self._inflight_unanswered = 0
            if not items:
                continue
            left = self._spool_items(items, force=force, held=True)
            if left:
                self._finish(len(left), _stats.EXPORT_FAILED, "spool write failed; "
                             + _failure_cause(self.target, self._last_error), force=force, held=True)

    def _replay(self, budget: float = 2.0, deadline: float | None = None) -> None:
        """Send spooled requests, oldest first, while the collector takes them (also the probe when all
        of a failing pipeline's items are on disk). A file is deleted only once the collector accepted it.

        ``deadline``: at shutdown (the stop flag is then ignored; no request outlives it)."""
        spool, sender = self._spool, self._sender
        assert spool is not None and sender is not None
        now = time.monotonic()
        if not self._spool_pending and now < self._spool_check_at:
            return
        self._spool_check_at = now + 10.0  # other processes may spool into the same directory
        end = now + budget
        while (deadline is not None or not self._stopping) and time.monotonic() < end and not self._abandoned:
            if len(self._queue) >= self._batch_size:
                self._wake.set()  # fresh data's turn; the spool continues on the next round
                return
            claim = spool.claim()
            if claim is None:
                self._spool_pending = False
                return
            self._spool_pending = True
            count = _spool.count_items(self.signal, claim.payload) if claim.payload is not None else None
            if count is None:
                # Its item count is unknown (a name or header can say anything): count the file, not items.
                spool.ack(claim)
                STATS.spool_bad_file(self.signal, f"corrupt spool file {os.path.basename(claim.original)} deleted")
                continue
            timeout = self._request_timeout()
            for limit in (_shutdown_deadline, deadline):
                if limit is not None:
                    timeout = min(timeout, limit - time.monotonic())
            if timeout <= 0:
                spool.release(claim)
                return
            self._retry_after = None
            if claim.original in self._unanswered_files:
                STATS.resent(self.signal, count)  # it went out before without an answer: possible duplicates
            self._sending_since = time.monotonic()
            try:
                result = sender.send(claim.payload or b"", timeout)
            except Exception as exc:  # a sender bug must not kill the pipeline
                logger.debug("otelkit sender error", exc_info=True)
                result = SendResult(FAIL, f"{type(exc).__name__}: {exc}")
            finally:
                self._sending_since = None
            if result.kind == RETRY:
                spool.release(claim)
                self._last_error = result.detail
                self._last_cause = result.cause
                self._retry_after = result.retry_after
                if result.cause == NO_ANSWER:
                    self._boost = min(MAX_TIMEOUT_BOOST, self._boost * 2)
                    if len(self._unanswered_files) < 10_000:
                        self._unanswered_files.add(claim.original)
                self._on_failure()
                return
            self._unanswered_files.discard(claim.original)
            spool.ack(claim)
            if result.kind == OK:
                rejected = min(result.rejected, count)
                STATS.exported(self.signal, count - rejected)
                if rejected:
                    STATS.dropped(self.signal, _stats.REJECTED, rejected, result.detail, warn=False)
                self._on_success()
            else:  # permanent: retrying the same bytes can never succeed
                self._last_error = result.detail
                reason = _stats.TOO_LARGE if result.kind == TOO_LARGE else _stats.EXPORT_FAILED
                STATS.dropped(self.signal, reason, count, f"{self.target}: {result.detail}", warn=False)
        if self._spool_pending:
            self._wake.set()

    # -- control -------------------------------------------------------------------------------

    def force_flush(self, timeout_millis: float | None = 30000) -> bool:
        """Export everything queued before this call; False if that failed or did not finish in time.

        With the collector failing, one attempt is made (even during backoff), then it returns False."""
        if self._closed:
            return False
        deadline = time.monotonic() + (timeout_millis / 1000 if timeout_millis is not None else 30.0)
        if _shutdown_deadline is not None:
            deadline = min(deadline, _shutdown_deadline)
        target = self._done + len(self._queue) + len(self._inflight)
        failed_before = self._failed
        self._flush_seq += 1
        seq = self._flush_seq
        self._wake.set()
        with self._idle:
            while self._done < target and self._worker.is_alive():
                if self._flush_seq_done >= seq and self._failures:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.1))
        return self._done >= target and self._failed == failed_before

    def shutdown(self, timeout_millis: float | None = None) -> bool:
        """Drain and stop under a deadline (the global shutdown deadline, else ``timeout_millis``, else 5 s).

        Returns False if the deadline cut the drain short. Idempotent, safe to call concurrently."""
        with self._shutdown_lock:
            if self._closed:
                return True
            self._closed = True
        return self._shutdown(timeout_millis)

    def _shutdown(self, timeout_millis: float | None) -> bool:
        if self._dormant:
            STATS.remove_queue_probe(self._probe)
            _LIVE.discard(self)
            return True
        budget = timeout_millis / 1000 if timeout_millis is not None else DEFAULT_SHUTDOWN_BUDGET
        deadline = time.monotonic() + budget
        if _shutdown_deadline is not None:
            deadline = _shutdown_deadline if timeout_millis is None else min(deadline, _shutdown_deadline)
        self._deadline = deadline
        self._stopped_early = threading.Event()
        self._stopping = True
        self._wake.set()
        self._spill_wake.set()
        if self._spool is not None:
            # Leave the spool its time whatever the export thread is doing (stuck in a request to a hung
            # collector, most often): at the reserve, this thread writes memory to disk itself.
            reserve = _spill_reserve(deadline - time.monotonic())
            self._worker.join(max(0.0, deadline - reserve - time.monotonic()))
        else:
            self._worker.join(max(0.0, deadline - time.monotonic()) + 0.05)
        finished = not self._worker.is_alive()
        # (a moment of grace: the export thread may be counting its leftovers right now)
        if not finished and self._drain_lock.acquire(timeout=max(0.1, deadline - time.monotonic())):
            try:
                finished = self._drained  # it was writing to the spool, and is done
                if not finished:
                    self._take_over(deadline)
            finally:
                self._drain_lock.release()
        elif not finished:
            self._abandon_writer()  # still writing to the spool at the deadline: its reports are ignored
        if not finished:
            if self._sender is not None:  # last: the stuck request returns now, its outcome is ignored
                try:
                    self._sender.abort()
                except Exception:
                    logger.debug("otelkit: aborting the request in flight failed", exc_info=True)
        STATS.remove_queue_probe(self._probe)
        _LIVE.discard(self)
        try:
            if self._sender is not None:
                self._sender.close()
            elif self._exporter is not None:
                self._exporter.shutdown()
        except Exception:
            logger.debug("otelkit exporter shutdown failed", exc_info=True)
        return finished

    _deadline = 0.0
    _stopped_early = threading.Event()
    _retry_after: float | None = None

    def _abandon_writer(self) -> None:
        """A spool writer holds the drain lock past the deadline: from now on its reports are ignored, and
        this thread counts what it holds (the batch being encoded or written: delivery unknown, it may reach
        the spool) and what is left in memory (shutdown_timeout, or unanswered for a request in flight).
        Under both locks, so that each item is counted once: by the writer before this, or here."""
        cause = self._cause_text()
        in_hand = self._abandon()  # from here on no writer takes items: what is left in memory stays there
        self._count_in_hand(in_hand)
        self._count_leftovers(deadline_passed=True, force=True, cause=cause)

    def _abandon(self) -> int:
        """Ignore the export thread's and the spool writer's reports from now on; returns the items a spool
        writer holds, which the caller must count (``force``)."""
        with self._take_lock, self._count_lock:
            self._abandoned = True
            in_hand, self._in_hand = self._in_hand, 0
        return max(0, in_hand)

    def _count_in_hand(self, in_hand: int) -> None:
        if in_hand > 0:
            path = self._spool.path if self._spool is not None else "the spool"
            self._finish(in_hand, UNANSWERED, f"being written to {path} at the shutdown deadline (a later run "
                         "delivers them if the write completed)", force=True)

    def _take_over(self, deadline: float) -> None:
        """The export thread is stuck in a request that outlives the deadline: from now on whatever it
        reports is ignored (the process is about to exit); this thread spools or counts what it holds."""
        self._stopped_early.set()
        in_hand = self._abandon()
        sent = self._sender is None or self._sender.request_may_have_arrived()
        in_flight = (self._sending_since is not None and sent) or self._inflight_unanswered > 0
        cause = self._cause_text()
        if self._spool is not None:
            try:
                self._spill_at_shutdown(deadline, force=True)
            except Exception:
                logger.debug("otelkit %s spooling at shutdown failed", self.signal, exc_info=True)
        self._count_leftovers(deadline_passed=True, force=True, in_flight=in_flight, cause=cause)
        self._count_in_hand(in_hand)

    def _after_fork_in_child(self, forked_at: int) -> None:
        """Child side of fork: forget the parent's queue and in-flight batch, reconnect, restart lazily."""
        if self._closed or self._pid == os.getpid():
            return
        if self._sender is not None:
            self._sender.reset_after_fork()
        if self._spool is not None:
            self._spool.after_fork()
        self._init_runtime(start=False)
        self._forked_at = forked_at


def _spill_reserve(budget: float) -> float:
    """Seconds of a shutdown budget kept for writing memory to the spool: 20 %, between 50 ms and 0.5 s."""
    return min(0.5, max(0.05, budget * 0.2))


_PLAIN_LOG_TYPES = (ReadWriteLogRecord, _ApiLogRecord)


def _shallow(obj: Any) -> Any:
    """``copy.copy`` at a quarter of its cost for the SDK's record types (this runs on the app's thread)."""
    if type(obj) in _PLAIN_LOG_TYPES:  # exact types whose whole state is their __dict__
        new = object.__new__(type(obj))
        new.__dict__.update(obj.__dict__)
        return new
    return _copy(obj)


class _PipelineProcessor(Generic[Item]):
    """What the span and log processors share: the batch pipeline behind them, flushed and shut down."""

    def __init__(self, pipeline: _BatchPipeline[Item]) -> None:
        self._pipeline = pipeline

    @property
    def pipeline(self) -> _BatchPipeline[Item]:
        return self._pipeline

    def shutdown(self) -> None:
        self._pipeline.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._pipeline.force_flush(timeout_millis)


class OtelkitSpanProcessor(_PipelineProcessor[ReadableSpan], SpanProcessor):
    """Batching span processor with bounded queue, redelivery, deadlines and drop accounting."""

    # on_start and _on_ending: the SpanProcessor base class's no-ops (the lean span path skips those).

    def on_end(self, span: ReadableSpan) -> None:
        pipeline = self._pipeline
        if pipeline._closed:
            STATS.dropped("traces", _stats.ALREADY_SHUTDOWN, 1, warn=False)
            return
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        # In a forked child, a span the parent had open ends here too: it is the parent's to export.
        if pipeline._forked_at and (span.start_time or 0) < pipeline._forked_at:
            return
        pipeline._enqueue(span)


class OtelkitLogProcessor(_PipelineProcessor[ReadableLogRecord], LogRecordProcessor):
    """Batching log record processor; same guarantees as :class:`OtelkitSpanProcessor`."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        pipeline = self._pipeline
        if pipeline._closed:
            STATS.dropped("logs", _stats.ALREADY_SHUTDOWN, 1, warn=False)
            return
        if len(pipeline._queue) + pipeline._inflight_n >= pipeline._max_queue:
            STATS.dropped("logs", _stats.QUEUE_FULL, 1, warn=False)  # before paying for the copy below
            return
        # Same conversion as the SDK's batch processor: detach the record from the (possibly large) context.
        api_record = _shallow(log_record.log_record)
        api_record.context = _EMPTY_CONTEXT
        pipeline._enqueue(ReadableLogRecord(
            log_record=api_record,
            resource=log_record.resource if log_record.resource is not None else Resource.create({}),
            instrumentation_scope=log_record.instrumentation_scope, limits=log_record.limits))


def make_span_processor(sender_or_exporter: Sender | Any, *, scrub: Callable[[list[Any]], list[Any]] | None = None,
                        spool: _spool.SpoolStore | None = None, **batch: Any) -> OtelkitSpanProcessor:
    """A span processor around an OTLP :class:`Sender` or any SDK ``SpanExporter``.

    ``batch``: max_queue_size, max_export_batch_size, schedule_delay (s), export_timeout (s).
    ``spool``: a disk spool for what the collector cannot take (OTLP senders only)."""
    if isinstance(sender_or_exporter, Sender):
        pipeline: _BatchPipeline[ReadableSpan] = _BatchPipeline(
            "traces", sender=sender_or_exporter, encode=_encode_spans, scrub=scrub, spool=spool, **batch)
    else:
        pipeline = _BatchPipeline("traces", exporter=sender_or_exporter, scrub=scrub, **batch)
    return OtelkitSpanProcessor(pipeline)


def make_log_processor(sender_or_exporter: Sender | Any, *, scrub: Callable[[list[Any]], list[Any]] | None = None,
                       spool: _spool.SpoolStore | None = None, **batch: Any) -> OtelkitLogProcessor:
    """A log record processor around an OTLP :class:`Sender` or any SDK ``LogRecordExporter``."""
    if isinstance(sender_or_exporter, Sender):
        pipeline: _BatchPipeline[ReadableLogRecord] = _BatchPipeline(
            "logs", sender=sender_or_exporter, encode=_encode_logs, scrub=scrub, spool=spool, **batch)
    else:
        pipeline = _BatchPipeline("logs", exporter=sender_or_exporter, scrub=scrub, **batch)
    return OtelkitLogProcessor(pipeline)


class ScrubbingSpanProcessor(SpanProcessor):
    """A caller's span processor (``init(span_processors=...)``) that only ever sees scrubbed spans.

    Whatever the caller's processor does with a span (a ``BatchSpanProcessor`` around an exporter
    of its own, most often), it leaves the process: ``on_end`` hands it the span as otelkit's own
    exporters would send it. Unchanged spans are passed as they are (no copy); a span that cannot
    be scrubbed is withheld, never passed raw. ``on_start`` sees the live span, unchanged (nothing
    is exported from there).
    """

    def __init__(self, processor: Any, scrub: Callable[[list[ReadableSpan]], list[ReadableSpan]]) -> None:
        self.processor = processor
        self._scrub = scrub

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Span) -> None:
        hook = _compat.on_ending(self.processor)
        if hook is not None:
            hook(span)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            scrubbed = self._scrub([span])
        except Exception:
            logger.debug("otelkit: scrubbing a span for %r failed; not passed on", self.processor, exc_info=True)
            return
        if scrubbed:
            self.processor.on_end(scrubbed[0])

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.processor.force_flush(timeout_millis))


class ScrubbingLogProcessor(LogRecordProcessor):
    """A caller's log record processor that only ever sees scrubbed records (see :class:`ScrubbingSpanProcessor`).

    The record is shared with otelkit's own processors, so the caller's processor gets a scrubbed copy.
    """

    def __init__(self, processor: Any, scrub: Callable[[list[Any]], list[Any]]) -> None:
        self.processor = processor
        self._scrub = scrub

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        try:
            record = _shallow(log_record)
            record.log_record = _shallow(log_record.log_record)
            scrubbed = self._scrub([record])
        except Exception:
            logger.debug("otelkit: scrubbing a log record for %r failed; not passed on", self.processor,
                         exc_info=True)
            return
        if scrubbed:
            self.processor.on_emit(scrubbed[0])

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.processor.force_flush(timeout_millis))



# ==================================================================================================
# Process-wide helpers (fork, exit)


_getpid = os.getpid
_release_gil = time.sleep  # sleep(0): drops the GIL for a thread waiting on it, then takes it back


def _forked_without_hooks() -> None:
    _fork.after_fork_without_hooks()
