"""Run only by test_xdist_order.py: a module that leaves otelkit initialised, as in-process init() tests did.

Not collected by the suite (not named ``test_*``); pytest collects it when it is named on the command line.
Its one test calls ``otelkit.init()`` in-process with the default integrations (httpx among them) and the
header-capture variables unset, and never resets: the state an xdist worker handed to its next module.
"""

from __future__ import annotations

import otelkit


def test_init_in_process_and_leave_it() -> None:
    otelkit.init(service_name="order-poison", traces_exporter="none", metrics_exporter="none",
                 logs_exporter="none", system_metrics=False)
    assert "httpx" in {s.name for s in otelkit.integration_status() if s.state == "enabled"}
