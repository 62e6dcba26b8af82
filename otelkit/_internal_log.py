"""otelkit's own logger. Its records are never exported (see _logs), so exporter failures cannot loop back.

Warnings must still reach a person when the application configured no logging
(otelkit's OTLP handler, outside ``root.handlers``, never exports otelkit's
records; an OpenTelemetry handler the application put on the root logger would
keep Python's last-resort handler silent). The fallback handler below prints to
stderr exactly when no other handler a person reads would show the record.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("otelkit")


def _reaches_a_reader(record: logging.LogRecord, start: logging.Logger) -> bool:
    """Would ``record`` reach a handler other than otelkit's / OpenTelemetry's export handlers?"""
    current: logging.Logger | None = start
    while current is not None:
        for handler in current.handlers:
            if record.levelno >= handler.level and not type(handler).__module__.startswith(
                ("otelkit.", "opentelemetry.")
            ):
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


class _FallbackStderrHandler(logging.Handler):
    """Prints otelkit's warnings to stderr when nothing else would (like logging.lastResort)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            origin = logging.getLogger(record.name)
            if _reaches_a_reader(record, origin):
                return
            stream = sys.stderr
            if stream is not None:
                stream.write(f"otelkit {record.levelname}: {record.getMessage()}\n")
        except Exception:  # never let a diagnostic break the application
            pass


if not any(isinstance(h, _FallbackStderrHandler) for h in logger.handlers):
    logger.addHandler(_FallbackStderrHandler(logging.WARNING))


_warned: set[str] = set()


def warn_once(key: str, message: str, *args: object) -> None:
    """A usage mistake on a telemetry call: one warning per ``key`` for the life of the process, never raised.

    Telemetry calls on the application's hot path never raise into it; a mistake in how they are called is
    said once (a loop would otherwise flood the log) and the call carries on with a safe fallback."""
    if key in _warned:
        return
    _warned.add(key)
    try:
        logger.warning(message, *args)
    except Exception:
        pass
