"""The demo's trace view prints each exception's traceback once, under the span it was raised in."""

from __future__ import annotations

from otelkit._demo import _render
from otelkit.testing._receiver import ReceivedEvent, ReceivedSpan

MS = 1_000_000
INNER = "Traceback (most recent call last):\n  File \"app.py\", line 9, in fetch\n    raise ApiError()\nApiError: 404\n"
OUTER = ("Traceback (most recent call last):\n  File \"app.py\", line 3, in main\n    fetch()\n"
         "  File \"app.py\", line 9, in fetch\n    raise ApiError()\nApiError: 404\n")


def span(name: str, span_id: str, parent: str | None, end: int, stacktrace: str | None) -> ReceivedSpan:
    events = [ReceivedEvent(name="exception", time_unix_nano=end * MS, attributes={
        "exception.type": "ApiError", "exception.message": "404", "exception.stacktrace": stacktrace})] \
        if stacktrace else []
    return ReceivedSpan(name=name, kind="INTERNAL", trace_id="t1", span_id=span_id, parent_span_id=parent,
                        attributes={}, resource={"service.name": "worker", "process.pid": 7}, scope="s", links=[],
                        events=events, status_code="ERROR" if stacktrace else "UNSET", status_message="",
                        start_time_unix_nano=0, end_time_unix_nano=end * MS)


def test_one_traceback_per_exception_under_the_innermost_span() -> None:
    spans = [span("process", "a", None, 10, OUTER), span("fetch", "b", "a", 5, INNER), span("ok", "c", "a", 2, None)]
    text = _render.render_exceptions(spans)
    assert text.count("Traceback (most recent call last):") == 1
    assert text.splitlines()[0] == "fetch  [worker pid 7]:"
    assert text.splitlines()[-1] == "    ApiError: 404"


def test_no_exception_no_block() -> None:
    assert _render.render_exceptions([span("ok", "a", None, 1, None)]) == ""
