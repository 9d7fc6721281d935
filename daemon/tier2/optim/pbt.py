"""PBT-lite: a small population; the worst members copy the best and explore with bounded moves."""
from __future__ import annotations

import math

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
        members = np.clip(
            self.z0 + self.rng.uniform(-cfg.init_spread, cfg.init_spread, (cfg.pool, self.d)), 0.0, 1.0
        )
        members[0] = self.z0  # the start point itself is always in the pool
        # The population is kept in user units (ask() is then one copy, not a mapping) and so are the
        # explore bounds: a move of explore_sigma / explore_max of each knob's range.
        self.pop = self.to_user(members)
        self.move_sd = self.span * cfg.explore_sigma
        self.move_max = self.span * cfg.explore_max
        # Explore moves do not depend on the data: they are drawn, scaled and clipped for MOVE_BLOCK
        # exploit steps at once (three array calls per block instead of per step).
        self.moves = np.zeros((0, 1, self.d))
        self.pick: list = []
        self.move_i = 0
        # EMA score per member (Python floats: 8 members cost less than one numpy call); NaN = not
        # measured yet.
        self.scores = [math.nan] * cfg.pool
        self.n_swap = max(1, int(round(cfg.fraction * cfg.pool)))

    @property
    def members(self) -> np.ndarray:
        """(pool, d) the population, normalised units."""
        return self.to_unit(self.pop)

    @property
    def batch_size(self) -> int:
        return self.cfg.pool

    def _ask_user(self) -> np.ndarray:
        return self.pop.copy()  # tell() replaces rows of pop; the asked round must not change

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
        # Parents uniform over the top (a block of uniforms rides along with the moves); moves
        # N(0, explore_sigma) clipped to explore_max, added to the parent, then the box.
        i = self.move_i
        if i >= self.moves.shape[0]:
            self._draw_moves()
            i = 0
        self.move_i = i + 1
        parents = [top[int(u * ns)] for u in self.pick[i]]
        move = self.moves[i] + self.pop.take(parents, 0)  # take/row writes: a third of fancy indexing's cost
        clip_(move, self.lo, self.hi)
        pop = self.pop
        for b, p, row in zip(bottom, parents, move):
            pop[b] = row
            sc[b] = sc[p]

    MOVE_BLOCK = 8

    def _draw_moves(self) -> None:
        ns, d = self.n_swap, self.d
        self.pick = self.rng.random((self.MOVE_BLOCK, ns)).tolist()
        m = self.rng.standard_normal((self.MOVE_BLOCK, ns, d))
        m *= self.move_sd
        self.moves = clip_(m, -self.move_max, self.move_max)
        self.move_i = 0

    def recommend(self) -> np.ndarray:
        """(d,) the best-scored member (the start point before any score), user units."""
        sc = self.scores
        if all(s != s for s in sc):
            return self.pop[0].copy()
        # np.nanargmin: the first minimum among the measured members.
        best = min((i for i in range(len(sc)) if sc[i] == sc[i]), key=sc.__getitem__)
        return self.pop[best].copy()

    def _best(self) -> np.ndarray:
        return self.to_unit(self.recommend())
