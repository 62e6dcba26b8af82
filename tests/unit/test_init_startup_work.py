"""Issue 17.5: ``init()`` leaves out work its start-up does not need, and the deferred work still happens.

Each item was measured in callgrind instructions of a minimal ``init()`` (``benchmarks/bench_core.py``
start-up row): the propagator entry point scan (~37M), compiling the scrubbing and settings regexes
(~50M), importing ``multiprocessing.pool`` (~9M), ``hashlib``, ``secrets`` and ``gzip`` (~17M).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from otelkit import _regex

_PROBE = r"""
import importlib.metadata, json, sys
groups = []
_real = importlib.metadata.entry_points
def _counting(**kw):
    groups.append(kw.get("group"))
    return _real(**kw)
importlib.metadata.entry_points = _counting
import otelkit
otelkit.init(service_name="x", instrument=(), system_metrics=False, endpoint="http://127.0.0.1:9",
             protocol="grpc")
from otelkit import _regex, _scrub
from opentelemetry import propagate
deferred = sorted(n for n, v in vars(_scrub).items() if isinstance(v, _regex._Deferred))
carrier = {}
with otelkit.span("probe"):
    propagate.inject(carrier)
print(json.dumps({
    "groups": groups,
    "modules": sorted(m for m in ("multiprocessing.pool", "hashlib", "secrets", "gzip") if m in sys.modules),
    "deferred": deferred,
    "propagator": type(propagate.get_global_textmap()).__name__,
    "fields": sorted(propagate.get_global_textmap().fields),
    "traceparent": "traceparent" in carrier,
}))
import os; os._exit(0)
"""


def _probe(env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_minimal_init_skips_the_propagator_scan_the_regexes_and_unused_modules() -> None:
    result = _probe()
    assert "opentelemetry_propagator" not in result["groups"]
    assert result["modules"] == []
    assert "_TEXT_RE" in result["deferred"] and "_SQL_TOKEN" in result["deferred"]
    # The default pair is still what is propagated.
    assert result["propagator"] == "CompositePropagator"
    assert result["fields"] == ["baggage", "traceparent", "tracestate"]
    assert result["traceparent"] is True


def test_a_propagator_other_than_the_default_pair_is_still_loaded_from_its_entry_point() -> None:
    # sentry-sdk (a test dependency) registers "sentry" under the opentelemetry_propagator group.
    result = _probe({"OTEL_PROPAGATORS": "sentry,tracecontext"})
    assert "opentelemetry_propagator" in result["groups"]
    assert "sentry-trace" in result["fields"] and "traceparent" in result["fields"]


def test_a_deferred_pattern_compiles_at_first_use_and_takes_its_place() -> None:
    namespace: dict[str, Any] = {}
    namespace["PAT"] = _regex.deferred(namespace, "PAT", r"a(b+)", re.IGNORECASE)
    assert isinstance(namespace["PAT"], _regex._Deferred)
    match = namespace["PAT"].search("xABBy")
    assert match is not None and match.group(1) == "BB"
    assert isinstance(namespace["PAT"], re.Pattern) and namespace["PAT"].flags & re.IGNORECASE


def test_deferred_refuses_to_shadow_a_bound_name() -> None:
    namespace: dict[str, object] = {"PAT": re.compile("x")}
    with pytest.raises(ValueError, match="'PAT' is already bound"):
        _regex.deferred(namespace, "PAT", "y")


def test_the_scrubbing_rules_still_apply_after_deferral() -> None:
    from otelkit import _scrub

    assert _scrub.scrub_text("Authorization: Bearer abcdefgh12345678") == "Authorization: [REDACTED]"
    assert _scrub.scrub_sql("SELECT * FROM t WHERE a = 'x' AND b IN (1, 2, 3)") == \
        "SELECT * FROM t WHERE a = ? AND b IN (?)"
    assert _scrub.is_sensitive_key("X-Api-Key")
