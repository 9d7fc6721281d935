"""Tier 1 executor: every transition of the table, the kill switch from every state, the rules
the related implementation got wrong (safe mode really blocks, min interval really enforced,
wrong-generation / settle-time telemetry never used), rejections naming rule+value+limit,
replay equality and state rebuild."""
from __future__ import annotations

import msgspec
import pytest

from daemon.tier1 import events as ev
from daemon.tier1.config import load_guardrails
from daemon.tier1.executor import Executor, rebuild
from daemon.tier1.model import Arm, Command, CycleInput, Proposal, SlotTelemetry
from daemon.tier1.rollout import TRANSITIONS, State
from daemon.tier1.sim import TelemetrySim, stats
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

MS = 1_000_000
S = State

DECL = Declaration(
    knobs=(KnobDecl("a", 0.0, 1.0, 0.5), KnobDecl("b", 0.0, 1.0, 0.5), KnobDecl("g", 0.0, 10.0, 5.0, is_global=True),
           KnobDecl("n", 1, 8, 4, integer=True), KnobDecl("h", 0.0, 1.0, 0.5)),
    fields=(FieldDecl("lat", "us"), FieldDecl("q")),
    variants=("ref", "fast", "draft", "ghost"))

CFG = """
target: t
limits: {max_delta: 0.2, rate_limit_hz: 10, min_interval_s: 0.1}
knobs:
  a: {min_interval_s: 1.0}
  b: {rate_limit_hz: 2, min_interval_s: 0}
  c_unused_placeholder_removed: {}
  g: {}
  n: {delta_mode: absolute, max_delta: 1}
objective: {terms: [{field: lat, stat: mean}]}
slos:
  - {name: p99, field: lat, stat: p99, max: 4000, min_samples: 10}
  - {name: dry, field: q, stat: mean, min: 0.5, min_samples: 10, enforce: false}
rollout:
  canary_steps: [0.1, 0.5, 1.0]
  min_samples: 20
  min_blocks: 4
  block_s: 0.1
  step_deadline_s: 3
  bake_s: 0.3
  shadow_s: 0.2
  cooldown_after_rollback_s: 1
  probe_window_s: 0.2
  quarantine_radius: 0.05
  max_consecutive_regressions: 5
catalog:
  fields: {latency: lat, quality: q, cost: q}
  variants:
    - {id: v-ref, variant: ref, state: Promoted}
    - {id: v-fast, variant: fast, state: Approved, max_p99: 3000}
    - {id: v-draft, variant: draft, state: Draft}
    - {id: far-a, state: Approved, knobs: {a: 0.9}}
safe_mode: {exit_after_s: 2}
""".replace("  c_unused_placeholder_removed: {}\n", "")


def G(extra_rollout: str = ""):
    text = CFG if not extra_rollout else CFG.replace("rollout:\n", "rollout:\n" + extra_rollout)
    return load_guardrails(text)


class Rig:
    """An executor plus a simulated data plane. `lat` maps slot knob/variant to latency."""

    def __init__(self, g=None, *, regress: float = 0.0, breach: bool = False, history=(), seed: int = 0):
        self.x = Executor(g or G(), DECL, run_id="test", history=history)
        self.t = 0
        self.regress = regress
        self.breach = breach
        self.sim = TelemetrySim(lambda *a: self.truth(*a), seed=seed, ar_sd=0.01, white_sd=0.05)
        self.log: list = []
        self.outs: list = []
        self.keep(self.x.start(self.t))

    def truth(self, sl, i, t):
        cand = sl.knobs != self.x.state.baseline or sl.variant != self.x.state.baseline_variant
        lat = 1000.0 * (1 + (self.regress if cand else 0.0))
        if cand and self.breach:
            lat = 5000.0
        if not cand and getattr(self, "base_breach", False):
            lat = 5000.0
        return {"lat": lat, "q": 0.9}

    def keep(self, out):
        self.log += out.events
        self.outs.append(out)
        return out

    def step(self, **kw):
        self.t += 10 * MS
        inp = self.sim.cycle(self.t, self.x.snapshot, **kw)
        return self.keep(self.x.step(self.t, inp))

    def idle_step(self, **kw):
        """A cycle with no telemetry at all."""
        self.t += 10 * MS
        snap = self.x.snapshot
        return self.keep(self.x.step(self.t, CycleInput(self.t, snap.generation, (), snap.generation, True)))

    def until(self, state: State, limit_s: float = 20.0, **kw):
        end = self.t + int(limit_s * 1e9)
        while self.x.mstate is not state:
            assert self.t < end, f"never reached {state.value}; at {self.x.mstate.value}"
            self.step(**kw)

    def propose(self, kind="rollout", *arms, pid=None, seed=0):
        self._n = getattr(self, "_n", 0) + 1
        v = self.x.propose(self.t, Proposal(pid or f"p{self._n}", kind, tuple(arms), source="test", seed=seed))
        self.log += v.events
        return v

    def cmd(self, name, reason=""):
        return self.keep(self.x.command(self.t, Command(name, reason=reason)))

    def wait(self, s: float):
        end = self.t + int(s * 1e9)
        while self.t < end:
            self.step()

    def baseline_only(self) -> bool:
        s = self.x.snapshot
        b = self.x.state.baseline
        return len(s.slots) == 1 and s.slots[0].knobs == b and s.global_knobs == b and s.slots[0].weight == 1.0

    def of(self, cls):
        return [e for e in self.log if isinstance(e, cls)]


A = lambda **k: Arm(knobs=k)


# ------------------------------------------------------------------------ reaching each state

def reach(state: State, **rig) -> Rig:
    r = Rig(**rig)
    if state is S.IDLE:
        pass
    elif state is S.PROBING:
        assert r.propose("probe", A(a=0.55), A(a=0.45)).accepted
    elif state is S.SHADOW:
        assert r.propose("rollout", Arm(variant="fast")).accepted
    elif state is S.CANARY:
        assert r.propose("rollout", A(a=0.6)).accepted
    elif state is S.SWITCHBACK:
        assert r.propose("rollout", A(g=6.0)).accepted
    elif state is S.BAKING:
        assert r.propose("rollout", A(a=0.6)).accepted
        r.until(S.BAKING)
    elif state is S.PROMOTED:
        assert r.propose("rollout", A(a=0.6)).accepted
        r.until(S.PROMOTED)
    elif state is S.ABORTING:
        assert r.propose("rollout", A(a=0.6)).accepted
        r.cmd("rollback")
    elif state is S.COOLDOWN:
        assert r.propose("rollout", A(a=0.6)).accepted
        r.cmd("rollback")
        r.step()
    elif state is S.SAFE_MODE:
        r.cmd("enter_safe_mode", "test")
    elif state is S.FROZEN:
        r.cmd("freeze")
    assert r.x.mstate is state, (state, r.x.mstate)
    return r


def fire(r: Rig, state: State, trigger: str) -> None:
    """Produce the outside stimulus that makes `trigger` happen from `state`."""
    if trigger == "accept_probe":
        assert r.propose("probe", A(b=0.6), A(b=0.4)).accepted
    elif trigger == "accept_rollout_shadow":
        assert r.propose("rollout", Arm(variant="fast")).accepted
    elif trigger == "accept_rollout":
        assert r.propose("rollout", A(b=0.6)).accepted
    elif trigger == "accept_switchback":
        assert r.propose("rollout", A(g=6.0)).accepted
    elif trigger in ("probe_done", "shadow_passed", "step_passed", "last_step_passed", "switchback_passed",
                     "bake_done", "cooldown_done"):
        n = len(r.of(ev.Transition))
        while not any(e.trigger == trigger for e in r.of(ev.Transition)[n:]):
            r.step()
    elif trigger == "ack":
        r.step()
    elif trigger == "ack_timeout":
        n = len(r.of(ev.Transition))
        while not any(e.trigger == trigger for e in r.of(ev.Transition)[n:]):
            r.step(ack=False)
    elif trigger == "relief":
        r.base_breach = True                         # the load turns: now the baseline breaches
        r.until(S.BAKING)
    elif trigger == "accept_relief":
        if state is S.IDLE:
            r.keep(r.x.reload(r.t, G("  relief: true\n"), 2))
        r.base_breach = True                         # the baseline itself breaches p99 <= 4000
        for _ in range(5):                           # idle cycles: a full slot-0 SLO window
            r.step(ack=state is not S.ABORTING)      # (aborting: before the data plane acks the abort)
        assert r.propose("rollout", Arm({"a": 0.9}, preset="far-a")).accepted
    elif trigger in ("reset_safe_mode", "rollback", "snapback", "thaw", "cancel"):
        r.cmd(trigger)
    elif trigger == "thaw_to_safe_mode":
        r.cmd("thaw")
    elif trigger == "safe_mode_timer":
        r.wait(2.1)
    elif trigger == "kill":
        r.cmd("freeze")
    elif trigger == "enter_safe_mode":
        r.cmd("enter_safe_mode", "test")
    elif trigger in ("slo_breach", "regressions_limit"):
        if trigger == "regressions_limit":
            r.x.state.consecutive_regressions = 4     # as if four earlier rollouts had failed
        r.breach = True
        for _ in range(20):                          # ack, settle time, then a full SLO window
            if r.x.mstate is not state:
                break
            r.step()
    elif trigger == "judge_abort":
        r.regress = 0.3
        r.until(S.ABORTING)
    elif trigger == "deadline":
        while r.x.mstate is state:
            r.idle_step()
    elif trigger == "lease_lost":
        r.step(lease_ok=False)
    elif trigger == "config_reload":
        r.keep(r.x.reload(r.t, G(), 2))
    else:
        raise AssertionError(f"no stimulus for {trigger}")


SETUP = {  # states that need more than `reach` to make a trigger possible
    (S.CANARY, "last_step_passed"): lambda r: r.until(S.CANARY) or _to_last_step(r),
    (S.FROZEN, "thaw_to_safe_mode"): lambda r: r.cmd("enter_safe_mode", "while frozen"),
    (S.CANARY, "relief"): lambda r: _preset_canary(r),
    (S.COOLDOWN, "accept_relief"): lambda r: _relief_cooldown(r),
    (S.ABORTING, "accept_relief"): lambda r: _relief_cooldown(r, ack=False),
}


def _relief_cooldown(r: Rig, ack: bool = True):
    """A fresh executor with rollout.relief, cooling down after an operator rollback (or, with
    ack=False, still aborting: the data plane has not acked the rollback yet)."""
    r.x = Executor(G("  relief: true\n"), DECL, run_id="test-relief-cd")
    r.keep(r.x.start(r.t))
    assert r.propose("rollout", Arm({"b": 0.6})).accepted
    r.step()
    r.cmd("rollback")
    r.step(ack=ack)


def _preset_canary(r: Rig):
    """A fresh executor with rollout.relief, canarying an approved preset beside a healthy baseline."""
    r.x = Executor(G("  relief: true\n"), DECL, run_id="test-relief")
    r.keep(r.x.start(r.t))
    assert r.propose("rollout", Arm({"a": 0.9}, preset="far-a")).accepted
    r.until(S.CANARY)


def _to_last_step(r: Rig):
    while r.x.exp.step < 1:
        r.step()


@pytest.mark.parametrize("state,trigger", list(TRANSITIONS), ids=[f"{s.value}-{t}" for s, t in TRANSITIONS])
def test_every_transition_of_the_table(state, trigger):
    r = reach(state)
    if (state, trigger) in SETUP:
        SETUP[(state, trigger)](r)
        assert r.x.mstate is state
    n = len(r.of(ev.Transition))
    fire(r, state, trigger)
    got = [e for e in r.of(ev.Transition)[n:] if e.trigger == trigger]
    assert got, f"{trigger} not recorded from {state.value}"
    assert got[0].from_state == state.value and got[0].to_state == TRANSITIONS[(state, trigger)].value
    assert got[0].condition or got[0].measured is not None or trigger in ("accept_switchback",)


@pytest.mark.parametrize("state", list(State))
def test_kill_switch_from_every_state_is_baseline_only_and_persists(state):
    r = reach(state)
    r.cmd("freeze")
    assert r.x.mstate is S.FROZEN and r.baseline_only()
    assert not r.propose("rollout", A(b=0.6)).accepted
    assert r.of(ev.ValidationVerdict)[-1].rule == "kill_switch"
    # persists: a fresh executor rebuilt from the audit events starts frozen, baseline only
    st = rebuild(r.log, DECL)
    assert st.kill_switch
    r2 = Executor(G(), DECL, run_id="test2", history=r.log)
    out = r2.start(r.t + 1)
    assert r2.mstate is S.FROZEN
    assert out.snapshot.generation > r.x.state.generation and len(out.snapshot.slots) == 1
    assert not r2.propose(r.t + 2, Proposal("late", "rollout", (A(b=0.6),))).accepted


# ------------------------------------------------------------------------ rollouts

def test_healthy_rollout_promotes_and_baseline_changes_only_at_promotion():
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    seen_before_promotion = set()
    while r.x.mstate is not S.IDLE:
        r.step()
        if not r.of(ev.Promotion):
            seen_before_promotion.add(r.x.state.baseline)
    assert seen_before_promotion == {(0.5, 0.5, 5.0, 4, 0.5)}
    assert r.x.state.baseline == (0.5 + 0.1, 0.5, 5.0, 4, 0.5) or r.x.state.baseline[0] == 0.6
    trig = [e.trigger for e in r.of(ev.Transition)]
    assert trig == ["accept_rollout", "step_passed", "last_step_passed", "bake_done", "ack"]
    verdicts = r.of(ev.JudgeVerdict)
    assert "abort" not in [v.decision for v in verdicts]
    promotes = [v for v in verdicts if v.decision == "promote"]
    assert [v.step for v in promotes] == [0, 1]
    m = promotes[0].metrics[0]
    assert m.ucb < m.effect_margin and m.n_blocks >= 4 and m.alpha_look < 0.01
    assert r.baseline_only() and r.x.snapshot.slots[0].knobs[0] == 0.6
    # the promotion cites the last promote verdict; the evaluation carries that step's paired blocks
    pr = r.of(ev.Promotion)[-1]
    assert pr.evidence_ref.endswith(f"verdict-seq-{promotes[-1].seq}")
    (e,) = [x for x in r.of(ev.EvaluationEvent) if x.proposal_id == pr.proposal_id]
    assert e.status == "ok" and e.n_blocks == promotes[-1].metrics[0].n_blocks
    assert e.objective == pytest.approx(1000.0, rel=0.05) and e.baseline_objective == pytest.approx(1000.0, rel=0.05)
    assert e.stderr is not None and 0 < e.stderr < 50


def test_regression_aborts_quarantines_and_is_not_reproposed():
    r = Rig(regress=0.3)
    assert r.propose("rollout", A(a=0.7)).accepted
    r.until(S.ABORTING)
    assert r.baseline_only()
    rb = r.of(ev.Rollback)[-1]
    assert rb.rule == "judge:objective" and rb.measured > 0 and rb.threshold == 0.0 and rb.counts_as_regression
    assert r.x.state.baseline == DECL.initial_values()
    r.wait(1.2)
    assert r.x.mstate is S.IDLE
    v = r.propose("rollout", A(a=0.7))
    assert not v.accepted and v.rule == "quarantine" and v.limit == 0.05
    v = r.propose("rollout", A(a=0.69))
    assert not v.accepted and v.rule == "quarantine"
    r.wait(1.0)   # a's min interval (1 s) since the failed rollout
    assert r.propose("rollout", A(a=0.4)).accepted


def test_slo_breach_rolls_back_in_the_same_cycle():
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    r.breach = True
    while True:
        out = r.step()
        if any(isinstance(e, ev.SloCheck) for e in out.events):
            break       # the first usable candidate window (after ack + settle) breaks p99 <= 4000
    assert r.x.mstate is S.ABORTING and out.snapshot is not None and len(out.snapshot.slots) == 1
    assert out.snapshot.slots[0].knobs == DECL.initial_values()
    rb = [e for e in out.events if isinstance(e, ev.Rollback)][0]
    assert rb.rule == "slo:p99" and rb.threshold == 4000 and rb.measured > 4000
    assert [e.status for e in out.evaluations] == ["slo_breach"]
    assert any(isinstance(e, ev.Quarantine) for e in out.events)


def test_dry_run_slo_never_decides_and_never_masks():
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": 1000.0, "q": 0.1}     # q below the dry-run floor everywhere
    assert r.propose("rollout", A(a=0.6)).accepted
    r.until(S.IDLE)
    assert r.of(ev.Promotion), "a dry-run breach must not stop a rollout"
    assert any(c.outcome == "dry_run_breach" and not c.enforce for c in r.of(ev.SloCheck))
    # enforcing breach with a passing dry-run metric still rolls back
    r2 = Rig()
    r2.truth = lambda sl, i, t: {"lat": 5000.0 if sl.knobs[1] != 0.5 else 1000.0, "q": 0.9}
    assert r2.propose("rollout", A(b=0.6)).accepted
    r2.until(S.ABORTING, limit_s=0.1)
    assert r2.x.mstate is S.ABORTING and r2.baseline_only()


def test_constraint_first_allows_moves_toward_feasibility_only():
    # baseline breaks p99 <= 4000 (4800: margin -0.2); candidate 4400 (margin -0.1) moves toward it
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": (4400.0 if sl.knobs[0] != 0.5 else 4800.0) / 2.0, "q": 0.9}
    assert r.propose("rollout", A(a=0.6)).accepted
    for _ in range(30):
        r.step()
    assert r.x.mstate is S.CANARY
    assert any(c.outcome == "toward_feasibility" for c in r.of(ev.SloCheck))
    # a candidate worse than the infeasible baseline is rolled back
    r2 = Rig()
    r2.truth = lambda sl, i, t: {"lat": (4700.0 if sl.knobs[0] != 0.5 else 4500.0) / 2.0, "q": 0.9}
    assert r2.propose("rollout", A(a=0.6)).accepted
    r2.until(S.ABORTING, limit_s=1)
    # below -0.5 margin: rolled back even if the baseline is worse still
    r3 = Rig()
    r3.truth = lambda sl, i, t: {"lat": (6100.0 if sl.knobs[0] != 0.5 else 7000.0) / 2.0, "q": 0.9}
    assert r3.propose("rollout", A(a=0.6)).accepted
    r3.until(S.ABORTING, limit_s=1)
    assert "margin below -0.5" in r3.of(ev.Rollback)[-1].rollback_reason


def test_shadow_for_variant_changes_then_canary():
    r = Rig()
    v = r.propose("rollout", Arm(variant="fast"))
    assert v.accepted and v.snapshot.slots[1].weight == 0.01 and v.snapshot.slots[1].variant == 1
    r.until(S.IDLE)
    assert [e.trigger for e in r.of(ev.Transition)][:2] == ["accept_rollout_shadow", "shadow_passed"]
    assert r.x.state.baseline_variant == 1
    assert r.of(ev.Promotion)[-1].variant_id == "v-fast"


def test_catalog_constraint_applies_to_its_variant():
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": 3500.0 / 2.0, "q": 0.9}   # p99 3500: fine for SLO 4000, not for max_p99 3000
    assert r.propose("rollout", Arm(variant="fast")).accepted
    r.until(S.ABORTING, limit_s=1)
    assert r.of(ev.Rollback)[-1].rule == "slo:catalog:v-fast:max_p99"
    chk = [c for c in r.of(ev.SloCheck) if c.slo == "catalog:v-fast:max_p99"]
    assert chk and all(c.n >= 100 for c in chk)   # catalog.p99_min_samples, not probe_min_samples (20)
    r.wait(1.1)
    v = r.propose("rollout", Arm(variant="fast"))
    assert not v.accepted and v.rule == "quarantine" and v.value == "fast"


def test_switchback_for_global_knob_pairs_segments_and_promotes():
    r = Rig()
    v = r.propose("rollout", A(g=6.0))
    assert v.accepted and v.snapshot.global_knobs[2] == 6.0 and v.snapshot.slots[0].knobs[2] == 5.0
    assert v.snapshot.slots[0].weight == 0.0 and v.snapshot.slots[1].weight == 1.0
    gens = set()
    while r.x.mstate is S.SWITCHBACK:
        r.step()
        gens.add(r.x.snapshot.generation)
    assert len(gens) >= 8, "each switchback segment is a new generation"
    assert r.x.mstate is S.BAKING
    d = [e for e in r.of(ev.Digest) if e.phase == "switchback"]
    assert len(d) >= 4 and all(e.candidate_n > 0 and e.baseline_n > 0 for e in d)
    r.until(S.IDLE)
    assert r.x.state.baseline[2] == 6.0


def test_switchback_regression_aborts():
    r = Rig(regress=0.3)
    assert r.propose("rollout", A(g=6.0)).accepted
    r.until(S.ABORTING)
    assert r.of(ev.Rollback)[-1].rule == "judge:objective"


# ------------------------------------------------------------------------ probes

def test_probe_reports_each_arm_then_returns_to_baseline():
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": 1000.0 + 1000.0 * (sl.knobs[1] - 0.5), "q": 0.9}
    v = r.propose("probe", A(b=0.6), A(b=0.4))
    assert v.accepted and [s.weight for s in v.snapshot.slots] == pytest.approx([0.8, 0.1, 0.1])
    evals = []
    while r.x.mstate is S.PROBING:
        evals += r.step().evaluations
    assert r.baseline_only()
    assert [e.arm for e in evals] == [0, 1] and all(e.status == "ok" for e in evals)
    assert evals[0].objective > evals[1].objective            # b=0.6 is slower than b=0.4
    assert evals[0].baseline_objective == pytest.approx(1000.0, rel=0.05)


def test_probe_on_global_knob_uses_abba_segments():
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": 1000.0 + 100.0 * (sl.knobs[2] - 5.0), "q": 0.9}
    v = r.propose("probe", A(g=6.0), A(g=4.0))
    assert v.accepted and v.snapshot.global_knobs[2] == 6.0
    segs = [v.snapshot.global_knobs[2]]
    evals = []
    while r.x.mstate is S.PROBING:
        out = r.step()
        evals += out.evaluations
        if out.snapshot is not None and r.x.mstate is S.PROBING:
            segs.append(out.snapshot.global_knobs[2])
    assert segs == [6.0, 4.0, 4.0, 6.0]
    assert evals[0].objective == pytest.approx(1100, rel=0.05) and evals[1].objective == pytest.approx(900, rel=0.05)


def test_probe_without_data_reports_insufficient_data():
    r = Rig()
    assert r.propose("probe", A(b=0.6)).accepted
    evals = []
    while r.x.mstate is S.PROBING:
        evals += r.idle_step().evaluations
    assert [e.status for e in evals] == ["insufficient_data"]


# ------------------------------------------------------------------------ the rules

def test_safe_mode_really_blocks_proposals_after_five_regressions():
    r = Rig()
    for k, b in enumerate((0.56, 0.44, 0.62, 0.38, 0.68)):   # apart by more than the quarantine radius
        r.breach = True
        assert r.propose("probe", A(b=b), pid=f"bad{k}").accepted, r.of(ev.ValidationVerdict)[-1]
        while r.x.mstate is S.PROBING:
            r.step()
        r.breach = False
        if k < 4:
            assert r.x.mstate is S.ABORTING and r.x.state.consecutive_regressions == k + 1
            r.until(S.IDLE)
            r.wait(0.6)       # b's rate limit: 2/s
    assert r.x.mstate is S.SAFE_MODE and r.x.state.safe_mode
    entered = r.of(ev.SafeModeEntered)[-1]
    assert "5 consecutive regressions" in entered.reason and entered.exit_condition
    r.wait(0.5)
    v = r.propose("probe", A(a=0.55))
    assert not v.accepted and v.rule == "safe_mode" and r.baseline_only()
    r.cmd("reset_safe_mode")
    assert r.x.mstate is S.IDLE and r.of(ev.SafeModeExited)[-1].exit_reason.startswith("manual")
    v = r.propose("probe", A(a=0.55))     # the last rollback's cooldown still runs
    assert not v.accepted and v.rule == "cooldown"
    r.wait(v.value + 0.01)
    assert r.propose("probe", A(a=0.55)).accepted


def test_min_interval_is_really_enforced():
    r = Rig()
    assert r.propose("probe", A(a=0.55)).accepted
    r.until(S.IDLE)
    r.wait(0.2)
    v = r.propose("probe", A(a=0.45))
    assert not v.accepted and v.rule == "min_interval" and v.limit == 1.0 and 0.2 <= v.value < 1.0
    r.wait(1.0 - v.value + 0.01)
    assert r.propose("probe", A(a=0.45)).accepted


def test_rate_limit_per_knob():
    r = Rig()
    for k in range(2):
        assert r.propose("probe", A(b=0.55)).accepted
        r.until(S.IDLE)
    v = r.propose("probe", A(b=0.55))
    assert not v.accepted and v.rule == "rate_limit" and v.value == 3 and v.limit == 2


def _rollout_then_rollback(r: Rig, **knobs):
    v = r.propose("rollout", A(**knobs))
    if v.accepted:
        r.cmd("rollback")
        r.wait(1.05)
    return v


def _promote_knobs(r: Rig, **knobs):
    v = r.propose("rollout", A(**knobs))
    assert v.accepted, v.message
    r.until(S.IDLE)
    names = [k.name for k in DECL.knobs]
    assert all(r.x.state.baseline[names.index(k)] == val for k, val in knobs.items()), r.of(ev.Rollback)[-1:]
    r.wait(1.05)   # a's min_interval_s
    return v


def test_anti_thrashing_and_hysteresis_count_promoted_changes():
    r = Rig()
    _promote_knobs(r, a=0.55)
    v = r.propose("rollout", A(a=0.54))
    assert not v.accepted and v.rule == "hysteresis" and v.value == pytest.approx(0.01) and v.limit == pytest.approx(0.02)
    for val in (0.45, 0.55, 0.45):   # three flips of the baseline allowed
        _promote_knobs(r, a=val)
    assert r.of(ev.Promotion)[-1].moves == {"a": -1}
    v = r.propose("rollout", A(a=0.55))
    assert not v.accepted and v.rule == "anti_thrashing" and v.value == 4 and v.limit == 3
    v = r.propose("rollout", A(a=0.55))
    assert not v.accepted and v.rule == "anti_thrashing" and 29 < v.value <= 30 and v.limit == 30
    # the cooldown holds rollouts; a symmetric probe leaves the baseline alone and is not held
    v = r.propose("probe", A(a=0.5), A(a=0.4))
    assert v.accepted, v.message


def _big_budget():
    g = G()
    return msgspec.structs.replace(g, budget=msgspec.structs.replace(g.budget, max_change=5.0))


def test_rolled_back_rollouts_and_probes_are_not_flips():
    r = Rig(_big_budget())
    for val in (0.6, 0.4, 0.6, 0.4, 0.6):   # never promoted: the baseline never changed direction
        assert _rollout_then_rollback(r, a=val).accepted, r.of(ev.ValidationVerdict)[-1]
    assert _rollout_then_rollback(r, a=0.49).accepted, r.of(ev.ValidationVerdict)[-1]   # no reversal of anything
    _promote_knobs(r, a=0.6)
    for _ in range(3):   # symmetric probes (+d/-d), as Tier 2 sends them: never a reversal nor a flip
        v = r.propose("probe", A(a=0.61), A(a=0.59))
        assert v.accepted, v.message
        r.until(S.IDLE)
        r.wait(1.05)
    assert _promote_knobs(r, a=0.7).accepted   # same direction as the last promotion: no dead band


def test_budget_per_knob_per_minute():
    r = Rig()
    assert _rollout_then_rollback(r, a=0.7).accepted      # cost 0.2
    assert _rollout_then_rollback(r, a=0.7).accepted      # 0.4 (same direction: no flip)
    v = r.propose("rollout", A(a=0.62))                     # 0.52 > 0.5
    assert not v.accepted and v.rule == "budget" and v.value == pytest.approx(0.52) and v.limit == 0.5


@pytest.mark.parametrize("arms,kind,rule,value,limit", [
    ((A(h=0.6),), "rollout", "allowlist", "h", "a,b,g,n"),
    ((A(zz=0.6),), "rollout", "allowlist", "zz", "a,b,g,n"),
    ((A(a=float("nan")),), "rollout", "not_finite", "nan", None),
    ((A(n=4.5),), "rollout", "integer", 4.5, None),
    ((A(a=1.2),), "rollout", "bounds", 1.2, "[0.0, 1.0]"),
    ((A(a=0.8),), "rollout", "max_delta", 0.3, 0.2),
    ((A(n=6),), "rollout", "max_delta", 2.0, 1),
    ((Arm(variant="nope"),), "rollout", "variant_unknown", "nope", "ref,fast,draft,ghost"),
    ((Arm(variant="draft"),), "rollout", "catalog", "Draft", "Approved|Promoted"),
    ((Arm(variant="ghost"),), "rollout", "catalog", "ghost", "Approved|Promoted"),
    ((A(a=0.6), A(a=0.4)), "rollout", "arm_count", 2, 1),
    ((A(a=0.6),) * 4, "probe", "arm_count", 4, 3),
    ((A(a=0.5),), "rollout", "no_change", 0.0, None),
    ((A(a=0.6), A(h=0.3)), "probe", "allowlist", "h", "a,b,g,n"),   # all-or-nothing
])
def test_rejections_name_rule_value_and_limit(arms, kind, rule, value, limit):
    r = Rig()
    gen = r.x.state.generation
    v = r.propose(kind, *arms)
    assert not v.accepted and v.rule == rule
    assert v.value == (pytest.approx(value) if isinstance(value, float) else value) and v.limit == limit
    assert rule in v.message and "nothing was applied" in v.message
    assert v.snapshot is None and r.x.state.generation == gen and r.x.mstate is S.IDLE
    vv = r.of(ev.ValidationVerdict)[-1]
    assert (vv.accepted, vv.rule, vv.limit) == (False, rule, limit)


def test_one_experiment_per_scope_and_unique_ids():
    r = Rig()
    assert r.propose("probe", A(a=0.55), pid="x1").accepted
    v = r.propose("probe", A(b=0.55), pid="x2")
    assert not v.accepted and v.rule == "one_experiment_per_scope" and v.value == "x1"
    r.until(S.IDLE)
    v = r.propose("probe", A(b=0.55), pid="x1")
    assert not v.accepted and v.rule == "duplicate_proposal_id"


def test_wrong_generation_and_settle_time_telemetry_never_used():
    bad = {"lat": stats(9000.0, 50)}
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    gen = r.x.snapshot.generation
    r.step()   # ack seen at this cycle's time
    acked_at = r.t
    # (1) wrong generation in the slot summary, (2) CycleInput claiming another generation,
    # (3) the right generation but the window starts inside the settle time after the ack
    inputs = [
        CycleInput(r.t + 10 * MS, gen, (SlotTelemetry(1, gen - 1, 50, 10 * MS, bad),), gen),
        CycleInput(r.t + 20 * MS, gen + 7, (SlotTelemetry(1, gen, 50, 10 * MS, bad),), gen),
        CycleInput(acked_at + 5 * MS, gen, (SlotTelemetry(1, gen, 50, 10 * MS, bad),), gen),
    ]
    for inp in inputs:
        out = r.x.step(inp.now_ns, inp)
        assert out.snapshot is None and r.x.mstate is S.CANARY
        assert not any(isinstance(e, (ev.SloCheck, ev.Rollback)) for e in out.events)
    r.t += 30 * MS
    out = r.x.step(r.t, CycleInput(r.t, gen, (SlotTelemetry(1, gen, 50, 10 * MS, bad),), gen))
    assert r.x.mstate is S.ABORTING and out.snapshot is not None and len(out.snapshot.slots) == 1


def test_no_ack_means_no_data_and_deadline_abort():
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    r.until(S.ABORTING, ack=False)
    assert not r.of(ev.JudgeVerdict)
    rb = r.of(ev.Rollback)[-1]
    assert rb.rule == "deadline" and not rb.counts_as_regression


def test_lease_lapse_stops_the_experiment():
    r = Rig()
    assert r.propose("probe", A(a=0.55)).accepted
    out = r.step(lease_ok=False)
    assert r.x.mstate is S.ABORTING and len(out.snapshot.slots) == 1
    assert [e.status for e in out.evaluations] == ["aborted"]


def test_snapshot_generations_strictly_increase_and_slot0_is_baseline():
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    r.until(S.IDLE)
    applies = r.of(ev.Apply)
    gens = [a.new_config_version for a in applies]
    assert gens == sorted(set(gens)) and gens[0] == 1
    promo = r.of(ev.Promotion)[0]
    for a in applies:
        base = promo.new_baseline if a.seq > promo.seq else promo.old_baseline
        assert a.snapshot.slots[0].knobs == base
        assert sum(s.weight for s in a.snapshot.slots) == pytest.approx(1.0)


# ------------------------------------------------------------------------ replay / rebuild

def _scenario(seed: int):
    r = Rig(seed=seed)
    r.propose("probe", A(b=0.55), A(b=0.45))
    r.until(S.IDLE)
    r.propose("rollout", A(a=0.6))
    r.wait(0.7)
    r.cmd("freeze")
    r.cmd("thaw")
    r.wait(1.1)
    r.propose("rollout", A(g=5.5))
    r.until(S.IDLE)
    r.regress = 0.3
    r.propose("rollout", A(b=0.4))
    r.until(S.COOLDOWN)
    return r


def test_replay_reproduces_every_event_byte_for_byte():
    a, b = _scenario(7), _scenario(7)
    assert len(a.log) > 100
    assert ev.encode(a.log) == ev.encode(b.log)
    assert ev.decode(ev.encode(a.log)) == a.log


def test_state_is_a_fold_over_events():
    r = _scenario(3)
    assert rebuild(r.log, DECL) == r.x.state
    assert rebuild(ev.decode(ev.encode(r.log)), DECL) == r.x.state
    st = r.x.state
    assert st.baseline[2] == 5.5 and st.quarantine and st.generation == r.of(ev.Apply)[-1].new_config_version
    # a restarted executor continues the generation sequence and keeps the quarantine
    r2 = Executor(G(), DECL, run_id="again", history=r.log)
    out = r2.start(r.t + 1)
    assert out.snapshot.generation == st.generation + 1 and out.snapshot.slots[0].knobs == st.baseline
    assert r2.mstate is S.COOLDOWN


def test_config_reload_stops_the_live_experiment_and_is_audited():
    r = Rig()
    assert r.propose("rollout", A(a=0.6)).accepted
    out = r.keep(r.x.reload(r.t, G(), 2))
    assert r.x.mstate is S.ABORTING and len(out.snapshot.slots) == 1
    cr = [e for e in out.events if isinstance(e, ev.ConfigReload)][-1]
    assert cr.old_generation == 1 and cr.config_generation == 2


def test_executor_refuses_guardrails_that_contradict_the_declaration():
    g = load_guardrails(CFG.replace("  g: {}\n", "  g: {max: 20}\n"))
    with pytest.raises(ValueError, match="knobs.g.max: 20"):
        Executor(g, DECL)


# ------------------------------------------------------------------------ SLA first (issue 6)

def _quality_objective():
    """Objective = quality (maximise), so meeting the latency SLO and a better objective differ."""
    return load_guardrails(CFG.replace("objective: {terms: [{field: lat, stat: mean}]}",
                                       "objective: {direction: maximize, terms: [{field: q, stat: mean}]}"))


def test_feasible_candidate_beats_an_infeasible_baseline_despite_a_worse_objective():
    # baseline p99 = 5000 > 4000 (breach), quality 0.9; candidate p99 = 3000 (meets), quality 0.8
    r = Rig(_quality_objective())
    r.truth = lambda sl, i, t: ({"lat": 1500.0, "q": 0.8} if sl.knobs[0] != 0.5 else {"lat": 2500.0, "q": 0.9})
    assert r.propose("rollout", A(a=0.6)).accepted
    r.until(S.IDLE)
    assert not r.of(ev.Rollback), r.of(ev.Rollback)
    pr = r.of(ev.Promotion)[-1]
    assert pr.reason.startswith("feasibility_first") and r.x.state.baseline[0] == 0.6
    judged = [v for v in r.of(ev.JudgeVerdict) if v.decision == "promote"]
    assert [v.rule for v in judged] == ["feasibility_first"] * 2      # both judged canary steps
    assert all(v.look == 1 and v.metrics[0].decision == "abort" for v in judged)   # first look; objective worse
    f = judged[0].feasibility[0]
    assert f.slo == "p99" and f.cand_feasible and f.base_infeasible and f.cand_ucb < 0 < f.base_lcb
    passed = [t for t in r.of(ev.Transition) if t.trigger in ("step_passed", "last_step_passed")]
    assert all("SLA first" in t.condition for t in passed)


def test_objective_rule_unchanged_when_both_sides_are_feasible():
    r = Rig(_quality_objective())
    r.truth = lambda sl, i, t: ({"lat": 1500.0, "q": 0.8} if sl.knobs[0] != 0.5 else {"lat": 1600.0, "q": 0.9})
    assert r.propose("rollout", A(a=0.6)).accepted
    r.until(S.ABORTING)
    assert r.of(ev.Rollback)[-1].rule == "judge:objective"
    assert all(v.rule == "objective" for v in r.of(ev.JudgeVerdict))


def test_one_breaching_arm_does_not_abort_a_multi_arm_probe():
    r = Rig()
    r.truth = lambda sl, i, t: {"lat": 2500.0 if sl.knobs[1] > 0.55 else 1000.0, "q": 0.9}   # b=0.6 breaks p99
    v = r.propose("probe", A(b=0.6), A(b=0.45), A(b=0.4))
    assert v.accepted
    evals, snaps, batches = [], [], 0
    while r.x.mstate is S.PROBING:
        out = r.step()
        evals += out.evaluations
        batches += bool(out.evaluations)
        if out.snapshot is not None:
            snaps.append(out.snapshot)
    assert r.baseline_only() and r.x.mstate is S.IDLE
    assert [(e.arm, e.status) for e in evals] == [(0, "slo_breach"), (1, "ok"), (2, "ok")]
    assert batches == 1   # Tier 2 gets the probe's evaluations together, when the window ends
    dropped = snaps[0]   # arm 0's share went back to slot 0, the others kept theirs
    assert [s.weight for s in dropped.slots] == pytest.approx([0.8, 0.0, 0.1, 0.1])
    assert dropped.slots[0].knobs == r.x.state.baseline
    assert evals[1].n_records >= 20 and evals[2].objective == pytest.approx(1000.0, rel=0.05)
    q = r.of(ev.Quarantine)
    assert len(q) == 1 and q[0].center[1] == pytest.approx(0.6)
    assert [t.trigger for t in r.of(ev.Transition)] == ["accept_probe", "probe_done"]
    # the probe window was not restarted by the republish
    t0 = [e.t_ns for e in r.log if isinstance(e, ev.Transition) and e.trigger == "accept_probe"][0]
    t1 = [e.t_ns for e in r.log if isinstance(e, ev.Transition) and e.trigger == "probe_done"][0]
    assert (t1 - t0) / 1e9 < 0.2 + 0.1


def test_probe_evaluations_carry_the_paired_stderr():
    r = Rig(load_guardrails(CFG.replace("probe_window_s: 0.2", "probe_window_s: 0.6")))
    r.truth = lambda sl, i, t: {"lat": 1000.0 + 1000.0 * (sl.knobs[1] - 0.5), "q": 0.9}
    assert r.propose("probe", A(b=0.6), A(b=0.4)).accepted
    evals = []
    while r.x.mstate is S.PROBING:
        evals += r.step().evaluations
    assert [e.status for e in evals] == ["ok", "ok"]
    for e, want in zip(evals, (100.0, -100.0)):
        assert e.n_blocks >= 2 and e.stderr is not None and e.stderr > 0 and e.baseline_objective is not None
        # the paired difference's error is small next to the true difference (the noise is shared)
        assert abs((e.objective - e.baseline_objective) - want) < 5 * e.stderr + 20
        assert e.stderr < 50
    ee = r.of(ev.EvaluationEvent)
    assert [x.stderr for x in ee] == [x.stderr for x in evals] and [x.n_blocks for x in ee] == [x.n_blocks for x in evals]


def test_two_breaching_arms_of_three_then_the_last_one_stops_the_probe():
    r = Rig()
    # arms 0 and 2 break p99 <= 4000; dropping the first must not restart the others' SLO windows
    r.truth = lambda sl, i, t: {"lat": 2500.0 if abs(sl.knobs[1] - 0.5) > 0.075 else 1000.0, "q": 0.9}
    assert r.propose("probe", A(b=0.6), A(b=0.45), A(b=0.4)).accepted
    evals = []
    while r.x.mstate is S.PROBING:
        evals += r.step().evaluations
    assert [(e.arm, e.status) for e in evals] == [(0, "slo_breach"), (1, "ok"), (2, "slo_breach")]
    checks = [c for c in r.of(ev.SloCheck) if c.outcome == "breach"]
    assert len(checks) == 2 and checks[0].t_ns == checks[1].t_ns   # both windows closed in the same cycle
    assert len(r.of(ev.Quarantine)) == 2 and r.x.mstate is S.IDLE
