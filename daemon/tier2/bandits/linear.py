"""Contextual linear bandits (disjoint models): LinUCB and linear Thompson sampling, discounted for drift.

Context: a feature vector x (e.g. load level, one-hot request class, one-hot hardware, a constant 1).
Each arm a has a ridge regression theta_a = A_a^{-1} b_a. Discount gamma: every update multiplies all
arms' (A - lambda I) and b by gamma (D-LinUCB), so stale evidence fades and unplayed arms regain
uncertainty; A_a >= lambda I always holds, so the inverses stay bounded.
"""
from __future__ import annotations


import msgspec
import numpy as np

from ..core import eigh, register, register_struct
from .base import Bandit, parse_bandit_options

_sum = np.add.reduce


@register_struct
class LinearConfig(msgspec.Struct, forbid_unknown_fields=True):
    dim: int = 0  # context length (required)
    ridge: float = 1.0  # lambda: prior precision of each coefficient
    alpha: float = 1.0  # LinUCB: width of the confidence bonus; LinTS: posterior scale v
    discount: float = 1.0
    window: int = 0  # not supported for linear arms (kept for a uniform error message)
    detector: str | dict | None = None  # on the arm's prediction residual
    detector_threshold: float = 8.0


class _LinearArms(Bandit):
    contextual = True

    def _init_linear(self, n_arms, seed, cfg, clock):
        if cfg.dim < 1:
            raise ValueError(f"{self.kind}.dim: expected the context length (>= 1), got {cfg.dim}")
        if cfg.window:
            raise ValueError(f"{self.kind}.window: not supported for linear arms; use discount < 1")
        if not (0.0 < cfg.discount <= 1.0):
            raise ValueError(f"{self.kind}.discount: expected 0 < discount <= 1, got {cfg.discount}")
        if cfg.ridge <= 0:
            raise ValueError(f"{self.kind}.ridge: expected > 0, got {cfg.ridge}")
        self._init_bandit(n_arms, seed, cfg, clock, stats=False)
        self.dim = d = cfg.dim
        # A_a = ridge I + M_a with M_a = U_a diag(m_a) U_a' (the discounted data part). Discounting every
        # arm is then m *= gamma and c *= gamma (c_a = U_a' b_a): no per-step inverse of every arm; only
        # the played arm is re-diagonalised (one d x d eigh).
        self.U = np.repeat(np.eye(d)[None], self.n_arms, axis=0)
        self.m = np.zeros((self.n_arms, d))
        self.b = np.zeros((self.n_arms, d))
        self.c = np.zeros((self.n_arms, d))
        self.plays = np.zeros(self.n_arms)

    def _signal(self, arm, r, x) -> float:
        return r - float(self.predict_arm(arm, x))

    def predict_arm(self, arm: int, x) -> float:
        z = self.U[arm].T @ x
        return float((z * self.c[arm]) @ (1.0 / (self.cfg.ridge + self.m[arm])))

    def _update(self, arm, r, x, feasible) -> None:
        g = self.cfg.discount
        if g < 1.0:
            self.m *= g
            self.c *= g
            self.b *= g
        U = self.U[arm]
        M = (U * self.m[arm]) @ U.T
        M += x[:, None] * x
        ev, U = eigh(M)
        self.m[arm] = np.maximum(ev, 0.0)
        self.U[arm] = U
        self.b[arm] += r * x
        self.c[arm] = U.T @ self.b[arm]
        self.plays[arm] += 1

    def _reset_arm(self, arm) -> None:
        self.U[arm] = np.eye(self.dim)
        self.m[arm] = 0.0
        self.b[arm] = 0.0
        self.c[arm] = 0.0

    def _mean_sd(self, x):
        z = x @ self.U  # (n_arms, d): U_a' x for every arm
        w = 1.0 / (self.cfg.ridge + self.m)
        zw = z * w
        # np.add.reduce is what .sum(1) runs, without its Python wrapper.
        return _sum(zw * self.c, 1), np.sqrt(_sum(zw * z, 1))

    def means(self) -> np.ndarray:
        raise TypeError(f"{self.kind}: means depend on the context; use predict(context)")

    def predict(self, context) -> np.ndarray:
        """(n_arms,) predicted reward for this context."""
        return self._mean_sd(self._context(context))[0]


@register("linucb")
class LinUCB(_LinearArms):
    """Disjoint LinUCB: play argmax_a x.theta_a + alpha sqrt(x' A_a^{-1} x)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        self._init_linear(n_arms, seed, parse_bandit_options(LinearConfig, options, "linucb"), clock)

    def _select(self, x) -> int:
        mu, sd = self._mean_sd(x)
        return int((mu + self.cfg.alpha * sd).argmax())


@register("lints")
class LinTS(_LinearArms):
    """Linear Thompson sampling. Only x.theta~_a matters for the decision, and under the posterior
    theta~_a ~ N(theta_a, alpha^2 A_a^{-1}) it is exactly N(x.theta_a, alpha^2 x'A_a^{-1}x): one normal
    draw per arm instead of a d-dimensional one (no Cholesky on the hot path)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        self._init_linear(n_arms, seed, parse_bandit_options(LinearConfig, options, "lints"), clock)

    def _select(self, x) -> int:
        mu, sd = self._mean_sd(x)
        return int((mu + self.cfg.alpha * sd * self.rng.standard_normal(self.n_arms)).argmax())
