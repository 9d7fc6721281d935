"""Metrics exposition: names pass promtool's lint, values follow the status, labels stay bounded."""
from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.request

import msgspec
import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.runtime.metrics import CYCLE_BUCKETS_S, Metrics
from daemon.runtime.status import (
    PROPOSAL_OUTCOMES,
    ROLLOUT_STATES,
    AuditStatus,
    BusStatus,
    ConfigStatus,
    CycleStatus,
    KnobStatus,
    LeaseStatus,
    RingStatus,
    RuntimeStatus,
    SlotStatus,
    Statistic,
    from_builtins,
    render_table,
    to_builtins,
)


def populated_status(**over) -> RuntimeStatus:
    s = RuntimeStatus(
        target="cache-a", version="0.1.0", epoch=0x5EED, attached=True, dataplane_pid=4242,
        lease=LeaseStatus(deadline_monotonic_s=1234.5, ok=True, lapses=2),
        generation_published=17, generation_acked=16, ack_latency_s=0.0004,
        knobs=(KnobStatus("decay", 0.5, (0.5, 0.55)), KnobStatus("batch_size", 32.0, (32.0, 40.0))),
        slots=(SlotStatus(0.95, "lru"), SlotStatus(0.05, "lru")),
        objectives=(Statistic("cost", 0, 1.2), Statistic("cost", 1, 1.1)),
        slos=(Statistic("p99_latency_seconds", 0, 0.004, 0.005), Statistic("p99_latency_seconds", 1, 0.006, 0.005, breached=True)),
        rollout_state="canary", experiment_id="exp-20240101-000042",
        proposals={"applied": 3}, rollbacks={"slo_breach": 1}, breaches={"p99_latency_seconds": 1},
        fast_path={"accepted": 9, "plans": 12, "declined_limits": 2},
        rings=(RingStatus(0.25, 0), RingStatus(0.5, 7)),
        audit=AuditStatus(depth=3, high_water=40, capacity=4096, healthy=True),
        bus=BusStatus(enabled=True, connected=True, queued=1, dropped=2, spooled=5),
        config=ConfigStatus(path="/etc/arqond/cache-a.yaml", last_reload_ok=True, last_reload_time_s=1.7e9),
        cycle=CycleStatus(last_s=0.0003, p50_s=0.0002, p99_s=0.0009, overruns=4),
        uptime_s=60.0,
    )
    return msgspec.structs.replace(s, **over)


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(m.registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for sm in fam.samples:
            out[(sm.name, tuple(sorted(sm.labels.items())))] = sm.value
    return out


def test_scrape_over_http_passes_promtool_lint():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package "
                    "(apt-get install -y prometheus); this lint check must not be skipped")
    m = Metrics(version="0.1.0")
    m.update(populated_status())
    m.observe_cycle(0.0004)
    m.observe_ack(0.002)
    m.count_proposal("applied")
    m.count_rollback("slo_breach")
    m.count_breach("p99_latency_seconds")
    m.count_experiment("started")
    server, port = m.serve("127.0.0.1", 0)
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.status == 200
            body = r.read()
    finally:
        server.shutdown()
        server.server_close()
    text = body.decode()
    assert "arqond_knob_value{knob=\"decay\",slot=\"1\"} 0.55" in text
    res = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    lint = (res.stdout + res.stderr).decode()
    assert res.returncode == 0 and lint == "", f"promtool check metrics said:\n{lint}"


def test_every_required_family_is_exported():
    m = Metrics(version="0.1.0")
    m.update(populated_status())
    names = {f.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())}
    # The text parser strips _total from counter family names (info is a plain gauge in 0.0.4).
    required = {
        "arqond_build_info", "arqond_knob_value", "arqond_knob_baseline_value", "arqond_objective_value",
        "arqond_slo_value", "arqond_slo_limit", "arqond_slo_breached", "arqond_rollout_state", "arqond_experiments_started",
        "arqond_experiments_promoted", "arqond_experiments_rolled_back", "arqond_proposals",
        "arqond_rollbacks", "arqond_guardrail_breaches", "arqond_safe_mode", "arqond_kill_switch",
        "arqond_lease_ok", "arqond_lease_lapses", "arqond_ack_latency_seconds",
        "arqond_cycle_duration_seconds", "arqond_cycle_overruns", "arqond_ring_fill_ratio",
        "arqond_ring_dropped_records", "arqond_audit_queue_depth", "arqond_audit_healthy",
        "arqond_bus_connected", "arqond_bus_dropped_events", "arqond_bus_spooled_events",
        "arqond_config_last_reload_successful", "arqond_config_last_reload_success_timestamp_seconds",
        "arqond_slot_weight_ratio",
    }
    assert required <= names, sorted(required - names)
    assert all(n.startswith("arqond_") for n in names)


def test_values_follow_the_status():
    m = Metrics()
    m.update(populated_status())
    s = samples(m)
    assert s[("arqond_knob_value", (("knob", "batch_size"), ("slot", "1")))] == 40.0
    assert s[("arqond_knob_baseline_value", (("knob", "decay"),))] == 0.5
    assert s[("arqond_slo_value", (("slo", "p99_latency_seconds"), ("slot", "1")))] == 0.006
    assert s[("arqond_slo_limit", (("slo", "p99_latency_seconds"), ("slot", "1")))] == 0.005
    assert s[("arqond_slo_breached", (("slo", "p99_latency_seconds"), ("slot", "1")))] == 1.0
    assert s[("arqond_slo_breached", (("slo", "p99_latency_seconds"), ("slot", "0")))] == 0.0
    assert s[("arqond_slot_weight_ratio", (("slot", "1"),))] == 0.05
    assert s[("arqond_lease_lapses_total", ())] == 2
    assert s[("arqond_ring_dropped_records_total", (("ring", "1"),))] == 7
    assert s[("arqond_ring_fill_ratio", (("ring", "0"),))] == 0.25
    assert s[("arqond_cycle_overruns_total", ())] == 4
    assert s[("arqond_bus_spooled_events_total", ())] == 5
    assert s[("arqond_config_last_reload_success_timestamp_seconds", ())] == 1.7e9
    assert s[("arqond_experiment_active", ())] == 1.0
    assert s[("arqond_tier1_fast_path_proposals_total", (("outcome", "accepted"),))] == 9
    assert s[("arqond_tier1_fast_path_proposals_total", (("outcome", "declined_limits"),))] == 2
    assert not any(k[0] == "arqond_tier1_fast_path_proposals_total" and ("outcome", "plans") in k[1] for k in s)
    # One-hot rollout state over the fixed set.
    states = {dict(k[1])["state"]: v for k, v in s.items() if k[0] == "arqond_rollout_state"}
    assert set(states) == set(ROLLOUT_STATES) | {"unknown"}
    assert states["canary"] == 1.0 and sum(states.values()) == 1.0

    # Safe mode, kill switch, failed reload, dropped knob: the next update replaces everything.
    m.update(populated_status(safe_mode=True, kill_switch=True, knobs=(KnobStatus("decay", 0.5, (0.5,)),),
                              rollout_state="weird", config=ConfigStatus(last_reload_ok=False),
                              bus=BusStatus(enabled=False, connected=True)))
    s = samples(m)
    assert s[("arqond_safe_mode", ())] == 1.0 and s[("arqond_kill_switch", ())] == 1.0
    assert s[("arqond_config_last_reload_successful", ())] == 0.0
    assert s[("arqond_bus_connected", ())] == 0.0  # disabled bus never reads as connected
    assert not any(k[0] == "arqond_knob_value" and ("knob", "batch_size") in k[1] for k in s)
    assert s[("arqond_rollout_state", (("state", "unknown"),))] == 1.0


def test_label_sets_stay_bounded():
    m = Metrics(max_label_values=3)
    m.update(populated_status())
    for outcome in ("applied", "rejected", "exp-123 applied", "0.37"):
        m.count_proposal(outcome)
    m.count_rollback("because I said so")
    for i in range(10):
        m.count_breach(f"slo{i}")
    text = generate_latest(m.registry).decode()
    assert "exp-20240101-000042" not in text        # never a label per experiment
    s = samples(m)
    outcomes = {dict(k[1])["outcome"] for k in s if k[0] == "arqond_proposals_total"}
    assert outcomes == set(PROPOSAL_OUTCOMES)
    assert s[("arqond_proposals_total", (("outcome", "other"),))] == 2
    assert s[("arqond_rollbacks_total", (("reason", "other"),))] == 1
    slos = {dict(k[1])["slo"] for k in s if k[0] == "arqond_guardrail_breaches_total"}
    assert slos == {"slo0", "slo1", "slo2", "other"}
    assert s[("arqond_guardrail_breaches_total", (("slo", "other"),))] == 7
    with pytest.raises(ValueError, match="expected one of"):
        m.count_experiment("exploded")
    # No prometheus_client `_created` side series.
    assert "_created" not in text


def test_histogram_bucket_edges_and_counts():
    m = Metrics()
    for v in (0.0001, 0.00010001, 0.0009, 0.2):
        m.observe_cycle(v)
    s = samples(m)

    def bucket(le):
        return s[("arqond_cycle_duration_seconds_bucket", (("le", le),))]
    assert bucket("0.0001") == 1            # le is inclusive
    assert bucket("0.00025") == 2
    assert bucket("0.001") == 3
    assert bucket("0.05") == 3 and bucket("+Inf") == 4
    assert s[("arqond_cycle_duration_seconds_count", ())] == 4
    assert s[("arqond_cycle_duration_seconds_sum", ())] == pytest.approx(0.0001 + 0.00010001 + 0.0009 + 0.2)
    assert CYCLE_BUCKETS_S[0] == 0.0001 and CYCLE_BUCKETS_S[-1] == 0.05


def test_a_batch_of_cycles_is_the_same_histogram_as_one_by_one():
    vs = [0.0001, 0.00010001, 0.0009, 0.2, 0.003, 0.0]
    one, batch = Metrics(), Metrics()
    for v in vs:
        one.observe_cycle(v)
    batch.observe_cycles(vs[:2])
    batch.observe_cycles([])
    batch.observe_cycles(vs[2:])
    a, b = samples(one), samples(batch)
    cyc = {k: v for k, v in a.items() if k[0].startswith("arqond_cycle_duration_seconds")}
    assert len(cyc) == len(CYCLE_BUCKETS_S) + 3 and cyc[("arqond_cycle_duration_seconds_count", ())] == 6
    assert cyc == {k: v for k, v in b.items() if k[0].startswith("arqond_cycle_duration_seconds")}


def test_own_registry_and_counts_for_status():
    before = generate_latest(REGISTRY)
    m = Metrics()
    m.count_proposal("applied")
    m.count_proposal("applied")
    m.count_experiment("promoted")
    assert b"arqond_" not in generate_latest(REGISTRY) and b"arqond_" not in before
    c = m.counts()
    assert c["proposals"]["applied"] == 2 and c["experiments"]["promoted"] == 1
    c["proposals"]["applied"] = 99                    # a copy: the tally is not aliased
    assert m.counts()["proposals"]["applied"] == 2
    # The counts drop straight into a status.
    st = populated_status(proposals=c["proposals"])
    assert st.proposals["applied"] == 99


def test_status_round_trip_and_table():
    s = populated_status(safe_mode=True, safe_mode_reason="3 evaluation timeouts in a row")
    assert from_builtins(msgspec.json.decode(msgspec.json.encode(to_builtins(s)))) == s
    with pytest.raises(msgspec.ValidationError, match=r"\$\.lease\.ok"):
        from_builtins({**to_builtins(s), "lease": {"ok": "yes"}})
    t = render_table(s)
    assert "target cache-a" in t and "attached pid 4242" in t
    assert "SAFE MODE (3 evaluation timeouts in a row)" in t
    assert [line.split()[2] for line in t.splitlines() if line.endswith("BREACH")] == ["1"]  # slot 1 only
    assert "decay" in t and "0.55" in t and "canary" in t and "exp-20240101-000042" in t
    assert "proposals: applied=3" in t and "overruns 4" in t
    assert max(len(line) for line in t.splitlines()) <= 100
    bare = render_table(RuntimeStatus(target="x"))
    assert "NOT attached" in bare and "LAPSED" in bare and "bus:       disabled" in bare


def test_scrapes_concurrent_with_observations_stay_consistent():
    # The loop observes while the HTTP thread renders: every scrape must be a valid histogram
    # (+Inf bucket == count, buckets non-decreasing, sum matching count) and nothing may be lost.
    m = Metrics()
    n = 20000
    done = threading.Event()

    def loop():
        for i in range(n):
            m.observe_cycle(0.0003)
            m.count_proposal("applied")
        done.set()

    t = threading.Thread(target=loop)
    t.start()
    scrapes = 0
    while not done.is_set() or scrapes == 0:
        fam = next(f for f in m.collect() if f.name == "arqond_cycle_duration_seconds")
        buckets = [s.value for s in fam.samples if s.name.endswith("_bucket")]
        count = next(s.value for s in fam.samples if s.name.endswith("_count"))
        total = next(s.value for s in fam.samples if s.name.endswith("_sum"))
        assert buckets == sorted(buckets) and buckets[-1] == count
        assert total == pytest.approx(count * 0.0003, rel=1e-9, abs=1e-12)
        scrapes += 1
    t.join()
    s = samples(m)
    assert s[("arqond_cycle_duration_seconds_count", ())] == n
    assert s[("arqond_proposals_total", (("outcome", "applied"),))] == n
