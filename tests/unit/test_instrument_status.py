"""Selection, status registry, idempotence, provider following and semconv pass-through (no network)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otelkit
from otelkit import _instrument
from otelkit._config import resolve
from otelkit._instrument import _common


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    _instrument.uninstrument_all()
    yield
    _instrument.uninstrument_all()


def _providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tp, exporter, MeterProvider(metric_readers=[reader]), reader


def _run(**kwargs: Any) -> dict[str, _instrument.IntegrationStatus]:
    kwargs.setdefault("system_metrics", False)
    tp, _e, mp, _r = _providers()
    return {s.name: s for s in _instrument.instrument_all(resolve(**kwargs), tp, mp)}


def test_defaults_enable_every_installed_library_and_report_logging() -> None:
    status = _run()
    assert [status[n].state for n in ("redis", "psycopg2", "httpx")] == ["enabled"] * 3
    assert "redis 8" in status["redis"].reason or status["redis"].version
    assert status["psycopg2"].reason.startswith("psycopg2-binary")
    assert status["logging"].state == "enabled" and "otelkit._logs" in status["logging"].reason
    assert status["system_metrics"].state == "disabled"
    assert otelkit.integration_status() == tuple(_instrument.integration_status())
    assert {s.name for s in otelkit.integration_status()} >= {"redis", "psycopg2", "httpx", "logging"}


def test_instrument_argument_limits_libraries_and_names_the_source() -> None:
    status = _run(instrument=["redis"])
    assert status["redis"].state == "enabled"
    assert status["httpx"].state == "disabled"
    assert "instrument=['redis']" in status["httpx"].reason and "argument" in status["httpx"].reason


def test_disabled_instrumentations_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "httpx,psycopg2")
    status = _run()
    assert status["redis"].state == "enabled"
    assert status["httpx"].state == status["psycopg2"].state == "disabled"
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in status["httpx"].reason
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "*")
    status = _run()
    assert all(status[n].state == "disabled" for n in ("redis", "httpx", "psycopg2"))


def test_unknown_name_is_reported() -> None:
    status = _run(instrument=["redis", "no_such_lib"])
    assert status["no_such_lib"].state == "skipped"
    assert "unknown integration" in status["no_such_lib"].reason


def test_reinit_removes_what_is_no_longer_wanted() -> None:
    import httpx

    _run(instrument=["redis", "httpx"])
    assert getattr(httpx.HTTPTransport.handle_request, "__wrapped__", None) is not None
    _run(instrument=["redis"])
    assert getattr(httpx.HTTPTransport.handle_request, "__wrapped__", None) is None


def test_instrument_all_is_idempotent() -> None:
    import redis

    first = _run(instrument=["redis"])
    wrapper = vars(redis.Redis)["execute_command"]
    second = _run(instrument=["redis"])
    assert vars(redis.Redis)["execute_command"] is wrapper
    assert first["redis"] == second["redis"]


def test_a_failing_integration_is_reported_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelkit._instrument import redis as redis_module

    def boom(ctx: Any) -> Any:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(redis_module, "instrument", boom)
    status = _run()
    assert status["redis"].state == "failed"
    assert "RuntimeError: broken on purpose" in status["redis"].reason
    assert status["httpx"].state == "enabled"


def test_missing_library_is_skipped_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _common.dist_version

    def fake(*names: str) -> Any:
        return None if "httpx" in names else real(*names)

    monkeypatch.setattr(_common, "dist_version", fake)
    status = _run()
    assert status["httpx"].state == "skipped"
    assert "not installed" in status["httpx"].reason


def test_unsupported_version_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _common.dist_version

    def fake(*names: str) -> Any:
        return ("redis", "3.5.3") if "redis" in names else real(*names)

    monkeypatch.setattr(_common, "dist_version", fake)
    status = _run()
    assert status["redis"].state == "skipped"
    assert "version unsupported" in status["redis"].reason and "3.5.3" in status["redis"].reason


def test_entry_points_are_opt_in() -> None:
    from otelkit._instrument import entry_points

    status = _run()
    for ep in entry_points.available():
        assert status[ep.name].state == "disabled"
        assert "OTELKIT_INSTRUMENT_ENTRY_POINTS" in status[ep.name].reason
    assert "redis" not in {ep.name for ep in entry_points.available()}


def test_spans_follow_the_providers_of_the_latest_init() -> None:
    """A re-init swaps providers; instrumentation done at the first init must follow."""
    tracer = _common.FOLLOWING_TRACER_PROVIDER.get_tracer("opentelemetry.instrumentation.redis", "1")
    tp1, e1, mp1, _ = _providers()
    tp2, e2, mp2, _ = _providers()
    _instrument.instrument_all(resolve(instrument=["redis"], system_metrics=False), tp1, mp1)
    with tracer.start_as_current_span("one"):
        pass
    _instrument.instrument_all(resolve(instrument=["redis"], system_metrics=False), tp2, mp2)
    with tracer.start_as_current_span("two"):
        pass
    tracer.start_span("three").end()
    assert [s.name for s in e1.get_finished_spans()] == ["one"]
    assert [s.name for s in e2.get_finished_spans()] == ["two", "three"]
    assert e2.get_finished_spans()[0].instrumentation_scope.name == "opentelemetry.instrumentation.redis"


def test_semconv_defaults_to_stable_and_passes_the_env_through(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )
    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetryStabilitySignalType as Signal,
    )
    from opentelemetry.instrumentation._semconv import _StabilityMode as Mode

    # Something initialised the upstream cache before init() (an import-time instrumentation).
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    Stability._initialized = False
    Stability._initialize()
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN")
    _run(instrument=["httpx"])
    assert Stability._get_opentelemetry_stability_opt_in_mode(Signal.HTTP) is Mode.HTTP
    assert Stability._get_opentelemetry_stability_opt_in_mode(Signal.DATABASE) is Mode.DATABASE
    assert "OTEL_SEMCONV_STABILITY_OPT_IN" not in os.environ  # read, never left modified

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup,database/dup")
    _run(instrument=["httpx"])
    assert Stability._get_opentelemetry_stability_opt_in_mode(Signal.HTTP) is Mode.HTTP_DUP
    assert Stability._get_opentelemetry_stability_opt_in_mode(Signal.DATABASE) is Mode.DATABASE_DUP


def test_system_metrics_on_by_default_with_a_subset() -> None:
    tp, _e, mp, reader = _providers()
    status = {s.name: s for s in _instrument.instrument_all(resolve(instrument=[]), tp, mp)}
    assert status["system_metrics"].state == "enabled"
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    assert {"process.cpu.time", "process.memory.usage", "process.thread.count", "cpython.gc.collections",
            "system.cpu.utilization"} <= names
    assert "system.network.io" in names  # bandwidth to external APIs
    assert not any(n.startswith(("system.network.packets", "system.network.connections", "system.disk",
                                 "system.swap")) for n in names)
    # A re-init with another meter provider moves the observable instruments there.
    tp2, _e2, mp2, reader2 = _providers()
    _instrument.instrument_all(resolve(instrument=[]), tp2, mp2)
    names2 = {m.name for rm in reader2.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics}
    assert "process.memory.usage" in names2


def test_system_metrics_can_be_switched_off() -> None:
    status = _run(system_metrics=False)
    assert status["system_metrics"].state == "disabled"
    assert "system_metrics=False" in status["system_metrics"].reason


def test_status_str() -> None:
    status = _instrument.IntegrationStatus("redis", "skipped", "not installed")
    assert str(status) == "redis: skipped (not installed)"


def test_system_metrics_in_a_forked_child_describe_the_child() -> None:
    import os

    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    tp, _e, mp, _reader = _providers()
    _instrument.instrument_all(resolve(instrument=[]), tp, mp)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the pid the instrumentation samples
        try:
            os.write(write, str(SystemMetricsInstrumentor._instance._proc.pid).encode())
        finally:
            os._exit(0)
    os.close(write)
    reported = b""
    while chunk := os.read(read, 64):
        reported += chunk
    os.close(read)
    os.waitpid(pid, 0)
    assert int(reported) == pid
    assert SystemMetricsInstrumentor._instance._proc.pid == os.getpid()


_EP_MODULE = '''
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

CALLS = []


class Present(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("opentelemetry-api >= 1.0",)

    def _instrument(self, **kwargs):
        CALLS.append(("instrument", kwargs.get("tracer_provider") is not None))

    def _uninstrument(self, **kwargs):
        CALLS.append(("uninstrument", None))


class Missing(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return ("otelkit-no-such-library >= 1.0",)

    def _instrument(self, **kwargs):
        CALLS.append(("missing-instrumented", None))

    def _uninstrument(self, **kwargs):
        pass
'''


@pytest.fixture
def fake_entry_points(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real distribution on sys.path declaring two opentelemetry_instrumentor entry points."""
    import importlib
    import sys

    name = f"otelkit_ep_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(_EP_MODULE)
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[opentelemetry_instrumentor]\nzz_present = {name}:Present\nzz_missing = {name}:Missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    sys.modules.pop(name, None)


def test_entry_points_opt_in_enable_and_skip(fake_entry_points: str) -> None:
    import sys

    status = _run()
    assert status["zz_present"].state == "disabled" and status["zz_missing"].state == "disabled"
    status = _run(instrument_entry_points=True)
    module = sys.modules[fake_entry_points]
    assert status["zz_present"].state == "enabled"
    assert status["zz_missing"].state == "skipped"
    assert "not installed" in status["zz_missing"].reason and "otelkit-no-such-library" in status["zz_missing"].reason
    assert module.CALLS == [("instrument", True)]
    _run(instrument_entry_points=True)  # idempotent
    assert module.CALLS == [("instrument", True)]
    status = _run(instrument_entry_points=False)
    assert status["zz_present"].state == "disabled"
    assert module.CALLS == [("instrument", True), ("uninstrument", None)]
    status = _run(instrument=["zz_present"])  # naming one enables just that one
    assert status["zz_present"].state == "enabled" and status["redis"].state == "disabled"


def test_uninstrument_all_restores_every_patched_callable() -> None:
    import httpx
    import opentelemetry.instrumentation.psycopg2 as contrib_pg
    import psycopg2
    import redis

    originals = (psycopg2.connect, vars(redis.Redis)["execute_command"], vars(httpx.HTTPTransport)["handle_request"])
    _run()
    assert psycopg2.connect is not originals[0]
    # contrib 0.61b0's CursorTracer records no metric of its own (there is nothing to switch off)
    assert getattr(contrib_pg.CursorTracer, "_record_metrics", True) is not None
    _instrument.uninstrument_all()
    assert psycopg2.connect is originals[0]
    assert vars(redis.Redis)["execute_command"] is originals[1]
    assert vars(httpx.HTTPTransport)["handle_request"] is originals[2]
    assert "_record_metrics" not in vars(contrib_pg.CursorTracer)
    assert _instrument.integration_status() == ()


def test_a_typo_in_instrument_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """``instrument=["redsi"]`` names no integration: a warning says so and lists the known ones."""
    from otelkit.testing import capture_telemetry

    with caplog.at_level(logging.WARNING, logger="otelkit"), capture_telemetry(instrument=["redsi"]):
        status = {s.name: s for s in otelkit.integration_status()}
    assert status["redsi"].state == "skipped"
    warned = [r.getMessage() for r in caplog.records if "redsi" in r.getMessage()]
    assert len(warned) == 1 and "redis" in warned[0]


def test_integration_names_known_without_import_match_their_modules() -> None:
    """``init()`` reads the name of an integration it leaves off without importing its module: they must agree."""
    import importlib

    from otelkit import _instrument

    for integration in (*_instrument.LIBRARIES, _instrument._system_metrics):
        module = importlib.import_module(integration._path)
        assert integration.NAME == module.NAME, integration
        assert integration.instrument is module.instrument


_OFF_PROGRAM = r"""
import json, sys
import otelkit
otelkit.init(service_name="lazy", instrument=(), system_metrics=False, traces_exporter="none",
             metrics_exporter="none", logs_exporter="none")
loaded = sorted(m for m in sys.modules if m.startswith("otelkit._instrument.") and not m.split(".")[-1].startswith("_"))
print(json.dumps({"loaded": loaded, "states": sorted({s.state for s in otelkit.integration_status()})}))
"""


def test_integrations_left_off_are_not_imported() -> None:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _OFF_PROGRAM], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Only the always-on pieces: logging correlation, and the entry-point scanner.
    assert result["loaded"] == ["otelkit._instrument.entry_points", "otelkit._instrument.logging"], result
    assert "enabled" in result["states"] and "disabled" in result["states"], result
