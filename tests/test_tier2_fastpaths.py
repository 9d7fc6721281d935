"""Tier 2's Python-float hot paths give bit-identical results to the array code they replaced.

Each reference below is the numpy form of the same step (the same random numbers, from the component's
Draws, and the same IEEE operations per element); the same seed and observations through both must give
the same points, iterates and recommendations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from daemon.tier2 import make_bandit, make_optimizer
from daemon.tier2.bandits.base import ArmStats, argmax_list
from daemon.tier2.bandits.thompson import _gauss_draw
from daemon.tier2.optim.base import BoxOptimizer, clip_
from daemon.tier2.optim.es import AntitheticES
from daemon.tier2.optim.spsa import SPSA


class ArraySPSA(SPSA):
    """SPSA on numpy arrays (theta_a, delta_a, avg_cur_a, avg_prev_a, ema_a)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.theta_a = np.array(self.th)
        self._reset_average()

    def _reset_average(self):
        super()._reset_average()
        if hasattr(self, "theta_a"):
            self.cur_a, self.prev_a, self.ema_a = np.zeros(self.d), np.zeros(self.d), self.theta_a.copy()

    _ask_user = BoxOptimizer._ask_user  # the array path: _ask() then to_user()

    def _ask(self):
        _, ck = self.gains()
        self.ck = ck
        self.delta_a = np.array(self.draws.uniforms(self.rng, self.d)) < 0.5
        self.delta_a = self.delta_a * 2.0 - 1.0
        base = clip_(self.theta_a.copy(), ck, 1.0 - ck)
        cd = ck * self.delta_a
        z = np.empty((2, self.d))
        np.add(base, cd, out=z[0])
        np.subtract(base, cd, out=z[1])
        return z

    def _tell(self, y, _ys):
        cfg = self.cfg
        dy = float(y[0] - y[1])
        gmag = abs(dy) / (2.0 * self.ck)
        if cfg.a is None and self.gcount < cfg.calibration_rounds:
            self.gsum += gmag
            self.gcount += 1
            gm = self.gsum / self.gcount
            if gm > 0.0 and math.isfinite(gm):
                self.a = cfg.initial_step * (self.A + 1.0) ** cfg.alpha / gm
        ak, _ = self.gains()
        step = (ak * dy / (2.0 * self.ck)) * self.delta_a
        clip_(step, -cfg.max_step, cfg.max_step)
        self.theta_a -= step
        clip_(self.theta_a, 0.0, 1.0)
        self.th = self.theta_a.tolist()  # gains() and the detector path read the base class state
        self.k += 1
        self.cur_a += self.theta_a
        self.n_cur += 1
        if self.k >= 2 * self.epoch_start:
            self.prev_a, self.n_prev = self.cur_a, self.n_cur
            self.cur_a = np.zeros(self.d)
            self.n_cur = 0
            self.epoch_start = self.k
        self.ema_a += self.cfg.tracking_ema * (self.theta_a - self.ema_a)
        if self.detector is not None and self.detector.update(0.5 * (y[0] + y[1])):
            self.changes += 1
            self.tracking = True
            self._reset_average()

    def _best(self):
        if self.tracking:
            return self.ema_a.copy()
        n = self.n_cur + self.n_prev
        if n == 0:
            return self.theta_a.copy()
        return (self.cur_a + self.prev_a) / n


class ArrayES(AntitheticES):
    def _tell(self, y, _ys):
        cfg = self.cfg
        p = cfg.pairs
        w = np.empty(2 * p)
        order = np.argsort(y, kind="stable")
        w[order] = self.util
        wp, wm = w[:p], w[p:]
        self.mu += ((wp - wm) * (cfg.lr * self.sigma / p)) @ self.pert[self.cur, :p]
        clip_(self.mu, self.lo, self.hi)
        sq = np.array(self.sq[self.cur]) / self.d - 1.0
        self.sigma *= math.exp(cfg.lr_sigma * sum(((wp + wm) * sq).tolist()) / p)  # left to right
        self.sigma = min(max(self.sigma, cfg.sigma_min), cfg.sigma_max)
        if self.detector is not None and self.detector.update(0.5 * float(y[order[p - 1]] + y[order[p]])):
            self.changes += 1
            self.sigma = max(self.sigma, cfg.sigma0)


def _iterate(o) -> bytes:
    return np.asarray(o.theta_a if isinstance(o, ArraySPSA) else (o.th if isinstance(o, SPSA) else o.mu)).tobytes()


@pytest.mark.parametrize("cls, kind, opts", [
    (ArraySPSA, "spsa", {}), (ArraySPSA, "spsa", {"tracking": True, "max_step": 0.01}),
    (ArraySPSA, "spsa", {"a": 5.0, "c": 0.2, "detector": None}),
    (ArrayES, "es", {}), (ArrayES, "es", {"pairs": 3, "sigma_min": 0.05})])
def test_optimizer_fast_paths_equal_the_array_code(cls, kind, opts):
    bounds = np.tile([-5.0, 5.0], (10, 1))
    bounds[3] = [0.0, 1e-3]   # a tiny range and a wide one: clipping at both faces
    fast = make_optimizer(kind, bounds, 4, **opts)
    ref = cls(bounds, 4, **opts)
    rng = np.random.default_rng(9)
    for r in range(400):
        X, Xr = fast.ask(), ref.ask()
        assert X.tobytes() == Xr.tobytes()
        y = ((X - (4.0 if r > 200 else -4.9)) ** 2).sum(1) + rng.normal(0, 3, len(X))
        if r % 37 == 3:
            y[-1] = np.nan    # rejected round
        if r % 41 == 5:
            y[:] = y[0]       # exact ties
        fast.tell(y.copy())
        ref.tell(y.copy())
        assert _iterate(fast) == _iterate(ref)
        assert (fast.k, fast.tracking) == (ref.k, ref.tracking) if kind == "spsa" else fast.sigma == ref.sigma
        assert fast.recommend().tobytes() == ref.recommend().tobytes()


def test_argmax_list_is_numpy_argmax():
    rng = np.random.default_rng(1)
    for _ in range(500):
        v = rng.choice([0.0, 1.0, 2.0, -np.inf, np.inf, np.nan, -0.0], size=rng.integers(1, 12)).tolist()
        if rng.random() < 0.5:
            v = [x for x in v if x == x] or [0.0]
        assert argmax_list(v) == int(np.argmax(np.array(v)))


def test_gaussian_draw_is_the_posterior_formula():
    # Statistics kept in units of 1/scale (discounted): the draw must be the posterior of the true
    # (scaled) statistics: prec = n/s2 + 1/pv; sd = 1/sqrt(prec); mean = (s/s2 + pm/pv) / prec.
    rng = np.random.default_rng(2)
    st = ArmStats(10, 0.97, 0)
    for _ in range(300):
        a = int(rng.integers(0, 9))  # arm 9 never played: n = 0
        st.add(a, float(rng.normal(a, 1.0)), None)
    assert st.scale < 1.0
    z = rng.standard_normal(10)
    for s2, pm, pv in ((1.0, 0.0, 1.0), (0.37, 0.5, 0.25), (1e-6, -3.0, 7.0)):
        prec = st.n / s2 + 1.0 / pv
        ref = (st.s / s2 + pm / pv) / prec + z / np.sqrt(prec)
        assert np.allclose(_gauss_draw(st, s2, pm, pv, z.tolist()), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind, opts", [("thompson", {"optimistic": True}), ("lexicographic", {"min_feasible_prob": 0.4}),
                                        ("lexicographic", {"feasible_rate": 0.99})])
def test_bandit_fast_paths_keep_their_invariants(kind, opts):
    """Optimistic Thompson never plays below the posterior mean; the SLA gate's fallback path runs."""
    b = make_bandit(kind, 6, 3, **opts)
    rng = np.random.default_rng(0)
    for t in range(600):
        a = b.select()
        b.update(a, float(rng.random() < 0.2 + 0.1 * a), feasible=bool(rng.random() < (0.5 if a < 3 else 0.95)))
    assert 0 <= b.select() < 6
    if kind == "lexicographic" and opts.get("feasible_rate") == 0.99:
        assert b.fallbacks > 0
