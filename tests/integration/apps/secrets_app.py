"""Puts each secret of ``OTELKIT_TEST_SECRETS`` (JSON ``{name: text}``) through every telemetry path.

Run as a subprocess, configured through OTEL_*/SENTRY_* variables. The secrets arrive through the
environment, so the source lines Sentry sends as frame context hold no copy of them. For each name:
a span attribute, a span whose ``url.full`` and ``db.statement`` carry it, an exception on the span
(``exception.message``, a Sentry event), a log record with it in the body and an attribute, and a
logged error (Sentry event + OTLP log with ``exception.message``).
"""

from __future__ import annotations

import json
import logging
import os

import otelkit

log = logging.getLogger("secrets_app")


def main() -> None:
    otelkit.init()
    log.setLevel(logging.INFO)
    secrets: dict[str, str] = json.loads(os.environ["OTELKIT_TEST_SECRETS"])
    for name, text in secrets.items():
        with otelkit.span(f"attr-{name}", note=f"value {text} end", items=[f"item {text}"]):
            pass
        with otelkit.span(f"db-{name}", **{"db.system.name": "postgresql",
                                           "db.query.text": f"SELECT * FROM t WHERE v = '{text}' /* {text} */",
                                           "url.full": f"https://api.test/v1/{text}?q={text}&page=2"}):
            pass
        try:
            with otelkit.span(f"exc-{name}"):
                raise RuntimeError(f"request failed: {text}")
        except RuntimeError:
            pass
        log.warning("log-%s saw %s", name, text, extra={"detail": f"detail {text}"})
        try:
            raise ValueError(f"bad value {text}")
        except ValueError:
            log.exception("error-%s while handling %s", name, text)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
