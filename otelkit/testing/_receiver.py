"""A real OTLP receiver in the test process, and the real ``rotel`` collector in front of it.

Use these to test what otelkit (or any OTLP exporter) actually puts on the wire.

``OtlpReceiver``
    Speaks OTLP/gRPC (grpcio + the opentelemetry-proto service stubs) and
    OTLP/HTTP (protobuf, gzip or plain; JSON accepted too) on free 127.0.0.1
    ports, and keeps every decoded ``Export*ServiceRequest``::

        with OtlpReceiver() as receiver:
            exporter = OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
            # or OTLPSpanExporter(endpoint=receiver.http_endpoint + "/v1/traces") for HTTP
            ...
            spans = receiver.wait_for_spans(3)          # polls with a deadline, no sleeps
            assert spans[0].name == "GET /"
            receiver.wait_for(lambda: receiver.logs(body="done"), timeout=5)

    Flattened views (each item a small frozen dataclass; ``item["name"]`` works too):

    * ``spans(name=None)`` -> ``ReceivedSpan``: name, kind ("INTERNAL", "SERVER", ...),
      trace_id / span_id / parent_span_id (lower-case hex; parent ``None`` for a root),
      attributes, resource, scope, links (``ReceivedLink``), events (``ReceivedEvent``),
      status_code ("UNSET" / "OK" / "ERROR"), status_message, start/end time in ns.
    * ``metrics(name=None)`` -> ``ReceivedPoint``: one per data point: name, unit, type
      ("sum", "gauge", "histogram", "exponential_histogram", "summary"), value (sum/gauge),
      count / sum / bucket_counts / explicit_bounds (histograms), attributes, resource,
      is_monotonic, temporality, start/time in ns.
    * ``logs(body=None)`` -> ``ReceivedLog``: body, severity_text, severity_number,
      trace_id / span_id (hex or ``None``), attributes, resource, scope, event_name, time.
    * ``requests`` (raw decoded protobuf requests), ``attempts`` (every request that reached
      the receiver, including the ones a fault answered; see ``Attempt``), ``grpc_calls(signal)``
      (gRPC calls counted on arrival, also those the transport refused for their size), ``clear()``.

    Faults, switchable at any time (``times=N`` limits a fault to the next N requests,
    after which the receiver answers normally again):

    * ``fail(http_status=503, grpc_code="UNAVAILABLE", retry_after=None, times=None)``;
      e.g. ``fail(429, "RESOURCE_EXHAUSTED")`` (HTTP 429 / gRPC RESOURCE_EXHAUSTED without RetryInfo).
    * ``hang(times=None)``: accept the request and never answer (until ``heal()``/``stop()``).
    * ``delay(seconds, times=None)``: answer normally, late.
    * ``answer_late(seconds, times=None)``: store the request at once, answer ``seconds`` later (an
      overloaded collector or a long GC pause: a client that gave up meanwhile and resends duplicates).
    * ``reject_partially(count, message="rejected by test")``: 200 with ``partial_success``.
    * ``oversized_response(size)``: HTTP 200 with a ``size``-byte body (response-size caps).
    * ``heal()``: back to normal.
    * ``stop()`` then ``start()`` again: the same ports go dead and come back (restart tests).

    Options: ``OtlpReceiver(grpc_max_message_bytes=..., http_max_body_bytes=...)`` for real
    "too large" answers (RESOURCE_EXHAUSTED / 413); ``tls_cert=``, ``tls_key=`` (PEM files) serve
    TLS on both protocols (endpoints become ``https://localhost:PORT``), ``client_ca=`` adds mTLS.

``BlackholeServer``
    Accepts TCP connections and never reads or answers: the "collector hung" fault at the
    transport level (no HTTP/2 handshake completes). ``refused_endpoint()`` returns a
    ``127.0.0.1:port`` with nothing listening: the "collector refused" fault.

``RotelCollector``
    Runs the real ``rotel-agent`` binary (shipped by the ``rotel`` PyPI package) with OTLP
    gRPC and HTTP receivers on free ports, exporting over OTLP/gRPC to an ``OtlpReceiver``.
    ``grpc_endpoint`` (``http://127.0.0.1:P``) and ``http_endpoint`` (``http://127.0.0.1:Q``,
    append ``/v1/traces`` etc. for per-signal HTTP exporters) are what the code under test
    points at; ``stop()`` / ``start()`` restart it on the SAME ports.

pytest fixtures (function-scoped, defined in the ``otelkit`` pytest plugin,
:mod:`otelkit.testing._plugin`, so that this module does not need pytest):

* ``otelkit_otlp_receiver`` -> a started ``OtlpReceiver``.
* ``otelkit_collector`` -> a started ``RotelCollector``; ``otelkit_collector.receiver`` is its ``OtlpReceiver``.
  Skips when the ``rotel`` package is not installed (fails under ``CI=true``).
"""

from __future__ import annotations

import gzip
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

__all__ = [
    "Attempt",
    "BlackholeServer",
    "OtlpReceiver",
    "ReceivedEvent",
    "ReceivedLink",
    "ReceivedLog",
    "ReceivedPoint",
    "ReceivedSpan",
    "RotelCollector",
    "find_rotel_agent",
    "free_port",
    "refused_endpoint",
]

T = TypeVar("T")

_SIGNALS = ("traces", "metrics", "logs")
# A hung request is released at stop() at the latest; this bounds it anyway so a forgotten
# fault can never keep a server thread alive for the rest of the test session.
_HANG_LIMIT = 120.0
_GRPC_MAX_MESSAGE = 4 * 1024 * 1024  # the collector's default receive limit
_HTTP_MAX_BODY = 64 * 1024 * 1024


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listens on right now.

    Bound together: ``free_port()`` twice can return the same port once the first socket is closed (seen in
    CI: a collector given one port for both of its receivers could not start).
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def refused_endpoint() -> str:
    """``127.0.0.1:port`` with nothing listening: connecting is refused."""
    return f"127.0.0.1:{free_port()}"


# --------------------------------------------------------------------------------------------------
# Flattened views


class _Indexable:
    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True)
class ReceivedEvent(_Indexable):
    name: str
    attributes: dict[str, Any]
    time_unix_nano: int


@dataclass(frozen=True)
class ReceivedLink(_Indexable):
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan(_Indexable):
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    links: list[ReceivedLink]
    events: list[ReceivedEvent]
    status_code: str
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int

    @property
    def status(self) -> str:
        """Alias of ``status_code``."""
        return self.status_code


@dataclass(frozen=True)
class ReceivedPoint(_Indexable):
    name: str
    unit: str
    description: str
    type: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    is_monotonic: bool | None = None
    temporality: str | None = None
    start_time_unix_nano: int = 0
    time_unix_nano: int = 0


@dataclass(frozen=True)
class ReceivedLog(_Indexable):
    body: Any
    severity_text: str
    severity_number: int
    trace_id: str | None
    span_id: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    event_name: str
    time_unix_nano: int


@dataclass(frozen=True)
class Attempt(_Indexable):
    """One request that reached the receiver: protocol ("grpc"/"http"), signal, what it answered
    ("ok", "partial", "status:503", "grpc:UNAVAILABLE", "hang", "bad_request"), its item count, and
    ``at``: when it arrived (``time.monotonic()``), e.g. to check that a retry waited for its hint."""

    protocol: str
    signal: str
    outcome: str
    items: int
    at: float = field(default_factory=time.monotonic, compare=False)


def _any_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(kvs: Sequence[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in kvs}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


_SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_TEMPORALITY = {0: None, 1: "delta", 2: "cumulative"}


def _count_items(signal: str, request: Message) -> int:
    total = 0
    if signal == "traces":
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                total += len(ss.spans)
    elif signal == "logs":
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                total += len(sl.log_records)
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    if kind is not None:
                        total += len(getattr(metric, kind).data_points)
    return total


# --------------------------------------------------------------------------------------------------
# Fault state shared by the gRPC and HTTP front ends


@dataclass
class _Fault:
    kind: str = "ok"  # ok | fail | hang | delay | late | partial | bigresp
    http_status: int = 503
    grpc_code: str = "UNAVAILABLE"
    retry_after: float | None = None
    seconds: float = 0.0
    rejected: int = 0
    message: str = ""
    remaining: int | None = None  # None: until heal()


_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}


def _response(signal: str, rejected: int = 0, message: str = "") -> Message:
    if signal == "traces":
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if rejected or message:
            resp.partial_success.rejected_spans = rejected
            resp.partial_success.error_message = message
        return resp
    if signal == "metrics":
        mresp = metrics_service_pb2.ExportMetricsServiceResponse()
        if rejected or message:
            mresp.partial_success.rejected_data_points = rejected
            mresp.partial_success.error_message = message
        return mresp
    lresp = logs_service_pb2.ExportLogsServiceResponse()
    if rejected or message:
        lresp.partial_success.rejected_log_records = rejected
        lresp.partial_success.error_message = message
    return lresp


class OtlpReceiver:
    """In-process OTLP receiver (gRPC + HTTP/protobuf) on free 127.0.0.1 ports. See the module docstring."""

    def __init__(self, *, grpc_max_message_bytes: int = _GRPC_MAX_MESSAGE,
                 http_max_body_bytes: int = _HTTP_MAX_BODY, tls_cert: str | None = None, tls_key: str | None = None,
                 client_ca: str | None = None) -> None:
        """``grpc_max_message_bytes`` (default 4 MiB, the collector's) and ``http_max_body_bytes`` (answered
        with 413 above it) let tests provoke "request too large" for real.

        ``tls_cert``/``tls_key`` (PEM files) serve both protocols over TLS (endpoints become
        ``https://localhost:PORT``); ``client_ca`` also requires a client certificate signed by it (mTLS)."""
        self._tls = (tls_cert, tls_key, client_ca) if tls_cert and tls_key else None
        self._grpc_max = grpc_max_message_bytes
        self.http_max_body_bytes = http_max_body_bytes
        self._cond = threading.Condition()
        self._requests: list[tuple[str, Message]] = []
        self._attempts: list[Attempt] = []
        self._fault = _Fault()
        self._released = threading.Event()
        self._grpc_calls: dict[str, int] = dict.fromkeys(_SIGNALS, 0)
        self._grpc_port = 0
        self._http_port = 0
        self._grpc_server: grpc.Server | None = None
        self._http_server: http.server.ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> OtlpReceiver:
        """Start both servers (again on the same ports after ``stop()``)."""
        if self._grpc_server is not None:
            return self
        self._released = threading.Event()
        self._start_grpc()
        self._start_http()
        return self

    def stop(self) -> None:
        """Stop both servers; hung requests are released first. Stored data is kept."""
        self._released.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=0).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_port(self) -> int:
        return self._grpc_port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def grpc_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` for gRPC exporters (use ``insecure=True``); ``https://localhost:PORT`` with TLS."""
        if self._tls:
            return f"https://localhost:{self._grpc_port}"
        return f"http://127.0.0.1:{self._grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` base (``https://localhost:PORT`` with TLS); append ``/v1/traces`` etc."""
        if self._tls:
            return f"https://localhost:{self._http_port}"
        return f"http://127.0.0.1:{self._http_port}"

    def _start_grpc(self) -> None:
        options = [("grpc.max_receive_message_length", self._grpc_max), ("grpc.so_reuseport", 0)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-receiver-grpc"),
                             options=options, interceptors=[_CallCounter(self)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)
        if self._tls:
            cert, key, client_ca = self._tls
            with open(cert, "rb") as fh:
                cert_pem = fh.read()
            with open(key, "rb") as fh:
                key_pem = fh.read()
            ca_pem = None
            if client_ca:
                with open(client_ca, "rb") as fh:
                    ca_pem = fh.read()
            credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem,
                                                      require_client_auth=bool(ca_pem))
            port = server.add_secure_port(f"127.0.0.1:{self._grpc_port}", credentials)
        else:
            port = server.add_insecure_port(f"127.0.0.1:{self._grpc_port}")
        if port == 0:
            raise OSError(f"OtlpReceiver: cannot bind gRPC port 127.0.0.1:{self._grpc_port}")
        self._grpc_port = port
        server.start()
        self._grpc_server = server

    def _start_http(self) -> None:
        receiver = self

        class Handler(_HttpHandler):
            owner = receiver

        deadline = time.monotonic() + 5
        while True:
            try:
                server = _QuietHTTPServer(("127.0.0.1", self._http_port), Handler)
                break
            except OSError:
                # Restart on the same port: a previous connection may still hold it for a moment.
                if self._http_port == 0 or time.monotonic() > deadline:
                    raise
                self._released.wait(0.05)
        server.daemon_threads = True
        if self._tls:
            import ssl

            cert, key, client_ca = self._tls
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            if client_ca:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(client_ca)
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._http_port = int(server.server_address[1])
        self._http_server = server
        self._http_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                             name="otlp-receiver-http", daemon=True)
        self._http_thread.start()

    # -- faults --------------------------------------------------------------------------------

    def fail(self, http_status: int = 503, grpc_code: str = "UNAVAILABLE", *, retry_after: float | None = None,
             times: int | None = None) -> None:
        """Answer HTTP ``http_status`` / gRPC ``grpc_code`` (a ``grpc.StatusCode`` name), optionally with
        ``Retry-After`` (HTTP) / RetryInfo (gRPC) of ``retry_after`` seconds."""
        grpc.StatusCode[grpc_code]  # validate early
        self._set_fault(_Fault("fail", http_status=http_status, grpc_code=grpc_code, retry_after=retry_after,
                               remaining=times))

    def hang(self, *, times: int | None = None) -> None:
        """Accept requests and never answer them (until ``heal()`` or ``stop()``)."""
        self._set_fault(_Fault("hang", remaining=times))

    def delay(self, seconds: float, *, times: int | None = None) -> None:
        """Answer normally after ``seconds``."""
        self._set_fault(_Fault("delay", seconds=seconds, remaining=times))

    def answer_late(self, seconds: float, *, times: int | None = None) -> None:
        """Store each request as it arrives, then answer it ``seconds`` later."""
        self._set_fault(_Fault("late", seconds=seconds, remaining=times))

    def reject_partially(self, count: int, message: str = "rejected by test", *, times: int | None = None) -> None:
        """Store the data but answer with ``partial_success`` rejecting ``count`` items."""
        self._set_fault(_Fault("partial", rejected=count, message=message, remaining=times))

    def oversized_response(self, size: int, *, times: int | None = None) -> None:
        """HTTP only: store the data but answer 200 with a ``size``-byte body (clients must cap what they read)."""
        self._set_fault(_Fault("bigresp", rejected=size, remaining=times))

    def heal(self) -> None:
        """Answer normally again and release hung requests."""
        self._set_fault(_Fault())
        self._released.set()
        self._released = threading.Event()

    def _set_fault(self, fault: _Fault) -> None:
        with self._cond:
            self._fault = fault

    def _take_fault(self) -> tuple[_Fault, threading.Event]:
        with self._cond:
            fault = self._fault
            if fault.kind != "ok" and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = _Fault()
            return fault, self._released

    # -- storage -------------------------------------------------------------------------------

    def _record(self, attempt: Attempt, signal: str, request: Message | None) -> None:
        with self._cond:
            self._attempts.append(attempt)
            if request is not None:
                self._requests.append((signal, request))
            self._cond.notify_all()

    def _handle(self, protocol: str, signal: str, request: Message) -> tuple[str, _Fault]:
        """Apply the current fault; returns (outcome, fault). Stores the request if it is accepted."""
        items = _count_items(signal, request)
        fault, released = self._take_fault()
        if fault.kind == "hang":
            self._record(Attempt(protocol, signal, "hang", items), signal, None)
            released.wait(_HANG_LIMIT)
            return "hang", fault
        if fault.kind == "delay":
            released.wait(fault.seconds)
        if fault.kind == "fail":
            outcome = f"status:{fault.http_status}" if protocol == "http" else f"grpc:{fault.grpc_code}"
            self._record(Attempt(protocol, signal, outcome, items), signal, None)
            return outcome, fault
        outcome = {"partial": "partial", "bigresp": "bigresp"}.get(fault.kind, "ok")
        self._record(Attempt(protocol, signal, outcome, items), signal, request)
        if fault.kind == "late":
            released.wait(fault.seconds)
        return outcome, fault

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._requests.clear()
            self._attempts.clear()
            self._grpc_calls = dict.fromkeys(_SIGNALS, 0)

    @property
    def requests(self) -> list[tuple[str, Message]]:
        """Every accepted request as (signal, decoded ``Export*ServiceRequest``)."""
        with self._cond:
            return list(self._requests)

    def grpc_calls(self, signal: str) -> int:
        """gRPC Export calls of ``signal`` that reached the server, counted before anything else runs:
        also those the transport refused (message over ``grpc_max_message_bytes``), which ``attempts`` misses."""
        with self._cond:
            return self._grpc_calls[signal]

    @property
    def attempts(self) -> list[Attempt]:
        """Every request that reached the receiver, accepted or answered by a fault."""
        with self._cond:
            return list(self._attempts)

    def _of(self, signal: str) -> list[Message]:
        with self._cond:
            return [r for s, r in self._requests if s == signal]

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        """Every span received, in arrival order (optionally only those named ``name``)."""
        out: list[ReceivedSpan] = []
        for request in self._of("traces"):
            for rs in request.resource_spans:
                resource = _attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        if name is not None and s.name != name:
                            continue
                        out.append(ReceivedSpan(
                            name=s.name, kind=_SPAN_KINDS.get(s.kind, str(s.kind)),
                            trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                            parent_span_id=_hex(s.parent_span_id),
                            attributes=_attributes(s.attributes), resource=resource, scope=ss.scope.name,
                            links=[ReceivedLink(lk.trace_id.hex(), lk.span_id.hex(), _attributes(lk.attributes))
                                   for lk in s.links],
                            events=[ReceivedEvent(e.name, _attributes(e.attributes), e.time_unix_nano)
                                    for e in s.events],
                            status_code=_STATUS_CODES.get(s.status.code, str(s.status.code)),
                            status_message=s.status.message,
                            start_time_unix_nano=s.start_time_unix_nano, end_time_unix_nano=s.end_time_unix_nano,
                        ))
        return out

    def metrics(self, name: str | None = None) -> list[ReceivedPoint]:
        """Every metric data point received, flattened (optionally only metric ``name``)."""
        out: list[ReceivedPoint] = []
        for request in self._of("metrics"):
            for rm in request.resource_metrics:
                resource = _attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if name is not None and m.name != name:
                            continue
                        kind = m.WhichOneof("data")
                        if kind is None:
                            continue
                        data = getattr(m, kind)
                        for p in data.data_points:
                            common: dict[str, Any] = {
                                "name": m.name, "unit": m.unit, "description": m.description, "type": kind,
                                "attributes": _attributes(p.attributes), "resource": resource,
                                "scope": sm.scope.name, "start_time_unix_nano": p.start_time_unix_nano,
                                "time_unix_nano": p.time_unix_nano,
                            }
                            if kind in ("sum", "gauge"):
                                value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                                out.append(ReceivedPoint(
                                    **common, value=value,
                                    is_monotonic=data.is_monotonic if kind == "sum" else None,
                                    temporality=_TEMPORALITY.get(data.aggregation_temporality)
                                    if kind == "sum" else None))
                            elif kind == "histogram":
                                out.append(ReceivedPoint(
                                    **common, count=p.count, sum=p.sum, bucket_counts=list(p.bucket_counts),
                                    explicit_bounds=list(p.explicit_bounds),
                                    temporality=_TEMPORALITY.get(data.aggregation_temporality)))
                            elif kind == "exponential_histogram":
                                out.append(ReceivedPoint(**common, count=p.count, sum=p.sum,
                                                         temporality=_TEMPORALITY.get(data.aggregation_temporality)))
                            else:
                                out.append(ReceivedPoint(**common, count=p.count, sum=p.sum))
        return out

    def metric_names(self) -> set[str]:
        """Names of every metric received."""
        return {p.name for p in self.metrics()}

    def logs(self, body: Any = None) -> list[ReceivedLog]:
        """Every log record received, in arrival order (optionally only those whose body equals ``body``)."""
        out: list[ReceivedLog] = []
        for request in self._of("logs"):
            for rl in request.resource_logs:
                resource = _attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        value = _any_value(r.body)
                        if body is not None and value != body:
                            continue
                        out.append(ReceivedLog(
                            body=value, severity_text=r.severity_text, severity_number=int(r.severity_number),
                            trace_id=_hex(r.trace_id), span_id=_hex(r.span_id),
                            attributes=_attributes(r.attributes), resource=resource, scope=sl.scope.name,
                            event_name=r.event_name, time_unix_nano=r.time_unix_nano or r.observed_time_unix_nano,
                        ))
        return out

    # -- waiting -------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, message: str = "") -> T:
        """Re-evaluate ``predicate`` whenever data arrives until it is truthy; return its value.

        Raises ``AssertionError`` (with a summary of what did arrive) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Woken by every stored request; the short cap re-checks predicates that depend on
                # something other than this receiver (a subprocess, a clock).
                self._cond.wait(min(remaining, 0.25))
        raise AssertionError(f"wait_for timed out after {timeout}s{': ' + message if message else ''}; "
                             f"received {self.summary()}")

    def wait_for_spans(self, count: int, timeout: float = 10.0, name: str | None = None) -> list[ReceivedSpan]:
        """Wait until at least ``count`` spans (named ``name`` if given) arrived; return them all."""
        return self.wait_for(lambda: (s if len(s := self.spans(name)) >= count else []), timeout,
                             f"expected {count} span(s)" + (f" named {name!r}" if name else ""))

    def wait_for_logs(self, count: int, timeout: float = 10.0) -> list[ReceivedLog]:
        """Wait until at least ``count`` log records arrived; return them all."""
        return self.wait_for(lambda: (r if len(r := self.logs()) >= count else []), timeout,
                             f"expected {count} log record(s)")

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[ReceivedPoint]:
        """Wait until a data point of metric ``name`` arrived; return its points."""
        return self.wait_for(lambda: self.metrics(name), timeout, f"expected metric {name!r}")

    def summary(self) -> str:
        """Counts per signal, for failure messages."""
        return (f"{len(self.spans())} spans, {len(self.metrics())} metric points, {len(self.logs())} log records "
                f"in {len(self.requests)} accepted of {len(self.attempts)} requests")

    def __repr__(self) -> str:
        return f"OtlpReceiver(grpc={self._grpc_port}, http={self._http_port}: {self.summary()})"


# --------------------------------------------------------------------------------------------------
# gRPC front end


class _GrpcBase:
    signal = ""

    def __init__(self, owner: OtlpReceiver) -> None:
        self._owner = owner

    def _export(self, request: Message, context: grpc.ServicerContext) -> Message:
        outcome, fault = self._owner._handle("grpc", self.signal, request)
        if outcome == "hang":
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver released a hung request")
        if outcome.startswith("grpc:"):
            if fault.retry_after is not None:
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", _retry_info(fault.retry_after)),))
            context.abort(grpc.StatusCode[fault.grpc_code], f"injected {fault.grpc_code}")
        if outcome == "partial":
            return _response(self.signal, fault.rejected, fault.message)
        return _response(self.signal)


_METHOD_SIGNALS = {"TraceService": "traces", "MetricsService": "metrics", "LogsService": "logs"}


class _CallCounter(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type stubs
    """Counts every Export call as it arrives, before the message is read (so size refusals count too)."""

    def __init__(self, owner: OtlpReceiver) -> None:
        self._owner = owner

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        service = str(getattr(handler_call_details, "method", "")).rsplit("/", 2)[-2:][0].rsplit(".", 1)[-1]
        signal = _METHOD_SIGNALS.get(service)
        if signal is not None:
            with self._owner._cond:
                self._owner._grpc_calls[signal] += 1
        return continuation(handler_call_details)


def _retry_info(seconds: float) -> bytes:
    from google.rpc import error_details_pb2

    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = int(seconds)
    info.retry_delay.nanos = int((seconds - int(seconds)) * 1e9)
    return bytes(info.SerializeToString())


class _TraceServicer(_GrpcBase, trace_service_pb2_grpc.TraceServiceServicer):
    signal = "traces"

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._export(request, context)


class _MetricsServicer(_GrpcBase, metrics_service_pb2_grpc.MetricsServiceServicer):
    signal = "metrics"

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._export(request, context)


class _LogsServicer(_GrpcBase, logs_service_pb2_grpc.LogsServiceServicer):
    signal = "logs"

    def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
        return self._export(request, context)


# --------------------------------------------------------------------------------------------------
# HTTP front end

_PATHS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a client that hangs up or fails the TLS handshake is part of the tests, not an error


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    owner: OtlpReceiver
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean

    def do_POST(self) -> None:
        signal = _PATHS.get(self.path.split("?", 1)[0])
        length = int(self.headers.get("Content-Length") or 0)
        if signal is None:
            self._reply(404, b"", "text/plain")
            return
        if length > self.owner.http_max_body_bytes:
            self.rfile.read(length)
            self.owner._record(Attempt("http", signal, "status:413", 0), signal, None)
            self._reply(413, b"request too large", "text/plain")
            return
        body = self.rfile.read(length)
        json_body = "json" in (self.headers.get("Content-Type") or "")
        try:
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = _REQUEST_TYPES[signal]()
            if json_body:
                json_format.Parse(body.decode(), request, ignore_unknown_fields=True)
            else:
                request.ParseFromString(body)
        except (DecodeError, OSError, ValueError, json_format.ParseError):
            self.owner._record(Attempt("http", signal, "bad_request", 0), signal, None)
            self._reply(400, b"cannot decode OTLP request", "text/plain")
            return
        outcome, fault = self.owner._handle("http", signal, request)
        if outcome == "hang":
            self.close_connection = True
            return
        if outcome.startswith("status:"):
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(max(0, round(fault.retry_after)))
            self._reply(fault.http_status, b"injected failure", "text/plain", headers)
            return
        if outcome == "bigresp":
            self._reply(200, b"\x00" * fault.rejected, "application/x-protobuf")
            return
        response = _response(signal, fault.rejected, fault.message) if outcome == "partial" else _response(signal)
        if json_body:
            self._reply(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._reply(200, response.SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (its own timeout): nothing to answer


# --------------------------------------------------------------------------------------------------
# Blackhole


class BlackholeServer:
    """Accepts TCP connections on 127.0.0.1 and never reads or answers ("collector hung")."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.port = 0
        self.accepted = 0

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` (prefix ``http://`` for URLs)."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> BlackholeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.settimeout(0.1)
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="blackhole", daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.accepted += 1
            self._conns.append(conn)  # held open, never read

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(2)
        for conn in self._conns:
            conn.close()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> BlackholeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# rotel


def find_rotel_agent() -> str | None:
    """Path of the ``rotel-agent`` binary shipped by the ``rotel`` package, or ``None``."""
    try:
        import rotel
    except ImportError:
        return shutil.which("rotel-agent")
    path = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
    return path if os.access(path, os.X_OK) else shutil.which("rotel-agent")


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RotelCollector:
    """The real ``rotel-agent`` collector: OTLP in (gRPC + HTTP), OTLP/gRPC out to an ``OtlpReceiver``."""

    def __init__(self, receiver: OtlpReceiver, *, binary: str | None = None, batch_timeout_ms: int = 50,
                 extra_args: Sequence[str] = ()) -> None:
        found = binary or find_rotel_agent()
        if found is None:
            raise FileNotFoundError("rotel-agent not found: pip install rotel")
        self.binary = found
        self.receiver = receiver
        self.grpc_port, self.http_port = free_ports(2)
        self._batch_timeout_ms = batch_timeout_ms
        self._extra = list(extra_args)
        self._dir = tempfile.mkdtemp(prefix="otelkit-rotel-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self._dir, "rotel.out")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _args(self) -> list[str]:
        return [
            self.binary, "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--pid-file", os.path.join(self._dir, "rotel.pid"),
            "--log-file", os.path.join(self._dir, "rotel.log"),
            "--batch-timeout", f"{self._batch_timeout_ms}ms",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", self.receiver.grpc_endpoint,
            "--otlp-exporter-protocol", "grpc",
            "--otlp-exporter-compression", "none",
            *self._extra,
        ]

    def start(self, timeout: float = 15.0) -> RotelCollector:
        """Start (or restart, on the same ports) and wait until both receivers accept connections."""
        if self.running:
            return self
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(self._args(), stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _listening(self.grpc_port) and _listening(self.http_port):
                return self
            try:
                self._proc.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        output = self.output()
        self.stop()
        raise RuntimeError(f"rotel-agent did not start listening on {self.grpc_port}/{self.http_port} "
                           f"within {timeout}s; output:\n{output[-2000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the collector (SIGTERM, then SIGKILL after ``timeout``); the ports go dead."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the collector (no flush of what it buffered)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.stop()

    def output(self) -> str:
        """rotel's stdout/stderr so far."""
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RotelCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
