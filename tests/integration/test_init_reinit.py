"""Re-initialising never doubles anything: one log handler, one instrumentation, one span per operation.

Uses a real HTTP server on 127.0.0.1 (port 0) and the real httpx instrumentation.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelkit

BASE: dict[str, Any] = {"traces_exporter": "none", "metrics_exporter": "none", "logs_exporter": "none",
                        "system_metrics": False, "instrument": ["httpx"]}


pytestmark = pytest.mark.usefixtures("fresh_otelkit")


@pytest.fixture
def http_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ping"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _otelkit_handlers() -> list[logging.Handler]:
    from otelkit import _logs

    on_root = [h for h in logging.getLogger().handlers if type(h).__module__.startswith("otelkit")]
    handler = _logs.otlp_handler()
    return on_root + ([handler] if handler is not None else [])


def test_three_inits_one_handler_one_instrumentation_one_span(http_url: str) -> None:
    client = httpx.Client()  # created before init(): must be instrumented once all the same
    exporters = []
    for name in ("first", "second", "first"):
        exporter = InMemorySpanExporter()
        exporters.append(exporter)
        otelkit.init(service_name=name, span_processors=[SimpleSpanProcessor(exporter)], **BASE)
        assert len(_otelkit_handlers()) == 1
    statuses = {s.name: s.state for s in otelkit.integration_status()}
    assert statuses.get("httpx") == "enabled"

    response = client.get(http_url)
    assert response.status_code == 204
    client.close()
    spans = exporters[-1].get_finished_spans()
    client_spans = [s for s in spans if s.kind.name == "CLIENT"]
    assert len(client_spans) == 1, [s.name for s in spans]
    assert client_spans[0].resource.attributes["service.name"] == "first"
    assert all(not e.get_finished_spans() for e in exporters[:-1])  # the replaced pipelines saw nothing
