"""Every worker's spans and metrics arrive exactly once, through a real collector (rotel), under the process
models services run in: gunicorn sync workers (Flask) and uvicorn workers (FastAPI), with and without
``--preload``, and ``uvicorn --workers``. Real servers, real HTTP requests; each request carries its own
correlation ID, so each must be on exactly one SERVER span, served by the worker that answered it.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import requests

from otelkit.testing._receiver import RotelCollector, free_port
from tests.integration.test_instrument_servers import DURATION, last_counts, server_spans, serving, web_env

REQUESTS = 30
GUNICORN = [sys.executable, "-m", "gunicorn", "-w", "2", "--graceful-timeout", "60"]
MODELS = {
    "gunicorn-uvicorn-workers-preload": ([*GUNICORN, "--preload", "-k", "uvicorn.workers.UvicornWorker"],
                                         "web_asgi:app", "/items/{item_id}"),
    "uvicorn-workers": ([sys.executable, "-m", "uvicorn", "--workers", "2"], "web_asgi:app", "/items/{item_id}"),
    "gunicorn-sync-preload": ([*GUNICORN, "--preload"], "web_wsgi:flask_app", "/items/<int:item_id>"),
    "gunicorn-sync": (GUNICORN, "web_wsgi:flask_app", "/items/<int:item_id>"),
    "gunicorn-uvicorn-workers": ([*GUNICORN, "-k", "uvicorn.workers.UvicornWorker"], "web_asgi:app",
                                 "/items/{item_id}"),
}
# The first two cover both server families in the default (fast) run; the others are the same checks on the
# remaining combinations.
SLOW = {"gunicorn-sync", "gunicorn-uvicorn-workers", "gunicorn-sync-preload"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in MODELS])
def test_every_worker_reports_each_request_once(otelkit_collector: RotelCollector, model: str) -> None:
    command, target, route = MODELS[model]
    port = free_port()
    bind = ["--port", str(port)] if "uvicorn" in command[2] else ["-b", f"127.0.0.1:{port}"]
    served_by: dict[str, int] = {}
    with serving([*command, *bind, target], web_env(otelkit_collector), port) as srv:
        for i in range(REQUESTS):
            cid = f"{model}-{i}"
            # A new connection each time, so both workers get requests.
            r = requests.get(f"{srv['base']}/items/{i}", timeout=30,
                             headers={"X-Correlation-ID": cid, "Connection": "close"})
            assert r.status_code == 200 and r.headers["X-Correlation-ID"] == cid
            served_by[cid] = r.json()["pid"]
    assert srv["returncode"] in (0, -15), srv["stderr"]
    receiver = otelkit_collector.receiver

    def complete() -> bool:
        counts = last_counts(receiver, route)
        return len(server_spans(receiver)) >= REQUESTS and sum(counts.values()) >= REQUESTS

    receiver.wait_for(complete, timeout=60, message=f"{REQUESTS} server spans and points; stderr:\n{srv['stderr']}")
    spans = server_spans(receiver)
    assert len(spans) == REQUESTS, Counter(s.attributes.get("otelkit.correlation_id") for s in spans)
    seen = {s.attributes["otelkit.correlation_id"]: s.resource["process.pid"] for s in spans}
    assert seen == served_by  # each request once, reported by the worker that served it
    assert len(set(served_by.values())) >= 1
    counts = last_counts(receiver, route)
    assert sum(counts.values()) == REQUESTS, counts
    per_worker = Counter(served_by.values())
    assert {pid: n for (pid, _method, _status), n in counts.items()} == dict(per_worker)
    assert all(p.attributes.get("http.route") for p in receiver.metrics(DURATION))
    span_ids = [s.span_id for s in receiver.spans()]
    assert len(span_ids) == len(set(span_ids))
