"""Tier 1's admission fast path (daemon/tier1/admit.py, native/src/arqd_admit.c) decides exactly
as the Python rules: the same streams through an executor with it and one without give
byte-identical events and states, the fast path takes most of a tuning stream, values on every
boundary fall on the same side, and a value out of bounds (from a corrupted plan here) is caught
after the publish and recorded, never kept."""
from __future__ import annotations

import math
import random

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.tier1 import events as ev
from daemon.tier1.executor import Executor, FastPathMismatch, rebuild
from daemon.tier1.model import Arm, Command, Proposal

from .test_tier1_fastpaths import _same as _same_as
from .test_tier1_fastpaths import _tight
from .test_tier1_properties import DECL, G, Run, action_st

NS = 1_000_000_000
MS = 1_000_000


class SlowExecutor(Executor):
    """The executor with the Python rules alone."""

    def __init__(self, *a, **kw):
        super().__init__(*a, fast_path=False, **kw)


@pytest.mark.parametrize("budget", ["open", "binding"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action_st, min_size=1, max_size=40))
def test_the_fast_path_decides_like_the_python_rules(budget, actions):
    fast = _same_as(actions, G if budget == "open" else _tight(), Executor, SlowExecutor)
    assert fast.x.mismatches == 0


# ------------------------------------------------------------------ boundaries, deterministically

def _boundary_value(rng: random.Random, x: Executor, i: int) -> float:
    """A value for knob i on or next to one of its edges: the bounds, the max_delta reach around
    the baseline (absolute or normalised), or just inside / outside them by one ulp."""
    rk, base, rng_i = x.rk[i], x.state.baseline[i], x.ranges[i]
    reach = rk.max_delta if rk.delta_mode == "absolute" else rk.max_delta * rng_i
    edge = rng.choice([rk.lo, rk.hi, base + reach, base - reach, base + reach + 1e-12 * rng_i, base])
    v = rng.choice([edge, math.nextafter(edge, math.inf), math.nextafter(edge, -math.inf),
                    base + rng.uniform(-reach, reach)])
    if x.decl.knobs[i].integer:
        v = rng.choice([float(round(v)), v])
    return v


def _boundary_stream(seed: int, g) -> tuple[Run, Run]:
    """Two runs fed the same proposals whose values and timings sit on the rules' edges: times
    exactly min_interval after the last change (and 1 ns before), bursts against the rate limit,
    probes that spend the budget to its last ulp."""
    rng = random.Random(seed)
    runs = Run(Executor, g), Run(SlowExecutor, g)
    x0 = runs[0].x
    allow = [i for i, rk in enumerate(x0.rk) if rk is not None]
    for n in range(160):
        last = max((h[-1].t_ns for h in x0.state.history.values() if h), default=0)
        dt = rng.choice([int(0.1 * NS), int(0.1 * NS) - 1, 10 * MS, 0, 250 * MS, 2 * NS])
        t = max(runs[0].t, last + dt)
        kind = rng.choice(["probe", "probe", "probe", "rollout"])
        n_arms = 1 if kind == "rollout" else rng.choice([1, 2, 2, 3])
        arms = []
        for _ in range(n_arms):
            knobs = {}
            for i in rng.sample(allow, rng.randint(1, len(allow))):
                if i == 2 and rng.random() < 0.7:
                    continue   # the global knob: mostly left alone (it takes the Python path)
                knobs[x0.rk[i].name] = _boundary_value(rng, x0, i)
            arms.append(Arm(knobs))
        p = Proposal(f"b{n}", kind, tuple(arms), seed=n)
        for r in runs:
            r.t = t
            v = r.x.propose(t, p, defer=True)
            r.events += r.x.complete()
            for _ in range([0, 1, 3, 40][n % 4]):
                r.cycle(["ok", "ok", "slow", "breach"][n % 4] if n % 5 else "ok", "ok")
            if r.x.exp is not None and n % 3 == 0:
                r.record(r.x.command(r.t, Command("rollback")))
            # back to idle, so the next proposal is decided by the rules, not by "busy"
            k = 0
            while r.x.exp is not None and k < 400:
                r.cycle("ok", "ok")
                k += 1
    return runs


@pytest.mark.parametrize("seed,tight", [(1, False), (2, True), (3, True), (4, False)])
def test_values_and_times_on_every_edge_fall_on_the_same_side(seed, tight):
    fast, slow = _boundary_stream(seed, _tight(0.3) if tight else G)
    assert ev.encode(fast.events) == ev.encode(slow.events)
    assert fast.x.state == slow.x.state
    assert fast.x.mismatches == 0
    verdicts = [e for e in fast.events if isinstance(e, ev.ValidationVerdict)]
    accepted = sum(e.accepted for e in verdicts)
    rules = {e.rule for e in verdicts if not e.accepted}
    # the stream reaches both sides of the rules
    assert accepted >= 10 and {"bounds", "max_delta"} <= rules, (accepted, rules)
    # (most of the stream runs under a cooldown or a quarantine, which the fast path leaves to Python)
    assert fast.x.fast_accepts >= 1, (fast.x.fast_accepts, accepted)


def test_a_long_tuning_stream_goes_mostly_through_the_fast_path():
    """SPSA's shape (two arms, every tuned knob, floats), with a cycle between proposals as the
    daemon runs them: the fast path takes most and the events are the slow path's."""
    g = _tight(5.0)
    fast, slow = Run(Executor, g), Run(SlowExecutor, g)
    rng = random.Random(9)
    probes = 0
    for n in range(200):
        base = fast.x.state.baseline
        d = rng.uniform(0.005, 0.05)
        kind = "rollout" if n % 5 == 4 else "probe"
        a = {"a": base[0] + d, "b": base[1] - 4 * d, "n": base[3]}
        b = {"a": base[0] - d, "b": base[1] + 4 * d, "n": base[3]}
        arms = (Arm(a),) if kind == "rollout" else (Arm(a), Arm(b))
        p = Proposal(f"s{n}", kind, arms, seed=n)
        probes += kind == "probe"
        for r in (fast, slow):
            r.t += 150 * MS
            r.cycle("ok", "ok")   # the daemon steps Tier 1 before Tier 2 proposes
            v = r.x.propose(r.t, p, defer=True)
            r.events += r.x.complete()
            k = 0
            while r.x.exp is not None and k < 400:
                r.cycle("ok" if n % 25 else "slow", "ok")
                k += 1
    assert ev.encode(fast.events) == ev.encode(slow.events)
    assert fast.x.state == slow.x.state
    accepted = sum(e.accepted for e in fast.events if isinstance(e, ev.ValidationVerdict))
    assert accepted >= 80
    assert fast.x.fast_accepts >= 0.9 * accepted, (fast.x.fast_accepts, accepted)
    assert rebuild(fast.events, DECL) == fast.x.state


def test_a_fast_acceptance_returns_the_snapshot_staged_and_complete_confirms_it():
    r = Run(Executor, G)
    r.t += NS
    r.cycle("ok", "ok")
    p = Proposal("f1", "probe", (Arm({"a": 0.55, "b": 0.1}), Arm({"a": 0.45, "b": -0.1})), seed=1)
    v = r.x.propose(r.t, p, defer=True)
    assert v.accepted and v.snapshot is None and v.staged is not None and v.events == []
    gen = v.staged.generation
    events = r.x.complete()
    assert [type(e).__name__ for e in events] == ["ProposalEvent", "ValidationVerdict", "Transition", "Apply"]
    live = r.x.state.live
    assert live.generation == gen == events[-1].snapshot.generation
    assert [s.weight for s in live.slots] == list(v.staged.weights[0:3])
    assert list(live.slots[1].knobs[:2]) == [0.55, 0.1] and list(v.staged.knobs[1][0:2]) == [0.55, 0.1]
    # propose without defer hands back the SnapshotSpec, as ever
    r2 = Run(Executor, G)
    r2.t += NS
    r2.cycle("ok", "ok")
    v2 = r2.x.propose(r2.t, p)
    assert v2.accepted and v2.staged is None and v2.snapshot == live and r2.x.fast_accepts == 1


def test_what_the_fast_path_does_not_decide_goes_to_the_python_rules():
    r = Run(Executor, G)
    r.t += NS
    r.cycle("ok", "ok")
    n = r.x.state.baseline[3]
    cases = [(Proposal("v", "probe", (Arm({"a": 0.55}, variant="fast"),)), "variant_or_preset"),
             (Proposal("i", "probe", (Arm({"n": int(n) + 1}),)), "type"),   # an int (else fine): the type rules
             (Proposal("z", "probe", (Arm({"zz": 0.5}),)), "knob"),          # not allowlisted
             (Proposal("o", "probe", (Arm({"a": 1.5}),)), "value"),          # out of bounds
             (Proposal("g", "probe", (Arm({"g": 5.5}),)), "global"),         # a global knob
             (Proposal("r", "rollout", (Arm({"a": 0.5}),)), "no_change")]    # no change
    for p, why in cases:
        r.cycle("ok", "ok")   # the daemon steps Tier 1 (cooldown over: idle, plan made) before a proposal
        before = r.x.fast_declines.get(why, 0)
        v = r.x.propose(r.t, p, defer=True)
        r.x.complete()
        assert v.staged is None and r.x.fast_declines.get(why, 0) == before + 1, (p.proposal_id, r.x.fast_declines)
        r.cycle("ok", "ok")
        k = 0
        while r.x.exp is not None and k < 400:
            r.record(r.x.command(r.t, Command("rollback")))
            r.cycle("ok", "ok")
            k += 1
        r.t += NS
    assert r.x.fast_accepts == 0


def test_a_disagreement_is_recorded_and_raised_so_the_caller_snaps_back():
    r = Run(Executor, G)
    r.t += NS
    r.cycle("ok", "ok")
    r.x._plan.c.hi[0] = 10.0     # a corrupted plan: the C rules now take a = 1.02 (> 1.0, max_delta too)
    r.x._plan.c.max_delta[0] = 10.0
    gen0 = r.x.state.generation
    v = r.x.propose(r.t, Proposal("bad", "probe", (Arm({"a": 1.02}),)), defer=True)
    assert v.staged is not None and v.staged.generation == gen0 + 1
    with pytest.raises(FastPathMismatch, match="value 1.02 of knob a is not allowed"):
        r.x.complete()
    assert r.x.mismatches == 1
    # what went live is on record under its own generation; the snapback takes the next one
    out = r.x.command(r.t, Command("snapback", "runtime", "cycle exception"))
    applies = [e for e in out.events if isinstance(e, ev.Apply)]
    assert applies[0].new_config_version == gen0 + 1 and applies[0].snapshot.slots[1].knobs[0] == 1.02
    assert out.snapshot.generation == gen0 + 2 and len(out.snapshot.slots) == 1
    assert out.snapshot.slots[0].knobs == r.x.state.baseline


def test_the_plan_follows_the_state_and_the_clock():
    r = Run(Executor, G)
    r.t += NS
    r.cycle("ok", "ok")
    pl = r.x._plan
    assert pl is not None and pl.c.t_ns == r.t
    r.cycle("ok", "ok")                     # nothing changed: the same plan
    assert r.x._plan is pl
    r.t += 2 * NS
    r.cycle("ok", "ok")                     # a second old: made again (its spends only shrink)
    assert r.x._plan is not pl
    pl = r.x._plan
    r.record(r.x.command(r.t, Command("freeze")))
    assert r.x.propose(r.t, Proposal("k", "probe", (Arm({"a": 0.55}),)), defer=True).staged is None
    r.x.complete()
    r.cycle("ok", "ok")                     # frozen: nothing is decided fast
    assert r.x.propose(r.t, Proposal("k2", "probe", (Arm({"a": 0.55}),)), defer=True).staged is None
    r.x.complete()
    # a proposal dated before the plan is left to the Python rules
    r.record(r.x.command(r.t, Command("thaw")))
    r.cycle("ok", "ok")
    v = r.x.propose(r.t - 1, Proposal("early", "probe", (Arm({"a": 0.55}),)), defer=True)
    r.x.complete()
    assert v.accepted and v.staged is None


def test_publish_staged_writes_the_bytes_publish_writes():
    import time

    from shm_layout._shm import ffi
    from shm_layout.decl import SlotSpec, SnapshotSpec
    from shm_layout.segment import Segment
    from tests.planeproc import Plane, unique_name

    with Plane("idle", unique_name()) as p, Segment.attach(p.name) as seg:
        seg.acquire_writer()
        nk = len(seg.declaration.knobs)
        base = tuple(float(i) for i in range(nk))
        cand = tuple(float(i) + 0.25 for i in range(nk))
        snap = SnapshotSpec(generation=7, slots=(SlotSpec(0.8, 0, base), SlotSpec(0.1, 1, cand), SlotSpec(0.1, 0, base)),
                            global_knobs=base, salt=12345)
        seg.publish(snap, time.monotonic_ns() + 10 * NS)
        want = bytes(seg._copy)
        _, first = seg.read_snapshot()
        s = ffi.new("arqd_staged *")
        s.generation, s.salt, s.n_slots = 8, 12345, 3
        for i, sl in enumerate(snap.slots):
            s.weights[i], s.variants[i] = sl.weight, sl.variant
            for k in range(nk):
                s.knobs[i][k] = sl.knobs[k]
        for k in range(nk):
            s.global_knobs[k] = base[k]
        seg.publish_staged(s, time.monotonic_ns() + 10 * NS)
        got = bytes(seg._copy)
        _, back = seg.read_snapshot()
        assert back == msgspec.structs.replace(first, generation=8) and first.slots[1].knobs == cand
        # the same bytes but the generation word
        assert len(got) == len(want) and sum(a != b for a, b in zip(got, want)) <= 8
