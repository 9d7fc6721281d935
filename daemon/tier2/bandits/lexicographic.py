"""SLA-first (lexicographic) selection among approved variants: constraints first, then quality."""
from __future__ import annotations

import math

import numpy as np

from ..core import Draws, register, register_struct
from .base import Bandit, BanditOptions, argmax_list, parse_bandit_options
from .thompson import pooled_var


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
        self._init_bandit(n_arms, seed, cfg, clock, resid=cfg.noise_var is None)
        self.draws = Draws()
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
        k = self.n_arms
        rng, draws = self.rng, self.draws
        # Python floats throughout: at ~10 variants a list loop costs less than one numpy call.
        sc, pf, pi = st.scale, cfg.prior_feasible, cfg.prior_infeasible
        FZ, FN = st.FZ, st.FN
        draw = draws.betas(rng, FZ, FN, sc, pf, pi)  # Beta(pf + fz, pi + fn - fz) per variant
        # Quality: Thompson on each eligible variant's Gaussian posterior (the normals are taken for
        # every variant, so the stream does not depend on eligibility; the posterior is only worked
        # out where it is used). Eligible: the feasibility draw reaches the SLA rate (and the optional
        # hard gate passes).
        z = draws.normals(rng, k)
        fr = cfg.feasible_rate
        gate = self.feasible_prob().tolist() if cfg.min_feasible_prob > 0.0 else None
        best, bv = -1, -math.inf
        inv_s2 = -1.0
        for i in range(k):
            if draw[i] >= fr and (gate is None or gate[i] >= cfg.min_feasible_prob):
                if inv_s2 < 0.0:  # first eligible variant: the shared posterior constants
                    s2 = cfg.noise_var if cfg.noise_var is not None else pooled_var(st, cfg.prior_var, k)
                    inv_s2, inv_pv = sc / s2, 1.0 / cfg.prior_var
                    pm = cfg.prior_mean * inv_pv
                # The _gauss_draw formula for one variant.
                sd = 1.0 / math.sqrt(st.N[i] * inv_s2 + inv_pv)
                v = (st.S[i] * inv_s2 + pm) * (sd * sd) + sd * z[i]
                if v > bv:
                    best, bv = i, v
        if best >= 0:
            return best
        self.fallbacks += 1
        # Most likely feasible (highest posterior mean); the draw only breaks exact ties.
        pt = pf + pi
        return argmax_list([(pf + z * sc) / (pt + n * sc) + 1e-9 * x for z, n, x in zip(FZ, FN, draw)])


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and scipy is not a runtime dep.
    s = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t
               + 0.254829592) * t * np.exp(-x * x)
    return s * y
