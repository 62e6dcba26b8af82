"""The disk spool store (``otelkit._export.spool``): order, atomic files, size bound, corrupt files, claims."""

from __future__ import annotations

import multiprocessing
import os
import stat
import sys
from pathlib import Path

import pytest

from otelkit._config import ConfigError, resolve
from otelkit._export import spool as _spool
from otelkit._export.spool import SpoolStore


def test_requests_come_back_oldest_first_and_ack_deletes(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "traces")
    for i in range(5):
        assert store.write(f"request {i}".encode(), i + 1) == _spool.WRITTEN
    seen = []
    while (claim := store.claim()) is not None:
        assert claim.payload is not None
        seen.append((claim.payload.decode(), claim.count))
        store.ack(claim)
    assert seen == [(f"request {i}", i + 1) for i in range(5)]
    assert os.listdir(tmp_path / "traces") == []


def test_release_puts_a_request_back_at_its_place(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "logs")
    store.write(b"first", 1)
    store.write(b"second", 1)
    claim = store.claim()
    assert claim is not None and claim.payload == b"first"
    assert store.pending() and all(b"first" not in (tmp_path / "logs" / n).read_bytes() for n in store.pending())
    store.release(claim)
    again = store.claim()
    assert again is not None and again.payload == b"first"


def test_files_are_private_and_complete_no_temporary_file_left(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "traces", fsync=True)
    assert store.write(b"x" * 1000, 3) == _spool.WRITTEN
    names = os.listdir(tmp_path / "traces")
    assert len(names) == 1 and names[0].endswith(".otlp") and not names[0].startswith(".")
    mode = stat.S_IMODE(os.stat(tmp_path / "traces" / names[0]).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "traces").st_mode) == 0o700


def test_size_bound_refuses_the_newest(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "traces", max_bytes=3000)
    results = [store.write(bytes([i]) * 1000, 1) for i in range(4)]
    assert results == [_spool.WRITTEN, _spool.WRITTEN, _spool.FULL, _spool.FULL]
    claim = store.claim()
    assert claim is not None and claim.payload == b"\x00" * 1000  # the oldest survived
    store.ack(claim)
    assert store.write(b"\x09" * 1000, 1) == _spool.WRITTEN  # room again


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_corrupt_or_truncated_file_is_reported_not_sent(tmp_path: Path, damage: str) -> None:
    store = SpoolStore(str(tmp_path), "traces")
    store.write(b"good payload " * 10, 7)
    (name,) = store.pending()
    path = tmp_path / "traces" / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-5])
    elif damage == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.write_bytes(b"")
    claim = store.claim()
    assert claim is not None and claim.payload is None and claim.count == 0  # nothing of a corrupt file trusted
    store.ack(claim)
    assert store.claim() is None


def test_unwritable_directory_is_an_error_result_not_an_exception(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = SpoolStore(str(blocker), "traces")
    assert store.write(b"data", 1) == _spool.ERROR
    assert store.write(b"data", 1) == _spool.ERROR
    assert store.claim() is None
    warnings = [r for r in caplog.records if r.name == "otelkit" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "spool" in warnings[0].getMessage()


def test_claim_of_a_dead_process_is_released(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "traces")
    store.write(b"orphan", 1)
    (name,) = store.pending()
    dead = multiprocessing.get_context("spawn").Process(target=int)
    dead.start()
    dead.join()
    assert dead.pid is not None
    os.rename(tmp_path / "traces" / name, tmp_path / "traces" / f"{name}.claim-{dead.pid}-abcd")
    (tmp_path / "traces" / f".tmp-{dead.pid}-beef").write_bytes(b"half")
    assert store.pending() == []
    claim = SpoolStore(str(tmp_path), "traces").claim()  # a new process's store scans at once
    assert claim is not None and claim.payload == b"orphan"
    assert not (tmp_path / "traces" / f".tmp-{dead.pid}-beef").exists()


def _claim_all(directory: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue[list[bytes]],
               ) -> None:
    store = SpoolStore(directory, "traces")
    start.wait(10)
    got = []
    while (claim := store.claim()) is not None:
        assert claim.payload is not None
        got.append(claim.payload)
        store.ack(claim)
    out.put(got)


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_two_processes_claiming_at_once_never_take_the_same_request(tmp_path: Path) -> None:
    store = SpoolStore(str(tmp_path), "traces")
    sent = [f"req-{i:04d}".encode() for i in range(400)]
    for payload in sent:
        assert store.write(payload, 1) == _spool.WRITTEN
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    out: multiprocessing.Queue[list[bytes]] = ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(str(tmp_path), start, out)) for _ in range(3)]
    for worker in workers:
        worker.start()
    start.set()
    results = [out.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
    claimed = [p for r in results for p in r]
    assert sorted(claimed) == sent, "every request claimed exactly once"
    assert sum(1 for r in results if r) >= 2, "the claims really were concurrent"
    for r in results:
        assert r == sorted(r), "each process took oldest first"


def test_settings_validate(tmp_path: Path) -> None:
    settings = resolve(environ={"OTELKIT_SPOOL_DIR": str(tmp_path / "spool"), "OTELKIT_SPOOL_MAX_BYTES": "2097152"})
    assert settings.spool_dir == str(tmp_path / "spool") and settings.spool_max_bytes == 2 * 1024 * 1024
    defaults = resolve(environ={})
    assert defaults.spool_dir is None and defaults.spool_max_bytes == 256 * 1024 * 1024
    a_file = tmp_path / "f"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="spool_dir"):
        resolve(environ={}, spool_dir=str(a_file))
    with pytest.raises(ConfigError, match="OTELKIT_SPOOL_MAX_BYTES"):
        resolve(environ={"OTELKIT_SPOOL_MAX_BYTES": "12"})
    with pytest.raises(ConfigError, match="spool_max_bytes"):
        resolve(environ={}, spool_max_bytes=-1)


def test_doctor_reports_the_spool_backlog(tmp_path: Path) -> None:
    from otelkit import _doctor
    from otelkit._doctor import Report

    report = Report()
    _doctor._check_spool(report, resolve(environ={}, spool_dir=str(tmp_path)))
    assert [c.status for c in report.checks] == ["ok"]
    SpoolStore(str(tmp_path), "logs").write(b"x" * 100, 2)
    report = Report()
    _doctor._check_spool(report, resolve(environ={}, spool_dir=str(tmp_path)))
    (check,) = report.checks
    assert check.status == "warn" and "1 request(s)" in check.summary and check.details["by_signal"]["logs"][
        "requests"] == 1
    report = Report()
    _doctor._check_spool(report, resolve(environ={}))
    assert report.checks == []


def _request_of(spans: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(spans):
        span = scope.spans.add()
        span.trace_id, span.span_id, span.name = os.urandom(16), os.urandom(8), f"s{i}"
    return request.SerializeToString()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_named_like_a_request_is_skipped_not_opened(tmp_path: Path, fresh_stats: None) -> None:
    # Opening a FIFO for reading blocks until a writer comes: the export thread would stall for good.
    from otelkit._export.stats import STATS

    store = SpoolStore(str(tmp_path), "traces")
    os.makedirs(tmp_path / "traces", exist_ok=True)
    os.mkfifo(tmp_path / "traces" / "00000000000000000001-1-000001-aaaaaa-n5.otlp")
    store.write(_request_of(3), 3)
    claim = store.claim()
    assert claim is not None and claim.payload is not None and claim.count == 3
    store.ack(claim)
    assert store.claim() is None and store.claim() is None
    assert STATS.bad_file_counts()["traces"] == 1  # counted once, however often the spool is scanned
    assert store.backlog() == (0, 0)
    assert _spool.unusable(str(tmp_path), ("traces",)) == {"traces": 1}


def test_item_counts_come_from_the_content_never_the_name(tmp_path: Path) -> None:
    assert _spool.count_items("traces", _request_of(7)) == 7
    assert _spool.count_items("traces", b"\xff\xff\xff") is None
    store = SpoolStore(str(tmp_path), "traces")
    os.makedirs(tmp_path / "traces", exist_ok=True)
    (tmp_path / "traces" / "00000000000000000002-1-000001-bbbbbb-n999999999.otlp").write_bytes(b"x")
    claim = store.claim()
    assert claim is not None and claim.payload is None and claim.count == 0


def test_doctor_counts_only_what_the_spool_would_send(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from otelkit._doctor import Report, _check_spool

    store = SpoolStore(str(tmp_path), "traces")
    store.write(_request_of(2), 2)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "traces" / "00000000000000000001-1-000001-aaaaaa-n5.otlp")
    report = Report()
    _check_spool(report, SimpleNamespace(spool_dir=str(tmp_path), spool_max_bytes=1 << 20))
    spool = next(c for c in report.checks if c.name == "disk spool")
    assert spool.details["requests"] == 1, spool
    if hasattr(os, "mkfifo"):
        assert any(c.name == "disk spool entries" and "1 entry" in c.summary for c in report.checks)
