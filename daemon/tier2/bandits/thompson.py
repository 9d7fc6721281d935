"""Thompson sampling: Beta-Bernoulli and Gaussian, with discounting / sliding window for drift."""
from __future__ import annotations

import math

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, argmax_list, parse_bandit_options

# np.add.reduce is what ndarray.sum() runs, without its Python-level wrapper.
_sum = np.add.reduce


@register_struct
class ThompsonConfig(BanditOptions):
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    optimistic: bool = False  # optimistic Thompson: a draw below the posterior mean counts as the mean


@register("thompson")
class BetaThompson(Bandit):
    """Beta-Bernoulli Thompson sampling. Rewards in [0, 1]; a fractional reward r counts as r successes
    and 1 - r failures. With discount gamma the posterior forgets toward the prior with memory ~1/(1-gamma)
    steps (discounted Thompson sampling), so a changed arm is re-learnt."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(ThompsonConfig, options, "thompson")
        if cfg.prior_alpha <= 0 or cfg.prior_beta <= 0:
            raise ValueError("thompson.prior_alpha/prior_beta: expected > 0")
        self._init_bandit(n_arms, seed, cfg, clock)

    def _select(self, _x) -> int:
        st, cfg = self.stats, self.cfg
        k = self.n_arms
        ab = np.empty(2 * k)
        np.add(cfg.prior_alpha, st.s, out=ab[:k])
        np.subtract(st.n, st.s, out=ab[k:])
        ab[k:] += cfg.prior_beta
        # Beta(a, b) = Ga / (Ga + Gb): one gamma call for both halves costs less than Generator.beta.
        g = self.rng.standard_gamma(ab).tolist()
        # Python floats from here: the same IEEE divisions as the array code, fewer calls.
        theta = [ga / (ga + gb) for ga, gb in zip(g[:k], g[k:])]
        if cfg.optimistic:
            abl = ab.tolist()
            for i, (a, b) in enumerate(zip(abl[:k], abl[k:])):
                m = a / (a + b)
                t = theta[i]
                theta[i] = t if (t >= m or t != t) else m   # np.maximum, NaN passing through
        return argmax_list(theta)

    def _update(self, arm, r, x, feasible) -> None:
        if not (0.0 <= r <= 1.0):
            raise ValueError(f"thompson.update: reward must be in [0, 1], got {r} (arm {arm}); "
                             "use gaussian_thompson for unbounded rewards")
        self.stats.add(arm, r, feasible)


@register_struct
class GaussianThompsonConfig(BanditOptions):
    prior_mean: float = 0.0
    prior_var: float = 1.0  # variance of the prior on each arm's mean (reward units squared)
    noise_var: float | None = None  # known reward noise variance; None -> pooled estimate


@register("gaussian_thompson")
class GaussianThompson(Bandit):
    """Gaussian Thompson sampling: each arm's mean ~ N(prior_mean, prior_var), rewards ~ N(mean, s2) with
    s2 known or pooled across arms (weighted residual variance, floored). Sample each posterior mean,
    play the argmax."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(GaussianThompsonConfig, options, "gaussian_thompson")
        if cfg.prior_var <= 0:
            raise ValueError(f"gaussian_thompson.prior_var: expected > 0, got {cfg.prior_var}")
        self._init_bandit(n_arms, seed, cfg, clock)

    def noise_var(self) -> float:
        if self.cfg.noise_var is not None:
            return self.cfg.noise_var
        return pooled_var(self.stats, self.cfg.prior_var, self.n_arms)

    def _select(self, _x) -> int:
        cfg, d = self.cfg, self.stats.data
        s2 = self.noise_var()
        return argmax_list(_gauss_draw(d, s2, cfg.prior_mean, cfg.prior_var, self.rng.standard_normal(self.n_arms)))


def _gauss_draw(d, s2: float, prior_mean: float, prior_var: float, z) -> list[float]:
    """Posterior draws mean + sd * z per arm, on Python floats, each element through the same IEEE
    operations as the array form: prec = n/s2 + 1/pv; sd = 1/sqrt(prec);
    mean = (s/s2 + pm/pv) * (sd * sd)."""
    inv_s2, inv_pv, pm = 1.0 / s2, 1.0 / prior_var, prior_mean / prior_var
    out = []
    for n, s, zz in zip(d[0].tolist(), d[1].tolist(), z.tolist()):
        sd = 1.0 / math.sqrt(n * inv_s2 + inv_pv)
        out.append((s * inv_s2 + pm) * (sd * sd) + sd * zz)
    return out


def pooled_var(st, prior_var: float, k: int) -> float:
    """Reward noise variance pooled over arms (weighted residual sum of squares / weight), floored;
    the prior variance until there are two observations per arm."""
    d = st.data
    n = float(_sum(d[0]))
    if n < 2 * k:
        return prior_var
    # s^2 / max(n, tiny): an arm without data has s = 0, so its term is 0 without a divide warning.
    resid = float(_sum(d[2])) - float(_sum(d[1] * d[1] / np.maximum(d[0], 1e-300)))
    return max(resid / n, 1e-6 * prior_var)
