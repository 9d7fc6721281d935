"""Box-bounded ask/tell optimizers (one class per algorithm)."""
from .cmaes import CMAES
from .es import AntitheticES
from .pbt import PBTLite
from .spsa import SPSA

__all__ = ["SPSA", "AntitheticES", "CMAES", "PBTLite"]
