"""Pipeline scope arguments are coerced once, in ``__init__``, without breaking the decorator forms.

The adversarial cases live in ``test_bad_input_pipeline.py``; these pin down what the coercion keeps.
"""

from __future__ import annotations

from typing import Any

from otelkit import pipeline
from otelkit._names import ATTR_ATTEMPT
from otelkit._pipeline import carriers
from otelkit.testing import CapturedTelemetry


def test_a_callable_attempt_still_works_in_the_decorator_form(otelkit_capture: CapturedTelemetry) -> None:
    @pipeline.receive("q", system="redis", carrier="headers", attempt=lambda headers: 3, max_attempts="5")
    def handle(headers: dict[str, str]) -> Any:
        message = pipeline.current_message()
        assert message is not None
        return message.attempt, message.max_attempts

    assert handle({}) == (3, 5)
    (span,) = otelkit_capture.spans.named("process q")
    assert span.attributes is not None and span.attributes[ATTR_ATTEMPT] == 3


def test_integral_numbers_and_digit_strings_are_accepted_as_attempts(otelkit_capture: CapturedTelemetry) -> None:
    with pipeline.receive("q", {}, system="redis", attempt="2", max_attempts=4.0) as msg:  # type: ignore[arg-type]
        pass
    assert (msg.attempt, msg.max_attempts) == (2, 4)


def test_a_non_string_destination_names_the_span_by_its_text(otelkit_capture: CapturedTelemetry) -> None:
    with pipeline.emit(b"orders", system="redis"):  # type: ignore[arg-type]
        pass
    assert otelkit_capture.spans.named("send orders")


def test_the_envelope_keeps_only_text_headers() -> None:
    raw = carriers.wrap("p", [("a", b"1"), (b"b", "2"), ("c", b"\xff"), ("d", 5), "junk"])  # type: ignore[list-item]
    payload, headers = carriers.unwrap(raw)
    assert payload == "p" and headers == {"a": "1", "b": "2"}
