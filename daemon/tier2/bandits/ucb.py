"""Optimistic index policies: UCB1 and KL-UCB, discounted (D-UCB style) or sliding-window."""
from __future__ import annotations

import math

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, parse_bandit_options


_sum = np.add.reduce  # what ndarray.sum() runs, without its Python wrapper


def _kl_index(p: float, budget: float, q: float, steps: int, log=math.log, log1p=math.log1p) -> float:
    """Largest q with kl(p, q) <= budget, by Newton from above (convex increasing in q >= p: every
    iterate stays above the root, so stopping early errs on the optimistic side). At most ``steps``
    iterations. (log/log1p bound as defaults: local lookups on this hot loop.)"""
    neg_h = p * log(p) + (1 - p) * log1p(-p)
    for _ in range(steps):
        kl = neg_h - p * log(q) - (1 - p) * log1p(-q)
        if kl <= budget + 1e-12:
            break
        step = (kl - budget) * q * (1 - q) / (q - p)
        qn = q - step
        q = p if p > qn else qn  # max(q - step, p), without the builtin's call cost
        if step < 1e-10:
            break
    return q


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
            return int(n.argmin())
        total = max(float(_sum(n)), 1.0)
        idx = st.s / n + (self.cfg.explore * self.cfg.scale) * np.sqrt(2.0 * math.log(total) / n)
        return int(idx.argmax())


@register_struct
class KLUCBConfig(BanditOptions):
    c: float = 0.0  # the c log log N term of KL-UCB (0 is the usual practical choice)
    newton_steps: int = 12  # at most; stops earlier once converged


@register("klucb")
class KLUCB(Bandit):
    """KL-UCB for rewards in [0, 1]: the largest q with n_a kl(p_a, q) <= ln N + c ln ln N, found by a
    fixed number of vectorised bisection steps (constant cost, no data-dependent loops)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(KLUCBConfig, options, "klucb")
        if cfg.newton_steps < 1:
            raise ValueError(f"klucb.newton_steps: expected >= 1, got {cfg.newton_steps}")
        self._init_bandit(n_arms, seed, cfg, clock)
        # Last index per arm and the (p, budget) it solved: warm starts for the next select().
        self.q_cache = [-1.0] * self.n_arms
        self.p_cache = [0.0] * self.n_arms
        self.b_cache = [0.0] * self.n_arms

    def _select(self, _x) -> int:
        st = self.stats
        n = st.n
        if n.min() < 1e-9:
            return int(n.argmin())
        total = max(float(_sum(n)), 2.0)
        log_t = math.log(total) + self.cfg.c * math.log(max(math.log(total), 1e-9))
        p_all = (st.s / n).tolist()
        budgets = (log_t / n).tolist()
        qs, ps, bs = self.q_cache, self.p_cache, self.b_cache
        steps = self.cfg.newton_steps
        best_a, best_q = 0, -1.0
        for a in range(self.n_arms):
            p = min(max(p_all[a], 1e-9), 1 - 1e-9)
            beta = budgets[a]
            pinsker = min(p + math.sqrt(beta / 2.0), 1.0 - 1e-9)  # kl(p, q) >= 2 (q - p)^2
            q0 = pinsker
            qc = qs[a]
            if qc > p and abs(p - ps[a]) < 1e-12:
                # q(beta) is concave, so its tangent at the cached solution bounds it from above: a
                # Newton start that is already within O(dbeta^2) of the root (usually 0-1 steps).
                q0 = min(qc + (beta - bs[a]) * qc * (1 - qc) / (qc - p), pinsker)
                if q0 <= p:
                    q0 = pinsker
            q = _kl_index(p, beta, q0, steps)
            qs[a], ps[a], bs[a] = q, p, beta
            if q > best_q:
                best_a, best_q = a, q
        return best_a

    def _index(self, p: float, budget: float, q: float) -> float:
        """Largest q with kl(p, q) <= budget (see _kl_index)."""
        return _kl_index(p, budget, q, self.cfg.newton_steps)

    def _update(self, arm, r, x, feasible) -> None:
        if not (0.0 <= r <= 1.0):
            raise ValueError(f"klucb.update: reward must be in [0, 1], got {r} (arm {arm})")
        self.stats.add(arm, r, feasible)
