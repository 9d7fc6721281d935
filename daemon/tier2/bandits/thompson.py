"""Thompson sampling: Beta-Bernoulli and Gaussian, with discounting / sliding window for drift."""
from __future__ import annotations

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, parse_bandit_options


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
        g = self.rng.standard_gamma(ab)
        theta = g[:k] / (g[:k] + g[k:])
        if cfg.optimistic:
            np.maximum(theta, ab[:k] / (ab[:k] + ab[k:]), out=theta)
        return int(np.argmax(theta))

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
        prec = d[0] * (1.0 / s2)
        prec += 1.0 / cfg.prior_var
        sd = 1.0 / np.sqrt(prec)
        # mean = (prior_mean / prior_var + s / s2) / prec; the draw is mean + sd * z.
        mean = d[1] * (1.0 / s2)
        mean += cfg.prior_mean / cfg.prior_var
        mean *= sd * sd
        mean += sd * self.rng.standard_normal(self.n_arms)
        return int(mean.argmax())


def pooled_var(st, prior_var: float, k: int) -> float:
    """Reward noise variance pooled over arms (weighted residual sum of squares / weight), floored;
    the prior variance until there are two observations per arm."""
    d = st.data
    n = float(d[0].sum())
    if n < 2 * k:
        return prior_var
    # s^2 / max(n, tiny): an arm without data has s = 0, so its term is 0 without a divide warning.
    resid = float(d[2].sum()) - float((d[1] * d[1] / np.maximum(d[0], 1e-300)).sum())
    return max(resid / n, 1e-6 * prior_var)
