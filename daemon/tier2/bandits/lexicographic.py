"""SLA-first (lexicographic) selection among approved variants: constraints first, then quality."""
from __future__ import annotations

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, parse_bandit_options


@register_struct
class LexicographicConfig(BanditOptions):
    feasible_rate: float = 0.9  # SLA: a variant is feasible if P(play meets the SLA) >= this
    min_feasible_prob: float = 0.0  # hard gate: posterior P(feasible) (normal approx.) below -> never
    prior_feasible: float = 1.0  # Beta prior pseudo-counts of SLA met / missed
    prior_infeasible: float = 1.0
    prior_mean: float = 0.0  # Gaussian prior on quality
    prior_var: float = 1.0
    noise_var: float | None = None


@register("lexicographic")
class Lexicographic(Bandit):
    """Lexicographic Thompson sampling.

    Each variant has a Beta posterior on its feasibility rate p_a (fed by ``feasible=`` in update) and a
    Gaussian posterior on its quality (the reward). Each round a feasibility rate is drawn per variant; a
    variant is eligible iff its draw is >= ``feasible_rate``, i.e. it is eligible with exactly its posterior
    probability of being feasible, so a variant that keeps missing the SLA all but disappears while one
    unlucky miss does not exclude a good variant forever. Variants whose (normal-approximated) posterior
    probability is below ``min_feasible_prob`` are never eligible. Among the eligible, Thompson on quality
    picks; if none is eligible, the most-likely-feasible variant (highest posterior mean) is played.
    update() without a feasibility verdict only updates quality.
    """

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(LexicographicConfig, options, "lexicographic")
        if not (0.0 < cfg.feasible_rate < 1.0):
            raise ValueError(f"lexicographic.feasible_rate: expected 0 < rate < 1, got {cfg.feasible_rate}")
        self._init_bandit(n_arms, seed, cfg, clock)
        self.fallbacks = 0

    def feasibility(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior Beta parameters (a, b) of each variant's feasibility rate."""
        st, cfg = self.stats, self.cfg
        return cfg.prior_feasible + st.fz, cfg.prior_infeasible + (st.fn - st.fz)

    def feasible_prob(self) -> np.ndarray:
        """Normal approximation of P(p_a >= feasible_rate) per variant."""
        a, b = self.feasibility()
        n = a + b
        mean = a / n
        sd = np.sqrt(a * b / (n * n * (n + 1)))
        zz = (mean - self.cfg.feasible_rate) / sd
        return 0.5 * (1.0 + _erf(zz / np.sqrt(2.0)))

    def _select(self, _x) -> int:
        cfg, st = self.cfg, self.stats
        a, b = self.feasibility()
        k = self.n_arms
        g = self.rng.standard_gamma(np.concatenate((a, b)))  # Beta(a, b) = Ga / (Ga + Gb), one call
        draw = g[:k] / (g[:k] + g[k:])
        eligible = draw >= cfg.feasible_rate
        if cfg.min_feasible_prob > 0.0:
            eligible &= self.feasible_prob() >= cfg.min_feasible_prob
        # Quality draw (always taken, so the RNG stream does not depend on eligibility).
        s2 = cfg.noise_var if cfg.noise_var is not None else _pooled_var(st, cfg.prior_var, self.n_arms)
        prec = 1.0 / cfg.prior_var + st.n / s2
        qmean = (cfg.prior_mean / cfg.prior_var + st.s / s2) / prec
        q = qmean + self.rng.standard_normal(self.n_arms) / np.sqrt(prec)
        if eligible.any():
            return int(np.argmax(np.where(eligible, q, -np.inf)))
        self.fallbacks += 1
        # Most likely feasible; the draw only breaks exact ties.
        return int(np.argmax(a / (a + b) + 1e-9 * draw))


def _pooled_var(st, prior_var: float, k: int) -> float:
    n = st.n.sum()
    if n < 2 * k:
        return prior_var
    resid = st.ss - np.where(st.n > 0, st.s * st.s / np.where(st.n > 0, st.n, 1.0), 0.0)
    return max(float(resid.sum()) / n, 1e-6 * prior_var)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and scipy is not a runtime dep.
    s = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-x * x)
    return s * y
