"""The usage contract (issue 19 part 7), one test per rule.

* ``init()``: a mistake in the call itself (a positional argument, an unknown keyword) is a ``TypeError``
  naming the argument and pointing at the accepted ones; a bad *value* is a ``ConfigError`` naming the
  setting, the value and what is accepted (``strict=False``: one warning and the default).
* Telemetry calls on the hot path (``pipeline.emit`` with a carrier that is not one) never raise: they
  warn once and carry on (tests in ``test_bad_input_pipeline.py``).
* Set-up calls (``redis_probe``) follow ``strict`` like ``init()``.
* ``pipeline.wrap`` serialises the application's own payload: one JSON cannot hold raises ``TypeError``
  saying what to pass (otelkit never alters or drops application data).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from typing import Any

import pytest

import otelkit
from otelkit import pipeline
from otelkit._config import ConfigError, ConfigWarning, resolve

pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def test_positional_argument_is_a_type_error_that_says_what_to_write() -> None:
    with pytest.raises(TypeError, match=re.escape("keyword arguments only") + ".*init\\(service_name='svc'\\)"):
        otelkit.init("svc")  # type: ignore[arg-type]


def test_unknown_keyword_names_it_suggests_the_closest_and_lists_the_accepted() -> None:
    with pytest.raises(TypeError) as info:
        otelkit.init(sevice_name="x")
    text = str(info.value)
    assert "'sevice_name' (did you mean 'service_name'?)" in text
    assert "Accepted:" in text and "span_processors" in text and "traces_endpoint" in text
    with pytest.raises(TypeError, match="'unknown_kw'"):
        otelkit.init(unknown_kw=1)


@pytest.mark.parametrize(("kwargs", "env", "fragment"), [
    ({"metric_export_interval": 0}, {}, "argument metric_export_interval=0 is not valid: expected a duration of "
                                        "at least 0.1 seconds"),
    ({}, {"OTEL_METRIC_EXPORT_INTERVAL": "0"}, "OTEL_METRIC_EXPORT_INTERVAL='0' is not valid: expected a duration "
                                               "of at least 100 ms"),
    ({"log_level": 5}, {}, "argument log_level=5 is not valid: expected a logging level: NOTSET, DEBUG"),
    ({}, {"OTELKIT_LOG_LEVEL": "25"}, "OTELKIT_LOG_LEVEL='25' is not valid"),
    ({"service_name": "svc\x00x"}, {}, "argument service_name='svc\\x00x' is not valid: expected a non-empty name"),
    ({"service_name": "line\nbreak"}, {}, "without control characters"),
    ({"service_name": "a" * 100_000}, {}, "(100000 characters) is not valid: expected a non-empty name (valid "
                                          "UTF-8) of at most 255 characters"),
], ids=["interval-0-arg", "interval-0-env", "log-level-5", "log-level-25-env", "name-nul", "name-newline",
        "name-100k"])
def test_values_that_used_to_pass_silently_are_config_errors(kwargs: dict[str, Any], env: dict[str, str],
                                                             fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(environ=env, **kwargs)
    assert fragment in str(info.value)
    assert len(str(info.value)) < 600  # a 100k value is not echoed whole
    with warnings.catch_warnings(record=True) as caught:  # strict=False: one warning and the default
        warnings.simplefilter("always")
        settings = resolve(environ={**env, "OTELKIT_STRICT": "false"}, **kwargs)
    assert [w.category for w in caught] == [ConfigWarning]
    assert settings.metric_export_interval == 60.0 and settings.log_level == logging.INFO


def test_accepted_values_stay_accepted() -> None:
    logging.addLevelName(25, "NOTICE")
    try:
        assert resolve(environ={}, log_level=25).log_level == 25
    finally:
        logging.addLevelName(25, "Level 25")
    assert resolve(environ={}, log_level=10).log_level == 10
    assert resolve(environ={}, log_level="warning").log_level == logging.WARNING
    assert resolve(environ={}, metric_export_interval=0.1).metric_export_interval == 0.1
    assert resolve(environ={}, service_name="Billing API (eu-west) ✓").service_name == "Billing API (eu-west) ✓"


CATASTROPHIC = ["(a+)+$", r"(\w+\s?)+$", "(a|aa)*c", "(x+x+)+y", r"^(([a-z])+.)+[A-Z]([a-z])+$", "(.*a){12}"]
BENIGN = [r"acct-\d{6,}", r"(?:foo|bar)+baz", r"[A-Z]{3}-\d+", r"secret=\S+", r"\bINT-[0-9a-f]{8}\b",
          r"(?:\s|,)+tok", r"(?>a+)+b", r"https?://[^\s/]+/private/\S+"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_a_catastrophic_scrub_pattern_is_rejected_at_init(pattern: str) -> None:
    # Python's re cannot be interrupted, and these run on the export thread for every string: (a+)+$ takes
    # seconds on 30 characters. Rejected when configured, with how to rewrite it.
    with pytest.raises(ConfigError, match="cannot backtrack catastrophically.*atomic group"):
        resolve(environ={}, scrub_extra_patterns=[pattern])
    with pytest.raises(ConfigError, match="OTELKIT_SCRUB_EXTRA_PATTERNS"):
        resolve(environ={"OTELKIT_SCRUB_EXTRA_PATTERNS": pattern})


def test_benign_scrub_patterns_are_accepted_and_an_empty_match_is_not() -> None:
    assert resolve(environ={}, scrub_extra_patterns=BENIGN).scrub.extra_patterns == tuple(BENIGN)
    with pytest.raises(ConfigError, match="matches the empty string"):
        resolve(environ={}, scrub_extra_patterns=["x*"])


def test_accepted_patterns_finish_on_adversarial_text() -> None:
    # What the static check buys: each accepted pattern finishes on a 20k-character adversarial string (at worst
    # polynomially: the attribute length limit, 8192, bounds those). Not a timing
    # assertion: a catastrophic pattern would not finish at all (hours), the deadline is only a safety net.
    from otelkit import _scrub

    _scrub.configure(True, BENIGN)
    try:
        for text in ("a" * 20_000 + "!", "acct-" + "1" * 20_000, " ," * 10_000, "x" * 20_000):
            start = time.monotonic()
            _scrub._scrub_text(text)
            assert time.monotonic() - start < 60
    finally:
        _scrub.configure(True, ())


def test_wrap_of_a_payload_json_cannot_hold_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match=r"otelkit.pipeline.wrap: the payload \(object\) cannot be put in a JSON "
                                        r"envelope.*pass str, bytes, or JSON-serialisable data"):
        pipeline.wrap(object(), {})
    assert pipeline.unwrap(pipeline.wrap({"n": 1}, object()))[0] == {"n": 1}  # odd headers: ignored, not fatal


def test_redis_probe_with_a_bad_kind_follows_strict(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="redis_probe: kind='bogus' is not valid: expected one of list, set, "
                                          "stream, zset"):
        pipeline.redis_probe(object(), "k", kind="bogus")  # type: ignore[arg-type]
    otelkit.init(service_name="probe", strict=False, traces_exporter="none", metrics_exporter="none",
                 logs_exporter="none", instrument=(), system_metrics=False)
    with caplog.at_level(logging.WARNING, logger="otelkit"):
        probes = [pipeline.redis_probe(object(), "k", kind="bogus2") for _ in range(3)]  # type: ignore[arg-type]
    assert [p() for p in probes] == [None, None, None]  # reports nothing, never raises
    assert len([r for r in caplog.records if "bogus2" in r.getMessage()]) == 1
