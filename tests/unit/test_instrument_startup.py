"""Issue 8 item 5: init() does no work for integrations it does not use, and still reports them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from otelkit import _instrument
from otelkit._config import resolve

_PROBE = r"""
import json, sys
import otelkit
otelkit.init(service_name="x", instrument=(), system_metrics=False,
             traces_exporter="none", metrics_exporter="none", logs_exporter="none")
loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.instrumentation", "wrapt", "packaging")))
print(json.dumps({"loaded": loaded, "status": [[s.name, s.state] for s in otelkit.integration_status()]}))
"""


def test_init_without_integrations_imports_no_instrumentation_machinery() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Neither the contrib logging instrumentation (only asked about), nor the semconv mode, nor
    # opentelemetry.instrumentation.utils (wrapt, packaging) is needed when nothing is instrumented.
    assert result["loaded"] == []
    assert ["logging", "enabled"] in result["status"]
    assert ["redis", "disabled"] in result["status"]


def test_logging_status_still_sees_a_contrib_instrumentor_enabled_by_the_app() -> None:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    instrumentor = LoggingInstrumentor()
    instrumentor.instrument(set_logging_format=False)
    try:
        statuses = {s.name: s for s in _instrument.instrument_all(resolve(instrument=(), system_metrics=False),
                                                                  None, None, report_unused_entry_points=False)}
        assert "contrib LoggingInstrumentor was also enabled" in statuses["logging"].reason
    finally:
        instrumentor.uninstrument()
        _instrument.uninstrument_all()


_EP_MODULE = '''
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

class Present(BaseInstrumentor):
    def instrumentation_dependencies(self):
        return []
    def _instrument(self, **kwargs):
        pass
    def _uninstrument(self, **kwargs):
        pass
'''


@pytest.fixture
def fake_entry_point(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real distribution on sys.path declaring one opentelemetry_instrumentor entry point."""
    import importlib

    name = f"otelkit_lazy_ep_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(_EP_MODULE)
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[opentelemetry_instrumentor]\nzz_lazy = {name}:Present\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    _instrument.uninstrument_all()
    yield name
    _instrument.uninstrument_all()
    sys.modules.pop(name, None)


def test_unused_entry_points_are_listed_lazily(fake_entry_point: str) -> None:
    settings = resolve(instrument=(), system_metrics=False)
    returned = {s.name for s in _instrument.instrument_all(settings, None, None, report_unused_entry_points=False)}
    assert "zz_lazy" not in returned  # not scanned at init
    status = {s.name: s for s in _instrument.integration_status()}
    assert status["zz_lazy"].state == "disabled"
    assert "OTELKIT_INSTRUMENT_ENTRY_POINTS" in status["zz_lazy"].reason
    assert [s.name for s in _instrument.integration_status()].count("zz_lazy") == 1  # added once
    assert fake_entry_point not in sys.modules  # listing never loads it


def test_entry_points_are_scanned_when_they_may_be_enabled(fake_entry_point: str) -> None:
    settings = resolve(instrument=["zz_lazy"], system_metrics=False)  # named: it may be enabled
    status = {s.name: s for s in _instrument.instrument_all(settings, None, None, report_unused_entry_points=False)}
    assert status["zz_lazy"].state == "enabled"
    # A later init that no longer wants it must still find it to remove it.
    status = {s.name: s for s in _instrument.instrument_all(resolve(instrument=(), system_metrics=False), None, None,
                                                            report_unused_entry_points=False)}
    assert status["zz_lazy"].state == "disabled"
    assert "zz_lazy" not in _instrument.entry_points.enabled_names()
