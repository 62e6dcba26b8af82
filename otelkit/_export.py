"""Exporters, batch processors and metric readers built from :class:`~otelkit._config.Settings`.

Why otelkit has its own batch processor and OTLP sender instead of the SDK's (measured upstream
failures in ``docs/architecture.md`` and the reliability research):

* **Bounded exit.** Every request carries a deadline: ``min(OTEL_EXPORTER_OTLP_TIMEOUT,
  OTEL_BSP_EXPORT_TIMEOUT)`` normally, and the remaining shutdown budget during shutdown. The SDK
  waits 30 s per provider (up to 50 s for three signals) on a dead collector.
* **Retries that redeliver.** A batch that meets a transient failure (connection refused or reset,
  HTTP 429/502/503/504, gRPC UNAVAILABLE & co., RESOURCE_EXHAUSTED with or without RetryInfo: a load
  refusal) stays at the head of the queue and is retried whole with backoff (honouring Retry-After /
  RetryInfo) while new items queue behind it. After three failures in a row the circuit opens: one
  warning, one probe every few seconds, no per-batch retry storms. When the collector is back,
  everything that fitted in the queue is delivered in order, once.
* **Timeouts are not failures to repeat blindly.** A request that got no answer may have been stored:
  it is resent (at least once; counted as possible duplicates), the next requests wait longer, and a
  batch is given up after three unanswered attempts (spooled, or reported as sent without an answer),
  so the queue never stalls behind it.
* **Never retry forever.** Only a size refusal (HTTP 413, gRPC's "larger than max" / "message length
  too large") splits the batch in halves, down to single items; an item that still does not fit is
  dropped and counted, and later requests are cut below the refused size. Requests are capped below
  the collector's default 4 MiB gRPC limit before sending. Other permanent errors (400, 401,
  INVALID_ARGUMENT...) drop the batch at once, counted.
* **Nothing dropped silently.** Queue overflow (the newest items are refused, so the oldest outage
  data survives), permanent failures, partial-success rejections and what is left at the shutdown
  deadline are counted per signal and reason in :mod:`otelkit._stats`, exported as otelkit's own
  metrics, summarised in rate-limited ``otelkit`` warnings and in the shutdown report.
* **Fork-aware.** After ``fork()`` the child drops the parent's queue and the spans the parent had
  open, reconnects (new gRPC channel / HTTP session) and restarts its worker (:mod:`otelkit._fork`).

Defaults otelkit recommends (the ``BatchSettings`` defaults in ``_config``): queue 8192 (the spec's
2048 drops spans under an ordinary burst: ``perf-baseline.md``), span batches of 2048 (log records: 512;
each request costs the export thread a GIL hand-back on top of the round trip, so under load 512-span
requests halve the throughput: ``benchmarks/RESULTS.md``), schedule delay 1 s.
"""

from __future__ import annotations

import gzip
import math
import os
import random
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from copy import copy as _copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.context import Context, attach, detach, set_value
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otelkit import _compat, _fork, _spool, _stats, _wire
from otelkit._compat import SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_INSTRUMENTATION_KEY
from otelkit._compat import ApiLogRecord as _ApiLogRecord
from otelkit._compat import LogRecordExporter, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from otelkit._internal_log import logger
from otelkit._stats import STATS

if TYPE_CHECKING:
    from otelkit._config import Settings

__all__ = [
    "OtelkitLogProcessor",
    "OtelkitSpanProcessor",
    "OtlpMetricExporter",
    "Sender",
    "build_log_processors",
    "build_metric_readers",
    "build_span_processors",
    "describe_destinations",
    "flush_all",
    "make_sender",
    "probe_local_collector",
    "resolve_exporters",
    "scrubbed_user_processor",
]

Item = TypeVar("Item")
_EMPTY_CONTEXT = Context()

# Serialized request cap, below the collector's default 4 MiB gRPC receive limit (HTTP allows 20 MiB).
MAX_REQUEST_BYTES = 4 * 1024 * 1024 - 64 * 1024
# Cap on how much of an HTTP response body is read (OTLP spec: clients MUST limit it; 4 MiB suggested).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
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

_PATHS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
_GRPC_METHODS = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


def mask_url(url: str) -> str:
    """``url`` without user:password (for messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


# ==================================================================================================
# Sending one encoded request


OK, RETRY, TOO_LARGE, FAIL = "ok", "retry", "too_large", "fail"

# Why a RETRY result failed (``SendResult.cause``): what the pipeline does next and what the report says.
UNREACHABLE = "unreachable"
"""The request did not reach the collector (connection refused/reset before sending, DNS...): resend freely."""
NO_ANSWER = "no_answer"
"""The request was sent and no answer came within the timeout: the collector may have stored it. A resend may
duplicate, so it is bounded (``MAX_UNANSWERED_ATTEMPTS``) and counted (``resent``)."""
LOAD = "load"
"""The collector answered that it is overloaded (gRPC RESOURCE_EXHAUSTED, HTTP 429/503): back off, never split."""
UNANSWERED = "unanswered"
"""Not a drop reason: items whose last request got no answer (delivery unknown), ``STATS.unanswered``."""


@dataclass(frozen=True)
class SendResult:
    """Outcome of one request: ``kind`` is ok / retry / too_large / fail; ``cause`` says why a retry failed."""

    kind: str
    detail: str = ""
    retry_after: float | None = None
    rejected: int = 0
    cause: str = ""


class Sender:
    """Sends one serialized ``Export*ServiceRequest``; one attempt, no retry (the processor retries)."""

    signal: str
    target: str

    def send(self, payload: bytes, timeout: float) -> SendResult:
        raise NotImplementedError

    def reset_after_fork(self) -> None:
        """Drop connections inherited from the parent (never reuse a socket across fork)."""

    def abort(self) -> None:
        """From another thread: make a request in flight return now (shutdown deadline). Never raises."""

    def request_may_have_arrived(self) -> bool:
        """Whether the request in flight (or the last one) may have reached the collector: False only when
        it certainly did not (no connection). Any thread; never raises."""
        return True

    def close(self) -> None:
        """Release connections."""


_SIZE_MARKERS = ("larger than max", "message length too large", "message too large", "too large")


def _is_size_refusal(details: str) -> bool:
    """Whether a gRPC status text is a message-size refusal (grpc-core, grpc-go, tonic wordings)."""
    text = details.lower()
    return any(marker in text for marker in _SIZE_MARKERS)


def _looks_unreachable(details: str) -> bool:
    """gRPC UNAVAILABLE raised by the client's transport (nothing reached a server) vs. answered by one."""
    text = details.lower()
    return any(marker in text for marker in ("connect", "connection", "dns", "resolve", "socket", "unreachable",
                                             "no route", "refused", "reset", "closed", "handshake", "eof"))


def _partial(signal: str, body: bytes) -> tuple[int, str]:
    if not body:
        return 0, ""
    from google.protobuf.message import DecodeError

    response: Any
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        response = ExportTraceServiceResponse()
        field_name = "rejected_spans"
    elif signal == "metrics":
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

        response = ExportMetricsServiceResponse()
        field_name = "rejected_data_points"
    else:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        response = ExportLogsServiceResponse()
        field_name = "rejected_log_records"
    try:
        response.ParseFromString(body)
    except DecodeError:
        return 0, ""
    if not response.HasField("partial_success"):
        return 0, ""
    return int(getattr(response.partial_success, field_name)), str(response.partial_success.error_message)


def _read_file(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as fh:
        return fh.read()


class GrpcSender(Sender):
    """OTLP/gRPC with raw bytes in and out (encoded once, size known before sending)."""

    # Spec: retryable codes; RESOURCE_EXHAUSTED only with RetryInfo (handled below).
    _RETRYABLE = frozenset({"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"})

    def __init__(self, signal: str, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 compression: str = "none", insecure: bool | None = None, certificate: str | None = None,
                 client_key: str | None = None, client_certificate: str | None = None) -> None:
        import grpc

        self.signal = signal
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        self._address = parts.netloc.rsplit("@", 1)[-1] or "localhost:4317"
        if parts.scheme == "https":
            secure = True
        elif parts.scheme == "http":
            secure = False
        else:  # no scheme: the spec's OTEL_EXPORTER_OTLP_INSECURE decides, TLS by default
            secure = not insecure if insecure is not None else True
        self.target = f"{'https' if secure else 'http'}://{self._address}"
        self._credentials = None
        if secure:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_file(certificate, "certificate"),
                private_key=_read_file(client_key, "client key"),
                certificate_chain=_read_file(client_certificate, "client certificate"))
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._compression = grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression
        self._channel: Any = None
        self._call: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        import grpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                   ("grpc.enable_retries", 0)]
        if self._credentials is not None:
            channel = grpc.secure_channel(self._address, self._credentials, options=options,
                                          compression=self._compression)
        else:
            channel = grpc.insecure_channel(self._address, options=options, compression=self._compression)
        self._channel = channel
        self._call = channel.unary_unary(_GRPC_METHODS[self.signal])
        return self._call

    def send(self, payload: bytes, timeout: float) -> SendResult:
        import grpc

        with self._lock:
            call = self._call or self._connect()
        try:
            response = call(payload, timeout=max(timeout, 0.001), metadata=self._metadata, wait_for_ready=False)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            details = (error.details() if hasattr(error, "details") else "") or ""
            retry_after = self._retry_info(error)
            detail = f"gRPC {name}: {details}" if details else f"gRPC {name}"
            if name == "UNAVAILABLE":
                self._reconnect()
            if _is_size_refusal(details) and name in ("RESOURCE_EXHAUSTED", "OUT_OF_RANGE", "INVALID_ARGUMENT"):
                # gRPC's own message-size limit ("Received message larger than max (N vs. M)"; tonic:
                # "decoded message length too large"): the same bytes can never pass, smaller ones can.
                return SendResult(TOO_LARGE, detail)
            if name == "RESOURCE_EXHAUSTED":
                # Without RetryInfo this is a memory limiter refusing under load (the spec makes it retryable
                # only with RetryInfo; dropping would lose data a moment of back-off saves): back off, never split.
                return SendResult(RETRY, detail, retry_after, cause=LOAD)
            if name == "DEADLINE_EXCEEDED":
                if not self.request_may_have_arrived():
                    # The channel never got ready (a peer that accepts TCP but never completes HTTP/2): the
                    # request never left, so resending it duplicates nothing.
                    return SendResult(RETRY, f"no connection within {timeout:.1f}s: TCP accepted, no HTTP/2 "
                                      f"handshake ({detail})", retry_after, cause=UNREACHABLE)
                return SendResult(RETRY, f"no answer within {timeout:.1f}s ({detail})", retry_after, cause=NO_ANSWER)
            if name == "UNAVAILABLE":
                cause = UNREACHABLE if _looks_unreachable(details) else LOAD
                return SendResult(RETRY, detail, retry_after, cause=cause)
            if name in self._RETRYABLE:
                return SendResult(RETRY, detail, retry_after)
            return SendResult(FAIL, detail)
        except Exception as exc:  # grpc raises a few non-RpcError types (ValueError on a closed channel)
            self._reconnect()
            return SendResult(RETRY, f"{type(exc).__name__}: {exc}", cause=UNREACHABLE)
        rejected, message = _partial(self.signal, response if isinstance(response, bytes) else b"")
        return SendResult(OK, message, rejected=rejected)

    @staticmethod
    def _retry_info(error: Any) -> float | None:
        try:
            metadata = dict(error.trailing_metadata() or ())
        except Exception:
            return None
        raw = metadata.get("google.rpc.retryinfo-bin")
        if not raw:
            return None
        from google.rpc.error_details_pb2 import RetryInfo

        info = RetryInfo()
        try:
            info.ParseFromString(raw)
        except Exception:
            return None
        return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)

    def _reconnect(self) -> None:
        with self._lock:
            channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            try:
                channel.close()
            except Exception:
                logger.debug("closing gRPC channel to %s failed", self.target, exc_info=True)

    def abort(self) -> None:
        # Closing the channel cancels the RPC in flight: the export thread's call returns at once.
        self._reconnect()

    def request_may_have_arrived(self) -> bool:
        channel = self._channel
        try:
            # grpcio's connectivity state without subscribing a polling thread (2 = READY); if this private
            # accessor ever goes away, the answer is the safe one (True: delivery unknown).
            return int(channel._channel.check_connectivity_state(False)) == 2
        except Exception:
            return True

    def reset_after_fork(self) -> None:
        # The inherited channel belongs to the parent's gRPC core state: forget it, do not close it.
        self._lock = threading.Lock()
        self._channel = None
        self._call = None

    def close(self) -> None:
        self._reconnect()


class HttpSender(Sender):
    """OTLP/HTTP with protobuf bodies over one kept-alive ``http.client`` connection.

    ``requests`` costs several milliseconds of GIL-holding Python per request, which the application
    pays for; ``http.client`` is a fraction of that. Response bodies are read up to 4 MiB. When an
    HTTP(S) proxy applies to the endpoint (``HTTPS_PROXY`` & co.), :func:`make_sender` uses
    :class:`RequestsHttpSender` instead, which honours it.
    """

    def __init__(self, signal: str, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 compression: str = "none", certificate: str | None = None, client_key: str | None = None,
                 client_certificate: str | None = None) -> None:
        import ssl

        self.signal = signal
        self.url = endpoint
        self.target = mask_url(endpoint)
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": "otelkit", **dict(headers or {})}
        if parts.username or parts.password:
            import base64

            token = base64.b64encode(f"{parts.username or ''}:{parts.password or ''}".encode()).decode()
            self._headers.setdefault("Authorization", f"Basic {token}")
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._ssl: ssl.SSLContext | None = None
        if self._https:
            self._ssl = ssl.create_default_context(cafile=certificate)
            if client_certificate:
                self._ssl.load_cert_chain(client_certificate, client_key)
        self._conn: Any = None
        self._reused = False
        self._sent = False

    def _connection(self, timeout: float) -> Any:
        import http.client

        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._reused = False
        else:
            self._reused = True
            self._conn.timeout = timeout
            if self._conn.sock is not None:
                self._conn.sock.settimeout(timeout)
        return self._conn

    def _exchange(self, body: bytes, timeout: float) -> tuple[int, bytes, str | None]:
        self._sent = False
        conn = self._connection(timeout)
        conn.request("POST", self._path, body=body, headers=self._headers)
        self._sent = True  # the whole request is out: from here a timeout leaves its delivery unknown
        response = conn.getresponse()
        content = response.read(MAX_RESPONSE_BYTES + 1)
        if not response.isclosed():
            # Unread rest of an oversized body, or the server closes: do not reuse this connection.
            self.close()
        elif response.will_close:
            self.close()
        return response.status, content, response.getheader("Retry-After")

    def send(self, payload: bytes, timeout: float) -> SendResult:
        import http.client
        import ssl

        body = gzip.compress(payload, compresslevel=1) if self._gzip else payload
        deadline = time.monotonic() + max(timeout, 0.001)
        for attempt in (1, 2):
            try:
                status, content, retry_after = self._exchange(body, max(deadline - time.monotonic(), 0.001))
                break
            except ssl.SSLError as exc:
                self.close()
                return SendResult(FAIL, f"TLS error: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                reused = self._reused
                sent = self._sent
                self.close()
                # A kept-alive connection the server closed in between: retry once at once, on a new one.
                if attempt == 1 and reused and not isinstance(exc, TimeoutError) and deadline > time.monotonic():
                    continue
                text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, TimeoutError) and sent:
                    return SendResult(RETRY, f"no answer within {timeout:.1f}s ({text})", cause=NO_ANSWER)
                return SendResult(RETRY, text, cause=UNREACHABLE if not sent else "")
        else:  # pragma: no cover - the loop always breaks or returns
            return SendResult(RETRY, "connection failed")
        return _http_result(self.signal, status, content, retry_after)

    def reset_after_fork(self) -> None:
        self._conn = None  # a socket shared with the parent would interleave bytes (EBADF, upstream #4994)

    def request_may_have_arrived(self) -> bool:
        return self._sent

    def abort(self) -> None:
        # shutdown() (not close()) wakes a thread blocked in recv on this socket; the export thread then
        # closes the connection itself.
        conn = self._conn
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


class RequestsHttpSender(Sender):
    """OTLP/HTTP through ``requests`` (used when an HTTP proxy applies: it honours ``HTTPS_PROXY``...)."""

    def __init__(self, signal: str, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 compression: str = "none", certificate: str | None = None, client_key: str | None = None,
                 client_certificate: str | None = None) -> None:
        self.signal = signal
        self.url = endpoint
        self.target = mask_url(endpoint)
        self._headers = {"Content-Type": "application/x-protobuf", **dict(headers or {})}
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._verify: bool | str = certificate or True
        self._cert: tuple[str, str] | str | None = None
        if client_certificate and client_key:
            self._cert = (client_certificate, client_key)
        elif client_certificate:
            self._cert = client_certificate
        self._session: Any = None

    def _get_session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def send(self, payload: bytes, timeout: float) -> SendResult:
        import requests

        body = gzip.compress(payload, compresslevel=1) if self._gzip else payload
        timeout = max(timeout, 0.001)
        try:
            response = self._get_session().post(self.url, data=body, headers=self._headers, timeout=timeout,
                                                verify=self._verify, cert=self._cert, stream=True)
        except requests.exceptions.SSLError as exc:
            return SendResult(FAIL, f"TLS error: {exc}")
        except requests.exceptions.ReadTimeout as exc:
            self.close()
            return SendResult(RETRY, f"no answer within {timeout:.1f}s ({type(exc).__name__})", cause=NO_ANSWER)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            self.close()
            return SendResult(RETRY, f"{type(exc).__name__}", cause=UNREACHABLE)
        except Exception as exc:  # invalid URL, bad certificate path...
            return SendResult(FAIL, f"{type(exc).__name__}: {exc}")
        try:
            status = response.status_code
            try:
                content = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True) or b""
            except Exception:
                content = b""
        finally:
            response.close()
        return _http_result(self.signal, status, content, response.headers.get("Retry-After"))

    def reset_after_fork(self) -> None:
        self._session = None  # a pooled socket shared with the parent would interleave bytes (EBADF, #4994)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:
                pass


_UNREACHABLE_MARKERS = ("Connection", "connect", "UNAVAILABLE", "Errno", "RemoteDisconnected", "gaierror")


def _failure_cause(target: str, last_error: str) -> str:
    """Why the collector got nothing at shutdown, for the report: unreachable, or answering with errors."""
    if any(marker in last_error for marker in _UNREACHABLE_MARKERS):
        return f"collector unreachable at {target}: {last_error}"
    return f"collector at {target} failing: {last_error or 'unknown error'}"


_HTTP_RETRYABLE = frozenset({429, 502, 503, 504})


def _http_result(signal: str, status: int, content: bytes, retry_after: str | None) -> SendResult:
    """An OTLP/HTTP answer (status, body read up to 4 MiB + 1 byte, ``Retry-After``) as a send result."""
    if 200 <= status < 300:
        if len(content) > MAX_RESPONSE_BYTES:
            return SendResult(OK, "response larger than 4 MiB ignored")
        rejected, message = _partial(signal, content)
        return SendResult(OK, message, rejected=rejected)
    if status in _HTTP_RETRYABLE:
        # 429/503: the collector refuses under load; 502/504: a proxy in front of it could not get an answer.
        cause = LOAD if status in (429, 503) else ""
        return SendResult(RETRY, f"HTTP {status}", _retry_after(retry_after), cause=cause)
    if status == 413:
        return SendResult(TOO_LARGE, "HTTP 413")
    return SendResult(FAIL, f"HTTP {status}")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if seconds == seconds else None


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


def _scrubber(settings: Any, name: str) -> Callable[[list[Any]], list[Any]] | None:
    scrub = getattr(settings, "scrub", None) if settings is not None else None
    if scrub is None or not getattr(scrub, "enabled", False):
        return None
    try:
        from otelkit import _scrub
    except ImportError:
        return None
    fn = getattr(_scrub, name, None)
    return fn if callable(fn) else None


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
        self._count_lock = threading.Lock()
        # With a spool: the queue drains to disk when it nears full, whatever the sender is doing (a request
        # to a hung collector can block the export thread for its whole timeout). Started on first need.
        self._spill_at = max(1, self._max_queue * 3 // 4)
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
        if len(queue) + self._inflight_n >= self._max_queue:
            STATS.dropped(self.signal, _stats.QUEUE_FULL, 1, warn=False)
            return
        queue.append(item)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()
        if (self._spool is not None and len(queue) + self._inflight_n >= self._spill_at
                and not self._spill_wake.is_set()):
            self._wake_spiller()

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
                        items = self._take_batch()
                        if not items:
                            break
                        left = self._spool_items(items)
                        if left:  # the disk failed: back at the head of the queue, memory only for a while
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

    def _take_batch(self) -> list[Item]:
        queue = self._queue
        batch = []
        with self._take_lock:
            try:
                for _ in range(min(self._batch_size, len(queue))):
                    batch.append(queue.popleft())
            except IndexError:  # the shutdown took the queue over meanwhile
                pass
        if batch and self._scrub is not None:
            try:
                batch = list(self._scrub(batch))
            except Exception:
                logger.debug("otelkit scrubbing failed; exporting %s unscrubbed is not allowed, dropping",
                             self.signal, exc_info=True)
                self._finish(len(batch), _stats.EXPORT_FAILED, "scrubbing failed")
                return []
        return batch

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

    def _finish(self, count: int, reason: str | None, detail: str = "", *, force: bool = False) -> None:
        """Count ``count`` items as exported (``reason`` None) or dropped. ``force``: the shutdown's own
        accounting after it took the pipeline over from a stuck export thread (whose reports are ignored)."""
        if (self._abandoned and not force) or count <= 0:
            return
        if reason is None:
            STATS.exported(self.signal, count)
        elif reason == UNANSWERED:
            STATS.unanswered(self.signal, count, detail)
        else:
            STATS.dropped(self.signal, reason, count, detail, warn=False)
        with self._count_lock:
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

    def _encode_or_drop(self, items: list[Item], *, force: bool = False) -> bytes | None:
        """The OTLP request for ``items``; None (the items counted as dropped) if encoding failed."""
        assert self._encode is not None
        try:
            return self._encode(items)
        except Exception as exc:
            logger.debug("otelkit could not encode %s", self.signal, exc_info=True)
            self._finish(len(items), _stats.EXPORT_FAILED, f"encoding failed: {type(exc).__name__}", force=force)
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

    def _spooled(self, count: int, *, force: bool = False) -> None:
        """``count`` items left memory for the spool: finished here, not delivered (a flush reports False)."""
        if (self._abandoned and not force) or count <= 0:
            return
        _stats.STATS.spooled(self.signal, count)
        with self._count_lock:
            self._done += count
            self._failed += count

    def _spool_items(self, items: list[Item], *, force: bool = False) -> list[Item]:
        """Write ``items`` to the spool (split to the request cap); returns those a write error left over.

        A full spool refuses them: counted as ``spool_full``."""
        assert self._spool is not None and self._encode is not None
        payload = self._encode_or_drop(items, force=force)
        if payload is None:
            return []
        if len(payload) > self._max_bytes:
            if len(items) == 1:
                self._finish(1, _stats.TOO_LARGE, f"request of {len(payload)} bytes over the {self._max_bytes} cap",
                             force=force)
                return []
            half = len(items) // 2
            return self._spool_items(items[:half], force=force) + self._spool_items(items[half:], force=force)
        outcome = self._spool.write(payload, len(items))
        if outcome == _spool.WRITTEN:
            self._spooled(len(items), force=force)
            self._spool_pending = True
            return []
        if outcome == _spool.FULL:
            self._finish(len(items), _stats.SPOOL_FULL,
                         f"spool {self._spool.path} holds {self._spool.max_bytes} bytes", force=force)
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
        while len(self._queue) + self._inflight_n > keep:
            items = self._inflight or self._take_batch()
            if not items:
                if not self._queue:
                    return
                continue
            left = self._spool_items(items)
            self._set_inflight(left)  # a write error keeps them (oldest) at the head, in memory
            if left:
                return

    def _spill_at_shutdown(self, deadline: float, *, force: bool = False) -> None:
        """Write everything still in memory to the spool, before ``deadline`` (the in-flight batch too: a
        request without an answer may have been lost; at least once, so at worst a duplicate later)."""
        while self._inflight or self._queue:
            if time.monotonic() >= deadline or (self._abandoned and not force):
                return  # the caller counts the rest as shutdown_timeout
            items = self._inflight or self._take_batch()
            self._set_inflight([])
            self._inflight_unanswered = 0
            if not items:
                continue
            left = self._spool_items(items, force=force)
            if left:
                self._finish(len(left), _stats.EXPORT_FAILED, "spool write failed; "
                             + _failure_cause(self.target, self._last_error), force=force)

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
            self._abandoned = True  # still writing to the spool at the deadline: its reports are ignored
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

    def _take_over(self, deadline: float) -> None:
        """The export thread is stuck in a request that outlives the deadline: from now on whatever it
        reports is ignored (the process is about to exit); this thread spools or counts what it holds."""
        self._stopped_early.set()
        self._abandoned = True
        sent = self._sender is None or self._sender.request_may_have_arrived()
        in_flight = (self._sending_since is not None and sent) or self._inflight_unanswered > 0
        cause = self._cause_text()
        if self._spool is not None:
            try:
                self._spill_at_shutdown(deadline, force=True)
            except Exception:
                logger.debug("otelkit %s spooling at shutdown failed", self.signal, exc_info=True)
        self._count_leftovers(deadline_passed=True, force=True, in_flight=in_flight, cause=cause)

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

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

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


def scrubbed_user_processor(processor: Any, settings: Settings, signal: str) -> Any:
    """``processor`` (the caller's, for ``traces`` or ``logs``) behind scrubbing when ``settings.scrub.enabled``."""
    if signal == "traces":
        scrub = _scrubber(settings, "scrub_spans")
        return ScrubbingSpanProcessor(processor, scrub) if scrub is not None else processor
    scrub = _scrubber(settings, "scrub_log_records")
    return ScrubbingLogProcessor(processor, scrub) if scrub is not None else processor


# ==================================================================================================
# Metrics


def _count_points(data: MetricsData) -> int:
    total = 0
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                total += len(getattr(metric.data, "data_points", ()) or ())
    return total


_INT64 = (-(1 << 63), (1 << 63) - 1)


def _out_of_range(value: Any) -> bool:
    return type(value) is int and not _INT64[0] <= value <= _INT64[1]


def _ints_to_doubles(data: MetricsData) -> MetricsData:
    """A copy of ``data`` where integer values (and exemplar values) beyond int64 are floats."""
    from dataclasses import replace

    def point(p: Any) -> Any:
        changes: dict[str, Any] = {}
        if _out_of_range(getattr(p, "value", None)):
            changes["value"] = float(p.value)
        for name in ("sum", "min", "max"):
            if _out_of_range(getattr(p, name, None)):
                changes[name] = float(getattr(p, name))
        exemplars = getattr(p, "exemplars", None)
        if exemplars and any(_out_of_range(e.value) for e in exemplars):
            changes["exemplars"] = [replace(e, value=float(e.value)) if _out_of_range(e.value) else e
                                    for e in exemplars]
        return replace(p, **changes) if changes else p

    def metric(m: Any) -> Any:
        points = getattr(m.data, "data_points", None)
        if not points:
            return m
        return replace(m, data=replace(m.data, data_points=[point(p) for p in points]))

    return replace(data, resource_metrics=[
        replace(rm, scope_metrics=[replace(sm, metrics=[metric(m) for m in sm.metrics]) for sm in rm.scope_metrics])
        for rm in data.resource_metrics])


class OtlpMetricExporter(MetricExporter):
    """OTLP metric exporter on a :class:`Sender`: one attempt per collection, a short backlog of
    collections that met a transient failure (sent first, in order, when the collector is back),
    points counted in :data:`STATS`, and a pid check so a forked child never exports the parent's
    inherited cumulative state through this exporter."""

    def __init__(self, sender: Sender, *, timeout: float = 10.0, backlog: int = 8,
                 preferred_temporality: dict[type, AggregationTemporality] | None = None) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self._sender = sender
        self._timeout = timeout
        self._backlog: deque[tuple[bytes, int]] = deque()
        self._backlog_max = backlog
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._last_error = ""
        self.target = sender.target
        self._closed = False
        self._out_of_time = False  # the last export stopped at its deadline (not on a failing collector)
        self._sending = False  # a request is out (the oldest backlog entry)
        self._abandoned = False  # the shutdown deadline passed with an export stuck: outcomes are ignored

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self._closed:
            return MetricExportResult.FAILURE
        if os.getpid() != self._pid:
            # Inherited by a forked child: the parent's points are the parent's. init() re-creates the
            # meter provider in the child (see otelkit._fork), which brings a fresh exporter.
            return MetricExportResult.SUCCESS
        from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

        points = _count_points(metrics_data)
        if not points:
            return MetricExportResult.SUCCESS
        deadline = time.monotonic() + min(self._timeout, (timeout_millis or 10_000) / 1000)
        if _shutdown_deadline is not None:
            deadline = min(deadline, _shutdown_deadline)
        try:
            payload = bytes(encode_metrics(metrics_data).SerializeToString())
        except Exception:
            # Usually one integer beyond int64 (counter.add(10**20)): with cumulative temporality it would
            # fail every export for the life of the process. Send such values as doubles, keep the rest.
            try:
                payload = bytes(encode_metrics(_ints_to_doubles(metrics_data)).SerializeToString())
            except Exception as exc:
                STATS.dropped("metrics", _stats.EXPORT_FAILED, points, f"encoding failed: {type(exc).__name__}")
                return MetricExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                self._backlog.append((payload, points))
                while len(self._backlog) > self._backlog_max:
                    _, lost = self._backlog.popleft()
                    STATS.dropped("metrics", _stats.QUEUE_FULL, lost, self._last_error)
                while self._backlog:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._out_of_time = True
                        return MetricExportResult.FAILURE
                    body, count = self._backlog[0]
                    if len(body) > MAX_REQUEST_BYTES:
                        self._backlog.popleft()
                        STATS.dropped("metrics", _stats.TOO_LARGE, count, f"{len(body)} bytes")
                        continue
                    self._sending = True
                    try:
                        result = self._sender.send(body, remaining)
                    finally:
                        self._sending = False
                    if self._abandoned:  # the shutdown accounted for these points meanwhile
                        return MetricExportResult.FAILURE
                    if result.kind == RETRY:
                        self._last_error = result.detail
                        self._out_of_time = time.monotonic() >= deadline - 0.01
                        return MetricExportResult.FAILURE
                    self._out_of_time = False
                    self._backlog.popleft()
                    if result.kind == OK:
                        rejected = min(result.rejected, count)
                        STATS.exported("metrics", count - rejected)
                        if rejected:
                            STATS.dropped("metrics", _stats.REJECTED, rejected, result.detail)
                    else:
                        reason = _stats.TOO_LARGE if result.kind == TOO_LARGE else _stats.EXPORT_FAILED
                        STATS.dropped("metrics", reason, count, f"{self.target}: {result.detail}")
            return MetricExportResult.SUCCESS
        except Exception:
            logger.debug("otelkit metric export failed", exc_info=True)
            return MetricExportResult.FAILURE
        finally:
            detach(token)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def abandon(self) -> None:
        """The shutdown deadline passed while an export is stuck in a request (a hung collector): count what
        the backlog holds now (the request out as unanswered, the rest as ``shutdown_timeout``), ignore the
        stuck export's outcome, and make its request return. Any thread; never raises."""
        if self._abandoned or self._closed and not self._sending:
            return
        self._abandoned = self._closed = True
        backlog = list(self._backlog)  # without the lock: the stuck export holds it
        out = backlog[0][1] if backlog and self._sending else 0
        rest = sum(count for _, count in backlog) - out
        may_have_arrived = self._sender.request_may_have_arrived()
        cause = (f"no answer from the collector at {self.target} before the deadline" if may_have_arrived
                 else f"no connection to the collector at {self.target} before the deadline")
        if out and may_have_arrived:
            STATS.unanswered("metrics", out, cause)
        else:
            rest += out
        if rest:
            STATS.dropped("metrics", _stats.SHUTDOWN_TIMEOUT, rest, cause)
        try:
            self._sender.abort()
        except Exception:
            logger.debug("otelkit: aborting the metric request in flight failed", exc_info=True)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        with self._lock:
            lost = 0 if self._abandoned else sum(count for _, count in self._backlog)  # abandon() counted them
            self._backlog.clear()
        if lost:
            if self._out_of_time or not self._last_error:
                STATS.dropped("metrics", _stats.SHUTDOWN_TIMEOUT, lost, self._last_error)
            else:  # the last attempt failed fast: the collector is down, the deadline was not the problem
                STATS.dropped("metrics", _stats.EXPORT_FAILED, lost, _failure_cause(self.target, self._last_error))
        self._sender.close()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._backlog.clear()
        self._sender.reset_after_fork()


# ==================================================================================================
# Factories from Settings


def make_sender(signal: str, signal_settings: Any) -> Sender:
    """An OTLP :class:`Sender` for ``signal`` from a ``SignalSettings`` (or anything with its fields)."""
    protocol = getattr(signal_settings, "protocol", "grpc") or "grpc"
    endpoint = getattr(signal_settings, "endpoint", None)
    headers = dict(getattr(signal_settings, "headers", None) or {})
    compression = getattr(signal_settings, "compression", "none") or "none"
    tls = {"certificate": getattr(signal_settings, "certificate", None),
           "client_key": getattr(signal_settings, "client_key", None),
           "client_certificate": getattr(signal_settings, "client_certificate", None)}
    if protocol == "grpc":
        return GrpcSender(signal, endpoint or "http://localhost:4317", headers=headers, compression=compression,
                          insecure=getattr(signal_settings, "insecure", None), **tls)
    url = endpoint or f"http://localhost:4318{_PATHS[signal]}"
    if _proxied(url):
        return RequestsHttpSender(signal, url, headers=headers, compression=compression, **tls)
    return HttpSender(signal, url, headers=headers, compression=compression, **tls)


def _proxied(url: str) -> bool:
    from urllib.request import getproxies, proxy_bypass

    try:
        parts = urlsplit(url)
        proxies = getproxies()
        if not proxies.get(parts.scheme):
            return False
        return not proxy_bypass(parts.hostname or "")
    except Exception:
        return False


_PROBE_TTL = 2.0
_probe_cache: tuple[float, str | None] | None = None


def probe_local_collector(timeout: float = 0.05) -> str | None:
    """``"grpc"`` if something listens on 127.0.0.1:4317, else ``"http/protobuf"`` for :4318, else None.

    A TCP connect of a few ms each; cached briefly so one ``init()`` probes once."""
    global _probe_cache
    now = time.monotonic()
    if _probe_cache is not None and now - _probe_cache[0] < _PROBE_TTL:
        return _probe_cache[1]
    found: str | None = None
    for port, protocol in ((4317, "grpc"), (4318, "http/protobuf")):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                found = protocol
                break
        except OSError:
            continue
    _probe_cache = (now, found)
    return found


@dataclass(frozen=True)
class _Destination:
    kind: str  # otlp | console | prometheus | memory | none
    protocol: str | None = None
    endpoint: str | None = None
    auto: bool = False


def resolve_exporters(settings: Settings, signal: str) -> list[_Destination]:
    """Where ``signal`` goes: the configured exporters, with ``auto`` resolved by the local probe."""
    sig = getattr(settings, signal)
    out: list[_Destination] = []
    for name in tuple(getattr(sig, "exporters", ()) or ()):
        name = name.strip().lower()
        if name == "none":
            continue
        if name == "auto":
            protocol = probe_local_collector()
            if protocol == "grpc":
                out.append(_Destination("otlp", "grpc", "http://127.0.0.1:4317", auto=True))
            elif protocol is not None:
                out.append(_Destination("otlp", protocol, f"http://127.0.0.1:4318{_PATHS[signal]}", auto=True))
            elif getattr(settings, "console_on_auto", True):
                out.append(_Destination("memory" if signal == "metrics" else "console", auto=True))
            continue
        if name == "otlp":
            protocol = getattr(sig, "protocol", "grpc") or "grpc"
            default = "http://localhost:4317" if protocol == "grpc" else f"http://localhost:4318{_PATHS[signal]}"
            out.append(_Destination("otlp", protocol, getattr(sig, "endpoint", None) or default))
        elif name in ("console", "prometheus"):
            out.append(_Destination(name))
        else:
            logger.warning("otelkit: unknown %s exporter %r ignored", signal, name)
    return out


def _batch_kwargs(settings: Settings, group: str, signal: str) -> dict[str, Any]:
    batch = getattr(settings, group, None)
    sig = getattr(settings, signal, None)
    export_timeout = float(getattr(batch, "export_timeout", 30.0) or 30.0)
    request_timeout = float(getattr(sig, "timeout", 10.0) or 10.0)
    return {
        "max_queue_size": int(getattr(batch, "max_queue_size", 8192) or 8192),
        "max_export_batch_size": int(getattr(batch, "max_export_batch_size", 512) or 512),
        "schedule_delay": float(getattr(batch, "schedule_delay", 1.0) or 1.0),
        "export_timeout": min(export_timeout, request_timeout),
    }


def make_spool(settings: Settings, signal: str) -> _spool.SpoolStore | None:
    """The disk spool of ``signal`` when ``settings.spool_dir`` is set (spans and logs; see :mod:`otelkit._spool`)."""
    directory = getattr(settings, "spool_dir", None)
    if not directory:
        return None
    return _spool.SpoolStore(directory, signal, int(getattr(settings, "spool_max_bytes", 0)
                                                    or _spool.DEFAULT_MAX_BYTES))


def _console(name: str, fallback: Callable[[], Any]) -> Any:
    try:
        from otelkit import _console
    except ImportError:
        return fallback()
    factory = getattr(_console, name, None)
    return factory() if callable(factory) else fallback()


def build_span_processors(settings: Settings) -> list[Any]:
    """Span processors for ``settings.traces.exporters`` (OTLP: :class:`OtelkitSpanProcessor`)."""
    processors: list[Any] = []
    kwargs = _batch_kwargs(settings, "bsp", "traces")
    scrub = _scrubber(settings, "scrub_spans")
    for dest in resolve_exporters(settings, "traces"):
        if dest.kind == "otlp":
            sig = settings.traces
            sender = make_sender("traces", _with(sig, protocol=dest.protocol, endpoint=dest.endpoint))
            processors.append(make_span_processor(sender, scrub=scrub, spool=make_spool(settings, "traces"),
                                                  **kwargs))
        elif dest.kind == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = _console("TreeConsoleSpanExporter", ConsoleSpanExporter)
            processors.append(make_span_processor(exporter, scrub=scrub, **{**kwargs, "schedule_delay": 0.2}))
        else:
            logger.warning("otelkit: %s is not an exporter for traces; ignored", dest.kind)
    return processors


def build_log_processors(settings: Settings) -> list[Any]:
    """Log record processors for ``settings.logs.exporters``."""
    processors: list[Any] = []
    kwargs = _batch_kwargs(settings, "blrp", "logs")
    scrub = _scrubber(settings, "scrub_log_records")
    for dest in resolve_exporters(settings, "logs"):
        if dest.kind == "otlp":
            sender = make_sender("logs", _with(settings.logs, protocol=dest.protocol, endpoint=dest.endpoint))
            processors.append(make_log_processor(sender, scrub=scrub, spool=make_spool(settings, "logs"), **kwargs))
        elif dest.kind == "console":
            from otelkit._compat import ConsoleLogRecordExporter, SimpleLogRecordProcessor

            # Printing is local and quick: print as it happens, in order with the application's output.
            exporter = _CountingLogExporter(_console("ConsoleLogExporter", ConsoleLogRecordExporter))
            # The console is a destination like OTLP: it prints a scrubbed copy (the record is shared).
            console: Any = SimpleLogRecordProcessor(exporter)
            processors.append(ScrubbingLogProcessor(console, scrub) if scrub is not None else console)
        else:
            logger.warning("otelkit: %s is not an exporter for logs; ignored", dest.kind)
    return processors


_prometheus_servers: dict[tuple[str, int], Any] = {}
# (host, port) whose scrape server could not start in the last build, with the reason (for the destination line).
_prometheus_failed: dict[tuple[str, int], str] = {}
_prometheus_bound: dict[tuple[str, int], int] = {}  # configured (host, port) -> the port really served


class _CountingLogExporter(LogRecordExporter):
    """A log record exporter (the console) whose records count as exported, like the OTLP pipeline's."""

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, batch: Sequence[Any]) -> Any:
        try:
            result = self._exporter.export(batch)
        except Exception as exc:
            STATS.dropped("logs", _stats.EXPORT_FAILED, len(batch), f"{type(self._exporter).__name__}: {exc!r}")
            raise
        if getattr(result, "name", "SUCCESS") == "SUCCESS":
            STATS.exported("logs", len(batch))
        else:
            STATS.dropped("logs", _stats.EXPORT_FAILED, len(batch), type(self._exporter).__name__)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flush = getattr(self._exporter, "force_flush", None)
        return bool(flush(timeout_millis)) if flush is not None else True


class _CountingMetricExporter(MetricExporter):
    """A metric exporter (console, in-memory summary) whose points count as exported."""

    def __init__(self, exporter: MetricExporter) -> None:
        temporality, aggregation = _compat.exporter_preferences(exporter)
        super().__init__(preferred_temporality=temporality, preferred_aggregation=aggregation)
        self._exporter = exporter

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        result = self._exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        points = _count_points(metrics_data)
        if result == MetricExportResult.SUCCESS:
            STATS.exported("metrics", points)
        else:
            STATS.dropped("metrics", _stats.EXPORT_FAILED, points, type(self._exporter).__name__)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return bool(self._exporter.force_flush(timeout_millis=timeout_millis))

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._exporter.shutdown(timeout_millis=timeout_millis, **kwargs)


class _SummaryAtExitReader(PeriodicExportingMetricReader):
    """Embedded default without a collector: metrics stay in memory and print once, as a summary, at shutdown."""

    def __init__(self, exporter: MetricExporter) -> None:
        super().__init__(exporter, export_interval_millis=math.inf)
        self.print_summary = True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self.print_summary:
            try:
                self.collect(timeout_millis=timeout_millis)
            except Exception:
                logger.debug("otelkit: metric summary failed", exc_info=True)
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


def silence_summaries(meter_provider: Any) -> None:
    """A re-``init()`` retires ``meter_provider``: its in-memory summary must not print then (only at exit)."""
    for reader in _compat.metric_readers(meter_provider):
        if isinstance(reader, _SummaryAtExitReader):
            reader.print_summary = False


def build_metric_readers(settings: Settings) -> list[Any]:
    """Metric readers for ``settings.metrics.exporters`` (OTLP periodic, console, prometheus, memory)."""
    readers: list[Any] = []
    try:
        _stats.register_self_metrics()
    except Exception:
        logger.debug("otelkit: registering self-metrics failed", exc_info=True)
    interval = float(getattr(settings, "metric_export_interval", 60.0) or 60.0)
    timeout = float(getattr(settings, "metric_export_timeout", 30.0) or 30.0)
    destinations = resolve_exporters(settings, "metrics")
    if not any(dest.kind == "prometheus" for dest in destinations):
        _stop_prometheus_servers(keep=None)
    for dest in destinations:
        reader: Any
        if dest.kind == "otlp":
            sig = settings.metrics
            sender = make_sender("metrics", _with(sig, protocol=dest.protocol, endpoint=dest.endpoint))
            exporter = OtlpMetricExporter(sender, timeout=min(timeout, float(getattr(sig, "timeout", 10.0) or 10.0)))
            reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000,
                                                   export_timeout_millis=timeout * 1000)
        elif dest.kind == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            reader = PeriodicExportingMetricReader(
                _CountingMetricExporter(_console("ConsoleMetricExporter", ConsoleMetricExporter)),
                export_interval_millis=interval * 1000)
        elif dest.kind == "memory":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter as SdkConsoleMetricExporter

            reader = _SummaryAtExitReader(
                _CountingMetricExporter(_console("ConsoleMetricExporter", SdkConsoleMetricExporter)))
        elif dest.kind == "prometheus":
            reader = _prometheus_reader(settings)
            if reader is None:
                continue
        else:
            continue
        _LIVE_READERS.add(reader)
        readers.append(reader)
    return readers


def _prometheus_key(settings: Settings) -> tuple[str, int]:
    host = str(getattr(settings, "prometheus_host", "localhost") or "localhost")
    return host, int(getattr(settings, "prometheus_port", 9464) or 9464)


def _prometheus_reader(settings: Settings) -> Any:
    """The scrape endpoint's reader, or None (and a warning naming the fix) when it cannot serve.

    One port serves one process. With ``OTELKIT_PROMETHEUS_SD_DIR`` set, a process whose port is
    taken (the other workers of a gunicorn/uvicorn/multiprocessing program) serves on a free port
    instead and announces it in a ``file_sd`` file there, so Prometheus scrapes every process; the
    file carries ``service_name`` and ``job`` so the scrape path has the labels of the OTLP path.
    """
    key = host, port = _prometheus_key(settings)
    try:  # the `prometheus` extra: without it the endpoint is off with a reason, never an ImportError
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server
    except ImportError as exc:
        _stop_prometheus_servers(keep=None)
        _prometheus_failed[key] = f"{exc.name or exc} is missing: pip install 'otelkit[prometheus]'"
        logger.warning("otelkit: metrics exporter 'prometheus' needs the prometheus extra (%s); "
                       "the prometheus exporter is off", _prometheus_failed[key])
        return None
    sd_dir = getattr(settings, "prometheus_sd_dir", None)
    _stop_prometheus_servers(keep=key)
    if key not in _prometheus_servers or _prometheus_servers[key][0] != os.getpid():
        server: Any = None
        error: OSError | None = None
        try:
            server = start_http_server(port, addr=host)
        except OSError as exc:
            error = exc
            if sd_dir:  # the configured port is another process's: any free one, announced below
                try:
                    server = start_http_server(0, addr=host)
                except OSError as second:
                    error = second
        if server is None:
            reason = (os.strerror(error.errno) if error.errno else str(error)) if error else "not started"
            _prometheus_failed[key] = reason
            hint = ("" if sd_dir else "; with several processes set OTELKIT_PROMETHEUS_SD_DIR (one port and "
                    "file_sd entry per process) or export over OTLP to a collector")
            logger.warning("otelkit: cannot serve Prometheus metrics on %s:%d (%s); the prometheus exporter "
                           "of process %d is off, its metrics reach no one%s", host, port, error, os.getpid(), hint)
            return None
        _prometheus_failed.pop(key, None)
        _prometheus_servers[key] = (os.getpid(), server)
        _prometheus_bound[key] = _bound_port(server, port)
        if sd_dir:
            _announce_scrape_target(settings, str(sd_dir), host, _prometheus_bound[key])

    class _AnnouncedReader(PrometheusMetricReader):
        """Withdraws the file_sd entry at ``otelkit.shutdown()``: multiprocessing children end with
        ``os._exit`` and never run atexit. A re-init's newer reader keeps it."""

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            if _latest_reader.get(os.getpid()) is self:
                _withdraw_scrape_target(os.getpid())
            super().shutdown(timeout_millis=timeout_millis, **kwargs)

    reader = _AnnouncedReader()
    _latest_reader[os.getpid()] = reader
    return reader


def _bound_port(server: Any, default: int) -> int:
    httpd = server[0] if isinstance(server, tuple) else server
    try:
        return int(httpd.server_address[1])
    except Exception:
        return default


_sd_files: dict[int, str] = {}  # pid -> the file_sd file this process wrote
_latest_reader: dict[int, Any] = {}  # pid -> the prometheus reader of the current init()


def _announce_scrape_target(settings: Settings, directory: str, host: str, port: int) -> None:
    """Write this process's file_sd entry (atomically: Prometheus may read it at any moment)."""
    import json

    address = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    service = str(getattr(settings, "service_name", "") or "")
    labels = {"service_name": service, "job": service}
    attrs = getattr(settings, "resource_attributes", None) or {}
    instance_id = attrs.get("service.instance.id") if hasattr(attrs, "get") else None
    if instance_id:
        labels["service_instance_id"] = str(instance_id)
    path = os.path.join(directory, f"otelkit-{_safe_file_part(service)}-{os.getpid()}.json")
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump([{"targets": [target], "labels": {k: v for k, v in labels.items() if v}}], fh)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("otelkit: cannot write the Prometheus file_sd entry %s (%s): Prometheus will not find the "
                       "scrape endpoint http://%s/metrics of process %d", path, exc, target, os.getpid())
        return
    _sd_files[os.getpid()] = path
    import atexit

    atexit.register(_withdraw_scrape_target, os.getpid())


def _withdraw_scrape_target(pid: int) -> None:
    """Remove this process's file_sd entry (at exit, or when its endpoint stops)."""
    if pid != os.getpid():
        return
    path = _sd_files.pop(pid, None)
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def _safe_file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64] or "service"


def _stop_prometheus_servers(keep: tuple[str, int] | None) -> None:
    """Stop this process's scrape servers other than ``keep`` (a re-init moved or dropped the endpoint)."""
    for key, (pid, server) in list(_prometheus_servers.items()):
        if key == keep or pid != os.getpid():
            continue
        del _prometheus_servers[key]
        _withdraw_scrape_target(pid)
        httpd = server[0] if isinstance(server, tuple) else server

        def stop(httpd: Any = httpd, key: tuple[str, int] = key) -> None:
            try:
                httpd.shutdown()  # waits for the serving loop's next poll (up to 0.5 s): not on init()'s thread
                httpd.server_close()
            except Exception:
                logger.debug("otelkit: stopping the Prometheus server on %s:%d failed", *key, exc_info=True)

        threading.Thread(target=stop, name="otelkit-prometheus-stop", daemon=True).start()


def _with(sig: Any, **changes: Any) -> Any:
    """A view of a SignalSettings with some fields replaced (auto destinations)."""

    class _View:
        def __getattr__(self, name: str) -> Any:
            if name in changes and changes[name] is not None:
                return changes[name]
            return getattr(sig, name, None)

    return _View()


def describe_destinations(settings: Settings) -> str:
    """Where each signal goes, for the one line ``init()`` writes on stderr (without the ``otelkit:`` prefix)."""
    groups: dict[str, list[str]] = {}
    auto_console = False
    for signal in _stats.SIGNALS:
        names = []
        for dest in resolve_exporters(settings, signal):
            if dest.kind == "otlp":
                proto = "gRPC" if dest.protocol == "grpc" else "HTTP"
                endpoint = mask_url(dest.endpoint or "")
                if dest.protocol != "grpc":
                    endpoint = endpoint.removesuffix(_PATHS[signal])
                names.append(f"OTLP/{proto} {endpoint}" + (" (local collector found)" if dest.auto else ""))
            elif dest.kind == "console":
                names.append("this terminal")
                auto_console = auto_console or dest.auto
            elif dest.kind == "memory":
                names.append("an in-memory summary")
                auto_console = auto_console or dest.auto
            elif dest.kind == "prometheus":
                key = host, port = _prometheus_key(settings)
                if key in _prometheus_failed:  # build_metric_readers could not bind it: say so, claim nothing
                    names.append(f"no Prometheus scrape endpoint ({host}:{port}: {_prometheus_failed[key]})")
                else:
                    port = _prometheus_bound.get(key, port)
                    names.append(f"Prometheus scrape endpoint http://{host}:{port}/metrics")
        where = " + ".join(names) if names else "nowhere (exporter none)"
        groups.setdefault(where, []).append(signal)
    text = "; ".join(f"{', '.join(signals)} -> {where}" for where, signals in groups.items())
    line = text
    if auto_console:
        line += (" (no collector on 127.0.0.1:4317/4318; set OTEL_EXPORTER_OTLP_ENDPOINT to send telemetry to one)")
    return line


# ==================================================================================================
# Process-wide helpers (fork, exit)


_getpid = os.getpid


def _forked_without_hooks() -> None:
    _fork.after_fork_without_hooks()


def live_pipelines() -> list[_BatchPipeline[Any]]:
    return list(_LIVE)


def after_fork_in_child(*, forked_at: int | None = None) -> None:
    """Called by :mod:`otelkit._fork` in a forked child, before anything else runs there.

    ``forked_at`` (``time.time_ns()``): spans started before it belong to the parent; ``0`` when
    the fork time is unknown (detected late), then no span is treated as inherited."""
    STATS.reset()
    for pipeline in list(_LIVE):
        try:
            pipeline._after_fork_in_child(time.time_ns() if forked_at is None else forked_at)
        except Exception:
            logger.debug("otelkit: resetting an export pipeline after fork failed", exc_info=True)
    for reader in list(_LIVE_READERS):
        exporter = _compat.reader_exporter(reader)
        if isinstance(exporter, OtlpMetricExporter):
            try:
                exporter._after_fork_in_child()
            except Exception:
                logger.debug("otelkit: resetting a metric exporter after fork failed", exc_info=True)


def abandon_stuck_metric_exporters() -> None:
    """At the shutdown deadline, for a metrics shutdown still stuck in a request: account for its points."""
    for reader in list(_LIVE_READERS):
        exporter = _compat.reader_exporter(reader)
        if isinstance(exporter, OtlpMetricExporter):
            exporter.abandon()


def flush_all(timeout: float) -> bool:
    """Flush every live pipeline and metric reader of this process within ``timeout`` seconds, concurrently."""
    deadline = time.monotonic() + timeout
    results: list[bool] = []
    threads = []

    def run(fn: Callable[[], bool]) -> None:
        try:
            results.append(bool(fn()))
        except Exception:
            results.append(False)

    for pipeline in list(_LIVE):
        threads.append(threading.Thread(target=run, args=(lambda p=pipeline: p.force_flush(timeout * 1000),),
                                        daemon=True))
    for reader in list(_LIVE_READERS):
        if isinstance(reader, PeriodicExportingMetricReader):
            threads.append(threading.Thread(
                target=run, args=(lambda r=reader: r.force_flush(timeout_millis=timeout * 1000),), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return len(results) == len(threads) and all(results)


def _iter_processors(tracer_provider: Any) -> Iterable[Any]:
    return _compat.span_processors(tracer_provider)


def _reset_in_child(forked_at: int | None) -> None:
    after_fork_in_child(forked_at=forked_at)


# Fork handling calls back into the export path; it does not import it.
_fork.register(child_reset=_reset_in_child, exit_flush=flush_all)
