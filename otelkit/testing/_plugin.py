"""otelkit's pytest plugin (``pytest11`` entry point): fixtures for users and for otelkit's own tests.

* ``otelkit_capture``: a :class:`otelkit.testing.CapturedTelemetry` for the test
  (otelkit initialised with in-memory exporters, reset afterwards; the test runs
  in an empty OTel context). Pass
  ``init()`` arguments with ``@pytest.mark.otelkit(instrument=["redis"], ...)``.
* ``otelkit_otlp_receiver``: a started in-process OTLP receiver (gRPC + HTTP).
* ``otelkit_collector``: the real ``rotel`` collector in front of an ``OtlpReceiver``
  (skips when ``rotel`` is not installed, fails under ``CI=true``).

Every fixture name starts with ``otelkit_``, so none collides with an application's own
``collector`` or ``otlp_receiver`` fixture.

This module is imported by every pytest run in an environment where otelkit is
installed, so it imports nothing heavy: the SDK, grpc and the receiver load
only when a test asks for one of the fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from otelkit.testing import CapturedTelemetry
    from otelkit.testing._receiver import OtlpReceiver, RotelCollector


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "otelkit(**init_kwargs): otelkit.init() keyword arguments for the otelkit_capture fixture"
    )


@pytest.fixture
def otelkit_capture(request: pytest.FixtureRequest) -> Iterator[CapturedTelemetry]:
    """otelkit initialised with in-memory exporters; ``.spans``, ``.metrics()``, ``.logs``."""
    from opentelemetry import context

    from otelkit.testing import capture_telemetry

    marker = request.node.get_closest_marker("otelkit")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    # Each test starts from an empty OTel context (no span or baggage left attached by an
    # earlier test), and whatever the test leaves attached is undone afterwards.
    token = context.attach(context.Context())
    try:
        with capture_telemetry(**kwargs) as captured:
            yield captured
    finally:
        context.detach(token)


@pytest.fixture
def otelkit_otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started in-process OTLP receiver (gRPC + HTTP) on free ports."""
    from otelkit.testing._receiver import OtlpReceiver

    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def otelkit_collector() -> Iterator[RotelCollector]:
    """The real rotel collector on free ports, exporting to ``otelkit_collector.receiver`` (an ``OtlpReceiver``)."""
    from otelkit.testing._receiver import OtlpReceiver, RotelCollector, find_rotel_agent

    if find_rotel_agent() is None:
        message = "rotel-agent is not installed (pip install rotel)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    receiver = OtlpReceiver().start()
    rotel = RotelCollector(receiver)
    try:
        rotel.start()
        yield rotel
    finally:
        rotel.close()
        receiver.stop()
