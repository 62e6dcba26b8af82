"""The export path (exporters, batch processors, metric readers) built from :class:`~otelkit._config.Settings`.

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
  deadline are counted per signal and reason in :mod:`otelkit._export.stats`, exported as otelkit's own
  metrics, summarised in rate-limited ``otelkit`` warnings and in the shutdown report.
* **Fork-aware.** After ``fork()`` the child drops the parent's queue and the spans the parent had
  open, reconnects (new gRPC channel / HTTP session) and restarts its worker (:mod:`otelkit._fork`).

Defaults otelkit recommends (the ``BatchSettings`` defaults in ``_config``): queue 8192 (the spec's
2048 drops spans under an ordinary burst: ``perf-baseline.md``), span batches of 2048 (log records: 512;
each request costs the export thread a GIL hand-back on top of the round trip, so under load 512-span
requests halve the throughput: ``benchmarks/RESULTS.md``), schedule delay 1 s.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelkit._export.batching import (
        OtelkitLogProcessor,
        OtelkitSpanProcessor,
        ScrubbingLogProcessor,
        ScrubbingSpanProcessor,
        make_log_processor,
        make_span_processor,
        set_shutdown_deadline,
    )
    from otelkit._export.factory import (
        Destination,
        build_log_processors,
        build_metric_readers,
        build_span_processors,
        describe_destinations,
        make_sender,
        make_spool,
        probe_local_collector,
        resolve_exporters,
        scrubbed_user_processor,
        sender_for,
    )
    from otelkit._export.lifecycle import abandon_stuck_metric_exporters, after_fork_in_child, flush_all, live_pipelines
    from otelkit._export.metrics import OtlpMetricExporter, silence_summaries
    from otelkit._export.transport import (
        FAIL,
        LOAD,
        NO_ANSWER,
        OK,
        RETRY,
        TOO_LARGE,
        UNANSWERED,
        UNREACHABLE,
        GrpcSender,
        HttpSender,
        Sender,
        SendResult,
        mask_url,
    )

# Names load on first use (PEP 562): ``import otelkit.pipeline`` reaches ``otelkit._export.stats`` through this
# package, and must not pay for the transports, batching and metric readers it does not use.
_LAZY: dict[str, str] = {
    "Destination": "otelkit._export.factory",
    "FAIL": "otelkit._export.transport",
    "GrpcSender": "otelkit._export.transport",
    "HttpSender": "otelkit._export.transport",
    "LOAD": "otelkit._export.transport",
    "NO_ANSWER": "otelkit._export.transport",
    "OK": "otelkit._export.transport",
    "OtelkitLogProcessor": "otelkit._export.batching",
    "OtelkitSpanProcessor": "otelkit._export.batching",
    "OtlpMetricExporter": "otelkit._export.metrics",
    "RETRY": "otelkit._export.transport",
    "ScrubbingLogProcessor": "otelkit._export.batching",
    "ScrubbingSpanProcessor": "otelkit._export.batching",
    "SendResult": "otelkit._export.transport",
    "Sender": "otelkit._export.transport",
    "TOO_LARGE": "otelkit._export.transport",
    "UNANSWERED": "otelkit._export.transport",
    "UNREACHABLE": "otelkit._export.transport",
    "abandon_stuck_metric_exporters": "otelkit._export.lifecycle",
    "after_fork_in_child": "otelkit._export.lifecycle",
    "build_log_processors": "otelkit._export.factory",
    "build_metric_readers": "otelkit._export.factory",
    "build_span_processors": "otelkit._export.factory",
    "describe_destinations": "otelkit._export.factory",
    "flush_all": "otelkit._export.lifecycle",
    "live_pipelines": "otelkit._export.lifecycle",
    "make_log_processor": "otelkit._export.batching",
    "make_sender": "otelkit._export.factory",
    "make_span_processor": "otelkit._export.batching",
    "make_spool": "otelkit._export.factory",
    "mask_url": "otelkit._export.transport",
    "probe_local_collector": "otelkit._export.factory",
    "resolve_exporters": "otelkit._export.factory",
    "scrubbed_user_processor": "otelkit._export.factory",
    "sender_for": "otelkit._export.factory",
    "set_shutdown_deadline": "otelkit._export.batching",
    "silence_summaries": "otelkit._export.metrics",
}
_SUBMODULES = frozenset(("batching", "encoding", "factory", "lifecycle", "metrics", "spool", "stats", "transport"))


__all__ = [
    "FAIL",
    "LOAD",
    "NO_ANSWER",
    "OK",
    "RETRY",
    "TOO_LARGE",
    "UNANSWERED",
    "UNREACHABLE",
    "Destination",
    "GrpcSender",
    "HttpSender",
    "OtelkitLogProcessor",
    "OtelkitSpanProcessor",
    "OtlpMetricExporter",
    "ScrubbingLogProcessor",
    "ScrubbingSpanProcessor",
    "SendResult",
    "Sender",
    "abandon_stuck_metric_exporters",
    "after_fork_in_child",
    "build_log_processors",
    "build_metric_readers",
    "build_span_processors",
    "describe_destinations",
    "flush_all",
    "live_pipelines",
    "make_log_processor",
    "make_sender",
    "make_span_processor",
    "make_spool",
    "mask_url",
    "probe_local_collector",
    "resolve_exporters",
    "scrubbed_user_processor",
    "sender_for",
    "set_shutdown_deadline",
    "silence_summaries",
]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"otelkit._export.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelkit._export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})
