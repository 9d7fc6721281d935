"""Optimistic index policies: UCB1 and KL-UCB, discounted (D-UCB style) or sliding-window."""
from __future__ import annotations

import math

import numpy as np

from ..core import register, register_struct
from .base import Bandit, BanditOptions, argmax_list, parse_bandit_options


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
        N, S, sc = st.N, st.S, st.scale
        mn = min(N)
        if mn * sc < 1e-9:
            return N.index(mn)
        # Python floats: ten arms cost less than one numpy call. s/n needs no scale (it cancels).
        lt = 2.0 * math.log(max(sum(N) * sc, 1.0)) / sc
        c = self.cfg.explore * self.cfg.scale
        sqrt = math.sqrt
        return argmax_list([s / n + c * sqrt(lt / n) for n, s in zip(N, S)])


@register_struct
class KLUCBConfig(BanditOptions):
    c: float = 0.0  # the c log log N term of KL-UCB (0 is the usual practical choice)
    newton_steps: int = 12  # at most; stops earlier once converged


@register("klucb")
class KLUCB(Bandit):
    """KL-UCB for rewards in [0, 1]: play the arm with the largest index, the largest q with
    n_a kl(p_a, q) <= ln N + c ln ln N (Newton from above, at most ``newton_steps`` iterations)."""

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
        N, S, sc = st.N, st.S, st.scale
        mn = min(N)
        if mn * sc < 1e-9:
            return N.index(mn)
        total = max(sum(N) * sc, 2.0)
        log_t = math.log(total) + self.cfg.c * math.log(max(math.log(total), 1e-9))
        lt = log_t / sc
        qs, ps, bs = self.q_cache, self.p_cache, self.b_cache
        sqrt = math.sqrt
        # An upper bound on every arm's index first. q(beta) is concave (kl(p, .) is convex), so the
        # tangent at an arm's last solution (same p, older budget) bounds it from above to within
        # O(dbeta^2); otherwise Pinsker's p + sqrt(beta / 2). Only arms whose bound beats the best
        # exact index so far are solved, in decreasing order of bound: usually one or two Newton solves
        # instead of one per arm, and the choice is the argmax of the exact indices all the same.
        ub, pl, bl = [], [], []
        for a in range(self.n_arms):
            n = N[a]
            p = S[a] / n
            p = 1e-9 if p < 1e-9 else (1 - 1e-9 if p > 1 - 1e-9 else p)
            beta = lt / n
            u = p + sqrt(beta * 0.5)
            if u > 1.0 - 1e-9:
                u = 1.0 - 1e-9
            qc = qs[a]
            if qc > p and abs(p - ps[a]) < 1e-12:
                t = qc + (beta - bs[a]) * qc * (1 - qc) / (qc - p)
                if p < t < u:
                    u = t
            ub.append(u)
            pl.append(p)
            bl.append(beta)
        steps = self.cfg.newton_steps
        best_a, best_q = 0, -1.0
        for a in sorted(range(self.n_arms), key=ub.__getitem__, reverse=True):
            if ub[a] <= best_q:
                break  # neither this arm nor any later one can beat best_q
            q = _kl_index(pl[a], bl[a], ub[a], steps)
            qs[a], ps[a], bs[a] = q, pl[a], bl[a]
            if q > best_q or (q == best_q and a < best_a):
                best_a, best_q = a, q
        return best_a

    def indices(self) -> np.ndarray:
        """(n_arms,) KL-UCB index of every arm (diagnostics; select() solves only the arms it needs).
        inf for an arm with no data."""
        st = self.stats
        N, S, sc = st.N, st.S, st.scale
        total = max(sum(N) * sc, 2.0)
        log_t = math.log(total) + self.cfg.c * math.log(max(math.log(total), 1e-9))
        out = []
        for n, s in zip(N, S):
            if n * sc < 1e-9:
                out.append(math.inf)
                continue
            p = min(max(s / n, 1e-9), 1 - 1e-9)
            beta = log_t / (n * sc)
            out.append(self._index(p, beta, min(p + math.sqrt(beta / 2.0), 1.0 - 1e-9)))
        return np.array(out)

    def _index(self, p: float, budget: float, q: float) -> float:
        """Largest q with kl(p, q) <= budget (see _kl_index)."""
        return _kl_index(p, budget, q, self.cfg.newton_steps)

    def _update(self, arm, r, x, feasible) -> None:
        if not (0.0 <= r <= 1.0):
            raise ValueError(f"klucb.update: reward must be in [0, 1], got {r} (arm {arm})")
        self.stats.add(arm, r, feasible)
