"""Tier 2, the adaptive engine: optimizers and bandits that PROPOSE. Pure numpy cores; they never touch
live state (Tier 1 is the only writer). Each component owns a numpy Generator (PCG64) derived from its
seed; save() bytes restore byte-identically with load().

    opt = make_optimizer("spsa", bounds, seed=1)      # "spsa" | "es" | "cmaes" | "pbt"
    X = opt.ask(); opt.tell(y); x = opt.recommend()
    bandit = make_bandit("thompson", n_arms=10, seed=1)
    arm = bandit.select(); bandit.update(arm, reward)
"""
from __future__ import annotations

from .bandits import (KLUCB, UCB1, BetaThompson, GaussianThompson, Lexicographic, LinTS, LinUCB,
                      Tournament)
from .change import GLR, PageHinkley
from .core import NoChange, Reason, load
from .optim import CMAES, SPSA, AntitheticES, PBTLite

OPTIMIZERS = {"spsa": SPSA, "es": AntitheticES, "cmaes": CMAES, "pbt": PBTLite}
BANDITS = {
    "thompson": BetaThompson,
    "gaussian_thompson": GaussianThompson,
    "ucb": UCB1,
    "klucb": KLUCB,
    "linucb": LinUCB,
    "lints": LinTS,
    "lexicographic": Lexicographic,
    "tournament": Tournament,
}


def make_optimizer(kind: str, bounds, seed: int, clock=None, **options):
    """New optimizer. bounds: (d, 2) user units; seed: non-negative int; clock: optional callable used
    only for deadline checks when no ``now`` is passed; options: the kind's config fields."""
    try:
        cls = OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f"make_optimizer: unknown kind {kind!r}; expected one of {sorted(OPTIMIZERS)}") from None
    return cls(bounds, seed, clock=clock, **options)


def make_bandit(kind: str, n_arms: int, seed: int, clock=None, **options):
    """New bandit over ``n_arms`` variants. Linear kinds need ``dim`` (context length)."""
    try:
        cls = BANDITS[kind]
    except KeyError:
        raise ValueError(f"make_bandit: unknown kind {kind!r}; expected one of {sorted(BANDITS)}") from None
    return cls(n_arms, seed, clock=clock, **options)


__all__ = ["make_optimizer", "make_bandit", "load", "NoChange", "Reason", "PageHinkley", "GLR",
           "OPTIMIZERS", "BANDITS"]
