"""Web frameworks under real servers, through a real collector (rotel): FastAPI/Starlette under uvicorn,
Flask and Django under gunicorn. Real HTTP requests from the test.

Asserted: SERVER spans with the route template, method and status; the ``http.server.request.duration``
histogram by route, method and status; excluded health endpoints; scrubbed query strings and captured
headers; the correlation ID in (header, baggage) and out (response header, log records, outgoing calls,
asyncio tasks, background tasks); apps built before ``init()``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from otelkit._scrub import REDACTED
from otelkit.testing._receiver import OtlpReceiver, ReceivedSpan, RotelCollector, free_port
from tests.integration.instrument_support import http_server

APPS = Path(__file__).parent / "apps"
DURATION = "http.server.request.duration"
HEX32 = re.compile(r"[0-9a-f]{32}")


def web_env(collector: RotelCollector, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_", "WEB_"))}
    env.update({
        "OTEL_SERVICE_NAME": "web-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTELKIT_SHUTDOWN_TIMEOUT": "20000",
        "OTELKIT_SYSTEM_METRICS": "false",
        "OTELKIT_CONSOLE": "false",
        "PYTHONPATH": os.pathsep.join([str(APPS), env.get("PYTHONPATH", "")]),
    })
    env.update(extra)
    return env


@contextmanager
def serving(args: Sequence[str], env: dict[str, str], port: int) -> Iterator[dict[str, Any]]:
    """Run a server until the block ends, then SIGTERM it and wait for its exit (it flushes on the way out)."""
    proc = subprocess.Popen(list(args), env=env, cwd=APPS, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out: dict[str, Any] = {"base": f"http://127.0.0.1:{port}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                requests.get(out["base"] + "/health", timeout=10)
                break
            except requests.RequestException:  # refused, or accepted by a worker still importing the app
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the server did not start: {proc.communicate()[1]}") from None
                time.sleep(0.1)
        yield out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        out["stderr"] = stderr
        out["returncode"] = proc.returncode


def server_spans(receiver: OtlpReceiver) -> list[ReceivedSpan]:
    return [s for s in receiver.spans() if s.kind in ("SERVER", "SPAN_KIND_SERVER", "server")]


def by_correlation(spans: list[ReceivedSpan], cid: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.attributes.get("otelkit.correlation_id") == cid]


def last_counts(receiver: OtlpReceiver, route: str) -> dict[tuple[Any, ...], int]:
    """Cumulative count of the request-duration histogram per (process, method, status): its last point."""
    out: dict[tuple[Any, ...], tuple[int, int]] = {}
    for p in receiver.metrics(DURATION):
        if p.attributes.get("http.route") != route:
            continue
        key = (p.resource.get("process.pid"), p.attributes.get("http.request.method"),
               p.attributes.get("http.response.status_code"))
        if key not in out or p.time_unix_nano >= out[key][0]:
            out[key] = (p.time_unix_nano, int(p.count or 0))
    return {k: v[1] for k, v in out.items()}


CAPTURE = {"OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization,x-correlation-id,x-plain",
           "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type"}


@pytest.mark.timeout(300)
def test_fastapi_app_built_before_init_under_uvicorn(otelkit_collector: RotelCollector) -> None:
    port = free_port()
    with http_server() as (downstream, seen):
        env = web_env(otelkit_collector, WEB_BEFORE_INIT="1", WEB_DOWNSTREAM=downstream + "/down", **CAPTURE)
        with serving([sys.executable, "-m", "uvicorn", "--port", str(port), "web_asgi:app"], env, port) as srv:
            base = srv["base"]
            r = requests.get(base + "/items/42?page=2&token=QS-SECRET-1", timeout=30,
                             headers={"X-Correlation-ID": "order-42", "Authorization": "Bearer HDR-SECRET-123456",
                                      "X-Plain": "visible"})
            assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "order-42"
            fresh = requests.get(base + "/items/7", timeout=30).headers["X-Correlation-ID"]
            assert HEX32.fullmatch(fresh)
            oversized = requests.get(base + "/items/8", timeout=30, headers={"X-Correlation-ID": "x" * 500})
            assert HEX32.fullmatch(oversized.headers["X-Correlation-ID"])
            malformed = requests.get(base + "/items/9", timeout=30, headers={"X-Correlation-ID": "a b;c=\"d\""})
            assert HEX32.fullmatch(malformed.headers["X-Correlation-ID"])
            boom = requests.get(base + "/boom", timeout=30, headers={"X-Correlation-ID": "boom-1"})
            assert boom.status_code == 500 and boom.headers["X-Correlation-ID"] == "boom-1"
            for _ in range(3):
                assert requests.get(base + "/health", timeout=30).status_code == 200
        assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(server_spans(receiver)) >= 5 and receiver.metrics(DURATION)
                      and receiver.logs(), timeout=60, message=f"server spans; stderr:\n{srv['stderr']}")
    spans = server_spans(receiver)
    # Health checks are excluded by default; every other request has exactly one SERVER span.
    assert sorted(s.attributes["http.route"] for s in spans) == ["/boom"] + ["/items/{item_id}"] * 4, spans
    (main,) = by_correlation(spans, "order-42")
    assert main.name == "GET /items/{item_id}"
    assert main.attributes["http.request.method"] == "GET"
    assert main.attributes["http.response.status_code"] == 200
    # Query string and captured secret headers scrubbed; harmless ones kept.
    assert "QS-SECRET-1" not in str(main.attributes) and "page=2" in str(main.attributes.get("url.query"))
    assert "HDR-SECRET" not in str(main.attributes)
    assert main.attributes["http.request.header.x_plain"] == ["visible"]
    assert main.attributes["http.request.header.authorization"] == [REDACTED]
    # The malformed/oversized headers were replaced by the fresh IDs sent back.
    assert len(by_correlation(spans, oversized.headers["X-Correlation-ID"])) == 1
    assert len(by_correlation(spans, malformed.headers["X-Correlation-ID"])) == 1
    assert len(by_correlation(spans, fresh)) == 1
    assert by_correlation(spans, "boom-1")[0].attributes["http.response.status_code"] == 500
    # No per-ASGI-message INTERNAL spans; the app's own child spans carry the request's ID.
    everything = receiver.spans()
    assert not [s for s in everything if s.name.endswith((" http send", " http receive"))]
    for name in ("asyncio-task", "background-task"):
        mine = [s for s in everything if s.name == name and s.attributes.get("otelkit.correlation_id") == "order-42"]
        assert len(mine) == 1, (name, [s.attributes for s in everything if s.name == name])
    # The outgoing call carried it (baggage) and the client span has it.
    baggage = [h.get("baggage", "") or h.get("Baggage", "") for h in seen]
    assert any("correlation_id=order-42" in b for b in baggage), seen
    # Every log record written while handling the request has it.
    # The background task's record may come in a later export than the spans waited for above: wait for it.
    # The app's own three lines (handling/task/background for 42): not any record whose text holds "42" (httpx's
    # "HTTP Request: ..." line of another request can, through its random port).
    ours = ("handling item 42", "task for 42", "background for 42")
    logs = receiver.wait_for(lambda: r if len(r := [rec for rec in receiver.logs() if str(rec.body) in ours]) >= 3
                             else [], timeout=60, message="the three log records of request 42")
    assert all("order-42" in str(rec.attributes) for rec in logs), [r.attributes for r in logs]
    # RED metric by route, method and status.
    counts = last_counts(receiver, "/items/{item_id}")
    assert sum(v for k, v in counts.items() if k[1:] == ("GET", 200)) == 4, counts
    assert sum(last_counts(receiver, "/boom").values()) == 1
    assert not last_counts(receiver, "/health")


@pytest.mark.timeout(300)
def test_flask_and_starlette_and_django_routes_and_correlation(otelkit_collector: RotelCollector) -> None:
    """Flask (built before init), Django (built after) under gunicorn, Django ASGI and Starlette under uvicorn."""
    env = web_env(otelkit_collector, WEB_BEFORE_INIT="1", **CAPTURE)
    port = free_port()
    with serving([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "web_wsgi:flask_app"],
                 env, port) as srv:
        r = requests.get(srv["base"] + "/items/5?password=QS-SECRET-2", timeout=30,
                         headers={"X-Correlation-ID": "flask-5"})
        assert r.headers["X-Correlation-ID"] == "flask-5"
        assert HEX32.fullmatch(requests.get(srv["base"] + "/items/6", timeout=30).headers["X-Correlation-ID"])
    assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
    env = web_env(otelkit_collector, OTELKIT_CORRELATION_HEADER="X-Request-ID")
    port = free_port()
    with serving([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "web_wsgi:django_app"],
                 env, port) as srv:
        r = requests.get(srv["base"] + "/items/11", timeout=30, headers={"X-Request-ID": "django-11"})
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "django-11"
    assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
    port = free_port()
    with serving([sys.executable, "-m", "uvicorn", "--port", str(port), "web_wsgi:django_asgi_app"], env, port) as srv:
        r = requests.get(srv["base"] + "/items/12", timeout=30, headers={"X-Request-ID": "django-asgi-12"})
        assert r.status_code == 200 and r.headers["X-Correlation-ID"] == "django-asgi-12"
    assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
    port = free_port()
    with serving([sys.executable, "-m", "uvicorn", "--port", str(port), "web_asgi:starlette_app"],
                 web_env(otelkit_collector),
                 port) as srv:
        r = requests.get(srv["base"] + "/hello/ann", timeout=30, headers={"X-Correlation-ID": "star-1"})
        assert r.headers["X-Correlation-ID"] == "star-1"
    assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(server_spans(receiver)) >= 5, timeout=60, message="5 server spans")
    spans = server_spans(receiver)
    (flask,) = by_correlation(spans, "flask-5")
    assert flask.attributes["http.route"] == "/items/<int:item_id>"
    assert flask.attributes["http.response.status_code"] == 200
    assert "QS-SECRET-2" not in str(flask.attributes)
    (django_span,) = by_correlation(spans, "django-11")
    assert django_span.attributes["http.route"] == "items/<int:item_id>"
    assert django_span.attributes["http.request.method"] == "GET"
    (django_asgi,) = by_correlation(spans, "django-asgi-12")
    assert django_asgi.attributes["http.route"] == "items/<int:item_id>"
    (star,) = by_correlation(spans, "star-1")
    assert star.attributes["http.route"] == "/hello/{name}"
    assert len(spans) == 5, [(s.name, s.attributes.get("http.route")) for s in spans]
    receiver.wait_for(lambda: {"/items/<int:item_id>", "items/<int:item_id>", "/hello/{name}"} <= {
        p.attributes.get("http.route") for p in receiver.metrics(DURATION)}, timeout=60, message="RED metrics")
    wanted = {"flask item 5", "django item 11", "starlette hello ann"}
    receiver.wait_for(lambda: wanted <= {str(rec.body) for rec in receiver.logs()}, timeout=60, message="log records")
    logs = {str(rec.body): rec for rec in receiver.logs()}
    assert "flask-5" in str(logs["flask item 5"].attributes)
    assert "django-11" in str(logs["django item 11"].attributes)
    assert "star-1" in str(logs["starlette hello ann"].attributes)


def test_django_built_before_init_warns_once_with_the_fix(otelkit_collector: RotelCollector) -> None:
    port = free_port()
    with serving([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "web_wsgi:django_app"],
                 web_env(otelkit_collector, WEB_BEFORE_INIT="1"), port) as srv:
        for i in range(3):
            r = requests.get(srv["base"] + f"/items/{i}", timeout=30, headers={"X-Correlation-ID": f"early-{i}"})
            assert r.headers["X-Correlation-ID"] == f"early-{i}"  # the edge still works
    assert srv["stderr"].count("built before otelkit.init()") == 1, srv["stderr"]
    assert "call otelkit.init() before get_wsgi_application()" in srv["stderr"]
