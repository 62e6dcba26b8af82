"""Redaction of secrets before telemetry leaves the process.

Two layers use this module:

* **At the source.** otelkit's instrumentation hooks (``otelkit._instrument``)
  rewrite ``db.statement`` / ``url.full`` / captured headers while the span is
  still open, so even a custom exporter or span processor never sees the secret.
* **Before export.** :func:`scrub_spans` and :func:`scrub_log_records` run on
  the export thread (called by ``otelkit._export``) over every attribute, event
  attribute (``exception.message``!), link attribute, span name, status
  description and log body, because user code and third-party instrumentations
  put secrets in places no hook covers. The resource is exempt.

The rules (see ``docs``/README "Scrubbing"):

* URLs: userinfo becomes ``REDACTED:REDACTED``; the values of sensitive query
  keys (the semantic-convention list ``X-Amz-Signature``, ``sig``, ... plus
  ``access_token``, ``token``, ``password``, ``api_key``, ``code``, ...) become
  ``REDACTED`` with the key kept.
* SQL: every literal (strings, dollar-quoted, ``E''``/``B''``/``X''`` strings,
  numbers, booleans) becomes ``?``, comments are removed, ``IN (?, ?, ?)``
  collapses to ``IN (?)``, placeholders (``%s``, ``$1``, ``:name``) stay.
* Redis: ``db.statement`` is reduced to ``COMMAND ? ?...``; RediSearch query and
  result attributes are dropped.
* Headers and attribute keys that name a secret (authorization, cookie,
  token, secret, session, password, api key, credential...) get ``[REDACTED]``.
* Free text: DSN passwords, ``Bearer``/``Basic`` credentials, JWTs, AWS access
  key ids (secret keys next to their name), PEM private keys, ``password=...``-style
  pairs, session ids of the common frameworks (``;jsessionid=``, ``PHPSESSID``,
  ASP.NET, Express, Laravel...), GitHub/Slack/Stripe/Google tokens, Slack webhook URLs.

Scrubbing is on by default; ``OTELKIT_SCRUB=false`` (``settings.scrub.enabled``)
turns the export-time pass off, and ``OTELKIT_SCRUB_EXTRA_PATTERNS``
(``settings.scrub.extra_patterns``) adds regexes whose matches are redacted in
free text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status

from otelkit._compat import BOUNDED_DEQUE, BOUNDED_DICT, has_bounded_dict, scrub_fields, set_bounded_dict
from otelkit._internal_log import logger
from otelkit._regex import deferred

if TYPE_CHECKING:
    from otelkit._compat import ReadableLogRecord

REDACTED = "[REDACTED]"
"""Replacement for a whole secret value (headers, attributes, free text)."""
URL_REDACTED = "REDACTED"
"""Replacement inside URLs, as the HTTP semantic conventions prescribe."""

MAX_STATEMENT_LENGTH = 4096
"""``db.statement`` is cut to this many characters after sanitizing."""

# --- configuration --------------------------------------------------------------------------------

_enabled = True
_extra: tuple[re.Pattern[str], ...] = ()


def configure(enabled: bool = True, extra_patterns: Iterable[str] = ()) -> None:
    """Apply ``settings.scrub``: switch the export-time pass and set the user's extra regexes.

    Raises ``ValueError`` naming the pattern when one does not compile (``_config``
    validates first, so this only fires for direct callers).
    """
    global _enabled, _extra
    compiled = []
    for pattern in extra_patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ValueError(
                f"OTELKIT_SCRUB_EXTRA_PATTERNS: {pattern!r} is not a valid regular expression ({exc})"
            ) from exc
    _enabled = bool(enabled)
    _extra = tuple(compiled)
    # New cache objects, not cache_clear(): a scrub running concurrently on the export thread then fills
    # the old (discarded) cache, so no result computed with the old patterns outlives this call.
    _new_caches()


def is_enabled() -> bool:
    """Whether the export-time pass is on (the at-source sanitizing of SQL/URLs always is)."""
    return _enabled


# --- keys -----------------------------------------------------------------------------------------

# Key names that carry secrets (attribute keys, header names, query keys, dict keys). Built from
# Sentry's DEFAULT_DENYLIST and Logfire's DEFAULT_PATTERNS; `auth(?!or)` keeps "author".
_SENSITIVE_KEY = deferred(
    globals(), "_SENSITIVE_KEY",
    r"passw(?:or)?d|\bpwd\b|mysql_pwd|secret|token|auth(?!ors?\b)|credential|private[._ -]?key"
    r"|api[._ -]?key|access[._ -]?key|session|sessid|aspxauth|connect\.sid|cookie|csrf|xsrf|(?:\b|_)jwt(?:\b|_)"
    r"|signature|\bsig\b",
    re.IGNORECASE,
)

# Query keys whose value is redacted whatever the key pattern says (semconv list + otelkit's).
_SENSITIVE_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature", "sig",
        "X-Goog-Signature", "X-Goog-Credential", "access_token", "refresh_token", "id_token", "token", "api_key",
        "apikey", "key", "password", "passwd", "pwd", "secret", "client_secret", "code", "auth", "session",
        "sessionid", "state", "jwt",
    )
)

# Headers otelkit itself writes; their values are trace context, not secrets.
_SAFE_HEADERS = frozenset(
    {"traceparent", "tracestate", "baggage", "otelkit-correlation-id", "otelkit-sent-at", "sentry-trace"}
)

# Span/log attribute keys never touched: identifiers otelkit writes and counts.
_SAFE_KEYS = frozenset({"otelkit.correlation_id", "db.redis.args_length", "db.redis.pipeline_length"})

_URL_KEYS = frozenset({"url.full", "http.url", "url.query", "http.target", "url.original", "server.url"})
_SQL_KEYS = frozenset({"db.statement", "db.query.text"})
_DROP_KEY_PREFIXES = ("redis.search.", "redis.create_index.", "db.statement.parameters", "db.query.parameter.")
_HEADER_ATTR_PREFIXES = ("http.request.header.", "http.response.header.")
_DB_EXCEPTION_MODULES = ("psycopg2.", "psycopg.", "asyncpg.", "sqlalchemy.", "pymysql.", "MySQLdb.", "sqlite3.")


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(key: str) -> bool:
    """True when a key or header name names a secret (``Authorization``, ``x_api_key``, ``session_id``...)."""
    lowered = key.lower()
    if lowered in _SAFE_HEADERS or key in _SAFE_KEYS:
        return False
    return _SENSITIVE_KEY.search(lowered) is not None


# --- free text ------------------------------------------------------------------------------------

# Key names whose value is a secret in key=value / key: value / "key": "value" text (the value only is replaced).
_KV_KEYS = (
    r"passw(?:or)?d|pwd|secret(?:_?key)?|secret_?access_?key|[a-z_]*token|api[_-]?key|apikey|access[_-]?key"
    r"|client_secret|x-amz-signature|x-amz-credential|x-amz-security-token|awsaccesskeyid|sig|signature"
    r"|x-goog-signature|authorization|cookie|session(?:_?id)?"
)
_KV_PREFIX_RX = rf"(?i:(?:\b|_)(?:{_KV_KEYS})[\"']?\s*[=:]\s*[\"']?)"
# Session cookies / URL session parameters of the common frameworks: Java servlet `;jsessionid=` (path
# parameter), PHP, classic ASP and ASP.NET, ASP.NET Core, Express, Laravel, CodeIgniter. The value stops
# at URL delimiters, so the rest of a URL survives.
_SESSION_PREFIX_RX = (
    r"(?i:(?:\b(?:jsessionid|phpsessid|aspsessionid[a-z]{0,8}|asp\.net_sessionid|aspxauth|connect\.sid"
    r"|laravel_session|ci_session)|\.aspxauth|\.aspnetcore\.(?:session|cookies|identity\.application"
    r"|antiforgery\.[A-Za-z0-9_-]+))[\"']?\s*[=:]\s*[\"']?)"
)

_TEXT_RULES: list[tuple[str, str]] = [
    # scheme://user:password@ (DSNs, URLs) -> keep the scheme and host.
    ("url_userinfo", r"(?<=://)[^/\s:@'\"]+:[^/\s@'\"]*(?=@)"),
    ("pem", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----"),
    # Free text says "token" and "basic" in plain English (seed 000's pipeline is about crypto
    # *tokens*), so only the forms a credential takes are matched here: Bearer in any case, and
    # Basic/Digest capitalised with a base64-looking value (a digit, "+", "/" or "=" in it).
    # "Authorization: Token x" is caught by the key=value rule below.
    ("auth_scheme", r"\b(?:[Bb]earer|BEARER)\s+[A-Za-z0-9._~+/=-]{8,}"
                    r"|\b(?:Basic|Digest)\s+(?=[A-Za-z._~-]*[0-9+/=])[A-Za-z0-9._~+/=-]{8,}"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"),
    # AWS access key ids (the secret key has no shape of its own: it is caught next to its key name).
    ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    # GitHub: classic tokens (personal, OAuth, user-to-server, server-to-server, refresh) and fine-grained PATs.
    ("github", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}"),
    # Slack bot/user/app/config tokens.
    ("slack", r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-\d-[A-Za-z0-9-]{10,}"),
    # Slack incoming webhooks and workflow triggers: the path is the secret (the host and kind stay).
    ("slack_webhook", r"\bhooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]+"),
    # Stripe secret and restricted keys, webhook signing secrets (publishable pk_ keys are public by design).
    ("stripe", r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}|\bwhsec_[A-Za-z0-9]{24,}"),
    # Google API keys and OAuth access tokens.
    ("google", r"\bAIza[0-9A-Za-z_-]{35}|\bya29\.[0-9A-Za-z_-]{20,}"),
    ("session", _SESSION_PREFIX_RX + r"[^\s&,;\"'}?#/]+"),
    # key=value / key: value / "key": "value" pairs whose key names a secret; the value only is replaced.
    ("kv", _KV_PREFIX_RX + r"(?i:(?:Bearer|Basic|Token|Digest)\s+)?[^\s&,;\"'}]+"),
]
_TEXT_RE = deferred(globals(), "_TEXT_RE", "|".join(f"(?P<{name}>{rx})" for name, rx in _TEXT_RULES))
# Cheap pre-check: a string containing none of these fragments cannot match any rule (every rule
# needs "://...@", a PEM header, an auth scheme word, a token prefix, or a secret-naming key).
_TEXT_HINT_RX = (
    r"://[^/\s]*@|-----BEGIN|bearer|basic|token|digest|eyJ|AKIA|ASIA|gh[pousr]_|github_pat_|xox|xapp-|hooks\.slack"
    r"|passw|pwd|secret|key|sig|auth|cookie|session|sessid|connect\.sid|amz|k_live_|k_test_|whsec_|AIza|ya29\."
)
_TEXT_HINT = deferred(globals(), "_TEXT_HINT", _TEXT_HINT_RX, re.IGNORECASE)
_TEXT_HINT_LOWER = deferred(globals(), "_TEXT_HINT_LOWER", _TEXT_HINT_RX.lower())
_KV_PREFIX = deferred(globals(), "_KV_PREFIX", _KV_PREFIX_RX)
_SESSION_PREFIX = deferred(globals(), "_SESSION_PREFIX", _SESSION_PREFIX_RX)
_AUTH_PREFIX = deferred(globals(), "_AUTH_PREFIX", r"\b(?:[Bb]earer|BEARER|Basic|Digest)\s+")


def _text_sub(match: re.Match[str]) -> str:
    kind = match.lastgroup
    text = match.group()
    if kind == "url_userinfo":
        return f"{URL_REDACTED}:{URL_REDACTED}"
    if kind == "kv" or kind == "session":
        prefix = (_KV_PREFIX if kind == "kv" else _SESSION_PREFIX).match(text)
        head = prefix.group() if prefix else ""
        if text[len(head):] in (URL_REDACTED, REDACTED):
            return text  # already redacted (scrub_url ran first)
        return head + REDACTED
    if kind == "slack_webhook":  # hooks.slack.com/services/...: keep host and kind
        return "/".join(text.split("/", 2)[:2]) + "/" + REDACTED
    if kind == "auth_scheme":
        prefix = _AUTH_PREFIX.match(text)
        return (prefix.group() if prefix else "") + REDACTED
    return REDACTED


# Characters none of _TEXT_HINT_RX's fragments can be made of alone (each needs a letter past "f", ":" or
# "_"; tests/unit/test_scrub_hex.py checks every fragment): a text of only these has no hint, so no rule
# matches it. Hex IDs (correlation IDs, trace and span IDs, UUIDs) are such texts, and unique per message:
# passed over without the hint search, and without an LRU entry each that would push out repeating text.
_INERT_CHARS = "0123456789abcdefABCDEF-"


def scrub_text(text: str) -> str:
    """Redact secrets found by value pattern in free text (exception messages, log bodies)."""
    if not text or not isinstance(text, str):
        return text
    if not text.strip(_INERT_CHARS) and not _extra:  # only inert characters (see _INERT_CHARS)
        return text
    if len(text) <= _TEXT_CACHE_CHARS:
        return _cached_text(text)
    return _scrub_text(text)


def _scrub_text(text: str) -> str:
    # ASCII text (nearly all of it) is lower-cased and checked with a case-sensitive pattern: several
    # times faster than the IGNORECASE one, which stays for non-ASCII text (its case folding also
    # matches e.g. U+017F LONG S to "s", which lower() does not).
    hint = _TEXT_HINT_LOWER.search(text.lower()) if text.isascii() else _TEXT_HINT.search(text)
    if hint is not None:
        text = _TEXT_RE.sub(_text_sub, text)
    for pattern in _extra:
        text = pattern.sub(REDACTED, text)
    return text


# --- URLs -----------------------------------------------------------------------------------------

_QUERY_SPLIT = deferred(globals(), "_QUERY_SPLIT", r"([&;])")


def _scrub_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for pair in _QUERY_SPLIT.split(query):
        if pair in ("&", ";") or "=" not in pair:
            parts.append(pair)
            continue
        key, _, value = pair.partition("=")
        if value and (key.lower() in _SENSITIVE_QUERY_KEYS or is_sensitive_key(key)):
            parts.append(f"{key}={URL_REDACTED}")
        else:
            parts.append(pair)
    return "".join(parts)


def scrub_url(url: str) -> str:
    """Redact userinfo and sensitive query/fragment values of a URL, keeping its shape.

    ``http://u:p@h/x?sig=1&a=2`` -> ``http://REDACTED:REDACTED@h/x?sig=REDACTED&a=2``. Text that does
    not parse as a URL goes through :func:`scrub_text`.
    """
    if not url or not isinstance(url, str):
        return url
    if "@" not in url and "=" not in url:
        # No userinfo and no key=value pair: nothing URL-specific can change (same result as below).
        return scrub_text(url)
    if len(url) <= _VALUE_CACHE_CHARS:
        return _cached_url(url)
    return _scrub_url(url)


def _scrub_url(url: str) -> str:
    if "@" not in url and "?" in url:
        # The common shape (no userinfo, a query string), split by hand as urlsplit would (fragment
        # after the first "#", query after the first "?" before it) at a fraction of its cost.
        head, hash_sign, fragment = url.partition("#")
        base, question_mark, query = head.partition("?")
        new_query = _scrub_query(query)
        new_fragment = _scrub_query(fragment) if "=" in fragment else fragment
        if new_query != query or new_fragment != fragment:
            url = f"{base}{question_mark}{new_query}{hash_sign}{new_fragment}"
        return scrub_text(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{URL_REDACTED}:{URL_REDACTED}@{hostport}" if ":" in userinfo else f"{URL_REDACTED}@{hostport}"
    query = _scrub_query(parts.query)
    fragment = _scrub_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) != (parts.netloc, parts.query, parts.fragment):
        url = urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, fragment))
    elif not parts.scheme and not parts.netloc and "=" in url and "?" not in url and "/" not in url:
        # A bare query string (url.query).
        url = _scrub_query(url)
    # Tokens in the path (/reset/eyJ...), userinfo left in odd forms.
    return scrub_text(url)


# --- SQL ------------------------------------------------------------------------------------------

_SQL_TOKEN = deferred(
    globals(), "_SQL_TOKEN",
    r"""
    (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$[\s\S]*?(?:\$(?P=tag)\$|\Z))
  | (?P<pstr>(?<![\w$])(?:[EeBbXxNn]|[Uu]&)'(?:[^'\\]|\\[\s\S]|'')*(?:'|\Z))
  | (?P<str>'(?:[^']|'')*(?:'|\Z))
  | (?P<ident>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z))
  | (?P<lcomment>(?:--|\#)[^\n]*)
  | (?P<bcomment>/\*[\s\S]*?(?:\*/|\Z))
  | (?P<param>%\(\w+\)s|%s|\$\d+|(?<![:\w]):[A-Za-z_]\w*|\?)
  | (?P<word>[A-Za-z_][\w$]*)
  | (?P<num>(?<![\w.])(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
    """,
    re.VERBOSE,
)
_IN_LIST = deferred(globals(), "_IN_LIST", r"(?i)\bIN\s*\(\s*\?(?:\s*,\s*\?)+\s*\)")
_BOOL_WORDS = frozenset({"true", "false"})


def _sql_sub(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind in ("dollar", "pstr", "str", "num"):
        return "?"
    if kind in ("lcomment", "bcomment"):
        return " "
    if kind == "word" and match.group().lower() in _BOOL_WORDS:
        return "?"
    return match.group()


def scrub_sql(statement: str) -> str:
    """Replace every literal in a SQL statement by ``?`` (semantic conventions, "sanitization").

    Parameterized text is left as it is; comments are removed; the result is cut to
    :data:`MAX_STATEMENT_LENGTH` characters.
    """
    if not statement or not isinstance(statement, str):
        return statement
    if len(statement) <= _SQL_CACHE_CHARS:
        return _cached_sql(statement)
    return _scrub_sql(statement)


def _scrub_sql(statement: str) -> str:
    out = _SQL_TOKEN.sub(_sql_sub, statement)
    out = _IN_LIST.sub("IN (?)", out)
    out = re.sub(r"[ \t]+\n", "\n", re.sub(r"[ \t]{2,}", " ", out)).strip()
    if len(out) > MAX_STATEMENT_LENGTH:
        out = out[: MAX_STATEMENT_LENGTH - 3] + "..."
    return out


def scrub_redis_statement(statement: str) -> str:
    """Reduce a Redis ``db.statement`` to ``COMMAND ? ?...`` (the values and keys never leave)."""
    if not statement or not isinstance(statement, str):
        return statement
    if len(statement) <= _VALUE_CACHE_CHARS:
        return _cached_redis(statement)
    return _scrub_redis_statement(statement)


_REDIS_COMMAND = deferred(globals(), "_REDIS_COMMAND", r"[A-Za-z][A-Za-z0-9._-]*")


def _scrub_redis_statement(statement: str) -> str:
    lines = []
    # Pipelines put one command per line.
    for line in statement.split("\n"):
        tokens = line.split()
        if not tokens:
            continue
        command = tokens[0] if _REDIS_COMMAND.fullmatch(tokens[0]) else "?"
        lines.append(" ".join([command, *["?"] * (len(tokens) - 1)]))
    return "\n".join(lines)[:1000]


def scrub_db_message(message: str) -> str:
    """Scrub a database error message: libpq echoes the statement and quotes input values in it."""
    if not message or not isinstance(message, str):
        return message
    if len(message) <= _VALUE_CACHE_CHARS:
        return _cached_db_message(message)
    return _scrub_db_message(message)


def _scrub_db_message(message: str) -> str:
    text = scrub_sql(message) if ("'" in message or "$" in message) else message
    # `invalid input syntax for type integer: "secret"` / `Key (email)=(a@b.c) already exists`.
    text = re.sub(r'(?<=: )"[^"\n]*"', '"?"', text)
    text = re.sub(r"(?<=\)=\()[^)\n]*(?=\))", "?", text)
    return scrub_text(text)


# --- headers --------------------------------------------------------------------------------------

def _header_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value if not value else REDACTED.encode()
    if isinstance(value, (list, tuple)):
        return type(value)(REDACTED for _ in value)
    return REDACTED


def scrub_headers(headers: Mapping[Any, Any]) -> dict[Any, Any]:
    """Copy of a header mapping with secret-bearing headers replaced by ``[REDACTED]``.

    Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key and any name containing
    token/secret/session/password/auth/key are redacted; trace-context headers are kept; other
    values go through :func:`scrub_text`.
    """
    out: dict[Any, Any] = {}
    for name, value in headers.items():
        key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if is_sensitive_key(key.replace("-", "_")) or is_sensitive_key(key):
            out[name] = _header_value(value)
        elif isinstance(value, str):
            out[name] = scrub_text(value)
        elif isinstance(value, (list, tuple)):
            out[name] = type(value)(scrub_text(v) if isinstance(v, str) else v for v in value)
        else:
            out[name] = value
    return out


# --- caches ---------------------------------------------------------------------------------------
# The export thread sees the same span names, statements, URLs and short values over and over:
# scrubbing each distinct string once makes the export-time pass a few dictionary lookups per span.
# Bounded LRU caches (functools.lru_cache), and only for strings up to a length, so the memory they
# hold stays small (a few MB in the worst case) whatever the traffic. They live in this process only,
# like the telemetry they scrub.

_TEXT_CACHE_CHARS = 256
_TEXT_CACHE_SIZE = 4096
_VALUE_CACHE_CHARS = 1024
_VALUE_CACHE_SIZE = 1024
_SQL_CACHE_CHARS = 2048
_SQL_CACHE_SIZE = 512
_KEY_CACHE_SIZE = 4096

_cached_text: functools._lru_cache_wrapper[str]
_cached_url: functools._lru_cache_wrapper[str]
_cached_sql: functools._lru_cache_wrapper[str]
_cached_redis: functools._lru_cache_wrapper[str]
_cached_db_message: functools._lru_cache_wrapper[str]


def _new_caches() -> None:
    global _cached_text, _cached_url, _cached_sql, _cached_redis, _cached_db_message
    _cached_text = functools.lru_cache(maxsize=_TEXT_CACHE_SIZE)(_scrub_text)
    _cached_url = functools.lru_cache(maxsize=_VALUE_CACHE_SIZE)(_scrub_url)
    _cached_sql = functools.lru_cache(maxsize=_SQL_CACHE_SIZE)(_scrub_sql)
    _cached_redis = functools.lru_cache(maxsize=_VALUE_CACHE_SIZE)(_scrub_redis_statement)
    _cached_db_message = functools.lru_cache(maxsize=_VALUE_CACHE_SIZE)(_scrub_db_message)


def cache_owner() -> object:
    """An object that changes whenever the scrubbing rules do (callers key their own caches on it)."""
    return _cached_url


def cache_info() -> dict[str, Any]:
    """Size and hit counts of the scrubbing caches (``functools`` ``CacheInfo`` per cache), for tests and tuning."""
    return {
        "text": _cached_text.cache_info(),
        "url": _cached_url.cache_info(),
        "sql": _cached_sql.cache_info(),
        "redis": _cached_redis.cache_info(),
        "db_message": _cached_db_message.cache_info(),
        "key": _key_plan.cache_info(),
        "sensitive_key": is_sensitive_key.cache_info(),
    }


# --- attributes -----------------------------------------------------------------------------------

# What to do with an attribute, decided once per key (_key_plan) rather than per value.
_KEEP = 0  # otelkit's own identifiers
_DROP = 1  # RediSearch queries/results, statement parameters
_REDACT_ANY = 2  # a header attribute whose name is a secret: any value becomes [REDACTED]
_REDACT = 3  # a key naming a secret: str/bytes/list/tuple values become [REDACTED], others stay
_SQL = 4  # db.statement / db.query.text
_URL = 5  # url.full and friends
_EXC = 6  # exception.message / exception.stacktrace (database rules on a db span)
_TEXT = 7  # anything else: free-text rules


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _key_plan(key: str) -> int:
    if key.startswith(_DROP_KEY_PREFIXES):
        return _DROP
    if key in _SAFE_KEYS:
        return _KEEP
    name = key.rsplit(".", 1)[-1]
    if key.startswith(_HEADER_ATTR_PREFIXES):
        if is_sensitive_key(name) or is_sensitive_key(name.replace("-", "_")):
            return _REDACT_ANY
    elif is_sensitive_key(name):
        return _REDACT
    if key in _SQL_KEYS:
        return _SQL
    if key in _URL_KEYS:
        return _URL
    if key in ("exception.message", "exception.stacktrace"):
        return _EXC
    return _TEXT


def _scrub_str(plan: int, value: str, db_system: str | None) -> str:
    if plan == _TEXT:
        return scrub_text(value)
    if plan == _SQL:
        return scrub_redis_statement(value) if db_system == "redis" else scrub_sql(value)
    if plan == _URL:
        return scrub_url(value)
    return scrub_db_message(value) if db_system else scrub_text(value)


def _scrub_value(key: str, value: Any, db_system: str | None) -> Any:
    plan = _key_plan(key)
    if plan < _SQL:  # keys with a rule of their own are handled by scrub_attributes
        plan = _TEXT
    if isinstance(value, str):
        return _scrub_str(plan, value, db_system)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return tuple(_scrub_value(key, v, db_system) for v in value)
    return value


def _is_db_exception(attributes: Mapping[str, Any]) -> bool:
    exception_type = attributes.get("exception.type")
    if isinstance(exception_type, str) and exception_type.startswith(_DB_EXCEPTION_MODULES):
        return True
    # Log records carry the bare class name; the traceback's last line has the module.
    stack = attributes.get("exception.stacktrace")
    return isinstance(stack, str) and any(f"\n{module}" in stack for module in _DB_EXCEPTION_MODULES)


_REMOVED = object()


def scrub_attributes(
    attributes: Mapping[str, Any] | None, db_system: str | None = None
) -> Mapping[str, Any] | None:
    """Scrubbed copy of an attribute mapping, or the same object when nothing had to change.

    ``db_system`` (the span's ``db.system``/``db.system.name``) selects Redis or SQL rules for
    ``db.statement`` and database-error handling for ``exception.message``.
    """
    if attributes is None:
        return attributes
    # BoundedAttributes wraps a plain dict: read that, not the generic Mapping protocol (a Python-level
    # __getitem__ per key and a copied key list per iteration); its emptiness too (its __len__ is Python code).
    items: Mapping[str, Any] = getattr(attributes, BOUNDED_DICT, attributes)
    if not items:
        return attributes
    if not db_system and "exception.type" in items and _is_db_exception(items):
        # A driver error recorded on an application span or log record still quotes values.
        db_system = "sql"
    changes: dict[str, Any] | None = None
    plan_of = _key_plan
    new: Any
    for key, value in items.items():
        plan = plan_of(key)
        cls = type(value)
        if plan >= _SQL:
            if cls is str:
                new = _scrub_str(plan, value, db_system)
            elif cls is int or cls is float or cls is bool:
                continue
            elif isinstance(value, str):
                new = _scrub_str(plan, value, db_system)
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
                new = tuple(_scrub_value(key, v, db_system) for v in value)
            else:
                continue
        elif plan == _KEEP:
            continue
        elif plan == _DROP:
            new = _REMOVED
        elif plan == _REDACT_ANY or isinstance(value, (str, bytes, list, tuple)):
            new = _header_value(value)
        else:
            continue
        if new is not value and new != value:
            if changes is None:
                changes = {}
            changes[key] = new
    if changes is None:
        return attributes
    out = {}
    for key, value in items.items():
        if key in changes:
            value = changes[key]
            if value is _REMOVED:
                continue
        out[key] = value
    return out


def _db_system(attributes: Mapping[str, Any] | None) -> str | None:
    if not attributes:
        return None
    value = attributes.get("db.system.name") or attributes.get("db.system")
    return str(value) if value else None


def _with_dropped(original: Any, new: Mapping[str, Any]) -> Any:
    """Keep the SDK's dropped-attribute count on a rebuilt mapping."""
    bounded = BoundedAttributes(maxlen=None, immutable=True, max_value_len=None)
    if has_bounded_dict(bounded):
        # The values were cleaned by the SDK when they were set, and scrubbing only puts strings (or
        # tuples of strings) in their place: skip the constructor's per-value cleaning pass.
        set_bounded_dict(bounded, dict(new))
    else:
        bounded = BoundedAttributes(maxlen=None, attributes=new, immutable=True, max_value_len=None)
    bounded.dropped = getattr(original, "dropped", 0)
    return bounded


def _with_dropped_list(original: Any, new: list[Any]) -> Any:
    """Keep the SDK's dropped-events/links count on a rebuilt list."""
    dropped = getattr(original, "dropped", 0)
    if not dropped:
        return new
    bounded = BoundedList.from_seq(None, new)
    bounded.dropped = dropped
    return bounded


def _scrub_span(span: ReadableSpan) -> ReadableSpan:
    try:  # the SDK's fields directly: its properties copy events/links and wrap attributes per access
        name, attributes, events, links, status = scrub_fields(span)
    except AttributeError:
        name = span.name
        attributes = span.attributes
        events = span.events
        links = span.links
        status = span.status
    db_system = _db_system(getattr(attributes, BOUNDED_DICT, attributes))
    new_attributes = scrub_attributes(attributes, db_system)
    changed = new_attributes is not attributes

    new_events = events
    # The SDK's BoundedList keeps a deque: its emptiness read directly (BoundedList.__len__ is Python code).
    if getattr(events, BOUNDED_DEQUE, events):
        rebuilt: list[Any] | None = None
        for i, event in enumerate(events):
            new_event_attrs = scrub_attributes(event.attributes, db_system)
            if new_event_attrs is not event.attributes:
                if rebuilt is None:
                    rebuilt = list(events)
                rebuilt[i] = Event(event.name, _with_dropped(event.attributes, new_event_attrs or {}),
                                   event.timestamp)
        if rebuilt is not None:
            changed = True
            new_events = _with_dropped_list(events, rebuilt)
    new_links = links
    if getattr(links, BOUNDED_DEQUE, links):
        rebuilt = None
        for i, link in enumerate(links):
            new_link_attrs = scrub_attributes(link.attributes, None)
            if new_link_attrs is not link.attributes:
                if rebuilt is None:
                    rebuilt = list(links)
                rebuilt[i] = Link(link.context, _with_dropped(link.attributes, new_link_attrs or {}))
        if rebuilt is not None:
            changed = True
            new_links = _with_dropped_list(links, rebuilt)
    new_name = scrub_text(name)
    if new_name != name:
        changed = True
    description = status.description if status is not None else None
    if description:
        new_description = scrub_db_message(description) if db_system else scrub_text(description)
        if new_description != description:
            status = Status(status.status_code, new_description)
            changed = True
    if not changed:
        return span
    return ReadableSpan(
        name=new_name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_with_dropped(attributes, new_attributes or {}),
        events=new_events,
        links=new_links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def scrub_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """Scrubbed copies of finished spans (unchanged spans are passed through as they are).

    Called by the export path on the batch worker thread, never in ``on_end``. A span that
    fails to scrub is dropped (with a debug log), never exported raw.
    """
    if not _enabled:
        return list(spans)
    out = []
    for span in spans:
        try:
            out.append(_scrub_span(span))
        except Exception:  # a scrubber bug must neither crash export nor leak the raw span
            logger.debug("otelkit: dropping span %r that could not be scrubbed", getattr(span, "name", "?"),
                         exc_info=True)
    return out


def _scrub_body(body: Any) -> Any:
    if isinstance(body, str):
        return scrub_text(body)
    if isinstance(body, Mapping):
        return {k: (REDACTED if isinstance(k, str) and is_sensitive_key(k) else _scrub_body(v))
                for k, v in body.items()}
    if isinstance(body, (list, tuple)):
        return [_scrub_body(v) for v in body]
    return body


def scrub_log_records(records: Sequence[ReadableLogRecord]) -> list[ReadableLogRecord]:
    """Scrub log bodies and attributes in place (the SDK records are mutable) and return them.

    A record that fails to scrub is dropped (debug log), never exported raw.
    """
    if not _enabled:
        return list(records)
    out = []
    for record in records:
        try:
            log_record = record.log_record
            log_record.body = _scrub_body(log_record.body)
            attributes = log_record.attributes
            new_attributes = scrub_attributes(attributes, _db_system(attributes))
            if new_attributes is not attributes:
                log_record.attributes = _with_dropped(attributes, new_attributes or {})
            out.append(record)
        except Exception:
            logger.debug("otelkit: dropping a log record that could not be scrubbed", exc_info=True)
    return out


ScrubFn = Callable[[str], str]

_new_caches()

__all__ = [
    "MAX_STATEMENT_LENGTH",
    "REDACTED",
    "URL_REDACTED",
    "cache_info",
    "configure",
    "is_enabled",
    "is_sensitive_key",
    "scrub_attributes",
    "scrub_db_message",
    "scrub_headers",
    "scrub_log_records",
    "scrub_redis_statement",
    "scrub_spans",
    "scrub_sql",
    "scrub_text",
    "scrub_url",
]
