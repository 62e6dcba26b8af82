"""Shared fixtures: environment scrub, OTel reset, and the real services on this machine.

Under ``CI=true`` a service that does not answer fails the test; on a laptop
without it the test is skipped with the reason.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
    "mariadb": ("127.0.0.1", 3306),
    "mosquitto": ("127.0.0.1", 1883),
}

_SCRUBBED_PREFIXES = ("OTEL_", "OTELKIT_", "SENTRY_")


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no OTEL_*, OTELKIT_* or SENTRY_* variable from the machine."""
    for key in list(os.environ):
        if key.startswith(_SCRUBBED_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    yield


# Opt-in resets, requested per module with ``pytestmark = pytest.mark.usefixtures("fresh_otelkit")``:
# not autouse, because some tests deliberately keep otelkit state across steps. otelkit is imported
# inside them so that loading this conftest stays cheap and imports nothing of otelkit's.


@pytest.fixture
def fresh_otelkit() -> Iterator[None]:
    """otelkit un-initialised (``_init.reset()``) before and after the test."""
    from otelkit import _init

    _init.reset()
    yield
    _init.reset()


@pytest.fixture
def fresh_stats() -> Iterator[None]:
    """The export self-metrics counters (``STATS``) zeroed before and after the test."""
    from otelkit._export.stats import STATS

    STATS.reset()
    yield
    STATS.reset()


@pytest.fixture
def fresh_otelkit_and_stats() -> Iterator[None]:
    """``fresh_otelkit`` then ``fresh_stats``, also on teardown: what ``reset()`` flushes is not counted."""
    from otelkit import _init
    from otelkit._export.stats import STATS

    _init.reset()
    STATS.reset()
    yield
    _init.reset()
    STATS.reset()


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str) -> tuple[str, int]:
    """Return (host, port) of a local service; skip without it, fail under CI=true."""
    host, port = SERVICES[name]
    if not _reachable(host, port):
        message = f"{name} is not reachable on {host}:{port}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing service is a failure)")
        pytest.skip(message)
    return host, port


@pytest.fixture(scope="session")
def redis_url() -> str:
    host, port = require_service("redis")
    return f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    host, port = require_service("postgres")
    user = os.environ.get("PGUSER", "postgres")
    return f"host={host} port={port} dbname=test user={user}"


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    host, port = require_service("rabbitmq")
    return f"amqp://guest:guest@{host}:{port}/%2F"


@pytest.fixture(scope="session")
def nats_url() -> str:
    host, port = require_service("nats")
    return f"nats://{host}:{port}"
