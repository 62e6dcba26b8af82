"""Shared fixtures: environment scrub, OTel reset, and the real services on this machine.

Under ``CI=true`` a service or tool that does not answer fails the test; on a laptop
without it the test is skipped with the reason. Only what cannot exist on the CI machine
at all (a Docker engine, an otelcol-contrib binary) is skipped there too, with the reason,
which ``-ra`` prints in the summary.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Generator, Iterator
from typing import Any, NoReturn

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


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Reports must be UTF-8: the suite feeds otelkit undecodable bytes on purpose (surrogate-escaped log
    messages), and pytest-xdist cannot send a captured line holding a lone surrogate to the controller.
    Such characters are shown escaped (``\\udcff``); every other report is untouched."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8(content)) for title, content in report.sections]
    if report.longrepr is not None:
        text = str(report.longrepr)
        if _utf8(text) != text:
            report.longrepr = _utf8(text)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts with no OTEL_*, OTELKIT_* or SENTRY_* variable from the machine."""
    for key in list(os.environ):
        if key.startswith(_SCRUBBED_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    yield


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_otelkit_uninitialised() -> Iterator[None]:
    """No test module hands otelkit's process state to the next one in the same (xdist) worker.

    A module that calls ``init()`` in-process and never resets left every integration enabled with the
    configuration read then: the next module's ``instrument_all`` only re-points an enabled integration,
    so e.g. the httpx header-capture test, run first in its module after such a module, saw the capture
    lists of the earlier ``init()`` (none) instead of its own (tests/integration/test_xdist_order.py).
    """
    yield
    import sys

    if "otelkit._init" in sys.modules:  # a module that never imported otelkit has nothing to reset
        from otelkit import _init

        _init.reset()


# Opt-in resets, requested per module with ``pytestmark = pytest.mark.usefixtures("fresh_otelkit")``:
# not autouse, because some tests deliberately keep otelkit state across steps. otelkit is imported
# inside them so that loading this conftest stays cheap and imports nothing of otelkit's.


@pytest.fixture
def swap_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, str]], None]]:
    """``swap(env)`` puts ``env`` in place of ``os.environ`` for the test.

    At the end, a module first imported meanwhile that did ``from os import environ`` (opentelemetry.util.http,
    the contrib instrumentations) would keep the stand-in for good, and every later test's ``setenv`` would be
    invisible to it (an httpx header-capture test after such a test, in the same process, captured nothing):
    those bindings are pointed back at the real ``os.environ``.
    """
    real = os.environ
    swapped: list[dict[str, str]] = []

    def swap(env: dict[str, str]) -> None:
        monkeypatch.setattr(os, "environ", env)
        swapped.append(env)

    yield swap
    for module in list(sys.modules.values()):
        if any(getattr(module, "environ", None) is env for env in swapped):
            module.environ = real


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


def missing(message: str) -> NoReturn:
    """Something a package registry can install (a service, a tool) is absent here.

    Skips with ``message`` on a laptop; fails under ``CI=true``, where it must run.
    """
    if IN_CI:
        pytest.fail(f"{message} (CI=true: it can be installed, so its absence is a failure, not a skip)")
    pytest.skip(message)


def cannot_exist_here(message: str) -> NoReturn:
    """Skip, under ``CI=true`` too, for what cannot exist on this kind of machine; ``message`` says why."""
    pytest.skip(f"{message} [allowed under CI=true: cannot exist on this machine]" if IN_CI else message)


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
        missing(f"{name} is not reachable on {host}:{port}")
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
