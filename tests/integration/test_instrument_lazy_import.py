"""init() does not import the client/database libraries; each is instrumented when the application imports it."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = r"""
import json, sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otelkit import _instrument
from otelkit._config import resolve

LIBS = ["requests", "urllib3", "aiohttp", "psycopg", "psycopg_pool", "asyncpg", "sqlalchemy"]
exporter = InMemorySpanExporter()
tp = TracerProvider()
tp.add_span_processor(SimpleSpanProcessor(exporter))
statuses = _instrument.instrument_all(
    resolve(instrument=["requests", "urllib3", "aiohttp-client", "psycopg", "asyncpg", "sqlalchemy"],
            system_metrics=False), tp, MeterProvider(metric_readers=[InMemoryMetricReader()]))
after_init = [m for m in LIBS if m in sys.modules]
import sqlalchemy as sa  # the application imports it now: instrumented at this import
with sa.create_engine("sqlite://").connect() as conn:
    conn.execute(sa.text("SELECT 'OTK-CANARY-LAZY'"))
spans = [(s.name, s.instrumentation_scope.name, s.attributes.get("db.query.text"))
         for s in exporter.get_finished_spans()]
_instrument.uninstrument_all()
print(json.dumps({"after_init": after_init, "spans": spans,
                  "status": {s.name: [s.state, s.reason] for s in statuses}}))
"""


def test_libraries_are_instrumented_at_their_import_not_at_init() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["after_init"] == []
    for name in ("requests", "urllib3", "aiohttp-client", "psycopg", "asyncpg", "sqlalchemy"):
        state, reason = result["status"][name]
        assert state == "enabled" and "instrumented when the application imports" in reason, (name, reason)
    assert result["spans"] == [["SELECT", "otelkit.instrument.sqlalchemy", "SELECT ?"]]
