"""Bandit base: arm statistics with discounting or a sliding window, per-arm change detection.

Rewards: higher is better. ``discount`` gamma in (0, 1]: before each update every arm's statistics are
multiplied by gamma (gamma = 1: plain, stationary). ``window`` W > 0 instead keeps exactly the last W
observations. A per-arm change detector (``detector="ph"`` or ``"glr"``) restarts only the affected arm
(its statistics return to the prior) when that arm's reward stream shifts.
"""
from __future__ import annotations

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
    feasibility verdicts fn, all float64 rows of one (5, n_arms) array so that discounting is one
    multiply."""

    def __init__(self, n_arms: int, discount: float, window: int):
        self.data = np.zeros((5, n_arms))
        self.discount = float(discount)
        self.window = int(window)
        if self.window:
            self.w_arm = np.full(self.window, -1, dtype=np.int64)
            self.w_r = np.zeros(self.window)
            self.w_f = np.full(self.window, -1.0)  # -1: no verdict
            self.w_pos = 0

    # Row views (properties, so save/load never has to preserve aliasing).
    n = property(lambda self: self.data[0])
    s = property(lambda self: self.data[1])
    ss = property(lambda self: self.data[2])
    fz = property(lambda self: self.data[3])
    fn = property(lambda self: self.data[4])

    def add(self, arm: int, r: float, feasible: bool | None) -> None:
        f = -1.0 if feasible is None else float(bool(feasible))
        d = self.data
        if self.discount < 1.0:
            d *= self.discount
        elif self.window:
            p = self.w_pos
            old = int(self.w_arm[p])
            if old >= 0:
                ro, fo = float(self.w_r[p]), float(self.w_f[p])
                d[0, old] -= 1.0
                d[1, old] -= ro
                d[2, old] -= ro * ro
                if fo >= 0:
                    d[3, old] -= fo
                    d[4, old] -= 1.0
            self.w_arm[p], self.w_r[p], self.w_f[p] = arm, r, f
            self.w_pos = (p + 1) % self.window
        d[0, arm] += 1.0
        d[1, arm] += r
        d[2, arm] += r * r
        if f >= 0:
            d[3, arm] += f
            d[4, arm] += 1.0

    def reset_arm(self, arm: int) -> None:
        self.data[:, arm] = 0.0
        if self.window:
            self.w_arm[self.w_arm == arm] = -1

    def total(self) -> float:
        return float(self.data[0].sum())


class Bandit(Budgeted, Saveable):
    """Common edge of every bandit. Subclasses implement _select(context) -> int and _update(...)."""

    select_cost = 100e-6
    update_cost = 100e-6
    contextual = False

    def _init_bandit(self, n_arms: int, seed, cfg, clock, stats: bool = True) -> None:
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
            self.stats = ArmStats(self.n_arms, cfg.discount, cfg.window)
        self.detectors = [
            make_detector(cfg.detector, threshold=cfg.detector_threshold) for _ in range(self.n_arms)
        ] if cfg.detector else None

    def select(self, context=None, deadline: float | None = None, now: Now = None) -> int | NoChange:
        """Index of the arm to play next, or NoChange if the deadline would be overrun."""
        nc = self._over_budget(deadline, now, self.select_cost, "select")
        if nc is not None:
            return nc
        return int(self._select(self._context(context)))

    def update(self, arm: int, reward: float, context=None, feasible: bool | None = None,
               deadline: float | None = None, now: Now = None) -> NoChange | None:
        """Record the reward (higher is better) of playing ``arm``; ``feasible``: whether the play met
        the SLA (None: no verdict). NaN rewards are ignored (nothing was measured)."""
        if not (0 <= arm < self.n_arms):
            raise ValueError(f"{self.kind}.update: arm must be in [0, {self.n_arms}), got {arm}")
        r = float(reward)
        if r != r:
            return None
        nc = self._over_budget(deadline, now, self.update_cost, "update")
        if nc is not None:
            return nc
        x = self._context(context)
        sig = self._signal(int(arm), r, x) if self.detectors is not None else r
        self._update(int(arm), r, x, feasible)
        self.t += 1
        if self.detectors is not None and self.detectors[arm].update(sig):
            self.restarts[arm] += 1
            self._reset_arm(int(arm))
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
        n = self.stats.n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.stats.s / np.where(n > 0, n, 1.0), np.nan)


def parse_bandit_options(cfg_type, options, where):
    return parse_options(cfg_type, options, where)
