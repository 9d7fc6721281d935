"""Tier 1 benchmark: the cost of the executor's hot calls, measured on a long-running state.

  decide_accept    `Executor.propose(defer=True)` of a probe (2 arms x 8 knobs, SPSA's shape) or a
                   rollout (1 arm) that passes every rule: the decision and the snapshot, what
                   gates the publish (the daemon's t1_propose).
  complete_accept  the `Executor.complete()` that follows it (after the publish in the daemon):
                   the audit events, the fold into the state, the experiment's set-up.
  propose_accept   both, per call (what `Executor.propose` without defer costs).
  decide_reject, complete_reject, propose_reject
                   the same for a probe refused by the bounds rule on the last knob of the last
                   arm (the deepest rejection: every earlier rule has run).
  step             `Executor.step` once per 10 ms cycle while a probe runs: ack, 3 slots of
                   telemetry (objective, 2 SLOs), window bookkeeping, probe end.
  step_canary      `Executor.step` while a rollout runs its canary steps, bake and promotion:
                   2 slots of telemetry, SLO windows, paired blocks (objective and the SLOs'
                   feasibility values), judge looks.

The executor first takes `WARM` untimed proposals so that its recent-id list, knob history and
event sequence are those of a daemon that has run for a while (the id list is near its 4096 cap).
Each call is timed by wall clock (perf_counter_ns) and by this thread's CPU time
(thread_time_ns, which leaves out time other tenants of the shared machine held the core).
The run is cut into blocks; each figure is given per block, and the budget is judged on the median
of the blocks' CPU p99 (one burst of another process's work lands in one block only). The cyclic
garbage collector stays enabled, as in the daemon.

Floors (issue 5): T1 apply p99 <= 100 us (project goal 50 us), judged here on decide_accept (proposal ->
snapshot; the daemon adds the publish); propose_accept (with the deferred part) is reported beside it.
The stream runs twice: with the admission fast path (the daemon's default: these proposals are
knob-only, so it decides them; `fast_path` counts) and without it (`python_rules`: the peer, the
same calls on the Python rules alone).
"""
from __future__ import annotations

import gc
import os
import platform
import time

import numpy as np

from daemon.tier1.config import load_guardrails
from daemon.tier1.executor import Executor
from daemon.tier1.model import Arm, Command, CycleInput, FieldStats, Proposal, SlotTelemetry
from daemon.tier1.rollout import State
from shm_layout.decl import Declaration, FieldDecl, KnobDecl

MS = 1_000_000
NS = 1_000_000_000
N_KNOBS = 8
FLOOR_US = 100.0
GOAL_US = 50.0
WARM = 3500

DECL = Declaration(
    knobs=tuple(KnobDecl(f"k{i}", 0.0, 1.0, 0.5) for i in range(N_KNOBS)),
    fields=(FieldDecl("lat", "us"), FieldDecl("err"), FieldDecl("q")),
    variants=("ref", "fast"))

CONFIG = """
target: bench
limits: {max_delta: 0.2, rate_limit_hz: 20, min_interval_s: 0.05}
knobs: {%s}
objective: {terms: [{field: lat, stat: mean}]}
slos:
  - {name: p99, field: lat, stat: p99, max: 5000, min_samples: 50}
  - {name: errors, field: err, stat: mean, max: 0.05, min_samples: 50}
rollout:
  probe_window_s: 0.5
  probe_weight: 0.1
  settle_s: 0.01
  cooldown_after_rollback_s: 0
budget: {max_change: 50, window_s: 60}
catalog:
  fields: {latency: lat, quality: q, cost: q}
  variants:
    - {id: v-ref, variant: ref, state: Promoted}
    - {id: v-fast, variant: fast, state: Approved, max_p99: 3000}
""" % ", ".join(f"k{i}: {{}}" for i in range(N_KNOBS))


def _fs(mean: float, n: int) -> FieldStats:
    return FieldStats(n, mean, 0.5 * mean, 3.0 * mean, mean, 1.8 * mean, 2.5 * mean)


def _telemetry(now: int, gen: int, n_slots: int, better: bool = False) -> tuple[SlotTelemetry, ...]:
    """Every slot's summary; a candidate slot is 1 us slower (or faster with `better`)."""
    d = -1.0 if better else 1.0
    return tuple(SlotTelemetry(s, gen, 40, 10 * MS, {"lat": _fs(1000.0 + d * s, 40), "err": _fs(0.01, 40),
                                                      "q": _fs(0.9, 40)}) for s in range(n_slots))


def _steps_to_idle(x: Executor, now: int, gen: int, timer: "_Timer", limit: int, *, n_slots: int = 0,
                   better: bool = False) -> tuple[int, int]:
    """Step `x` every 10 ms until Tier 1 is idle (at most `limit` steps), timing each step into
    `timer`; the first step carries no telemetry (the ack), later ones `n_slots` slots (0: as many
    as the live snapshot has). Returns (now, steps)."""
    pc, tc = time.perf_counter_ns, time.thread_time_ns
    k = 0
    while x.mstate is not State.IDLE and k < limit:
        now += 10 * MS
        slots = _telemetry(now, gen, n_slots or len(x.snapshot.slots), better=better) if k else ()
        inp = CycleInput(now, gen, slots, ack_generation=gen)
        w0, c0 = pc(), tc()
        x.step(now, inp)
        c1, w1 = tc(), pc()
        timer.wall.append(w1 - w0)
        timer.cpu.append(c1 - c0)
        gen = x.state.generation
        k += 1
    return now, k


class _Timer:
    __slots__ = ("wall", "cpu")

    def __init__(self) -> None:
        self.wall: list[int] = []
        self.cpu: list[int] = []

    def summary(self, blocks: int) -> dict:
        w = np.asarray(self.wall, dtype=np.float64) / 1e3
        c = np.asarray(self.cpu, dtype=np.float64) / 1e3
        if w.size == 0:
            return {"n": 0}

        def per_block(a, q):
            return [round(float(np.percentile(b, q)), 1) for b in np.array_split(a, blocks) if b.size]

        cb99 = per_block(c, 99)
        return {"n": int(w.size),
                "cpu_us": {"p50": round(float(np.percentile(c, 50)), 1), "p99": round(float(np.percentile(c, 99)), 1),
                           "max": round(float(c.max()), 1), "p50_blocks": per_block(c, 50), "p99_blocks": cb99,
                           "p99_median_of_blocks": float(np.median(cb99))},
                "wall_us": {"p50": round(float(np.percentile(w, 50)), 1), "p99": round(float(np.percentile(w, 99)), 1),
                            "max": round(float(w.max()), 1), "p50_blocks": per_block(w, 50),
                            "p99_blocks": per_block(w, 99)}}


def _probe(i: int, sign: float) -> Proposal:
    d = 0.01 + 0.001 * (i % 7)
    arms = (Arm({f"k{j}": 0.5 + sign * d * (1 if j % 2 else -1) for j in range(N_KNOBS)}),
            Arm({f"k{j}": 0.5 - sign * d * (1 if j % 2 else -1) for j in range(N_KNOBS)}))
    return Proposal(f"bench-probe-{i}", "probe", arms, source="spsa", seed=i, note=f"round {i}")


def _rollout(i: int) -> Proposal:
    return Proposal(f"bench-rollout-{i}", "rollout", (Arm({f"k{j}": 0.5 + 0.002 for j in range(N_KNOBS)}),),
                    source="spsa", seed=i, note="recommendation")


def _bad(i: int) -> Proposal:
    arms = _probe(i, 1.0).arms
    last = dict(arms[1].knobs)
    last[f"k{N_KNOBS - 1}"] = 1.5   # out of the declared bounds: refused by the last check
    return Proposal(f"bench-bad-{i}", "probe", (arms[0], Arm(last)), source="spsa", seed=i)


def run(quick: bool = False) -> dict:
    """Time propose (accept and reject) and step on a warmed-up executor, then the same stream
    on one without the admission fast path (the Python rules alone: `python_rules`)."""
    t_start = time.perf_counter()
    out = _run(quick, fast_path=True)
    peer = _run(quick, fast_path=False)
    out["python_rules"] = {k: peer[k] for k in ("decide_accept_probe", "decide_accept_rollout", "decide_reject",
                                                "complete_accept", "propose_accept_probe", "propose_accept_rollout")}
    out["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return out


def _run(quick: bool, fast_path: bool) -> dict:
    rounds = 400 if quick else 2000
    blocks = 4 if quick else 8
    t_start = time.perf_counter()
    g = load_guardrails(CONFIG)
    x = Executor(g, DECL, run_id="bench-tier1", fast_path=fast_path)
    now = 0
    x.start(now)
    # Warm-up, untimed: a long-running daemon's recent ids and event sequence.
    for i in range(WARM):
        now += MS
        x.propose(now, _bad(-i - 1))
    acc, acc_roll, rej, stp = _Timer(), _Timer(), _Timer(), _Timer()            # decide + complete
    d_acc, d_roll, d_rej, c_acc, c_rej = _Timer(), _Timer(), _Timer(), _Timer(), _Timer()
    pc, tc = time.perf_counter_ns, time.thread_time_ns

    def timed(p: Proposal, decide: _Timer, complete: _Timer, whole: _Timer):
        w0, c0 = pc(), tc()
        v = x.propose(now, p, defer=True)
        c1, w1 = tc(), pc()
        x.complete()
        c2, w2 = tc(), pc()
        decide.wall.append(w1 - w0)
        decide.cpu.append(c1 - c0)
        complete.wall.append(w2 - w1)
        complete.cpu.append(c2 - c1)
        whole.wall.append(w2 - w0)
        whole.cpu.append(c2 - c0)
        return v

    # An idle vCPU is clocked down and its caches are cold: half a second of work first.
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        x.propose(now, _bad(-1))
    steps_per_round = 0
    outcomes = {"accepted": 0, "rejected_as_expected": 0, "unexpected": []}
    for i in range(rounds):
        now += 20 * MS
        rollout = i % 4 == 3
        p_bad, p_ok = _bad(i), (_rollout(i) if rollout else _probe(i, 1.0 if i % 2 else -1.0))
        v = timed(p_bad, d_rej, c_rej, rej)
        if v.accepted or v.rule != "bounds":
            outcomes["unexpected"].append(f"bad {i}: {v.rule}")
        else:
            outcomes["rejected_as_expected"] += 1
        now += MS
        v = timed(p_ok, d_roll if rollout else d_acc, c_acc, acc_roll if rollout else acc)
        if not v.accepted:
            outcomes["unexpected"].append(f"ok {i}: {v.rule} {v.message}")
            continue
        outcomes["accepted"] += 1
        gen = x.state.live.generation      # the accepted snapshot (a fast-path verdict carries it staged)
        n_slots = len(x.state.live.slots)
        if rollout:
            # Stop the canary at once (untimed): rollback -> ack -> cooldown 0 -> idle.
            x.command(now, Command("rollback", "bench"))
            gen = x.state.generation
            now += 50 * MS   # the knobs' min_interval_s before the next probe
        now, k = _steps_to_idle(x, now, gen, stp, 500, n_slots=n_slots)
        steps_per_round = max(steps_per_round, k)
    # Rollouts run to promotion (timed per step): the canary's block and judge work.
    canary = _Timer()
    for i in range(3 if quick else 10):
        now += 2 * NS
        v = x.propose(now, Proposal(f"bench-canary-{i}", "rollout",
                                    (Arm({f"k{j}": x.state.baseline[j] + 0.01 for j in range(N_KNOBS)}),),
                                    source="bench", seed=i))
        if not v.accepted:
            outcomes["unexpected"].append(f"canary {i}: {v.rule} {v.message}")
            continue
        now, _ = _steps_to_idle(x, now, v.snapshot.generation, canary, 10_000, better=True)
    promotions = x.state.baseline != DECL.initial_values()
    gc.collect()
    out = {
        "suite": "tier1",
        "quick": quick,
        "decide_accept_probe": d_acc.summary(blocks),
        "decide_accept_rollout": d_roll.summary(blocks),
        "decide_reject": d_rej.summary(blocks),
        "complete_accept": c_acc.summary(blocks),
        "complete_reject": c_rej.summary(blocks),
        "propose_accept_probe": acc.summary(blocks),
        "propose_accept_rollout": acc_roll.summary(blocks),
        "propose_reject": rej.summary(blocks),
        "step": stp.summary(blocks),
        "step_canary": {**canary.summary(blocks), "promoted": bool(promotions)},
        "outcomes": {**outcomes, "unexpected": outcomes["unexpected"][:5],
                     "n_unexpected": len(outcomes["unexpected"])},
        "fast_path": {"enabled": fast_path, "accepted": x.fast_accepts, "declined": dict(x.fast_declines)},
        "state_at_end": {"recent_ids": len(x.state.recent_ids), "seq": x.state.last_seq,
                         "history_per_knob": max((len(h) for h in x.state.history.values()), default=0)},
        "method": (f"daemon.tier1.executor.Executor, {N_KNOBS} allowlisted knobs, 2 SLOs + catalog, warmed by "
                   f"{WARM} proposals; per call perf_counter_ns (wall) and thread_time_ns (CPU of this thread); "
                   f"decide_* = propose(defer=True) (rules + snapshot: what gates the publish), complete_* = the "
                   f"complete() after it (events, state fold, experiment set-up), propose_* = both; "
                   f"{rounds} rounds of (rejected probe, accepted probe or rollout, 10 ms steps to the probe's end); "
                   f"p99 per block over {blocks} consecutive blocks, budget judged on the median of the blocks' CPU "
                   f"p99; gc enabled as in the daemon"),
        "host": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}, "
                f"{os.cpu_count()} cpus, load {[round(v, 2) for v in os.getloadavg()]}",
        "elapsed_s": 0.0,
    }
    a = out["decide_accept_probe"]["cpu_us"]["p99_median_of_blocks"]
    ar = out["decide_accept_rollout"]["cpu_us"]["p99_median_of_blocks"]
    whole = max(out["propose_accept_probe"]["cpu_us"]["p99_median_of_blocks"],
                out["propose_accept_rollout"]["cpu_us"]["p99_median_of_blocks"])
    out["floors"] = {"decide_accept_p99_cpu_us": max(a, ar), "propose_accept_p99_cpu_us": whole,
                     "limit_us": FLOOR_US, "goal_us": GOAL_US,
                     "pass": max(a, ar) <= FLOOR_US and not outcomes["unexpected"],
                     "goal_met": max(a, ar) <= GOAL_US}
    out["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    return out


if __name__ == "__main__":
    import json
    import sys
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
