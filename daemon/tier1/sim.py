"""A small telemetry simulator for Tier 1's tests and the judge benchmark.

It stands in for the data plane + runtime: given the published snapshot it produces one
`CycleInput` per cycle, with per-slot summaries whose mean comes from a caller-supplied
function. Pure given its seed (numpy Generator owned by the instance).

Noise model (per slot, per cycle): value = truth x (1 + drift(t)) x (1 + ar + white / sqrt(n))
where `ar` is an AR(1) process (phi, stationary sd `ar_sd`) private to the slot plus one
shared by all slots (`shared_ar_sd`: host-level noise), `drift` is a slow load curve shared
by all slots, and `white` is per-record noise averaged over n records.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from shm_layout.decl import SlotSpec, SnapshotSpec

from .model import CycleInput, FieldStats, SlotTelemetry

NS = 1_000_000_000


def stats(mean: float, n: int, spread: float = 0.5) -> FieldStats:
    """FieldStats with a plausible shape around `mean` (p99 = mean x (1 + 2 x spread))."""
    return FieldStats(n, mean, mean * (1 - spread), mean * (1 + 3 * spread), mean,
                      mean * (1 + 1.5 * spread), mean * (1 + 2 * spread))


class TelemetrySim:
    """Per-cycle telemetry for whatever snapshot is live.

    truth(slot_spec, slot_index, t_ns) -> dict field -> true mean (None to omit the slot).
    `records_per_cycle` are split by slot weight. `ack_lag` cycles before the ack shows.
    """

    def __init__(self, truth: Callable[[SlotSpec, int, int], Optional[dict]], *, seed: int = 0,
                 period_ns: int = 10_000_000, records_per_cycle: int = 200, phi: float = 0.9,
                 ar_sd: float = 0.0, white_sd: float = 0.0, drift: Optional[Callable[[int], float]] = None,
                 ack_lag: int = 0, shared_ar_sd: float = 0.0):
        self.truth = truth
        self.rng = np.random.default_rng(seed)
        self.period_ns = period_ns
        self.records = records_per_cycle
        self.phi = phi
        self.ar_sd = ar_sd
        self.innov = ar_sd * math.sqrt(1 - phi * phi)
        self.white_sd = white_sd
        self.drift = drift
        self.ack_lag = ack_lag
        self.ar = [0.0] * 8
        self.shared_innov = shared_ar_sd * math.sqrt(1 - phi * phi)
        self.shared = 0.0
        self._gen_seen: dict[int, int] = {}

    def cycle(self, now_ns: int, snap: SnapshotSpec, *, lease_ok: bool = True, ack: bool = True,
              generation: Optional[int] = None) -> CycleInput:
        gen = snap.generation if generation is None else generation
        slots = []
        d = self.drift(now_ns) if self.drift else 0.0
        self.shared = self.phi * self.shared + self.shared_innov * float(self.rng.standard_normal())
        for i, sl in enumerate(snap.slots):
            self.ar[i] = self.phi * self.ar[i] + self.innov * float(self.rng.standard_normal())
            n = int(round(self.records * sl.weight))
            if n <= 0:
                continue
            tr = self.truth(sl, i, now_ns)
            if tr is None:
                continue
            w = self.white_sd * float(self.rng.standard_normal()) / math.sqrt(n)
            f = {k: stats(v * (1 + d) * (1 + self.shared + self.ar[i] + w), n) for k, v in tr.items()}
            slots.append(SlotTelemetry(i, gen, n, self.period_ns, f))
        seen = self._gen_seen.setdefault(snap.generation, 0)
        self._gen_seen[snap.generation] = seen + 1
        acked = snap.generation if (ack and seen >= self.ack_lag) else snap.generation - 1
        return CycleInput(now_ns, gen, tuple(slots), acked, lease_ok)
