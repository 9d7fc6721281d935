"""SPSA (Spall): two evaluations per round, +/-1 Bernoulli perturbations, Spall gain schedule."""
from __future__ import annotations

import math

import msgspec
import numpy as np

from ..change import make_detector
from ..core import Draws, register, register_struct
from .base import BoxOptimizer, parse_options


@register_struct
class SPSAConfig(msgspec.Struct, forbid_unknown_fields=True):
    """All lengths are in normalised units (fractions of each knob's range)."""

    x0: list[float] | None = None  # start point, user units (default: centre of the box)
    iterations: int = 1000  # expected number of rounds; sets A = A_frac * iterations
    A_frac: float = 0.1
    a: float | None = None  # step gain; None -> calibrated from the first gradient estimates
    c: float = 0.05  # perturbation size at k = 0
    alpha: float = 0.602
    gamma: float = 0.101
    initial_step: float = 0.02  # calibration target: size of the first steps per coordinate
    calibration_rounds: int = 4  # gradient estimates averaged to calibrate a
    max_step: float = 0.1  # per-coordinate step clip per round
    tracking: bool = False  # constant gains from the start (non-stationary objective)
    tracking_k: float = 30.0  # the constant gains are the decaying gains evaluated at this k
    tracking_ema: float = 0.1  # recommend() in tracking mode: EMA rate over iterates
    detector: str | dict | None = "ph"  # change detector on the round's mean level; fires -> tracking
    detector_threshold: float = 10.0


@register("spsa")
class SPSA(BoxOptimizer):
    """Simultaneous-perturbation stochastic approximation.

    Round k: delta ~ {-1,+1}^d, c_k = c/(k+1)^gamma, asks theta +/- c_k delta (two points that can run at
    the same time in two traffic slots). Gradient g = (y+ - y-)/(2 c_k) * delta; step a_k g with
    a_k = a/(k+1+A)^alpha, clipped per coordinate to ``max_step``. The base point is kept c_k away from the
    box faces while perturbing, so both points are always inside the bounds. k counts *told* rounds only:
    reject() or a NaN observation leaves the schedule where it was.

    recommend(): Polyak tail average of the iterates (the last half to three quarters of them); in tracking
    mode an EMA of recent iterates, since old iterates describe an optimum that has moved.
    """

    def __init__(self, bounds, seed, clock=None, **options):
        cfg = parse_options(SPSAConfig, options, "spsa")
        self._init_box(bounds, seed, cfg.x0, clock)
        if cfg.c <= 0 or cfg.c >= 0.5:
            raise ValueError(f"spsa.c: expected 0 < c < 0.5 (normalised), got {cfg.c}")
        if cfg.max_step <= 0:
            raise ValueError(f"spsa.max_step: expected > 0, got {cfg.max_step}")
        self.cfg = cfg
        self.draws = Draws()
        # Iterate, perturbation and averages are Python float lists: at d <= 16 one numpy call (or a
        # list <-> array conversion) costs more than the whole element loop.
        self.th = self.z0.tolist()
        self.k = 0
        self.A = max(1.0, cfg.A_frac * cfg.iterations)
        self.a = cfg.a
        self.gsum = 0.0  # calibration: sum of mean |g| over the first rounds
        self.gcount = 0
        self.tracking = bool(cfg.tracking)
        self.changes = 0
        self.detector = make_detector(cfg.detector, direction=1, threshold=cfg.detector_threshold)
        self.delta = [0.0] * self.d
        self.ck = 0.0
        self.box = [self.lo.tolist(), self.span.tolist(), self.hi.tolist()]  # the bounds as floats
        self._reset_average()

    @property
    def theta(self) -> np.ndarray:
        """(d,) current iterate, normalised units."""
        return np.array(self.th)

    @property
    def batch_size(self) -> int:
        return 2

    def _reset_average(self) -> None:
        self.avg_cur = [0.0] * self.d
        self.n_cur = 0
        self.avg_prev = [0.0] * self.d
        self.n_prev = 0
        self.epoch_start = max(self.k, 1)
        self.ema = list(self.th)

    def gains(self) -> tuple[float, float]:
        """(a_k, c_k) for the next round, normalised units."""
        cfg = self.cfg
        kk = cfg.tracking_k if self.tracking else float(self.k)
        a = self.a if self.a is not None else cfg.initial_step * (self.A + 1.0) ** cfg.alpha
        return a / (kk + 1.0 + self.A) ** cfg.alpha, cfg.c / (kk + 1.0) ** cfg.gamma

    # The round's arithmetic runs on Python floats. Each element sees the same IEEE operations, in the
    # same order, as the array form (clip = maximum then minimum; to_user = z * span + lo, then the
    # minimum with hi), so tests can compare it bit for bit.
    def _ask_user(self) -> np.ndarray:
        _, ck = self.gains()
        self.ck = ck
        # +/-1 with probability 1/2 each, from the buffered uniforms.
        self.delta = delta = [1.0 if u < 0.5 else -1.0 for u in self.draws.uniforms(self.rng, self.d)]
        hi = 1.0 - ck
        plus, minus = [], []
        for t, s, lo, sp, uh in zip(self.th, delta, *self.box):
            b = ck if t < ck else (hi if t > hi else t)  # the base point stays c_k away from the faces
            c = ck * s
            x = (b + c) * sp + lo  # straight to user units
            plus.append(uh if x > uh else x)
            x = (b - c) * sp + lo
            minus.append(uh if x > uh else x)
        return np.array((plus, minus))

    def _tell(self, y: np.ndarray, ys: list) -> None:
        cfg = self.cfg
        y0, y1 = ys
        dy = y0 - y1
        gmag = abs(dy) / (2.0 * self.ck)  # |g_i| is the same for every i with +/-1 perturbations
        if cfg.a is None and self.gcount < cfg.calibration_rounds:
            # Spall's rule: pick a so that the first steps have the wanted size given the observed
            # gradient magnitude; refined over the first rounds, then frozen.
            self.gsum += gmag
            self.gcount += 1
            gm = self.gsum / self.gcount
            if gm > 0.0 and math.isfinite(gm):
                self.a = cfg.initial_step * (self.A + 1.0) ** cfg.alpha / gm
        ak, _ = self.gains()
        g = ak * dy / (2.0 * self.ck)
        ms = cfg.max_step
        lo = -ms
        theta = []
        for t, s in zip(self.th, self.delta):
            st = g * s
            st = lo if st < lo else (ms if st > ms else st)  # step clipping per coordinate
            t = t - st
            theta.append(0.0 if t < 0.0 else (1.0 if t > 1.0 else t))
        self.th = theta
        self.k += 1
        self._average(theta)
        if self.detector is not None and self.detector.update(0.5 * (y0 + y1)):
            self.changes += 1
            self.tracking = True
            self._reset_average()

    def _average(self, theta: list[float]) -> None:
        self.avg_cur = [a + t for a, t in zip(self.avg_cur, theta)]
        self.n_cur += 1
        if self.k >= 2 * self.epoch_start:
            self.avg_prev, self.n_prev = self.avg_cur, self.n_cur
            self.avg_cur = [0.0] * self.d
            self.n_cur = 0
            self.epoch_start = self.k
        r = self.cfg.tracking_ema
        self.ema = [e + r * (t - e) for e, t in zip(self.ema, theta)]

    def _best(self) -> np.ndarray:
        if self.tracking:
            return np.array(self.ema)
        n = self.n_cur + self.n_prev
        if n == 0:
            return np.array(self.th)
        return (np.array(self.avg_cur) + np.array(self.avg_prev)) / n
