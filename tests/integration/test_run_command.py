"""``otelkit run -- COMMAND``: real programs, servers and workers started under otelkit, through rotel.

Every program here uses only the OpenTelemetry API (or nothing at all): the telemetry comes from
``otelkit run``'s start-up hook, in the process it starts and in the worker processes those start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otelkit.testing._receiver import ReceivedSpan, RotelCollector, free_port

BIN = Path(sys.executable).parent
TIMEOUT = 120


def _env(collector: RotelCollector, service: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_SERVICE_NAME": service, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTELKIT_SYSTEM_METRICS": "false",
                "OTEL_METRIC_EXPORT_INTERVAL": "60000", "PYTHONPATH": str(tmp_path),
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra)
    return env


def _otelkit_run(*command: str) -> list[str]:
    return [str(BIN / "otelkit"), "run", "--", *command]


def _spans(collector: RotelCollector, name: str) -> list[ReceivedSpan]:
    return [s for s in collector.receiver.spans() if s.name == name]


def _write(tmp_path: Path, name: str, source: str) -> None:
    (tmp_path / name).write_text(textwrap.dedent(source))


WORK = """
    import os, sys
    from opentelemetry import trace
    with trace.get_tracer("zc").start_as_current_span(sys.argv[1] if len(sys.argv) > 1 else "zc-work") as span:
        span.set_attribute("zc.pid", os.getpid())
    print("program ran", flush=True)
"""


def test_a_python_module_gets_telemetry_without_code(otelkit_collector: RotelCollector, tmp_path: Path) -> None:
    pkg = tmp_path / "zcmod"
    pkg.mkdir()
    _write(pkg, "__init__.py", "")
    _write(pkg, "__main__.py", WORK)
    proc = subprocess.run(_otelkit_run(sys.executable, "-m", "zcmod", "zc-module-work"),
                          env=_env(otelkit_collector, "zc-module",
                                   tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "program ran" in proc.stdout
    spans = otelkit_collector.receiver.wait_for(lambda: _spans(otelkit_collector, "zc-module-work"), timeout=60)
    assert len(spans) == 1 and spans[0].resource["service.name"] == "zc-module"


def test_the_programs_own_init_wins_with_one_pipeline(otelkit_collector: RotelCollector, tmp_path: Path) -> None:
    _write(tmp_path, "app.py", """
        import otelkit
        otelkit.init(service_name="from-the-program")
        from opentelemetry import trace
        with trace.get_tracer("zc").start_as_current_span("zc-own-init"):
            pass
        print(otelkit.get_settings().service_name, flush=True)
    """)
    proc = subprocess.run(_otelkit_run(sys.executable, str(tmp_path / "app.py")),
                          env=_env(otelkit_collector, "from-the-environment", tmp_path), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "from-the-program"
    spans = otelkit_collector.receiver.wait_for(lambda: _spans(otelkit_collector, "zc-own-init"), timeout=60)
    # Flushed at exit: every span is in by now. Exactly one copy, under the program's own name.
    assert [s.resource["service.name"] for s in _spans(otelkit_collector, "zc-own-init")] == ["from-the-program"]
    assert len(spans) == 1


def test_broken_telemetry_never_stops_the_program(tmp_path: Path, otelkit_collector: RotelCollector) -> None:
    _write(tmp_path, "app.py", WORK)
    env = _env(otelkit_collector, "zc-broken", tmp_path, OTEL_TRACES_SAMPLER="no-such-sampler")
    proc = subprocess.run(_otelkit_run(sys.executable, str(tmp_path / "app.py")), env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "program ran" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("otelkit run:")]
    assert len(warnings) == 1 and "OTEL_TRACES_SAMPLER" in warnings[0], proc.stderr


def test_the_applications_own_sitecustomize_still_runs(otelkit_collector: RotelCollector, tmp_path: Path) -> None:
    # The launcher itself also starts with the user's PYTHONPATH: print only in the program's process.
    _write(tmp_path, "sitecustomize.py",
           "import sys\nif sys.argv[0].endswith('app.py'):\n    print('own sitecustomize', flush=True)\n")
    _write(tmp_path, "app.py", WORK)
    proc = subprocess.run(_otelkit_run(sys.executable, str(tmp_path / "app.py"), "zc-chained"),
                          env=_env(otelkit_collector, "zc-chain",
                                   tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:2] == ["own sitecustomize", "program ran"]
    otelkit_collector.receiver.wait_for(lambda: _spans(otelkit_collector, "zc-chained"), timeout=60)


def test_usage_and_exit_codes() -> None:
    no_command = subprocess.run([str(BIN / "otelkit"), "run"], capture_output=True, text=True, timeout=TIMEOUT)
    assert no_command.returncode == 2 and "no command given" in no_command.stderr
    missing = subprocess.run(_otelkit_run("no-such-program-" + uuid.uuid4().hex[:6]), capture_output=True,
                             text=True, timeout=TIMEOUT)
    assert missing.returncode == 127 and "command not found" in missing.stderr
    exit_code = subprocess.run(_otelkit_run(sys.executable, "-c", "raise SystemExit(7)"), capture_output=True,
                               text=True, timeout=TIMEOUT)
    assert exit_code.returncode == 7  # the program's own status


# --- servers and workers ---------------------------------------------------------------------------------

WSGI = """
    import os
    from opentelemetry import trace

    def app(environ, start_response):
        with trace.get_tracer("zc").start_as_current_span("zc-request") as span:
            span.set_attribute("zc.pid", os.getpid())
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
"""

# A Starlette app: uvicorn re-raises SIGTERM after its graceful shutdown, so a worker never reaches atexit;
# otelkit flushes when uvicorn's shutdown finishes (and at the app's lifespan shutdown): docs/run.md.
ASGI = """
    import os
    from opentelemetry import trace
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request):
        with trace.get_tracer("zc").start_as_current_span("zc-request") as span:
            span.set_attribute("zc.pid", os.getpid())
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", index)])
"""


def _get(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                assert response.status == 200
                return
        except (ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the server is still starting: poll until the deadline


@pytest.fixture
def stop_at_end() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _serve(command: list[str], env: dict[str, str], port: int, requests: int,
           procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(_otelkit_run(*command), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    procs.append(proc)
    deadline = time.monotonic() + 90
    for _ in range(requests):
        _get(f"http://127.0.0.1:{port}/", deadline)
    # A graceful stop as Docker and Kubernetes do it: SIGTERM to the server's main process (otelkit run exec'd
    # into it, so proc.pid is the master), which stops its workers; they flush at exit. (Signalling the whole
    # group instead makes uvicorn's supervisor take its stopping workers for hung ones and SIGKILL them.)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode in (0, -signal.SIGTERM), err
    return proc


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_gunicorn_workers_export_each_request_once(otelkit_collector: RotelCollector, tmp_path: Path, preload: bool,
                                                   stop_at_end: list[subprocess.Popen[str]]) -> None:
    _write(tmp_path, "wsgiapp.py", WSGI)
    port = free_port()
    command = [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path),
               *(["--preload"] if preload else []), "wsgiapp:app"]
    _serve(command, _env(otelkit_collector, "zc-gunicorn", tmp_path), port, 20, stop_at_end)
    spans = otelkit_collector.receiver.wait_for(lambda: s if len(s := _spans(otelkit_collector,
                                                                             "zc-request")) >= 20 else [],
                                        timeout=60)
    assert len(spans) == 20  # each request once: no worker lost, none doubled
    assert {s.resource["service.name"] for s in spans} == {"zc-gunicorn"}


def test_uvicorn_workers_export_each_request_once(otelkit_collector: RotelCollector, tmp_path: Path,
                                                  stop_at_end: list[subprocess.Popen[str]]) -> None:
    _write(tmp_path, "asgiapp.py", ASGI)
    port = free_port()
    command = [str(BIN / "uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port), "--app-dir",
               str(tmp_path), "--log-level", "warning", "asgiapp:app"]
    _serve(command, _env(otelkit_collector, "zc-uvicorn", tmp_path), port, 20, stop_at_end)
    spans = otelkit_collector.receiver.wait_for(lambda: s if len(s := _spans(otelkit_collector,
                                                                             "zc-request")) >= 20 else [],
                                        timeout=60)
    assert len(spans) == 20


# A bare ASGI callable: no lifespan support (uvicorn logs that and serves on), so nothing of the app's tells
# otelkit the server stops. otelkit flushes when uvicorn's own shutdown finishes (it then re-raises SIGTERM with
# the default handler: no atexit). The export delay is longer than the run, so only that flush delivers.
BARE_ASGI = """
    import os
    from opentelemetry import trace
    {init}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            raise RuntimeError("this app has no lifespan")
        with trace.get_tracer("zc").start_as_current_span("zc-request") as span:
            span.set_attribute("zc.pid", os.getpid())
        await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}})
        await send({{"type": "http.response.body", "body": b"ok"}})
"""


@pytest.mark.parametrize("how", ["run-workers", "init-in-app"])
def test_uvicorn_bare_asgi_app_delivers_its_last_batch(otelkit_collector: RotelCollector, tmp_path: Path, how: str,
                                                       stop_at_end: list[subprocess.Popen[str]]) -> None:
    """``otelkit run -- uvicorn --workers 2`` (init before uvicorn is imported), and a plain ``uvicorn`` whose
    app module calls ``otelkit.init()`` (init while uvicorn already serves): every span reaches the collector."""
    in_app = how == "init-in-app"
    _write(tmp_path, "bareapp.py", BARE_ASGI.format(init="import otelkit; otelkit.init()" if in_app else ""))
    port = free_port()
    command = [str(BIN / "uvicorn"), *([] if in_app else ["--workers", "2"]), "--host", "127.0.0.1", "--port",
               str(port), "--app-dir", str(tmp_path), "--log-level", "warning", "bareapp:app"]
    env = _env(otelkit_collector, f"zc-bare-{how}", tmp_path, OTEL_BSP_SCHEDULE_DELAY="600000")
    if in_app:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        stop_at_end.append(proc)
        deadline = time.monotonic() + 90
        for _ in range(10):
            _get(f"http://127.0.0.1:{port}/", deadline)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode in (0, -signal.SIGTERM), err
    else:
        _serve(command, env, port, 10, stop_at_end)
    spans = otelkit_collector.receiver.wait_for(lambda: s if len(s := _spans(otelkit_collector,
                                                                             "zc-request")) >= 10 else [],
                                                timeout=60)
    assert len(spans) == 10
    assert {s.resource["service.name"] for s in spans} == {f"zc-bare-{how}"}


TASKS = """
    import os
    from celery import Celery
    from opentelemetry import trace

    app = Celery("zctasks", broker=os.environ["ZC_BROKER"])

    @app.task(name="zc.work")
    def work(n):
        with trace.get_tracer("zc").start_as_current_span("zc-task") as span:
            span.set_attribute("zc.n", n)
        return n
"""


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_celery_worker_exports_each_task_once(otelkit_collector: RotelCollector, tmp_path: Path, redis_url: str,
                                              pool: str,
                                              stop_at_end: list[subprocess.Popen[str]]) -> None:
    from celery import Celery

    _write(tmp_path, "zctasks.py", TASKS)
    queue = f"otelkit-test-zc-{uuid.uuid4().hex[:10]}"
    env = _env(otelkit_collector, "zc-celery", tmp_path, ZC_BROKER=redis_url)
    worker = subprocess.Popen(_otelkit_run(str(BIN / "celery"), "-A", "zctasks", "worker", "-P", pool, "-c", "2",
                                           "-Q", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
                                           "-l", "warning"),
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    stop_at_end.append(worker)
    client = Celery("zctasks", broker=redis_url)
    try:
        for n in range(10):
            client.send_task("zc.work", args=[n], queue=queue)
        otelkit_collector.receiver.wait_for(lambda: len(_spans(otelkit_collector, "zc-task")) >= 10, timeout=90)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.communicate(timeout=TIMEOUT)
        import redis

        r = redis.Redis.from_url(redis_url)
        r.delete(queue)
        r.close()
    spans = _spans(otelkit_collector, "zc-task")
    assert sorted(s.attributes["zc.n"] for s in spans) == list(range(10))


JOBS = """
    from opentelemetry import trace

    def work(n):
        with trace.get_tracer("zc").start_as_current_span("zc-job") as span:
            span.set_attribute("zc.n", n)
        return n
"""


def test_rq_worker_exports_each_job_once(otelkit_collector: RotelCollector, tmp_path: Path, redis_url: str) -> None:
    import redis
    from rq import Queue

    _write(tmp_path, "zcjobs.py", JOBS)
    sys.path.insert(0, str(tmp_path))
    name = f"otelkit-test-zc-{uuid.uuid4().hex[:10]}"
    conn = redis.Redis.from_url(redis_url)
    try:
        queue = Queue(name, connection=conn)
        for n in range(5):
            queue.enqueue("zcjobs.work", n)
        # rq forks a work horse per job: each job's span comes from a child that exits right after it.
        proc = subprocess.run(_otelkit_run(str(BIN / "rq"), "worker", "--burst", "--url", redis_url, name),
                              cwd=tmp_path, env=_env(otelkit_collector, "zc-rq",
                                                     tmp_path), capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert proc.returncode == 0, proc.stderr
        spans = otelkit_collector.receiver.wait_for(lambda: s if len(s := _spans(otelkit_collector,
                                                                                 "zc-job")) >= 5 else [],
                                            timeout=60)
        assert sorted(s.attributes["zc.n"] for s in spans) == list(range(5))
    finally:
        sys.path.remove(str(tmp_path))
        queue.empty()
        queue.delete(delete_jobs=True)
        conn.close()
