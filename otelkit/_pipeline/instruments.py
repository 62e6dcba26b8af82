"""The pipeline's tracer and metric instruments, created once per provider.

They come from the global OTel API, so they follow otelkit's proxy providers
across re-``init()``. The cache is keyed on the provider object: a test (or an
application) that installs a different global provider gets fresh instruments,
and the hot path pays one identity comparison.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Histogram, Meter

from otelkit import _compat, _names
from otelkit._version import __version__

SCOPE = "otelkit.pipeline"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"

# Advised by the messaging conventions for messaging.*.duration.
MESSAGING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Queue waits span milliseconds to hours (semantic-conventions PR #895's proposal).
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
BATCH_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)


def _counter(meter: Meter, metric: _names.MetricName) -> Counter:
    return meter.create_counter(metric.name, unit=metric.unit, description=metric.description)


def _histogram(meter: Meter, metric: _names.MetricName, buckets: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(metric.name, unit=metric.unit, description=metric.description,
                                  explicit_bucket_boundaries_advisory=list(buckets))


class Instruments:
    """Every synchronous instrument the pipeline records into."""

    __slots__ = ("batch_size", "consumed", "discovered", "end_to_end", "live", "meter", "operation_duration",
                 "process_duration", "sent", "settled", "stage_duration", "stage_items", "time_in_queue")

    def __init__(self, meter: Meter, live: bool = True) -> None:
        self.meter = meter
        # False when every point would be dropped: no meter provider set (the API's proxy, whose instruments
        # become real only through a later set_meter_provider, which also changes instruments()' cache key)
        # or the no-op provider. The per-message scopes then skip their metric calls and attribute look-ups.
        self.live = live
        self.sent = _counter(meter, _names.MESSAGING_SENT)
        self.consumed = _counter(meter, _names.MESSAGING_CONSUMED)
        self.operation_duration = _histogram(meter, _names.MESSAGING_OPERATION_DURATION, MESSAGING_BUCKETS)
        self.process_duration = _histogram(meter, _names.MESSAGING_PROCESS_DURATION, MESSAGING_BUCKETS)
        self.end_to_end = _histogram(meter, _names.MESSAGE_END_TO_END, LATENCY_BUCKETS)
        self.time_in_queue = _histogram(meter, _names.MESSAGE_TIME_IN_QUEUE, LATENCY_BUCKETS)
        self.settled = _counter(meter, _names.MESSAGES_SETTLED)
        self.batch_size = _histogram(meter, _names.BATCH_SIZE, BATCH_BUCKETS)
        self.stage_duration = _histogram(meter, _names.STAGE_DURATION, STAGE_BUCKETS)
        self.stage_items = _counter(meter, _names.STAGE_ITEMS)
        self.discovered = _counter(meter, _names.DISCOVERED_ITEMS)


_tracer_cache: tuple[Any, trace.Tracer] | None = None
_instrument_cache: tuple[Any, Instruments] | None = None


def tracer() -> trace.Tracer:
    """The pipeline tracer of the current global tracer provider."""
    global _tracer_cache
    provider = trace.get_tracer_provider()
    cached = _tracer_cache
    if cached is not None and cached[0] is provider:
        return cached[1]
    new = provider.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
    if type(new).__module__ == "opentelemetry.sdk.trace" and type(new).__name__ == "Tracer":
        # An application's own SDK TracerProvider (not otelkit's proxy, whose tracers already are): the same
        # lean start_span as otelkit's proxy tracer (the SDK's own _Span, built in one frame, when the installed
        # SDK is one it was checked against; otherwise the SDK's start_span unchanged). Imported here: the
        # pipeline never imports the SDK when no SDK provider is set.
        from otelkit._proxy import ProxyTracer

        new = ProxyTracer(new)
    _tracer_cache = (provider, new)
    return new


def instruments() -> Instruments:
    """The pipeline instruments of the current global meter provider."""
    global _instrument_cache
    # Keyed on the provider set with metrics.set_meter_provider (None before): the public getter reads
    # os.environ on every call until a provider is set, once per message for nothing.
    key = _compat.set_meter_provider()
    cached = _instrument_cache
    if cached is not None and cached[0] is key:
        return cached[1]
    provider = metrics.get_meter_provider()  # the proxy (re-pointed when one is set), or OTEL_PYTHON_METER_PROVIDER's
    live = not (isinstance(provider, metrics.NoOpMeterProvider) or _compat.is_unset_proxy_meter_provider(provider))
    new = Instruments(provider.get_meter(SCOPE, __version__, schema_url=SCHEMA_URL), live)
    _instrument_cache = (_compat.set_meter_provider(), new)
    return new
