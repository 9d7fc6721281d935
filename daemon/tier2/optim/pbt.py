"""PBT-lite: a small population; the worst members copy the best and explore with bounded moves."""
from __future__ import annotations

import msgspec
import numpy as np

from ..core import register, register_struct
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
        self.scores = np.full(cfg.pool, np.nan)
        self.n_swap = max(1, int(round(cfg.fraction * cfg.pool)))

    @property
    def batch_size(self) -> int:
        return self.cfg.pool

    def _ask(self) -> np.ndarray:
        return self.members.copy()

    def _tell(self, y: np.ndarray) -> None:
        cfg = self.cfg
        fresh = np.isnan(self.scores)
        if fresh.any():
            self.scores = np.where(fresh, y, self.scores + cfg.score_rate * (y - self.scores))
        else:
            self.scores += cfg.score_rate * (y - self.scores)
        if (self.rounds + 1) % cfg.interval:
            return
        order = np.argsort(self.scores, kind="stable")
        top, bottom = order[: self.n_swap], order[-self.n_swap:]
        # Uniform parent indices from floats: Generator.integers costs several times more per call.
        parents = top[(self.rng.random(self.n_swap) * self.n_swap).astype(np.intp)]
        move = self.rng.standard_normal((self.n_swap, self.d))
        move *= cfg.explore_sigma
        clip_(move, -cfg.explore_max, cfg.explore_max)
        move += self.members[parents]
        self.members[bottom] = clip_(move, 0.0, 1.0)
        self.scores[bottom] = self.scores[parents]

    def _best(self) -> np.ndarray:
        if np.isnan(self.scores).all():
            return self.members[0].copy()
        return self.members[int(np.nanargmin(self.scores))].copy()
