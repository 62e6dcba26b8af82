"""``init()`` is typed end to end: mypy checks a caller's argument names and types; at run time an unknown
name still raises ``TypeError`` naming it and the closest accepted one."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

import otelkit
from otelkit import _init
from otelkit._config import ARGUMENTS

mypy_api = pytest.importorskip("mypy.api")

SNIPPET = '''
import otelkit

otelkit.init(service_name="shop", traces_endpoint="collector:4317", traces_insecure=True)
otelkit.init(servce_name="shop")
otelkit.init(sampler_arg="0.5")
otelkit.init(metrics_timeout=[1])
otelkit.init("shop")
'''


def _mypy(tmp_path: Path, code: str) -> list[str]:
    source = tmp_path / "caller.py"
    source.write_text(textwrap.dedent(code))
    out, err, _ = mypy_api.run([str(source), "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
                                "--config-file", "", "--python-version", "3.10"])
    assert not err, err
    return [line for line in out.splitlines() if ": error:" in line]


def test_mypy_reports_misspelled_and_ill_typed_init_arguments(tmp_path: Path) -> None:
    errors = _mypy(tmp_path, SNIPPET)
    by_line = {int(line.split(":")[1]): line for line in errors}
    assert 4 not in by_line, by_line  # the correct call type-checks (per-signal arguments included)
    assert '"servce_name"' in by_line[5]
    assert '"sampler_arg"' in by_line[6] and '"float | None"' in by_line[6]
    assert '"metrics_timeout"' in by_line[7]
    assert 8 in by_line  # positional
    assert len(errors) == 4, errors


def test_every_table_argument_is_a_typed_parameter() -> None:
    parameters = inspect.signature(_init.init).parameters
    missing = sorted(name for name in ARGUMENTS if name not in parameters)
    assert missing == []
    untyped = sorted(name for name, p in parameters.items()
                     if p.kind is p.KEYWORD_ONLY and p.annotation in (inspect.Parameter.empty, "Any"))
    assert untyped == []


@pytest.mark.usefixtures("fresh_otelkit")
def test_an_unknown_argument_still_fails_clearly_at_run_time() -> None:
    with pytest.raises(TypeError, match=r"'servce_name' \(did you mean 'service_name'\?\)"):
        otelkit.init(servce_name="shop")  # type: ignore[arg-type]
    assert _init.get_settings() is None
