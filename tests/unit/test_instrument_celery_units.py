"""The celery integration without a broker: status and selection, lazy import, the contrib step-aside, and the
publish -> run path on Celery's in-memory transport (``memory://``), run by Celery's own task tracer."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from otelkit import _instrument
from otelkit._config import resolve
from otelkit._names import CORRELATION_HEADER, SENT_AT_HEADER
from otelkit.testing import CapturedTelemetry

celery = pytest.importorskip("celery")


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    _instrument.uninstrument_all()
    yield
    _instrument.uninstrument_all()


def _status(**kwargs: Any) -> _instrument.IntegrationStatus:
    kwargs.setdefault("system_metrics", False)
    return {s.name: s for s in _instrument.instrument_all(resolve(**kwargs), None, None)}["celery"]


def test_enabled_when_installed_and_disabled_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    status = _status()
    assert status.state == "enabled" and status.reason.startswith(f"celery {celery.__version__}")
    assert _status(instrument=["redis"]).state == "disabled"
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "celery")
    status = _status()
    assert status.state == "disabled" and "'celery'" in status.reason


def test_init_does_not_import_celery_and_connects_when_the_app_does() -> None:
    code = """
import json, sys
import otelkit
otelkit.init(service_name="x", traces_exporter="none", metrics_exporter="none", logs_exporter="none",
             system_metrics=False)
before = "celery" in sys.modules
status = {s.name: s.reason for s in otelkit.integration_status()}["celery"]
from celery import signals
uids = [r[0][0] for r in signals.task_prerun.receivers]
print(json.dumps({"before": before, "status": status, "connected": "otelkit-celery-task_prerun" in uids}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"before": False, "status": result["status"], "connected": True}
    assert "when the application imports celery" in result["status"]


def _app() -> Any:
    app = celery.Celery(f"t{uuid.uuid4().hex[:6]}", broker="memory://")
    app.conf.task_ignore_result = True

    @app.task(name="t.ok", shared=False)
    def ok(token: str) -> str:
        return token

    @app.task(name="t.flaky", shared=False, bind=True, default_retry_delay=0, max_retries=3)
    def flaky(self: Any) -> None:
        if self.request.retries < 1:
            raise self.retry(exc=ConnectionError("down"))

    return app


def _run_one(app: Any, queue: str) -> None:
    """Fetch one message from ``queue`` and run it with Celery's worker tracer (what a worker does)."""
    from celery.app.trace import build_tracer

    with app.connection_for_read() as conn:
        message = conn.SimpleQueue(queue, no_ack=True).get(timeout=5)
        headers = message.headers
        args, kwargs, _embed = message.decode()
        request = dict(headers, delivery_info={"routing_key": queue, "exchange": ""}, args=args, kwargs=kwargs,
                       correlation_id=headers["id"])
        task = app.tasks[headers["task"]]
        build_tracer(task.name, task, app=app, eager=False)(headers["id"], args, kwargs, request)


def test_publish_and_run_are_pipeline_messages(otelkit_capture: CapturedTelemetry) -> None:
    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)
    app = _app()
    queue = f"q-{uuid.uuid4().hex[:6]}"
    headers: dict[str, Any] = {}
    with app.connection_for_write() as conn:
        result = app.send_task("t.flaky", queue=queue, connection=conn, headers=headers)
    _run_one(app, queue)  # attempt 1: retries (re-publishes)
    _run_one(app, queue)  # attempt 2: succeeds
    spans = otelkit_capture.spans
    sends = [s for s in spans if s.name == f"send {queue}"]
    runs = [s for s in spans if s.name == f"process {queue}"]
    assert len(sends) == 2 and len(runs) == 2
    assert [s.attributes["otelkit.message.attempt"] for s in runs] == [1, 2]
    assert [s.attributes["otelkit.outcome"] for s in runs] == ["retry", "ack"]
    assert {s.attributes["messaging.message.id"] for s in sends + runs} == {result.id}
    cid = sends[0].attributes["messaging.message.conversation_id"]
    assert all(s.attributes["messaging.message.conversation_id"] == cid for s in sends + runs)
    # each run: a root span linked to the send of its message
    for run, send in zip(runs, sends, strict=True):
        assert run.parent is None
        assert [link.context.span_id for link in run.links] == [send.context.span_id]


def test_retry_keeps_the_original_send_time(otelkit_capture: CapturedTelemetry) -> None:
    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)
    app = _app()
    queue = f"q-{uuid.uuid4().hex[:6]}"
    with app.connection_for_write() as conn:
        app.send_task("t.flaky", queue=queue, connection=conn)
    with app.connection_for_read() as conn:
        first = conn.SimpleQueue(queue, no_ack=False).get(timeout=5)
        sent_at = first.headers[SENT_AT_HEADER]
        cid = first.headers[CORRELATION_HEADER]
        first.requeue()
    _run_one(app, queue)
    with app.connection_for_read() as conn:
        retry = conn.SimpleQueue(queue, no_ack=True).get(timeout=5)
    assert retry.headers[SENT_AT_HEADER] == sent_at
    assert retry.headers[CORRELATION_HEADER] == cid


def test_contrib_instrumentation_owns_the_spans(otelkit_capture: CapturedTelemetry) -> None:
    contrib = pytest.importorskip("opentelemetry.instrumentation.celery")
    instrumentor = contrib.CeleryInstrumentor()
    instrumentor.instrument()
    try:
        status = _status(instrument=["celery"])
        assert "its spans are kept" in status.reason
        app = _app()
        queue = f"q-{uuid.uuid4().hex[:6]}"
        with app.connection_for_write() as conn:
            app.send_task("t.ok", args=["x"], queue=queue, connection=conn)
        _run_one(app, queue)
    finally:
        instrumentor.uninstrument()
    names = sorted(s.name for s in otelkit_capture.spans)
    assert names == ["apply_async/t.ok", "run/t.ok"]  # contrib's two, none of otelkit's


def test_an_eager_run_is_a_child_of_the_caller(otelkit_capture: CapturedTelemetry) -> None:
    import otelkit

    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)
    app = _app()
    app.conf.task_always_eager = True
    with otelkit.span("handle request") as outer:
        assert app.tasks["t.ok"].delay("x").get() == "x"
    runs = [s for s in otelkit_capture.spans if s.name.startswith("process ")]
    assert len(runs) == 1 and runs[0].parent is not None
    assert runs[0].parent.span_id == outer.get_span_context().span_id
    assert runs[0].attributes["otelkit.outcome"] == "ack"


def test_a_failed_publish_ends_its_span_and_leaves_no_context_behind(otelkit_capture: CapturedTelemetry) -> None:
    import otelkit

    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)
    app = celery.Celery(f"t{uuid.uuid4().hex[:6]}", broker="redis://127.0.0.1:1/0")  # nothing listens on port 1
    app.conf.update(broker_connection_timeout=1, broker_connection_retry=False, broker_connection_max_retries=0)
    with pytest.raises(Exception):  # noqa: B017 - kombu's OperationalError or the socket error, by version
        app.send_task("t.ok", args=["x"], queue="q-failed", retry=False)
    assert otelkit.correlation_id() is None  # the emission's baggage was detached
    (send,) = [s for s in otelkit_capture.spans if s.name == "send q-failed"]
    assert send.status.status_code.name == "ERROR"
    assert send.attributes["server.address"] == "127.0.0.1" and send.attributes["server.port"] == 1


def test_a_task_message_carries_its_id_once_and_each_task_its_own_attributes(
        otelkit_capture: CapturedTelemetry) -> None:
    from otelkit._pipeline.scopes import MESSAGE_ID_HEADER

    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)
    app = _app()
    queue = f"q-{uuid.uuid4().hex[:6]}"
    with app.connection_for_write() as conn:
        ok = app.send_task("t.ok", args=["x"], queue=queue, connection=conn)
        flaky = app.send_task("t.flaky", queue=queue, connection=conn)
    with app.connection_for_read() as conn:
        simple = conn.SimpleQueue(queue, no_ack=False)
        messages = [simple.get(timeout=5) for _ in range(2)]
        for message in messages:
            # Celery's own ``id`` header carries the task id: otelkit adds no second copy of it
            assert MESSAGE_ID_HEADER not in message.headers and message.headers["id"] in (ok.id, flaky.id)
            message.requeue()
    _run_one(app, queue)
    _run_one(app, queue)  # t.flaky retries: its re-publish and that run are not needed here
    spans = [s for s in otelkit_capture.spans if s.name in (f"send {queue}", f"process {queue}")]
    by_id: dict[str, set[object]] = {}
    for span in spans:
        by_id.setdefault(str(span.attributes["messaging.message.id"]), set()).add(span.attributes["celery.task_name"])
    # the span still names its message, and one task's name never appears on another's spans
    assert by_id[ok.id] == {"t.ok"} and by_id[flaky.id] == {"t.flaky"}
    assert {s.kind.name for s in spans if s.attributes["messaging.message.id"] == ok.id} == {"PRODUCER", "CONSUMER"}


def test_backend_calls_run_suppressed_except_the_disabled_backend() -> None:
    from celery.backends.base import DisabledBackend

    from otelkit._instrument import _common
    from otelkit._instrument import celery as integration

    _instrument.instrument_all(resolve(instrument=["celery"], system_metrics=False), None, None)

    class Stored(DisabledBackend):  # stands in for a backend that stores (another type than the disabled one)
        pass

    app = _app()

    def seen(*_args: Any, **_kwargs: Any) -> bool:
        return _common.instrumentation_enabled()

    # No result backend: nothing to suppress; any other backend's bookkeeping runs suppressed, then restored.
    assert integration._quiet_backend(seen, DisabledBackend(app), (), {}) is True
    assert integration._quiet_backend(seen, Stored(app), (), {}) is False
    assert _common.instrumentation_enabled()
