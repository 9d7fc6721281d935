"""Tier 1's audit events. Each is a tagged msgspec Struct (`"event": "<tag>"` in JSON).

Every event carries: `run_id` (this executor run), `seq` (position in the run, from 1),
`cycle` (decision cycle counter, one per `step`), `t_ns` (CLOCK_MONOTONIC of the call that
emitted it), `config_generation` (guardrails version in force), `proposal_id` ("" when none),
plus the inputs that decided it (measured values, rule, thresholds, seed) so the decision can
be recomputed by hand. `ExecState` (executor.py) is a pure fold over these events.
"""
from __future__ import annotations

from typing import Optional, Union

import msgspec

from shm_layout.decl import SnapshotSpec

from .model import Arm

_E = dict(tag_field="event", frozen=True, kw_only=True)


class _Base(msgspec.Struct, **_E):
    run_id: str
    seq: int
    cycle: int
    t_ns: int
    config_generation: int
    proposal_id: str = ""


class KnobTouch(msgspec.Struct, frozen=True):
    """What an accepted proposal spends of one knob's rate, budget and flip allowances.
    `cost`: normalised change x traffic share. `direction`: -1/0/+1 (rollouts only; probes are
    symmetric around the baseline and do not move it). Directions are recorded for the audit;
    the flips and hysteresis rules read `Promotion.moves` (only a promotion moves the baseline)."""
    knob: str
    cost: float
    direction: int
    move: float   # normalised signed change of the rollout (0 for probes)


class Digest(_Base, tag="digest"):
    """One closed judge block: per-slot objective means and record counts that fed a pair."""
    digest_id: str
    phase: str
    block: int
    candidate_objective: Optional[float]
    baseline_objective: Optional[float]
    candidate_n: int
    baseline_n: int
    objective_value: Optional[float] = None   # candidate - baseline, oriented (+ = worse)


class ProposalEvent(_Base, tag="proposal"):
    kind: str
    source: str
    seed: int
    arms: tuple[Arm, ...]
    note: str
    config_version: int
    delta_summary: dict[str, float]   # knob -> largest normalised |arm - baseline| over the arms


class ValidationVerdict(_Base, tag="validation"):
    accepted: bool
    rule: str
    value: Union[float, str, None]
    limit: Union[float, str, None]
    message: str
    touches: tuple[KnobTouch, ...] = ()
    thrash_cooldown: dict[str, int] = {}   # knob -> cooldown end (ns) started by this verdict
    horizon_ns: int = 0                    # how long knob history matters (max window)


class Apply(_Base, tag="apply"):
    """A snapshot handed to the runtime to publish. `new_config_version` is its generation."""
    new_config_version: int
    reason: str
    snapshot: SnapshotSpec


class Ack(_Base, tag="ack"):
    generation: int


class Transition(_Base, tag="transition"):
    """A rollout state change and why: the trigger, what was measured, the condition."""
    from_state: str
    to_state: str
    trigger: str
    measured: Union[float, str, None] = None
    condition: str = ""
    threshold: Union[float, str, None] = None


class MetricVerdict(msgspec.Struct, frozen=True):
    """One metric's comparative test over paired block differences (oriented, + = worse,
    relative to |baseline mean|)."""
    metric: str
    decision: str
    n_blocks: int
    mean_diff: Optional[float]
    stderr: Optional[float]
    lag1: Optional[float]
    t_crit: Optional[float]
    lcb: Optional[float]
    ucb: Optional[float]
    effect_margin: float
    abort_margin: float
    alpha_look: float
    enforce: bool = True
    trend_end: Optional[float] = None   # least-squares line of the differences at the latest block
                                        # (same orientation and scale); a verdict against it is vetoed


class FeasibilityVerdict(msgspec.Struct, frozen=True):
    """One enforcing SLO over the paired blocks of a look, each side against the limit.
    `*_violation` are block means of (stat - limit) / |limit| (+ = breach, the SLO's own
    orientation); the candidate is `cand_feasible` when its upper bound is below 0, the baseline
    `base_infeasible` when its lower bound is above 0 (one-sided t at alpha_look each)."""
    slo: str
    n_blocks: int
    limit: float
    cand_violation: float
    cand_ucb: float
    base_violation: float
    base_lcb: float
    t_crit: float
    cand_feasible: bool
    base_infeasible: bool


class JudgeVerdict(_Base, tag="judge_verdict"):
    phase: str
    step: int
    weight: float
    decision: str                     # promote | hold | abort (worst-of over enforcing metrics)
    metrics: tuple[MetricVerdict, ...]
    n_samples: int
    min_samples: int
    min_blocks: int
    look: int
    max_looks: int
    rule: str = "objective"           # objective | feasibility_first | feasibility_pending (judge.py)
    feasibility: tuple[FeasibilityVerdict, ...] = ()


class Promotion(_Base, tag="promotion"):
    variant_id: str
    old_state: str
    new_state: str
    evidence_ref: str
    old_baseline: tuple[float, ...]
    new_baseline: tuple[float, ...]
    old_variant: int
    new_variant: int
    moves: dict[str, int] = {}   # knob -> +1/-1: direction of each allowlisted knob's baseline change
    horizon_ns: int = 0          # how long these directions matter to the flips rule
    reason: str = ""             # the rule that passed the candidate (see judge.py)


class Rollback(_Base, tag="rollback"):
    rollback_reason: str
    rule: str
    measured: Union[float, str, None]
    threshold: Union[float, str, None]
    reverted_to_version: int
    cooldown_until_ns: int
    counts_as_regression: bool


class Quarantine(_Base, tag="quarantine"):
    """A failed region: a ball of `radius` (normalised knob space, Euclidean) around `center`
    for the same variant, or the whole variant when `variant_only`."""
    center: tuple[float, ...]
    variant: int
    variant_only: bool
    radius: float
    until_ns: int
    reason: str


class SafeModeEntered(_Base, tag="safe_mode_entered"):
    reason: str
    exit_condition: str
    exit_at_ns: int                   # 0: manual reset only


class SafeModeExited(_Base, tag="safe_mode_exited"):
    duration_us: int
    exit_reason: str


class KillSwitch(_Base, tag="kill_switch"):
    engaged: bool
    source: str


class CommandEvent(_Base, tag="command"):
    name: str
    source: str
    accepted: bool
    message: str


class ConfigReload(_Base, tag="config_reload"):
    old_generation: int
    target: str


class EvaluationEvent(_Base, tag="evaluation"):
    arm: int
    status: str
    objective: Optional[float]
    baseline_objective: Optional[float]
    n_records: int
    n_blocks: int
    stderr: Optional[float]


class SloCheck(_Base, tag="slo_check"):
    """An SLO window that decided something (breach, or a dry-run breach that did not)."""
    slo: str
    slot: int
    stat: str
    value: float
    limit: float
    margin: float
    baseline_margin: Optional[float]
    n: int
    enforce: bool
    outcome: str


Event = Union[Digest, ProposalEvent, ValidationVerdict, Apply, Ack, Transition, JudgeVerdict, Promotion,
              Rollback, Quarantine, SafeModeEntered, SafeModeExited, KillSwitch, CommandEvent, ConfigReload,
              EvaluationEvent, SloCheck]

EVENT_TYPES = (Digest, ProposalEvent, ValidationVerdict, Apply, Ack, Transition, JudgeVerdict, Promotion,
               Rollback, Quarantine, SafeModeEntered, SafeModeExited, KillSwitch, CommandEvent, ConfigReload,
               EvaluationEvent, SloCheck)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(list[Event])


def encode(events: list) -> bytes:
    """Events as one JSON array (the form replay tests compare byte for byte)."""
    return _enc.encode(events)


def decode(data: bytes) -> list:
    return _dec.decode(data)
