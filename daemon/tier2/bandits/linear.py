"""Contextual linear bandits (disjoint models): LinUCB and linear Thompson sampling, discounted for drift.

Context: a feature vector x (e.g. load level, one-hot request class, one-hot hardware, a constant 1).
Each arm a has a ridge regression theta_a = A_a^{-1} b_a. Discount gamma: every update multiplies all
arms' (A - lambda I) and b by gamma (D-LinUCB), so stale evidence fades and unplayed arms regain
uncertainty; A_a >= lambda I always holds, so the inverses stay bounded.
"""
from __future__ import annotations

import math

import msgspec
import numpy as np

from ..core import Draws, register, register_struct
from .base import Bandit, parse_bandit_options

_sum = np.add.reduce  # what ndarray.sum() runs, without its Python wrapper
# Row-wise dot products of two (k, d) arrays: the vecdot gufunc (numpy >= 2) is one call.
_rowdot = getattr(np, "vecdot", None) or (lambda a, b: _sum(a * b, 1))


def _make_solve():
    """Batched solve of (..., d, d) systems with (d,) or (..., d) right-hand sides: the LAPACK gufunc
    behind np.linalg.solve, called directly when this numpy has it (np.linalg.solve's Python-level
    checks cost more than the solves at d ~ 7), else the public function."""
    try:
        from numpy.linalg import _umath_linalg

        raw = _umath_linalg.solve1
        raw(np.eye(2)[None], np.ones(2))

        def solve(a, b):
            return raw(a, b)

        return solve
    except Exception:  # pragma: no cover - a numpy without the private gufunc
        return lambda a, b: np.linalg.solve(a, np.broadcast_to(b, a.shape[:-1])[..., None])[..., 0]


_solve = _make_solve()


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
    """Per-arm ridge regressions, exact in two representations (chosen by ``discount``; select() needs,
    per arm, mu_a = x.theta_a and x'A_a^{-1}x, for every arm at every step):

    discount = 1: the inverse P_a = A_a^{-1} and theta_a, kept together as E[a] = [P_a; theta_a']
        ((d + 1) x d). An update is a Sherman-Morrison / recursive-least-squares step on the played arm
        (no solve, no decomposition), and select() is one batched matvec V = E x plus one dot.

    discount < 1: A_a = ridge I + scale * G_a and b_a = scale * h_a with ``scale`` = gamma^t shared by
        every arm, so discounting all arms is one multiply of scale (folded back into G and h before
        it underflows); an update adds x x' / scale and r x / scale to the played arm only. The ridge
        term is not discounted, so A_a^{-1} changes for every arm at every step: select() solves
        (ridge / scale I + G_a) y_a = x for all arms in one batched LU call (LAPACK gesv), then
        x.theta_a = h_a.y_a and x'A_a^{-1}x = x.y_a / scale. (A kept eigendecomposition of G_a would
        make select() a few calls cheaper but cost one eigh per update, more than the solve. Rank-one
        inverse updates with the ridge put back only every R steps were tried as well: the ridge
        fading between restorations cost 10-45 % more regret on the bench's drifting problem at any
        R rare enough to keep the restoration, a batched inverse and solve, out of the p99. Keeping G
        and h side by side in one array saved an outer product per update but made select()'s solve
        input and dot strided views: ~1 us slower per step, measured.)
    """

    contextual = True
    _transient = Bandit._transient + ("_hot",)
    _hot: tuple | None = None  # (x.tobytes(), V, x'P x per arm) from the last select; see _scores
    FOLD_BELOW = 1e-100  # fold scale into G and h below this (1/scale stays far from overflow)

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
        k = self.n_arms
        self.scale = 1.0  # stays 1 without discount
        self.plays = [0] * k
        self.discounted = cfg.discount < 1.0
        if not self.discounted:
            self.E = np.zeros((k, d + 1, d))
            self.E[:, :d] = np.eye(d) / cfg.ridge
            self.xe = np.zeros(d + 1)  # scratch: [x, 0], so that V @ xe = x'P x per arm
        else:
            self.G = np.zeros((k, d, d))
            self.h = np.zeros((k, d))
            self.eye = np.eye(d)

    def _scores(self, x) -> tuple[list, list]:
        """(x.theta_a, scale * x'A_a^{-1}x) per arm, as lists.

        Without discount the batched matvec V = E x is kept (with the bytes of x) until the next
        update: an update with the same context, the usual select -> update pair, takes its arm's
        [P x, x.theta] and x'P x from there instead of computing them again. It is transient: an
        update without it (after load, or for another context) calls this method, so both paths run
        the same arithmetic and a loaded bandit continues byte-identically."""
        if not self.discounted:
            V = self.E @ x  # (k, d + 1): [P_a x, x.theta_a]
            xe = self.xe
            xe[:-1] = x
            mu, q = V[:, -1].tolist(), (V @ xe).tolist()
            self._hot = (x.tobytes(), V, q)
            return mu, q
        y = _solve(self.G + (self.cfg.ridge / self.scale) * self.eye, x)  # (k, d)
        return _rowdot(y, self.h).tolist(), _rowdot(y, x).tolist()

    def _signal(self, arm, r, x) -> float:
        return r - self.predict_arm(arm, x)

    def predict_arm(self, arm: int, x) -> float:
        if not self.discounted:
            return float(self.E[arm, -1] @ x)
        y = _solve(self.G[arm] + (self.cfg.ridge / self.scale) * self.eye, x)
        return float(y @ self.h[arm])

    def _update(self, arm, r, x, feasible) -> None:
        self.plays[arm] += 1
        if not self.discounted:
            # Recursive least squares: v = P x, den = 1 + x'P x; P -= v v' / den and
            # theta += (r - x.theta) / den * v (= P_new (b + r x), without keeping b). Both are one
            # rank-one update of E = [P; theta']: E -= u w' with w = v / sqrt(den) and
            # u = [w; (x.theta - r) / sqrt(den)] (w w' exactly symmetric).
            hot = self._hot
            if hot is None or hot[0] != x.tobytes():
                self._scores(x)
                hot = self._hot
            self._hot = None  # E changes below
            u = hot[1][arm]  # [P x, x.theta]: a row of V, which is not used again
            c = 1.0 / math.sqrt(1.0 + hot[2][arm])  # den = 1 + x'P x
            u *= c
            u[-1] -= r * c
            self.E[arm] -= np.multiply.outer(u, u[:-1])
            return
        s = self.scale * self.cfg.discount
        if s < self.FOLD_BELOW:
            self.G *= s
            self.h *= s
            s = 1.0
        self.scale = s
        inv = 1.0 / s
        xs = x * math.sqrt(inv)  # G += xs xs' = x x' / scale, exactly symmetric
        G = self.G[arm]
        G += np.multiply.outer(xs, xs)
        h = self.h[arm]
        h += (r * inv) * x

    def _reset_arm(self, arm) -> None:
        self._hot = None
        d = self.dim
        if not self.discounted:
            self.E[arm, :d] = np.eye(d) / self.cfg.ridge
            self.E[arm, d] = 0.0
            return
        self.G[arm] = 0.0
        self.h[arm] = 0.0

    def _mean_sd(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(x.theta_a, sqrt(x'A_a^{-1}x)) per arm."""
        mu, q = self._scores(x)
        return np.array(mu), np.sqrt(np.maximum(np.array(q), 0.0) / self.scale)

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
        mu, q = self._scores(x)
        c = self.cfg.alpha / math.sqrt(self.scale)
        sqrt = math.sqrt
        best, bv = 0, -math.inf
        for a in range(self.n_arms):
            qa = q[a]
            v = mu[a] + c * sqrt(qa if qa > 0.0 else 0.0)
            if v > bv:
                best, bv = a, v
        return best


@register("lints")
class LinTS(_LinearArms):
    """Linear Thompson sampling. Only x.theta~_a matters for the decision, and under the posterior
    theta~_a ~ N(theta_a, alpha^2 A_a^{-1}) it is exactly N(x.theta_a, alpha^2 x'A_a^{-1}x): one normal
    draw per arm instead of a d-dimensional one (no Cholesky on the hot path)."""

    def __init__(self, n_arms, seed, clock=None, **options):
        self._init_linear(n_arms, seed, parse_bandit_options(LinearConfig, options, "lints"), clock)
        self.draws = Draws()

    def _select(self, x) -> int:
        mu, q = self._scores(x)
        z = self.draws.normals(self.rng, self.n_arms)
        c = self.cfg.alpha / math.sqrt(self.scale)
        sqrt = math.sqrt
        best, bv = 0, -math.inf
        for a in range(self.n_arms):
            qa = q[a]
            v = mu[a] + c * sqrt(qa if qa > 0.0 else 0.0) * z[a]
            if v > bv:
                best, bv = a, v
        return best
