"""Snapback without a daemon: slot 0 of the live snapshot is the known-good baseline by
invariant, so publishing it alone under a new generation and releasing the lease returns the
data plane to the baseline even if the daemon is dead (systemd's ExecStopPost runs this)."""
from __future__ import annotations

from shm_layout.decl import SlotSpec, SnapshotSpec
from shm_layout.segment import Segment


def snapback_segment(target: str) -> dict:
    with Segment.attach(target, allow_foreign_owner=True) as seg:
        seg.acquire_writer()          # steals the role only from a dead writer
        _seq, snap = seg.read_snapshot()
        base = snap.slots[0]
        d = seg.declaration
        g = tuple(base.knobs[i] if k.is_global else snap.global_knobs[i] for i, k in enumerate(d.knobs))
        new = SnapshotSpec(snap.generation + 1, (SlotSpec(1.0, base.variant, base.knobs),), g, 0)
        seg.publish(new, 0)           # lease 0: released, the data plane serves slot 0 alone
        return {"generation": new.generation, "lease": "released", "baseline": dict(zip((k.name for k in d.knobs), base.knobs))}
