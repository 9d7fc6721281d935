"""Offline sweep: the best static setting of each scenario phase (the tuner's yardstick).

Each point runs the real data plane with `--fixed` (the daemon is ignored) and `--phase N`
(that phase's conditions held for the whole run), and scores the phase summary with the
demo's objective:

- universe: minimise  mean(error) + LATENCY_WEIGHT * p50(step_time_s) / SLO
            subject to p50(step_time_s) <= SLO / 2 and mean(instability) <= MAX_INSTABILITY
            (the median, not p99: on a shared 2-core machine a tile-step's p99 measures
            preemption by the neighbours, not the setting; guardrails.yaml's SLO is the same)
            (runs unpaced on a virtual clock, so a point costs only its compute)
- serve:    maximise  mean(quality)   (ties: lower p99 latency)
            subject to p99(latency_s) <= SLA and mean(error) <= MAX_ERROR_RATE

The search is coordinate-wise over a coarse grid (every knob in turn, holding the others
at the best so far, until a round changes nothing), started from the best of the initial
values and a few seeded random grid points: 50-80 universe points per phase instead of the
~3,000 of the full grid. It is a heuristic: it can miss the grid's best point. The objective functions are pure and exported so the demo
scores live telemetry the same way.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .apps import PHASES, declared_knobs, start_app, unique_name

LATENCY_WEIGHT = 0.2        # universe: error units per SLO of median step time
MAX_INSTABILITY = 0.05      # universe: mean instability above this is infeasible
MAX_ERROR_RATE = 0.01       # serve: deadline misses + drops above this are infeasible

# Axis order matters to a coordinate search: decay alone sets the field's mean (strength /
# decay), diffusion then sets its spread, noise its roughness; substeps last (cost, stability).
UNIVERSE_GRID: dict[str, tuple[float, ...]] = {
    "decay": (0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5),
    "diffusion": (0.05, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0, 1.2),
    "noise": (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8),
    "substeps": (1, 2, 3, 4, 6, 8, 16),
}
# A universe point lasts one phase of `make demo` (run.DEFAULT_SECONDS["universe"] / 4 phases; a test
# holds the two equal), so a drifting phase is scored over the drift the demo runs, at its speed. A
# 1 s point drifts 8x as fast and its first 40 steps (held back while the empty field settles) are
# the first 20 % of the drift: on seed 1 its drift winner (diffusion 0.6, decay 0.08, noise 0.45, 6
# substeps) ran live at 0.368, and the catalog's 2 s drift preset beside it at 0.330. The 8 s winner
# (0.4625, 0.1, 0.2125, 2) runs live at 0.345: it is strongest in the phase's first second, which
# the live yardstick skips (run.REF_SETTLE_S), so a static setting 4 % better there still exists.
UNIVERSE_POINT_S = 8.0
SERVE_POINT_S = 1.0

# First steps of the off-grid compass search after the grid search (universe).
UNIVERSE_REFINE = {"diffusion": 0.1, "decay": 0.04, "noise": 0.1, "substeps": 1}
SERVE_GRID: dict[str, tuple] = {
    "variant": ("fp32", "fp32_blocked", "int8", "early_exit_2", "early_exit_1"),
    "threads": (1, 2),
    "batch_max": (1, 8),
    "batch_wait_us": (0, 300),
}


def _f(x) -> float:
    return math.nan if x is None else float(x)


def universe_objective(phase: Mapping, slo_s: float | None = None) -> tuple[bool, float]:
    """(feasible, value to minimise) of one phase summary's baseline group."""
    g = phase["baseline"]
    if not g["count"]:
        return False, math.inf
    f = g["fields"]
    slo = slo_s if slo_s is not None else phase["conditions"]["slo_step_time_s"]
    # p50, not the mean: a few preempted steps move the mean of a 10 us step by microseconds
    value = _f(f["error"]["mean"]) + LATENCY_WEIGHT * _f(f["step_time_s"]["p50"]) / slo
    feasible = _f(f["step_time_s"]["p50"]) <= 0.5 * slo and _f(f["instability"]["mean"]) <= MAX_INSTABILITY
    return feasible, value


def serve_objective(phase: Mapping, sla_s: float | None = None) -> tuple[bool, float]:
    """(feasible, value to minimise): minus mean quality, plus p99 latency / SLA as a tie-break."""
    g = phase["baseline"]
    if not g["count"]:
        return False, math.inf
    f = g["fields"]
    sla = sla_s if sla_s is not None else phase["conditions"]["sla_p99_s"]
    p99 = _f(f["latency_s"]["p99"])
    feasible = p99 <= sla and _f(f["error"]["mean"]) <= MAX_ERROR_RATE
    return feasible, -_f(f["quality"]["mean"]) + 1e-3 * min(p99 / sla, 10.0)


def _better(a: tuple[bool, float], b: tuple[bool, float] | None) -> bool:
    """Feasible beats infeasible; then the lower value."""
    if b is None:
        return True
    if a[0] != b[0]:
        return a[0]
    return a[1] < b[1]


def _coordinate_search(grid: Mapping[str, Sequence], start: dict, score: Callable[[dict], tuple],
                       max_rounds: int = 3, n_random: int = 0, seed: int = 0,
                       refine: Mapping[str, tuple[float, float, float, bool]] | None = None,
                       refine_evals: int = 60, extra_starts: Sequence[dict] = ()) -> tuple[dict, tuple, int]:
    """Coordinate descent over the grid from the best of `start` and `n_random` seeded grid
    points (the random starts get it out of the valleys where the objective's terms trade
    off against each other along two knobs at once), then, with `refine` (knob -> (step, lo,
    hi, integer)), a compass search off the grid: try +/- step on each knob, take the first
    improvement, halve the (non-integer) steps when a pass finds none; at most refine_evals
    more points. The grid alone misses optima that sit between its lines. `extra_starts`
    (partial settings) compete with `start` as starting points."""
    cache: dict[tuple, tuple] = {}

    def ev(setting: dict) -> tuple:
        key = tuple(sorted(setting.items()))
        if key not in cache:
            cache[key] = score(setting)
        return cache[key]

    best = dict(start)
    best_s = ev(best)
    for cand in extra_starts:
        s = ev({**start, **cand})
        if _better(s, best_s):
            best, best_s = {**start, **cand}, s
    rng = random.Random(seed)
    for _ in range(n_random):
        cand = {**start, **{k: rng.choice(list(v)) for k, v in grid.items()}}
        s = ev(cand)
        if _better(s, best_s):
            best, best_s = cand, s
    for _ in range(max_rounds):
        changed = False
        for knob, values in grid.items():
            for v in values:
                cand = {**best, knob: v}
                s = ev(cand)
                if _better(s, best_s):
                    best, best_s, changed = cand, s, True
        if not changed:
            break
    if refine:
        steps = {k: float(v[0]) for k, v in refine.items()}
        floor = {k: (1.0 if v[3] else v[0] / 8.0) for k, v in refine.items()}
        spent = 0
        while spent < refine_evals and any(steps[k] >= floor[k] for k in steps):
            improved = False
            for knob, (_, lo, hi, integer) in refine.items():
                if steps[knob] < floor[knob]:
                    continue
                for sign in (1.0, -1.0):
                    v = min(max(best[knob] + sign * steps[knob], lo), hi)
                    v = int(round(v)) if integer else round(v, 6)
                    if v == best[knob]:
                        continue
                    cand = {**best, knob: v}
                    key = tuple(sorted(cand.items()))
                    spent += key not in cache
                    s = ev(cand)
                    if _better(s, best_s):
                        best, best_s, improved = cand, s, True
                        break
            if not improved:
                steps = {k: (v if refine[k][3] else v / 2.0) for k, v in steps.items()}
                if all(refine[k][3] or steps[k] < floor[k] for k in steps):
                    break
    return best, best_s, len(cache)


def _run_point(kind: str, scenario: str, seed: int, phase: int, setting: Mapping, seconds: float,
               extra: Sequence[str]) -> dict:
    args = ["--phase", str(phase), "--duration", repr(float(seconds)), *extra]
    if kind == "universe":
        args.append("--unpaced")
    app = start_app(kind, unique_name(f"sweep-{kind}"), scenario, seed, fixed=dict(setting), extra=args)
    try:
        return app.result(timeout=60 + 4 * seconds)["phases"][0]
    finally:
        app.close()


def approved_variants() -> tuple[str, ...]:
    """The serve variants arqond may select (Approved/Promoted in profiles/serve.yaml), in
    SERVE_GRID order: the best fixed variant is one arqond could have held."""
    from daemon.tier1.config import ELIGIBLE_STATES, load_guardrails
    from .apps import ROOT
    g = load_guardrails(ROOT / "profiles" / "serve.yaml")
    ok = {c.variant for c in g.catalog.variants if c.state in ELIGIBLE_STATES and c.variant}
    return tuple(v for v in SERVE_GRID["variant"] if v in ok)


def serve_capacity(seed: int = 1, repeats: int = 3) -> float:
    """fp32 requests per CPU-second of one worker, as the serve data plane measures it at startup
    (thread CPU time, the fastest of 24 chunks), the best of `repeats` starts: a neighbour
    thrashing the shared cache, or the hypervisor lending the vCPU away, only ever make it low. Every
    serve phase's offered load is a multiple of it, and the demo passes the one figure to every
    arm and every sweep point, so all of them see the same offered load."""
    best = 0.0
    for _ in range(max(1, repeats)):
        app = start_app("serve", unique_name("capacity"), "demo", seed, fixed={"variant": "early_exit_1"},
                        extra=["--phase", "0", "--duration", "0.1"])
        try:
            best = max(best, float(app.result(timeout=60)["capacity_fp32_rps"]))
        finally:
            app.close()
    return best


def best_static(kind: str, scenario: str = "demo", seed: int = 1, grid: Mapping[str, Sequence] | None = None,
                seconds_per_point: float | None = None, *, phases: Sequence[int] | None = None,
                jobs: int | None = None, overall: bool = True, n_random: int | None = None,
                refine_steps: Mapping[str, float] | None = None) -> dict:
    """Best static setting per phase of `scenario`, by the demo objective.

    Returns {"kind", "scenario", "seed", "objective", "phases": [{"phase", "name", "best",
    "feasible", "objective", "summary", "evaluated"}], "overall": {...}} where "overall" is
    the single setting (among the phase winners) with the lowest mean objective over all
    phases: what a static configuration could have done for the whole run.
    """
    if kind not in PHASES:
        raise ValueError(f"kind: expected one of {tuple(PHASES)}, got {kind!r}")
    knobs = {k.name: k for k in declared_knobs(kind)}
    grid = dict(grid) if grid is not None else dict(UNIVERSE_GRID if kind == "universe" else SERVE_GRID)
    for name, values in grid.items():
        if name == "variant":
            continue
        if name not in knobs:
            raise ValueError(f"grid.{name}: not a knob of {kind} (knobs: {', '.join(knobs)})")
        k = knobs[name]
        bad = [v for v in values if not k.min <= v <= k.max]
        if bad:
            raise ValueError(f"grid.{name}: {bad} outside the declared bounds [{k.min}, {k.max}]")
    objective = universe_objective if kind == "universe" else serve_objective
    seconds = seconds_per_point or (UNIVERSE_POINT_S if kind == "universe" else SERVE_POINT_S)
    n_random = n_random if n_random is not None else (12 if kind == "universe" else 0)
    # Points of a serve run compete for the CPU they measure: never in parallel.
    jobs = jobs or (2 if kind == "universe" else 1)
    phase_ids = list(phases) if phases is not None else list(range(len(PHASES[kind])))
    extra: list[str] = []
    if kind == "serve":
        # One capacity for every point (fp32's saturated throughput, measured now), so all of
        # them see the same offered load.
        extra = ["--capacity", repr(serve_capacity(seed))]
    start = {k.name: (int(k.initial) if k.integer else k.initial) for k in knobs.values()}
    refine = None
    if kind == "universe" and refine_steps:
        refine = {n: (st, knobs[n].min, knobs[n].max, knobs[n].integer) for n, st in refine_steps.items() if n in grid}
    if "variant" in grid:
        start["variant"] = grid["variant"][0]

    def search(ph: int) -> dict:
        summaries: dict[tuple, dict] = {}

        def score(setting: dict) -> tuple:
            summary = _run_point(kind, scenario, seed, ph, setting, seconds, extra)
            summaries[tuple(sorted(setting.items()))] = summary
            return objective(summary)

        starts: list[dict] = []
        if kind == "universe":
            # The settings the phase's targets were computed from (the data plane reports them)
            # start the search too: the yardstick must be at least as good as the reference.
            score(start)
            cond = summaries[tuple(sorted(start.items()))]["conditions"]
            for key in ("reference_start", "reference_end"):
                ref = cond.get(key)
                if ref and all(k in grid for k in ref):
                    starts.append({k: (int(v) if knobs[k].integer else float(v)) for k, v in ref.items()})
        best, (feasible, value), n = _coordinate_search(grid, start, score, n_random=n_random, seed=seed * 100 + ph,
                                                        refine=refine, extra_starts=starts)
        return {"phase": ph, "name": PHASES[kind][ph], "best": best, "feasible": feasible, "objective": value,
                "summary": summaries[tuple(sorted(best.items()))], "evaluated": n}

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(phase_ids)))) as ex:
        per_phase = list(ex.map(search, phase_ids))

    out = {"kind": kind, "scenario": scenario, "seed": seed, "seconds_per_point": seconds,
           "objective": objective.__name__, "phases": per_phase, "overall": None}
    if overall and len(phase_ids) > 1:
        winners = {tuple(sorted(p["best"].items())): p["best"] for p in per_phase}
        if set(grid) == {"variant"}:
            # variants only (serve): every variant is a fixed setting one could have held, not only
            # the phase winners (a variant that wins no phase may be the only one keeping all of them)
            for v in grid["variant"]:
                cand = {**start, "variant": v}
                winners.setdefault(tuple(sorted(cand.items())), cand)
        pairs = list(itertools.product(winners.values(), phase_ids))
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            runs = list(ex.map(lambda sp: _run_point(kind, scenario, seed, sp[1], sp[0], seconds, extra), pairs))
        scored = [objective(r) for r in runs]
        table: dict[tuple, list] = {}
        rows: dict[tuple, list] = {}
        for (setting, ph), s, r in zip(pairs, scored, runs):
            key = tuple(sorted(setting.items()))
            table.setdefault(key, []).append(s)
            f = r["baseline"]["fields"]
            row = {"phase": ph, "feasible": s[0], "objective": s[1]}
            if kind == "serve":
                row.update(quality=f["quality"]["mean"], p99_latency_s=f["latency_s"]["p99"], count=r["baseline"]["count"])
            rows.setdefault(key, []).append(row)
        best_key = min(table, key=lambda k: (-sum(f for f, _ in table[k]), sum(v for _, v in table[k])))
        out["overall"] = {"best": winners[best_key], "feasible_phases": sum(f for f, _ in table[best_key]),
                          "mean_objective": sum(v for _, v in table[best_key]) / len(phase_ids),
                          "phases": rows[best_key]}
        if kind == "serve":
            q = [r["quality"] for r in rows[best_key] if r["quality"] is not None]
            out["overall"]["quality"] = sum(q) / len(q) if q else None
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m daemon.demo.sweep --write`: regenerate daemon/demo/best_static.json."""
    import argparse
    import json
    import time
    from pathlib import Path
    ap = argparse.ArgumentParser(prog="python -m daemon.demo.sweep")
    ap.add_argument("--kind", choices=("universe", "serve", "all"), default="all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="update daemon/demo/best_static.json (else print)")
    a = ap.parse_args(argv)
    path = Path(__file__).with_name("best_static.json")
    data = json.loads(path.read_text()) if path.exists() else {}
    for kind in (("universe", "serve") if a.kind == "all" else (a.kind,)):
        t = time.monotonic()
        # serve: what the serve profile lets arqond choose (the variant; one worker, no batching),
        # so "the best fixed variant" is a setting arqond could have held
        grid = None if kind == "universe" else {"variant": approved_variants()}
        res = best_static(kind, "demo", a.seed, grid=grid,
                          refine_steps=UNIVERSE_REFINE if kind == "universe" else None)
        res["sweep_wall_s"] = round(time.monotonic() - t, 1)
        res["command"] = f"python -m daemon.demo.sweep --kind {kind} --seed {a.seed} --write"
        data[kind] = res
    text = json.dumps(data, indent=1)
    if a.write:
        path.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
