"""Websocket connections (FastAPI, Starlette under uvicorn) and a Flask app that served requests before
``init()`` (under gunicorn), through a real collector (rotel), with real clients (``websockets``, requests).

Asserted for websockets: the correlation ID from the handshake's header (or ``OTELKIT_CORRELATION_HEADER``),
or a generated one when it is missing or malformed, is sent back in the handshake response, is on the
connection's span, on the log records written while handling it, in a task the handler spawned and on its
outgoing call (W3C baggage).
"""

from __future__ import annotations

import json
import re
import signal
import sys

import pytest
import requests
import websockets.sync.client as websockets_sync

from otelkit.testing._receiver import RotelCollector, free_port
from tests.integration.instrument_support import http_server
from tests.integration.test_instrument_servers import by_correlation, last_counts, server_spans, serving, web_env

HEX32 = re.compile(r"[0-9a-f]{32}")


def _talk(url: str, headers: dict[str, str], text: str) -> tuple[str, dict[str, str]]:
    """One websocket connection: send ``text``, return the handshake's X-Correlation-ID and the reply."""
    with websockets_sync.connect(url, additional_headers=headers, open_timeout=30) as conn:
        conn.send(text)
        reply = conn.recv(timeout=30)
        assert conn.response is not None
        return conn.response.headers.get("X-Correlation-ID", ""), json.loads(reply) if reply.startswith("{") \
            else {"handler": reply}


@pytest.mark.timeout(300)
def test_websocket_connections_carry_the_correlation_id(otelkit_collector: RotelCollector) -> None:
    port = free_port()
    with http_server() as (downstream, seen):
        env = web_env(otelkit_collector, WEB_DOWNSTREAM=downstream + "/down")
        with serving([sys.executable, "-m", "uvicorn", "--port", str(port), "web_asgi:app"], env, port) as srv:
            ws = srv["base"].replace("http://", "ws://") + "/ws/lobby"
            header, reply = _talk(ws, {"X-Correlation-ID": "ws-order-7"}, "hello-7")
            assert header == "ws-order-7" and reply == {"handler": "ws-order-7", "task": "ws-order-7"}
            header, reply = _talk(ws, {}, "hello-fresh")
            assert HEX32.fullmatch(header) and reply == {"handler": header, "task": header}
            fresh = header
            header, reply = _talk(ws, {"X-Correlation-ID": "bad id;x=\"y\""}, "hello-bad")
            assert HEX32.fullmatch(header) and reply == {"handler": header, "task": header}
            malformed = header
        assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
        port = free_port()
        env = web_env(otelkit_collector, OTELKIT_CORRELATION_HEADER="X-Request-ID")
        with serving([sys.executable, "-m", "uvicorn", "--port", str(port), "web_asgi:starlette_app"], env,
                     port) as srv:
            header, reply = _talk(srv["base"].replace("http://", "ws://") + "/ws", {"X-Request-ID": "star-ws-1"},
                                  "hi")
            assert header == "star-ws-1" and reply == {"handler": "star-ws-1"}
        assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]

    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(server_spans(receiver)) >= 4, timeout=60,
                      message=f"4 websocket server spans; stderr:\n{srv['stderr']}")
    spans = server_spans(receiver)
    for cid in ("ws-order-7", fresh, malformed, "star-ws-1"):
        assert len(by_correlation(spans, cid)) == 1, (cid, [(s.name, s.attributes) for s in spans])
    (main,) = by_correlation(spans, "ws-order-7")
    assert "/ws/" in main.name, main.name
    tasks = [s for s in receiver.spans() if s.name == "ws-task"]
    assert {s.attributes.get("otelkit.correlation_id") for s in tasks} >= {"ws-order-7", fresh, malformed}
    baggage = [h.get("baggage", "") or h.get("Baggage", "") for h in seen]
    assert any("correlation_id=ws-order-7" in b for b in baggage), seen
    logs = receiver.wait_for(lambda: r if len(r := [rec for rec in receiver.logs() if "hello-7" in str(rec.body)])
                             >= 2 else [], timeout=60, message="the handler's and the task's log records")
    assert all("ws-order-7" in str(rec.attributes) for rec in logs), [rec.attributes for rec in logs]
    star = receiver.wait_for(lambda: [rec for rec in receiver.logs() if str(rec.body) == "starlette ws got hi"],
                             timeout=60, message="the Starlette websocket's log record")
    assert "star-ws-1" in str(star[0].attributes)


@pytest.mark.timeout(300)
def test_flask_app_that_served_before_init_is_traced(otelkit_collector: RotelCollector) -> None:
    port = free_port()
    env = web_env(otelkit_collector, WEB_BEFORE_INIT="1", WEB_SERVED_BEFORE_INIT="1")
    with serving([sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "web_wsgi:flask_app"],
                 env, port) as srv:
        for i in (1, 2):
            r = requests.get(srv["base"] + f"/items/{i}", timeout=30, headers={"X-Correlation-ID": f"served-{i}"})
            assert r.status_code == 200 and r.headers["X-Correlation-ID"] == f"served-{i}"
    assert srv["returncode"] in (0, -signal.SIGTERM), srv["stderr"]
    assert "could not be instrumented" not in srv["stderr"], srv["stderr"]
    receiver = otelkit_collector.receiver
    receiver.wait_for(lambda: len(server_spans(receiver)) >= 2, timeout=60,
                      message=f"2 server spans; stderr:\n{srv['stderr']}")
    spans = server_spans(receiver)
    for i in (1, 2):
        (span,) = by_correlation(spans, f"served-{i}")
        assert span.attributes["http.route"] == "/items/<int:item_id>"
        assert span.attributes["http.response.status_code"] == 200
    assert not by_correlation(spans, "warm-up")  # served before init(): nothing to trace it with
    assert len(spans) == 2, [(s.name, s.attributes.get("http.route")) for s in spans]
    receiver.wait_for(lambda: sum(last_counts(receiver, "/items/<int:item_id>").values()) == 2, timeout=60,
                      message="the RED metric of the two requests")
    logs = receiver.wait_for(lambda: [rec for rec in receiver.logs() if str(rec.body) == "flask item 2"], timeout=60,
                             message="the request's log record")
    assert "served-2" in str(logs[0].attributes)
