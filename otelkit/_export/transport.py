"""Sending one encoded OTLP request: the gRPC and HTTP senders and how their answers are read."""

from __future__ import annotations

import socket
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from otelkit import _fork
from otelkit._internal_log import logger

# Serialized request cap, below the collector's default 4 MiB gRPC receive limit (HTTP allows 20 MiB).
MAX_REQUEST_BYTES = 4 * 1024 * 1024 - 64 * 1024
# Cap on how much of an HTTP response body is read (OTLP spec: clients MUST limit it; 4 MiB suggested).
MAX_RESPONSE_BYTES = 4 * 1024 * 1024

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
TLS = "tls"
"""A FAIL whose cause is the TLS handshake (certificate, or TLS spoken to a plaintext port)."""


@dataclass(frozen=True)
class SendResult:
    """Outcome of one request: ``kind`` is ok / retry / too_large / fail; ``cause`` says why it failed.

    ``code`` is what the collector (or the gRPC runtime) answered: the HTTP status (``"401"``) or the gRPC
    status name (``"UNAUTHENTICATED"``), ``""`` when no answer came. ``timed_out``: a connection was made
    and no answer came within the timeout (what ``otelkit doctor`` calls "hung")."""

    kind: str
    detail: str = ""
    retry_after: float | None = None
    rejected: int = 0
    cause: str = ""
    code: str = ""
    timed_out: bool = False


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
        import grpc._channel  # see below
        from google.protobuf.message import DecodeError  # noqa: F401
        from google.rpc.error_details_pb2 import RetryInfo  # noqa: F401

        # The first request would import grpc._channel (channel creation), the response and RetryInfo types.
        # When that first request is the flush at exit the import can fail, and a process forked while another
        # thread imports gets a half-initialised module ("partially initialized module 'grpc._channel'", seen
        # in forked children): imported here, sending imports nothing.
        _import_response_type(signal)
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
        # Held around everything a send does in gRPC (connect, call, reconnect): the before-fork hook takes it
        # so that no otelkit thread is inside gRPC when the process forks (see _grpc_before_fork).
        self._gate = threading.Lock()
        # Held around the connectivity probe, which other threads call; the before-fork hook takes it too.
        self._probe_lock = threading.Lock()
        self._held_for_fork: list[threading.Lock] = []
        self._fork_holder: int | None = None  # the thread preparing a fork, while it does
        self._cancelled_for_fork = False
        _GRPC_SENDERS.add(self)
        _install_grpc_fork_hooks()

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
        if self._fork_holder == threading.get_ident():
            # A flush from another at-fork hook, on the forking thread that holds the gate: waiting would
            # deadlock it, and a request now is what the gate prevents. Nothing left: retried after the fork.
            return SendResult(RETRY, "not sent while the process forks")
        with self._gate:  # while a fork is being prepared, this waits (outside gRPC) until it is done
            self._cancelled_for_fork = False
            return self._send(payload, timeout)

    def _send(self, payload: bytes, timeout: float) -> SendResult:
        import grpc

        with self._lock:
            call = self._call or self._connect()
        try:
            response = call(payload, timeout=max(timeout, 0.001), metadata=self._metadata, wait_for_ready=False)
        except grpc.RpcError as error:
            if self._cancelled_for_fork:
                return self._fork_cancel_result()
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
                return SendResult(TOO_LARGE, detail, code=name)
            if name == "RESOURCE_EXHAUSTED":
                # Without RetryInfo this is a memory limiter refusing under load (the spec makes it retryable
                # only with RetryInfo; dropping would lose data a moment of back-off saves): back off, never split.
                return SendResult(RETRY, detail, retry_after, cause=LOAD, code=name)
            if name == "DEADLINE_EXCEEDED":
                if not self.request_may_have_arrived():
                    # The channel never got ready (a peer that accepts TCP but never completes HTTP/2): the
                    # request never left, so resending it duplicates nothing.
                    return SendResult(RETRY, f"no connection within {timeout:.1f}s: TCP accepted, no HTTP/2 "
                                      f"handshake ({detail})", retry_after, cause=UNREACHABLE, code=name,
                                      timed_out=True)
                return SendResult(RETRY, f"no answer within {timeout:.1f}s ({detail})", retry_after, cause=NO_ANSWER,
                                  code=name, timed_out=True)
            if name == "UNAVAILABLE":
                cause = UNREACHABLE if _looks_unreachable(details) else LOAD
                return SendResult(RETRY, detail, retry_after, cause=cause, code=name)
            if name in self._RETRYABLE:
                return SendResult(RETRY, detail, retry_after, code=name)
            return SendResult(FAIL, detail, code=name)
        except Exception as exc:  # grpc raises a few non-RpcError types (ValueError on a closed channel)
            if self._cancelled_for_fork:
                return self._fork_cancel_result()
            self._reconnect()
            return SendResult(RETRY, f"{type(exc).__name__}: {exc}", cause=UNREACHABLE)
        rejected, message = _partial(self.signal, response if isinstance(response, bytes) else b"")
        return SendResult(OK, message, rejected=rejected, code="OK")

    @staticmethod
    def _fork_cancel_result() -> SendResult:
        # The request may have reached the collector before the cancel: resending it is a possible duplicate,
        # which the unanswered-request path counts as such (STATS.resent) and bounds.
        return SendResult(RETRY, "gRPC request cancelled so that the process could fork safely", cause=NO_ANSWER)

    def _hold_for_fork(self, wait: float) -> bool:
        """Before fork: take the gate within ``wait`` seconds (False: a request is still in gRPC)."""
        self._fork_holder = threading.get_ident()
        if self._gate.acquire(timeout=max(0.0, wait)):
            self._held_for_fork.append(self._gate)
            return True
        return False

    def _cancel_for_fork(self) -> None:
        """Before fork, the request in flight did not finish in time: cancel it (the batch is retried)."""
        self._cancelled_for_fork = True
        self.abort()

    def _release_after_fork(self) -> None:
        self._fork_holder = None
        held, self._held_for_fork = self._held_for_fork, []
        for lock in held:
            lock.release()

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
        # Bounded: the before-fork hook holds this lock only for the instant of a fork.
        if not self._probe_lock.acquire(timeout=1.0):
            return True
        try:
            # grpcio's connectivity state without subscribing a polling thread (2 = READY); if this private
            # accessor ever goes away, the answer is the safe one (True: delivery unknown).
            return int(channel._channel.check_connectivity_state(False)) == 2
        except Exception:
            return True
        finally:
            self._probe_lock.release()

    def reset_after_fork(self) -> None:
        # The inherited channel belongs to the parent's gRPC core state: forget it, do not close it.
        self._lock = threading.Lock()
        self._gate = threading.Lock()
        self._probe_lock = threading.Lock()
        self._held_for_fork = []
        self._fork_holder = None
        self._cancelled_for_fork = False
        self._channel = None
        self._call = None

    def close(self) -> None:
        self._reconnect()


def _import_response_type(signal: str) -> None:
    """Import the ``Export*ServiceResponse`` type :func:`_partial` parses for ``signal``."""
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    elif signal == "metrics":
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2  # noqa: F401
    else:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2  # noqa: F401


FORK_WAIT_FOR_REQUEST = 0.1
"""Seconds a ``fork()`` waits for otelkit's gRPC requests in flight to finish before cancelling them. A request
to a healthy collector takes milliseconds; a hung one could take the whole export timeout, which no fork
(a gunicorn master starting a worker) should wait for: it is cancelled and its batch retried instead."""
FORK_WAIT_FOR_CANCEL = 1.0
"""Seconds a ``fork()`` then waits for the cancelled requests to leave gRPC (normally at once; the bound only
covers an export thread starved of CPU). Past it the fork goes ahead, as it would without otelkit."""

_GRPC_SENDERS: weakref.WeakSet[GrpcSender] = weakref.WeakSet()
_grpc_fork_hooks_installed = False  # inherited by children, like the hooks themselves


def _install_grpc_fork_hooks() -> None:
    """Register the gRPC fork guard once per process (its children inherit both the hooks and the flag)."""
    global _grpc_fork_hooks_installed
    if _grpc_fork_hooks_installed:
        return
    _grpc_fork_hooks_installed = True
    _fork.at_fork(before=_grpc_before_fork, after_in_parent=_grpc_after_fork_in_parent,
                  after_in_child=_grpc_after_fork_in_child)


def _grpc_before_fork() -> None:
    """No otelkit thread may be inside gRPC at the instant of fork(): gRPC then skips its own fork handlers
    ("Other threads are currently calling into gRPC, skipping fork() handlers") and the forking process
    could crash (a gunicorn --preload master died with SIGSEGV). Each sender's gate is taken, so new
    requests wait until after the fork; a request that does not finish in time is cancelled and retried."""
    try:
        senders = list(_GRPC_SENDERS)
        deadline = time.monotonic() + FORK_WAIT_FOR_REQUEST
        busy = [s for s in senders if not s._hold_for_fork(deadline - time.monotonic())]
        for sender in busy:
            sender._cancel_for_fork()
        deadline = time.monotonic() + FORK_WAIT_FOR_CANCEL
        for sender in busy:
            if not sender._hold_for_fork(deadline - time.monotonic()):
                logger.debug("otelkit: a gRPC request to %s was still running at fork()", sender.target)
        for sender in senders:
            if sender._probe_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                sender._held_for_fork.append(sender._probe_lock)
    except Exception:  # a fork must never fail because of telemetry
        logger.debug("otelkit: preparing gRPC senders for fork failed", exc_info=True)


def _grpc_after_fork_in_parent() -> None:
    for sender in list(_GRPC_SENDERS):
        try:
            sender._release_after_fork()
        except Exception:
            logger.debug("otelkit: releasing a gRPC sender after fork failed", exc_info=True)


def _grpc_after_fork_in_child() -> None:
    # The locks held for the fork belong to the parent's threads' state: the child starts with fresh ones
    # (reset_after_fork, also called by otelkit._fork, is idempotent).
    for sender in list(_GRPC_SENDERS):
        try:
            sender.reset_after_fork()
        except Exception:
            logger.debug("otelkit: resetting a gRPC sender after fork failed", exc_info=True)


class HttpSender(Sender):
    """OTLP/HTTP with protobuf bodies over one kept-alive ``http.client`` connection.

    ``requests`` costs several milliseconds of GIL-holding Python per request, which the application
    pays for; ``http.client`` is a fraction of that. Response bodies are read up to 4 MiB.

    ``proxy`` (the URL :func:`otelkit._export.factory.make_sender` finds in ``HTTPS_PROXY`` / ``HTTP_PROXY``
    for the endpoint, honouring ``NO_PROXY``): an ``https://`` endpoint is tunnelled with ``CONNECT``; an
    ``http://`` one is forwarded (absolute request URI). User info in the proxy URL becomes
    ``Proxy-Authorization: Basic``. TLS inside a TLS connection to an ``https://`` proxy is not supported:
    such a sender fails each request with a message saying so.
    """

    def __init__(self, signal: str, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 compression: str = "none", certificate: str | None = None, client_key: str | None = None,
                 client_certificate: str | None = None, proxy: str | None = None) -> None:
        import encodings.idna  # noqa: F401 - see below
        import http.client  # noqa: F401
        import ssl

        # The first request imports http.client and the idna codec. When that first request is the flush at
        # exit (a gunicorn worker's spans, a short script's), the import can fail there ("LookupError: unknown
        # encoding: idna", seen under load) and the batch is lost; imported here, sending imports nothing.
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
        self._proxy: tuple[str, int, bool] | None = None
        self._proxy_headers: dict[str, str] = {}
        self._unsupported = ""
        if proxy:
            self._use_proxy(proxy, parts)
        self._conn: Any = None
        self._reused = False
        self._sent = False

    def _use_proxy(self, proxy: str, endpoint: Any) -> None:
        import base64
        from urllib.parse import unquote

        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        tls = parts.scheme == "https"
        self._proxy = (parts.hostname or "localhost", parts.port or (443 if tls else 80), tls)
        self.target = f"{self.target} (via proxy {mask_url(proxy)})"
        if parts.username or parts.password:
            user = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            self._proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        if parts.scheme not in ("http", "https"):
            self._unsupported = f"proxy {mask_url(proxy)}: only http:// and https:// proxies are supported"
        elif self._https and tls:
            self._unsupported = (f"proxy {mask_url(proxy)}: TLS to the collector inside TLS to the proxy is not "
                                 "supported; give the proxy as http://")
        elif not self._https:
            # Forwarded by the proxy: the request line carries the absolute URI (http.client takes the Host
            # header from it), the proxy's credentials go with each request.
            self._path = urlunsplit(("http", endpoint.netloc.rsplit("@", 1)[-1], endpoint.path or "/",
                                     endpoint.query, ""))
            self._headers.update(self._proxy_headers)

    def _connection(self, timeout: float) -> Any:
        import http.client

        if self._conn is None:
            proxy = self._proxy
            if proxy is None:
                if self._https:
                    self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                             context=self._ssl)
                else:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            elif self._https:  # CONNECT tunnel to the collector, TLS inside it end to end
                self._conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout, context=self._ssl)
                self._conn.set_tunnel(self._host, self._port, headers=self._proxy_headers)
            elif proxy[2]:
                import ssl

                self._conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=timeout,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(proxy[0], proxy[1], timeout=timeout)
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

        if self._unsupported:
            return SendResult(FAIL, self._unsupported)
        if self._gzip:
            import gzip  # here: most senders never compress, and init() need not pay its import

            body = gzip.compress(payload, compresslevel=1)
        else:
            body = payload
        deadline = time.monotonic() + max(timeout, 0.001)
        for attempt in (1, 2):
            try:
                status, content, retry_after = self._exchange(body, max(deadline - time.monotonic(), 0.001))
                break
            except ssl.SSLError as exc:
                self.close()
                return SendResult(FAIL, f"TLS error: {exc}", cause=TLS)
            except (OSError, http.client.HTTPException) as exc:
                reused = self._reused
                sent = self._sent
                connected = sent or getattr(self._conn, "sock", None) is not None
                self.close()
                # A kept-alive connection the server closed in between: retry once at once, on a new one.
                if attempt == 1 and reused and not isinstance(exc, TimeoutError) and deadline > time.monotonic():
                    continue
                text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if isinstance(exc, TimeoutError) and sent:
                    return SendResult(RETRY, f"no answer within {timeout:.1f}s ({text})", cause=NO_ANSWER,
                                      timed_out=True)
                return SendResult(RETRY, text, cause=UNREACHABLE if not sent else "",
                                  timed_out=isinstance(exc, TimeoutError) and connected)
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
            return SendResult(OK, "response larger than 4 MiB ignored", code=str(status))
        rejected, message = _partial(signal, content)
        return SendResult(OK, message, rejected=rejected, code=str(status))
    detail = f"HTTP {status}" + (f": {text}" if (text := _error_text(content)) else "")
    if status in _HTTP_RETRYABLE:
        # 429/503: the collector refuses under load; 502/504: a proxy in front of it could not get an answer.
        cause = LOAD if status in (429, 503) else ""
        return SendResult(RETRY, detail, _retry_after(retry_after), cause=cause, code=str(status))
    if status == 413:
        return SendResult(TOO_LARGE, detail, code=str(status))
    return SendResult(FAIL, detail, code=str(status))


def _error_text(body: bytes) -> str:
    """The reason in an OTLP/HTTP error body (a ``google.rpc.Status`` message, or text), at most 200 chars."""
    if not body:
        return ""
    text = ""
    try:
        from google.rpc.status_pb2 import Status

        status = Status()
        status.ParseFromString(body)
        text = status.message
    except Exception:
        text = ""
    if not text or not " ".join(text.split()).isprintable():
        text = body[:400].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    if not text.isprintable():
        return ""
    return text if len(text) <= 200 else text[:197] + "..."


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
