"""Thompson sampling: Beta-Bernoulli and Gaussian, with discounting / sliding window for drift."""
from __future__ import annotations

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, parse_bandit_options


@register_struct
class ThompsonConfig(BanditOptions):
    prior_alpha: float = 1.0
    prior_beta: float = 1.0


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
        g = self.rng.standard_gamma(ab)
        return int(np.argmax(g[:k] / (g[:k] + g[k:])))

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
        st = self.stats
        n = st.n.sum()
        if n < 2 * self.n_arms:
            return self.cfg.prior_var
        with np.errstate(invalid="ignore", divide="ignore"):
            resid = st.ss - np.where(st.n > 0, st.s * st.s / np.where(st.n > 0, st.n, 1.0), 0.0)
        return max(float(resid.sum()) / n, 1e-6 * self.cfg.prior_var)

    def _select(self, _x) -> int:
        st, cfg = self.stats, self.cfg
        s2 = self.noise_var()
        prec = 1.0 / cfg.prior_var + st.n / s2
        mean = (cfg.prior_mean / cfg.prior_var + st.s / s2) / prec
        sample = mean + self.rng.standard_normal(self.n_arms) / np.sqrt(prec)
        return int(np.argmax(sample))
