"""``service.version`` is derived from the installed distribution that provides the running program.

Real installed distributions, real interpreters: ``python -m pip --version`` (``__main__`` is ``pip.__main__``)
and the ``pip`` console script are run as subprocesses with a ``sitecustomize`` on ``PYTHONPATH`` that, at
exit (when ``__main__`` is pip's), writes what ``otelkit._config.resolve()`` and ``build_resource()`` say.
An explicit ``service_version=`` argument, ``OTELKIT_SERVICE_VERSION`` and ``service.version`` in
``OTEL_RESOURCE_ATTRIBUTES`` all win over the derived value. No network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from otelkit import _config, _resource
from tests.conftest import missing

PIP_VERSION = metadata.version("pip")
PYTEST_VERSION = metadata.version("pytest")

_SITECUSTOMIZE = """
import atexit, json, os

def _report():
    from otelkit._config import resolve
    from otelkit._resource import build_resource
    settings = resolve()
    out = {
        "version": settings.service_version,
        "source": settings.sources.get("service_version"),
        "resource": build_resource(settings).attributes.get("service.version"),
    }
    with open(os.environ["OTELKIT_TEST_REPORT"], "w") as fh:
        json.dump(out, fh)

atexit.register(_report)
"""


def _run(tmp_path: Path, argv: list[str], **env: str) -> dict[str, Any]:
    (tmp_path / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    report = tmp_path / "report.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    clean.update(env, PYTHONPATH=str(tmp_path), OTELKIT_TEST_REPORT=str(report),
                 PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    proc = subprocess.run(argv, env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert report.exists(), f"sitecustomize hook did not run: {proc.stderr}"
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def test_python_dash_m_of_an_installed_package_gets_its_version(tmp_path: Path) -> None:
    out = _run(tmp_path, [sys.executable, "-m", "pip", "--version"])
    assert out["version"] == PIP_VERSION
    assert out["resource"] == PIP_VERSION
    assert "pip" in out["source"] and "derived" in out["source"]


def test_console_script_of_an_installed_package_gets_its_version(tmp_path: Path) -> None:
    pip_script = Path(sys.executable).with_name("pip")
    if not pip_script.exists():
        missing(f"no pip console script next to {sys.executable}")
    out = _run(tmp_path, [str(pip_script), "--version"])
    assert out["version"] == PIP_VERSION
    assert out["resource"] == PIP_VERSION


@pytest.mark.parametrize("how", ["module", "script"])
def test_under_pytest_the_version_is_not_pytests(tmp_path: Path, how: str) -> None:
    (tmp_path / "test_probe.py").write_text("def test_ok():\n    pass\n")
    runner = [sys.executable, "-m", "pytest"] if how == "module" else [str(Path(sys.executable).with_name("pytest"))]
    if how == "script" and not Path(runner[0]).exists():
        pytest.skip(f"no pytest console script next to {sys.executable}")
    out = _run(tmp_path, [*runner, "-q", "-p", "no:cacheprovider", "-p", "no:otelkit", "test_probe.py"])
    assert out["version"] is None
    assert out["version"] != PYTEST_VERSION and out["resource"] is None


def test_a_plain_script_gets_no_version(tmp_path: Path) -> None:
    # The negative control: a file that belongs to no distribution must not borrow one's version.
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    out = _run(tmp_path, [sys.executable, str(script)])
    assert out["version"] is None
    assert out["resource"] is None


@pytest.mark.parametrize("env", [
    {"OTEL_RESOURCE_ATTRIBUTES": "service.version=7.7.7"},
    {"OTELKIT_SERVICE_VERSION": "7.7.7"},
    {"OTELKIT_SERVICE_VERSION": "7.7.7", "OTEL_RESOURCE_ATTRIBUTES": "team=a"},
])
def test_configured_version_beats_the_installed_distribution(tmp_path: Path, env: dict[str, str]) -> None:
    out = _run(tmp_path, [sys.executable, "-m", "pip", "--version"], **env)
    assert out["version"] == "7.7.7"
    assert out["resource"] == "7.7.7"
    assert out["source"] in ("OTEL_RESOURCE_ATTRIBUTES", "OTELKIT_SERVICE_VERSION")


def test_derivation_function_with_module_and_console_script_names() -> None:
    derive = _resource._derive_version.__wrapped__  # bypass the lru_cache: other tests may have filled it
    # A runner's version is not the service's: pytest, gunicorn, celery... run someone else's code.
    for runner in ("pytest", "gunicorn.app.wsgiapp", "celery"):
        version, how = derive("", runner)
        assert version is None and "runs other code" in how
    assert derive("/venv/bin/pytest", None)[0] is None
    assert derive("/venv/bin/uvicorn", None)[0] is None
    assert derive("", "pip._internal.cli")[0] == PIP_VERSION  # a submodule maps to its top-level package
    assert derive("/somewhere/bin/pip", None)[0] == PIP_VERSION  # console_scripts entry point name
    assert derive("/somewhere/app.py", None) == (None, "nothing found")
    assert derive("", "no_such_module_otelkit_test") == (None, "nothing found")
    # python -c / reading stdin / the interpreter itself: never a console script, so no entry-point scan.
    for argv0 in ("-c", "-", "/usr/bin/python3", "python3.11", "python"):
        assert derive(argv0, None) == (None, "nothing found"), argv0


def test_argument_beats_the_derived_version(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the in-process program look like `python -m pytest` whatever runner started this test.
    monkeypatch.setattr(_resource, "derive_service_version", lambda: (PYTEST_VERSION, "the installed distribution"))
    assert _config.resolve().service_version == PYTEST_VERSION
    settings = _config.resolve(service_version="2.0.0-rc1")
    assert settings.service_version == "2.0.0-rc1"
    assert settings.sources["service_version"] == "argument"
    assert _resource.build_resource(settings).attributes["service.version"] == "2.0.0-rc1"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=3.1.4")
    assert _config.resolve().service_version == "3.1.4"
    assert _config.resolve(service_version="2.0.0-rc1").service_version == "2.0.0-rc1"
