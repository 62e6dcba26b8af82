"""The opt-in disk spool: OTLP requests that could not be delivered, kept on disk until the collector is back.

When ``OTELKIT_SPOOL_DIR`` is set, the batch pipeline (:mod:`otelkit._export`) writes a batch it would
otherwise drop because the collector is unavailable (circuit open, queue nearly full during failures,
leftovers at the shutdown deadline) as the serialized ``Export*ServiceRequest`` (the same bytes for
gRPC and HTTP) into ``<spool_dir>/<signal>/``, and sends the files back, oldest first, once the
collector answers again, also from the next process that uses the same directory.

Layout and guarantees:

* **One file per request, written atomically**: a dot-prefixed temporary file (mode 0600) is written
  and renamed to ``<time_ns:020d>-<pid>-<seq>-<token>-n<items>.otlp``, so names sort oldest first and a reader
  never sees a partial file. The content has a small header (magic, item count, payload length,
  CRC-32): a truncated or corrupt file is detected, deleted and counted, never sent.
* **Claims by atomic rename**: a sender renames a file to ``<name>.claim-<pid>-<token>`` before
  sending it; ``rename`` succeeds for exactly one of several processes (forked workers, services
  sharing the directory), so no file is sent by two of them. The claimed file is deleted only after
  the collector accepted it, or renamed back (released) after a transient failure. A claim left by a
  process that died (pid gone, or older than :data:`STALE_CLAIM_SECONDS`) is released by the next
  scan. A crash between the collector's answer and the delete can resend one request (at least once).
* **Bounded**: a write that would take the directory's files past ``max_bytes`` is refused (the
  newest data is refused, what is already spooled stays); the caller counts it as ``spool_full``.
  The size is rescanned at most once a second, and always before refusing, so writes of other
  processes sharing the directory are seen within a second.
* **Never raises**: disk full, permission denied and the like come back as :data:`ERROR` results
  with one warning per store; the caller counts the items under their usual drop reason.
"""

from __future__ import annotations

import os
import stat
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from otelkit._export import stats as _stats
from otelkit._internal_log import logger

__all__ = ["ERROR", "FULL", "WRITTEN", "Claim", "SpoolStore", "backlog", "count_items", "unusable"]

WRITTEN, FULL, ERROR = "written", "full", "error"
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
STALE_CLAIM_SECONDS = 300.0
"""A claim older than this is released even if its pid looks alive (pid namespaces, pid reuse)."""
_RESCAN_STALE = 30.0
_RESCAN_SIZE = 1.0  # seconds an estimate of the directory's size is trusted for accepting a write
_MAGIC = b"OKSP"
_HEADER = struct.Struct("<4sIQI")  # magic, item count, payload length, crc32
_SUFFIX = ".otlp"
_CLAIM = ".claim-"
_NOT_REGULAR = object()


@dataclass
class Claim:
    """A spooled request this process holds: ``payload`` is None when the file was corrupt (then ``count``
    is 0: nothing in a corrupt file is trusted). ``count`` is the header's, never the file name's; the
    export pipeline counts the items of the payload itself (:func:`count_items`) before reporting them."""

    path: str
    original: str
    count: int
    payload: bytes | None


def count_items(signal: str, payload: bytes) -> int | None:
    """Items in a serialized ``Export*ServiceRequest`` of ``signal`` (None if it does not parse).

    The count reported for a spooled request comes from its content, never from its file name."""
    from google.protobuf.message import DecodeError

    request: Any
    try:
        if signal == "traces":
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            request = ExportTraceServiceRequest()
            request.ParseFromString(payload)
            return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        if signal == "logs":
            from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

            request = ExportLogsServiceRequest()
            request.ParseFromString(payload)
            return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    except (DecodeError, ValueError):
        return None
    return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


class SpoolStore:
    """The spool of one signal: ``<directory>/<signal>/``. Thread-safe; fork-safe via :meth:`after_fork`."""

    def __init__(self, directory: str, signal: str, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 fsync: bool = False) -> None:
        self.signal = signal
        self.root = os.fspath(directory)
        self.path = os.path.join(self.root, signal)
        self.max_bytes = int(max_bytes)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._seq = 0
        self._warned: set[str] = set()
        self._last_stale_scan = 0.0
        self._ready = False
        self.skipped: set[str] = set()
        """Names of ``*.otlp`` entries that are not regular files (a FIFO would block the reader forever):
        never opened, left in place, counted once each."""
        # The directory's size as last scanned plus this store's writes since: a write does not stat
        # every file (thousands during a long outage) unless the estimate is stale or near the bound.
        self._estimate = 0
        self._estimated_at = -_RESCAN_SIZE

    # -- helpers --------------------------------------------------------------------------------

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        # One warning per store: a broken disk would otherwise repeat it at every batch.
        if self._warned:
            logger.debug(message, *args)
            return
        self._warned.add(kind)
        _stats.warn(message, *args)

    def _ensure_dir(self) -> bool:
        if self._ready:
            return True
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as exc:
            self._warn_once("mkdir", "otelkit cannot create the spool directory %s (%s); %s are not spooled",
                            self.path, exc, _stats.ITEM_NAMES.get(self.signal, "items"))
            return False
        self._ready = True
        return True

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held it at the fork)."""
        self._lock = threading.Lock()
        self._seq = 0

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.path) as it:
                return list(it)
        except FileNotFoundError:
            return []

    # -- writing --------------------------------------------------------------------------------

    def size(self) -> int:
        """Bytes of spooled requests (claimed ones included)."""
        return self.backlog()[1]

    def _fits(self, length: int) -> bool:
        """Whether ``length`` more bytes stay within ``max_bytes``; refusing is always decided on a fresh scan."""
        now = time.monotonic()
        if now - self._estimated_at >= _RESCAN_SIZE or self._estimate + length > self.max_bytes:
            self._estimate, self._estimated_at = self.size(), now
        return self._estimate + length <= self.max_bytes

    def write(self, payload: bytes, count: int) -> str:
        """Spool one serialized request of ``count`` items: :data:`WRITTEN`, :data:`FULL` or :data:`ERROR`."""
        try:
            if not self._ensure_dir():
                return ERROR
            data = _HEADER.pack(_MAGIC, count, len(payload), zlib.crc32(payload)) + payload
            with self._lock:
                if not self._fits(len(data)):
                    return FULL
                self._seq += 1
                pid = os.getpid()
                # The token keeps names unique across hosts/containers whose pids coincide (rename overwrites).
                name = f"{time.time_ns():020d}-{pid}-{self._seq:06d}-{os.urandom(3).hex()}-n{count}{_SUFFIX}"
                tmp = os.path.join(self.path, f".tmp-{pid}-{os.urandom(4).hex()}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                try:
                    view = memoryview(data)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    if self._fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
                try:
                    os.rename(tmp, os.path.join(self.path, name))
                except OSError:
                    _unlink(tmp)
                    raise
                self._estimate += len(data)
            return WRITTEN
        except OSError as exc:
            self._warn_once("write", "otelkit cannot write to the spool %s (%s); %s it cannot hold are dropped",
                            self.path, exc, _stats.ITEM_NAMES.get(self.signal, "items"))
            return ERROR
        except Exception:
            logger.debug("otelkit: spool write failed", exc_info=True)
            return ERROR

    # -- reading --------------------------------------------------------------------------------

    def pending(self) -> list[str]:
        """Names of unclaimed spooled requests (regular files only), oldest first."""
        try:
            names = []
            for entry in self._entries():
                name = entry.name
                if not name.endswith(_SUFFIX) or name.startswith("."):
                    continue
                if not entry.is_file(follow_symlinks=False):
                    self._skip(name, "not a regular file")
                    continue
                names.append(name)
            return sorted(names)
        except OSError as exc:
            self._warn_once("list", "otelkit cannot read the spool %s (%s)", self.path, exc)
            return []

    def _skip(self, name: str, why: str) -> None:
        if name in self.skipped:
            return
        self.skipped.add(name)
        _stats.STATS.spool_bad_file(self.signal, f"spool entry {name} skipped: {why}")
        self._warn_once("skip", "otelkit skips %s in the spool %s: %s", name, self.path, why)

    def recover_stale(self, *, force: bool = False) -> int:
        """Release claims of dead processes and delete their temporary files; returns claims released."""
        now = time.monotonic()
        if not force and now - self._last_stale_scan < _RESCAN_STALE:
            return 0
        self._last_stale_scan = now
        released = 0
        try:
            entries = self._entries()
        except OSError:
            return 0
        wall = time.time()
        for entry in entries:
            name = entry.name
            try:
                if name.startswith(".tmp-"):
                    pid = int(name.split("-")[1])
                    if not _pid_alive(pid):
                        _unlink(entry.path)
                    continue
                if _CLAIM not in name:
                    continue
                original, claim = name.split(_CLAIM, 1)
                pid = int(claim.split("-")[0])
                age = wall - entry.stat(follow_symlinks=False).st_ctime
                if pid == os.getpid() and age < STALE_CLAIM_SECONDS:
                    continue
                if _pid_alive(pid) and age < STALE_CLAIM_SECONDS:
                    continue
                os.rename(entry.path, os.path.join(self.path, original))
                released += 1
            except (OSError, ValueError, IndexError):
                continue  # someone else released it first, or a name that is not ours
        return released

    def claim(self) -> Claim | None:
        """Take the oldest unclaimed request (atomic rename), or None when the spool is empty."""
        self.recover_stale()
        for name in self.pending():
            source = os.path.join(self.path, name)
            target = f"{source}{_CLAIM}{os.getpid()}-{os.urandom(4).hex()}"
            try:
                os.rename(source, target)
            except FileNotFoundError:
                continue  # another process claimed it
            except OSError as exc:
                self._warn_once("claim", "otelkit cannot claim spooled requests in %s (%s)", self.path, exc)
                return None
            payload = self._read(target)
            if payload is _NOT_REGULAR:  # replaced by something else after the listing: put it back, skip it
                self.release(Claim(target, source, 0, None))
                self._skip(name, "not a regular file")
                continue
            if not isinstance(payload, tuple):
                return Claim(target, source, 0, None)
            return Claim(target, source, payload[0], payload[1])
        return None

    def _read(self, path: str) -> tuple[int, bytes] | object | None:
        """(header count, payload) of a spool file; None if corrupt; :data:`_NOT_REGULAR` for a FIFO, link..."""
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOFOLLOW: no symlinks out of the spool.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            if os.path.islink(path):
                return _NOT_REGULAR
            self._warn_once("read", "otelkit cannot read a spooled request %s (%s)", path, exc)
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return _NOT_REGULAR
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(info.st_size + 1)
        except OSError as exc:
            self._warn_once("read", "otelkit cannot read a spooled request %s (%s)", path, exc)
            return None
        finally:
            os.close(fd)
        if len(data) < _HEADER.size:
            return None
        magic, count, length, crc = _HEADER.unpack_from(data)
        payload = data[_HEADER.size:]
        if magic != _MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
            return None
        return count, payload

    def ack(self, claim: Claim) -> None:
        """The request was delivered (or given up): delete it."""
        if not _unlink(claim.path):
            self._warn_once("delete", "otelkit cannot delete the spooled request %s; it may be sent again",
                            claim.path)

    def release(self, claim: Claim) -> None:
        """Put the request back for a later attempt (transient failure, shutdown)."""
        try:
            os.rename(claim.path, claim.original)
        except OSError:
            logger.debug("otelkit: releasing %s failed (a stale-claim scan will)", claim.path, exc_info=True)

    def backlog(self) -> tuple[int, int]:
        """(requests, bytes) in this signal's spool, claimed ones included."""
        files = size = 0
        for entry in self._entries():
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
            files += 1
        return files, size


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def unusable(directory: str, signals: tuple[str, ...] = _stats.SIGNALS) -> dict[str, int]:
    """``{signal: n}`` spool entries named ``*.otlp`` that are not regular files (skipped, never sent)."""
    out: dict[str, int] = {}
    for signal in signals:
        try:
            with os.scandir(os.path.join(directory, signal)) as it:
                out[signal] = sum(1 for e in it if e.name.endswith(_SUFFIX) and not e.name.startswith(".")
                                  and not e.is_file(follow_symlinks=False))
        except OSError:
            out[signal] = 0
    return out


def backlog(directory: str, signals: tuple[str, ...] = _stats.SIGNALS) -> dict[str, tuple[int, int]]:
    """``{signal: (requests, bytes)}`` waiting in ``directory`` (for ``otelkit doctor``); never raises."""
    out: dict[str, tuple[int, int]] = {}
    for signal in signals:
        try:
            out[signal] = SpoolStore(directory, signal).backlog()
        except OSError:
            out[signal] = (0, 0)
    return out
