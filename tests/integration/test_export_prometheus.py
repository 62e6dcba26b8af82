"""Prometheus scrape endpoint: the destination line is truthful, a moved endpoint stops the old server."""

from __future__ import annotations

import socket
import time

import requests
from opentelemetry.sdk.metrics import MeterProvider

from otelkit import _export
from otelkit._config import resolve
from otelkit.testing._receiver import free_port


def _settings(port: int, exporter: str = "prometheus") -> object:
    return resolve(environ={"OTEL_SERVICE_NAME": "prom", "OTEL_METRICS_EXPORTER": exporter,
                            "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
                            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})


def test_port_in_use_is_not_announced_as_a_scrape_endpoint() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = _settings(port)
        assert _export.build_metric_readers(settings) == []  # type: ignore[arg-type]
        line = _export.describe_destinations(settings)  # type: ignore[arg-type]
    assert f"Prometheus scrape endpoint http://127.0.0.1:{port}" not in line, line
    assert f"no Prometheus scrape endpoint (127.0.0.1:{port}" in line, line


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_a_moved_endpoint_stops_the_previous_server() -> None:
    first, second = free_port(), free_port()
    providers = []
    try:
        readers = _export.build_metric_readers(_settings(first))  # type: ignore[arg-type]
        providers.append(MeterProvider(metric_readers=readers, shutdown_on_exit=False))
        assert requests.get(f"http://127.0.0.1:{first}/metrics", timeout=5).status_code == 200
        line = _export.describe_destinations(_settings(first))  # type: ignore[arg-type]
        assert f"Prometheus scrape endpoint http://127.0.0.1:{first}/metrics" in line, line

        readers = _export.build_metric_readers(_settings(second))  # type: ignore[arg-type]
        providers.append(MeterProvider(metric_readers=readers, shutdown_on_exit=False))
        assert requests.get(f"http://127.0.0.1:{second}/metrics", timeout=5).status_code == 200
        deadline = time.monotonic() + 10
        while not _refused(first) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the old port with a deadline, not synchronising on a sleep
        assert _refused(first), "the server on the previous port is still running"
    finally:
        _export.build_metric_readers(_settings(second, exporter="none"))  # type: ignore[arg-type]
        for provider in providers:
            provider.shutdown()
    deadline = time.monotonic() + 10
    while not _refused(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _refused(second)
