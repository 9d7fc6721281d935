"""ArqonBus publisher against a local fake gateway that enforces the envelope rules."""
from __future__ import annotations

import json
import random
import threading
import time

import pytest

from daemon.runtime.bus import (
    ENVELOPE_KEYS, ID_RE, Backoff, BusConfig, BusPublisher, IdGen, JsonCodec, iso8601_z, make_envelope,
)
from tests.fakebus import FakeBus, make_jwt, validate

T0 = 1_771_545_600_000_000_000  # 2026-02-20T00:00:00Z


def cfg(url: str, tmp_path=None, **kw) -> BusConfig:
    base = dict(url=url, room="prod:demo", backoff_initial_s=0.02, backoff_max_s=0.1, ack_timeout_s=0.5,
                open_timeout_s=2.0, seed=7)
    if tmp_path is not None:
        base["spool_dir"] = str(tmp_path / "spool")
    base.update(kw)
    return BusConfig(**base)


def until(pred, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


# ---- pure pieces ----------------------------------------------------------------------------

def test_iso_timestamp_and_ids():
    assert iso8601_z(T0 + 1_500_000) == "2026-02-20T00:00:00.001500Z"
    a, b = IdGen(random.Random(3)), IdGen(random.Random(3))
    ids = [a.next(T0) for _ in range(3)]
    assert ids == [b.next(T0) for _ in range(3)]  # seeded
    assert all(ID_RE.match(i) for i in ids)
    assert [i.split("_")[2] for i in ids] == ["1", "2", "3"]


def test_backoff_is_capped_jittered_and_seeded():
    b1, b2 = Backoff(0.1, 1.0, random.Random(1)), Backoff(0.1, 1.0, random.Random(1))
    d = [b1.next() for _ in range(8)]
    assert d == [b2.next() for _ in range(8)]
    caps = [min(1.0, 0.1 * 2 ** k) for k in range(8)]
    assert all(c / 2 <= x <= c for x, c in zip(d, caps))
    b1.reset()
    assert 0.05 <= b1.next() <= 0.1


def test_make_envelope_only_allowed_keys_and_checked_metadata():
    env = make_envelope(id="arq_1_1_abcdef", ts_ns=T0, type="message", room="prod:x", channel="rollouts",
                        payload={"k": 1}, metadata={"sequence": 3, "change_kind": "knob"})
    assert set(env) <= ENVELOPE_KEYS and env["version"] == "1.0"
    assert validate(env) == ([], True)
    for bad in ({"sequence": 0}, {"sequence": True}, {"sequence": "1"}, {"change_kind": "code"},
                {"operator_tier": 3}, {"causal_parent_id": "nope"}):
        with pytest.raises(ValueError, match="metadata"):
            make_envelope(id="arq_1_1_abcdef", ts_ns=T0, type="message", room="prod:x", channel="audit",
                          payload={}, metadata=bad)
    with pytest.raises(ValueError, match="type"):
        make_envelope(id="arq_1_1_abcdef", ts_ns=T0, type="event", room="prod:x", channel="audit",
                      payload={}, metadata={})
    with pytest.raises(ValueError, match="channel"):
        make_envelope(id="arq_1_1_abcdef", ts_ns=T0, type="message", room="prod:x", channel="Bad Channel",
                      payload={}, metadata={})


def test_config_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"bus\.room: expected prod:<service>.*got 'prod'"):
        BusConfig(room="prod")
    with pytest.raises(ValueError, match=r"bus\.summary_hz"):
        BusConfig(summary_hz=50)
    with pytest.raises(ValueError, match=r"bus\.url"):
        BusConfig(url="http://x")


def test_fake_bus_enforces_the_rules():
    good = {"id": "arq_1730000000000000000_1_a1b2c3", "type": "message", "timestamp": "2026-02-20T00:00:00Z",
            "version": "1.0", "room": "prod:universe", "channel": "rollouts", "payload": {"kind": "rollback"}}
    assert validate(good) == ([], True)
    assert validate({**good, "id": "arq_01ARZ3NDEKTSV4RRFFQ69G5FAV"})[0] == []
    assert validate({**good, "data": 1}) == (["unknown envelope keys: ['data']"], False)
    for change, needle in ((dict(version="2.0"), "version"), (dict(type="event"), "Unsupported message type"),
                           (dict(id="msg-1"), "Invalid message ID"), (dict(timestamp="yesterday"), "timestamp"),
                           (dict(metadata={"sequence": 0}), "sequence"), (dict(payload=None), "payload")):
        errs, parsable = validate({**good, **change})
        assert parsable and any(needle in e for e in errs), (change, errs)


# ---- against the fake gateway ---------------------------------------------------------------

def test_envelopes_accepted_and_acked(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, scope="svc.cache")) as pub:
        assert until(lambda: pub.state.connected)
        ids = [pub.publish_event(ch, {"kind": ch, "n": i}, {"run_id": "run-1", "proposal_id": f"p{i}",
                                                            "change_kind": "knob"})
               for i, ch in enumerate(["proposals", "rollouts", "audit", "alerts", "evaluations"])]
        assert pub.publish_summary({"p99_us": 812.5, "rps": 1200})
        assert pub.wait_delivered(5)
        assert fb.wait_for(lambda: len(fb.ids("telemetry")) == 1)
        st = pub.state
        assert fb.errors_sent == []
        assert st.acked_total == 5 and st.rejected_total == 0 and st.server_errors_total == 0
        assert st.client_id is not None and st.client_id == fb.received[0]["sender"]
        msgs = [e for e in fb.received if e["type"] == "message"]
        assert [m["id"] for m in msgs] == ids
        seqs = []
        for m in fb.received:
            assert set(m) <= ENVELOPE_KEYS and m["version"] == "1.0" and m["room"] == "prod:demo"
            assert m["timestamp"].endswith("Z") and ID_RE.match(m["id"])
            md = m["metadata"]
            assert md["operator_tier"] == "1" and md["scope"] == "svc.cache"
            seqs.append(md["sequence"])
        assert sorted(seqs) == list(range(1, 7))
        assert msgs[2]["channel"] == "audit" and msgs[2]["metadata"]["proposal_id"] == "p2"
        tel = [e for e in fb.received if e["type"] == "telemetry"][0]
        assert tel["channel"] == "telemetry" and tel["payload"] == {"p99_us": 812.5, "rps": 1200}


def test_caller_sequence_is_kept(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path)) as pub:
        i = pub.publish_event("audit", {"seq": 41}, {"sequence": 41})
        assert pub.wait_delivered(5)
        assert fb.received[0]["id"] == i and fb.received[0]["metadata"]["sequence"] == 41


def test_summaries_rate_limited_latest_wins(tmp_path):
    n, hz = 200, 10.0
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, summary_hz=hz, summary_queue=4)) as pub:
        assert until(lambda: pub.state.connected)
        t0 = time.monotonic()
        for i in range(n):
            pub.publish_summary({"i": i})
            time.sleep(0.001)
        elapsed = time.monotonic() - t0
        st = pub.state
        assert until(lambda: pub.state.summary_depth == 0, 2.0)
        st = pub.state
        sent = st.summaries_sent_total
        # Every offered summary is accounted for: sent, or dropped with a reason.
        assert sent + st.dropped_summaries_total == n
        assert st.dropped_summaries.get("superseded", 0) > 0
        # Rate limit: at most one per 1/hz window (plus the one sent at connect).
        assert 1 <= sent <= elapsed * hz + 2
        assert fb.wait_for(lambda: len(fb.ids("telemetry")) == sent)
        assert fb.received[-1]["payload"] == {"i": n - 1}  # the newest is never dropped


def test_summaries_dropped_while_bus_down(tmp_path):
    with FakeBus() as fb:
        fb.down()
        with BusPublisher(cfg(fb.url, tmp_path)) as pub:
            for i in range(5):
                pub.publish_summary({"i": i})
            assert until(lambda: pub.state.dropped_summaries.get("disconnected", 0) == 5)
            assert pub.state.summaries_sent_total == 0


def test_events_spooled_while_down_then_all_delivered_by_id(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path)) as pub:
        assert until(lambda: pub.state.connected)
        fb.down()
        assert until(lambda: not pub.state.connected)
        ids = [pub.publish_event("rollouts", {"kind": "transition", "i": i}) for i in range(50)]
        assert until(lambda: pub.state.spooled_total == 50)
        outbox = tmp_path / "spool" / "outbox.jsonl"
        assert len(outbox.read_bytes().splitlines()) == 50  # on disk while the bus is down
        assert not pub.wait_delivered(0.1)
        fb.up()
        assert pub.wait_delivered(5)
        st = pub.state
        assert st.connected and st.connects_total == 2 and st.acked_total == 50 and st.spool_depth == 0
        assert set(fb.ids("message")) == set(ids)  # exactly these, none missing, none invented
        assert outbox.read_bytes() == b""  # compacted once everything was acked


def test_spool_survives_a_publisher_restart(tmp_path):
    with FakeBus() as fb:
        fb.down()
        pub = BusPublisher(cfg(fb.url, tmp_path, memory_events=4)).start()
        ids = [pub.publish_event("audit", {"i": i}) for i in range(20)]
        assert until(lambda: pub.state.spooled_total == 20)
        pub.stop()
        fb.up()
        with BusPublisher(cfg(fb.url, tmp_path, seed=8)) as pub2:
            assert pub2.wait_delivered(5)
            assert pub2.state.acked_total == 20
        assert set(fb.ids("message")) == set(ids)


def test_memory_events_kept_on_stop_go_to_spool(tmp_path):
    with FakeBus() as fb:
        fb.drop_acks = True
        pub = BusPublisher(cfg(fb.url, tmp_path)).start()
        ids = [pub.publish_event("proposals", {"i": i}) for i in range(3)]
        assert fb.wait_for(lambda: len(fb.received) >= 3)
        pub.stop()  # connected but unacked: must not be lost
        fb.drop_acks = False
        with BusPublisher(cfg(fb.url, tmp_path)) as pub2:
            assert pub2.wait_delivered(5)
        assert set(ids) <= set(fb.ids("message"))


def test_slow_bus_never_blocks_a_publisher_call(tmp_path):
    big = "x" * 16_384
    n = 300
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, memory_events=64, max_inflight=1000,
                                           ack_timeout_s=30)) as pub:
        assert until(lambda: pub.state.connected)
        fb.stall()
        ids, worst = [], 0.0
        for i in range(n):
            t = time.perf_counter()
            ids.append(pub.publish_event("audit", {"i": i, "blob": big}))
            pub.publish_summary({"i": i})
            worst = max(worst, time.perf_counter() - t)
        # All n calls returned while the server was not reading: nothing was acked, the socket is backed up.
        assert all(ids)
        assert until(lambda: pub.state.spooled_total > 0)  # memory bound hit -> spilled to disk
        # Every accepted event is held somewhere (memory or spool) while the bus does not read.
        assert until(lambda: (lambda s: s.pending_events + s.spool_depth == n)(pub.state))
        st = pub.state
        assert st.acked_total == 0 and len(fb.ids("message")) < n
        assert st.dropped_summaries_total > 0
        print(f"worst publish_event+publish_summary call while stalled: {worst * 1e6:.0f} us")
        fb.unstall()
        assert pub.wait_delivered(10)
        assert set(fb.ids("message")) == set(ids)


def test_dropped_acks_are_resent_until_acked(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, ack_timeout_s=0.1)) as pub:
        fb.drop_acks = True
        ids = [pub.publish_event("rollouts", {"i": i}) for i in range(3)]
        assert fb.wait_for(lambda: len(fb.received) >= 6)  # each sent at least twice, same id
        assert pub.state.acked_total == 0 and pub.state.pending_events == 3
        fb.drop_acks = False
        assert pub.wait_delivered(5)
        assert set(fb.ids("message")) == set(ids) and len(fb.ids("message")) > 3
        assert pub.state.rejected_total == 0


def test_ignored_event_dead_lettered_after_max_attempts(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, ack_timeout_s=0.05, max_attempts=2)) as pub:
        fb.drop_acks = True
        i = pub.publish_event("alerts", {"kind": "x"})
        assert pub.wait_delivered(5)
        assert pub.state.rejected_total == 1 and fb.ids("message") == [i, i]
        dead = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
        assert dead[0]["envelope"]["id"] == i and "no ack after 2 sends" in dead[0]["reason"]


def test_rejected_event_dead_lettered_and_not_retried(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, ack_timeout_s=0.05)) as pub:
        fb.reject = lambda env: "POLICY_DENY" if env["payload"].get("kind") == "poison" else None
        good1 = pub.publish_event("rollouts", {"kind": "ok"})
        bad = pub.publish_event("rollouts", {"kind": "poison"})
        good2 = pub.publish_event("rollouts", {"kind": "ok"})
        assert pub.wait_delivered(5)
        time.sleep(0.2)  # several ack timeouts: a retry would show up as a second error
        st = pub.state
        assert st.rejected_total == 1 and st.server_errors_total == 1 and st.acked_total == 2
        assert [e["request_id"] for e in fb.errors_sent] == [bad]
        assert set(fb.ids("message")) == {good1, good2}
        assert "POLICY_DENY" in st.last_error and bad in st.last_error
        dead = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
        assert len(dead) == 1 and dead[0]["envelope"]["id"] == bad and dead[0]["error_code"] == "POLICY_DENY"


class _LeakyCodec(JsonCodec):
    """Adds a key the bus does not allow, so the server cannot even parse the envelope."""

    def encode(self, envelope):
        return json.dumps({**envelope, "data": 1})


def test_uncorrelated_server_errors_counted_and_logged(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path, ack_timeout_s=0.05, max_attempts=2),
                                       codec=_LeakyCodec()) as pub:
        pub.publish_event("audit", {"i": 1})
        assert pub.wait_delivered(5)  # dead-lettered after 2 unanswered sends, not retried forever
        st = pub.state
        assert st.server_errors_total == 2 and st.rejected_total == 1 and st.acked_total == 0
        assert all("request_id" not in e for e in fb.errors_sent)


def test_jwt_sent_and_401_handled(tmp_path):
    secret = b"s3cret"
    tok = tmp_path / "bus.jwt"
    tok.write_text(make_jwt(b"wrong", {"sub": "arqond"}) + "\n")
    with FakeBus(jwt_secret=secret) as fb, BusPublisher(cfg(fb.url, tmp_path, jwt_file=str(tok))) as pub:
        assert until(lambda: pub.state.auth_failures_total >= 1)
        st = pub.state
        assert not st.connected and "HTTP 401" in st.last_error and str(tok) in st.last_error
        i = pub.publish_event("audit", {"kind": "kept while refused"})
        assert until(lambda: pub.state.spooled_total == 1)
        good = make_jwt(secret, {"sub": "arqond", "exp": time.time() + 600})
        tok.write_text(good + "\n")  # token rotated: read again at the next connect
        assert pub.wait_delivered(5)
        assert fb.ids("message") == [i]
        assert (f"Bearer {good}", 101) in fb.handshakes
        assert all(status == 401 for h, status in fb.handshakes if h != f"Bearer {good}")


def test_missing_jwt_file_does_not_connect(tmp_path):
    with FakeBus(jwt_secret=b"k") as fb, BusPublisher(cfg(fb.url, tmp_path, jwt_file=str(tmp_path / "nope"))) as pub:
        assert until(lambda: pub.state.last_error is not None and "cannot read JWT file" in pub.state.last_error)
        assert fb.handshakes == [] and not pub.state.connected


def test_without_spool_memory_is_bounded_and_drops_are_counted(caplog):
    with FakeBus() as fb:
        fb.down()
        with BusPublisher(cfg(fb.url, memory_events=5)) as pub:
            ids = [pub.publish_event("audit", {"i": i}) for i in range(8)]
            assert all(ids)
            assert until(lambda: pub.state.dropped_events_total == 3)
            assert pub.state.pending_events == 5
            assert sum("no spool_dir configured" in r.getMessage() for r in caplog.records) == 3
            fb.up()
            assert pub.wait_delivered(5)
            assert set(fb.ids("message")) == set(ids[:5])


def test_publish_is_thread_safe(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path)) as pub:
        out: list[str] = []
        lock = threading.Lock()

        def worker(k):
            mine = [pub.publish_event("audit", {"k": k, "i": i}) for i in range(100)]
            with lock:
                out.extend(mine)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(set(out)) == 400
        assert pub.wait_delivered(10)
        assert set(fb.ids("message")) == set(out)
        assert sorted(e["metadata"]["sequence"] for e in fb.received) == list(range(1, 401))


def test_unencodable_payload_is_dead_lettered_not_lost_silently(tmp_path):
    with FakeBus() as fb:
        fb.down()  # forces the spool path
        with BusPublisher(cfg(fb.url, tmp_path)) as pub:
            bad = pub.publish_event("audit", {"x": object()})
            good = pub.publish_event("audit", {"x": 1})
            assert until(lambda: pub.state.rejected_total == 1)
            fb.up()
            assert pub.wait_delivered(5)
            assert fb.ids("message") == [good]
    dead = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert dead[0]["error_code"] == "ENCODE_ERROR" and dead[0]["envelope"]["id"] == bad


def test_torn_spool_line_is_kept_as_dead_letter(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    env = make_envelope(id="arq_1_1_abcdef", ts_ns=T0, type="message", room="prod:demo", channel="audit",
                        payload={"k": 1}, metadata={"sequence": 1})
    (spool / "outbox.jsonl").write_text(json.dumps(env) + "\n" + '{"id":"arq_1_2_ab')
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path)) as pub:
        assert pub.wait_delivered(5)
        assert fb.ids("message") == ["arq_1_1_abcdef"]
    dead = [json.loads(x) for x in (spool / "rejected.jsonl").read_text().splitlines()]
    assert dead[0]["reason"].startswith("torn spool line") and dead[0]["envelope"]["raw"] == '{"id":"arq_1_2_ab'


def test_unusable_spool_dir_is_an_actionable_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError, match=r"bus\.spool_dir .*cannot open the spool"):
        BusPublisher(BusConfig(spool_dir=str(f / "sub")))


def test_invalid_metadata_never_raises_in_the_caller_and_is_dead_lettered(tmp_path):
    with FakeBus() as fb, BusPublisher(cfg(fb.url, tmp_path)) as pub:
        bad = pub.publish_event("audit", {"k": 1}, {"sequence": 0})
        bad_ch = pub.publish_event("Not A Channel", {"k": 2})
        good = pub.publish_event("audit", {"k": 3})
        assert bad and bad_ch and good
        assert pub.wait_delivered(5)
        assert pub.state.rejected_total == 2 and fb.ids("message") == [good]
        assert fb.errors_sent == []  # never reached the wire
    dead = [json.loads(x) for x in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert {d["envelope"]["id"] for d in dead} == {bad, bad_ch}
    assert all(d["error_code"] == "INVALID_ENVELOPE" for d in dead)
    assert any("metadata.sequence" in d["reason"] for d in dead)
