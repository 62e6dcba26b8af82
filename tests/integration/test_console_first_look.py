"""The console a person sees with no collector: scrubbed like OTLP, links, tracebacks, a short metric summary.

Each test runs a real program with otelkit's console exporters (what the embedded default uses when no
collector listens) and reads its stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

SECRETS = {
    "password": "hunter2-pw",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
    "dsn": "s3cr3t-dsn-pass",
    "aws": "AKIAIOSFODNN7EXAMPLE",
}

APP = textwrap.dedent(f"""
    import logging, otelkit
    from otelkit import pipeline

    otelkit.init(service_name="first-look", instrument=())
    log = logging.getLogger("shop.orders")
    headers = {{}}
    with pipeline.emit("orders", carrier=headers, system="redis"):
        log.warning("connecting with password={SECRETS['password']} and "
                    "Authorization: Bearer {SECRETS['bearer']} to postgresql://app:{SECRETS['dsn']}@db/shop "
                    "as {SECRETS['aws']}")
    with pipeline.receive("orders", carrier=headers, system="redis"):
        try:
            with otelkit.span("persist", dsn="postgresql://app:{SECRETS['dsn']}@db/shop"):
                raise ValueError("insert refused for password={SECRETS['password']}")
        except ValueError:
            log.exception("could not store the order")
""")


@pytest.fixture(scope="module")
def err(tmp_path_factory: pytest.TempPathFactory) -> str:
    """stderr of the app, run once for the module."""
    script = tmp_path_factory.mktemp("first_look") / "first_look_app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "console",
                "OTEL_METRICS_EXPORTER": "console", "NO_COLOR": "1"})
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def _block(err: str, first: str, more: str) -> list[str]:
    """The line starting with ``first`` and the lines after it matching ``more`` (signals flush concurrently at
    exit, so the trees, log lines and the metric summary may come in any order)."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not re.match(more, line):
            break
        block.append(line)
    return block


def _tree(err: str) -> str:
    return "\n".join(_block(err, "└─ process orders", r"^ {3}"))


def _summary(err: str) -> list[str]:
    return _block(err, "metrics at", r"^  [^\s│├└]")


def test_console_output_is_scrubbed_like_otlp(err: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in err, f"the {name} secret printed in clear on the console:\n{err}"
    assert "password=[REDACTED]" in err  # the message is still there, scrubbed
    assert "connecting with" in err


def test_the_consumer_tree_points_at_its_producer(err: str) -> None:
    producer = re.search(r"^trace ([0-9a-f]{32}) · 1 span .*\n└─ send orders  producer", err, re.M)
    assert producer, err
    link = re.search(r"↳ linked to send orders \(trace ([0-9a-f]{32}), span [0-9a-f]{16}\)", err)
    assert link, err
    assert link.group(1) == producer.group(1)
    # The link line sits in the consumer's tree, under "process orders".
    consumer_tree = _tree(err)
    assert consumer_tree.index("↳ linked to send orders") < consumer_tree.index("persist")


def test_exceptions_show_their_traceback_once_per_exception(err: str) -> None:
    # Under the span that raised it (once, though it also went through "process orders"), and under the log line.
    tree = _tree(err)
    span_part = tree[tree.index("└─ persist"):]
    assert re.search(r"^\s+Traceback \(most recent call last\):\n\s+File .*line \d+", span_part, re.M), err
    assert re.search(r'raise ValueError\("insert refused', span_part)
    assert tree.count("Traceback (most recent call last):") == 1, tree
    log_part = err[err.index("could not store the order"):]
    assert re.match(r".*\n    Traceback \(most recent call last\):\n", log_part), log_part[:400]
    assert re.search(r"^    ValueError: insert refused for password=\[REDACTED\]$", log_part, re.M), log_part


def test_metric_summary_is_short_and_shows_no_zero_utilisation(err: str) -> None:
    summary = _summary(err)
    assert len(summary) <= 15, "\n".join(summary)
    assert not [line for line in summary if "utilization" in line or line.startswith("  system.")]
    process = [line for line in summary if line.startswith("  process  ")]
    assert len(process) == 1 and re.search(r"cpu \d+\.\d\d s", process[0]) and "MiB" in process[0], summary
    assert not re.search(r"cpu 0\.00 s", process[0])  # a program that ran used some CPU
    telemetry = [line for line in summary if line.startswith("  telemetry  ")]
    # Counted at the collection (spans still in flight at exit may not be yet): what was exported so far.
    assert len(telemetry) == 1 and "log records" in telemetry[0] and "dropped none" in telemetry[0], summary
    assert any(line.startswith("  messaging.client.sent.messages") and line.endswith("  1") for line in summary)


def test_the_correlation_id_shows_where_it_starts_not_on_every_child(err: str) -> None:
    process = next(line for line in err.splitlines() if "└─ process orders" in line)
    persist = next(line for line in err.splitlines() if "└─ persist" in line)
    assert "otelkit.correlation_id=" in process
    assert "otelkit.correlation_id=" not in persist
