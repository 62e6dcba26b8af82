"""Session ids and provider tokens never leave the process, on any path.

For each format (Java servlet ``;jsessionid=``, PHP ``PHPSESSID``, ASP.NET ``ASP.NET_SessionId`` and
``.ASPXAUTH``, GitHub ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, Slack ``xox?-``
tokens and webhook URLs, Stripe ``sk_``/``rk_`` live/test keys, Google ``AIza`` keys, AWS ``AKIA``/
``ASIA`` key ids and secret keys, JWTs) a real process (``apps/secrets_app.py``) puts the secret in span
attributes, ``url.full``, SQL, an exception message, a log body and a log attribute, and a logged error;
it exports over OTLP to a real receiver and to the console, and reports errors to Sentry through the real
sentry-sdk transport (``SentrySink``). The secret's random part must appear in none of the OTLP requests,
the console output or the Sentry envelopes, while the telemetry itself arrives.
"""

from __future__ import annotations

import json
import os
import secrets as random_secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest
from sentry_sink import SentrySink

from otelkit import _scrub
from otelkit.testing._receiver import OtlpReceiver

APPS = Path(__file__).parent / "apps"


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(random_secrets.choice(alphabet) for _ in range(n))


def formats() -> dict[str, tuple[str, str]]:
    """name -> (text carrying the secret, the secret's random part that must not leak). Built at run time."""
    hexu = string.hexdigits.upper()[:16]
    upper = string.ascii_uppercase + string.digits
    out: dict[str, tuple[str, str]] = {}

    def add(name: str, template: str, secret: str) -> None:
        out[name] = (template.format(secret), secret)

    add("jsessionid", "https://shop.test/cart;jsessionid={}?item=1", _rand(32, hexu))
    add("jsessionid-upper", "/app/login;JSESSIONID={}", _rand(32, hexu))
    add("phpsessid-query", "https://php.test/index.php?PHPSESSID={}&page=2", _rand(26, string.ascii_lowercase))
    add("phpsessid-cookie", "PHPSESSID={}; lang=en", _rand(26, string.ascii_lowercase + string.digits))
    add("aspnet-session", "ASP.NET_SessionId={}", _rand(24, string.ascii_lowercase))
    add("aspxauth", ".ASPXAUTH={}", _rand(64, hexu))
    add("aspnetcore", ".AspNetCore.Session={}", "CfDJ8" + _rand(40))
    for prefix in ("ghp", "gho", "ghu", "ghs", "ghr"):
        add(f"github-{prefix}", f"{prefix}_{{}}", _rand(36))
    add("github-pat", "github_pat_{}", _rand(22) + "_" + _rand(59))
    for prefix in ("xoxb", "xoxp", "xoxa", "xoxr", "xoxs"):
        add(f"slack-{prefix}", f"{prefix}-123456789012-{{}}", _rand(24))
    add("slack-webhook", "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/{}", _rand(24))
    for prefix in ("sk_live", "sk_test", "rk_live", "rk_test"):
        add(f"stripe-{prefix}", f"{prefix}_{{}}", _rand(24))
    add("google-api-key", "AIza{}", _rand(35))
    add("aws-akia", "AKIA{}", _rand(16, upper))
    add("aws-asia", "ASIA{}", _rand(16, upper))
    add("aws-secret-env", "AWS_SECRET_ACCESS_KEY={}", _rand(40, string.ascii_letters + string.digits + "/+"))
    add("aws-secret-json", '{{"SecretAccessKey": "{}"}}', _rand(40, string.ascii_letters + string.digits + "/+"))
    add("jwt", "eyJhbGciOiJIUzI1NiJ9.{}", f"eyJzdWIiOi{_rand(20)}.{_rand(43)}")
    return out


def test_every_format_is_redacted_by_the_text_rules() -> None:
    # The same table, through the scrubbers directly: a failure here names the format and the function.
    for name, (text, secret) in formats().items():
        for scrub in (_scrub.scrub_text, _scrub.scrub_url):
            assert secret not in scrub(text), (name, scrub.__name__, scrub(text))
        sql = _scrub.scrub_sql(f"SELECT 1 FROM t WHERE v = '{text}' -- {text}")
        assert secret not in sql, (name, sql)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_no_format_leaves_the_process_on_any_path(otelkit_otlp_receiver: OtlpReceiver, protocol: str) -> None:
    table = formats()
    with SentrySink() as sink:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELKIT_", "SENTRY_"))}
        env.update({
            "OTEL_SERVICE_NAME": "secrets-test",
            "OTEL_EXPORTER_OTLP_ENDPOINT": (otelkit_otlp_receiver.grpc_endpoint if protocol == "grpc"
                                            else otelkit_otlp_receiver.http_endpoint),
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_TRACES_EXPORTER": "otlp,console",
            "OTEL_LOGS_EXPORTER": "otlp,console",
            "OTEL_METRICS_EXPORTER": "none",
            "OTELKIT_SYSTEM_METRICS": "false",
            "SENTRY_DSN": sink.dsn,
            "OTELKIT_TEST_SECRETS": json.dumps({name: text for name, (text, _) in table.items()}),
        })
        result = subprocess.run([sys.executable, str(APPS / "secrets_app.py")], env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        # Everything arrived (the app flushed at exit): two Sentry events per format, every span and record.
        sink.wait_for_events(2 * len(table), timeout=30)
        otelkit_otlp_receiver.wait_for_spans(3 * len(table), timeout=30)
        otelkit_otlp_receiver.wait_for(lambda: len(otelkit_otlp_receiver.logs()) >= 2 * len(table), timeout=30)
        raw_otlp = b"".join(request.SerializeToString() for _, request in otelkit_otlp_receiver.requests)
        console = result.stdout + result.stderr
        sentry_raw = sink.raw()
    assert all(f"attr-{name}" in console for name in table), "the console exporter printed the spans"
    leaks = {name: [where for where, found in (("otlp", secret.encode() in raw_otlp), ("console", secret in console),
                                               ("sentry", secret.encode() in sentry_raw)) if found]
             for name, (_, secret) in table.items()}
    assert {name: where for name, where in leaks.items() if where} == {}
    # Scrubbed, not dropped: the surrounding text is still there.
    note = {s.name: s.attributes["note"] for s in otelkit_otlp_receiver.spans() if s.name.startswith("attr-")}
    assert note["attr-jsessionid"] == "value https://shop.test/cart;jsessionid=[REDACTED]?item=1 end"
    assert note["attr-slack-webhook"] == "value https://hooks.slack.com/services/[REDACTED] end"
