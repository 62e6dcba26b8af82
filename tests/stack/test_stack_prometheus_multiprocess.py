"""The ``prometheus`` exporter in programs with several processes, scraped by a real Prometheus (2.42).

One port serves one process. Without help, only the first process of a
multiprocessing program or of gunicorn's workers binds ``OTEL_EXPORTER_PROMETHEUS_PORT``
and the others' metrics reach no one. With ``OTELKIT_PROMETHEUS_SD_DIR`` each
process serves its own port (the configured one when free, else a free one) and
writes a ``file_sd`` entry Prometheus reads, labelled with ``job`` and
``service_name``; the entry is removed when the process exits. Without it, a
process that cannot bind says so and names the two ways out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _querycheck import Prometheus, free_port, free_ports, stop_session
from _stacklib import require_tool

from tests.conftest import missing

pytestmark = pytest.mark.timeout(180)

DEADLINE_S = 60.0

MULTIPROCESSING_APP = textwrap.dedent("""
    import multiprocessing, signal, sys

    def work(n, stop):
        import otelkit
        from opentelemetry import metrics
        otelkit.init(service_name="mp-app")
        metrics.get_meter("mp").create_counter("mp.work", unit="{item}").add(n)
        print("counted", n, flush=True)
        stop.wait()
        otelkit.shutdown()

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        stop = ctx.Event()
        # Wait for SIGTERM synchronously: setting a multiprocessing Event from a signal handler can
        # deadlock on the Event's own lock.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        workers = [ctx.Process(target=work, args=(n, stop)) for n in (1, 2, 3)]
        for p in workers:
            p.start()
        signal.sigwait({signal.SIGTERM})
        stop.set()
        for p in workers:
            p.join(20)
""")

GUNICORN_APP = textwrap.dedent("""
    import otelkit
    from opentelemetry import metrics

    otelkit.init(service_name="gunicorn-app")  # at import: in every worker (no --preload)
    requests = metrics.get_meter("app").create_counter("app.requests", unit="{request}")
    requests.add(0)

    def app(environ, start_response):
        requests.add(1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
""")


def _env(sd_dir: Path | None, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_"))}
    env.update({"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
                "OTELKIT_SYSTEM_METRICS": "false"})
    if sd_dir is not None:
        env["OTELKIT_PROMETHEUS_SD_DIR"] = str(sd_dir)
    return env


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, Path]]:
    binary = require_tool("prometheus", "prometheus")
    sd_dir = tmp_path / "sd"
    sd_dir.mkdir()
    prom = Prometheus.start(binary, tmp_path, sd_dir, rules=False)
    try:
        yield prom, sd_dir
    finally:
        prom.stop()


def _stop(process: subprocess.Popen[bytes]) -> str:
    stop_session(process)
    assert process.stdout is not None
    return process.stdout.read().decode(errors="replace")


def _poll(check: object, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if process.poll() is not None:
            break
        time.sleep(0.5)  # poll interval
    output = _stop(process)
    pytest.fail(f"{what} within {DEADLINE_S:.0f}s\n{output[-3000:]}")


def _value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_every_process_of_a_multiprocessing_program_is_scraped(
        prometheus: tuple[Prometheus, Path], tmp_path: Path, start_method: str) -> None:
    prom, sd_dir = prometheus
    script = tmp_path / "app.py"
    script.write_text(MULTIPROCESSING_APP, encoding="utf-8")
    app = subprocess.Popen([sys.executable, str(script), start_method], env=_env(sd_dir, free_port()),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Three targets, and every count of every process: 1 + 2 + 3, none lost to a port clash.
        _poll(lambda: _value(prom, 'count(up{job="mp-app", service_name="mp-app"} == 1)') == 3,
              "three scrape targets up", app)
        _poll(lambda: _value(prom, 'sum(mp_work_total{job="mp-app"})') == 6, "sum of the three counters = 6", app)
        per_process = sorted(float(r["value"][1]) for r in prom.query('mp_work_total{job="mp-app"}'))
        assert per_process == [1.0, 2.0, 3.0]
        assert len(list(sd_dir.glob("*.json"))) == 3
    finally:
        output = _stop(app)
    assert "exporter is off" not in output, output
    deadline = time.monotonic() + 10
    while list(sd_dir.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)  # poll interval
    assert not list(sd_dir.glob("*.json")), "a process left its file_sd entry behind at exit"


def test_every_gunicorn_worker_is_scraped(prometheus: tuple[Prometheus, Path], tmp_path: Path) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if not gunicorn.exists():
        missing("gunicorn is not installed in this environment (the test extra has it)")
    prom, sd_dir = prometheus
    (tmp_path / "wsgi_app.py").write_text(GUNICORN_APP, encoding="utf-8")
    bind_port, metrics_port = free_ports(2)  # two calls of free_port() can return the same port
    server = subprocess.Popen([str(gunicorn), "--workers", "2", "--bind", f"127.0.0.1:{bind_port}",
                               "--chdir", str(tmp_path), "wsgi_app:app"], env=_env(sd_dir, metrics_port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _poll(lambda: _value(prom, 'count(up{job="gunicorn-app"} == 1)') == 2, "both workers scraped", server)
        _poll(lambda: _value(prom, 'count(app_requests_total{job="gunicorn-app"})') == 2,
              "both workers' counters stored", server)
    finally:
        output = _stop(server)
    assert "exporter is off" not in output, output


def test_without_a_discovery_directory_the_second_process_says_so(tmp_path: Path) -> None:
    """No silent blindness: the process that cannot bind warns, names the fix, and claims no endpoint."""
    port = free_port()
    holder = subprocess.Popen([sys.executable, "-c", "import otelkit, sys; otelkit.init(service_name='a'); "
                               "print('bound', flush=True); sys.stdin.read()"],
                              env=_env(None, port), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        assert holder.stdout is not None
        lines = [holder.stdout.readline().decode() for _ in range(2)]  # otelkit's destination line, then ours
        assert any(line.strip() == "bound" for line in lines), lines
        second = subprocess.run([sys.executable, "-c", "import otelkit; otelkit.init(service_name='b')"],
                                env={**_env(None, port), "OTELKIT_CONSOLE_ON_AUTO": "false"},
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    output = second.stdout + second.stderr
    assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in output, output
    assert "OTELKIT_PROMETHEUS_SD_DIR" in output and "OTLP" in output, output
    assert f"no Prometheus scrape endpoint (127.0.0.1:{port}" in output, output


def test_the_discovery_entry_lives_as_long_as_the_endpoint(tmp_path: Path) -> None:
    """A re-init keeps the entry (same endpoint), otelkit.shutdown() removes it, its content is a file_sd group."""
    sd_dir = tmp_path / "sd"
    script = textwrap.dedent("""
        import json, os, sys
        import otelkit
        sd = sys.argv[1]
        otelkit.init(service_name="reinit-app")
        first = sorted(os.listdir(sd))
        otelkit.init(service_name="reinit-app")
        second = sorted(os.listdir(sd))
        content = json.load(open(os.path.join(sd, second[0])))
        otelkit.shutdown()
        print(json.dumps({"first": first, "second": second, "content": content, "after": sorted(os.listdir(sd)),
                          "pid": os.getpid()}))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(sd_dir)], env=_env(sd_dir, free_port()),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    import json

    report = json.loads(done.stdout.strip().splitlines()[-1])
    name = f"otelkit-reinit-app-{report['pid']}.json"
    assert report["first"] == report["second"] == [name]
    [group] = report["content"]
    assert group["labels"] == {"job": "reinit-app", "service_name": "reinit-app"}
    [target] = group["targets"]
    assert target.startswith("127.0.0.1:")
    assert report["after"] == []


def test_a_wildcard_host_is_announced_by_a_dialable_name(tmp_path: Path) -> None:
    """Serving on 0.0.0.0 (in a container) announces the host name, which Prometheus can dial; IPv6 is bracketed."""
    import json
    import socket
    from types import SimpleNamespace

    from otelkit._export import metrics

    settings = SimpleNamespace(service_name="svc", resource_attributes={})
    try:
        metrics._announce_scrape_target(settings, str(tmp_path), "0.0.0.0", 9464)  # type: ignore[arg-type]
        [entry] = json.loads(next(tmp_path.glob("*.json")).read_text(encoding="utf-8"))
        assert entry["targets"] == [f"{socket.gethostname()}:9464"]
        metrics._announce_scrape_target(settings, str(tmp_path), "::1", 9464)  # type: ignore[arg-type]
        [entry] = json.loads(next(tmp_path.glob("*.json")).read_text(encoding="utf-8"))
        assert entry["targets"] == ["[::1]:9464"]
    finally:
        metrics._withdraw_scrape_target(os.getpid())
    assert not list(tmp_path.glob("*.json"))
