"""Offline sweep: the best static setting of each scenario phase (the tuner's yardstick).

Each point runs the real data plane with `--fixed` (the daemon is ignored) and `--phase N`
(that phase's conditions held for the whole run), and scores the phase summary with the
demo's objective:

- universe: minimise  mean(error) + LATENCY_WEIGHT * mean(step_time_s) / SLO
            subject to p99(step_time_s) <= SLO and mean(instability) <= MAX_INSTABILITY
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

LATENCY_WEIGHT = 0.2        # universe: error units per SLO of mean step time
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
    value = _f(f["error"]["mean"]) + LATENCY_WEIGHT * _f(f["step_time_s"]["mean"]) / slo
    feasible = _f(f["step_time_s"]["p99"]) <= slo and _f(f["instability"]["mean"]) <= MAX_INSTABILITY
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
                       max_rounds: int = 3, n_random: int = 0, seed: int = 0) -> tuple[dict, tuple, int]:
    """Coordinate descent over the grid from the best of `start` and `n_random` seeded grid
    points (the random starts get it out of the valleys where the objective's terms trade
    off against each other along two knobs at once)."""
    cache: dict[tuple, tuple] = {}

    def ev(setting: dict) -> tuple:
        key = tuple(sorted(setting.items()))
        if key not in cache:
            cache[key] = score(setting)
        return cache[key]

    best = dict(start)
    best_s = ev(best)
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


def best_static(kind: str, scenario: str = "demo", seed: int = 1, grid: Mapping[str, Sequence] | None = None,
                seconds_per_point: float | None = None, *, phases: Sequence[int] | None = None,
                jobs: int | None = None, overall: bool = True, n_random: int | None = None) -> dict:
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
    seconds = seconds_per_point or 1.0
    n_random = n_random if n_random is not None else (12 if kind == "universe" else 0)
    # Points of a serve run compete for the CPU they measure: never in parallel.
    jobs = jobs or (2 if kind == "universe" else 1)
    phase_ids = list(phases) if phases is not None else list(range(len(PHASES[kind])))
    extra: list[str] = []
    if kind == "serve":
        # One capacity for every point, so all of them see the same offered load.
        probe = _run_point(kind, scenario, seed, phase_ids[0], {"variant": "early_exit_1"}, 0.3, ())
        extra = ["--capacity", repr(float(probe["conditions"]["rate_rps"] / probe["conditions"]["load"]))]
    start = {k.name: (int(k.initial) if k.integer else k.initial) for k in knobs.values()}
    if "variant" in grid:
        start["variant"] = grid["variant"][0]

    def search(ph: int) -> dict:
        summaries: dict[tuple, dict] = {}

        def score(setting: dict) -> tuple:
            summary = _run_point(kind, scenario, seed, ph, setting, seconds, extra)
            summaries[tuple(sorted(setting.items()))] = summary
            return objective(summary)

        best, (feasible, value), n = _coordinate_search(grid, start, score, n_random=n_random, seed=seed * 100 + ph)
        return {"phase": ph, "name": PHASES[kind][ph], "best": best, "feasible": feasible, "objective": value,
                "summary": summaries[tuple(sorted(best.items()))], "evaluated": n}

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(phase_ids)))) as ex:
        per_phase = list(ex.map(search, phase_ids))

    out = {"kind": kind, "scenario": scenario, "seed": seed, "seconds_per_point": seconds,
           "objective": objective.__name__, "phases": per_phase, "overall": None}
    if overall and len(phase_ids) > 1:
        winners = {tuple(sorted(p["best"].items())): p["best"] for p in per_phase}
        pairs = list(itertools.product(winners.values(), phase_ids))
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
            scored = list(ex.map(lambda sp: objective(_run_point(kind, scenario, seed, sp[1], sp[0], seconds, extra)),
                                 pairs))
        table: dict[tuple, list] = {}
        for (setting, _), s in zip(pairs, scored):
            table.setdefault(tuple(sorted(setting.items())), []).append(s)
        best_key = min(table, key=lambda k: (-sum(f for f, _ in table[k]), sum(v for _, v in table[k])))
        out["overall"] = {"best": winners[best_key], "feasible_phases": sum(f for f, _ in table[best_key]),
                          "mean_objective": sum(v for _, v in table[best_key]) / len(phase_ids)}
    return out
