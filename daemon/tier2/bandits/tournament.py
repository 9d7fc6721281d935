"""Tournament selection over a small candidate set scored by cheap evaluations (shadow scores, replay)."""
from __future__ import annotations

import math

import msgspec
import numpy as np

from ..core import register, register_struct
from .base import Bandit, parse_bandit_options


@register_struct
class TournamentConfig(msgspec.Struct, forbid_unknown_fields=True):
    evals_per_round: int = 4  # cheap scores per surviving candidate per round
    keep: float = 0.5  # fraction of survivors kept after each round (at least one)
    detector: str | dict | None = "ph"  # on the winner's scores: a change restarts the tournament
    detector_threshold: float = 8.0
    discount: float = 1.0  # unused (uniform option set); a tournament restarts instead of forgetting
    window: int = 0


@register("tournament")
class Tournament(Bandit):
    """Successive-halving knockout. select() returns the surviving candidate with the fewest scores in
    the current round (round robin); once every survivor has ``evals_per_round`` scores, the best
    ``keep`` fraction by mean score survives. When one is left it is the winner and select() returns
    it; its scores keep feeding the change detector, and an alarm restarts the tournament with all
    candidates. Exact ties in a round are broken by the owned RNG."""

    def __init__(self, n_arms, seed, clock=None, **options):
        cfg = parse_bandit_options(TournamentConfig, options, "tournament")
        if cfg.evals_per_round < 1:
            raise ValueError(f"tournament.evals_per_round: expected >= 1, got {cfg.evals_per_round}")
        if not (0.0 < cfg.keep < 1.0):
            raise ValueError(f"tournament.keep: expected 0 < keep < 1, got {cfg.keep}")
        self._init_bandit(n_arms, seed, cfg, clock, stats=False)
        self.detectors = None  # one detector on the winner only, below
        from ..change import make_detector

        self.detector = make_detector(cfg.detector, threshold=cfg.detector_threshold)
        self.tournaments = 0
        self._start()

    def _start(self) -> None:
        self.alive = np.ones(self.n_arms, dtype=bool)
        self.count = np.zeros(self.n_arms)
        self.total = np.zeros(self.n_arms)
        self.winner = 0 if self.n_arms == 1 else -1
        self.tournaments += 1

    def _select(self, _x) -> int:
        if self.winner >= 0:
            return self.winner
        return int(np.argmin(np.where(self.alive, self.count, np.inf)))

    def _update(self, arm, r, x, feasible) -> None:
        if self.winner >= 0:
            if arm == self.winner and self.detector is not None and self.detector.update(r):
                self.restarts[arm] += 1
                self._start()
            return
        if not self.alive[arm]:
            return  # a score for an eliminated candidate (late replay) changes nothing
        self.count[arm] += 1
        self.total[arm] += r
        if (self.count[self.alive] >= self.cfg.evals_per_round).all():
            idx = np.flatnonzero(self.alive)
            mean = self.total[idx] / self.count[idx]
            n_keep = max(1, math.ceil(len(idx) * self.cfg.keep))
            order = np.lexsort((self.rng.random(len(idx)), -mean))
            self.alive[:] = False
            self.alive[idx[order[:n_keep]]] = True
            self.count[:] = 0.0
            self.total[:] = 0.0
            if n_keep == 1:
                self.winner = int(idx[order[0]])
                if self.detector is not None:
                    self.detector.reset()
