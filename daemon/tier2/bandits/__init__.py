"""Discrete selection among approved variants (one class per policy)."""
from .lexicographic import Lexicographic
from .linear import LinTS, LinUCB
from .thompson import BetaThompson, GaussianThompson
from .tournament import Tournament
from .ucb import KLUCB, UCB1

__all__ = ["BetaThompson", "GaussianThompson", "UCB1", "KLUCB", "LinUCB", "LinTS", "Lexicographic",
           "Tournament"]
