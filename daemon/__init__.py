"""arqond: the sidecar daemon. Tiers live in `tier1/` (safety) and `tier2/` (adaptive
engine); `runtime/` is the only code that touches the world (memory, clock, sockets)."""
__version__ = "0.1.0"
