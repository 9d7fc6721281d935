"""Judge benchmark: false rollbacks, false promotions, power and detection time of Tier 1's
rollout judge, through the real Executor code path, with a Kayenta-style peer in the same run.

Simulation (daemon/tier1/sim.py), one 10 ms cycle at a time, 200 records per cycle split by
slot weight; the objective is mean latency (1000 us):
  value = truth x (1 + drift(t)) x (1 + shared AR(1) + slot AR(1) + white/sqrt(n))
  AR(1) phi 0.9 (shared sd 5%, per-slot sd 3%), per-record white sd 30%, load drift
  +-20% sinusoid (period 120 s, random phase) affecting every slot.
Scenarios: healthy changes (effect 0) and 10% regressions (candidate mean x 1.10).
Each trial proposes one rollout and runs it to promotion or rollback.

SLA first (judge.py): objective = quality (maximise), SLO lat p99 <= 2500 us (p99 = 2 x mean in
the simulator), no comparative SLO; the candidate's quality is 5% worse in both scenarios.
  sla_first   baseline lat 2000 us (p99 4000: breaches at any drift), candidate 800 us (p99 1600:
              meets by >= 23% at any drift): must be promoted on feasibility, ideally at each first look.
  sla_both    baseline 2000 us, candidate 1700 us (p99 3400: breaches at any drift): both infeasible,
              so feasibility cannot pass it and its worse objective must not be promoted.

Peer (Kayenta NetflixACAJudge's MannWhitneyClassifier, 98% confidence, tolerance 0.25 x
|Hodges-Lehmann estimate|), same noise model and seeds: at each judged canary weight it gets
`KAYENTA_WINDOW_S` of raw per-cycle objective samples of candidate and baseline (the data our
judge's first look sees) and a "high" classification at any step is a rollback, as a Kayenta
stage per canary step would do.
"""
from __future__ import annotations

import math
import platform
import time

import numpy as np

from daemon.tier1.config import load_guardrails
from daemon.tier1.events import JudgeVerdict, Rollback
from daemon.tier1.executor import Executor
from daemon.tier1.judge import mann_whitney_kayenta
from daemon.tier1.model import Arm, Proposal
from daemon.tier1.rollout import State
from daemon.tier1.sim import TelemetrySim
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

NS = 1_000_000_000
PERIOD_NS = 10_000_000

# Defaults of guardrails.yaml's rollout section; objective only (no SLO: a 10% mean regression
# must be caught by the comparative judge, not by an absolute limit).
CONFIG = """
target: bench
knobs: {x: {}}
objective: {terms: [{field: lat, stat: mean}]}
"""
DECL = Declaration(knobs=(KnobDecl("x", 0.0, 1.0, 0.5),), fields=(FieldDecl("lat", "us"),))


KAYENTA_WINDOW_S = 4.0

SLA_CONFIG = """
target: bench
knobs: {x: {}}
objective: {direction: maximize, terms: [{field: q, stat: mean}]}
slos:
  - {name: p99, field: lat, stat: p99, max: 2500}
"""
SLA_DECL = Declaration(knobs=(KnobDecl("x", 0.0, 1.0, 0.5),), fields=(FieldDecl("lat", "us"), FieldDecl("q")))


def _sim(effect: float, seed: int, baseline_x: list) -> TelemetrySim:
    phase = float(np.random.default_rng(seed).uniform(0, 2 * math.pi))

    def truth(sl, i, t):
        return {"lat": 1000.0 * (1.0 + effect if sl.knobs[0] != baseline_x[0] else 1.0)}

    return TelemetrySim(truth, seed=seed, phi=0.9, ar_sd=0.03, shared_ar_sd=0.05, white_sd=0.30,
                        drift=lambda t: 0.2 * math.sin(2 * math.pi * t / (120 * NS) + phase))


def _kayenta_trial(effect: float, seed: int, weights) -> str:
    """Kayenta's verdict over the judged canary steps: 'high' at any step = rollback."""
    from shm_layout.decl import SlotSpec, SnapshotSpec
    sim = _sim(effect, seed + 7_000_000, [0.5])
    need = int(KAYENTA_WINDOW_S * NS / PERIOD_NS)
    worst = "pass"
    t = 0
    for w in weights:
        snap = SnapshotSpec(1, (SlotSpec(1.0 - w, 0, (0.5,)), SlotSpec(w, 0, (0.55,))), (0.5,))
        c, b = [], []
        for _ in range(need):
            t += PERIOD_NS
            for s in sim.cycle(t, snap).slots:
                (c if s.slot == 1 else b).append(s.fields["lat"].mean)
        verdict = mann_whitney_kayenta(c, b, confidence=0.98)
        if verdict == "high":
            return "high"
        if verdict == "nodata":
            worst = "nodata"
    return worst


def _sla_sim(cand_lat: float, seed: int, baseline_x: list) -> TelemetrySim:
    phase = float(np.random.default_rng(seed).uniform(0, 2 * math.pi))

    def truth(sl, i, t):
        cand = sl.knobs[0] != baseline_x[0]
        return {"lat": cand_lat if cand else 2000.0, "q": 0.95 if cand else 1.0}

    return TelemetrySim(truth, seed=seed, phi=0.9, ar_sd=0.03, shared_ar_sd=0.05, white_sd=0.30,
                        drift=lambda t: 0.2 * math.sin(2 * math.pi * t / (120 * NS) + phase))


def _trial(g, effect: float, seed: int, sla_cand_lat: float = 0.0) -> dict:
    x = Executor(g, SLA_DECL if sla_cand_lat else DECL, run_id=f"bench-{seed}")
    x.start(0)
    base = [0.5]
    sim = _sla_sim(sla_cand_lat, seed, base) if sla_cand_lat else _sim(effect, seed, base)
    looks = []
    t = PERIOD_NS
    v = x.propose(t, Proposal(f"p{seed}", "rollout", (Arm({"x": 0.55}),), source="bench", seed=seed))
    assert v.accepted, v.message
    start = t
    outcome = None
    rule = ""
    while outcome is None:
        t += PERIOD_NS
        inp = sim.cycle(t, x.snapshot)
        for e in x.step(t, inp).events:
            if type(e) is Rollback:
                rule = e.rule
            elif type(e) is JudgeVerdict and e.decision == "promote":
                looks.append((e.look, e.rule))
        base[0] = x.state.baseline[0]
        if x.mstate is State.PROMOTED or (x.mstate is State.IDLE and x.state.baseline[0] == 0.55):
            outcome = "promoted"
        elif x.mstate in (State.ABORTING, State.COOLDOWN, State.SAFE_MODE):
            outcome = "rolled_back"
        elif t - start > 400 * NS:
            outcome = "stuck"
    if sla_cand_lat:
        return {"outcome": outcome, "time_s": (t - start) / NS, "rule": rule, "looks": looks,
                "cycles": (t - start) // PERIOD_NS}
    weights = [w for w in g.rollout.canary_steps if w < 1.0]
    return {"outcome": outcome, "time_s": (t - start) / NS, "rule": rule, "kayenta": _kayenta_trial(effect, seed, weights),
            "cycles": (t - start) // PERIOD_NS}


def run(quick: bool = False) -> dict:
    """Run the simulation; `quick` uses fewer trials (CI-sized, well under 60 s)."""
    n = 150 if quick else 1000
    g = load_guardrails(CONFIG)
    window = KAYENTA_WINDOW_S
    t0 = time.perf_counter()
    healthy = [_trial(g, 0.0, 10_000 + i) for i in range(n)]
    regress = [_trial(g, 0.10, 20_000 + i) for i in range(n)]
    gs = load_guardrails(SLA_CONFIG)
    sla = [_trial(gs, 0.0, 30_000 + i, sla_cand_lat=800.0) for i in range(n // 3)]
    both = [_trial(gs, 0.0, 40_000 + i, sla_cand_lat=1700.0) for i in range(n // 3)]
    wall = time.perf_counter() - t0
    cycles = sum(r["cycles"] for r in healthy + regress + sla + both)
    sla_t = np.array([r["time_s"] for r in sla if r["outcome"] == "promoted"])
    sla_steps = [lk for r in sla for lk in r["looks"]]
    det = np.array([r["time_s"] for r in regress if r["outcome"] == "rolled_back"])
    promo_t = np.array([r["time_s"] for r in healthy if r["outcome"] == "promoted"])
    frac = lambda rs, o: sum(r["outcome"] == o for r in rs) / len(rs)
    kh = [r["kayenta"] for r in healthy]
    kr = [r["kayenta"] for r in regress]
    r = g.rollout
    out = {
        "trials_per_scenario": n,
        "false_rollback_rate": frac(healthy, "rolled_back"),
        "false_promotion_rate": frac(regress, "promoted"),
        "power": frac(regress, "rolled_back"),
        "stuck_rate": (frac(healthy, "stuck") + frac(regress, "stuck")) / 2,
        "detection_time_s_p50": float(np.percentile(det, 50)) if det.size else None,
        "detection_time_s_p99": float(np.percentile(det, 99)) if det.size else None,
        "healthy_promotion_time_s_p50": float(np.percentile(promo_t, 50)) if promo_t.size else None,
        "false_rollback_rules": {k: sum(1 for r in healthy if r["outcome"] == "rolled_back" and r["rule"] == k)
                                 for k in sorted({r["rule"] for r in healthy if r["outcome"] == "rolled_back"})},
        "sla_first_trials": len(sla),
        "sla_first_promotion_rate": frac(sla, "promoted"),
        "sla_first_steps_passed_at_first_look": (sum(1 for lk, _ in sla_steps if lk == 1) / len(sla_steps)
                                                 if sla_steps else None),
        "sla_first_steps_passed_on_feasibility": (sum(1 for _, ru in sla_steps if ru == "feasibility_first")
                                                  / len(sla_steps) if sla_steps else None),
        "sla_first_promotion_time_s_p50": float(np.percentile(sla_t, 50)) if sla_t.size else None,
        "sla_both_infeasible_promotion_rate": frac(both, "promoted"),
        "kayenta_mwu98_false_rollback_rate": sum(k == "high" for k in kh) / len(kh),
        "kayenta_mwu98_power": sum(k == "high" for k in kr) / len(kr),
        "kayenta_nodata_rate": sum(k == "nodata" for k in kh + kr) / (2 * n),
        "floors_met": None,
        "executor_cycles_simulated": int(cycles),
        "wall_s": round(wall, 2),
        "method": (f"simulated 10 ms cycles through daemon.tier1.executor.Executor; AR(1) phi 0.9 (shared sd 5%, "
                   f"slot sd 3%), white 30%/record, 200 records/cycle, drift +-20% (120 s); canary "
                   f"{list(r.canary_steps)}, block {r.block_s} s, min_blocks {r.min_blocks}, confidence "
                   f"{r.confidence}, effect_margin {r.effect_margin}; Kayenta peer: Mann-Whitney U 98% on per-cycle "
                   f"samples, {window:g} s at each judged canary weight, same noise model and seeds"),
        "host": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
    }
    out["floors_met"] = bool(out["false_rollback_rate"] <= 0.01 and out["false_promotion_rate"] <= 0.01
                             and out["power"] >= 0.90)
    return out


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
