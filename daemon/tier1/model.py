"""Values that cross Tier 1's boundary: telemetry summaries in, proposals and commands in,
verdicts, evaluations and snapshots out.

Units: times are CLOCK_MONOTONIC nanoseconds (`*_ns`); statistics are in the telemetry
field's own unit; weights are ratios. Every Struct is immutable so a value handed to the
executor cannot change under it.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

import msgspec

from shm_layout.decl import SnapshotSpec


class FieldStats(msgspec.Struct, frozen=True):
    """Summary of one telemetry field over one slot's records of one cycle window."""
    count: int
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float


class SlotTelemetry(msgspec.Struct, frozen=True):
    """What one traffic slot produced during the cycle window ending at `CycleInput.now_ns`.

    `generation` is the snapshot generation every summarised record ran under; the runtime
    never mixes generations in one summary. `window_ns` is the span the records cover.
    """
    slot: int
    generation: int
    n_records: int
    window_ns: int
    fields: dict[str, FieldStats] = {}


class CycleInput(msgspec.Struct, frozen=True):
    """One decision cycle's inputs.

    `generation` is the generation the runtime believes is published; `ack_generation` the
    last generation the data plane acknowledged applying; `lease_ok` is False when the
    actuator lease lapsed (the data plane then serves slot 0 by itself).
    """
    now_ns: int
    generation: int
    slots: tuple[SlotTelemetry, ...] = ()
    ack_generation: int = 0
    lease_ok: bool = True


class Arm(msgspec.Struct, frozen=True):
    """One configuration to try: knob values by name (only allowlisted knobs; the others stay
    at the baseline) and optionally a variant name from the approved catalog.

    `preset` names an approved catalog entry whose knob bundle (and variant, if it has one) this
    arm applies exactly. A bundle was approved as a whole, so it may jump further than
    max_delta; every other rule (bounds, allowlist, rates, budget, quarantine, the canary ramp
    and the judge) still applies."""
    knobs: dict[str, float] = {}
    variant: Optional[str] = None
    preset: Optional[str] = None


class Proposal(msgspec.Struct, frozen=True):
    """What Tier 2 asks for.

    kind "probe": evaluate `arms` side by side for one probe window, then report each arm's
    objective (baseline unchanged). kind "rollout": exactly one arm, ramped through the canary
    steps; on promotion it becomes the known-good baseline.
    """
    proposal_id: str
    kind: Literal["probe", "rollout"]
    arms: tuple[Arm, ...]
    source: str = ""
    seed: int = 0
    note: str = ""


CommandName = Literal["freeze", "thaw", "rollback", "snapback", "reset_safe_mode", "enter_safe_mode", "cancel"]


class Command(msgspec.Struct, frozen=True):
    """An operator or runtime command. `enter_safe_mode` is how the runtime reports a full
    audit queue; `reason` is recorded in the event."""
    name: CommandName
    source: str = "operator"
    reason: str = ""


class Evaluation(msgspec.Struct, frozen=True):
    """Result of evaluating one arm, handed back to Tier 2.

    `objective` is the arm's objective in objective units (mean of block means; None when no
    valid data arrived). `baseline_objective` is slot 0's over the same blocks when measured.
    For a split probe, `n_blocks` is the number of closed rollout.block_s blocks in which both
    the arm and slot 0 had data, and `stderr` (from 2 such blocks on, else None) is the
    standard error of the mean per-block difference arm - slot 0, in objective units (not
    oriented, not relative), the scale to hold objective - baseline_objective against.
    Global (switchback) probes have no simultaneous baseline: n_blocks 0, stderr None.
    A promoted rollout's evaluation carries the same figures over the paired blocks of the last
    judged step (the one whose promote verdict `Promotion.evidence_ref` names).
    status: "ok", "regression" (the judge found it worse), "insufficient_data" (window ended without enough samples: treat as an
    evaluation timeout), "slo_breach" (the arm broke an SLO and was rolled back; in a multi-arm
    split probe only that arm stops, and its evaluation comes with the others' at the end of
    the window), "aborted" (the experiment was stopped by a command, the lease or the kill switch).
    """
    proposal_id: str
    arm: int
    status: Literal["ok", "insufficient_data", "slo_breach", "regression", "aborted"]
    objective: Optional[float] = None
    baseline_objective: Optional[float] = None
    n_records: int = 0
    n_blocks: int = 0
    stderr: Optional[float] = None


class Verdict(msgspec.Struct, frozen=True):
    """Outcome of `Executor.propose`.

    On rejection, `rule` names the rule that failed, `value` the requested or measured value
    and `limit` the limit it broke (both None when the rule has no number, e.g. the kill
    switch). On acceptance `snapshot` is what to publish now (None only when nothing changes).
    """
    accepted: bool
    proposal_id: str
    rule: str = ""
    value: Union[float, str, None] = None
    limit: Union[float, str, None] = None
    message: str = ""
    snapshot: Optional[SnapshotSpec] = None
    events: list = []
    # A deferred acceptance by the admission fast path: the snapshot as C memory
    # (`arqd_staged *`, publish with Segment.publish_staged); `snapshot` is None until complete().
    staged: Any = None


class StepOutput(msgspec.Struct):
    """What one `step`/`command` call produces: the snapshot to publish (None: keep the current
    one), audit events in order, and evaluations for Tier 2."""
    snapshot: Optional[SnapshotSpec] = None
    events: list = []
    evaluations: list[Evaluation] = []
