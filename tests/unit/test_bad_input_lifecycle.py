"""Bad input in time: ``shutdown(timeout=...)`` with odd values, every API before ``init()``, after
``shutdown()``, and all of them at once from several threads while ``init()``/``shutdown()`` race.
"""

from __future__ import annotations

import io
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import otelkit
from otelkit import _init, pipeline
from otelkit._config import MAX_DURATION_SECONDS
from otelkit._correlation import is_valid_correlation_id

QUIET = {"traces_exporter": "console", "metrics_exporter": "none", "logs_exporter": "none", "instrument": (),
         "system_metrics": False, "service_name": "bad-input"}


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    """A clean otelkit and a fresh context; whatever a scope leaves attached is dropped with it."""
    from opentelemetry import context as otel_context

    _init.reset()
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)
        _init.reset()


@pytest.mark.parametrize("timeout", [math.inf, 1e10, 10**400, 604800.0 * 2], ids=["inf", "1e10", "10**400", "2weeks"])
def test_huge_shutdown_timeouts_still_flush_everything(timeout: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e10 s is beyond threading.TIMEOUT_MAX: every join() raised OverflowError, the providers were dropped
    # unflushed and the report said "nothing to shut down".
    otelkit.init(**QUIET)
    with otelkit.span("queued"):
        pass
    report = otelkit.shutdown(timeout=timeout)
    assert otelkit.get_settings() is None
    assert report["traces"].exported >= 1, str(report)  # process totals
    assert not report.timed_out
    assert report.deadline == pytest.approx(MAX_DURATION_SECONDS, abs=1.0)
    assert "queued" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", [math.nan, "abc", object(), [1]], ids=["nan", "str", "object", "list"])
def test_shutdown_timeout_that_is_not_a_number_uses_the_setting(timeout: Any,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    otelkit.init(**QUIET, shutdown_timeout=3.0)
    with otelkit.span("queued"):
        pass
    report = otelkit.shutdown(timeout=timeout)
    assert otelkit.get_settings() is None  # it really shut down (it used to return early and keep running)
    assert report.deadline == pytest.approx(3.0, abs=0.5), str(report)
    assert "queued" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", [-5, -math.inf, 0, 0.0, "-1", False])
def test_negative_or_zero_shutdown_timeout_returns_at_once(timeout: Any) -> None:
    otelkit.init(**QUIET)
    report = otelkit.shutdown(timeout=timeout)
    assert otelkit.get_settings() is None
    assert report.deadline == 0.0


def test_shutdown_timeout_is_keyword_only() -> None:
    # A bare number reads ambiguously (seconds? milliseconds, like the SDK's shutdown?): the name is required.
    with pytest.raises(TypeError):
        otelkit.shutdown(5)  # type: ignore[misc]


def test_shutdown_before_init_twice_and_after_shutdown() -> None:
    assert otelkit.shutdown().exported == 0
    assert otelkit.shutdown(timeout=-1).exported == 0
    otelkit.init(**QUIET)
    otelkit.shutdown(timeout=1)
    assert otelkit.shutdown(timeout=float("nan")).exported == 0


def _every_api() -> dict[str, Any]:
    """Call every public runtime entry point once; return what they gave."""
    out: dict[str, Any] = {}
    with otelkit.span("s", a=1, bad={"x": 1}) as span:
        out["span"] = span
    with pipeline.emit("q", system="redis") as msg:
        out["emit_cid"] = msg.correlation_id
    with pipeline.receive("q", msg.headers, system="redis") as rec:
        out["receive_cid"] = rec.correlation_id
    with pipeline.receive_batch("q", [msg.headers, {"traceparent": "junk"}], system="redis") as batch:
        out["batch"] = len(batch.messages)
    with pipeline.stage("enrich", source="api"):
        pass
    with pipeline.correlate() as cid:
        out["correlate"] = cid
    pipeline.discovered(3, source="api")
    out["correlation_id"] = otelkit.correlation_id()
    out["status"] = otelkit.integration_status()
    out["settings"] = otelkit.get_settings()
    record = logging.LogRecord("app", logging.INFO, __file__, 1, "m %s", ("x",), None)
    out["json"] = otelkit.JsonFormatter().format(record)
    logging.getLogger("app.lifecycle").warning("a log line %s", "x")
    return out


def _check(out: dict[str, Any]) -> None:
    assert out["receive_cid"] == out["emit_cid"] and is_valid_correlation_id(out["emit_cid"])
    assert out["batch"] == 2
    assert is_valid_correlation_id(out["correlate"])
    assert out["correlation_id"] is None  # nothing stays attached after the scopes (telemetry on or off)
    assert '"message": "m x"' in out["json"]


def test_every_api_before_init() -> None:
    out = _every_api()
    _check(out)
    assert out["settings"] is None


def test_every_api_after_shutdown_and_again_after_reinit() -> None:
    otelkit.init(**QUIET)
    otelkit.shutdown(timeout=1)
    _check(_every_api())
    otelkit.init(**QUIET)
    thread_out: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: thread_out.append(_every_api()))
    thread.start()
    thread.join(30)
    _check(thread_out[0])


def test_every_api_with_telemetry_disabled() -> None:
    otelkit.init(service_name="x", disabled=True)
    out = _every_api()
    assert out["receive_cid"] == out["emit_cid"]
    assert out["settings"] is not None and out["settings"].disabled


def _run_threads(targets: list[Callable[[], None]], timeout: float = 60.0) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: B036 - anything escaping is the failure under test
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


def test_apis_from_threads_while_init_and_shutdown_race(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())  # the destination line of each init()
    stop = threading.Event()
    rounds = [0]

    def worker() -> None:
        while not stop.is_set():
            _every_api()
            rounds[0] += 1

    def flipper(offset: int) -> None:
        for n in range(8):
            if (n + offset) % 3 == 0:
                otelkit.shutdown(timeout=0.5)
            elif (n + offset) % 3 == 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    otelkit.init(**{**QUIET, "traces_exporter": "none", "service_name": f"s{n % 2}"})
            else:
                with pytest.raises(otelkit.ConfigError):
                    otelkit.init(**{**QUIET, "metric_export_interval": float("nan")})

    def flippers_then_stop() -> None:
        errors = _run_threads([lambda i=i: flipper(i) for i in range(3)])  # type: ignore[misc]
        stop.set()
        if errors:
            raise errors[0]

    errors = _run_threads([worker, worker, worker, flippers_then_stop])
    assert not errors, errors
    assert rounds[0] > 0


def test_concurrent_identical_inits_configure_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    results: list[Any] = []
    errors = _run_threads([lambda: results.append(otelkit.init(**{**QUIET, "traces_exporter": "none"}))
                           for _ in range(6)])
    assert not errors
    assert len(results) == 6 and all(r == results[0] for r in results)
    assert stderr.getvalue().count("otelkit: bad-input") == 1
