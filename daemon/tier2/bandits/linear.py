"""Contextual linear bandits (disjoint models): LinUCB and linear Thompson sampling, discounted for drift.

Context: a feature vector x (e.g. load level, one-hot request class, one-hot hardware, a constant 1).
Each arm a has a ridge regression theta_a = A_a^{-1} b_a. Discount gamma: every update multiplies all
arms' (A - lambda I) and b by gamma (D-LinUCB), so stale evidence fades and unplayed arms regain
uncertainty; A_a >= lambda I always holds, so the inverses stay bounded.
"""
from __future__ import annotations


import msgspec
import numpy as np

from ..core import register, register_struct
from .base import Bandit, parse_bandit_options


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
        eye = np.eye(d)
        self.A = np.repeat((cfg.ridge * eye)[None], self.n_arms, axis=0)
        self.Ainv = np.repeat((eye / cfg.ridge)[None], self.n_arms, axis=0)
        self.b = np.zeros((self.n_arms, d))
        self.theta = np.zeros((self.n_arms, d))
        self.plays = np.zeros(self.n_arms)

    def _signal(self, arm, r, x) -> float:
        return r - float(self.theta[arm] @ x)

    def _update(self, arm, r, x, feasible) -> None:
        cfg = self.cfg
        g = cfg.discount
        if g < 1.0:
            lam_eye = cfg.ridge * np.eye(self.dim)
            self.A -= lam_eye
            self.A *= g
            self.A += lam_eye
            self.b *= g
            self.A[arm] += np.outer(x, x)
            self.b[arm] += r * x
            self.Ainv = np.linalg.inv(self.A)
            self.theta = np.einsum("kij,kj->ki", self.Ainv, self.b)
        else:
            # Sherman-Morrison: only the played arm changes.
            Ai = self.Ainv[arm]
            u = Ai @ x
            Ai -= np.outer(u, u) / (1.0 + float(x @ u))
            self.A[arm] += np.outer(x, x)
            self.b[arm] += r * x
            self.theta[arm] = Ai @ self.b[arm]
        self.plays[arm] += 1

    def _reset_arm(self, arm) -> None:
        r = self.cfg.ridge
        self.A[arm] = r * np.eye(self.dim)
        self.Ainv[arm] = np.eye(self.dim) / r
        self.b[arm] = 0.0
        self.theta[arm] = 0.0

    def _mean_sd(self, x):
        mu = self.theta @ x
        var = (self.Ainv @ x) @ x
        return mu, np.sqrt(np.maximum(var, 0.0))

    def means(self) -> np.ndarray:
        raise TypeError(f"{self.kind}: means depend on the context; use predict(context)")

    def predict(self, context) -> np.ndarray:
        """(n_arms,) predicted reward for this context."""
        return self.theta @ self._context(context)


@register("linucb")
class LinUCB(_LinearArms):
    """Disjoint LinUCB: play argmax_a x.theta_a + alpha sqrt(x' A_a^{-1} x)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        self._init_linear(n_arms, seed, parse_bandit_options(LinearConfig, options, "linucb"), clock)

    def _select(self, x) -> int:
        mu, sd = self._mean_sd(x)
        return int(np.argmax(mu + self.cfg.alpha * sd))


@register("lints")
class LinTS(_LinearArms):
    """Linear Thompson sampling. Only x.theta~_a matters for the decision, and under the posterior
    theta~_a ~ N(theta_a, alpha^2 A_a^{-1}) it is exactly N(x.theta_a, alpha^2 x'A_a^{-1}x): one normal
    draw per arm instead of a d-dimensional one (no Cholesky on the hot path)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        self._init_linear(n_arms, seed, parse_bandit_options(LinearConfig, options, "lints"), clock)

    def _select(self, x) -> int:
        mu, sd = self._mean_sd(x)
        return int(np.argmax(mu + self.cfg.alpha * sd * self.rng.standard_normal(self.n_arms)))
