"""otelkit's own logger. Its records are never exported (see _logs), so exporter failures cannot loop back."""

from __future__ import annotations

import logging

logger = logging.getLogger("otelkit")
