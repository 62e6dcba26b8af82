"""The one import-hook mechanism (otelkit._instrument._lazy) that every integration uses.

Each test imports modules of its own (written to a temporary folder, names unique to the test), so
the real import system, wrapt's finder and the real threading are exercised; nothing is mocked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from otelkit._instrument import _lazy
from otelkit._status import IntegrationStatus


@pytest.fixture
def make_module(tmp_path: Path) -> Iterator[Any]:
    """Write a module with a unique name into a folder on sys.path; returns its name."""
    sys.path.insert(0, str(tmp_path))
    names: list[str] = []

    def make(body: str = "VALUE = 1\n") -> str:
        name = f"otk_lazy_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
        names.append(name)
        importlib.invalidate_caches()
        return name

    yield make
    sys.path.remove(str(tmp_path))
    for name in names:
        sys.modules.pop(name, None)
        _lazy.cancel(f"owner-{name}")


def _owner(module: str) -> str:
    return f"owner-{module}"


def test_hook_runs_at_the_import_once_in_the_importing_thread(make_module: Any) -> None:
    name = make_module()
    seen: list[tuple[str, int, int]] = []
    deferred = _lazy.when_imported(_owner(name), name, lambda m: seen.append((m.__name__, m.VALUE,
                                                                               threading.get_ident())))
    assert deferred is True and _lazy.is_pending(_owner(name)) and name not in sys.modules
    importlib.import_module(name)
    importlib.import_module(name)  # a second import is a sys.modules hit: nothing runs again
    assert seen == [(name, 1, threading.get_ident())]
    assert not _lazy.is_pending(_owner(name))


def test_hook_of_an_imported_module_runs_now_and_raises_to_the_caller(make_module: Any) -> None:
    name = make_module()
    importlib.import_module(name)
    seen: list[ModuleType] = []
    assert _lazy.when_imported(_owner(name), name, seen.append) is False
    assert seen == [sys.modules[name]] and not _lazy.is_pending(_owner(name))

    def boom(_m: ModuleType) -> None:
        raise RuntimeError("broken patch")

    with pytest.raises(RuntimeError, match="broken patch"):  # instrument_all reports it "failed"
        _lazy.when_imported(_owner(name), name, boom)


def test_import_in_another_thread_runs_the_hook_there(make_module: Any) -> None:
    name = make_module()
    seen: list[int] = []
    _lazy.when_imported(_owner(name), name, lambda _m: seen.append(threading.get_ident()))
    worker = threading.Thread(target=importlib.import_module, args=(name,))
    worker.start()
    worker.join()
    assert seen == [worker.ident]


def test_a_module_another_thread_is_importing_is_patched_only_once_built(make_module: Any) -> None:
    """when_imported() during another thread's import waits for it: the hook never sees a half-built module."""
    gate = make_module("import threading\nstarted = threading.Event()\nrelease = threading.Event()\n")
    gate_module = importlib.import_module(gate)
    name = make_module(f"import {gate}\n{gate}.started.set()\n{gate}.release.wait(60)\nDONE = True\n")
    importer = threading.Thread(target=importlib.import_module, args=(name,))
    importer.start()
    assert gate_module.started.wait(60)
    seen: list[bool] = []
    registrar = threading.Thread(target=_lazy.when_imported,
                                 args=(_owner(name), name, lambda m: seen.append(getattr(m, "DONE", False))))
    registrar.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the registrar waits on the module's import lock
        frame = sys._current_frames().get(registrar.ident or 0)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        if "_find_and_load" in names or not registrar.is_alive():
            break
        time.sleep(0.01)  # polling interval only
    assert registrar.is_alive(), "when_imported() did not wait for the import under way"
    gate_module.release.set()
    importer.join(60)
    registrar.join(60)
    assert seen == [True]


def test_cancel_before_the_import_leaves_the_hook_doing_nothing(make_module: Any) -> None:
    name = make_module()
    seen: list[ModuleType] = []
    _lazy.when_imported(_owner(name), name, seen.append)
    assert _lazy.cancel(_owner(name)) is True
    assert _lazy.cancel(_owner(name)) is False
    importlib.import_module(name)
    assert seen == []


def test_registering_again_replaces_the_pending_hook_and_owners_are_apart(make_module: Any) -> None:
    name = make_module()
    seen: list[str] = []
    for label in ("first", "second"):  # a re-init() registers again: one hook runs, the latest
        _lazy.when_imported(_owner(name), name, lambda _m, label=label: seen.append(label))
    _lazy.when_imported("another-owner", name, lambda _m: seen.append("another"))
    importlib.import_module(name)
    assert sorted(seen) == ["another", "second"]


def test_reload_runs_nothing_a_new_registration_after_removal_runs_at_the_next_import(make_module: Any) -> None:
    name = make_module()
    seen: list[int] = []
    _lazy.when_imported(_owner(name), name, lambda m: seen.append(id(m)))
    module = importlib.import_module(name)
    importlib.reload(module)
    assert seen == [id(module)]
    del sys.modules[name]
    _lazy.when_imported(_owner(name), name, lambda m: seen.append(id(m)))
    again = importlib.import_module(name)
    assert again is not module and seen == [id(module), id(again)]


def test_a_failing_hook_never_breaks_the_import_and_is_logged(make_module: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    name = make_module()
    ran: list[str] = []

    def boom(_m: ModuleType) -> None:
        raise RuntimeError("broken patch")

    _lazy.when_imported(_owner(name), name, boom)
    _lazy.when_imported("second-owner", name, lambda _m: ran.append("second"))
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        assert importlib.import_module(name).VALUE == 1
    assert ran == ["second"]  # the other owners' hooks still run
    assert any(_owner(name) in r.getMessage() and "broken patch" in r.getMessage() for r in caplog.records)


def _now(contrib: Any, version: str) -> IntegrationStatus:
    return IntegrationStatus("zz-lazy", "enabled", f"now {getattr(contrib, '__name__', None)} {version}")


def test_instrument_when_imported_reports_each_case(make_module: Any) -> None:
    missing = _lazy.instrument_when_imported("zz-lazy", "json", ("otelkit-no-such-dist",), (1,), "1", "nothing", _now)
    assert (missing.state, missing.reason) == ("skipped", "not installed (pip install nothing)")
    old = _lazy.instrument_when_imported("zz-lazy", "json", ("pytest",), (999,), "999", "pytest", _now)
    assert old.state == "skipped" and "version unsupported" in old.reason
    version = importlib.metadata.version("pytest")
    now = _lazy.instrument_when_imported("zz-lazy", "json", ("pytest",), (1,), "1", "pytest", _now, contrib="json")
    assert (now.state, now.reason) == ("enabled", f"now json {version}")
    no_contrib = _lazy.instrument_when_imported("zz-lazy", "json", ("pytest",), (1,), "1", "otelkit[x]", _now,
                                                contrib="otk_lazy_no_such_contrib")
    assert no_contrib.state == "skipped"
    assert no_contrib.reason.startswith("otk_lazy_no_such_contrib is not importable (")
    assert no_contrib.reason.endswith("; pip install otelkit[x])")

    name = make_module()
    later = _lazy.instrument_when_imported(_owner(name), name, ("pytest",), (1,), "1", "pytest", _now)
    assert (later.state, later.reason) == ("enabled", f"{name} {version}; instrumented when the application "
                                                      f"imports {name}")
    assert _lazy.is_pending(_owner(name))
    importlib.import_module(name)
    assert not _lazy.is_pending(_owner(name))


_FORK_PROGRAM = """
import importlib, json, os, sys
sys.path.insert(0, sys.argv[1])
from otelkit._instrument import _lazy
seen = []
_lazy.when_imported("owner", sys.argv[2], lambda m: seen.append(m.VALUE))
_lazy._lock.acquire()  # held at fork time, as by another thread: the child gets a fresh one
pid = os.fork()
if pid == 0:
    _lazy.when_imported("owner2", sys.argv[2], lambda m: seen.append(m.VALUE * 10))
    importlib.import_module(sys.argv[2])
    os._exit(0 if seen == [1, 10] else 1)
_lazy._lock.release()
_, status = os.waitpid(pid, 0)
importlib.import_module(sys.argv[2])
print(json.dumps({"child_exit": os.waitstatus_to_exitcode(status), "parent": seen}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_pending_hooks_run_in_a_forked_child_and_the_parent(make_module: Any, tmp_path: Path) -> None:
    name = make_module()
    proc = subprocess.run([sys.executable, "-c", _FORK_PROGRAM, str(tmp_path), name], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"child_exit": 0, "parent": [1]}


_DISABLED_PROGRAM = """
import json, sys
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from otelkit import _instrument
from otelkit._config import resolve
from otelkit._instrument import _lazy

tp, mp = TracerProvider(), MeterProvider()
first = {s.name: s.state for s in _instrument.instrument_all(resolve(instrument=["requests", "sqlalchemy"],
                                                                    system_metrics=False), tp, mp)}
pending = [_lazy.is_pending("requests"), _lazy.is_pending("sqlalchemy")]
# A re-init with requests disabled by name: its pending hook must not run at the import.
second = {s.name: s.state for s in _instrument.instrument_all(
    resolve(instrument=["requests", "sqlalchemy"], disabled_instrumentations=["requests"], system_metrics=False),
    tp, mp)}
import requests
import sqlalchemy
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from sqlalchemy import event
from sqlalchemy.engine import Engine
from otelkit._instrument import sqlalchemy as otk_sqlalchemy
print(json.dumps({"first": [first["requests"], first["sqlalchemy"]], "pending": pending,
                  "second": [second["requests"], second["sqlalchemy"]],
                  "requests_instrumented": RequestsInstrumentor().is_instrumented_by_opentelemetry,
                  "sqlalchemy_listening": event.contains(Engine, "before_cursor_execute", otk_sqlalchemy._before)}))
"""


def test_an_integration_disabled_by_name_at_a_re_init_never_patches_at_the_import() -> None:
    proc = subprocess.run([sys.executable, "-c", _DISABLED_PROGRAM], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "first": ["enabled", "enabled"], "pending": [True, True], "second": ["disabled", "enabled"],
        "requests_instrumented": False, "sqlalchemy_listening": True}


_APPLICATION_FIRST_PROGRAM = r"""
import json, sys
import aiohttp, requests, urllib3
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from otelkit import _instrument
from otelkit._config import resolve
from otelkit._instrument import aiohttp_client, requests as otk_requests, urllib3 as otk_urllib3

mine = {"requests": RequestsInstrumentor, "aiohttp": AioHttpClientInstrumentor, "urllib3": URLLib3Instrumentor}
for name in sys.argv[1].split(","):
    mine[name]().instrument()
statuses = {s.name: s for s in _instrument.instrument_all(
    resolve(instrument=["requests", "aiohttp-client", "urllib3"], system_metrics=False), TracerProvider(),
    MeterProvider())}
for module in (otk_requests, aiohttp_client, otk_urllib3):
    module.uninstrument()  # must undo only what otelkit instrumented
print(json.dumps({name: [statuses[otk].state, "already instrumented by the application" in statuses[otk].reason,
                         instrumentor().is_instrumented_by_opentelemetry]
                  for (name, instrumentor), otk in zip(mine.items(), ("requests", "aiohttp-client", "urllib3"))}))
"""


@pytest.mark.parametrize("application_first", ["requests,aiohttp,urllib3", "requests"])
def test_http_clients_the_application_instrumented_keep_its_instrumentation(application_first: str) -> None:
    proc = subprocess.run([sys.executable, "-c", _APPLICATION_FIRST_PROGRAM, application_first], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("requests", "aiohttp", "urllib3"):
        theirs = name in application_first.split(",")
        # state; the status says whose instrumentation it is; after otelkit's uninstrument only the
        # application's is still on
        assert result[name] == ["enabled", theirs, theirs], (name, result)
