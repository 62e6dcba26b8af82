"""The docs name the correlation ID's log attribute as it is exported (``_names.CORRELATION_ATTRIBUTE``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from otelkit._correlation import correlate
from otelkit._names import CORRELATION_ATTRIBUTE
from otelkit.testing import CapturedTelemetry

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "docs" / "pipeline.md", ROOT / "docs" / "following-a-correlation-id.md", ROOT / "README.md"]


def test_the_exported_log_attribute_is_the_documented_one(otelkit_capture: CapturedTelemetry) -> None:
    with correlate("ord-1"):
        logging.getLogger("app").warning("placed")
    (record,) = otelkit_capture.logs
    assert record.attributes[CORRELATION_ATTRIBUTE] == "ord-1"
    assert "correlation_id" not in record.attributes  # only the record *field* has the bare name


def test_docs_never_call_the_bare_name_an_exported_attribute() -> None:
    assert CORRELATION_ATTRIBUTE == "otelkit.correlation_id"
    for path in DOCS:
        text = re.sub(r"\s+", " ", path.read_text(encoding="utf-8"))
        # "`correlation_id` (record field and exported attribute)" once named the wrong attribute: the bare
        # name is the record field, and the clause that follows it never says it is exported.
        for match in re.finditer(r"`correlation_id`", text):
            clause = re.split(r"\)|;|\. ", text[match.end():match.end() + 200], maxsplit=1)[0]
            assert "export" not in clause, f"{path.name}: ...{text[match.start():match.end() + 80]!r}"
