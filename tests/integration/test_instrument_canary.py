"""Canary: secrets planted everywhere an instrumented service puts data never reach the OTLP wire.

``otelkit.init()`` exports traces, metrics and logs over real OTLP/HTTP to the in-process receiver;
the test then searches every received protobuf message, serialized, for each canary (raw and in the
base64 forms an ``Authorization: Basic`` header would carry).
"""

from __future__ import annotations

import base64
import logging
import uuid

import httpx
import psycopg2
import pytest
import redis
from psycopg2 import sql

import otelkit
from otelkit.testing._receiver import OtlpReceiver, free_port
from tests.integration.instrument_support import http_server

CANARIES = {n: f"OTK-CANARY-{n}-{uuid.uuid4().hex[:6]}" for n in range(1, 27)}


pytestmark = pytest.mark.usefixtures("fresh_otelkit")


def _b64_forms(secret: str) -> list[bytes]:
    forms = []
    for prefix in ("", "a", "ab", "user:", "u:"):
        encoded = base64.b64encode((prefix + secret).encode())
        forms.append(encoded[len(prefix) * 4 // 3 + 4: -4] or encoded)
    return forms


def test_no_canary_reaches_the_exporter(redis_url: str, postgres_dsn: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    c = CANARIES
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", ".*")
    key = f"otelkit-canary-{uuid.uuid4().hex}"
    table = f"otelkit_canary_{uuid.uuid4().hex[:10]}"
    app_log = logging.getLogger("canary.app")

    with OtlpReceiver() as receiver, http_server() as (base, _seen):
        otelkit.init(service_name="canary", endpoint=receiver.http_endpoint, protocol="http/protobuf",
                     traces_exporter="otlp", metrics_exporter="otlp", logs_exporter="otlp",
                     instrument=["redis", "psycopg2", "httpx"], system_metrics=False)
        tracer = __import__("opentelemetry.trace", fromlist=["get_tracer"]).get_tracer("canary")
        with tracer.start_as_current_span("job", attributes={"password": c[1], "api_key": c[2], "token": c[3]}) as job:
            # HTTP: userinfo (also becomes Authorization: Basic), every sensitive query key, secret headers.
            url = base.replace("http://", f"http://svc:{c[4]}@") + (
                f"/v1/x?sig={c[5]}&X-Amz-Signature={c[6]}&X-Amz-Credential={c[7]}&access_token={c[8]}"
                f"&api_key={c[9]}&password={c[10]}&page=1")
            with httpx.Client() as client:
                client.get(url, headers={"X-Api-Key": c[11], "Cookie": f"session={c[12]}"})
                client.get(base + "/y", headers={"Authorization": f"Bearer {c[13]}"})
                with pytest.raises(httpx.ConnectError):
                    client.get(f"http://127.0.0.1:{free_port()}/z?token={c[14]}")

            # PostgreSQL: DSN password, inline literal, sql.Literal, failing cast that echoes the value.
            dsn = postgres_dsn + f" password={c[15]}"
            conn = psycopg2.connect(dsn)
            with conn.cursor() as cur:
                cur.execute(f"CREATE TEMP TABLE {table} (v text)")
                cur.execute(f"INSERT INTO {table} VALUES ('{c[16]}')")
                cur.execute(sql.SQL("SELECT {}").format(sql.Literal(c[17])))
                cur.execute(f"SELECT v FROM {table} WHERE v = %s", (c[18],))
                with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
                    cur.execute(f"SELECT '{c[19]}'::int")
            conn.rollback()
            conn.close()

            # Redis: values never leave.
            r = redis.Redis.from_url(redis_url)
            r.set(key, c[20])
            r.hset(key + ":h", mapping={"f": c[20]})
            r.delete(key, key + ":h")
            with pytest.raises(redis.exceptions.RedisError):
                r.execute_command("AUTH", "otelkit-canary-user", c[24])
            r.close()

            # Free text: exception messages and log bodies.
            try:
                raise ConnectionError(f"cannot reach postgresql://app:{c[21]}@db:5432/app")
            except ConnectionError as exc:
                job.record_exception(exc)
                app_log.error("login with Bearer %s failed", c[22] + "abcdefgh", exc_info=True)
            app_log.warning("retrying with password=%s", c[23])
            app_log.warning("structured", extra={"password": c[25], "api_key": c[26], "attempt": 2})
        report = otelkit.shutdown()

        names = {s.name for s in receiver.spans()}
        # The test must be able to fail: the telemetry did arrive.
        assert {"job", "GET", "INSERT", "SELECT", "SET", "HSET", "AUTH"} <= names, (names, report)
        assert receiver.metrics("http.client.request.duration")
        assert receiver.metrics("db.client.operation.duration")
        assert any("failed" in str(log.body) for log in receiver.logs())
        assert any(log.attributes.get("attempt") == 2 for log in receiver.logs())
        wire = b"".join(request.SerializeToString() for _signal, request in receiver.requests)
        assert b"REDACTED" in wire

        leaked = []
        for n, canary in c.items():
            if canary.encode() in wire:
                leaked.append((n, canary))
            for form in _b64_forms(canary):
                if len(form) >= 8 and form in wire:
                    leaked.append((n, "base64", canary))
        assert leaked == []
