"""PBT-lite: a small population; the worst members copy the best and explore with bounded moves."""
from __future__ import annotations

import math

import msgspec
import numpy as np

from ..core import Draws, register, register_struct
from .base import BoxOptimizer, clip_, parse_options


@register_struct
class PBTConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Lengths in normalised units."""

    x0: list[float] | None = None
    pool: int = 8  # members; ask() returns all of them
    init_spread: float = 0.1  # initial members: x0 + U(-spread, spread)
    interval: int = 2  # rounds between exploit/explore steps
    fraction: float = 0.25  # bottom fraction replaced by copies of the top fraction
    explore_sigma: float = 0.05  # Gaussian perturbation of a copied member ...
    explore_max: float = 0.1  # ... clipped per coordinate to this bound
    score_rate: float = 0.5  # EMA rate of each member's score (noise averaging)


@register("pbt")
class PBTLite(BoxOptimizer):
    """Population-based search without training: members are points; each round evaluates all of them.

    Every ``interval`` rounds the bottom ``fraction`` (by EMA score) is replaced by copies of members
    drawn from the top ``fraction`` plus a bounded perturbation (|move| <= explore_max per coordinate,
    then projected onto the box). A copy inherits its parent's score until it is measured.
    """

    def __init__(self, bounds, seed, clock=None, **options):
        cfg = parse_options(PBTConfig, options, "pbt")
        self._init_box(bounds, seed, cfg.x0, clock)
        if cfg.pool < 2:
            raise ValueError(f"pbt.pool: expected >= 2, got {cfg.pool}")
        if not (0 < cfg.fraction <= 0.5):
            raise ValueError(f"pbt.fraction: expected 0 < fraction <= 0.5, got {cfg.fraction}")
        self.cfg = cfg
        self.members = np.clip(
            self.z0 + self.rng.uniform(-cfg.init_spread, cfg.init_spread, (cfg.pool, self.d)), 0.0, 1.0
        )
        self.members[0] = self.z0  # the start point itself is always in the pool
        self.draws = Draws()
        # EMA score per member (Python floats: 8 members cost less than one numpy call); NaN = not
        # measured yet.
        self.scores = [math.nan] * cfg.pool
        self.n_swap = max(1, int(round(cfg.fraction * cfg.pool)))

    @property
    def batch_size(self) -> int:
        return self.cfg.pool

    def _ask(self) -> np.ndarray:
        return self.members  # read only until tell(), which replaces rows after pending is cleared

    def _tell(self, y: np.ndarray, ys: list) -> None:
        cfg = self.cfg
        r = cfg.score_rate
        # s != s: a member without a score yet takes the measurement as it is.
        self.scores = sc = [v if s != s else s + r * (v - s) for s, v in zip(self.scores, ys)]
        if (self.rounds + 1) % cfg.interval:
            return
        ns = self.n_swap
        order = sorted(range(cfg.pool), key=sc.__getitem__)  # stable, like argsort(kind="stable")
        top, bottom = order[:ns], order[-ns:]
        # Parents uniform over the top; moves N(0, explore_sigma), clipped to explore_max, then the box.
        parents = [top[int(u * ns)] for u in self.draws.uniforms(self.rng, ns)]
        move = self.draws.normal_array(self.rng, ns * self.d).reshape(ns, self.d) * cfg.explore_sigma
        clip_(move, -cfg.explore_max, cfg.explore_max)
        move += self.members[parents]
        self.members[bottom] = clip_(move, 0.0, 1.0)
        for b, p in zip(bottom, parents):
            sc[b] = sc[p]

    def _best(self) -> np.ndarray:
        sc = self.scores
        if all(s != s for s in sc):
            return self.members[0].copy()
        # np.nanargmin: the first minimum among the measured members.
        best = min((i for i in range(len(sc)) if sc[i] == sc[i]), key=sc.__getitem__)
        return self.members[best].copy()
