"""Acting on conditions fast and safely (the serve demo's load steps).

Tier 2: a rise in a `tuning.context_fast_rise` field by its factor is a new regime after
FAST_PERSIST observations, without the persistence time; a fall or a smaller rise still waits;
entering by such a rise holds variant tournaments for the regime's stay.
Tier 1 (rollout.relief): when the conditions Tier 1 itself measured on slot 0 in the last second
rose by the fast-rise factor beyond the context of the entry the baseline is, the approved preset
nearest them bakes at 100% at once, also while the data plane has not acked the abort of a
cancelled experiment; any other preset, a fall, a baseline no entry describes, stale or missing
conditions, or relief off take the canary ramp."""
from __future__ import annotations

import pytest

from daemon.tier1 import events as ev
from daemon.tier1.config import ConfigError, load_guardrails, nearest_entry
from daemon.tier1.executor import Executor
from daemon.tier1.model import Arm, Command, CycleInput, FieldStats, Proposal, SlotTelemetry
from daemon.tier1.rollout import State as S
from daemon.tier2.driver import TuningDriver
from daemon.tier2.regimes import CONTEXT_PERSIST_S, FAST_PERSIST, Regimes
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

MS = 1_000_000
DECL = Declaration(
    knobs=(KnobDecl("a", 0.0, 1.0, 0.5), KnobDecl("b", 0.0, 1.0, 0.5)),
    fields=(FieldDecl("lat", "us"), FieldDecl("load")), variants=("ref", "cheap"))

CFG = """
target: t
limits: {max_delta: 0.1, rate_limit_hz: 10, min_interval_s: 0}
knobs: {a: {}, b: {}}
objective: {terms: [{field: lat, stat: mean}]}
slos: [{name: p99, field: lat, stat: p99, max: 4000, min_samples: 20}]
rollout: {shadow: "off", canary_steps: [0.1, 1.0], min_samples: 5, min_blocks: 3, block_s: 0.1, relief: %s}
tuning: {context: [load], variants: true, context_fast_rise: {load: 2}}
catalog:
  fields: {latency: lat}
  variants:
    - {id: ref, variant: ref, state: Promoted, context: {load: 100}}
    - {id: quiet, state: Approved, knobs: {a: 0.8}, context: {load: 100}}
    - {id: mid, state: Approved, knobs: {b: 0.45}, context: {load: 180}}
    - {id: busy, state: Approved, knobs: {a: 0.1}, variant: cheap, context: {load: 1000}}
budget: {max_change: 5.0, window_s: 60}
"""


def fs(v: float, n: int = 50) -> FieldStats:
    return FieldStats(n, v, v, v, v, v, v)


class Plane:
    """An executor fed slot-0 telemetry with a chosen load; acks every generation it sees."""

    def __init__(self, relief: bool = True):
        self.x = Executor(load_guardrails(CFG % ("true" if relief else "false")), DECL, run_id="cond")
        self.t = 0
        self.x.start(self.t)

    def step(self, load, ack: bool = True):
        self.t += 10 * MS
        gen = self.x.snapshot.generation
        slots = tuple(SlotTelemetry(s.slot if hasattr(s, "slot") else i, gen, 50, 10 * MS,
                                    {"lat": fs(1000.0), **({"load": fs(load)} if load is not None and i == 0 else {})})
                      for i, s in enumerate(self.x.snapshot.slots))
        return self.x.step(self.t, CycleInput(self.t, gen, slots, gen if ack else gen - 1, True))

    def propose(self, *arms, pid: str = "p"):
        return self.x.propose(self.t, Proposal(pid, "rollout", tuple(arms)))


BUSY = Arm({"a": 0.1}, variant="cheap", preset="busy")
QUIET = Arm({"a": 0.8}, preset="quiet")


def test_nearest_entry_compares_conditions_by_ratio():
    g = load_guardrails(CFG % "true")
    entries = [c for c in g.catalog.variants if c.context and c.id != "mid"]
    assert nearest_entry(entries, ("load",), {"load": 900.0})[0].id == "busy"
    assert nearest_entry(entries, ("load",), {"load": 250.0})[0].id == "ref"     # 2.5x above 100, 4x below 1000; ties: first
    best, d = nearest_entry(entries, ("load",), {"load": 400.0})
    assert best.id == "busy" and d == pytest.approx(1.3219, abs=1e-3)            # log2(1000/400)
    assert nearest_entry(entries, ("load",), {"load": 0.0}) == (None, float("inf"))
    assert nearest_entry(entries, ("load",), {}) == (None, float("inf"))


def test_preset_for_the_measured_conditions_bakes_at_once():
    p = Plane()
    p.step(1100.0)
    v = p.propose(BUSY)
    assert v.accepted and p.x.mstate is S.BAKING
    t = [e for e in v.events if isinstance(e, ev.Transition)][-1]
    assert t.trigger == "accept_relief" and "load measured now (1100) is 11x the 100 the baseline (ref)" in t.condition
    assert t.measured == pytest.approx(0.1375, abs=1e-3) and t.threshold is None
    assert [s.weight for s in p.x.snapshot.slots] == [0.0, 1.0]
    # promoted; the load falls back: the calmer conditions' (costlier) preset takes the canary
    while p.x.mstate is not S.IDLE:
        p.step(1100.0)
    assert p.x.state.baseline[0] == 0.1 and DECL.variants[p.x.state.baseline_variant] == "cheap"
    p.step(100.0)
    assert p.propose(QUIET, pid="back").accepted and p.x.mstate is S.CANARY


@pytest.mark.parametrize("case", ["other_preset", "plain_arm", "stale", "unmeasured", "relief_off", "small_rise",
                                  "unknown_baseline"])
def test_anything_else_takes_the_canary_ramp(case):
    p = Plane(relief=case != "relief_off")
    if case == "unknown_baseline":   # a tuned baseline no catalog entry describes
        p.x = Executor(load_guardrails((CFG % "true").replace(", context: {load: 100}}", "}", 1)), DECL, run_id="u")
        p.x.start(p.t)
    p.step({"unmeasured": None, "small_rise": 190.0}.get(case, 1100.0))
    if case == "stale":
        for _ in range(110):                       # 1.1 s without a load measurement
            p.step(None)
    arm = {"other_preset": QUIET, "plain_arm": Arm({"a": 0.45})}.get(case, BUSY)
    if case == "small_rise":         # 1.9x the baseline's 100: mid is nearest, but the rise is below the factor 2
        arm = Arm({"b": 0.45}, preset="mid")
    v = p.propose(arm)
    assert v.accepted and p.x.mstate is S.CANARY
    if case == "small_rise":         # the same preset once the load is 2.5x: at once
        p = Plane()
        p.step(250.0)
        assert p.propose(arm).accepted and p.x.mstate is S.BAKING


def test_relief_starts_before_the_abort_of_a_cancelled_probe_is_acked():
    p = Plane()
    p.step(100.0)
    assert p.x.propose(p.t, Proposal("probe", "probe", (Arm({"b": 0.55}), Arm({"b": 0.45})))).accepted
    p.step(100.0)
    out = p.x.command(p.t, Command("cancel", "tier2", "conditions changed"))
    assert p.x.mstate is S.ABORTING
    abort_gen = out.snapshot.generation           # the baseline-only snapshot nobody has acked yet
    p.step(1000.0, ack=False)                      # the load steps; the data plane has not acked yet
    v = p.propose(BUSY, pid="regime")
    assert v.accepted and p.x.mstate is S.BAKING
    assert [e.trigger for e in v.events if isinstance(e, ev.Transition)] == ["accept_relief"]
    assert v.snapshot.generation > abort_gen
    assert [s.weight for s in v.snapshot.slots] == [0.0, 1.0] and v.snapshot.slots[1].variant == DECL.variants.index("cheap")


def test_fast_rise_skips_the_persistence_time_but_a_fall_or_a_small_rise_waits():
    r = Regimes(("load",), fast_rise={"load": 2.0})
    t, dt = 1, 10 * MS
    assert r.update({"load": 100.0}, t) == "entered"
    r0 = r.regime
    outs = []
    for _ in range(FAST_PERSIST):                    # 5x: new conditions after FAST_PERSIST observations
        t += dt
        outs.append(r.update({"load": 500.0}, t))
    assert outs[-1] == "entered" and "entered" not in outs[:-1] and r.regime != r0
    r1 = r.regime
    for _ in range(5):                               # back down: a fall waits the full persistence time
        t += dt
        assert r.update({"load": 100.0}, t) == "pending"
    t += int(CONTEXT_PERSIST_S * 1e9)
    assert r.update({"load": 100.0}, t) == "entered" and r.regime == r0
    for _ in range(5):                               # 1.6x: a rise, but below the factor
        t += dt
        assert r.update({"load": 160.0}, t) == "pending"
    assert r.regime == r0 != r1


def test_a_fast_rise_factor_must_name_a_context_field_and_exceed_one():
    bad = CFG.replace("context_fast_rise: {load: 2}", "context_fast_rise: {load: 0.5, lat: 2}") % "true"
    with pytest.raises(ConfigError) as e:
        load_guardrails(bad)
    msg = str(e.value)
    assert "tuning.context_fast_rise.load" in msg and "a factor > 1" in msg
    assert "tuning.context_fast_rise.lat" in msg and "one of tuning.context (load)" in msg


class Drive:
    """A driver that explores variants every round, called every 10 ms as the runtime does
    (observe, then next_proposal) at a given load; `calls` yields its proposals."""

    def __init__(self):
        self.d = TuningDriver(load_guardrails(CFG.replace("variants: true", "variants: true, explore_every: 1") % "true"),
                              DECL)
        self.t, self.base = 1, {"a": 0.5, "b": 0.5}

    def calls(self, load, n, variant="ref"):
        for _ in range(n):
            self.t += 10 * MS
            self.d.observe({"load": load}, self.base, variant, self.t)
            p = self.d.next_proposal(self.base, variant, {"load": load}, self.t)
            if p is not None:
                yield p

    def finish(self, p):
        """As if Tier 1 ended `p` without evaluations, a probe round gone by."""
        self.d.pending = None
        self.d.round += 1


def test_entering_by_a_rise_holds_variant_tournaments_a_fall_does_not():
    dr = Drive()
    d = dr.d

    def proposals(load, n):
        out = []
        for p in dr.calls(load, n):
            out.append(p)
            dr.finish(p)
        return out

    low = proposals(100.0, 30)
    assert any(p.proposal_id.endswith("tournament") for p in low)   # exploring at low load
    high = proposals(1000.0, 40)
    k = next(i for i, p in enumerate(high) if p.source == "context")
    assert k < FAST_PERSIST and high[k].arms[0].preset == "busy"                 # entered within 2 calls
    assert d.hold_variants and not any(p.proposal_id.endswith("tournament") for p in high[k:])
    back = proposals(100.0, 60)                                      # the load falls: explore again
    assert not d.hold_variants and any(p.proposal_id.endswith("tournament") for p in back)


def test_conditions_hovering_on_a_band_edge_still_make_a_new_regime():
    """A fall to a load that sits on the edge between two lower bands (medium after high in the
    serve demo): the candidate must not restart its persistence each time the edge is crossed."""
    r = Regimes(("load",))
    t, dt = 1, 10 * MS
    assert r.update({"load": 12000.0}, t) == "entered"
    edge = 2 ** (25 * 0.5)                            # the edge between bands 24 and 25
    outs = []
    for i in range(int(CONTEXT_PERSIST_S * 1e9 / dt) + 5):
        t += dt
        outs.append(r.update({"load": edge * (1.04 if i % 2 else 0.96)}, t))
    assert "entered" in outs and r.regime in ((24,), (25,))


def test_a_step_entered_half_way_is_followed_fast_and_enters_where_the_load_is():
    """The measured load climbs over a few cycles after a step: the first fast entry may land on
    an intermediate band; the rest of the rise (relative to where it started) is fast too, and a
    regime is entered at the band of its latest observation."""
    r = Regimes(("load",), fast_rise={"load": 2.0})
    t, dt = 1, 10 * MS
    r.update({"load": 1000.0}, t)
    low = r.regime
    outs = []
    for load in (2100.0, 2300.0, 5000.0, 9000.0, 9500.0):   # 2.1x, then the rest of a ~9x step
        t += dt
        outs.append((r.update({"load": load}, t), r.regime))
    assert outs[1] == ("entered", (22,))                    # 2300/s: band 22, the latest observation's
    assert ("entered", (26,)) in outs[2:] and r.regime == (26,)   # 9000/s, 30 ms after the step, not 0.25 s
    assert r.rose_from == low
    for _ in range(40):                                      # settles: later rises count from here
        t += dt
        r.update({"load": 9500.0}, t)
    assert r.rose_from is None


def test_a_fall_after_an_overshoot_is_not_fast():
    r = Regimes(("load",), fast_rise={"load": 2.0})
    t, dt = 1, 10 * MS
    r.update({"load": 1000.0}, t)
    for load in (4800.0, 5000.0):                 # the step, measured a little high at first
        t += dt
        r.update({"load": load}, t)
    assert r.regime == (24,)
    outs = []
    for _ in range(5):                            # the real level: just below 24's hysteresis
        t += dt
        outs.append(r.update({"load": 3300.0}, t))
    assert outs == ["pending"] * 5               # a fall: the full persistence time, even after a fast run


def test_a_superseding_regime_whose_choice_is_the_running_preset_does_not_cancel_it():
    d = TuningDriver(load_guardrails(CFG % "true"), DECL)
    base = {"a": 0.5, "b": 0.5}
    t = 1
    for load in (100.0, 1000.0, 1000.0):
        t += 10 * MS
        d.observe({"load": load}, base, "ref", t)
    p = d.next_proposal(base, "ref", {"load": 1000.0}, t)
    assert p.source == "context" and p.arms[0].preset == "busy"
    r1 = d.regime
    got = []
    for _ in range(3):                            # the load goes on rising: another regime, same nearest preset
        t += 10 * MS
        got.append(d.observe({"load": 3000.0}, base, "ref", t))
    assert d.regime != r1 and not any(got) and d.pending is p and not d.regime_due()


def test_a_variant_that_broke_the_sla_in_a_regime_sits_out_its_tournaments_until_conditions_change():
    from daemon.tier1.model import Evaluation
    dr = Drive()

    def tournaments(load, n, breach=False):
        seen = []
        for p in dr.calls(load, n):
            if p.proposal_id.endswith("tournament"):
                seen.append([a.variant for a in p.arms])
                dr.d.on_evaluations([Evaluation(p.proposal_id, i, "slo_breach" if breach else "ok", 2.0, 1.0, 100, 4, 0.01)
                                     for i in range(len(p.arms))])
            else:
                dr.finish(p)
        return seen

    first = tournaments(120.0, 3, breach=True)
    assert first and first[0] == ["cheap"]
    assert tournaments(120.0, 30) == []                 # same regime: cheap broke the SLA here, not tried again
    assert tournaments(1000.0, 40) == []                # a rise: variants held (see above)
    assert tournaments(120.0, 80)                       # back down, a new regime: tried again


@pytest.mark.parametrize("load,explored", [(150.0, True), (250.0, False)])
def test_a_variant_is_not_explored_at_twice_the_load_it_was_approved_for(load, explored):
    """ref's entry names load 100: with the baseline on the cheap variant, a tournament may run
    ref at 1.5x that load, not at 2.5x (context_fast_rise load: 2)."""
    dr = Drive()
    seen = set()
    for p in dr.calls(load, 60, variant="cheap"):
        if p.proposal_id.endswith("tournament"):
            seen.update(a.variant for a in p.arms)
        dr.finish(p)
    assert ("ref" in seen) is explored


def test_context_persist_s_sets_how_long_a_fall_must_persist():
    g = load_guardrails((CFG % "true").replace("context_fast_rise: {load: 2}", "context_fast_rise: {load: 2}, context_persist_s: 0.05"))
    d = TuningDriver(g, DECL)
    base, t = {"a": 0.5, "b": 0.5}, 1
    d.observe({"load": 1000.0}, base, "ref", t)
    r0, n = d.regime, 0
    while d.regime == r0 and n < 100:
        t += 10 * MS
        n += 1
        d.observe({"load": 100.0}, base, "ref", t)
    assert n == 6                                   # 50 ms after the first observation outside, not 250
    with pytest.raises(ConfigError, match="tuning.context_persist_s"):
        load_guardrails((CFG % "true").replace("context_fast_rise: {load: 2}", "context_fast_rise: {load: 2}, context_persist_s: -1"))


@pytest.mark.parametrize("load, fresh, want", [(1100.0, True, True), (250.0, True, True), (190.0, True, False),
                                               (40.0, True, False), (1100.0, False, False), (None, True, False)])
def test_relief_ready_only_when_a_preset_could_skip_the_cooldown(load, fresh, want):
    """The runtime asks Tier 2 for a regime preset during a cooldown only when relief_ready: a
    fast rise beyond the baseline entry's context (a fall or a small rise would only be refused
    for the cooldown, every few cycles, into the ledger)."""
    p = Plane()
    p.step(load)
    if not fresh:
        for _ in range(110):                       # 1.1 s without a load measurement
            p.step(None)
    assert p.x.relief_ready(p.t) is want
    if load is not None and fresh:                 # what relief_ready promises, propose keeps
        preset = nearest_entry([c for c in p.x.g.catalog.variants if c.context], ("load",), {"load": load})[0]
        arm = {"busy": BUSY, "mid": Arm({"b": 0.45}, preset="mid")}.get(preset.id)
        if arm is not None:
            v = p.propose(arm)
            assert v.accepted and (p.x.mstate is S.BAKING) is want


@pytest.mark.parametrize("status, retried", [("slo_breach", True), ("regression", True), ("aborted", False),
                                             ("insufficient_data", False)])
def test_a_regime_preset_that_failed_is_replaced_by_the_next_nearest(status, retried):
    """Entered half-way up a step, the preset nearest the load measured then may not carry the
    rest of it: when it is rolled back for an SLO breach or a regression, the regime chooses
    again without it (serve: int8 at 0.7 fp32 capacities broke its p99, the high phase needed
    early_exit_1; the tuner instead probed the overloaded baseline into safe mode). A cancel or
    missing data is no verdict on the preset: no retry."""
    from daemon.tier1.model import Evaluation
    d = TuningDriver(load_guardrails(CFG % "true"), DECL)
    base, t = {"a": 0.5, "b": 0.5}, 1
    for load in (100.0, 400.0, 400.0):          # 4x: a fast rise; mid (180) is nearest, then busy (1000)
        t += 10 * MS
        d.observe({"load": load}, base, "ref", t)
    p = d.next_proposal(base, "ref", {"load": 400.0}, t)
    assert p.source == "context" and p.arms[0].preset == "mid"
    d.on_evaluations([Evaluation(p.proposal_id, 0, status, 2.0, 1.0, 100, 4, 0.01)])
    q = None
    for _ in range(3):
        t += 10 * MS
        d.observe({"load": 400.0}, base, "ref", t)
        q = d.next_proposal(base, "ref", {"load": 400.0}, t)
        if q is not None:
            break
    if retried:
        assert q is not None and q.source == "context" and q.arms[0].preset == "busy", q
    else:
        assert q is None or q.source != "context", q
