"""The bundled stack's alert webhook sink and runbook server (stdlib only).

Alertmanager posts every notification to ``POST /alerts``; each is printed on
stdout as one JSON line (``docker compose logs -f alert-sink``) and the last
ones are kept in memory for ``GET /alerts``. ``GET /runbooks/<Name>.md`` serves
the runbooks the alert rules link to (``runbook_url``), read from a directory
mounted read-only. ``GET /-/healthy`` answers ``ok`` for the healthcheck.

Usage: ``python alert_sink.py [--host H] [--port P] [--runbooks DIR] [--keep N]``
(port 0 picks a free one; the chosen address is printed on the first line).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# Runbook names are alert names: letters and digits, then ".md". Anything else
# (dots, slashes, encoded separators) is refused before touching the disk.
_RUNBOOK = re.compile(r"^/runbooks/([A-Za-z0-9][A-Za-z0-9_-]{0,99})\.md$")
_MAX_BODY = 1 << 20


class AlertSink(ThreadingHTTPServer):
    """The HTTP server holding the received notifications."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], runbooks: Path | None, keep: int) -> None:
        super().__init__(address, _Handler)
        self.runbooks = runbooks
        self.received: deque[dict[str, Any]] = deque(maxlen=keep)
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: AlertSink
    server_version = "otelkit-alert-sink"

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines would drown the alerts in the compose logs.
        return

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/-/healthy":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
            return
        if self.path == "/alerts":
            with self.server.lock:
                body = json.dumps(list(self.server.received)).encode()
            self._send(200, body, "application/json")
            return
        match = _RUNBOOK.match(self.path)
        if match and self.server.runbooks is not None:
            path = self.server.runbooks / f"{match.group(1)}.md"
            if path.is_file():
                self._send(200, path.read_bytes(), "text/markdown; charset=utf-8")
                return
        self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        if self.path != "/alerts":
            self._send(404, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            self._send(400, b"expected a JSON body of at most 1 MiB\n", "text/plain; charset=utf-8")
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._send(400, f"invalid JSON: {exc}\n".encode(), "text/plain; charset=utf-8")
            return
        if not isinstance(payload, dict):
            self._send(400, b"expected a JSON object (Alertmanager webhook payload)\n", "text/plain; charset=utf-8")
            return
        with self.server.lock:
            self.server.received.append(payload)
        print(json.dumps(payload, sort_keys=True), flush=True)
        self._send(200, b"ok\n", "text/plain; charset=utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the sink until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--runbooks", type=Path, default=None, help="directory of <AlertName>.md files")
    parser.add_argument("--keep", type=int, default=200, help="notifications kept for GET /alerts")
    args = parser.parse_args(argv)
    server = AlertSink((args.host, args.port), args.runbooks, max(1, args.keep))
    host, port = server.server_address[:2]
    print(f"alert-sink listening on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
