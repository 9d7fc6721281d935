"""Optimistic index policies: UCB1 and KL-UCB, discounted (D-UCB style) or sliding-window."""
from __future__ import annotations

import math

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, parse_bandit_options


@register_struct
class UCBConfig(BanditOptions):
    scale: float = 1.0  # reward range (UCB1's bonus assumes rewards in [0, scale])
    explore: float = 1.0  # multiplier of the exploration bonus


@register("ucb")
class UCB1(Bandit):
    """UCB1: mean + explore * scale * sqrt(2 ln N / n_a), N the (discounted) total count; an arm with
    (almost) no data is played first. Deterministic: ties go to the lowest index."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(UCBConfig, options, "ucb")
        self._init_bandit(n_arms, seed, cfg, clock)

    def _select(self, _x) -> int:
        st = self.stats
        n = st.n
        if n.min() < 1e-9:
            return int(np.argmin(n))
        total = max(float(n.sum()), 1.0)
        idx = st.s / n + (self.cfg.explore * self.cfg.scale) * np.sqrt(2.0 * math.log(total) / n)
        return int(np.argmax(idx))


@register_struct
class KLUCBConfig(BanditOptions):
    c: float = 0.0  # the c log log N term of KL-UCB (0 is the usual practical choice)
    iterations: int = 20  # bisection steps (precision 2^-iterations)


@register("klucb")
class KLUCB(Bandit):
    """KL-UCB for rewards in [0, 1]: the largest q with n_a kl(p_a, q) <= ln N + c ln ln N, found by a
    fixed number of vectorised bisection steps (constant cost, no data-dependent loops)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(KLUCBConfig, options, "klucb")
        self._init_bandit(n_arms, seed, cfg, clock)

    def _select(self, _x) -> int:
        st = self.stats
        n = st.n
        if n.min() < 1e-9:
            return int(np.argmin(n))
        total = max(float(n.sum()), 2.0)
        budget = (math.log(total) + self.cfg.c * math.log(max(math.log(total), 1e-9))) / n
        p = np.clip(st.s / n, 1e-12, 1 - 1e-12)
        lo, hi = p.copy(), np.ones_like(p)
        lp, l1p = np.log(p), np.log1p(-p)
        for _ in range(self.cfg.iterations):
            q = 0.5 * (lo + hi)
            qc = np.clip(q, 1e-12, 1 - 1e-12)
            kl = p * (lp - np.log(qc)) + (1 - p) * (l1p - np.log1p(-qc))
            ok = kl <= budget
            lo = np.where(ok, q, lo)
            hi = np.where(ok, hi, q)
        return int(np.argmax(lo))

    def _update(self, arm, r, x, feasible) -> None:
        if not (0.0 <= r <= 1.0):
            raise ValueError(f"klucb.update: reward must be in [0, 1], got {r} (arm {arm})")
        self.stats.add(arm, r, feasible)
