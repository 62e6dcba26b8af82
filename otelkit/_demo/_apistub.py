"""A local stand-in for the three token APIs of the users' pipeline (seed 000).

Jupiter (prices), Helius (token metadata) and DexScreener (pairs/liquidity)
answer from one HTTP server on a free 127.0.0.1 port, with latencies in the
range such APIs show and failures that make the pipeline's retry and
dead-letter paths run:

- DexScreener is the slow source and rate-limits the first request for some
  tokens (429 with ``Retry-After``): transient, the retry succeeds.
- Helius answers 503 on the first request for some other tokens: transient.
- Helius does not know "poison" tokens (404): permanent, the event is
  dead-lettered.

Failures are a pure function of the seed, the token and how often it was
asked for, so a run is reproducible and the tests can rely on each path
happening.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# (low, high) latency in seconds per source; DexScreener is the slow one.
LATENCY = {"jupiter": (0.010, 0.040), "helius": (0.020, 0.060), "dexscreener": (0.120, 0.300)}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def token_mint(seed: int, index: int) -> str:
    """A Solana-looking mint address, deterministic in (seed, index)."""
    rng = random.Random(f"{seed}:{index}")
    return "".join(rng.choice(_B58) for _ in range(40)) + "pump"


def _bucket(seed: int, source: str, mint: str) -> int:
    digest = hashlib.sha256(f"{seed}:{source}:{mint}".encode()).digest()
    return digest[0] % 100


def is_poison(seed: int, mint: str) -> bool:
    """Helius answers 404 for this token: a permanent failure (about 1 in 10 tokens)."""
    return _bucket(seed, "poison", mint) < 10


def is_flaky(seed: int, source: str, mint: str) -> bool:
    """The first request for this token to this source fails transiently."""
    rates = {"dexscreener": 20, "helius": 10, "jupiter": 0}
    return _bucket(seed, source, mint) < rates.get(source, 0)


def is_down(seed: int, mint: str) -> bool:
    """DexScreener fails every request for this token (503): retries run out (about 1 in 20 tokens)."""
    return _bucket(seed, "down", mint) < 5


def _serve(n: int, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """One stand-in on its own loopback address (127.0.0.n) where the system routes 127/8 to loopback
    (Linux, containers), so each API is a distinct ``server.address`` on the dashboards and in the
    alerts, as the real hosts are; elsewhere (macOS) on 127.0.0.1, told apart by ``server.port``."""
    for host in (f"127.0.0.{n}", "127.0.0.1"):
        try:
            return ThreadingHTTPServer((host, 0), handler)
        except OSError:
            continue
    return ThreadingHTTPServer(("127.0.0.1", 0), handler)


class ApiStandIn:
    """Three HTTP servers, one per API, like three remote hosts: ``with ApiStandIn(seed) as api: api.urls``."""

    def __init__(self, seed: int = 7, *, latency_scale: float = 1.0) -> None:
        self.seed = seed
        self.latency_scale = latency_scale
        self.requests: Counter[tuple[str, int]] = Counter()  # (source, status) -> count
        self._asked: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._servers: dict[str, ThreadingHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        for n, source in enumerate(LATENCY, start=1):
            server = _serve(n, _make_handler(self))
            server.daemon_threads = True
            self._servers[source] = server
            self._threads.append(threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                                  name=f"otelkit-demo-{source}", daemon=True))

    @property
    def urls(self) -> dict[str, str]:
        """Base URL per source (``jupiter``, ``helius``, ``dexscreener``)."""
        return {source: f"http://{server.server_address[0]!s}:{server.server_address[1]}"
                for source, server in self._servers.items()}

    def __enter__(self) -> ApiStandIn:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for thread, server in zip(self._threads, self._servers.values(), strict=True):
            if thread.is_alive():
                server.shutdown()
                thread.join(timeout=5)
            server.server_close()

    def answer(self, source: str, mint: str) -> tuple[int, dict[str, str], dict[str, Any], float]:
        """Status, headers, JSON body and latency for one request (thread-safe)."""
        with self._lock:
            self._asked[(source, mint)] += 1
            nth = self._asked[(source, mint)]
            low, high = LATENCY[source]
            latency = self._rng.uniform(low, high) * self.latency_scale
        if source == "helius" and is_poison(self.seed, mint):
            return 404, {}, {"error": "token not found", "mint": mint}, latency
        if source == "dexscreener" and is_down(self.seed, mint):
            return 503, {}, {"error": "upstream unavailable"}, latency
        if nth == 1 and is_flaky(self.seed, source, mint):
            if source == "dexscreener":
                return 429, {"Retry-After": "1"}, {"error": "rate limited"}, latency / 4
            return 503, {}, {"error": "upstream unavailable"}, latency
        rng = random.Random(f"{self.seed}:{source}:{mint}")
        body: dict[str, Any]
        if source == "jupiter":
            body = {"data": {mint: {"id": mint, "price": round(rng.uniform(0.00001, 2.0), 8)}}}
        elif source == "helius":
            body = {"mint": mint, "symbol": "".join(rng.choice("ABCDEFGHKLMNPRSTWXYZ") for _ in range(4)),
                    "decimals": 6, "supply": rng.randrange(10**8, 10**10)}
        else:
            body = {"pairs": [{"dexId": rng.choice(["raydium", "orca", "meteora"]),
                               "liquidity": {"usd": round(rng.uniform(500, 250_000), 2)},
                               "volume": {"h24": round(rng.uniform(0, 1_000_000), 2)}}]}
        return 200, {}, body, latency


def _make_handler(api: ApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            route = _route(parts.path, parse_qs(parts.query))
            if route is None:
                self._send(404, {}, {"error": "no such route", "path": parts.path})
                return
            source, mint = route
            status, headers, body, latency = api.answer(source, mint)
            # Latency is the point of this server: the handler thread waits like a remote API would.
            time.sleep(latency)
            with api._lock:
                api.requests[(source, status)] += 1
            self._send(status, headers, body)

        def _send(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return  # the demo's terminal is for telemetry, not access logs

    return Handler


def _route(path: str, query: dict[str, list[str]]) -> tuple[str, str] | None:
    """Map the public-looking paths of the three APIs to (source, mint)."""
    segments = [s for s in path.split("/") if s]
    if segments[:3] == ["jupiter", "v6", "price"] and query.get("ids"):
        return "jupiter", query["ids"][0]
    if segments[:3] == ["helius", "v0", "token-metadata"] and query.get("mint"):
        return "helius", query["mint"][0]
    if segments[:4] == ["dexscreener", "latest", "dex", "tokens"] and len(segments) == 5:
        return "dexscreener", segments[4]
    return None
