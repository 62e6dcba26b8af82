"""Every metric, attribute and baggage name otelkit writes, in one place.

Seed 003: a writer and a reader that disagreed on a metric namespace broke
alerting. Code, dashboards, alert rules and their tests all read these names
(``tests/stack`` checks each PromQL query against :data:`ALL_METRICS`), so a
rename is one edit here and a red test everywhere else.

Prometheus names follow the OTLP→Prometheus translation: dots become
underscores and the unit is appended (``s`` → ``_seconds``; counters add
``_total``). :func:`prometheus_name` applies that rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

InstrumentKind = Literal["counter", "histogram", "updowncounter", "gauge", "observable_gauge", "observable_counter",
                         "observable_updowncounter"]


@dataclass(frozen=True)
class MetricName:
    """A metric otelkit emits: OTel name, instrument kind, UCUM unit, description."""

    name: str
    kind: InstrumentKind
    unit: str
    description: str

    @property
    def prometheus(self) -> str:
        """The name Prometheus stores this metric under (see :func:`prometheus_name`)."""
        return prometheus_name(self)


_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}


def prometheus_name(metric: MetricName) -> str:
    """Translate an OTel metric name the way the collector's Prometheus exporters do.

    ``{message}``-style annotation units add nothing; counters get ``_total``.
    """
    base = metric.name.replace(".", "_").replace("-", "_")
    suffix = "" if metric.unit.startswith("{") else _UNIT_SUFFIX.get(metric.unit, metric.unit)
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    if metric.kind in ("counter", "observable_counter"):
        base += "_total"
    return base


# --- Baggage and attribute keys -------------------------------------------------------------------

CORRELATION_BAGGAGE_KEY = "correlation_id"
"""Baggage key carrying the business correlation ID between processes."""
CORRELATION_ATTRIBUTE = "otelkit.correlation_id"
"""Span and log attribute holding the correlation ID."""
SENT_AT_HEADER = "otelkit-sent-at"
"""Carrier key holding the emission time, epoch milliseconds."""
CORRELATION_HEADER = "otelkit-correlation-id"
"""Carrier key holding the correlation ID in clear (also in baggage) for non-OTel readers."""
ATTEMPT_HEADER = "otelkit-attempt"
"""Carrier key holding the delivery attempt (1-based) when the emitter re-publishes for a retry."""
ENVELOPE_MARKER = "_otelkit_envelope"
"""First key of the JSON envelope otelkit wraps payload-only messages in (Redis lists, pub/sub, sets)."""

# Span attributes (semantic conventions, messaging). Span-only: IDs never go on metrics.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CONVERSATION_ID = "messaging.message.conversation_id"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
MESSAGING_CONSUMER_GROUP = "messaging.consumer.group.name"
ERROR_TYPE = "error.type"
# otelkit span attributes for what the conventions do not cover.
ATTR_ATTEMPT = "otelkit.message.attempt"
"""Delivery attempt, 1-based (span only)."""
ATTR_LINKS_DROPPED = "otelkit.messaging.links.dropped"
"""Batch span: message contexts not linked because of the link cap (span only)."""

# --- Messaging (semantic conventions) -------------------------------------------------------------

MESSAGING_SENT = MetricName("messaging.client.sent.messages", "counter", "{message}",
                            "Messages a producer attempted to send.")
MESSAGING_CONSUMED = MetricName("messaging.client.consumed.messages", "counter", "{message}",
                                "Messages a consumer received.")
MESSAGING_OPERATION_DURATION = MetricName("messaging.client.operation.duration", "histogram", "s",
                                          "Duration of a messaging client operation (send, receive, settle).")
MESSAGING_PROCESS_DURATION = MetricName("messaging.process.duration", "histogram", "s",
                                        "Duration of processing one message or batch.")

# --- Messaging (otelkit, where the conventions have nothing yet) ----------------------------------

MESSAGE_END_TO_END = MetricName("otelkit.messaging.message.end_to_end.duration", "histogram", "s",
                                "Time from emission to the end of processing.")
MESSAGE_TIME_IN_QUEUE = MetricName("otelkit.messaging.message.time_in_queue", "histogram", "s",
                                   "Time from emission to the start of processing.")
MESSAGES_SETTLED = MetricName("otelkit.messaging.settled.messages", "counter", "{message}",
                              "Messages settled, by outcome (ack, retry, dead_letter, drop).")
QUEUE_LENGTH = MetricName("otelkit.messaging.queue.length", "observable_gauge", "{message}",
                          "Messages waiting in a queue, sampled by a probe (LLEN, XLEN, SCARD...).")
BATCH_SIZE = MetricName("otelkit.messaging.batch.size", "histogram", "{message}",
                        "Messages per processed batch.")

# --- Pipeline stages ------------------------------------------------------------------------------

STAGE_DURATION = MetricName("otelkit.pipeline.stage.duration", "histogram", "s",
                            "Duration of one pipeline stage execution, by stage, source, outcome and variant.")
STAGE_ITEMS = MetricName("otelkit.pipeline.processed.items", "counter", "{item}",
                         "Items handled by a pipeline stage, by stage, source, outcome and variant.")
DISCOVERED_ITEMS = MetricName("otelkit.pipeline.discovered.items", "counter", "{item}",
                              "Items discovered (entered the pipeline), by source.")

# --- Client instrumentation (semantic conventions) ------------------------------------------------

HTTP_CLIENT_DURATION = MetricName("http.client.request.duration", "histogram", "s",
                                  "Duration of outgoing HTTP requests.")
HTTP_SERVER_DURATION = MetricName("http.server.request.duration", "histogram", "s",
                                  "Duration of incoming HTTP requests (FastAPI, Starlette, Flask, Django), by "
                                  "http.route, http.request.method and http.response.status_code.")
DB_CLIENT_DURATION = MetricName("db.client.operation.duration", "histogram", "s",
                                "Duration of database client operations (PostgreSQL, Redis).")
DB_RETURNED_ROWS = MetricName("db.client.response.returned_rows", "histogram", "{row}",
                              "Rows returned or affected per PostgreSQL statement (cursor.rowcount).")
DB_TRANSACTIONS = MetricName("otelkit.db.client.transactions", "counter", "{transaction}",
                             "Database transactions ended, by outcome (commit, rollback).")

# --- otelkit's own health -------------------------------------------------------------------------

TELEMETRY_DROPPED = MetricName("otelkit.telemetry.dropped", "counter", "{item}",
                               "Spans, metric points and log records dropped, by signal and reason.")
TELEMETRY_EXPORTED = MetricName("otelkit.telemetry.exported", "counter", "{item}",
                                "Spans, metric points and log records exported, by signal.")
TELEMETRY_QUEUE_SIZE = MetricName("otelkit.telemetry.queue.size", "observable_gauge", "{item}",
                                  "Items waiting in otelkit's export queues, by signal.")
TELEMETRY_METRIC_OVERFLOWS = MetricName("otelkit.telemetry.metric.overflows", "counter", "{measurement}",
                                        "Measurements sent to a metric stream's otel.metric.overflow series "
                                        "(cardinality limit reached), by stream name.")

ALL_METRICS: tuple[MetricName, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricName))
"""Every metric otelkit can emit itself (instrumentation libraries and runtime metrics aside)."""

# Label (attribute) keys used on the metrics above. Low cardinality only: never IDs.
ATTR_STAGE = "otelkit.pipeline.stage"
ATTR_SOURCE = "otelkit.pipeline.source"
ATTR_VARIANT = "otelkit.pipeline.variant"
ATTR_OUTCOME = "otelkit.outcome"
"""Messaging: ack | retry | dead_letter | drop. Stages: success | failure."""
ATTR_OUTCOME_REASON = "otelkit.outcome.reason"
"""Why a message was retried or dead-lettered (span only)."""
ATTR_QUEUE_STATE = "otelkit.messaging.queue.state"
"""Queue-length label: what a probe counts (ready, in_flight, dead_letter...)."""
ATTR_ERROR_CLASS = "otelkit.error.class"
"""transient | permanent, from otelkit.pipeline's failure classifier."""
ATTR_SIGNAL = "otelkit.signal"
ATTR_METRIC_NAME = "otelkit.metric.name"  # a metric stream's name (bounded: one value per stream)
ATTR_REASON = "otelkit.reason"
