"""Failure classification: is an exception worth a retry (transient) or not (permanent)?

The default rules know the standard library, redis-py, psycopg2 and httpx by
class name, so none of them needs to be imported. Applications override with
:func:`set_failure_classifier`, or mark their own exceptions with a
``transient`` attribute (``True``/``False``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Literal

from otelkit._internal_log import logger

FailureClass = Literal["transient", "permanent"]
Classifier = Callable[[BaseException], "FailureClass | None"]

_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError, ConnectionError, asyncio.TimeoutError, InterruptedError, BlockingIOError,
)
_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    ValueError, LookupError, TypeError, AttributeError, ArithmeticError, NotImplementedError, AssertionError,
    UnicodeError, PermissionError, FileNotFoundError,
)
# Third-party exception class names (anywhere in the MRO) that mean "the other side is unreachable or busy".
_TRANSIENT_NAMES = frozenset({
    "TimeoutError", "ConnectionError", "BusyLoadingError", "TryAgainError", "ClusterDownError",  # redis-py
    "OperationalError", "InterfaceError", "SerializationFailure", "DeadlockDetected",  # psycopg2 / DB-API
    "TransportError", "TimeoutException", "NetworkError", "ConnectError", "RemoteProtocolError",  # httpx
    "ServiceUnavailable", "TooManyRequests", "RateLimitError", "ThrottlingException",
})

_custom: Classifier | None = None
_lock = threading.Lock()


def set_failure_classifier(classifier: Classifier | None) -> None:
    """Install ``classifier(exc) -> "transient" | "permanent" | None`` (None falls back to the defaults).

    ``set_failure_classifier(None)`` restores the defaults.
    """
    global _custom
    with _lock:
        _custom = classifier


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def default_classifier(exc: BaseException) -> FailureClass:
    """The built-in rules.

    * ``exc.transient`` (bool) when the exception carries one;
    * HTTP errors with a response: 408, 425, 429 and 5xx transient, other 4xx permanent;
    * timeouts, connection errors, redis/psycopg2/httpx transport errors: transient;
    * everything else, including ValueError, KeyError, TypeError: permanent. Unknown
      failures default to permanent so a poison message cannot cause a retry storm.
    """
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return "transient" if flag else "permanent"
    status = _http_status(exc)
    if status is not None:
        return "transient" if status in (408, 425, 429) or status >= 500 else "permanent"
    if isinstance(exc, _TRANSIENT_TYPES):
        return "transient"
    if isinstance(exc, _PERMANENT_TYPES):
        return "permanent"
    for cls in type(exc).__mro__:
        if cls.__name__ in _TRANSIENT_NAMES:
            return "transient"
    return "permanent"


def classify_failure(exc: BaseException) -> FailureClass:
    """Classify ``exc`` as ``"transient"`` or ``"permanent"`` (custom classifier first, then the defaults)."""
    custom = _custom
    if custom is not None:
        try:
            result = custom(exc)
        except Exception as error:  # a broken classifier must not hide the original failure
            logger.debug("otelkit: failure classifier raised %s; using the default rules", type(error).__name__)
            result = None
        if result in ("transient", "permanent"):
            return result
    return default_classifier(exc)
