"""The pytest plugin is a good citizen: ``-p no:otelkit`` turns it off, as for any pytest plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TEST = """
def test_uses_the_fixture(otelkit_capture):
    assert otelkit_capture is not None
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(TEST)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "test_user.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_the_plugin_is_on_by_default(tmp_path: Path) -> None:
    result = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dash_p_no_otelkit_disables_it(tmp_path: Path) -> None:
    result = _pytest(tmp_path, "-p", "no:otelkit")
    assert result.returncode != 0
    assert "fixture 'otelkit_capture' not found" in result.stdout
