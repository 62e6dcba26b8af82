"""The ``otelkit`` command line: parsing, help, the console-script declaration."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from otelkit.__main__ import build_parser, main


def test_demo_defaults() -> None:
    args = build_parser().parse_args(["demo"])
    assert args.command == "demo"
    assert (args.events, args.workers, args.telemetry, args.continuous, args.show) == (24, 3, "auto", False, "ok")
    assert args.redis is None and args.postgres is None


def test_demo_flags() -> None:
    args = build_parser().parse_args(["demo", "--events", "5", "--workers", "2", "--redis", "none",
                                      "--postgres", "none", "--telemetry", "terminal", "--continuous",
                                      "--show", "dead-letter"])
    assert (args.events, args.workers, args.redis, args.postgres, args.telemetry, args.continuous, args.show) == (
        5, 2, "none", "none", "terminal", True, "dead-letter")


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_demo_rejects_non_positive_counts(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", "--events", bad])
    assert exc.value.code == 2
    assert f"expected a positive integer, got '{bad}'" in capsys.readouterr().err


def test_doctor_flags() -> None:
    args = build_parser().parse_args(["doctor", "--json", "--timeout", "1.5", "--tempo-url", "http://t:3200",
                                      "--no-send"])
    assert (args.json, args.timeout, args.tempo_url, args.no_send) == (True, 1.5, "http://t:3200", True)


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nan"])
def test_timeouts_must_be_positive(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "doctor"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--timeout", bad])
        assert "expected a positive number of seconds" in capsys.readouterr().err


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "demo" in out and "doctor" in out


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_console_script_is_declared() -> None:
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("otelkit") == "otelkit.__main__:main"


def test_python_dash_m_help_lists_both_commands() -> None:
    done = subprocess.run([sys.executable, "-m", "otelkit", "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "demo" in done.stdout and "doctor" in done.stdout
    version = subprocess.run([sys.executable, "-m", "otelkit", "--version"], capture_output=True, text=True,
                             timeout=60, check=False)
    assert version.stdout.startswith("otelkit ")
