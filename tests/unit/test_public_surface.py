"""otelkit's public surface is consistent and cheap to import.

* ``shutdown(timeout=...)`` and every ``init()`` argument are keyword-only; no public parameter name ends
  with an underscore;
* the logging helpers share one shape (a class per job, keyword-only options);
* the pytest fixtures carry the ``otelkit_`` prefix;
* ``import otelkit`` loads neither the OTLP receiver nor gRPC, and ``import otelkit.pipeline`` loads only
  the export statistics of ``otelkit._export`` (checked in a fresh interpreter: ``sys.modules``).
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import otelkit
import otelkit.pipeline
import otelkit.testing
from otelkit.testing import _plugin


def _public_callables() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for module in (otelkit, otelkit.pipeline, otelkit.testing):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value):
                found[f"{module.__name__}.{name}"] = value.__init__
                for attr, member in vars(value).items():
                    if callable(member) and not attr.startswith("_"):
                        found[f"{module.__name__}.{name}.{attr}"] = member
            elif callable(value):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_no_public_parameter_name_ends_with_an_underscore() -> None:
    bad = []
    for name, function in _public_callables().items():
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):  # a builtin slot wrapper
            continue
        bad += [f"{name}({p})" for p in parameters if p.endswith("_") and not p.startswith("__")]
    assert bad == []


def test_shutdown_timeout_is_keyword_only() -> None:
    parameter = inspect.signature(otelkit.shutdown).parameters["timeout"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    with pytest.raises(TypeError):
        otelkit.shutdown(5)  # type: ignore[misc]


def test_the_logging_helpers_share_one_shape() -> None:
    helpers = [otelkit.JsonFormatter, otelkit.StructlogFields, otelkit.StructlogExporter, otelkit.LoguruFields,
               otelkit.LoguruExporter]
    for helper in helpers:
        assert inspect.isclass(helper), helper
        parameters = list(inspect.signature(helper.__init__).parameters.values())[1:]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters), helper
    # One job each: the fields helpers take no export options, the exporters add no fields.
    assert list(inspect.signature(otelkit.StructlogFields.__init__).parameters) == ["self"]
    assert list(inspect.signature(otelkit.LoguruFields.__init__).parameters) == ["self"]
    assert not hasattr(otelkit, "StructlogProcessor") and not hasattr(otelkit, "loguru_handler")


def test_the_pytest_fixtures_carry_the_otelkit_prefix() -> None:
    fixtures = {name for name, value in vars(_plugin).items() if hasattr(value, "_fixture_function_marker")
                or type(value).__name__ == "FixtureFunctionDefinition"}
    assert fixtures == {"otelkit_capture", "otelkit_otlp_receiver", "otelkit_collector"}


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_otelkit_loads_no_receiver_and_no_grpc() -> None:
    loaded = _modules_after("import otelkit")
    assert "otelkit.testing._receiver" not in loaded and "otelkit.testing" not in loaded
    assert "grpc" not in loaded
    # The receiver stays importable when asked for.
    assert "otelkit.testing._receiver" in _modules_after("from otelkit.testing._receiver import OtlpReceiver")


def test_import_otelkit_pipeline_loads_only_the_export_statistics() -> None:
    loaded = _modules_after("import otelkit.pipeline")
    assert "otelkit.pipeline" in loaded
    export = sorted(m for m in loaded if m.startswith("otelkit._export"))
    assert export == ["otelkit._export", "otelkit._export.stats"]
    assert "grpc" not in loaded and "otelkit.testing._receiver" not in loaded


def test_the_lazy_export_package_still_answers_every_name() -> None:
    from otelkit import _export

    for name in _export.__all__:
        assert getattr(_export, name) is not None
    assert _export.factory.make_sender is _export.make_sender
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _export.nope  # noqa: B018


def test_building_pipelines_registers_the_export_fork_callbacks() -> None:
    """The lazy package must not lose the fork hooks: whatever builds pipelines registers them with _fork."""
    loaded = _modules_after("from otelkit._export import factory\nfrom otelkit import _fork\n"
                            "assert _fork._child_resets and _fork._exit_flushes, 'no fork callbacks'")
    assert "otelkit._export.lifecycle" in loaded
