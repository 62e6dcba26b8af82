"""Where the demo pipeline queues and stores: Redis and PostgreSQL, or stand-ins.

The real services are used when they answer; otherwise a
``multiprocessing`` queue stands in for the Redis list and an SQLite file for
PostgreSQL, so ``otelkit demo`` runs on a bare laptop. The pipeline code in
:mod:`otelkit._demo._app` sees the same small interface either way.

Every object here is picklable, so the worker processes (spawned, not forked)
receive it as an argument and open their own connections.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import socket
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=3"


def tcp_reachable(host: str, port: int, timeout: float = 0.3) -> bool:
    """One bounded TCP connect: does anything listen there?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Queue(Protocol):
    """The queue between the discoverer and the workers, and its dead-letter list."""

    description: str
    system: str  # messaging.system of the spans: "redis", or "multiprocessing" for the stand-in

    def connect(self) -> None: ...
    def put(self, raw: str) -> None: ...
    def get(self, timeout: float) -> str | None: ...
    def dead_letter(self, message: dict[str, Any]) -> None: ...
    def length(self) -> int: ...
    def dead_letters(self) -> int: ...
    def mark_seen(self, mint: str) -> bool: ...
    def cleanup(self) -> None: ...


class Store(Protocol):
    """The database the workers write enriched tokens to."""

    description: str

    def connect(self) -> None: ...
    def create(self) -> None: ...
    def write(self, row: dict[str, Any]) -> None: ...
    def count(self) -> int: ...
    def cleanup(self) -> None: ...


# --- Redis --------------------------------------------------------------------------------------


class RedisQueue:
    """A Redis list (LPUSH/BRPOP), a dead-letter list and a discovery set (SADD), as in seed 000."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.key = f"otelkit-demo:{run_id}:tokens"
        self.dlq_key = f"otelkit-demo:{run_id}:dead-letter"
        self.seen_key = f"otelkit-demo:{run_id}:seen"
        self.description = f"Redis {_redact_url(url)} (list {self.key})"
        self.system = "redis"
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def connect(self) -> None:
        import redis

        self._client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=3)

    def put(self, raw: str) -> None:
        self._client.lpush(self.key, raw)

    def get(self, timeout: float) -> str | None:
        item = self._client.brpop([self.key], timeout=max(timeout, 0.01))
        if item is None:
            return None
        return str(item[1].decode() if isinstance(item[1], bytes) else item[1])

    def dead_letter(self, message: dict[str, Any]) -> None:
        pipe = self._client.pipeline()
        pipe.lpush(self.dlq_key, json.dumps(message))
        pipe.ltrim(self.dlq_key, 0, 9_999)  # bounded, even with --continuous for days
        pipe.execute()

    def length(self) -> int:
        return int(self._client.llen(self.key))

    def dead_letters(self) -> int:
        return int(self._client.llen(self.dlq_key))

    def mark_seen(self, mint: str) -> bool:
        # One set per hour with a TTL: a bounded dedup window, even with --continuous.
        key = f"{self.seen_key}:{int(time.time() // 3600)}"
        pipe = self._client.pipeline()
        pipe.sadd(key, mint)
        pipe.expire(key, 7200)
        added, _ = pipe.execute()
        return bool(added)

    def cleanup(self) -> None:
        seen = list(self._client.scan_iter(match=f"{self.seen_key}:*", count=100))
        self._client.delete(self.key, self.dlq_key, *seen)


class PostgresStore:
    """One table per run, dropped at the end unless ``--keep``."""

    def __init__(self, dsn: str, run_id: str) -> None:
        self.dsn = dsn
        self.table = f"otelkit_demo_tokens_{run_id}"
        self.description = f"PostgreSQL {_redact_dsn(dsn)} (table {self.table})"
        self._conn: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_conn": None}

    def connect(self) -> None:
        import psycopg2

        self._conn = psycopg2.connect(self.dsn)

    def create(self) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (mint text PRIMARY KEY, symbol text, price double precision,"
                " liquidity_usd double precision, attempts integer, enriched_at timestamptz DEFAULT now())")

    def write(self, row: dict[str, Any]) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO {self.table} (mint, symbol, price, liquidity_usd, attempts) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (mint) DO UPDATE SET symbol = EXCLUDED.symbol, price = EXCLUDED.price,"
                " liquidity_usd = EXCLUDED.liquidity_usd, attempts = EXCLUDED.attempts, enriched_at = now()",
                (row["mint"], row["symbol"], row["price"], row["liquidity_usd"], row["attempts"]))

    def count(self) -> int:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table}")
            return int(cur.fetchone()[0])

    def cleanup(self) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.table}")


# --- Stand-ins ----------------------------------------------------------------------------------


class LocalQueue:
    """In-process stand-in for the Redis list: ``multiprocessing`` queues shared with the workers."""

    def __init__(self, ctx: Any) -> None:
        self.description = "in-process stand-in (multiprocessing queue)"
        self.system = "multiprocessing"
        self._queue = ctx.Queue()
        self._dlq = ctx.Queue()
        self._dead = ctx.Value("i", 0)
        self._seen: set[str] = set()  # only the discoverer process uses it

    def connect(self) -> None:
        return None

    def put(self, raw: str) -> None:
        self._queue.put(raw)

    def get(self, timeout: float) -> str | None:
        try:
            raw = self._queue.get(timeout=max(timeout, 0.01))
        except queue_mod.Empty:
            return None
        return str(raw)

    def dead_letter(self, message: dict[str, Any]) -> None:
        self._dlq.put(json.dumps(message))
        with self._dead.get_lock():
            self._dead.value += 1

    def length(self) -> int:
        try:
            return int(self._queue.qsize())
        except NotImplementedError:  # macOS has no sem_getvalue
            return 0

    def dead_letters(self) -> int:
        return int(self._dead.value)

    def mark_seen(self, mint: str) -> bool:
        if mint in self._seen:
            return False
        self._seen.add(mint)
        return True

    def cleanup(self) -> None:
        return None


class SqliteStore:
    """Stand-in for PostgreSQL: an SQLite file in the run's temporary directory."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.table = "tokens"
        self.description = f"SQLite stand-in ({path})"
        self._conn: sqlite3.Connection | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_conn": None}

    def connect(self) -> None:
        # Several worker processes write: wait for the lock instead of failing at once.
        self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SqliteStore.connect() was not called")
        return self._conn

    def create(self) -> None:
        self._db().execute(
            "CREATE TABLE IF NOT EXISTS tokens (mint TEXT PRIMARY KEY, symbol TEXT, price REAL,"
            " liquidity_usd REAL, attempts INTEGER, enriched_at TEXT DEFAULT CURRENT_TIMESTAMP)")

    def write(self, row: dict[str, Any]) -> None:
        import otelkit

        sql = "INSERT OR REPLACE INTO tokens (mint, symbol, price, liquidity_usd, attempts) VALUES (?, ?, ?, ?, ?)"
        # sqlite3 has no otelkit instrumentation: a span by hand, as user code would do it.
        with otelkit.span("INSERT tokens", **{"db.system.name": "sqlite", "db.operation.name": "INSERT",
                                              "db.collection.name": "tokens", "db.query.text": sql}):
            self._db().execute(sql, (row["mint"], row["symbol"], row["price"], row["liquidity_usd"],
                                     row["attempts"]))

    def count(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM tokens").fetchone()[0])

    def cleanup(self) -> None:
        if self._conn is not None:
            self._conn.close()
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass


# --- Choice -------------------------------------------------------------------------------------


@dataclass
class Choice:
    """What the demo uses and why (printed for the user)."""

    kind: str  # "redis" | "postgres" | "local"
    target: str | None
    reason: str


def choose_redis(flag: str | None) -> Choice:
    """``--redis`` > ``$REDIS_URL`` > the local default when it answers > the stand-in."""
    if flag is not None and flag.lower() in ("none", "off", "local", ""):
        return Choice("local", None, "--redis none")
    url = flag or os.environ.get("REDIS_URL")
    origin = "--redis" if flag else "REDIS_URL"
    if url:
        parts = urlsplit(url)
        if tcp_reachable(parts.hostname or "127.0.0.1", parts.port or 6379, timeout=1.0):
            return Choice("redis", url, f"from {origin}")
        return Choice("local", None, f"{origin}={_redact_url(url)} is not reachable")
    if tcp_reachable("127.0.0.1", 6379):
        return Choice("redis", DEFAULT_REDIS_URL, "listening on 127.0.0.1:6379")
    return Choice("local", None, "nothing listens on 127.0.0.1:6379 (pass --redis URL or set REDIS_URL)")


def choose_postgres(flag: str | None) -> Choice:
    """``--postgres`` > ``$DATABASE_URL`` > the local default when it answers > SQLite."""
    if flag is not None and flag.lower() in ("none", "off", "local", "sqlite", ""):
        return Choice("local", None, "--postgres none")
    dsn = flag or os.environ.get("DATABASE_URL")
    origin = "--postgres" if flag else "DATABASE_URL"
    if dsn:
        host, port = _dsn_address(dsn)
        if tcp_reachable(host, port, timeout=1.0):
            return Choice("postgres", dsn, f"from {origin}")
        return Choice("local", None, f"{origin}={_redact_dsn(dsn)} is not reachable")
    if tcp_reachable("127.0.0.1", 5432):
        return Choice("postgres", DEFAULT_POSTGRES_DSN, "listening on 127.0.0.1:5432")
    return Choice("local", None, "nothing listens on 127.0.0.1:5432 (pass --postgres DSN or set DATABASE_URL)")


def _dsn_address(dsn: str) -> tuple[str, int]:
    if "://" in dsn:
        parts = urlsplit(dsn)
        return parts.hostname or "127.0.0.1", parts.port or 5432
    fields = dict(item.split("=", 1) for item in dsn.split() if "=" in item)
    return fields.get("host", "127.0.0.1"), int(fields.get("port", "5432"))


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _redact_dsn(dsn: str) -> str:
    if "://" in dsn:
        return _redact_url(dsn)
    return " ".join("password=***" if item.startswith("password=") else item for item in dsn.split())
