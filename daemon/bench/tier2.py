"""Tier-2 benchmark: cost per step and quality of our optimizers and bandits beside peers run on the
same problems in the same process (nevergrad, pycma, cmaes, mabwiser, river).

run(quick) -> dict (JSON-ready). Sections:
  cost      per round (ask+tell / select+update) p50/p99/max in microseconds, per evaluation for batch
            methods, CMA-ES generation boundary; ours and peers, same process, gc disabled while timing.
            Ours also `*_own_cpu_us`: per step the minimum CPU time over REPLAYS interleaved runs of
            the same seeded sequence (what the budgets judge; see _floors).
  tuners    10-D problems, 2,000 evaluations, additive N(0,1) noise: noisy sphere, noisy Rosenbrock,
            slowly drifting optimum, optimum jumping every 500 evaluations. Online regret = mean true
            cost (noise-free, minus the optimum) of every evaluated point; final error = true cost of
            the final recommendation.
  bandits   stationary and piecewise-stationary Bernoulli (10 arms), drifting linear contextual, and
            the SLA-first (lexicographic) problem; cumulative regret.
  floors    booleans with the numbers they compare.
Peers that fail to import or run are reported as {"error": ...}. Benchmark-only: never imported at runtime.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from daemon.tier2 import make_bandit, make_optimizer

D = 10
LO, HI = -5.0, 5.0
EVALS = 2000
NOISE = 1.0
SIGMA0 = 0.2  # initial step of every method, as a fraction of the range (2.0 user units)


# ---------------------------------------------------------------------------------------------- problems
class Problem:
    """Noisy 10-D problem in [-5, 5]^10; ``true(X, t)`` is the noise-free cost above the optimum at
    evaluation index t (one index per evaluated point)."""

    def __init__(self, kind: str, seed: int):
        self.kind = kind
        r = np.random.default_rng(10_000 + seed)
        self.x0 = r.uniform(-2, 2, D)
        self.phase = r.uniform(0, 2 * np.pi, D)
        self.jumps = r.uniform(-2.5, 2.5, (EVALS // 500 + 2, D))
        self.noise = np.random.default_rng(20_000 + seed)
        self.t = 0

    def optimum(self, t):
        if self.kind == "drift":  # one full period over the run, amplitude 1.5
            return self.x0 + 1.5 * np.sin(2 * np.pi * t / EVALS + self.phase)
        if self.kind == "jump":
            return self.jumps[int(t) // 500]
        return self.x0

    def true(self, X, t):
        X = np.atleast_2d(X)
        if self.kind == "rosenbrock":
            z = X - self.x0 + 1.0
            return (100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2).sum(1)
        out = np.empty(len(X))
        for i, x in enumerate(X):
            out[i] = float(((x - self.optimum(t + i)) ** 2).sum())
        return out

    def evaluate(self, X):
        f = self.true(X, self.t)
        self.t += len(f)
        return f, f + self.noise.normal(0, NOISE, len(f))


# ------------------------------------------------------------------------------------ tuner adapters
class Ours:
    def __init__(self, kind, seed, **opts):
        self.o = make_optimizer(kind, np.tile([LO, HI], (D, 1)), seed, **opts)

    def ask(self):
        return self.o.ask()

    def tell(self, X, y):
        self.o.tell(y)

    def recommend(self):
        return self.o.recommend()


class NevergradPeer:
    def __init__(self, name, seed):
        import nevergrad as ng

        p = ng.p.Array(init=np.zeros(D)).set_bounds(LO, HI)
        p.set_mutation(sigma=SIGMA0 * (HI - LO))
        p.random_state = np.random.RandomState(seed)
        self.o = ng.optimizers.registry[name](parametrization=p, budget=EVALS)
        self.c = None

    def ask(self):
        self.c = self.o.ask()
        return self.c.value[None, :]

    def tell(self, X, y):
        self.o.tell(self.c, float(y[0]))

    def recommend(self):
        return np.asarray(self.o.provide_recommendation().value)


class PycmaPeer:
    def __init__(self, seed):
        import cma

        self.o = cma.CMAEvolutionStrategy(np.zeros(D), SIGMA0 * (HI - LO), {
            "bounds": [LO, HI], "seed": seed + 1, "verbose": -9, "maxfevals": 10**9,
            "tolfun": 0, "tolx": 0, "tolfunhist": 0, "tolstagnation": 10**9, "tolflatfitness": 10**9})
        self.X = None

    def ask(self):
        self.X = self.o.ask()
        return np.asarray(self.X)

    def tell(self, X, y):
        self.o.tell(self.X, list(map(float, y)))

    def recommend(self):
        return np.asarray(self.o.mean)


class CmaesPeer:
    def __init__(self, seed):
        import cmaes

        self.o = cmaes.CMA(mean=np.zeros(D), sigma=SIGMA0 * (HI - LO), bounds=np.tile([LO, HI], (D, 1)),
                           seed=seed)

    def ask(self):
        return np.array([self.o.ask() for _ in range(self.o.population_size)])

    def tell(self, X, y):
        self.o.tell(list(zip(X, map(float, y))))

    def recommend(self):
        return np.asarray(self.o.mean)


OUR_TUNERS = {
    "spsa": lambda s: Ours("spsa", s, iterations=EVALS // 2),
    "spsa_tracking": lambda s: Ours("spsa", s, iterations=EVALS // 2, tracking=True),
    "es": lambda s: Ours("es", s),
    "cmaes": lambda s: Ours("cmaes", s, sigma0=SIGMA0),
    "pbt": lambda s: Ours("pbt", s),
}
PEER_TUNERS = {
    "nevergrad_spsa": lambda s: NevergradPeer("SPSA", s),
    "nevergrad_cma": lambda s: NevergradPeer("CMA", s),
    "nevergrad_tbpsa": lambda s: NevergradPeer("TBPSA", s),
    "pycma": lambda s: PycmaPeer(s),
    "cmaes": lambda s: CmaesPeer(s),
}


def _tuner_job(args):
    group, name, problem, seed = args
    warnings.filterwarnings("ignore")
    try:
        factory = (OUR_TUNERS if group == "ours" else PEER_TUNERS)[name]
        opt = factory(seed)
        prob = Problem(problem, seed)
        total, n = 0.0, 0
        while n < EVALS:
            X = opt.ask()
            Xe = X[: EVALS - n]  # the last round may be cut at the budget; it is then not told
            f, y = prob.evaluate(Xe)
            total += float(f.sum())
            n += len(f)
            if len(Xe) == len(X):
                opt.tell(X, y)
        rec = np.clip(opt.recommend(), LO, HI)
        return group, name, problem, seed, total / n, float(prob.true(rec, EVALS - 1)[0]), None
    except Exception as e:  # a peer that breaks is reported, not fatal
        return group, name, problem, seed, None, None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------------- timing
def _pct(ts):
    """p50/p99/max in us over all samples, plus the p99 of each third of the run and their median
    (what the budgets judge): on a shared 2-core machine a burst of another tenant's work lands in one
    block and moves a single p99 a lot; the median of three blocks is not moved by one burst."""
    a = np.asarray(ts) * 1e6
    blocks = [round(float(np.percentile(b, 99)), 1) for b in np.array_split(a, 3)]
    return {"p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1), "n": int(a.size), "p99_blocks": blocks,
            "p99_median_of_blocks": float(np.median(blocks))}


_cpu_clock = time.thread_time  # CPU time of this thread: excludes time other tenants hold the core


def _time_tuner(make, rounds, seed=0, raw=None):
    prob = Problem("sphere", seed)
    opt = make(seed)
    for _ in range(20):  # warm-up, not timed
        X = opt.ask()
        opt.tell(X, prob.evaluate(X)[1])
    wall, cpu, tell_wall, tell_cpu, sizes = [], [], [], [], []
    pc, tc = time.perf_counter, _cpu_clock
    gc.disable()
    try:
        for _ in range(rounds):
            w0, c0 = pc(), tc()
            X = opt.ask()
            w1, c1 = pc(), tc()
            _, y = prob.evaluate(X)
            w2, c2 = pc(), tc()
            opt.tell(X, y)
            w3, c3 = pc(), tc()
            wall.append((w1 - w0) + (w3 - w2))
            cpu.append((c1 - c0) + (c3 - c2))
            tell_wall.append(w3 - w2)
            tell_cpu.append(c3 - c2)
            sizes.append(len(X))
    finally:
        gc.enable()
    n = float(np.mean(sizes))
    if raw is not None:   # the per-round CPU samples, for the replays' minimum
        raw.extend((cpu, tell_cpu))
    return {"per_round_us": _pct(wall), "per_round_cpu_us": _pct(cpu), "batch": n,
            "per_eval_us": {"p50": round(float(np.percentile(wall, 50)) * 1e6 / n, 2),
                            "p99": round(float(np.percentile(wall, 99)) * 1e6 / n, 2)},
            "tell_us": _pct(tell_wall), "tell_cpu_us": _pct(tell_cpu)}


def _time_bandit(select, update, steps, context_fn=None, seed=0, raw=None):
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.1, 0.9, 10)
    for _ in range(200):  # warm-up (caches, lazy imports), not timed
        x = context_fn(rng) if context_fn else None
        a = select(x)
        update(a, float(rng.random() < means[a % 10]), x)
    wall, cpu = [], []
    pc, tc = time.perf_counter, _cpu_clock
    # The simulated environment is drawn before timing: the reward's uniform (a Generator call,
    # ~1 us on the 2-core host, was inside the timed step) and the means as Python floats, so that
    # what remains in the step is the bandit's select + update and one float comparison.
    us = rng.random(steps).tolist()
    mean_l = means.tolist()
    gc.disable()
    try:
        for t in range(steps):
            x = context_fn(rng) if context_fn else None
            w0, c0 = pc(), tc()
            a = select(x)
            update(a, float(us[t] < mean_l[a % 10]), x)
            wall.append(pc() - w0)
            cpu.append(tc() - c0)
    finally:
        gc.enable()
    if raw is not None:   # the per-step CPU samples, for the replays' minimum
        raw.append(cpu)
    return {"per_step_us": _pct(wall), "per_step_cpu_us": _pct(cpu)}


REPLAYS = 5


def _our_jobs(rounds: int, steps: int) -> dict:
    """key -> (section, job): each job builds the algorithm afresh from the same seed and times it,
    returning (figures, per-step CPU arrays)."""
    jobs = {}
    for name, make in OUR_TUNERS.items():
        def tj(make=make):
            raw: list = []
            return _time_tuner(make, rounds, raw=raw), tuple(raw)
        jobs[name] = ("tuners", tj)
    for kind in ["thompson", "gaussian_thompson", "ucb", "klucb", "lexicographic", "tournament",
                 "linucb", "lints"]:
        for opts in ({}, {"discount": 0.99}):
            if kind == "tournament" and opts:
                continue
            linear = kind in ("linucb", "lints")

            def bj(kind=kind, opts=opts, linear=linear):
                raw: list = []
                if linear:
                    b = make_bandit(kind, 10, 1, dim=7, **opts)
                    res = _time_bandit(lambda x: b.select(context=x), lambda a, r, x: b.update(a, r, context=x),
                                       steps, _ctx, raw=raw)
                else:
                    b = make_bandit(kind, 10, 1, **opts)
                    res = _time_bandit(lambda x: b.select(), lambda a, r, x: b.update(a, r, feasible=r > 0), steps,
                                       raw=raw)
                return res, tuple(raw)
            jobs[kind + ("_discounted" if opts else "")] = ("bandits", bj)
    return jobs


def _ctx(rng):
    x = np.zeros(7)
    x[0] = rng.random()
    x[1 + rng.integers(0, 3)] = 1.0
    x[4 + rng.integers(0, 2)] = 1.0
    x[6] = 1.0
    return x


def _cost(quick):
    out = {"tuners": {}, "bandits": {}}
    # Half a second of small numpy work first: an idle vCPU is clocked down and its caches are cold, which
    # otherwise shows up as a slower first algorithm.
    t_end, v = time.perf_counter() + 0.5, np.ones(10)
    while time.perf_counter() < t_end:
        v = np.minimum(v + 1.0, 2.0)
    r_ours, r_peer = (1000, 40) if quick else (3000, 200)
    s_ours, s_peer = (2000, 150) if quick else (10000, 500)
    # Ours: REPLAYS interleaved runs of the same seeded sequence (the same computation each time:
    # the cores are deterministic). A step's own cost is its minimum over the replays; the first
    # replay's figures are reported as measured (host included).
    ours = _our_jobs(r_ours, s_ours)
    raw: dict[str, list] = {}
    for rep in range(REPLAYS):
        for key, (section, job) in ours.items():
            res, arrays = job()
            if rep == 0:
                out[section][key] = res
            raw.setdefault(key, []).append(arrays)
    for key, (section, _) in ours.items():
        reps = raw[key]
        parts = {"per_round_cpu_us" if section == "tuners" else "per_step_cpu_us": 0}
        if section == "tuners":
            parts["tell_cpu_us"] = 1
        for label, i in parts.items():
            own = np.min(np.array([r[i] for r in reps]), axis=0)
            out[section][key][label.replace("_cpu_us", "_own_cpu_us")] = _pct(own)
    for name, make in PEER_TUNERS.items():
        try:
            rounds = r_peer if name.startswith("nevergrad") else r_ours // 2
            out["tuners"]["peer:" + name] = _time_tuner(make, rounds)
        except Exception as e:
            out["tuners"]["peer:" + name] = {"error": f"{type(e).__name__}: {e}"}
    for name, mk in _peer_bandits().items():
        try:
            sel, upd, ctx = mk(1)
            out["bandits"]["peer:" + name] = _time_bandit(sel, upd, s_peer, _ctx if ctx else None)
        except Exception as e:
            out["bandits"]["peer:" + name] = {"error": f"{type(e).__name__}: {e}"}
    return out


# ---------------------------------------------------------------------------------------- bandit peers
def _peer_bandits():
    """name -> factory(seed) -> (select(x), update(arm, reward, x), contextual)."""

    def mabwiser(policy, contextual=False):
        def mk(seed, n_arms=10):
            from mabwiser.mab import MAB, LearningPolicy

            lp = {"ts": LearningPolicy.ThompsonSampling(), "ucb": LearningPolicy.UCB1(alpha=1.0),
                  "linucb": LearningPolicy.LinUCB(alpha=1.0)}[policy]
            arms = list(range(n_arms))
            m = MAB(arms=arms, learning_policy=lp, seed=seed)
            if contextual:
                m.fit(decisions=arms, rewards=[0.0] * n_arms, contexts=np.zeros((n_arms, 7)))
                return (lambda x: int(m.predict(x[None, :])),
                        lambda a, r, x: m.partial_fit([a], [r], contexts=x[None, :]), True)
            m.fit(decisions=arms, rewards=[0] * n_arms)  # one neutral observation per arm to initialise
            return (lambda x: int(m.predict()), lambda a, r, x: m.partial_fit([a], [int(r >= 0.5)
                                                                                  if policy == "ts" else r]), False)
        return mk

    def river(policy, contextual=False):
        def mk(seed, n_arms=10):
            import river.bandit as rb
            from river import proba

            arms = list(range(n_arms))
            if contextual:
                p = rb.LinUCBDisjoint(alpha=1.0, seed=seed)
                return (lambda x: p.pull(arms, context=dict(enumerate(x))),
                        lambda a, r, x: p.update(a, dict(enumerate(x)), r), True)
            p = (rb.ThompsonSampling(reward_obj=proba.Beta(), seed=seed) if policy == "ts"
                 else rb.UCB(delta=1.0, seed=seed))
            return (lambda x: p.pull(arms), lambda a, r, x: p.update(a, r), False)
        return mk

    return {"mabwiser_thompson": mabwiser("ts"), "mabwiser_ucb1": mabwiser("ucb"),
            "mabwiser_linucb": mabwiser("linucb", True), "river_thompson": river("ts"),
            "river_ucb": river("ucb"), "river_linucb": river("linucb", True)}


# ----------------------------------------------------------------------------------- bandit problems
def _ours_bandit(kind, **opts):
    def mk(seed, n_arms=10, dim=None):
        b = make_bandit(kind, n_arms, seed, **({"dim": dim} if dim else {}), **opts)
        if dim:
            return (lambda x: b.select(context=x), lambda a, r, x, f=None: b.update(a, r, context=x))
        return (lambda x: b.select(), lambda a, r, x, f=None: b.update(a, r, feasible=f))
    return mk


OUR_BERNOULLI = {
    "thompson": _ours_bandit("thompson"),
    "klucb": _ours_bandit("klucb"),
    "ucb": _ours_bandit("ucb"),
    "gaussian_thompson": _ours_bandit("gaussian_thompson", prior_mean=0.5, prior_var=0.25),
    # Drift-aware: memory ~ a quarter of the 2,000-step segments of the piecewise problem.
    "thompson_discounted": _ours_bandit("thompson", discount=0.998),
    "thompson_window": _ours_bandit("thompson", window=1000),
    "thompson_ph": _ours_bandit("thompson", detector="ph"),
    "klucb_discounted": _ours_bandit("klucb", discount=0.998),
}
OUR_LINEAR = {
    "linucb": _ours_bandit("linucb", alpha=1.0),
    "linucb_discounted": _ours_bandit("linucb", alpha=1.0, discount=0.99),
    "lints": _ours_bandit("lints", alpha=0.5),
    "lints_discounted": _ours_bandit("lints", alpha=0.5, discount=0.99),
}
PEER_BERNOULLI = ["mabwiser_thompson", "mabwiser_ucb1", "river_thompson", "river_ucb"]
PEER_LINEAR = ["mabwiser_linucb", "river_linucb"]


def _bernoulli_regret(sel, upd, seed, steps, period):
    rng = np.random.default_rng(30_000 + seed)
    regret = 0.0
    means = rng.uniform(0.1, 0.9, 10)
    for t in range(steps):
        if period and t and t % period == 0:
            means = rng.uniform(0.0, 1.0, 10)
        a = sel(None)
        regret += float(means.max() - means[a])
        upd(a, float(rng.random() < means[a]), None)
    return regret


def _linear_regret(sel, upd, seed, steps):
    rng = np.random.default_rng(40_000 + seed)
    k = 5
    theta0 = rng.normal(0, 0.5, (k, 7))
    amp = rng.normal(0, 0.5, (k, 7))
    per = rng.uniform(2000, 6000, (k, 1))
    ph = rng.uniform(0, 2 * np.pi, (k, 7))
    regret = 0.0
    for t in range(steps):
        x = _ctx(rng)
        mu = (theta0 + amp * np.sin(2 * np.pi * t / per + ph)) @ x
        a = sel(x)
        regret += float(mu.max() - mu[a])
        upd(a, float(mu[a] + rng.normal(0, 0.1)), x)
    return regret


def _lexi_problem(seed):
    rng = np.random.default_rng(50_000 + seed)
    q = np.sort(rng.uniform(0.2, 0.9, 10))[::-1].copy()
    p = np.empty(10)
    p[:3] = rng.uniform(0.5, 0.8, 3)  # the three best-quality variants miss the SLA
    p[3:] = rng.uniform(0.97, 0.995, 7)
    return q, p


def _lexi_regret(sel, upd, seed, steps, sla=0.9):
    q, p = _lexi_problem(seed)
    rng = np.random.default_rng(60_000 + seed)
    ok = p >= sla
    best = q[ok].max()
    regret, infeasible = 0.0, 0
    for _ in range(steps):
        a = sel(None)
        regret += best - (q[a] if ok[a] else 0.0)  # an SLA breach delivers no value
        infeasible += int(not ok[a])
        upd(a, float(q[a] + rng.normal(0, 0.1)), None, bool(rng.random() < p[a]))
    return regret, infeasible / steps


def _bandit_job(args):
    problem, group, name, seed, steps = args
    warnings.filterwarnings("ignore")
    try:
        if group == "ours":
            mk = {**OUR_BERNOULLI, **OUR_LINEAR}.get(name)
            if name == "lexicographic":
                mk = _ours_bandit("lexicographic", feasible_rate=0.9, prior_mean=0.5, prior_var=0.25)
            elif name == "gaussian_thompson_ignoring_sla":
                mk = _ours_bandit("gaussian_thompson", prior_mean=0.5, prior_var=0.25)
            sel, upd = mk(seed, 5, 7) if problem == "linear" else mk(seed)
        else:
            sel, upd0, _ = _peer_bandits()[name](seed, 5) if problem == "linear" else _peer_bandits()[name](seed)
            upd = lambda a, r, x, f=None: upd0(a, r, x)  # noqa: E731
        if problem == "stationary":
            return problem, group, name, seed, _bernoulli_regret(sel, upd, seed, steps, 0), None
        if problem == "piecewise":
            return problem, group, name, seed, _bernoulli_regret(sel, upd, seed, steps, 2000), None
        if problem == "linear":
            return problem, group, name, seed, _linear_regret(sel, upd, seed, steps), None
        return problem, group, name, seed, _lexi_regret(sel, upd, seed, steps), None
    except Exception as e:
        return problem, group, name, seed, None, f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------------- run
def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _r(x, nd=3):
    return None if x is None else round(float(x), nd)


def _parallel(fn, jobs, workers):
    if workers <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, jobs, chunksize=1))


def _tuner_quality(quick, workers):
    n_ours, n_peer, n_ng = (2, 2, 1) if quick else (10, 10, 5)
    problems = ["sphere", "rosenbrock", "drift", "jump"]
    jobs = [("ours", n, p, s) for n in OUR_TUNERS for p in problems for s in range(n_ours)]
    # nevergrad costs ~1 ms per evaluation: with quick it skips Rosenbrock (no floor depends on it).
    jobs += [("peer", n, p, s) for n in PEER_TUNERS for p in problems
             for s in range(n_ng if n.startswith("nevergrad") else n_peer)
             if not (quick and n.startswith("nevergrad") and p == "rosenbrock")]
    # Slowest (nevergrad) first so that the pool's tail is short.
    jobs.sort(key=lambda j: not j[1].startswith("nevergrad"))
    res = _parallel(_tuner_job, jobs, workers)
    out = {"method": f"{D}-D, bounds [{LO}, {HI}], {EVALS} evaluations, additive N(0, {NOISE}) noise; "
                     f"every method starts at the centre with initial step {SIGMA0} x range; seeds: ours "
                     f"{n_ours}, pycma/cmaes {n_peer}, nevergrad {n_ng}; floors compare means over the "
                     "seeds both sides ran",
           "ours": {}, "peers": {}}
    for p in problems:
        for group in ("ours", "peers"):
            names = OUR_TUNERS if group == "ours" else PEER_TUNERS
            for n in names:
                rows = [r for r in res if r[0] == group[:4] and r[1] == n and r[2] == p]
                if not rows:
                    out[group].setdefault(n, {})[p] = {"skipped": "not run with quick"}
                    continue
                errs = [r[6] for r in rows if r[6]]
                entry = {"online_regret": _r(_mean([r[4] for r in rows])),
                         "final_error": _r(_mean([r[5] for r in rows]), 4),
                         "per_seed_regret": {r[3]: _r(r[4]) for r in rows},
                         "per_seed_final": {r[3]: _r(r[5], 4) for r in rows}}
                if errs:
                    entry = {"error": errs[0]}
                out[group].setdefault(n, {})[p] = entry
    return out


def _bandit_quality(quick, workers):
    n_ours, n_peer = (2, 1) if quick else (10, 3)
    steps = {"stationary": 3000 if quick else 5000, "piecewise": 10000, "linear": 1500 if quick else 6000,
             "lexicographic": 3000 if quick else 10000}
    jobs = []
    for s in range(n_ours):
        jobs += [("stationary", "ours", n, s, steps["stationary"]) for n in ["thompson", "klucb", "ucb",
                                                                              "gaussian_thompson"]]
        jobs += [("piecewise", "ours", n, s, steps["piecewise"]) for n in ["thompson", "thompson_discounted",
                                                                            "thompson_window", "thompson_ph",
                                                                            "klucb_discounted"]]
        jobs += [("linear", "ours", n, s, steps["linear"]) for n in OUR_LINEAR]
        jobs += [("lexicographic", "ours", n, s, steps["lexicographic"])
                 for n in ["lexicographic", "gaussian_thompson_ignoring_sla"]]
    # Stationary regret differs between seeds by +/-40%: river (fast) runs every seed ours runs,
    # mabwiser (~0.3 ms a step) half of them, so the comparison is not decided by seed noise.
    for s in range(n_ours):
        jobs += [("stationary", "peer", n, s, steps["stationary"]) for n in PEER_BERNOULLI
                 if n.startswith("river") or s < max(n_peer, n_ours // 2)]
    for s in range(n_peer):
        jobs += [("piecewise", "peer", n, s, steps["piecewise"]) for n in ["mabwiser_thompson", "river_thompson"]]
        jobs += [("linear", "peer", n, s, steps["linear"]) for n in PEER_LINEAR]
    jobs.sort(key=lambda j: j[1] != "peer")
    res = _parallel(_bandit_job, jobs, workers)
    out = {"method": {"stationary": f"10 Bernoulli arms, means U(0.1, 0.9), {steps['stationary']} steps",
                      "piecewise": f"10 Bernoulli arms, means redrawn U(0, 1) every 2000 steps, "
                                   f"{steps['piecewise']} steps",
                      "linear": f"5 arms, context [load, class one-hot(3), hardware one-hot(2), 1], "
                                f"coefficients drifting sinusoidally, N(0, 0.1) noise, {steps['linear']} steps",
                      "lexicographic": f"10 variants, the 3 best-quality ones meet the SLA (rate >= 0.9) only "
                                       f"50-80% of the time; a breach delivers no value; {steps['lexicographic']} steps",
                      "seeds": f"ours {n_ours}, peers {n_peer} (first seeds); regret = cumulative"}}
    for prob in steps:
        sec = out.setdefault(prob, {})
        for group in ("ours", "peer"):
            names = sorted({r[2] for r in res if r[0] == prob and r[1] == group})
            for n in names:
                rows = [r for r in res if r[0] == prob and r[1] == group and r[2] == n]
                err = next((r[5] for r in rows if r[5]), None)
                key = ("peer:" if group == "peer" else "") + n
                if err:
                    sec[key] = {"error": err}
                elif prob == "lexicographic":
                    sec[key] = {"regret": _r(_mean([r[4][0] for r in rows]), 1),
                                "infeasible_rate": _r(_mean([r[4][1] for r in rows]), 4)}
                else:
                    sec[key] = {"regret": _r(_mean([r[4] for r in rows]), 1),
                                "per_seed": {r[3]: _r(r[4], 1) for r in rows}}
    return out


def _seed_mean(entry, seeds, key="per_seed_regret"):
    vals = [entry[key][s] for s in seeds if s in entry.get(key, {})]
    return float(np.mean(vals)) if vals else None


def _floors(cost, tq, bq):
    fl = {}
    # Tuners: compare on the seeds the peer ran (nevergrad runs fewer).
    for p in ("drift", "jump"):
        peers = {n: e[p] for n, e in tq["peers"].items() if "online_regret" in e[p]}
        best_ours = min(tq["ours"], key=lambda n: tq["ours"][n][p]["online_regret"] or math.inf)
        ours_e = tq["ours"][best_ours][p]
        cmp = {}
        for n, e in peers.items():
            seeds = list(e["per_seed_regret"])
            cmp[n] = {"peer": _r(_seed_mean(e, seeds)), "ours": _r(_seed_mean(ours_e, seeds))}
        ratios = {n: c["ours"] / c["peer"] for n, c in cmp.items()}
        best_peer = min(cmp, key=lambda n: cmp[n]["peer"])
        fl[f"{p}_regret"] = {"ours": best_ours, "vs_peers": cmp,
                             "ratio_to_best_peer": _r(ratios[best_peer]), "best_peer": best_peer,
                             "below_every_peer": all(r < 1 for r in ratios.values()),
                             "pass": all(r < 1 for r in ratios.values()) and ratios[best_peer] <= 0.6}
    peers = {n: e["sphere"] for n, e in tq["peers"].items() if "final_error" in e["sphere"]}
    best_ours = min(tq["ours"], key=lambda n: tq["ours"][n]["sphere"]["final_error"] or math.inf)
    best_peer = min(peers, key=lambda n: peers[n]["final_error"])
    seeds = list(peers[best_peer]["per_seed_final"])
    o = _seed_mean(tq["ours"][best_ours]["sphere"], seeds, "per_seed_final")
    pe = _seed_mean(peers[best_peer], seeds, "per_seed_final")
    fl["sphere_final_error"] = {"ours": best_ours, "ours_value": _r(o, 4), "best_peer": best_peer,
                                "peer_value": _r(pe, 4), "pass": o <= pe}
    pw = bq["piecewise"]
    cut = 1 - pw["thompson_discounted"]["regret"] / pw["thompson"]["regret"]
    fl["piecewise_discount_cut"] = {"plain_thompson": pw["thompson"]["regret"],
                                    "discounted_thompson": pw["thompson_discounted"]["regret"],
                                    "cut": _r(cut), "pass": cut >= 0.30}
    st = bq["stationary"]
    peer_names = [n for n in st if n.startswith("peer:") and "error" not in st[n]]
    ours_names = ("thompson", "klucb", "ucb", "gaussian_thompson")
    best_ours = min(ours_names, key=lambda n: st[n]["regret"])
    pairs = {}
    for pn in peer_names:
        seeds = list(st[pn]["per_seed"])
        o = np.array([st[best_ours]["per_seed"][s] for s in seeds])
        pe = np.array([st[pn]["per_seed"][s] for s in seeds])
        diff = o - pe  # same problem instance per seed
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("inf")
        pairs[pn[5:]] = {"ours": _r(o.mean(), 1), "peer": _r(pe.mean(), 1), "seeds": len(seeds),
                         "diff_se": _r(se, 1), "no_worse_strict": bool(o.mean() <= pe.mean()),
                         "no_worse_within_2se": bool(diff.mean() <= 2 * se)}
    fl["stationary_bandits"] = {
        "best_ours": best_ours, "vs_peers": pairs,
        "all_ours": {n: st[n]["regret"] for n in ours_names},
        "pass_strict": bool(peer_names) and all(p["no_worse_strict"] for p in pairs.values()),
        "pass": bool(peer_names) and all(p["no_worse_within_2se"] for p in pairs.values()),
        "note": "pass = mean paired difference (ours - peer) <= 2 standard errors, i.e. not significantly "
                "worse; pass_strict = lower or equal mean",
    }
    lx = bq["lexicographic"]
    fl["lexicographic"] = {"lexicographic": lx["lexicographic"],
                           "plain_thompson_ignoring_sla": lx["gaussian_thompson_ignoring_sla"],
                           "pass": lx["lexicographic"]["regret"] < lx["gaussian_thompson_ignoring_sla"]["regret"]}
    budgets = {}

    def budget(wall, cpu, own, limit):
        # Pass on the step's own CPU cost: per step, the minimum CPU time over REPLAYS interleaved
        # runs of the same seeded sequence, then its p99 over the steps. On this shared 2-core VM a
        # single run's CPU p99 also carries the hypervisor's steal and other tenants' cache traffic
        # (the same code measured 1.5-2x apart in back-to-back runs); both are shown beside it.
        return {"p99_own_cpu_us": own["p99"], "p50_own_cpu_us": own["p50"],
                "p99_cpu_us_one_run": cpu["p99_median_of_blocks"], "p99_cpu_blocks_us_one_run": cpu["p99_blocks"],
                "p99_wall_us_one_run": wall["p99"], "p50_wall_us": wall["p50"], "limit_us": limit,
                "pass": own["p99"] <= limit}

    for n in ("spsa", "es", "pbt"):
        e = cost["tuners"][n]
        budgets[n] = budget(e["per_round_us"], e["per_round_cpu_us"], e["per_round_own_cpu_us"], 100)
    e = cost["tuners"]["cmaes"]
    budgets["cmaes_generation_boundary"] = budget(e["tell_us"], e["tell_cpu_us"], e["tell_own_cpu_us"], 500)
    for n, e in cost["bandits"].items():
        if not n.startswith("peer:"):
            budgets[n] = budget(e["per_step_us"], e["per_step_cpu_us"], e["per_step_own_cpu_us"], 100)
    fl["budgets"] = {"each": budgets, "pass": all(b["pass"] for b in budgets.values())}
    fl["all_pass"] = all(v["pass"] for v in fl.values() if isinstance(v, dict) and "pass" in v)
    return fl


def _versions():
    out = {}
    for mod in ("numpy", "nevergrad", "cma", "cmaes", "mabwiser", "river"):
        try:
            m = __import__(mod)
            out[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # a missing peer is reported, not fatal
            out[mod] = {"error": f"{type(e).__name__}: {e}"}
    return out


def run(quick: bool) -> dict:
    """Whole tier2 benchmark. quick: fewer seeds/steps (< 60 s on 2 cores); full: a few minutes."""
    t0 = time.perf_counter()
    warnings.filterwarnings("ignore")
    cost = _cost(quick)  # alone, before the process pool exists: timings are not disturbed by it
    workers = min(2, os.cpu_count() or 1)
    tq = _tuner_quality(quick, workers)
    bq = _bandit_quality(quick, workers)
    return {
        "suite": "tier2",
        "quick": quick,
        "machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "versions": _versions()},
        "cost_method": "time.perf_counter (wall) and time.thread_time (CPU of this thread) around each "
                       "ask+tell (evaluation excluded) or select+update, gc disabled, same process, one "
                       "thread; p50/p99/max in microseconds; budgets are judged on the CPU-time p99, median of the p99s "
                       "of three consecutive blocks of the run",
        "load_average_at_start": _load(),
        "cost": cost,
        "tuners": tq,
        "bandits": bq,
        "floors": _floors(cost, tq, bq),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
