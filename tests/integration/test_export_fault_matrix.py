"""The export fault matrix (issue 19): every collector fault, over gRPC and HTTP, through ``otelkit.init()``.

Each case runs ``apps/fault_app.py`` in a subprocess against the real rotel collector or a scripted
fault server (``fault_matrix.FAULTS``) and asserts what the collector stored (unique items,
duplicates), how many Export requests reached it, and that every number of otelkit's shutdown report
is what happened. Durations are the matrix's at half scale (export timeout 1 s, late answers 1.5 s);
nothing here asserts a duration: deadlines only bound how long a run may take.

``python tests/integration/fault_matrix.py`` measures the same faults for otelkit and the raw SDK
(``docs/faults.md``).
"""

from __future__ import annotations

import pytest
from fault_matrix import FAULTS, PROTOCOLS, Outcome, run

SCALE = 0.5


def _run(fault: str, protocol: str) -> Outcome:
    return run(fault, "otelkit", protocol, scale=SCALE)


def _nothing_unexplained(outcome: Outcome, signal: str, total: int) -> None:
    """Every item is accounted for exactly once: exported, dropped (by reason), unanswered or spooled."""
    s = outcome.signal(signal)
    accounted = s["exported"] + sum(s["dropped"].values()) + s["unanswered"] + s["spooled"]
    assert accounted == total, (signal, s)


@pytest.fixture(autouse=True)
def _rotel_needed(request: pytest.FixtureRequest) -> None:
    if "healthy" in request.node.name or "real_collector" in request.node.name:
        request.getfixturevalue("otelkit_collector")  # skips (fails under CI=true) without the rotel binary


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_healthy_real_collector(protocol: str) -> None:
    o = _run("healthy", protocol)
    assert (o.spans, o.span_duplicates, o.logs, o.log_duplicates) == (2000, 0, 2000, 0)
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert (s["exported"], s["dropped"], s["unanswered"], s["resent"]) == (2000, {}, 0, 0), s


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_late_answers_deliver_everything_and_count_the_resends(protocol: str) -> None:
    # Each request is stored at once and answered 1.5x the timeout late. Before: the first batch was resent
    # 3-4 times and nothing else ever went out (133/1000 spans, 399 duplicates).
    o = _run("late_answer", protocol)
    assert (o.spans, o.logs) == (1000, 1000)
    for signal, duplicates, requests in (("traces", o.span_duplicates, o.span_requests),
                                         ("logs", o.log_duplicates, o.log_requests)):
        s = o.signal(signal)
        # A request without an answer is resent (at least once), then the wait grows: every duplicate was
        # announced as a possible one ("resent": 350 of 350 at full scale), no item sent twice more.
        assert 0 < duplicates <= s["resent"] <= 1000, (signal, s, duplicates)
        assert (s["exported"], s["dropped"], s["unanswered"]) == (1000, {}, 0), s
        assert requests is not None and requests <= 8, requests


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_transient_load_refusal_backs_off_without_splitting(protocol: str) -> None:
    o = _run("load_refusal_transient", protocol)
    assert (o.spans, o.span_duplicates, o.logs, o.log_duplicates) == (2000, 0, 2000, 0)
    # One span batch (2048 per request) and four log batches (512; one more if the timer cut one short),
    # plus at most the 3 refused attempts.
    assert o.span_requests is not None and o.span_requests <= 2 + 3
    assert o.log_requests is not None and o.log_requests <= 5 + 3
    for signal in ("traces", "logs"):
        assert o.signal(signal)["dropped"] == {} and o.signal(signal)["exported"] == 2000


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_persistent_load_refusal_is_reported_as_refused_not_too_large(protocol: str) -> None:
    # Before: every batch split down to single spans (3997 requests for 2000 spans, all "too_large").
    o = _run("load_refusal_persistent", protocol)
    assert (o.spans, o.logs) == (0, 0)
    # The SDK sends 512-item batches with up to ~4 attempts each within its timeout; otelkit retries one
    # whole batch with back-off: fewer requests than one per SDK batch plus a few.
    assert o.span_requests is not None and o.span_requests <= 4 + 4, o.span_requests
    assert o.log_requests is not None and o.log_requests <= 4 + 4, o.log_requests
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert s["dropped"] == {"refused": 2000}, s
        assert "refusing under load" in s["causes"]["refused"]
        _nothing_unexplained(o, signal, 2000)


@pytest.mark.parametrize("fault", ["retry_info", "unavailable_retry_after"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_hints_are_honoured_and_everything_arrives_once(fault: str, protocol: str) -> None:
    o = _run(fault, protocol)
    assert (o.spans, o.span_duplicates, o.logs, o.log_duplicates) == (2000, 0, 2000, 0)
    assert o.span_requests is not None and o.span_requests <= 2 + 2
    assert o.log_requests is not None and o.log_requests <= 5 + 2
    for signal in ("traces", "logs"):
        assert o.signal(signal)["dropped"] == {} and o.signal(signal)["exported"] == 2000


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_size_refusal_splits_until_it_fits(protocol: str) -> None:
    # 2000 spans of ~1.1 KiB against a 256 KiB limit: about 9 requests' worth. The refused size is learned,
    # so later requests are cut before sending instead of being refused one by one: a full batch of 512
    # (~560 KiB) is refused, its halves (~280 KiB) once more, then every request fits. Refusals are counted,
    # not requests: on a loaded machine the batch timer sends smaller batches, so more requests (27 seen at
    # load 30), none of them refused.
    o = _run("size_refusal", protocol)
    assert (o.spans, o.span_duplicates) == (2000, 0)
    assert o.span_refused is not None and o.span_refused <= 3, (o.span_refused, o.span_requests)
    s = o.signal("traces")
    assert (s["exported"], s["dropped"]) == (2000, {}), s


def test_size_refusal_of_a_real_collector_splits_until_it_fits() -> None:
    # rotel (tonic) refuses a message over its limit with OUT_OF_RANGE "decoded message length too large":
    # once retried forever as a transient error, now a size refusal like gRPC core's RESOURCE_EXHAUSTED.
    o = _run("size_refusal_rotel", "grpc")
    assert (o.spans, o.span_duplicates) == (1000, 0)
    s = o.signal("traces")
    assert (s["exported"], s["dropped"]) == (1000, {}), s


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_hung_collector_report_is_true_and_names_the_cause(protocol: str) -> None:
    o = _run("hung", protocol)
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert s["exported"] == 0 and s["timed_out"], s
        # What was sent and never answered is not "dropped" (the collector may hold it); the rest is.
        assert set(s["dropped"]) <= {"shutdown_timeout"}, s
        assert s["unanswered"] <= (2048 if signal == "traces" else 512), s  # at most the one request in flight
        _nothing_unexplained(o, signal, 2000)
        for cause in s["causes"].values():
            # gRPC never completes its handshake with this peer: nothing was sent ("no connection").
            assert "127.0.0.1" in cause and ("no answer" in cause or "no connection" in cause), s["causes"]
    assert ": )" not in o.result["report"] and ": ," not in o.result["report"], o.result["report"]  # no empty cause


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_refused_collector_report_says_unreachable(protocol: str) -> None:
    o = _run("refused", protocol)
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert s["exported"] == 0 and s["unanswered"] == 0 and s["resent"] == 0, s
        assert sum(s["dropped"].values()) == 2000, s
        assert all("127.0.0.1" in c for c in s["causes"].values()), s["causes"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_spool_with_a_hung_collector_keeps_everything_for_the_next_run(protocol: str) -> None:
    # Before: nothing spooled, 2000 spans and 2000 records dropped at exit.
    o = _run("spool_hung", protocol)
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert (s["spooled"], s["dropped"], s["exported"]) == (2000, {}, 0), s
    # A 1 s run later (a cron job) sends its own items, then the backlog, before it exits.
    assert (o.backlog_spans, o.backlog_logs) == (2000, 2000)
    for signal in ("traces", "logs"):
        second = o.second["signals"][signal]
        assert second["exported"] == 2010 and second["dropped"] == {}, second


def test_a_fast_producer_into_a_spool_is_accounted_for_item_by_item() -> None:
    # 22,000 spans in 0.5 s (scaled) into a hung collector: the queue drains to disk on its own thread (how much
    # fits depends on the machine's speed, so only the accounting is asserted here; the drain itself is
    # test_reliability_spool.py::test_a_fast_producer_drains_into_the_spool_while_the_sender_is_stuck).
    o = _run("spool_fast_producer", "http")
    s = o.signal("traces")
    assert s["exported"] == 0 and s["spooled"] > 0, s
    assert set(s["dropped"]) <= {"queue_full", "shutdown_timeout", "spool_full"}, s
    _nothing_unexplained(o, "traces", 22_000)
    assert o.backlog_spans <= s["spooled"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unusable_spool_files_are_skipped_and_counted_not_trusted(protocol: str) -> None:
    # A FIFO named *.otlp used to stall the export for the process's life; a 1-byte file named
    # "-n999999999.otlp" used to report 999,999,999 dropped spans.
    o = _run("spool_bad_files", protocol)
    assert (o.spans, o.logs) == (50, 50)
    for signal in ("traces", "logs"):
        s = o.signal(signal)
        assert (s["exported"], s["dropped"], s["spool_bad_files"]) == (50, {}, 2), s


def test_every_fault_has_a_test() -> None:
    tested = {"healthy", "late_answer", "load_refusal_transient", "load_refusal_persistent", "retry_info",
              "unavailable_retry_after", "size_refusal", "size_refusal_rotel", "hung", "refused", "spool_hung",
              "spool_fast_producer", "spool_bad_files"}
    assert tested == set(FAULTS)
