"""The stack's alert-sink (collector/alertmanager/alert_sink.py), run as a real subprocess.

It receives Alertmanager's webhook and serves the runbooks the alert rules link to.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from _stacklib import COLLECTOR, RUNBOOKS

SINK = COLLECTOR / "alertmanager" / "alert_sink.py"

# A trimmed Alertmanager webhook payload (version 4).
PAYLOAD = {
    "version": "4", "status": "firing", "receiver": "webhook-critical",
    "groupLabels": {"alertname": "OtelkitComponentDown"},
    "commonLabels": {"alertname": "OtelkitComponentDown", "severity": "critical", "job": "tempo"},
    "alerts": [{"status": "firing", "labels": {"alertname": "OtelkitComponentDown", "job": "tempo"},
                "annotations": {"runbook_url": "http://127.0.0.1:9099/runbooks/OtelkitComponentDown.md"}}],
}


@pytest.fixture()
def sink() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    proc = subprocess.Popen(
        [sys.executable, str(SINK), "--host", "127.0.0.1", "--port", "0", "--runbooks", str(RUNBOOKS), "--keep", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server is bound (or the process died)
        assert first.startswith("alert-sink listening on http://127.0.0.1:"), first + proc.stderr.read()
        yield first.split()[-1], proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_receives_alerts_and_prints_them(sink: tuple[str, subprocess.Popen[str]]) -> None:
    base, proc = sink
    assert _get(f"{base}/-/healthy") == (200, b"ok\n")
    assert _get(f"{base}/alerts") == (200, b"[]")
    assert _post(f"{base}/alerts", json.dumps(PAYLOAD).encode()) == 200
    status, body = _get(f"{base}/alerts")
    assert status == 200 and json.loads(body) == [PAYLOAD]
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == PAYLOAD  # one JSON line per notification
    # Only the last --keep notifications are kept.
    for i in range(3):
        assert _post(f"{base}/alerts", json.dumps({**PAYLOAD, "groupKey": str(i)}).encode()) == 200
    assert [a["groupKey"] for a in json.loads(_get(f"{base}/alerts")[1])] == ["1", "2"]


def test_rejects_bad_payloads(sink: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = sink
    assert _post(f"{base}/alerts", b"{not json") == 400
    assert _post(f"{base}/alerts", b"[1, 2]") == 400
    assert _post(f"{base}/other", b"{}") == 404
    assert json.loads(_get(f"{base}/alerts")[1]) == []


def test_serves_runbooks_and_nothing_else(sink: tuple[str, subprocess.Popen[str]]) -> None:
    base, _ = sink
    status, body = _get(f"{base}/runbooks/OtelkitComponentDown.md")
    assert status == 200
    assert body == (RUNBOOKS / "OtelkitComponentDown.md").read_bytes()
    for path in ("/runbooks/../../pyproject.toml", "/runbooks/%2e%2e%2fpyproject.toml", "/runbooks/Nope.md",
                 "/runbooks/OtelkitComponentDown.txt", "/etc/passwd"):
        assert _get(base + path)[0] == 404, path
