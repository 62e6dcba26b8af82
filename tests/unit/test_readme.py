"""The README is the front door: its configuration table and commands must match the code."""

from __future__ import annotations

import re
from pathlib import Path

from otelkit._config import config_table_markdown

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_config_table_matches_the_parameter_table() -> None:
    """Regenerate with ``python -m otelkit._config`` when a setting changes."""
    block = re.search(r"<!-- config-table:start[^>]*-->\n(.*?)\n<!-- config-table:end -->", README, re.S)
    assert block is not None, "README lost its config-table markers"
    assert block.group(1).strip() == config_table_markdown().strip()


def test_the_two_commands_exist() -> None:
    """The README's main-job and test commands point at scripts that exist."""
    assert "bash examples/demo.sh" in README and (ROOT / "examples" / "demo.sh").is_file()
    assert "bash .ci/run" in README and (ROOT / ".ci" / "run").is_file()
