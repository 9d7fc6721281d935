"""Conditions -> regimes: the one definition Tier 2 and the demo's unguarded arm share.

Each `tuning.context` field (a telemetry mean such as the offered load) is placed on a log2 scale
in bands of CONTEXT_BAND; a regime is the tuple of band indices. Hysteresis: the current regime is
kept while every field stays within 3/4 of a band of its centre. The conditions must stay outside
it for CONTEXT_PERSIST observations and, when the caller passes a clock, for CONTEXT_PERSIST_S (a
load burst is not new conditions); the regime entered is the band of the latest observation. Fast attack, slow release: a field named in `fast_rise` that rose by
at least its factor over the current regime's centre (`tuning.context_fast_rise`, e.g. the offered
load doubling) counts after FAST_PERSIST observations without the persistence time: a load step
breaks the SLA within tens of milliseconds, so waiting a quarter second to be sure costs more than
a switch back later; a fall still waits the full time. Pure: the caller passes the observations
and the time.
"""
from __future__ import annotations

import math
from typing import Optional

from daemon.tier1.config import CONTEXT_PERSIST_S

CONTEXT_BAND = 0.5        # regime width per context field, log2 units (a factor of ~1.41)
CONTEXT_PERSIST = 3       # consecutive observations in a new regime before it counts...
# ...and this long (seconds), when the caller passes now_ns: CONTEXT_PERSIST_S, the default of
# tuning.context_persist_s
FAST_PERSIST = 2          # a fast rise (see Regimes): observations only, no time; two, so one odd value is not enough


class Regimes:
    def __init__(self, fields: tuple[str, ...], persist: int = CONTEXT_PERSIST, persist_s: float = CONTEXT_PERSIST_S,
                 fast_rise: Optional[dict[str, float]] = None):
        self.fields = tuple(fields)
        self.persist, self.persist_ns = persist, persist_s * 1e9
        # per field: the rise over the regime's centre, in band units, that skips the persistence time
        fr = fast_rise or {}
        self.fast_rise = tuple(math.log2(fr[f]) / CONTEXT_BAND if f in fr else math.inf for f in self.fields)
        self.regime: Optional[tuple] = None
        self.rose_from: Optional[tuple] = None   # the regime a run of fast entries started from (a step
                                                 # may be entered half-way: the rest of it is fast too)
        self.entered_ns = 0
        self.seen = 0        # consecutive observations outside the current regime (0: inside)...
        self.since = 0       # ...since this time

    def position(self, context: dict[str, float]) -> Optional[list[float]]:
        """Each field in band units (log2 / CONTEXT_BAND); None if one is missing or not > 0."""
        out = []
        for f in self.fields:
            v = context.get(f)
            if v is None or not v > 0 or not math.isfinite(v):
                return None
            out.append(math.log2(v) / CONTEXT_BAND)
        return out

    def update(self, context: dict[str, float], now_ns: int = 0) -> str:
        """"unknown" (a field missing), "stay", "pending" (outside, not yet persisted) or
        "entered" (the regime changed, the first one included)."""
        u = self.position(context)
        if u is None:
            return "unknown"
        r = self.regime
        if r is not None and all(abs(x - (b + 0.5)) <= 0.75 for x, b in zip(u, r)):
            self.seen = 0
            if self.rose_from is not None and now_ns - self.entered_ns >= self.persist_ns:
                self.rose_from = None    # the step has settled: a later rise is measured from here
            return "stay"
        if self.seen == 0:
            # outside the current regime: persistence counts from here, wherever outside the
            # conditions go next (a load on the edge between two bands jitters across it from one
            # cycle to the next: a new band each time would restart the count for ever)
            self.since = now_ns
        self.seen += 1
        fast = False
        if r is not None:
            up = any(x > b + 0.5 for x, b, k in zip(u, r, self.fast_rise) if k != math.inf)   # not a fall
            fast = up and (self._rose(u, r) or (self.rose_from is not None and self._rose(u, self.rose_from)))
            if self.seen < (min(self.persist, FAST_PERSIST) if fast else self.persist) \
                    or (now_ns and now_ns - self.since < self.persist_ns and not fast):
                return "pending"
        # enter where the conditions are now (a step is still arriving while it persists)
        self.rose_from = (self.rose_from or r) if fast else None
        self.regime, self.seen = tuple(math.floor(x) for x in u), 0
        self.entered_ns = now_ns
        return "entered"

    def _rose(self, u: list[float], r: tuple) -> bool:
        """A fast-rise field is at least its factor above regime `r`'s centre."""
        return any(x - (b + 0.5) >= k for x, b, k in zip(u, r, self.fast_rise))
