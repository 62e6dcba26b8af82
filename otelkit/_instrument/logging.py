"""Log correlation is otelkit's own (``otelkit._logs``), not the contrib logging instrumentation.

The contrib ``LoggingInstrumentor`` replaces the log-record factory to add ``otelTraceID``-style
fields, which conflicts with ``otelkit._logs`` (one record factory adding ``trace_id``,
``span_id`` and ``correlation_id``). This module only reports the status; it never enables the
contrib instrumentation, and says so when the application enabled it itself.
"""

from __future__ import annotations

import sys

from otelkit._instrument import _common
from otelkit._status import IntegrationStatus

NAME = "logging"


def instrument(ctx: _common.Context) -> IntegrationStatus:
    disabled = {n.strip().lower() for n in ctx.settings.disabled_instrumentations}
    note = ""
    if "logging" in disabled:
        note = ("; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=logging only concerns the contrib instrumentation, "
                "which otelkit never enables: switch correlation off with OTELKIT_LOG_CORRELATION=false")
    if not ctx.settings.log_correlation:
        return IntegrationStatus(NAME, "disabled", "OTELKIT_LOG_CORRELATION=false")
    reason = "handled by otelkit._logs: trace_id, span_id, correlation_id on every record" + note
    # Only the application can have enabled the contrib instrumentation, and it must have imported it to do
    # so: when it is not in sys.modules the answer is "no", without importing it (~20 ms) to ask.
    contrib = sys.modules.get("opentelemetry.instrumentation.logging")
    instrumentor = getattr(contrib, "LoggingInstrumentor", None)
    try:
        if instrumentor is not None and instrumentor().is_instrumented_by_opentelemetry:
            reason += "; the contrib LoggingInstrumentor was also enabled by the application"
    except Exception:  # a status line must never fail init()
        pass
    return IntegrationStatus(NAME, "enabled", reason)


def uninstrument() -> None:
    return None
