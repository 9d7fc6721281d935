"""guardrails.yaml: the schema (msgspec Structs), the loader and the checks against the data
plane's declaration.

The loader reports EVERY problem it can find at once, each as
`file:line: key.path: found <value>; expected <what>`, using PyYAML's composer marks for line
numbers. A file with any error is not loaded at all (the daemon keeps its last good config).
Defaults follow the runtime contract (docs: /work/shared/reference/runtime-contract.md).

Units: `*_s` seconds, `*_hz` per second, ratios in [0, 1]; `max_delta` is a ratio of the
knob's declared range when `delta_mode: normalised`, knob units when `absolute`.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import msgspec
import yaml

from shm_layout.decl import Declaration
from shm_layout.spec import MAX_SLOTS

Stat = Literal["mean", "p50", "p95", "p99", "min", "max", "count", "rate"]
Lifecycle = Literal["Draft", "Evaluated", "Approved", "Promoted", "Archived"]
ELIGIBLE_STATES = ("Approved", "Promoted")
CONTEXT_PERSIST_S = 0.25   # default tuning.context_persist_s (Tier 2's regimes, tier2/regimes.py)

_S = dict(forbid_unknown_fields=True, frozen=True, kw_only=True)


class Limits(msgspec.Struct, **_S):
    """Per-knob step limits; a knob entry may override each. None = take it from the preset."""
    max_delta: Optional[float] = None
    delta_mode: Literal["normalised", "absolute"] = "normalised"
    rate_limit_hz: Optional[float] = None
    min_interval_s: Optional[float] = None


class KnobRule(msgspec.Struct, **_S):
    """One allowlisted knob. `min`/`max` may only narrow the data plane's declared hard bounds
    (None = the declared bound)."""
    min: Optional[float] = None
    max: Optional[float] = None
    max_delta: Optional[float] = None
    delta_mode: Optional[Literal["normalised", "absolute"]] = None
    rate_limit_hz: Optional[float] = None
    min_interval_s: Optional[float] = None


class AntiThrashing(msgspec.Struct, **_S):
    """Direction flips of a knob's promoted baseline changes: a rollout that would make more
    than `max_flips` within `window_s` starts a `cooldown_s` pause of that knob's rollouts. A
    rollout reversing the last promoted direction by less than `hysteresis` x max_delta is
    refused outright (dead band). Probes and rolled-back rollouts never moved the baseline: they
    are neither reversals nor flips, and a cooldown does not hold probes (rate, interval and
    budget still do)."""
    max_flips: int = 3
    window_s: float = 60.0
    cooldown_s: float = 30.0
    hysteresis: float = 0.1


class Budget(msgspec.Struct, **_S):
    """Cumulative change per knob within `window_s`, in normalised range units weighted by the
    share of traffic exposed (a probe arm at 10% of traffic moving 0.05 costs 0.005)."""
    max_change: float = 0.5
    window_s: float = 60.0


class ObjectiveTerm(msgspec.Struct, **_S):
    field: str
    stat: Stat = "mean"
    weight: float = 1.0


class Objective(msgspec.Struct, **_S):
    """The quantity Tier 2 optimises and the judge compares: sum(weight x field.stat)."""
    direction: Literal["minimize", "maximize"] = "minimize"
    terms: tuple[ObjectiveTerm, ...] = ()


class Slo(msgspec.Struct, **_S):
    """An absolute guardrail on a candidate slot: `field.stat <= max` (or `>= min`), checked on
    every window of at least `min_samples` records. `enforce: false` = dry run (recorded,
    never decides). `compare: true` also makes the comparative judge test it (worst-of)."""
    name: str
    field: str
    stat: Stat = "p99"
    max: Optional[float] = None
    min: Optional[float] = None
    min_samples: int = 20
    enforce: bool = True
    compare: bool = False


class Rollout(msgspec.Struct, **_S):
    """Rollout policy. Times in seconds; weights are ratios of traffic."""
    shadow: Literal["on", "off", "auto"] = "auto"
    shadow_weight: float = 0.01
    shadow_s: float = 2.0
    canary_steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    # SLA-first relief: while the baseline breaches an enforcing SLO, a rollout of an approved
    # preset (Arm.preset) skips the canary ramp and bakes at 100% (SLOs checked every cycle, a
    # breach rolls back at once). Keeping a baseline that breaches is not the safe choice.
    relief: bool = False
    min_samples: int = 200
    min_blocks: int = 8
    block_s: float = 0.5
    confidence: float = 0.99
    effect_margin: float = 0.05
    abort_margin: float = 0.0
    bake_s: float = 5.0
    step_deadline_s: float = 30.0
    settle_s: float = 0.01
    cooldown_after_rollback_s: float = 10.0
    quarantine_s: float = 600.0
    quarantine_radius: float = 0.05
    probe_weight: float = 0.1
    probe_window_s: float = 0.5
    probe_min_samples: int = 20
    max_consecutive_regressions: int = 5


class CatalogFields(msgspec.Struct, **_S):
    """Which telemetry fields the catalog's hard constraints refer to."""
    latency: str = "latency_us"
    quality: str = "quality"
    cost: str = "cost"


class CatalogEntry(msgspec.Struct, **_S):
    """One approved (or not yet approved) catalog entry: a code `variant` the data plane
    declares, a `knobs` bundle (a preset discovered offline, e.g. by `arqond demo discover`),
    or both. `context` records the conditions (telemetry field means named in
    `tuning.context`) the entry was found best for: Tier 2 proposes the entry nearest to the
    observed conditions when they change."""
    id: str
    variant: Optional[str] = None
    knobs: dict[str, float] = {}
    context: dict[str, float] = {}
    state: Lifecycle = "Draft"
    version: str = "1"
    max_p99: Optional[float] = None
    min_quality: Optional[float] = None
    max_cost: Optional[float] = None
    checksum: str = ""
    rollback_target: str = "baseline"


def nearest_entry(entries: Sequence[CatalogEntry], fields: Sequence[str],
                  context: dict[str, float]) -> tuple[Optional[CatalogEntry], float]:
    """The entry whose `context` is nearest the measured `context` and that distance, Euclidean
    over `fields` in log2 units (conditions such as load are compared by ratio). A field the entry
    does not name counts 0. (None, inf) when `entries` is empty or a measured field is missing or
    not > 0. Ties: the first entry. The one definition Tier 2 (which preset to propose) and Tier 1
    (whether a preset is the one for the conditions it measures) share."""
    u = []
    for f in fields:
        v = context.get(f)
        if v is None or not v > 0 or not math.isfinite(v):
            return None, math.inf
        u.append(math.log2(v))
    best, best_d = None, math.inf
    for c in entries:
        d = 0.0
        for f, x in zip(fields, u):
            cv = c.context.get(f)
            if cv is not None and cv > 0:
                d += (x - math.log2(cv)) ** 2
        if d < best_d:
            best, best_d = c, d
    return best, math.sqrt(best_d)


def risen_beyond(approved: dict[str, float], measured: dict[str, float],
                 fast_rise: dict[str, float]) -> Optional[str]:
    """The first `tuning.context_fast_rise` field measured at >= its factor times the value an
    entry was approved for (`approved`, its context), or None: conditions the entry was not
    approved for, in the direction the operator declared an SLA risk. The one rule Tier 1 (relief
    from the baseline's entry) and Tier 2 (which variants a tournament may run) share."""
    for f, k in fast_rise.items():
        was, now = approved.get(f, 0.0), measured.get(f)
        if was > 0 and now is not None and now >= k * was:
            return f
    return None


class Catalog(msgspec.Struct, **_S):
    """`p99_min_samples`: records a window needs before an entry's `max_p99` is checked. A
    p99 over n records is the maximum below n = 100; from 100 on it is an order statistic
    that leaves the worst 1 % out (the other constraints use rollout.probe_min_samples)."""
    fields: CatalogFields = CatalogFields()
    variants: tuple[CatalogEntry, ...] = ()
    p99_min_samples: int = 100


class Lease(msgspec.Struct, **_S):
    duration_s: float = 0.5


class KillSwitch(msgspec.Struct, **_S):
    engaged: bool = False


class SafeMode(msgspec.Struct, **_S):
    """`exit_after_s`: leave safe mode by timer (0 = only a manual reset_safe_mode)."""
    exit_after_s: float = 300.0


class Audit(msgspec.Struct, **_S):
    """`batch_s`: group commit of the bookkeeping events (proposals, verdicts, applies, acks,
    transitions, evaluations): written and fdatasync'ed at most this often. Events that change
    the baseline or the safety state (promotion, rollback, quarantine, safe mode, kill switch,
    commands, config reloads) are written and synced at the end of their cycle whatever this says.
    Each batch costs the writer thread a wake-up, encoding and an fdatasync (~0.2-0.4 ms of CPU
    on a small VM), so a shorter batch buys durability of bookkeeping with CPU."""
    path: str = "/var/lib/arqond/audit.log"
    queue_size: int = 65536
    high_water_ratio: float = 0.8
    batch_s: float = 0.1


class Metrics(msgspec.Struct, **_S):
    address: str = "127.0.0.1:9464"


class Cycle(msgspec.Struct, **_S):
    period_s: float = 0.010


class Bus(msgspec.Struct, **_S):
    """ArqonBus (optional, outbound): summaries at `summary_hz`, governance and audit events.
    The daemon runs and stays safe with the bus down; events are spooled and resent."""
    enabled: bool = False
    url: str = "ws://127.0.0.1:9100"
    room: Optional[str] = None           # default prod:<target>
    token_file: Optional[str] = None     # HS256 JWT, sent as Authorization: Bearer
    summary_hz: float = 2.0              # 1-10 Hz: summaries, never per-tick data
    spool_dir: Optional[str] = None      # default: <audit dir>/bus-spool


class Tuning(msgspec.Struct, **_S):
    """Tier 2, the proposer. Continuous knobs are tuned by `optimizer` from probe results
    (each probe runs its arms beside the baseline at `rollout.probe_weight`); every
    `rollout_every` probe rounds the optimizer's recommendation is rolled out through the
    canary steps. Variants are chosen by `bandit` among eligible catalog entries when
    `variants` is on. Deterministic under `seed`."""
    enabled: bool = True
    seed: int = 1
    optimizer: Literal["spsa", "es", "cmaes", "pbt"] = "spsa"
    knobs: tuple[str, ...] = ()          # empty: every allowlisted knob
    options: dict[str, float] = {}       # optimizer options (e.g. a, c, A)
    rollout_every: int = 4               # probe rounds between rollouts of the recommendation
    variants: bool = False
    bandit: Literal["thompson", "gaussian_thompson", "ucb", "klucb", "lexicographic"] = "lexicographic"
    explore_every: int = 3               # variant probes: one per this many probe rounds
    context: tuple[str, ...] = ()        # telemetry fields (slot-0 means) that describe conditions
    # context field -> factor (> 1): a rise by this factor over the current regime's centre is new
    # conditions after 2 observations instead of 0.25 s (fast attack, slow release; see tier2/regimes.py)
    context_fast_rise: dict[str, float] = {}
    # how long new conditions must persist before they are a new regime (and 3 observations): long
    # enough to wait out the noise of the context fields; exact ones (a declared grid size) need little
    context_persist_s: float = CONTEXT_PERSIST_S


class Guardrails(msgspec.Struct, **_S):
    """A whole guardrails.yaml: one target (segment name) per file."""
    target: str
    preset: Literal["conservative", "balanced", "aggressive"] = "balanced"
    limits: Limits = Limits()
    knobs: dict[str, KnobRule] = {}
    anti_thrashing: AntiThrashing = AntiThrashing()
    budget: Budget = Budget()
    objective: Objective = Objective()
    slos: tuple[Slo, ...] = ()
    rollout: Rollout = Rollout()
    catalog: Catalog = Catalog()
    lease: Lease = Lease()
    kill_switch: KillSwitch = KillSwitch()
    safe_mode: SafeMode = SafeMode()
    audit: Audit = Audit()
    metrics: Metrics = Metrics()
    cycle: Cycle = Cycle()
    bus: Bus = Bus()
    tuning: Tuning = Tuning()


# Presets of the related work: (max_delta normalised, updates/s).
PRESETS: dict[str, tuple[float, float]] = {
    "conservative": (0.05, 2.0),
    "balanced": (0.10, 10.0),
    "aggressive": (0.20, 20.0),
}


class ResolvedKnob(msgspec.Struct, frozen=True):
    """A knob's effective limits after preset < limits < knob precedence and narrowing."""
    name: str
    lo: float
    hi: float
    max_delta: float
    delta_mode: str
    rate_limit_hz: float
    min_interval_s: float


def resolve_knob(g: Guardrails, name: str, decl_min: float, decl_max: float) -> ResolvedKnob:
    """Effective limits of allowlisted knob `name` given its declared hard bounds."""
    r = g.knobs[name]
    p_delta, p_rate = PRESETS[g.preset]
    max_delta = _first(r.max_delta, g.limits.max_delta, p_delta)
    rate = _first(r.rate_limit_hz, g.limits.rate_limit_hz, p_rate)
    interval = _first(r.min_interval_s, g.limits.min_interval_s, 1.0 / rate)
    mode = _first(r.delta_mode, g.limits.delta_mode)
    lo = decl_min if r.min is None else max(decl_min, r.min)
    hi = decl_max if r.max is None else min(decl_max, r.max)
    return ResolvedKnob(name, lo, hi, max_delta, mode, rate, interval)


def _first(*vals):
    for v in vals:
        if v is not None:
            return v
    return None


# --------------------------------------------------------------------------- errors

class ConfigError(Exception):
    """guardrails.yaml was refused. `.errors`: one message per problem, each naming
    file:line, the key path, the value found and what was expected."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        head = f"{source}: {len(errors)} error(s); configuration not loaded (the previous config stays in force)"
        super().__init__("\n".join([head] + ["  " + e for e in errors]))


def json_schema() -> dict:
    """JSON Schema of guardrails.yaml (msgspec's, from the Guardrails Struct)."""
    return msgspec.json.schema(Guardrails)


# --------------------------------------------------------------------------- loading

class _Src:
    """YAML node tree with line numbers for every key path."""

    def __init__(self, name: str):
        self.name = name
        self.lines: dict[tuple, int] = {}
        self.errors: list[str] = []

    def line(self, path: tuple) -> int:
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def err(self, path: tuple, found: Any, expected: str) -> None:
        self.errors.append(f"{self.name}:{self.line(path)}: {_dotted(path)}: found {_show(found)}; expected {expected}")


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out or "(top level)"


def _show(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    return f"{v!r} ({type(v).__name__})"


def _walk_nodes(src: _Src, node: yaml.Node, path: tuple) -> None:
    src.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = k.value
            if key in seen:
                src.errors.append(f"{src.name}:{k.start_mark.line + 1}: {_dotted(path + (key,))}: found a duplicate key "
                                  f"(first at line {seen[key]}); expected each key once (YAML would silently keep the last)")
            seen[key] = k.start_mark.line + 1
            src.lines[path + (key,)] = k.start_mark.line + 1
            _walk_nodes(src, v, path + (key,))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            src.lines[path + (i,)] = v.start_mark.line + 1
            _walk_nodes(src, v, path + (i,))


def _check_type(src: _Src, t: msgspec.inspect.Type, v: Any, path: tuple) -> bool:
    """Validate `v` against msgspec type info `t`; report every mismatch. True if it fits."""
    I = msgspec.inspect
    if isinstance(t, I.UnionType):
        if v is None and any(isinstance(x, I.NoneType) for x in t.types):
            return True
        rest = [x for x in t.types if not isinstance(x, I.NoneType)]
        if len(rest) == 1:
            return _check_type(src, rest[0], v, path)
        src.err(path, v, " or ".join(_describe(x) for x in t.types))
        return False
    if isinstance(t, I.StructType):
        if not isinstance(v, dict):
            src.err(path, v, f"a mapping with keys {', '.join(f.name for f in t.fields)}")
            return False
        names = {f.name: f for f in t.fields}
        ok = True
        for key in v:
            if key not in names:
                src.err(path + (key,), key, f"one of the keys {', '.join(names)} (unknown key)")
                ok = False
        for f in t.fields:
            if f.name in v:
                ok &= _check_type(src, f.type, v[f.name], path + (f.name,))
            elif f.required:
                src.errors.append(f"{src.name}:{src.line(path)}: {_dotted(path + (f.name,))}: missing; "
                                  f"expected the required key `{f.name}`")
                ok = False
        return ok
    if isinstance(t, I.DictType):
        if not isinstance(v, dict):
            src.err(path, v, "a mapping")
            return False
        ok = True
        for key, val in v.items():
            if not isinstance(key, str):
                src.err(path + (str(key),), key, "a text key")
                ok = False
            ok &= _check_type(src, t.value_type, val, path + (str(key),))
        return ok
    if isinstance(t, (I.VarTupleType, I.ListType)):
        if not isinstance(v, list):
            src.err(path, v, f"a list of {_describe(t.item_type)}")
            return False
        ok = True
        for i, item in enumerate(v):
            ok &= _check_type(src, t.item_type, item, path + (i,))
        return ok
    if isinstance(t, I.LiteralType):
        if v not in t.values:
            src.err(path, v, "one of " + ", ".join(repr(x) for x in t.values))
            return False
        return True
    if isinstance(t, I.FloatType):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            hint = ""
            if isinstance(v, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", v.strip()):
                hint = " (YAML 1.1 reads exponents without a dot as text: write e.g. 1.0e-3)"
            src.err(path, v, "a number" + hint)
            return False
        if not math.isfinite(float(v)):
            src.err(path, v, "a finite number")
            return False
        return True
    if isinstance(t, I.IntType):
        if isinstance(v, bool) or not isinstance(v, int):
            src.err(path, v, "a whole number")
            return False
        return True
    if isinstance(t, I.BoolType):
        if not isinstance(v, bool):
            src.err(path, v, "true or false")
            return False
        return True
    if isinstance(t, I.StrType):
        if not isinstance(v, str):
            src.err(path, v, "text (quote it)")
            return False
        return True
    if isinstance(t, I.NoneType):
        if v is not None:
            src.err(path, v, "null")
            return False
        return True
    return True


def _describe(t: msgspec.inspect.Type) -> str:
    I = msgspec.inspect
    return {I.FloatType: "a number", I.IntType: "a whole number", I.StrType: "text", I.BoolType: "true/false",
            I.NoneType: "null", I.StructType: "a mapping", I.DictType: "a mapping"}.get(type(t), "a list")


_CHECKSUM = re.compile(r"sha256:[0-9a-f]{64}")
_TARGET = re.compile(r"[a-z0-9][a-z0-9_.-]{0,30}")


def _semantic(src: _Src, g: Guardrails) -> None:
    """Checks types cannot express. Each names the key path the user must edit."""
    e = src.err
    if not _TARGET.fullmatch(g.target):
        e(("target",), g.target, "a segment name: lowercase letters, digits, '_', '-', '.', 1-31 characters")
    if not g.knobs:
        e(("knobs",), {}, "at least one allowlisted knob (an empty allowlist lets Tier 1 change nothing)")
    lim = g.limits
    _positive(src, ("limits", "max_delta"), lim.max_delta)
    _positive(src, ("limits", "rate_limit_hz"), lim.rate_limit_hz)
    if lim.min_interval_s is not None and lim.min_interval_s < 0:
        e(("limits", "min_interval_s"), lim.min_interval_s, "a number >= 0")
    for name, k in g.knobs.items():
        p = ("knobs", name)
        if k.min is not None and k.max is not None and not k.min < k.max:
            e(p + ("max",), k.max, f"a number greater than knobs.{name}.min ({k.min})")
        _positive(src, p + ("max_delta",), k.max_delta)
        mode = k.delta_mode or lim.delta_mode
        if k.max_delta is not None and mode == "normalised" and k.max_delta > 1:
            e(p + ("max_delta",), k.max_delta, "a ratio of the declared range in (0, 1] (delta_mode: normalised)")
        _positive(src, p + ("rate_limit_hz",), k.rate_limit_hz)
        if k.min_interval_s is not None and k.min_interval_s < 0:
            e(p + ("min_interval_s",), k.min_interval_s, "a number >= 0")
    if lim.max_delta is not None and lim.delta_mode == "normalised" and lim.max_delta > 1:
        e(("limits", "max_delta"), lim.max_delta, "a ratio of the declared range in (0, 1]")
    at = g.anti_thrashing
    if at.max_flips < 1:
        e(("anti_thrashing", "max_flips"), at.max_flips, "a whole number >= 1")
    _positive(src, ("anti_thrashing", "window_s"), at.window_s)
    if at.cooldown_s < 0:
        e(("anti_thrashing", "cooldown_s"), at.cooldown_s, "a number >= 0")
    if not 0 <= at.hysteresis < 1:
        e(("anti_thrashing", "hysteresis"), at.hysteresis, "a ratio of max_delta in [0, 1)")
    if g.bus.room is not None and not re.fullmatch(r"(prod|staging|sandbox):[A-Za-z0-9_.-]+|omega:lab", g.bus.room):
        e(("bus", "room"), g.bus.room, "prod:<service>, staging:<service>, sandbox:<service> or omega:lab")
    if not g.bus.url.startswith(("ws://", "wss://")):
        e(("bus", "url"), g.bus.url, "a ws:// or wss:// URL")
    if not 0 < g.bus.summary_hz <= 10:
        e(("bus", "summary_hz"), g.bus.summary_hz, "a rate in (0, 10] Hz")
    for i, name in enumerate(g.tuning.knobs):
        if name not in g.knobs:
            e(("tuning", "knobs", i), name, f"an allowlisted knob (one of: {', '.join(sorted(g.knobs)) or 'none'})")
    if g.tuning.rollout_every < 1:
        e(("tuning", "rollout_every"), g.tuning.rollout_every, "a whole number >= 1")
    if g.tuning.explore_every < 1:
        e(("tuning", "explore_every"), g.tuning.explore_every, "a whole number >= 1")
    if not 0.0 <= g.tuning.context_persist_s <= 60.0:
        e(("tuning", "context_persist_s"), g.tuning.context_persist_s, "seconds in [0, 60]")
    for name, k in g.tuning.context_fast_rise.items():
        if name not in g.tuning.context:
            e(("tuning", "context_fast_rise", name), name, f"one of tuning.context ({', '.join(g.tuning.context) or 'empty'})")
        elif not (k > 1.0 and math.isfinite(k)):
            e(("tuning", "context_fast_rise", name), k, "a factor > 1 (2.0: the value doubled)")
    _positive(src, ("budget", "max_change"), g.budget.max_change)
    _positive(src, ("budget", "window_s"), g.budget.window_s)
    if not g.objective.terms:
        e(("objective", "terms"), [], "at least one term {field, stat, weight}")
    for i, t in enumerate(g.objective.terms):
        if t.weight == 0:
            e(("objective", "terms", i, "weight"), t.weight, "a non-zero weight")
    names: set[str] = set()
    for i, s in enumerate(g.slos):
        p = ("slos", i)
        if s.name in names:
            e(p + ("name",), s.name, "a name used by one SLO only")
        names.add(s.name)
        if (s.max is None) == (s.min is None):
            e(p, f"max={s.max}, min={s.min}", "exactly one of `max` (upper limit) or `min` (lower limit)")
        if s.min_samples < 1:
            e(p + ("min_samples",), s.min_samples, "a whole number >= 1")
    r = g.rollout
    rp = ("rollout",)
    steps = r.canary_steps
    if not steps:
        e(rp + ("canary_steps",), [], "a non-empty list of increasing traffic ratios ending at 1.0")
    else:
        for i, w in enumerate(steps):
            if not 0 < w <= 1:
                e(rp + ("canary_steps", i), w, "a traffic ratio in (0, 1]")
            elif i and w <= steps[i - 1]:
                e(rp + ("canary_steps", i), w, f"a ratio greater than the previous step ({steps[i - 1]}): steps must increase")
        if steps[-1] != 1.0:
            e(rp + ("canary_steps", len(steps) - 1), steps[-1], "1.0 as the last step (a rollout ends at full traffic)")
    if not 0 < r.shadow_weight < (steps[0] if steps else 1):
        e(rp + ("shadow_weight",), r.shadow_weight, "a ratio in (0, first canary step)")
    if r.min_samples < 1:
        e(rp + ("min_samples",), r.min_samples, "a whole number >= 1")
    if r.min_blocks < 3:
        e(rp + ("min_blocks",), r.min_blocks, "a whole number >= 3 (a variance needs several blocks)")
    _positive(src, rp + ("block_s",), r.block_s)
    if not 0.5 < r.confidence < 1:
        e(rp + ("confidence",), r.confidence, "a ratio in (0.5, 1), e.g. 0.99")
    if not 0 <= r.effect_margin < 1:
        e(rp + ("effect_margin",), r.effect_margin, "a ratio of the baseline in [0, 1)")
    if not 0 <= r.abort_margin <= r.effect_margin:
        e(rp + ("abort_margin",), r.abort_margin, f"a ratio in [0, effect_margin={r.effect_margin}]")
    need = r.settle_s + r.min_blocks * r.block_s
    if r.step_deadline_s < need:
        e(rp + ("step_deadline_s",), r.step_deadline_s,
          f"at least settle_s + min_blocks x block_s = {need:g} s, or no step could ever pass")
    for k in ("bake_s", "settle_s", "cooldown_after_rollback_s", "quarantine_s", "quarantine_radius", "shadow_s"):
        if getattr(r, k) < 0:
            e(rp + (k,), getattr(r, k), "a number >= 0")
    if not 0 < r.probe_weight <= 1.0 / (MAX_SLOTS - 1):
        e(rp + ("probe_weight",), r.probe_weight, f"a ratio in (0, {1.0 / (MAX_SLOTS - 1):.3f}] so {MAX_SLOTS - 1} arms fit beside the baseline")
    _positive(src, rp + ("probe_window_s",), r.probe_window_s)
    if r.probe_min_samples < 1:
        e(rp + ("probe_min_samples",), r.probe_min_samples, "a whole number >= 1")
    if r.max_consecutive_regressions < 1:
        e(rp + ("max_consecutive_regressions",), r.max_consecutive_regressions, "a whole number >= 1")
    if g.catalog.p99_min_samples < 100:
        e(("catalog", "p99_min_samples"), g.catalog.p99_min_samples,
          "a whole number >= 100 (over fewer records a p99 is the maximum, not a 99th percentile)")
    ids: set[str] = set()
    for i, c in enumerate(g.catalog.variants):
        p = ("catalog", "variants", i)
        if c.id in ids:
            e(p + ("id",), c.id, "an id used by one catalog entry only")
        ids.add(c.id)
        if c.variant is None and not c.knobs:
            e(p, c.id, "an entry with a variant, a knobs bundle, or both")
        if c.checksum and not _CHECKSUM.fullmatch(c.checksum):
            e(p + ("checksum",), c.checksum, "'sha256:' followed by 64 lowercase hex digits")
    all_ids = {c.id for c in g.catalog.variants}
    for i, c in enumerate(g.catalog.variants):
        if c.rollback_target != "baseline" and c.rollback_target not in all_ids:
            e(("catalog", "variants", i, "rollback_target"), c.rollback_target,
              f"'baseline' or a catalog id ({', '.join(sorted(all_ids))})")
    _positive(src, ("lease", "duration_s"), g.lease.duration_s)
    if g.cycle.period_s < 0.001:
        e(("cycle", "period_s"), g.cycle.period_s, "at least 0.001 s (1 ms)")
    elif g.lease.duration_s < 2 * g.cycle.period_s:
        e(("lease", "duration_s"), g.lease.duration_s,
          f"at least 2 x cycle.period_s = {2 * g.cycle.period_s:g} s, or the lease lapses between cycles")
    if g.safe_mode.exit_after_s < 0:
        e(("safe_mode", "exit_after_s"), g.safe_mode.exit_after_s, "a number >= 0 (0 = manual reset only)")
    if g.audit.queue_size < 1:
        e(("audit", "queue_size"), g.audit.queue_size, "a whole number >= 1")
    if not 0 < g.audit.high_water_ratio <= 1:
        e(("audit", "high_water_ratio"), g.audit.high_water_ratio, "a ratio in (0, 1]")
    if not 0 <= g.audit.batch_s <= 1:
        e(("audit", "batch_s"), g.audit.batch_s, "seconds in [0, 1] (0: every cycle's events at the end of that cycle)")
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d+)", g.metrics.address)
    if not m or not 0 <= int(m.group(2)) <= 65535:
        e(("metrics", "address"), g.metrics.address,
          "host:port with a port in 0..65535 (0: any free port, shown by `arqond status`), e.g. 127.0.0.1:9464")
    if not re.match(r"wss?://", g.bus.url):
        e(("bus", "url"), g.bus.url, "a ws:// or wss:// URL")


def _positive(src: _Src, path: tuple, v: Optional[float]) -> None:
    if v is not None and not v > 0:
        src.err(path, v, "a number > 0")


def load_guardrails(path_or_text: Union[str, Path]) -> Guardrails:
    """Load and validate guardrails.yaml. `path_or_text` is a Path, a path string, or the YAML
    text itself (anything containing a newline). Raises ConfigError listing every problem."""
    if isinstance(path_or_text, Path) or "\n" not in str(path_or_text):
        p = Path(path_or_text)
        name = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as ex:
            raise ConfigError(name, [f"{name}:0: (file): could not be read ({ex.strerror}); expected a readable YAML file"]) from None
    else:
        name, text = "<text>", str(path_or_text)
    src = _Src(name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as ex:
        # The construct that was left open (context) is where the fix goes; the problem mark
        # is where the parser noticed, often a line later.
        pm, cm = getattr(ex, "problem_mark", None), getattr(ex, "context_mark", None)
        line = (cm or pm).line + 1 if (cm or pm) else 0
        where = f" ({ex.context} at line {cm.line + 1}, noticed at line {pm.line + 1})" if cm and pm else ""
        raise ConfigError(name, [f"{name}:{line}: (syntax): {getattr(ex, 'problem', ex)}{where}; expected valid YAML"]) from None
    if node is not None:
        _walk_nodes(src, node, ())
    if not isinstance(data, dict):
        src.err((), data, "a mapping with at least `target:`")
        raise ConfigError(name, src.errors)
    _check_type(src, msgspec.inspect.type_info(Guardrails), data, ())
    if src.errors:
        raise ConfigError(name, src.errors)
    try:
        g = msgspec.convert(data, Guardrails)
    except msgspec.ValidationError as ex:  # backstop: the walker should have caught it
        msg = str(ex)
        m = re.search(r"at `\$(.*)`", msg)
        path = tuple(a or int(b) for a, b in re.findall(r"\.(\w+)|\[(\d+)\]", m.group(1))) if m else ()
        src.err(path, "(see message)", msg)
        raise ConfigError(name, src.errors) from None
    _semantic(src, g)
    if src.errors:
        raise ConfigError(name, src.errors)
    return g


def validate_file(path_or_text: Union[str, Path], decl: Optional[Declaration] = None) -> list[str]:
    """Every problem of a guardrails file, and against `decl` when given (for `arqond config
    check` and systemd's ExecStartPre). Empty list: the file is good."""
    try:
        g = load_guardrails(path_or_text)
    except ConfigError as ex:
        return list(ex.errors)
    return check_against(g, decl) if decl is not None else []


# --------------------------------------------------------------------------- vs the data plane

def check_against(g: Guardrails, decl: Declaration) -> list[str]:
    """Problems between the guardrails and what the data plane declared (empty = consistent).
    Each message names the guardrails key path and the declared fact it contradicts."""
    out: list[str] = []
    declared = {k.name: k for k in decl.knobs}
    fields = {f.name for f in decl.fields}
    for name, r in g.knobs.items():
        k = declared.get(name)
        if k is None:
            out.append(f"knobs.{name}: the data plane declares no knob {name!r}; declared knobs: {', '.join(declared) or '(none)'}")
            continue
        if r.min is not None and r.min < k.min:
            out.append(f"knobs.{name}.min: {r.min} is below the declared hard minimum {k.min}; guardrails may only narrow bounds")
        if r.max is not None and r.max > k.max:
            out.append(f"knobs.{name}.max: {r.max} is above the declared hard maximum {k.max}; guardrails may only narrow bounds")
        rk = resolve_knob(g, name, k.min, k.max)
        if rk.lo >= rk.hi:
            out.append(f"knobs.{name}: effective bounds [{rk.lo}, {rk.hi}] are empty after narrowing the declared [{k.min}, {k.max}]")
        elif not rk.lo <= k.initial <= rk.hi:
            out.append(f"knobs.{name}: the declared initial value {k.initial} lies outside the guardrail bounds "
                       f"[{rk.lo}, {rk.hi}]; the baseline must be inside them (widen min/max or change the data plane's initial)")
        if rk.delta_mode == "absolute" and rk.max_delta > k.max - k.min:
            out.append(f"knobs.{name}.max_delta: {rk.max_delta} (absolute) exceeds the declared range {k.max - k.min}")
        if k.integer and rk.delta_mode == "absolute" and rk.max_delta < 1:
            out.append(f"knobs.{name}.max_delta: {rk.max_delta} is below 1 but the knob is declared integer: it could never move")
    for i, t in enumerate(g.objective.terms):
        if t.field not in fields:
            out.append(f"objective.terms[{i}].field: {t.field!r} is not a declared telemetry field; declared: {', '.join(sorted(fields)) or '(none)'}")
    for i, s in enumerate(g.slos):
        if s.field not in fields:
            out.append(f"slos[{i}].field: {s.field!r} ({s.name}) is not a declared telemetry field; declared: {', '.join(sorted(fields)) or '(none)'}")
    cf = g.catalog.fields
    for i, c in enumerate(g.catalog.variants):
        if c.variant is not None and c.variant not in decl.variants:
            out.append(f"catalog.variants[{i}].variant: {c.variant!r} ({c.id}) is not a declared variant; declared: {', '.join(decl.variants) or '(none)'}")
        for key, fld in (("max_p99", cf.latency), ("min_quality", cf.quality), ("max_cost", cf.cost)):
            if getattr(c, key) is not None and fld not in fields:
                out.append(f"catalog.variants[{i}].{key}: refers to field {fld!r} (catalog.fields) which the data plane does not declare")
        for name, v in c.knobs.items():
            if name not in g.knobs:
                out.append(f"catalog.variants[{i}].knobs.{name}: ({c.id}) knob {name!r} is not allowlisted in guardrails knobs")
                continue
            k = declared.get(name)
            if k is None:
                continue   # reported above under knobs.<name>
            rk = resolve_knob(g, name, k.min, k.max)
            if not rk.lo <= v <= rk.hi:
                out.append(f"catalog.variants[{i}].knobs.{name}: ({c.id}) {v} lies outside the guardrail bounds [{rk.lo}, {rk.hi}]")
            elif k.integer and v != round(v):
                out.append(f"catalog.variants[{i}].knobs.{name}: ({c.id}) {v} is not a whole number but the knob is declared integer")
        for name in c.context:
            if name not in g.tuning.context:
                out.append(f"catalog.variants[{i}].context.{name}: ({c.id}) {name!r} is not one of tuning.context ({', '.join(g.tuning.context) or 'empty'})")
    for i, name in enumerate(g.tuning.context):
        if name not in fields:
            out.append(f"tuning.context[{i}]: {name!r} is not a declared telemetry field; declared: {', '.join(sorted(fields)) or '(none)'}")
    return out
