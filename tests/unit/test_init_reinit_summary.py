"""The embedded default's in-memory metric summary prints once, at the final shutdown, not on re-init."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry import metrics

import otelkit
from otelkit import _init
from otelkit._export import factory


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Stand-in for "no collector on 127.0.0.1:4317/4318": another process on this machine may run one.
    monkeypatch.setattr(factory, "probe_local_collector", lambda timeout=0.05: None)
    _init.reset()
    yield
    _init.reset()


def test_reinit_does_not_print_the_replaced_summary(capsys: pytest.CaptureFixture[str]) -> None:
    common = {"instrument": (), "system_metrics": False, "traces_exporter": "none", "logs_exporter": "none",
              "metrics_exporter": "auto"}
    otelkit.init(service_name="summary-a", **common)
    counter = metrics.get_meter("summary-test").create_counter("summary_test.items")
    counter.add(1)
    otelkit.init(service_name="summary-b", **common)
    _init._join_retiring(time.monotonic() + 30)  # the replaced providers are fully shut down
    assert not _init._retiring
    reinit_output = capsys.readouterr()
    assert "summary_test.items" not in reinit_output.out + reinit_output.err
    counter.add(2)
    otelkit.shutdown()
    final = capsys.readouterr()
    assert "summary_test.items" in final.out + final.err  # printed once, at the end
