"""otelkit._scrub: SQL, URLs, headers, free text, and the export-time pass over spans and logs."""

from __future__ import annotations

import pytest
from opentelemetry.sdk._logs import LoggerProvider, ReadWriteLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, StatusCode

from otelkit import _scrub
from otelkit._scrub import scrub_headers, scrub_sql, scrub_text, scrub_url


@pytest.fixture(autouse=True)
def _default_config() -> None:
    _scrub.configure()
    yield
    _scrub.configure()


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT 'secret'", "SELECT ?"),
        ("SELECT * FROM t WHERE id = 42 AND x = 3.14 AND y = -7 AND z = 1e10",
         "SELECT * FROM t WHERE id = ? AND x = ? AND y = -? AND z = ?"),
        ("SELECT 'it''s' , E'a\\'b', e'x', B'0101', X'DEADBEEF', U&'d\\0061t'", "SELECT ? , ?, ?, ?, ?, ?"),
        ("SELECT $$dollar secret$$, $fn$ body 'q' $fn$", "SELECT ?, ?"),
        ("SELECT 1 -- secret comment\nFROM t /* another\nsecret */ WHERE a = 2", "SELECT ?\nFROM t WHERE a = ?"),
        ("SELECT * FROM t WHERE a IN (1, 2, 3) AND b IN ('x','y')", "SELECT * FROM t WHERE a IN (?) AND b IN (?)"),
        ("INSERT INTO t (a, b) VALUES (%s, %(name)s)", "INSERT INTO t (a, b) VALUES (%s, %(name)s)"),
        ("SELECT $1, $2::int, :named FROM t2", "SELECT $1, $2::int, :named FROM t2"),
        ("SELECT \"Col1\", col2 FROM \"Tab'le\" WHERE flag = true",
         "SELECT \"Col1\", col2 FROM \"Tab'le\" WHERE flag = ?"),
        ("SELECT x'ff' FROM t WHERE s = 'unterminated secret", "SELECT ? FROM t WHERE s = ?"),
        ("SELECT interval '1 day', date '2024-01-01', 0xFF", "SELECT interval ?, date ?, ?"),
    ],
)
def test_scrub_sql(statement: str, expected: str) -> None:
    assert scrub_sql(statement) == expected


def test_scrub_sql_is_idempotent_and_truncates() -> None:
    once = scrub_sql("SELECT 'a', 1 FROM t WHERE b = %s")
    assert scrub_sql(once) == once
    long = "SELECT " + ", ".join(f"col{i}" for i in range(2000))
    assert len(scrub_sql(long)) == _scrub.MAX_STATEMENT_LENGTH
    assert scrub_sql(long).endswith("...")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pa55@h:8/p?sig=a&X-Amz-Signature=b&X-Amz-Credential=c&X-Amz-Security-Token=d&page=2",
         "http://REDACTED:REDACTED@h:8/p?sig=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"
         "&X-Amz-Security-Token=REDACTED&page=2"),
        ("https://h/cb?code=abc&state=xyz&access_token=t&token=u&password=p&api_key=k&apikey=k2&secret=s"
         "&client_secret=cs&AWSAccessKeyId=a&Signature=s&X-Goog-Signature=g&q=keep",
         "https://h/cb?code=REDACTED&state=REDACTED&access_token=REDACTED&token=REDACTED&password=REDACTED"
         "&api_key=REDACTED&apikey=REDACTED&secret=REDACTED&client_secret=REDACTED&AWSAccessKeyId=REDACTED"
         "&Signature=REDACTED&X-Goog-Signature=REDACTED&q=keep"),
        ("https://ghp_token@github.com/x", "https://REDACTED@github.com/x"),
        ("https://h/#access_token=abc&x=1", "https://h/#access_token=REDACTED&x=1"),
        ("https://h/reset/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlMTIz", "https://h/reset/[REDACTED]"),
        ("http://h/plain?a=1", "http://h/plain?a=1"),
    ],
)
def test_scrub_url(url: str, expected: str) -> None:
    assert scrub_url(url) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("could not connect to postgresql://app:S3cr3t-pw@db:5432/app", "S3cr3t-pw"),
        ("header was Authorization: Bearer abcdefghijklmnop123", "abcdefghijklmnop123"),
        ("Basic dXNlcjpwYXNzd29yZA== rejected", "dXNlcjpwYXNzd29yZA=="),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlMTIz here", "eyJhbGciOiJIUzI1NiJ9"),
        ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
        ("dsn host=db password=hunter2 user=app", "hunter2"),
        ('{"api_key": "k-123456", "user": "bob"}', "k-123456"),
        ("token: tok_abcdef", "tok_abcdef"),
        ("gh token ghp_" + "a" * 36, "ghp_" + "a" * 36),
        ("slack xoxb-1234567890-abcdef", "xoxb-1234567890-abcdef"),
        ("charge failed with sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc"),
        ("restricted key rk_test_51HxYzAbCdEfGhIjKlMn", "51HxYzAbCdEfGhIjKlMn"),
        ('config secret_key="k9-abcdef" loaded', "k9-abcdef"),
        ("session_id=s3ss-1234 expired", "s3ss-1234"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEabc\n-----END RSA PRIVATE KEY-----", "MIIEabc"),
        ("url https://h/x?X-Amz-Signature=abcdef&ok=1", "abcdef"),
    ],
)
def test_scrub_text_removes_secrets(text: str, secret: str) -> None:
    assert secret not in scrub_text(text)


def test_scrub_text_keeps_ordinary_text() -> None:
    text = "order 1234 processed in 35 ms by worker-3 (author: bob) at 12:30"
    assert scrub_text(text) == text
    assert scrub_text("postgresql://app@db/app") == "postgresql://app@db/app"
    # Stripe's publishable keys are public; "task_live_..." only looks like a secret key.
    for public in ("pk_live_4eC39HqLyjWDarjtT1zdp7dc", "task_live_4eC39HqLyjWDarjtT1zdp7dc"):
        assert scrub_text(public) == public


def test_extra_patterns() -> None:
    _scrub.configure(True, [r"CUST-\d{6}"])
    assert scrub_text("customer CUST-123456 failed") == "customer [REDACTED] failed"
    with pytest.raises(ValueError, match="OTELKIT_SCRUB_EXTRA_PATTERNS"):
        _scrub.configure(True, ["("])


def test_scrub_headers() -> None:
    headers = {
        "Authorization": "Basic dXNlcjpwYTU1", "Proxy-Authorization": "x", "Cookie": "session=abc",
        "Set-Cookie": "id=1", "X-Api-Key": "k", "X-Auth-Token": "t", "X-Session-Id": "s", "X-Client-Secret": "c",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "baggage": "correlation_id=a",
        "Accept": "application/json", "X-Note": "password=hunter2",
    }
    out = scrub_headers(headers)
    for name in ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "X-Auth-Token",
                 "X-Session-Id", "X-Client-Secret"):
        assert out[name] == "[REDACTED]", name
    assert out["traceparent"] == headers["traceparent"]
    assert out["baggage"] == headers["baggage"]
    assert out["Accept"] == "application/json"
    assert "hunter2" not in out["X-Note"]
    assert scrub_headers({b"authorization": [b"x"]})[b"authorization"] == ["[REDACTED]"]


def _spans_with_secrets() -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("db", attributes={
        "db.system.name": "postgresql", "db.query.text": "SELECT 'OTK-1'",
        "db.statement.parameters": "('OTK-2',)",
    }) as span:
        span.record_exception(ValueError('invalid input syntax for type integer: "OTK-3"'))
        span.set_status(StatusCode.ERROR, 'invalid input syntax for type integer: "OTK-3"')
    with tracer.start_as_current_span("cache", attributes={
        "db.system": "redis", "db.statement": "AUTH admin OTK-4", "redis.search.query": "@name:OTK-5",
    }):
        pass
    link_ctx = span.get_span_context()
    with tracer.start_as_current_span("GET https://u:OTK-6@h/x", links=[Link(link_ctx, {"token": "OTK-7"})],
                                      attributes={"url.full": "https://h/x?token=OTK-8", "user.password": "OTK-9",
                                                  "http.request.header.authorization": ("Bearer OTK-10",),
                                                  "count": 3, "ok": "plain"}) as s3:
        s3.add_event("retry", {"exception.message": "failed with Bearer OTK-11abcdef"})
    return list(exporter.get_finished_spans())


def test_scrub_spans_rewrites_attributes_events_links_name_and_status() -> None:
    spans = _spans_with_secrets()
    scrubbed = _scrub.scrub_spans(spans)
    dump = repr([(s.name, dict(s.attributes), [(e.name, dict(e.attributes)) for e in s.events],
                  [dict(link.attributes) for link in s.links], s.status.description) for s in scrubbed])
    for n in range(1, 12):
        assert f"OTK-{n}'" not in dump and f"OTK-{n}\"" not in dump and f"OTK-{n})" not in dump, (n, dump)
    assert "OTK-" not in dump
    db, cache, http = scrubbed
    assert db.attributes["db.query.text"] == "SELECT ?"
    assert "db.statement.parameters" not in db.attributes
    assert cache.attributes["db.statement"] == "AUTH ? ?"
    assert "redis.search.query" not in cache.attributes
    assert http.attributes["count"] == 3 and http.attributes["ok"] == "plain"
    assert http.context == spans[2].context and http.parent == spans[2].parent
    assert http.resource is spans[2].resource
    assert db.status.status_code is StatusCode.ERROR


def test_scrub_spans_passes_clean_spans_through_unchanged() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("clean", attributes={"a": 1, "b": "text"}):
        pass
    (span,) = exporter.get_finished_spans()
    assert _scrub.scrub_spans([span])[0] is span


def test_scrub_disabled_is_a_pass_through() -> None:
    _scrub.configure(False)
    spans = _spans_with_secrets()
    assert _scrub.scrub_spans(spans) == spans


def test_scrub_log_records() -> None:
    from opentelemetry._logs import LogRecord

    record = ReadWriteLogRecord(
        LogRecord(body="login failed for postgres://u:OTK-12@db/x", attributes={"password": "OTK-13", "n": 1}),
        resource=Resource.create({}),
    )
    structured = ReadWriteLogRecord(LogRecord(body={"token": "OTK-14", "msg": "Bearer OTK-15abcdefgh"}),
                                    resource=Resource.create({}))
    out = _scrub.scrub_log_records([record, structured])
    assert "OTK-12" not in out[0].log_record.body
    assert out[0].log_record.attributes["password"] == "[REDACTED]"
    assert out[0].log_record.attributes["n"] == 1
    assert "OTK-" not in repr(out[1].log_record.body)
    LoggerProvider().shutdown()


def test_is_sensitive_key() -> None:
    for key in ("password", "db_passwd", "api_key", "X-Api-Key", "client_secret", "session_id", "authorization",
                "set-cookie", "csrf_token", "private_key", "access-key"):
        assert _scrub.is_sensitive_key(key), key
    for key in ("author", "authors", "user", "http.method", "traceparent", "key_count"):
        assert not _scrub.is_sensitive_key(key), key


def test_driver_error_on_an_application_span_is_scrubbed_like_a_db_error() -> None:
    attributes = {"exception.type": "psycopg2.errors.UniqueViolation",
                  "exception.message": "duplicate key\nDETAIL:  Key (email)=(OTK-16@example.com) already exists."}
    out = _scrub.scrub_attributes(attributes)
    assert out is not None and "OTK-16" not in out["exception.message"]


def test_driver_error_in_a_log_record_is_recognised_by_its_traceback() -> None:
    message = 'invalid input syntax for type integer: "OTK-17"'
    attributes = {"exception.type": "InvalidTextRepresentation", "exception.message": message,
                  "exception.stacktrace": f"Traceback ...\npsycopg2.errors.InvalidTextRepresentation: {message}\n"}
    out = _scrub.scrub_attributes(attributes)
    assert out is not None and "OTK-17" not in repr(out)


@pytest.mark.parametrize(
    "text",
    [
        "discovered token 44VBjhr7mtwJ4k4DpSoCtJqJxqTenMyR6NU5tbyopump",  # seed 000: crypto tokens are data
        "the basic information was refreshed",
        "Basic information about the batch",
        "Token refresh attempt 3 of 101",
    ],
)
def test_plain_english_token_and_basic_are_not_redacted(text: str) -> None:
    """Words that merely look like auth schemes keep their business values (no over-redaction)."""
    assert scrub_text(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Bearer abcdefghijklmnop123", "abcdefghijklmnop123"),
        ("sent with bearer zzzzzzzzzzzz", "zzzzzzzzzzzz"),
        ("Authorization: Token abcdef123456", "abcdef123456"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
    ],
)
def test_auth_scheme_credentials_are_redacted(text: str, secret: str) -> None:
    """Credentials after an auth scheme are removed, with or without an Authorization key."""
    assert secret not in scrub_text(text)
