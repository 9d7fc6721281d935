"""One immutable description of the running daemon.

`RuntimeStatus` is the single source for `arqond status`, the control socket's
`status` reply and the Prometheus gauges. The decision loop builds a fresh one a
few times per second and hands the same object to all three, so they can never
disagree.

Units: durations are seconds (float), timestamps are Unix seconds unless the
field name says `monotonic`, ratios are in [0, 1]. Per-slot tuples are indexed by
traffic slot (slot 0 is always the known-good baseline).

The label sets the metrics export are bounded by construction: knob names come
from the data plane's declaration, SLO names from the loaded config, slots and
rings from the segment layout, and outcomes, reasons and rollout states from the
fixed tuples below. Anything outside a fixed tuple is folded into "other" (or
"unknown" for the rollout state) instead of creating a new series.
"""
from __future__ import annotations

import msgspec

# Rollout states, exactly the values of `daemon.tier1.rollout.State` (Tier 1 owns them; this mirror
# keeps the metric's `state` label set fixed): see that module for what each state means.
ROLLOUT_STATES: tuple[str, ...] = (
    "idle", "probing", "shadow", "canary", "switchback", "baking", "promoted", "aborting",
    "cooldown", "safe_mode", "frozen",
)
# What Tier 1 did with a Tier-2 proposal.
PROPOSAL_OUTCOMES: tuple[str, ...] = (
    "applied",       # validated and published
    "rejected",      # a guardrail (allowlist, bounds, delta, rate, budget...) refused it
    "no_change",     # Tier 2 proposed nothing (e.g. evaluation timeout)
    "blocked",       # safe mode, freeze or kill switch: not even validated
    "other",
)
# Why a live candidate went back to the baseline: the Tier-1 rollout triggers that lead to
# `aborting` (plus ack_timeout), so the loop can pass the trigger name unchanged.
ROLLBACK_REASONS: tuple[str, ...] = (
    "slo_breach", "judge_abort", "regressions_limit", "deadline", "lease_lost", "ack_timeout",
    "rollback",       # operator command
    "snapback", "config_reload", "kill",
    "cancel",         # Tier 2 withdrew its experiment: the conditions it was made for changed
    "other",
)
# Experiment lifecycle events counted by the metrics.
EXPERIMENT_EVENTS: tuple[str, ...] = ("started", "promoted", "rolled_back")


class LeaseStatus(msgspec.Struct, frozen=True):
    """The actuator lease: the data plane reverts to its baseline when it lapses."""
    deadline_monotonic_s: float = 0.0  # CLOCK_MONOTONIC seconds
    ok: bool = False
    lapses: int = 0                    # cumulative since daemon start


class KnobStatus(msgspec.Struct, frozen=True):
    """One declared knob: its baseline value and the live value in every slot."""
    name: str
    baseline: float
    live: tuple[float, ...] = ()       # per slot, in the knob's own unit


class SlotStatus(msgspec.Struct, frozen=True):
    """One traffic slot of the published snapshot."""
    weight: float                      # ratio of keys; all slots sum to 1
    variant: str = ""


class Statistic(msgspec.Struct, frozen=True):
    """A measured objective or SLO statistic for one slot, with its limit if any."""
    name: str
    slot: int
    value: float
    limit: float | None = None         # SLO bound in the same unit; None for objectives
    breached: bool = False             # Tier 1's verdict (a limit may be a floor or a ceiling)


class RingStatus(msgspec.Struct, frozen=True):
    """One telemetry ring as last seen by the drainer."""
    fill_ratio: float = 0.0            # records waiting / capacity
    drops: int = 0                     # records the data plane dropped (cumulative)


class AuditStatus(msgspec.Struct, frozen=True):
    depth: int = 0                     # events queued, not yet written
    high_water: int = 0                # largest depth seen
    capacity: int = 0
    healthy: bool = True               # False once the queue filled (safe mode follows)


class BusStatus(msgspec.Struct, frozen=True):
    enabled: bool = False
    connected: bool = False
    queued: int = 0                    # events waiting for the connection
    dropped: int = 0                   # cumulative, bus events are best effort
    spooled: int = 0                   # cumulative, written to the local spool instead


class ConfigStatus(msgspec.Struct, frozen=True):
    path: str = ""
    last_reload_ok: bool = True
    last_reload_time_s: float = 0.0    # Unix seconds of the last successful (re)load
    last_error: str = ""               # why the last reload was refused, if it was


class CycleStatus(msgspec.Struct, frozen=True):
    last_s: float = 0.0
    p50_s: float = 0.0
    p99_s: float = 0.0
    overruns: int = 0                  # cycles that exceeded their period (cumulative)


class RuntimeStatus(msgspec.Struct, frozen=True):
    """Everything an operator or a scraper needs to know about one daemon."""
    target: str
    version: str = ""
    epoch: int = 0                     # random per segment creation; changes on data-plane restart
    attached: bool = False
    dataplane_pid: int = 0
    lease: LeaseStatus = LeaseStatus()
    generation_published: int = 0
    generation_acked: int = 0
    ack_latency_s: float = 0.0         # last publish -> ack delay
    knobs: tuple[KnobStatus, ...] = ()
    slots: tuple[SlotStatus, ...] = ()
    objectives: tuple[Statistic, ...] = ()
    slos: tuple[Statistic, ...] = ()
    rollout_state: str = "idle"        # one of ROLLOUT_STATES
    experiment_id: str = ""            # "" when no experiment is active
    safe_mode: bool = False
    safe_mode_reason: str = ""
    kill_switch: bool = False
    proposals: dict[str, int] = {}     # outcome -> count (keys from PROPOSAL_OUTCOMES)
    rollbacks: dict[str, int] = {}     # reason -> count (keys from ROLLBACK_REASONS)
    # Tier 1's admission fast path (daemon/tier1/admit.py): "accepted", "mismatch" (what went live
    # disagreed with the Python layout or bounds: a bug, snapped back), "plans" (made), and
    # "declined_<why>" for the proposals it left to the Python rules
    fast_path: dict[str, int] = {}
    breaches: dict[str, int] = {}      # SLO name -> count
    rings: tuple[RingStatus, ...] = ()
    audit: AuditStatus = AuditStatus()
    bus: BusStatus = BusStatus()
    config: ConfigStatus = ConfigStatus()
    cycle: CycleStatus = CycleStatus()
    uptime_s: float = 0.0
    metrics_port: int = 0              # where /metrics is served (the bound port when configured as 0)


def to_builtins(status: RuntimeStatus) -> dict:
    """Plain JSON-ready dict (what the control socket sends)."""
    return msgspec.to_builtins(status)


def from_builtins(obj: dict) -> RuntimeStatus:
    """Inverse of `to_builtins`; raises msgspec.ValidationError naming the bad path."""
    return msgspec.convert(obj, RuntimeStatus)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.6g}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()) if v) or "none"


def render_table(status: RuntimeStatus) -> str:
    """Compact plain-text view for `arqond status` (fits 100 columns; no colour codes)."""
    s = status
    lines: list[str] = []
    add = lines.append
    att = f"attached pid {s.dataplane_pid} epoch {s.epoch:#x}" if s.attached else "NOT attached"
    add(f"arqond {s.version} target {s.target}: {att}, up {s.uptime_s:.0f} s")
    lease = "ok" if s.lease.ok else "LAPSED"
    add(f"lease {lease} (lapses {s.lease.lapses})   generation published {s.generation_published} "
        f"acked {s.generation_acked}   ack latency {_ms(s.ack_latency_s)}")
    mode = []
    if s.kill_switch:
        mode.append("KILL SWITCH ON")
    if s.safe_mode:
        mode.append(f"SAFE MODE ({s.safe_mode_reason or 'no reason given'})")
    exp = s.experiment_id or "-"
    add(f"rollout {s.rollout_state}   experiment {exp}" + ("   " + ", ".join(mode) if mode else ""))

    if s.knobs:
        n = max(len(s.slots), max(len(k.live) for k in s.knobs), 1)
        w = max(8, max(len(k.name) for k in s.knobs))
        head = f"{'knob':<{w}}  {'baseline':>10}" + "".join(f"  {'slot ' + str(i):>10}" for i in range(n))
        add("")
        add(head)
        if s.slots:
            add(f"{'weight':<{w}}  {'':>10}" + "".join(f"  {sl.weight:>10.4g}" for sl in s.slots))
            if any(sl.variant for sl in s.slots):
                add(f"{'variant':<{w}}  {'':>10}" + "".join(f"  {sl.variant[:10]:>10}" for sl in s.slots))
        for k in s.knobs:
            add(f"{k.name:<{w}}  {_fmt(k.baseline):>10}" + "".join(f"  {_fmt(v):>10}" for v in k.live))

    stats = [("objective", x) for x in s.objectives] + [("slo", x) for x in s.slos]
    if stats:
        add("")
        add(f"{'kind':<9}  {'name':<20} {'slot':>4}  {'value':>12}  {'limit':>12}")
        for kind, x in stats:
            flag = "  BREACH" if x.breached else ""
            add(f"{kind:<9}  {x.name:<20} {x.slot:>4}  {_fmt(x.value):>12}  {_fmt(x.limit):>12}{flag}")

    add("")
    add(f"proposals: {_counts(s.proposals)}")
    add(f"rollbacks: {_counts(s.rollbacks)}")
    add(f"breaches:  {_counts(s.breaches)}")
    if s.rings:
        add("rings:     " + ", ".join(f"#{i} fill {r.fill_ratio:.1%} drops {r.drops}" for i, r in enumerate(s.rings)))
    a = s.audit
    add(f"audit:     depth {a.depth}/{a.capacity} (high water {a.high_water}) "
        + ("healthy" if a.healthy else "UNHEALTHY"))
    b = s.bus
    if b.enabled:
        add(f"bus:       {'connected' if b.connected else 'DISCONNECTED'}, queued {b.queued}, "
            f"dropped {b.dropped}, spooled {b.spooled}")
    else:
        add("bus:       disabled")
    c = s.config
    add(f"config:    {c.path or '-'} last reload " + ("ok" if c.last_reload_ok else f"FAILED: {c.last_error}"))
    cy = s.cycle
    add(f"cycle:     last {_ms(cy.last_s)}, p50 {_ms(cy.p50_s)}, p99 {_ms(cy.p99_s)}, overruns {cy.overruns}")
    return "\n".join(lines) + "\n"
