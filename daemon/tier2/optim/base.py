"""Box-bounded ask/tell optimizer base: normalised coordinates, projection, pending-round bookkeeping.

Every optimizer searches z in [0,1]^d; ``bounds`` (d, 2) in user units map z -> lo + z * (hi - lo).
Invariants: every point returned by ask() and recommend() lies inside ``bounds`` (inclusive); lower
objective values are better; tell() consumes exactly the pending round, in the order ask() returned it.
"""
from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from ..core import Budgeted, NoChange, Now, Saveable, rng_from_seed


def parse_options(cfg_type: type, options: dict[str, Any], where: str):
    """Validate ``options`` into the config Struct; errors name the offending key path."""
    try:
        return msgspec.convert(options, cfg_type, strict=False)
    except msgspec.ValidationError as e:
        raise ValueError(f"{where} options: {e}; the optimizer was not created") from None


def parse_bounds(bounds) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(bounds, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 2 or b.shape[0] < 1:
        raise ValueError(f"bounds: expected shape (d, 2) with d >= 1, got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("bounds: every bound must be finite (found inf/nan)")
    lo, hi = b[:, 0].copy(), b[:, 1].copy()
    bad = np.flatnonzero(hi <= lo)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"bounds[{i}]: expected low < high, got [{lo[i]}, {hi[i]}]")
    return lo, hi - lo


def _make_clip():
    """The clip ufunc (min(max(x, lo), hi) in one pass) without np.clip's Python-level dispatch; two
    ufunc calls where this numpy does not expose it."""
    try:
        from numpy._core import umath

        uclip = umath.clip
        uclip(np.zeros(2), 0.0, 1.0, out=np.zeros(2))

        def clip_(x: np.ndarray, lo, hi) -> np.ndarray:
            return uclip(x, lo, hi, out=x)
    except Exception:  # pragma: no cover - older/newer numpy layouts
        def clip_(x: np.ndarray, lo, hi) -> np.ndarray:
            np.maximum(x, lo, out=x)
            return np.minimum(x, hi, out=x)
    return clip_


clip_ = _make_clip()
clip_.__doc__ = "In place: x = min(max(x, lo), hi) (NaN passes through), returns x."


class BoxOptimizer(Budgeted, Saveable):
    """Common edge of every optimizer. Subclasses implement _ask() -> (n, d) in [0,1], _tell(y), _best().

    Cost estimates (seconds) used for deadline checks: ``ask_cost`` and ``tell_cost``; the defaults are the
    per-step budgets of the runtime contract, checked by the tier2 benchmark.
    """

    ask_cost = 100e-6
    tell_cost = 100e-6

    def _init_box(self, bounds, seed, x0, clock) -> None:
        self.lo, self.span = parse_bounds(bounds)
        self.hi = self.lo + self.span
        self.d = int(self.lo.size)
        self.rng = rng_from_seed(seed)
        self.clock = clock
        self.pending: np.ndarray | None = None  # the asked, not yet told round, user units
        self.rounds = 0  # completed (told) rounds
        self.rejected = 0
        if x0 is None:
            self.z0 = np.full(self.d, 0.5)
        else:
            x = np.asarray(x0, dtype=np.float64)
            if x.shape != (self.d,):
                raise ValueError(f"x0: expected shape ({self.d},), got {x.shape}")
            self.z0 = np.clip((x - self.lo) / self.span, 0.0, 1.0)

    # -- user units <-> normalised
    def to_user(self, z: np.ndarray) -> np.ndarray:
        x = z * self.span
        x += self.lo
        # lo + (z >= 0) * span never rounds below lo; lo + 1.0 * span can round one ulp above hi.
        return np.minimum(x, self.hi, out=x)

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.lo) / self.span

    # -- public protocol
    def ask(self, deadline: float | None = None, now: Now = None) -> np.ndarray | NoChange:
        """(n, d) candidates in user units to evaluate together (a read-only array). Asking again before
        tell() returns the same pending round (idempotent), so a retried request never draws new
        randomness."""
        if self.pending is not None:
            return self.pending
        if deadline is not None:
            nc = self._over_budget(deadline, now, self.ask_cost, "ask")
            if nc is not None:
                return nc
        # The pending round itself, read-only (a caller that wants to edit points copies them): no
        # copy per ask, and a retried ask() returns exactly the same points.
        x = self._ask_user()
        x.flags.writeable = False
        self.pending = x
        return x

    def tell(self, y, deadline: float | None = None, now: Now = None) -> NoChange | None:
        """Observed objective values (n,), same order as ask(); lower is better. Any NaN means the round
        was not measured (e.g. Tier 1 rejected it): the round is discarded like reject()."""
        if self.pending is None:
            raise RuntimeError(f"{type(self).__name__}.tell: no pending round; call ask() first")
        yv = np.asarray(y, dtype=np.float64)
        if yv.ndim != 1:
            yv = yv.reshape(-1)
        if yv.shape[0] != self.pending.shape[0]:
            raise ValueError(
                f"{type(self).__name__}.tell: expected {self.pending.shape[0]} values (one per asked "
                f"point), got {yv.shape[0]}; the round is still pending"
            )
        ys = yv.tolist()
        for v in ys:  # a NaN anywhere: not measured (a Python loop beats numpy's reductions at n <= 16)
            if v != v:
                self.reject()
                return None
        if deadline is not None:
            nc = self._over_budget(deadline, now, self.tell_cost, "tell")
            if nc is not None:
                return nc
        self._tell(yv, ys)
        self.pending = None
        self.rounds += 1
        return None

    def reject(self) -> None:
        """Discard the pending round without advancing any schedule (a Tier-1 rejection)."""
        if self.pending is not None:
            self.pending = None
            self.rejected += 1

    def recommend(self) -> np.ndarray:
        """(d,) current best estimate, user units, inside bounds."""
        return self.to_user(self._best())

    @property
    def batch_size(self) -> int:
        raise NotImplementedError

    def _ask_user(self) -> np.ndarray:
        """The new round in user units (kept as ``pending`` until tell()); by default _ask() mapped
        by to_user(). A subclass may build user-unit points directly when that saves array passes."""
        return self.to_user(self._ask())

    def _ask(self) -> np.ndarray:
        raise NotImplementedError

    def _tell(self, y: np.ndarray, ys: list) -> None:
        """y: the round's values (n,) as an array and as the list ys (both, so neither side converts)."""
        raise NotImplementedError

    def _best(self) -> np.ndarray:
        raise NotImplementedError
