"""Bandit base: arm statistics with discounting or a sliding window, per-arm change detection.

Rewards: higher is better. ``discount`` gamma in (0, 1]: before each update every arm's statistics are
multiplied by gamma (gamma = 1: plain, stationary). ``window`` W > 0 instead keeps exactly the last W
observations. A per-arm change detector (``detector="ph"`` or ``"glr"``) restarts only the affected arm
(its statistics return to the prior) when that arm's reward stream shifts.
"""
from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np

from ..change import make_detector
from ..core import Budgeted, NoChange, Now, Saveable, register, rng_from_seed
from ..optim.base import parse_options


_F64 = np.dtype(np.float64)  # identity test: an equal but distinct dtype just takes the converting path


def argmax_list(v: list) -> int:
    """np.argmax of a list: the first maximum, or the first NaN if there is one."""
    best, bv = 0, v[0]
    if bv != bv:
        return 0
    for i in range(1, len(v)):
        x = v[i]
        if x > bv:
            best, bv = i, x
        elif x != x:
            return i
    return best


class BanditOptions(msgspec.Struct, forbid_unknown_fields=True):
    discount: float = 1.0
    window: int = 0
    detector: str | dict | None = None
    detector_threshold: float = 8.0


def check_drift_options(cfg, where: str) -> None:
    if not (0.0 < cfg.discount <= 1.0):
        raise ValueError(f"{where}.discount: expected 0 < discount <= 1, got {cfg.discount}")
    if cfg.window < 0:
        raise ValueError(f"{where}.window: expected >= 0 (0 = no window), got {cfg.window}")
    if cfg.window and cfg.discount < 1.0:
        raise ValueError(f"{where}: use either discount < 1 or window > 0, not both")


@register()
class ArmStats(Saveable):
    """Per-arm weighted count n, reward sum s, sum of squares ss, feasible count fz and count of
    feasibility verdicts fn.

    Stored as Python float lists N, S, SS, FZ, FN (at ~10 arms a list loop costs less than one numpy
    call) in units of 1/scale: the true value is stored * scale. Discounting every arm by gamma is then
    one multiply of ``scale`` instead of five row multiplies; before scale underflows the rows are folded
    back (multiplied by scale, scale = 1). Ratios (a mean s/n) need no scale at all. With a window the
    scale stays 1 and the observation leaving the window is subtracted.
    """

    FOLD_BELOW = 1e-100  # fold the scale into the rows below this (1/scale stays far from overflow)

    def __init__(self, n_arms: int, discount: float, window: int, resid: bool = False):
        k = int(n_arms)
        self.N = [0.0] * k
        self.S = [0.0] * k
        self.SS = [0.0] * k
        self.FZ = [0.0] * k
        self.FN = [0.0] * k
        # With resid: R[a] = SS[a] - S[a]^2 / N[a] (the arm's residual sum of squares), kept up to date
        # for the arms an update touches, so a pooled variance is two 10-element sums per step.
        self.R = [0.0] * k if resid else None
        self.scale = 1.0
        self.discount = float(discount)
        self.window = int(window)
        if self.window:
            self.w_arm = [-1] * self.window
            self.w_r = [0.0] * self.window
            self.w_f = [-1.0] * self.window  # -1: no verdict
            self.w_pos = 0

    # True values as arrays (diagnostics, the driver, tests); the hot paths read the lists.
    def _row(self, row: list) -> np.ndarray:
        sc = self.scale
        return np.array([v * sc for v in row])

    n = property(lambda self: self._row(self.N))
    s = property(lambda self: self._row(self.S))
    ss = property(lambda self: self._row(self.SS))
    fz = property(lambda self: self._row(self.FZ))
    fn = property(lambda self: self._row(self.FN))

    def add(self, arm: int, r: float, feasible: bool | None) -> None:
        f = -1.0 if feasible is None else (1.0 if feasible else 0.0)
        if self.discount < 1.0:
            sc = self.scale * self.discount
            if sc < self.FOLD_BELOW:
                self._fold(sc)
                sc = 1.0
            self.scale = sc
            w = 1.0 / sc
        else:
            w = 1.0
            if self.window:
                p = self.w_pos
                old = self.w_arm[p]
                if old >= 0:
                    ro, fo = self.w_r[p], self.w_f[p]
                    self.N[old] -= 1.0
                    self.S[old] -= ro
                    self.SS[old] -= ro * ro
                    if fo >= 0:
                        self.FZ[old] -= fo
                        self.FN[old] -= 1.0
                    if self.R is not None:
                        self._resid(old)
                self.w_arm[p], self.w_r[p], self.w_f[p] = arm, r, f
                self.w_pos = (p + 1) % self.window
        self.N[arm] += w
        rw = r * w
        self.S[arm] += rw
        self.SS[arm] += r * rw
        if f >= 0:
            self.FZ[arm] += f * w
            self.FN[arm] += w
        if self.R is not None:
            self._resid(arm)

    def _resid(self, a: int) -> None:
        n, s = self.N[a], self.S[a]
        # No data (a window count is exact, so it returns to 0.0): no term, whatever rounding left in s.
        self.R[a] = self.SS[a] - s * s / n if n > 0.0 else 0.0

    def _rows(self) -> tuple:
        return (self.N, self.S, self.SS, self.FZ, self.FN) + ((self.R,) if self.R is not None else ())

    def _fold(self, sc: float) -> None:
        for row in self._rows():  # R is linear in the scale too
            row[:] = [v * sc for v in row]

    def reset_arm(self, arm: int) -> None:
        for row in self._rows():
            row[arm] = 0.0
        if self.window:
            self.w_arm = [-1 if a == arm else a for a in self.w_arm]

    def total(self) -> float:
        return sum(self.N) * self.scale


class Bandit(Budgeted, Saveable):
    """Common edge of every bandit. Subclasses implement _select(context) -> int and _update(...)."""

    select_cost = 100e-6
    update_cost = 100e-6
    contextual = False

    def _init_bandit(self, n_arms: int, seed, cfg, clock, stats: bool = True, resid: bool = False) -> None:
        if not isinstance(n_arms, (int, np.integer)) or n_arms < 1:
            raise ValueError(f"n_arms: expected an int >= 1, got {n_arms!r}")
        self.n_arms = int(n_arms)
        self.rng = rng_from_seed(seed)
        self.clock = clock
        self.cfg = cfg
        self.t = 0  # updates so far
        self.restarts = np.zeros(self.n_arms, dtype=np.int64)
        if stats:
            check_drift_options(cfg, self.kind)
            self.stats = ArmStats(self.n_arms, cfg.discount, cfg.window, resid)
        self.detectors = [
            make_detector(cfg.detector, threshold=cfg.detector_threshold) for _ in range(self.n_arms)
        ] if cfg.detector else None

    def select(self, context=None, deadline: float | None = None, now: Now = None) -> int | NoChange:
        """Index of the arm to play next, or NoChange if the deadline would be overrun."""
        if deadline is not None:
            nc = self._over_budget(deadline, now, self.select_cost, "select")
            if nc is not None:
                return nc
        return int(self._select(self._context(context) if self.contextual else None))

    def update(self, arm: int, reward: float, context=None, feasible: bool | None = None,
               deadline: float | None = None, now: Now = None) -> NoChange | None:
        """Record the reward (higher is better) of playing ``arm``; ``feasible``: whether the play met
        the SLA (None: no verdict). NaN rewards are ignored (nothing was measured)."""
        if not (0 <= arm < self.n_arms):
            raise ValueError(f"{self.kind}.update: arm must be in [0, {self.n_arms}), got {arm}")
        r = float(reward)
        if r != r:
            return None
        if deadline is not None:
            nc = self._over_budget(deadline, now, self.update_cost, "update")
            if nc is not None:
                return nc
        arm = int(arm)
        x = self._context(context) if self.contextual else None
        if self.detectors is None:
            self._update(arm, r, x, feasible)
            self.t += 1
            return None
        sig = self._signal(arm, r, x)
        self._update(arm, r, x, feasible)
        self.t += 1
        if self.detectors[arm].update(sig):
            self.restarts[arm] += 1
            self._reset_arm(arm)
        return None

    def _context(self, context):
        if self.contextual:
            if type(context) is np.ndarray and context.dtype is _F64 and context.ndim == 1:
                x = context  # the common case, without a conversion
            else:
                x = np.asarray(context, dtype=np.float64).reshape(-1) if context is not None else None
            if x is None or x.shape[0] != self.dim:
                raise ValueError(
                    f"{self.kind}: expected a context vector of length {self.dim}, got "
                    f"{None if x is None else x.shape[0]}"
                )
            return x
        return None

    def _signal(self, arm: int, r: float, x: Any) -> float:
        """What the arm's change detector watches (the reward; linear arms use the residual)."""
        return r

    def _update(self, arm: int, r: float, x: Any, feasible: bool | None) -> None:
        self.stats.add(arm, r, feasible)

    def _reset_arm(self, arm: int) -> None:
        self.stats.reset_arm(arm)

    def means(self) -> np.ndarray:
        """Current (discounted / windowed) mean reward per arm; NaN for an arm with no data."""
        st = self.stats
        return np.array([s / n if n > 0 else math.nan for n, s in zip(st.N, st.S)])


def parse_bandit_options(cfg_type, options, where):
    return parse_options(cfg_type, options, where)
