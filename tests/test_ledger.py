"""Audit ledger: chain integrity, tamper detection, crash recovery, and a writer that never drops."""
from __future__ import annotations

import errno
import json
import os
import threading

import msgspec
import pytest

from daemon.tier1.ledger import (
    GENESIS, LedgerCorrupt, LedgerWriter, format_ts, read_events, show, tail, verify,
)

T0 = 1_771_545_600_000_000_000  # 2026-02-20T00:00:00Z in ns


# Test-local events: the ledger must be generic over any msgspec Struct (it does not know events.py).
class Rollback(msgspec.Struct, tag="rollback", tag_field="event", frozen=True):
    run_id: str
    proposal_id: str
    rollback_reason: str
    reverted_to_version: int


class Apply(msgspec.Struct, tag="apply", tag_field="event", frozen=True):
    run_id: str
    proposal_id: str
    new_config_version: int
    apply_latency_us: float


Event = Rollback | Apply


def _write(path, n, *, start=0, **kw) -> LedgerWriter:
    w = LedgerWriter(path, **kw)
    for i in range(start, start + n):
        ev = Apply("r1", f"p{i}", i, 12.5) if i % 2 else Rollback("r1", f"p{i}", "p99 over 5 ms", i - 1)
        assert w.submit(ev, ts_ns=T0 + i * 1000)
    assert w.flush(5.0)
    return w


def _lines(path) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def _put(path, lines) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(lines))


def test_chain_verifies_and_reads_back_typed(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 10).close()
    rep = verify(p)
    assert rep.ok and rep.n_records == 10 and rep.last_seq == 10 and rep.first_bad_seq is None
    recs = list(read_events(p, Event))
    assert [r.seq for r in recs] == list(range(1, 11))
    assert recs[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in zip(recs, recs[1:]))
    assert rep.last_hash == recs[-1].hash
    assert isinstance(recs[0].event, Rollback) and isinstance(recs[1].event, Apply)
    assert recs[1].event == Apply("r1", "p1", 1, 12.5)
    # The tag is in the stored event, so plain-dict readers see the type too.
    first = json.loads(_lines(p)[0])
    assert list(first) == ["seq", "ts_ns", "prev", "event", "hash"]
    assert first["event"]["event"] == "rollback" and first["ts_ns"] == T0


def test_empty_ledger_is_valid(tmp_path):
    p = tmp_path / "audit.jsonl"
    p.write_bytes(b"")
    assert verify(p).ok and verify(p).n_records == 0


def test_edited_field_detected_at_its_seq(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 8).close()
    lines = _lines(p)
    lines[4] = lines[4].replace(b'"proposal_id":"p4"', b'"proposal_id":"pX"')
    _put(p, lines)
    rep = verify(p)
    assert not rep.ok
    assert (rep.first_bad_seq, rep.first_bad_line, rep.n_records) == (5, 5, 4)
    assert "hash mismatch" in rep.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path):
    import hashlib
    p = tmp_path / "audit.jsonl"
    _write(p, 8).close()
    lines = _lines(p)
    body = lines[4][:-1][: -len(',"hash":"') - 64 - 2].replace(b'"p4"', b'"pX"')
    lines[4] = body + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    _put(p, lines)
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq, rep.first_bad_line) == (False, 6, 6)
    assert "prev does not match" in rep.reason


def test_deleted_line_detected(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 8).close()
    lines = _lines(p)
    del lines[4]
    _put(p, lines)
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq, rep.first_bad_line) == (False, 5, 5)
    assert "found seq 6 where seq 5 was expected" in rep.reason


def test_deleted_first_line_detected(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 3).close()
    _put(p, _lines(p)[1:])
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq, rep.first_bad_line) == (False, 1, 1)


def test_swapped_lines_detected(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 8).close()
    lines = _lines(p)
    lines[4], lines[5] = lines[5], lines[4]
    _put(p, lines)
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq, rep.first_bad_line) == (False, 5, 5)


def test_corrupt_json_in_middle_detected(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 6).close()
    lines = _lines(p)
    lines[2] = lines[2][:40] + b"\x00\x00garbage\n"
    _put(p, lines)
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq, rep.first_bad_line) == (False, 3, 3)
    assert "not a ledger record" in rep.reason


def test_noncanonical_spacing_detected(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 3).close()
    lines = _lines(p)
    lines[1] = lines[1].replace(b'{"seq":2,', b'{"seq": 2,')
    _put(p, lines)
    rep = verify(p)
    assert (rep.ok, rep.first_bad_seq) == (False, 2)
    assert "non-canonical" in rep.reason


def test_read_events_refuses_a_tampered_record(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 5).close()
    lines = _lines(p)
    lines[2] = lines[2].replace(b'"r1"', b'"r8"')
    _put(p, lines)
    it = read_events(p, Event)
    assert [next(it).seq, next(it).seq] == [1, 2]
    with pytest.raises(LedgerCorrupt) as ei:
        next(it)
    assert ei.value.line == 3 and ei.value.seq == 3 and str(p) in str(ei.value)


def test_torn_last_record_moved_aside_and_chain_continues(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 10).close()
    lines = _lines(p)
    torn = lines[9][:57]  # crash mid-write: half a record, no newline
    _put(p, lines[:9] + [torn])
    rep = verify(p)
    assert rep.ok and rep.torn_tail and rep.n_records == 9  # uncommitted, so not a chain failure

    w = LedgerWriter(p)
    aside = tmp_path / "audit.jsonl.torn-10"
    assert w.state.torn_moved_to == str(aside)
    assert aside.read_bytes() == torn  # kept as evidence, never silently deleted
    assert w.last_seq == 9
    assert w.submit(Rollback("r2", "q1", "recovered", 3), ts_ns=T0 + 99)
    assert w.flush(5.0)
    w.close()
    rep = verify(p)
    assert rep.ok and not rep.torn_tail and rep.n_records == 10
    assert list(read_events(p))[-1].event["run_id"] == "r2"


def test_second_torn_file_for_same_seq_does_not_overwrite(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 2).close()
    good = _lines(p)
    (tmp_path / "audit.jsonl.torn-3").write_bytes(b"older evidence")
    _put(p, good + [b'{"seq":3,"ts_ns'])
    w = LedgerWriter(p)
    assert w.state.torn_moved_to == str(tmp_path / "audit.jsonl.torn-3.1")
    w.close()
    assert (tmp_path / "audit.jsonl.torn-3").read_bytes() == b"older evidence"


def test_garbage_last_line_with_newline_moved_aside(tmp_path):
    # Power loss can leave a zero-filled tail; it is not a record, so it is moved aside.
    p = tmp_path / "audit.jsonl"
    _write(p, 4).close()
    _put(p, _lines(p) + [b"\x00" * 30 + b"\n"])
    assert not verify(p).ok
    w = LedgerWriter(p)
    assert w.state.torn_moved_to.endswith(".torn-5")
    w.close()
    assert verify(p).ok and verify(p).n_records == 4


def test_complete_record_missing_only_newline_is_kept(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 4).close()
    data = p.read_bytes()
    p.write_bytes(data[:-1])
    w = _write(p, 1, start=4)
    assert w.state.torn_moved_to is None
    w.close()
    rep = verify(p)
    assert rep.ok and rep.n_records == 5
    assert not list(tmp_path.glob("*.torn-*"))


def test_corrupt_middle_refuses_to_append(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 6).close()
    lines = _lines(p)
    lines[2] = lines[2].replace(b'"r1"', b'"r9"')
    _put(p, lines)
    before = p.read_bytes()
    with pytest.raises(LedgerCorrupt) as ei:
        LedgerWriter(p)
    e = ei.value
    assert (e.line, e.seq) == (3, 3)
    msg = str(e)
    assert f"{p}:3" in msg and "safe mode" in msg and "Refusing to append" in msg
    assert p.read_bytes() == before  # untouched


def test_tampered_last_record_is_not_treated_as_torn(tmp_path):
    # A parsable, newline-terminated last record with a bad hash is an edit, not a crash.
    p = tmp_path / "audit.jsonl"
    _write(p, 4).close()
    lines = _lines(p)
    lines[3] = lines[3].replace(b'"p3"', b'"pZ"')
    _put(p, lines)
    with pytest.raises(LedgerCorrupt) as ei:
        LedgerWriter(p)
    assert ei.value.line == 4
    assert not list(tmp_path.glob("*.torn-*"))


def test_reopen_continues_seq_and_chain(tmp_path):
    p = tmp_path / "audit.jsonl"
    w = _write(p, 3)
    h3 = w.last_hash
    w.close()
    w = _write(p, 2, start=3)
    assert w.last_seq == 5
    w.close()
    recs = list(read_events(p))
    assert [r.seq for r in recs] == [1, 2, 3, 4, 5]
    assert recs[3].prev == h3
    assert verify(p).ok


def test_rotation_chains_files_with_genesis(tmp_path):
    a, b = tmp_path / "audit.1.jsonl", tmp_path / "audit.2.jsonl"
    w = _write(a, 3)
    head = (w.last_seq, w.last_hash)
    w.close()
    w = LedgerWriter(b, genesis=head[1], first_seq=head[0] + 1)
    w.submit(Rollback("r", "p", "x", 1), ts_ns=T0)
    w.close()
    assert verify(b, genesis=head[1], first_seq=4).ok
    assert not verify(b).ok  # does not pass as a fresh chain
    assert [r.seq for r in read_events(b)] == [4]


def test_full_queue_rejects_instead_of_blocking(tmp_path):
    p = tmp_path / "audit.jsonl"
    entered, release = threading.Event(), threading.Event()

    def hold(n):
        entered.set()
        assert release.wait(10)

    w = LedgerWriter(p, queue_size=5, high_water=0.8, fault_hook=hold)
    assert w.submit(Rollback("r", "p0", "x", 0))
    assert entered.wait(5)  # writer now holds 1 in flight
    for i in range(1, 5):
        assert w.submit(Rollback("r", f"p{i}", "x", i))
    st = w.state
    assert st.depth == 5 and st.full and st.high_water_reached and not st.healthy
    assert w.submit(Rollback("r", "p5", "x", 5)) is False
    assert w.state.rejected_total == 1 and w.state.high_water_total == 1
    release.set()
    assert w.flush(5.0)
    st = w.state
    assert st.depth == 0 and not st.full and st.healthy and st.written_total == 5
    w.close()
    assert [r.event["proposal_id"] for r in read_events(p)] == [f"p{i}" for i in range(5)]


def test_high_water_warning_before_full(tmp_path):
    entered, release = threading.Event(), threading.Event()
    w = LedgerWriter(tmp_path / "a.jsonl", queue_size=10, high_water=0.8,
                     fault_hook=lambda n: (entered.set(), release.wait(10)))
    w.submit(Rollback("r", "p", "x", 0))
    assert entered.wait(5)
    for i in range(6):
        w.submit(Rollback("r", "p", "x", i))
    assert not w.state.high_water_reached and w.state.healthy  # depth 7 of 10
    w.submit(Rollback("r", "p", "x", 7))
    st = w.state
    assert st.high_water_reached and not st.full and st.healthy  # warn, still accepting
    release.set()
    w.close()


def test_unwritable_path_reports_oserror_and_keeps_events(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    p = blocker / "audit.jsonl"  # ENOTDIR even for root
    w = LedgerWriter(p, retry_initial_s=0.01, retry_max_s=0.02)
    st = w.state
    assert not st.healthy
    assert "ENOTDIR" in st.error and str(p) in st.error
    assert w.submit(Rollback("r", "p", "x", 1))  # accepted: held in memory while retrying
    assert w.state.depth == 1 and not w.healthy
    assert w.flush(0.05) is False
    assert w.close(timeout=0.1) is False
    assert "1 audit events unwritten" in w.state.error


def test_path_under_proc_is_unhealthy(tmp_path):
    w = LedgerWriter("/proc/arqond-no-such-dir/audit.jsonl", retry_initial_s=0.01, retry_max_s=0.02)
    assert not w.healthy and "ENOENT" in w.state.error
    assert w.close(timeout=0.05)  # nothing was submitted, so nothing is lost


def test_disk_full_then_recovers_without_loss_or_partial_lines(tmp_path):
    p = tmp_path / "audit.jsonl"
    calls = {"n": 0}
    saw_unhealthy = threading.Event()

    def disk(n):
        calls["n"] += 1
        if calls["n"] == 1:
            with open(p, "ab") as f:  # a partial record reached the disk before ENOSPC
                f.write(b'{"seq":1,"ts_ns":17')
        if calls["n"] <= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        saw_unhealthy.set() if w.state.error else None

    w = LedgerWriter(p, retry_initial_s=0.001, retry_max_s=0.004, fault_hook=disk)
    for i in range(20):
        assert w.submit(Apply("r", f"p{i}", i, 1.0), ts_ns=T0 + i)
    assert w.flush(10.0)
    assert saw_unhealthy.is_set()  # the 4th attempt still saw the error from the 3rd
    st = w.state
    assert st.healthy and st.error is None and st.errors_total == 3 and st.written_total == 20
    w.close()
    rep = verify(p)
    assert rep.ok and rep.n_records == 20
    assert [r.event["proposal_id"] for r in read_events(p)] == [f"p{i}" for i in range(20)]


def test_many_events_from_a_thread_all_written_in_order(tmp_path):
    p = tmp_path / "audit.jsonl"
    n = 20_000
    w = LedgerWriter(p, queue_size=n, batch_max=512)

    def produce():
        for i in range(n):
            assert w.submit(Apply("run", f"p{i}", i, 0.5), ts_ns=T0 + i)

    t = threading.Thread(target=produce)
    t.start()
    t.join()
    assert w.flush(30.0)
    st = w.state
    assert st.written_total == n and st.rejected_total == 0 and st.fsync_total >= 1
    w.close()
    versions = [r.event.new_config_version for r in read_events(p, Event)]
    assert versions == list(range(n))
    assert verify(p).n_records == n


@pytest.mark.parametrize("mode", ["always", "never"])
def test_fsync_modes_write_the_same_chain(tmp_path, mode):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(a, 5).close()
    w = _write(b, 5, fsync=mode)
    assert w.state.fsync_total == (5 if mode == "always" else 0)
    w.close()
    assert a.read_bytes() == b.read_bytes()  # same events and times -> byte-identical ledger


def test_unencodable_event_is_recorded_not_dropped(tmp_path):
    p = tmp_path / "audit.jsonl"
    w = LedgerWriter(p)
    w.submit(object(), ts_ns=T0)
    w.submit(Rollback("r", "p", "x", 1), ts_ns=T0 + 1)
    w.close()
    recs = list(read_events(p))
    assert recs[0].event["event"] == "ledger_encode_error" and recs[0].event["type"] == "object"
    assert recs[1].event["event"] == "rollback"
    assert w.state.errors_total == 1


def test_submit_after_close_is_rejected(tmp_path):
    w = LedgerWriter(tmp_path / "a.jsonl")
    w.close()
    assert w.submit(Rollback("r", "p", "x", 1)) is False


def test_tail_and_show_render_for_people(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 5).close()
    lines = tail(p, 2)
    assert len(lines) == 2
    assert lines[0].split()[0] == "4" and "apply" in lines[0] and "proposal_id=p3" in lines[0]
    assert lines[1].split()[:3] == ["5", format_ts(T0 + 4000), "rollback"]
    assert 'rollback_reason="p99 over 5 ms"' in lines[1]
    assert len(tail(p, 50)) == 5
    out = show(p, 3)
    assert out.splitlines()[0].split()[0] == "3"
    assert "(ok)" in out and '"proposal_id": "p2"' in out
    with pytest.raises(LookupError, match=r"seq 1\.\.5"):
        show(p, 42)


def test_tail_flags_an_edited_record(tmp_path):
    p = tmp_path / "audit.jsonl"
    _write(p, 3).close()
    lines = _lines(p)
    lines[2] = lines[2].replace(b'"p2"', b'"p7"')
    _put(p, lines)
    assert "CORRUPT" in tail(p, 1)[0]
    assert "BAD" in show(p, 3)


def test_format_ts_is_utc_with_z():
    assert format_ts(T0 + 123_456_789) == "2026-02-20T00:00:00.123456Z"


def test_submit_many_one_timestamp_and_wake_false_still_written(tmp_path):
    """The decision loop queues a cycle's events with wake=False and wakes the writer once; flush
    (and the writer's own 1 s look) still gets them to disk, in order, with one timestamp."""
    import time as _time
    from daemon.tier1.ledger import LedgerWriter, read_events
    path = tmp_path / "audit.log"
    w = LedgerWriter(path, queue_size=4, linger_s=0.0)
    try:
        evs = [{"event": "e", "i": i} for i in range(3)]
        assert w.submit_many(evs, ts_ns=123, wake=False) == 3
        assert w.submit_many([{"event": "e", "i": 3}, {"event": "e", "i": 4}], wake=False) == 1   # queue of 4: one refused
        assert w.state.rejected_total == 1
        w.wake()
        assert w.flush(5.0)
        recs = list(read_events(path))
        assert [r.event["i"] for r in recs] == [0, 1, 2, 3]
        assert [r.ts_ns for r in recs[:3]] == [123, 123, 123] and recs[3].ts_ns > 10**18
        assert w.submit({"event": "e", "i": 5}, wake=False)
        t0 = _time.monotonic()
        while w.state.written_total < 5 and _time.monotonic() - t0 < 3.0:   # nobody wakes it: the 1 s look
            _time.sleep(0.05)
        assert w.state.written_total == 5
    finally:
        w.close(5.0)
