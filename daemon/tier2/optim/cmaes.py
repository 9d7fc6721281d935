"""CMA-ES for small d (Hansen's (mu/mu_w, lambda) with rank-one and rank-mu updates), written in numpy."""
from __future__ import annotations

import math

import msgspec
import numpy as np

from ..change import make_detector
from ..core import Now, NoChange, eigh, register, register_struct
from .base import BoxOptimizer, clip_, parse_options


@register_struct
class CMAConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Lengths in normalised units."""

    x0: list[float] | None = None
    sigma0: float = 0.2
    popsize: int | None = None  # default 4 + floor(3 ln d)
    sigma_min: float = 0.0  # optional floor (tracking); 0 = none
    sigma_max: float = 1.0
    tol_x: float = 1e-7  # restart when sigma * max(sqrt(eig(C))) falls below this
    max_condition: float = 1e12  # restart when the condition number of C exceeds this
    restart_sigma: float | None = None  # sigma after a restart (default sigma0); the mean is kept
    detector: str | dict | None = "ph"  # change in the generation median -> local restart
    detector_threshold: float = 10.0
    eigen_every: int = 1  # generations between eigendecompositions (lazy update)


@register("cmaes")
class CMAES(BoxOptimizer):
    """CMA-ES in [0,1]^d. ask() returns a whole generation (lambda points); tell() is the generation
    boundary (the only costly step: an eigendecomposition of a d x d matrix).

    Bounds: samples are reflected into the box and the reflected point is what the update learns from, so
    no resampling loop (whose cost is unbounded when the mean sits on a face) and the mean, a convex
    combination of in-box points, stays in the box. Restarts (mean kept, C = I, sigma reset) on
    stagnation (tol_x, conditioning) or when the change detector fires on the generation median.

    Deadline in tell(): if the full update does not fit but the cheap part does, the eigendecomposition is
    deferred to a later generation (sampling uses the previous one, as lazy-update CMA-ES does).
    """

    ask_cost = 100e-6
    tell_cost = 500e-6
    tell_cost_cheap = 150e-6

    def __init__(self, bounds, seed, clock=None, **options):
        cfg = parse_options(CMAConfig, options, "cmaes")
        self._init_box(bounds, seed, cfg.x0, clock)
        if not (0 < cfg.sigma0 <= cfg.sigma_max):
            raise ValueError(f"cmaes.sigma0: expected 0 < sigma0 <= sigma_max, got {cfg.sigma0}")
        self.cfg = cfg
        d = self.d
        lam = cfg.popsize if cfg.popsize is not None else 4 + int(3 * math.log(d))
        if lam < 2:
            raise ValueError(f"cmaes.popsize: expected >= 2, got {lam}")
        mu = lam // 2
        w = math.log((lam + 1) / 2) - np.log(np.arange(1, mu + 1))
        self.weights = w / w.sum()
        self.lam, self.mu = lam, mu
        self.mueff = float(1.0 / np.sum(self.weights**2))
        me = self.mueff
        self.cc = (4 + me / d) / (d + 4 + 2 * me / d)
        self.cs = (me + 2) / (d + me + 5)
        self.c1 = 2 / ((d + 1.3) ** 2 + me)
        self.cmu = min(1 - self.c1, 2 * (me - 2 + 1 / me) / ((d + 2) ** 2 + me))
        self.damps = 1 + 2 * max(0.0, math.sqrt((me - 1) / (d + 1)) - 1) + self.cs
        self.chi_n = math.sqrt(d) * (1 - 1 / (4 * d) + 1 / (21 * d * d))
        self.m = self.z0.copy()
        self.restarts = 0
        self.changes = 0
        self.detector = make_detector(cfg.detector, direction=1, threshold=cfg.detector_threshold)
        self.best_z = self.m.copy()
        self._restart(cfg.sigma0)
        self.y = np.zeros((lam, d))

    def _restart(self, sigma: float) -> None:
        d = self.d
        self.sigma = float(sigma)
        self.C = np.eye(d)
        self.B = np.eye(d)
        self.D = np.ones(d)
        self.pc = np.zeros(d)
        self.ps = np.zeros(d)
        self.gen = 0
        self.eigen_gen = 0

    @property
    def batch_size(self) -> int:
        return self.lam

    def _ask(self) -> np.ndarray:
        zs = self.rng.standard_normal((self.lam, self.d))
        x = self.m + self.sigma * ((zs * self.D) @ self.B.T)
        # Reflect into [0,1] (period 2), then the update uses the reflected step.
        x = np.abs(x) % 2.0
        np.subtract(2.0, x, out=x, where=x > 1.0)
        self.y = (x - self.m) / self.sigma
        return x

    _transient = ("clock", "_defer_eigen")
    _defer_eigen = False  # set only for the duration of one tell(); never saved

    def tell(self, y, deadline: float | None = None, now: Now = None) -> NoChange | None:
        if deadline is None or self.pending is None:
            return super().tell(y, deadline, now)
        if self._over_budget(deadline, now, self.tell_cost, "tell") is None:
            return super().tell(y)
        cheap = self._over_budget(deadline, now, self.tell_cost_cheap, "tell")
        if cheap is not None:
            return cheap
        self._defer_eigen = True
        try:
            return super().tell(y)
        finally:
            self._defer_eigen = False

    def _tell(self, f: np.ndarray, _fs: list) -> None:
        cfg = self.cfg
        d = self.d
        order = np.argsort(f, kind="stable")
        idx = order[: self.mu]
        ysel = self.y[idx]
        yw = self.weights @ ysel
        self.m = clip_(self.m + self.sigma * yw, 0.0, 1.0)
        self.best_z = self.m.copy()
        self.gen += 1
        # C^{-1/2} yw through the current eigenbasis.
        inv_sqrt_yw = self.B @ ((self.B.T @ yw) / self.D)
        cs, cc, c1, cmu = self.cs, self.cc, self.c1, self.cmu
        self.ps = (1 - cs) * self.ps + math.sqrt(cs * (2 - cs) * self.mueff) * inv_sqrt_yw
        nps = float(np.sqrt(self.ps @ self.ps))
        hsig = nps / math.sqrt(1 - (1 - cs) ** (2 * self.gen)) / self.chi_n < 1.4 + 2 / (d + 1)
        self.pc = (1 - cc) * self.pc + (math.sqrt(cc * (2 - cc) * self.mueff) if hsig else 0.0) * yw
        ywt = ysel.T * self.weights
        self.C *= 1 - c1 - cmu + (0.0 if hsig else c1 * cc * (2 - cc))
        self.C += (c1 * self.pc)[:, None] * self.pc
        self.C += cmu * (ywt @ ysel)
        self.sigma *= math.exp((cs / self.damps) * (nps / self.chi_n - 1))
        self.sigma = min(max(self.sigma, cfg.sigma_min), cfg.sigma_max)
        if not self._defer_eigen and self.gen - self.eigen_gen >= cfg.eigen_every:
            self._eigen()
        changed = self.detector is not None and self.detector.update(_sorted_median(f, order))
        stagnant = self.sigma * float(self.D.max()) < cfg.tol_x or (
            float(self.D.max() / self.D.min()) ** 2 > cfg.max_condition
        )
        if changed or stagnant:
            self.changes += int(changed)
            self.restarts += 1
            self._restart(cfg.restart_sigma if cfg.restart_sigma is not None else cfg.sigma0)

    def _eigen(self) -> None:
        C = self.C
        C += C.T  # enforce symmetry against rounding drift (eigh reads one triangle only)
        C *= 0.5
        ev, B = eigh(C)
        self.D = np.sqrt(np.maximum(ev, 1e-20))
        self.B = B
        self.eigen_gen = self.gen

    def _best(self) -> np.ndarray:
        return self.best_z.copy()


def _sorted_median(f: np.ndarray, order: np.ndarray) -> float:
    n = len(order)
    return float(f[order[n // 2]]) if n % 2 else 0.5 * float(f[order[n // 2 - 1]] + f[order[n // 2]])
