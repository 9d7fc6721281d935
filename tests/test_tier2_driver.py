"""The Tier-2 driver: deterministic proposals inside Tier 1's limits, convergence on a known
problem, and conditions (tuning.context): regime entry proposes the nearest approved preset or
what was promoted there before, jitter does not flap regimes, the variant bandit restarts."""
from __future__ import annotations

import math

import msgspec
import numpy as np

from daemon.tier1.config import load_guardrails
from daemon.tier1.executor import Executor
from daemon.tier1.model import Evaluation
from daemon.tier2.driver import TuningDriver
from daemon.tier2.regimes import CONTEXT_PERSIST, CONTEXT_PERSIST_S
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

DECL = Declaration(
    knobs=(KnobDecl("a", 0.0, 1.0, 0.2), KnobDecl("b", 0.0, 1.0, 0.2), KnobDecl("n", 1, 8, 4, integer=True)),
    fields=(FieldDecl("cost"), FieldDecl("load")), variants=())

CFG = """
target: t
limits: {max_delta: 0.1, rate_limit_hz: 10, min_interval_s: 0}
knobs: {a: {}, b: {}, n: {delta_mode: absolute, max_delta: 1}}
objective: {terms: [{field: cost, stat: mean}]}
budget: {max_change: 5.0, window_s: 60}   # presets jump far; the budget still caps the total
rollout: {canary_steps: [0.1, 1.0], min_samples: 5, min_blocks: 3, block_s: 0.1}
tuning: {seed: 3, knobs: [a, b], rollout_every: 3, context: [load]}
catalog:
  variants:
    - {id: quiet, state: Approved, knobs: {a: 0.8, b: 0.1, n: 2}, context: {load: 100}}
    - {id: busy, state: Approved, knobs: {a: 0.1, b: 0.9, n: 6}, context: {load: 1000}}
    - {id: unapproved, state: Evaluated, knobs: {a: 0.5, b: 0.5}, context: {load: 120}}
"""
OPT = {"quiet": (0.8, 0.1), "busy": (0.1, 0.9)}


def driver(text: str = CFG) -> TuningDriver:
    return TuningDriver(load_guardrails(text), DECL)


def cost(k: dict, load: float) -> float:
    oa, ob = OPT["quiet"] if load < 300 else OPT["busy"]
    return (k["a"] - oa) ** 2 + (k["b"] - ob) ** 2


def run(d: TuningDriver, loads, seed: int = 0, base=None):
    """Drive `d` against a simulated target: probes report paired costs, rollouts are promoted
    when they improve the true cost. Returns the proposals and the final baseline."""
    rng = np.random.default_rng(seed)
    base = dict(base or {"a": 0.2, "b": 0.2, "n": 4.0})
    out, seen = [], []
    run.bases = seen     # the baseline each proposal was made against
    for load in loads:
        p = d.next_proposal(base, "", {"load": load})
        if p is None:
            continue
        out.append(p)
        seen.append(dict(base))
        if p.kind == "probe":
            b = cost(base, load)
            d.on_evaluations([Evaluation(p.proposal_id, i, "ok", cost({**base, **a.knobs}, load) + rng.normal(0, 1e-4),
                                         b, 100, 4, 1e-4) for i, a in enumerate(p.arms)])
        else:
            if cost({**base, **p.arms[0].knobs}, load) < cost(base, load):
                base = {**base, **p.arms[0].knobs}
            d.on_experiment_end()
    return out, base


def test_same_inputs_same_proposals_byte_for_byte():
    loads = [100.0] * 200 + [1000.0] * 200
    a, _ = run(driver(), loads)
    b, _ = run(driver(), loads)
    assert len(a) > 50
    assert msgspec.json.encode(a) == msgspec.json.encode(b)


def test_probe_arms_stay_inside_bounds_and_max_delta():
    d = driver(CFG.replace("context: [load]", "context: []").replace("context: {load: 100}", "")
               .replace("context: {load: 1000}", "").replace("context: {load: 120}", ""))
    rng = np.random.default_rng(1)
    base = {"a": 0.02, "b": 0.97, "n": 4.0}
    for _ in range(300):
        p = d.next_proposal(base, "", None)
        if p is None:
            continue
        for arm in p.arms:
            for k, v in arm.knobs.items():
                assert 0.0 <= v <= 1.0
                assert abs(v - base[k]) <= 0.1 + 1e-12
        if p.kind == "probe":
            d.on_evaluations([Evaluation(p.proposal_id, i, "ok", float(rng.normal()), 0.0, 100, 4, 1.0)
                              for i in range(len(p.arms))])
        else:
            base = {**base, **p.arms[0].knobs}
            d.on_experiment_end()


def test_regime_entry_proposes_nearest_approved_preset_and_tier1_accepts_it():
    d = driver()
    p = d.next_proposal({"a": 0.2, "b": 0.2, "n": 4.0}, "", {"load": 110.0})
    assert p is not None and p.kind == "rollout" and p.source == "context"
    arm = p.arms[0]
    assert arm.preset == "quiet" and arm.knobs == {"a": 0.8, "b": 0.1, "n": 2.0}   # not the unapproved one
    x = Executor(load_guardrails(CFG), DECL, run_id="t")
    x.start(0)
    v = x.propose(10**9, p)          # a jump of 0.6 > max_delta 0.1: allowed for an approved bundle
    assert v.accepted, v.message


def test_converges_then_follows_a_condition_change():
    loads = [100.0] * 150 + [1000.0] * 150
    props, base = run(driver(), loads)
    assert cost(base, 1000.0) < 1e-3
    kinds = [(p.source, p.arms[0].preset) for p in props if p.kind == "rollout" and p.source == "context"]
    assert kinds == [("context", "quiet"), ("context", "busy")]


def test_jitter_around_a_band_edge_does_not_flap_regimes():
    d = driver()
    base = {"a": 0.2, "b": 0.2, "n": 4.0}
    edge = 2 ** (math.floor(math.log2(100) / 0.5) * 0.5)      # a regime boundary near load 100
    rng = np.random.default_rng(2)
    regimes = set()
    for _ in range(300):
        d.next_proposal(base, "", {"load": edge * float(np.exp(rng.normal(0, 0.05)))})
        d.pending = None
        regimes.add(d.regime)
    assert len(regimes) <= 2      # it may settle on either side once, never oscillate
    changes = 0
    last = d.regime
    for _ in range(300):
        d.next_proposal(base, "", {"load": edge * float(np.exp(rng.normal(0, 0.05)))})
        d.pending = None
        changes += d.regime != last
        last = d.regime
    assert changes == 0


def test_a_new_regime_must_persist_before_the_driver_acts():
    d = driver()
    base = {"a": 0.8, "b": 0.1, "n": 2.0}       # already the quiet preset: nothing to do
    assert d.next_proposal(base, "", {"load": 100.0}).kind == "probe"
    d.pending = None
    r0 = d.regime
    for i in range(CONTEXT_PERSIST - 1):
        d.next_proposal(base, "", {"load": 1000.0})
        d.pending = None
        assert d.regime == r0
    p = d.next_proposal(base, "", {"load": 1000.0})
    assert d.regime != r0 and p.arms[0].preset == "busy"


def test_returning_to_a_regime_proposes_what_was_promoted_there():
    # no presets: what the driver learned is all it has
    text = CFG.split("catalog:")[0]
    d = driver(text)
    props, base = run(d, [100.0] * 400)
    assert cost(base, 100.0) < 5e-3
    learned = dict(base)
    props, base = run(d, [1000.0] * 400, base=base)
    assert cost(base, 1000.0) < 5e-3
    before = dict(base)
    props, _ = run(d, [100.0] * (CONTEXT_PERSIST + 1), base=before)
    back = [(p, b) for p, b in zip(props, run.bases) if p.source == "context"]
    assert back, "re-entering a known regime proposes its memory"
    arm, before = back[0][0].arms[0], back[0][1]
    # moves towards the remembered setting by at most max_delta per knob (not an approved bundle)
    for k, v in arm.knobs.items():
        assert abs(v - before[k]) <= 0.1 + 1e-12
        assert abs(v - learned[k]) < abs(before[k] - learned[k])


def test_observe_asks_to_cancel_after_a_persisting_regime_change_a_regime_rollout_too():
    d = driver()
    base = {"a": 0.8, "b": 0.1, "n": 2.0}            # the quiet preset already: probes follow
    p = d.next_proposal(base, "", {"load": 100.0})
    assert p.kind == "probe" and d.pending is p
    assert not d.observe({"load": 100.0}, base, "")
    got = [d.observe({"load": 1000.0}, base, "") for _ in range(CONTEXT_PERSIST)]
    assert got == [False] * (CONTEXT_PERSIST - 1) + [True]
    d.on_experiment_end()
    p = d.next_proposal(base, "", {"load": 1000.0})
    assert p.source == "context" and p.arms[0].preset == "busy"
    assert not any(d.observe({"load": 1000.0}, base, "") for _ in range(2 * CONTEXT_PERSIST))   # its own regime
    got = [d.observe({"load": 100.0}, base, "") for _ in range(CONTEXT_PERSIST)]   # the load went back for good
    assert got == [False] * (CONTEXT_PERSIST - 1) + [True]


def test_a_refused_regime_rollout_is_retried_a_bounded_number_of_times():
    from daemon.tier1.model import Verdict
    from daemon.tier2.driver import REGIME_ATTEMPTS, REGIME_RETRY_CALLS
    d = driver()
    base = {"a": 0.2, "b": 0.2, "n": 4.0}
    tries = 0
    for _ in range(REGIME_RETRY_CALLS * (REGIME_ATTEMPTS + 2)):
        p = d.next_proposal(base, "", {"load": 100.0})
        if p is None:
            continue
        if p.source == "context":
            tries += 1
            d.on_verdict(Verdict(False, p.proposal_id, rule="quarantine", value=0.0, limit=0.05))
        else:
            d.pending = None
    assert tries == REGIME_ATTEMPTS


def test_a_regime_rollout_refused_for_now_is_retried_until_it_goes_in():
    """Cooldown refusals say "not now": they do not use up the attempts of a real refusal."""
    from daemon.tier1.model import Verdict
    from daemon.tier2.driver import REGIME_ATTEMPTS, REGIME_TRANSIENT_TRIES
    d = driver()
    base = {"a": 0.2, "b": 0.2, "n": 4.0}
    refusals = 0
    for _ in range(1000):
        p = d.next_proposal(base, "", {"load": 100.0})
        if p is None:
            continue
        if p.source != "context":
            break
        refusals += 1
        if refusals > REGIME_ATTEMPTS + 2:            # the cooldown is over: it goes in
            assert p.arms[0].preset == "quiet"
            break
        d.on_verdict(Verdict(False, p.proposal_id, rule="cooldown", value=0.05, limit=0.5))
    assert refusals == REGIME_ATTEMPTS + 3 < REGIME_TRANSIENT_TRIES


def test_with_a_clock_a_short_burst_is_not_a_regime_change():
    d = driver()
    base = {"a": 0.8, "b": 0.1, "n": 2.0}
    t, dt = 0, 10_000_000                              # 10 ms calls
    d.next_proposal(base, "", {"load": 100.0}, t)
    r0 = d.regime
    burst = int(CONTEXT_PERSIST_S * 1e9 / dt) - 2      # just shorter than the persistence time
    for _ in range(burst):
        t += dt
        d.pending = None
        d.next_proposal(base, "", {"load": 1000.0}, t)
        assert d.regime == r0
    for _ in range(5):
        t += dt
        d.pending = None
        d.next_proposal(base, "", {"load": 100.0}, t)
    assert d.regime == r0
    for _ in range(burst + 4):                         # a step that lasts: acted on
        t += dt
        d.pending = None
        d.next_proposal(base, "", {"load": 1000.0}, t)
    assert d.regime != r0


def test_observe_runs_the_persistence_clock_while_tier1_is_busy_or_cooling_down():
    d = driver()
    base = {"a": 0.8, "b": 0.1, "n": 2.0}
    t, dt = 1, 10_000_000
    p = d.next_proposal(base, "", {"load": 100.0}, t)
    assert p.kind == "probe"
    d.on_experiment_end()                               # e.g. a rollback: Tier 1 cools down, no proposals
    n = int(CONTEXT_PERSIST_S * 1e9 / dt) + 2
    for _ in range(n):                                  # the load steps while nobody asks for a proposal
        t += dt
        assert not d.observe({"load": 1000.0}, base, "", t)   # nothing pending: nothing to cancel
    p = d.next_proposal(base, "", {"load": 1000.0}, t + dt)
    assert p.source == "context" and p.arms[0].preset == "busy"   # at once: the regime already persisted


def test_regime_only_proposes_nothing_but_an_approved_preset():
    d = driver()
    base = {"a": 0.2, "b": 0.2, "n": 4.0}
    assert d.regime_due() is False                       # no regime seen yet
    d.observe({"load": 110.0}, base, "", 1)
    assert d.regime_due()
    p = d.next_proposal(base, "", {"load": 110.0}, 2, regime_only=True)
    assert p.arms[0].preset == "quiet" and not d.regime_due()
    # a baseline already at the preset: no regime rollout, and regime_only asks for nothing else
    d = driver()
    at = {"a": 0.8, "b": 0.1, "n": 2.0}
    d.observe({"load": 110.0}, at, "", 1)
    assert d.next_proposal(at, "", {"load": 110.0}, 2, regime_only=True) is None
    assert d.next_proposal(at, "", {"load": 110.0}, 3).kind == "probe"
