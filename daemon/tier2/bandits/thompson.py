"""Thompson sampling: Beta-Bernoulli and Gaussian, with discounting / sliding window for drift."""
from __future__ import annotations

import math

from ..core import Draws, register, register_struct
from .base import Bandit, BanditOptions, argmax_list, parse_bandit_options


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
        self.draws = Draws()

    def _select(self, _x) -> int:
        st, cfg = self.stats, self.cfg
        sc, pa, pb = st.scale, cfg.prior_alpha, cfg.prior_beta
        # Beta(pa + s, pb + n - s) per arm, from the buffered stream.
        theta = self.draws.betas(self.rng, st.S, st.N, sc, pa, pb)
        if cfg.optimistic:
            for i, (s, n) in enumerate(zip(st.S, st.N)):
                m = (pa + s * sc) / (pa + pb + n * sc)
                if theta[i] < m:
                    theta[i] = m
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
        self._init_bandit(n_arms, seed, cfg, clock, resid=cfg.noise_var is None)
        self.draws = Draws()

    def noise_var(self) -> float:
        if self.cfg.noise_var is not None:
            return self.cfg.noise_var
        return pooled_var(self.stats, self.cfg.prior_var, self.n_arms)

    def _select(self, _x) -> int:
        cfg, st = self.cfg, self.stats
        z = self.draws.normals(self.rng, self.n_arms)
        return argmax_list(_gauss_draw(st, self.noise_var(), cfg.prior_mean, cfg.prior_var, z))


def _gauss_draw(st, s2: float, prior_mean: float, prior_var: float, z: list) -> list[float]:
    """Posterior draw mean + sd * z per arm (Python floats, ArmStats lists): prec = n/s2 + 1/pv;
    sd = 1/sqrt(prec); mean = (s/s2 + pm/pv) * sd^2."""
    sc = st.scale
    inv_s2, inv_pv, pm = sc / s2, 1.0 / prior_var, prior_mean / prior_var
    sqrt = math.sqrt
    out = []
    for n, s, zz in zip(st.N, st.S, z):
        sd = 1.0 / sqrt(n * inv_s2 + inv_pv)
        out.append((s * inv_s2 + pm) * (sd * sd) + sd * zz)
    return out


def pooled_var(st, prior_var: float, k: int) -> float:
    """Reward noise variance pooled over arms (weighted residual sum of squares / weight), floored;
    the prior variance until there are two observations per arm."""
    sc = st.scale
    N = st.N
    n = sum(N) * sc
    if n < 2 * k:
        return prior_var
    if st.R is not None:  # per-arm residual sums kept by ArmStats
        resid = sum(st.R) * sc
    else:  # per arm ss - s^2 / n; an arm without data has no term
        resid = sum([q - s * s / m if m > 0.0 else 0.0 for m, s, q in zip(N, st.S, st.SS)]) * sc
    return max(resid / n, 1e-6 * prior_var)
