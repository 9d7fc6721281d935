"""The Tier 1 executor: the only writer of live parameters.

A pure, deterministic core. Inputs (time in CLOCK_MONOTONIC ns, telemetry summaries,
proposals, commands) come in as arguments; snapshots to publish and audit events go out.
Same (guardrails, declaration, history, inputs) -> the same events, byte for byte.

Persistent facts (known-good baseline, last generation, kill switch, safe mode, quarantine,
cooldown, knob change history) live in `ExecState`, which changes ONLY by folding the events
the executor emits: `rebuild(events)` after a restart gives back exactly the same state.
The progress of a running experiment is volatile on purpose: after a restart the executor
publishes the baseline alone and the experiment is gone.

Snapshot layout
  baseline only   slot 0 = known-good baseline, weight 1
  split           slot 0 = baseline (weight 1 - sum of candidates), slots 1.. = candidates
  all-candidate   slot 0 = baseline at weight 0 (still the fallback), slot 1 = candidate at 1
                  (baking, and switchback / global-probe segments; global_knobs = candidate)
Slot 0 always holds the known-good baseline's values, including for global knobs, so the data
plane's own fallback (lease lapse) lands on known-good values.
"""
from __future__ import annotations

import math
import zlib
from bisect import bisect_right
from typing import Optional, Sequence

import msgspec

from shm_layout.decl import Declaration, SlotSpec, SnapshotSpec
from shm_layout.spec import MAX_SLOTS

from . import admit as fastpath
from . import events as ev
from .config import (ELIGIBLE_STATES, Guardrails, ResolvedKnob, check_against, nearest_entry, resolve_knob,
                     risen_beyond)
from .judge import BlockSeries, PairedBlockTest, sla_first, worst_of
from .model import Arm, Command, CycleInput, Evaluation, FieldStats, Proposal, SlotTelemetry, StepOutput, Verdict
from .rollout import EXPERIMENT, State, next_state

NS = 1_000_000_000
S = State


# --------------------------------------------------------------------------- state (a fold)

class Touch(msgspec.Struct, frozen=True, array_like=True):
    t_ns: int
    cost: float
    direction: int
    move: float


class QEntry(msgspec.Struct, frozen=True):
    center: tuple[float, ...]
    variant: int
    variant_only: bool
    radius: float
    until_ns: int


_U = 2.0 ** -52   # two units in the last place of 1.0: a generous unit roundoff for the bounds below


class _KnobLog:
    """Derived, columnar view of one knob's `history` list, kept in step with it by
    `ExecState.apply` so the per-proposal rules need not scan Touch objects.

    - `times`/`costs`: plain lists in history order, so `sum(costs[j:])` adds the same floats in
      the same order as the old scan (bit-identical).
    - `ordered`: the times are non-decreasing; bisection is exact only then (otherwise the rules
      fall back to the scan).
    - `cum`: running float sums (cum[k] = run total after entry k; `cum0` = before entry 0),
      so a window's spend is approximately cum[-1] - cum[j-1] in O(1). `spend_bound` bounds its
      distance from the exact scan sum; the budget rule decides from the approximation only when
      the decision cannot change within that bound, and sums exactly otherwise.
    Never saved, never compared: rebuilt from the history whenever it looks stale."""
    __slots__ = ("hist", "times", "costs", "ordered", "last", "cum", "cum0", "n_run", "clean")

    def __init__(self, hist: list) -> None:
        self.hist = hist
        self.times = [h.t_ns for h in hist]
        self.costs = [h.cost for h in hist]
        self.ordered = all(a <= b for a, b in zip(self.times, self.times[1:]))
        self.last = hist[-1] if hist else None
        self._rebase()

    def _rebase(self) -> None:
        run, cum = 0.0, []
        for c in self.costs:
            run += c
            cum.append(run)
        self.cum, self.cum0, self.n_run = cum, 0.0, len(cum)
        # The error bounds below hold for finite nonnegative terms (what the executor records).
        self.clean = all(0.0 <= c < math.inf for c in self.costs)

    def fresh(self, hist: list) -> bool:
        return self.hist is hist and len(self.times) == len(hist) and (self.last is (hist[-1] if hist else None))

    def append(self, t: Touch) -> None:
        if self.times and t.t_ns < self.times[-1]:
            self.ordered = False
        self.times.append(t.t_ns)
        self.costs.append(t.cost)
        self.cum.append((self.cum[-1] if self.cum else self.cum0) + t.cost)
        self.n_run += 1
        if not 0.0 <= t.cost < math.inf:
            self.clean = False
        self.last = t

    def trim(self, k: int) -> None:
        self.cum0 = self.cum[k - 1]
        del self.times[:k]
        del self.costs[:k]
        del self.cum[:k]
        if not self.times:
            self.last = None
        if self.n_run > 2 * len(self.costs) + 256 or not self.clean:   # small running-sum error, amortised O(1)
            self._rebase()

    def spend_since(self, j: int) -> float:
        """Exactly what the scan computed: the costs from index j on, summed in order."""
        return sum(self.costs[j:]) if j else sum(self.costs)

    def spend_approx(self, j: int) -> tuple[float, float]:
        """(approximate spend from index j on, a bound on its distance from `spend_since(j)`);
        (nan, nan) when no bound holds (a negative or non-finite cost in the history)."""
        if not self.clean:
            return math.nan, math.nan
        if j >= len(self.cum):
            return 0.0, 0.0
        hi = self.cum[-1]
        approx = hi - (self.cum[j - 1] if j else self.cum0)
        # Each running sum is off by at most n_run * u * hi (finite nonnegative terms);
        # the in-order scan of m terms by at most m * u * hi: twice the sum of both, plus slack.
        return approx, 4.0 * (self.n_run + len(self.costs) + 4) * _U * hi


class _AllLog(_KnobLog):
    """Every knob at once: one entry per accepted proposal that touched knobs, at its time, with
    the largest cost among its touches. Any knob's history is a subsequence of these entries
    (same times, a cost no larger), so the count in a window and the spend in a window bound
    every knob's from above: when the bounds clear the limits, no knob's exact rule can refuse,
    and `Executor._limits_clear` skips the per-knob scans. The bounds hold while the windows
    asked about start after `cut` (entries up to it were dropped with the horizon of their
    time) and no knob history has a time after `last_t` (the latest time ever folded in).
    Derived like `_KnobLog`: never saved, never compared."""
    __slots__ = ("of", "last_t", "cut")

    def __init__(self, history: dict) -> None:
        # From the histories themselves (a state that was not built by `apply` from the start):
        # each entry on its own, which bounds as well, only more loosely.
        rows, ordered, last = [], True, None
        for h in history.values():
            for a, b in zip(h, h[1:]):
                if b.t_ns < a.t_ns:
                    ordered = False
            rows.extend(h)
        rows.sort(key=lambda t: t.t_ns)   # stable: each knob's entries keep their order
        super().__init__(rows)
        self.hist = []                    # the entries live in times/costs/cum only
        self.ordered = self.ordered and ordered
        for t in rows:
            if last is None or t.t_ns > last:
                last = t.t_ns
        self.of, self.last_t, self.cut = history, last, -math.inf


# Events that change no persistent fact but the sequence and config generation (most of a step's).
_NO_STATE = frozenset((ev.Transition, ev.Digest, ev.JudgeVerdict, ev.SloCheck, ev.Ack, ev.CommandEvent,
                       ev.ConfigReload))


class ExecState(msgspec.Struct, dict=True):
    """Everything that must survive a restart, rebuilt by folding events in order.

    Besides the fields, the instance dict holds derived lookup structures (a set of
    `recent_ids`, a `_KnobLog` per knob history) that `apply` keeps in step; they are not
    fields, so they are never encoded nor compared, and each is rebuilt if it looks stale."""
    last_seq: int = 0
    config_generation: int = 0
    generation: int = 0
    live: Optional[SnapshotSpec] = None
    baseline: tuple[float, ...] = ()
    baseline_variant: int = 0
    kill_switch: bool = False
    kill_switch_set: bool = False         # a KillSwitch event exists: it, not the config, decides
    safe_mode: bool = False
    safe_mode_since_ns: int = 0
    safe_mode_exit_at_ns: int = 0
    safe_mode_reason: str = ""
    cooldown_until_ns: int = 0
    consecutive_regressions: int = 0
    quarantine: list[QEntry] = []
    history: dict[str, list[Touch]] = {}
    thrash_until: dict[str, int] = {}
    recent_ids: list[str] = []
    moves: dict[str, list[Touch]] = {}    # promoted baseline changes per knob (direction, within the horizon)

    # ---- derived lookups (not fields)
    @property
    def facts(self) -> int:
        """How many events that may change a fact the admission plan reads were folded in
        (Transition, Digest, Ack..., a proposal's id and a plain refusal do not count)."""
        return self.__dict__.get("_facts", 0)

    def _id_set(self) -> set:
        ids = self.__dict__.get("_ids")
        if ids is None or self.__dict__.get("_ids_of") is not self.recent_ids or len(ids) != len(self.recent_ids):
            ids = set(self.recent_ids)
            self.__dict__["_ids"], self.__dict__["_ids_of"] = ids, self.recent_ids
        return ids

    def seen_id(self, proposal_id: str) -> bool:
        """`proposal_id in recent_ids`, by a set."""
        return proposal_id in self._id_set()

    def apply(self, e) -> None:
        """Fold one event into the state (in place)."""
        self.last_seq = e.seq
        self.config_generation = e.config_generation
        t = type(e)
        if t in _NO_STATE:
            return
        if t is not ev.ProposalEvent and not (t is ev.ValidationVerdict and not e.accepted and not e.thrash_cooldown):
            # a fact the admission plan reads may have changed (an id or a plain refusal does not:
            # a stream of refusals must not make the plan again every cycle)
            d = self.__dict__
            d["_facts"] = d.get("_facts", 0) + 1
        if t is ev.Apply:
            self.generation = e.new_config_version
            self.live = e.snapshot
        elif t is ev.ProposalEvent:
            ids = self._id_set()
            if e.proposal_id not in ids:
                self.recent_ids.append(e.proposal_id)
                ids.add(e.proposal_id)
                if len(self.recent_ids) > 4096:
                    ids.difference_update(self.recent_ids[:1024])
                    del self.recent_ids[:1024]
        elif t is ev.ValidationVerdict:
            if e.accepted and e.touches:
                history = self.history
                d = self.__dict__
                logs = d.get("_logs")
                if logs is None:
                    logs = d["_logs"] = {}
                agg = d.get("_all")
                if agg is None or agg.of is not history:
                    agg = d["_all"] = _AllLog(history)   # before this verdict's touches
                t_ns = e.t_ns
                cut = t_ns - e.horizon_ns
                top = 0.0
                for tc in e.touches:
                    name = tc.knob
                    h = history.get(name)
                    if h is None:
                        h = history[name] = []
                    lg = logs.get(name)
                    if lg is None or not (lg.hist is h and lg.last is (h[-1] if h else None)
                                          and len(lg.times) == len(h)):   # = not lg.fresh(h)
                        lg = logs[name] = _KnobLog(h)
                    touch = Touch(t_ns, tc.cost, tc.direction, tc.move)
                    h.append(touch)
                    # lg.append(touch), inlined (this runs for every knob of every accepted proposal)
                    times, cum, cost = lg.times, lg.cum, tc.cost
                    if times and t_ns < times[-1]:
                        lg.ordered = False
                    times.append(t_ns)
                    lg.costs.append(cost)
                    cum.append((cum[-1] if cum else lg.cum0) + cost)
                    lg.n_run += 1
                    if not 0.0 <= cost < math.inf:
                        lg.clean = False
                    lg.last = touch
                    if h[0].t_ns <= cut:   # drop what left the horizon
                        k, n = 1, len(h)
                        while k < n and h[k].t_ns <= cut:
                            k += 1
                        del h[:k]
                        lg.trim(k)
                    if top == top and not cost <= top:   # the largest cost; a NaN stays (unclean: no bound)
                        top = cost
                agg.append(Touch(t_ns, top, 0, 0.0))
                if agg.last_t is None or t_ns > agg.last_t:
                    agg.last_t = t_ns
                times = agg.times
                if times[0] <= cut:
                    k, n = 1, len(times)
                    while k < n and times[k] <= cut:
                        k += 1
                    agg.trim(k)
                if cut > agg.cut:
                    agg.cut = cut
            for k, until in e.thrash_cooldown.items():
                self.thrash_until[k] = until
        elif t is ev.Promotion:
            for k, d in e.moves.items():
                h = self.moves.setdefault(k, [])
                h.append(Touch(e.t_ns, 0.0, d, 0.0))
                if e.horizon_ns:
                    cut = e.t_ns - e.horizon_ns
                    while h and h[0].t_ns <= cut:
                        del h[0]
            self.baseline = e.new_baseline
            self.baseline_variant = e.new_variant
            self.consecutive_regressions = 0
        elif t is ev.Rollback:
            self.cooldown_until_ns = max(self.cooldown_until_ns, e.cooldown_until_ns)
            if e.counts_as_regression:
                self.consecutive_regressions += 1
        elif t is ev.EvaluationEvent:
            if e.status == "ok":
                self.consecutive_regressions = 0
        elif t is ev.Quarantine:
            self.quarantine = [q for q in self.quarantine if q.until_ns > e.t_ns]
            self.quarantine.append(QEntry(e.center, e.variant, e.variant_only, e.radius, e.until_ns))
        elif t is ev.SafeModeEntered:
            if not self.safe_mode:
                self.safe_mode_since_ns = e.t_ns
            self.safe_mode = True
            self.safe_mode_exit_at_ns = e.exit_at_ns
            self.safe_mode_reason = e.reason
        elif t is ev.SafeModeExited:
            self.safe_mode = False
            self.safe_mode_reason = ""
            self.safe_mode_exit_at_ns = 0
            self.consecutive_regressions = 0
        elif t is ev.KillSwitch:
            self.kill_switch = e.engaged
            self.kill_switch_set = True


def rebuild(events: Sequence, decl: Optional[Declaration] = None) -> ExecState:
    """The persistent state after `events` (in emission order). With `decl`, a history without
    a promotion gets the declared initial values as its baseline, as a new executor would."""
    st = ExecState()
    for e in events:
        st.apply(e)
    if not st.baseline and decl is not None:
        st.baseline = decl.initial_values()
    return st


# --------------------------------------------------------------------------- helpers

def direction_flips(moves: Sequence[Touch], after_ns: int) -> int:
    """How often the direction of the promoted moves newer than `after_ns` changed."""
    win = [h.direction for h in moves if h.direction != 0 and h.t_ns > after_ns]
    return sum(1 for a, b in zip(win, win[1:]) if a != b)


class FastPathMismatch(RuntimeError):
    """The admission fast path published a value outside its bounds, moved a knob it may not,
    or laid the snapshot out otherwise than the Python path: a bug in admit.py / arqd_admit.c.
    The caller must publish the baseline (the daemon's cycle handler snaps back)."""


def _same_snapshot(snap: SnapshotSpec, staged, nk: int) -> bool:
    """`snap` has the generation, salt and slots (weight, variant, knob values) of `staged`."""
    if snap.generation != staged.generation or snap.salt != staged.salt or len(snap.slots) != staged.n_slots:
        return False
    if list(snap.global_knobs) != list(staged.global_knobs[0:nk]):
        return False
    for i, sl in enumerate(snap.slots):
        if sl.weight != staged.weights[i] or sl.variant != staged.variants[i] or list(sl.knobs) != list(staged.knobs[i][0:nk]):
            return False
    return True


class _Reject(Exception):
    def __init__(self, rule: str, value, limit, message: str):
        self.rule, self.value, self.limit, self.message = rule, value, limit, message


class _Check(msgspec.Struct, frozen=True):
    """One absolute guardrail as evaluated: an SLO or a catalog hard constraint."""
    name: str
    field: str
    stat: str
    upper: bool          # True: value <= limit; False: value >= limit
    limit: float
    min_samples: int
    enforce: bool


class _Win:
    """An SLO window: consecutive cycles merged until min_samples records."""
    __slots__ = ("sw", "n", "mn", "mx", "win_ns", "cnt")

    def __init__(self) -> None:
        self.sw = 0.0
        self.n = 0
        self.mn = math.inf
        self.mx = -math.inf
        self.win_ns = 0
        self.cnt = 0

    def add(self, fs: FieldStats, window_ns: int, stat_value: float) -> None:
        n = fs.count
        self.sw += stat_value * n
        self.n += n
        self.cnt += n
        self.win_ns += window_ns
        if fs.min < self.mn:   # = min(self.mn, fs.min), NaN included
            self.mn = fs.min
        if fs.max > self.mx:   # = max(self.mx, fs.max)
            self.mx = fs.max

    def value(self, stat: str) -> float:
        if stat == "min":
            return self.mn
        if stat == "max":
            return self.mx
        if stat == "count":
            return float(self.cnt)
        if stat == "rate":
            return self.cnt / (self.win_ns / NS) if self.win_ns > 0 else 0.0
        return self.sw / self.n if self.n else 0.0


_TIMED = ("count", "rate")   # stats that are not a FieldStats attribute


def _stat(fs: FieldStats, stat: str, window_ns: int) -> float:
    if stat == "count":
        return float(fs.count)
    if stat == "rate":
        return fs.count / (window_ns / NS) if window_ns > 0 else 0.0
    return float(getattr(fs, stat))


class _Exp:
    """A running experiment (volatile: not rebuilt after a restart)."""

    def __init__(self, p: Proposal, arms: list[tuple[float, ...]], variants: list[int], is_global: bool, salt: int):
        self.p = p
        self.arms = arms
        self.variants = variants
        self.is_global = is_global
        self.salt = salt
        self.step = 0
        self.weight = 0.0
        self.phase_start = 0
        self.gen = 0
        self.seg = 0                     # switchback / global-probe segment index
        self.seg_order: list[int] = []   # global probe: arm index per segment
        self.rules: list[str] = []       # the judge rule that passed each judged step
        self.evidence: Optional[ev.JudgeVerdict] = None   # the last promote verdict (any phase)
        self.evidence_pairs: Optional[tuple[list[float], list[float]]] = None   # its objective pairs
        # probe arms stopped by an SLO breach (the others run on): arm -> (objective, baseline
        # objective, records) when stopped; reported with the other arms when the probe ends
        self.failed: dict[int, tuple[Optional[float], Optional[float], int]] = {}
        self.window_ack_ns: Optional[int] = None   # probe: the ack that started the window
        self.base_margin: dict = {}     # SLO name, or (field, stat, upper, limit) -> baseline margin
        self.relief: Optional[tuple[str, float]] = None   # rollout.relief: the baseline breach seen mid-canary
        # The phase accumulators (`reset_phase`) are made by Executor._enter_phase, which every
        # experiment runs right after construction.

    def reset_phase(self) -> None:
        self.wins: dict[tuple[str, str], _Win] = {}
        self.slo_windows_done: dict[str, int] = {}
        self.cur_block = 0
        self.cand_samples = 0
        self.last_verdict: Optional[ev.JudgeVerdict] = None
        if self.p.kind == "probe":   # per-arm objective series and paired blocks
            self.arm_series: list[BlockSeries] = [BlockSeries() for _ in self.arms]
            self.base_series = BlockSeries()
            self.blk_base = BlockSeries()                                 # the open block, slot 0
            self.blk_arms: list[BlockSeries] = [BlockSeries() for _ in self.arms]
            self.blk_diffs: list[list[float]] = [[] for _ in self.arms]   # closed blocks, arm - slot 0
            return
        # rollout: the judge's block accumulators and pairs
        self.cand: dict[str, BlockSeries] = {}
        self.base: dict[str, BlockSeries] = {}
        self.pairs: dict[str, tuple[list[float], list[float]]] = {}
        self.fpairs: dict[str, tuple[list[float], list[float]]] = {}   # enforcing SLOs, paired blocks
        self.n_blocks_missing = 0
        self.looks = 0
        self.pending: Optional[dict[str, Optional[float]]] = None   # first half of a switchback pair
        self.pending_n = 0


# --------------------------------------------------------------------------- the executor

class Executor:
    """Tier 1. Call `start` once, then `propose`, `step` (once per cycle) and `command`.

    Invariants (tested): slot 0 is always the known-good baseline; every published value is
    allowlisted and inside the narrowed bounds and within max_delta of the baseline; the
    generation strictly increases; at most one experiment is live; an SLO breach, a kill switch,
    a rollback or snapback command publish baseline-only in the same call.
    """

    def __init__(self, guardrails: Guardrails, decl: Declaration, *, run_id: str = "arqond",
                 config_generation: int = 1, history: Sequence = (), fast_path: bool = True):
        self.decl = decl
        self.run_id = run_id
        self.state = rebuild(history, decl)
        self.mstate = S.IDLE
        self.exp: Optional[_Exp] = None
        self.cycle = 0
        self.started = False
        self._events: list = []
        self._evals: list[Evaluation] = []
        self._snap: Optional[SnapshotSpec] = None
        self._acked_gen = 0
        self._acked_ns: Optional[int] = None
        self._pub_ns = 0
        self._keep: Optional[StepOutput] = None
        self._pid_was_present = False
        self._pending: Optional[tuple] = None   # what complete() needs of the last propose
        self._plan: Optional[fastpath.Plan] = None   # the admission fast path's (see admit.py)
        self.fast_path = fast_path             # False: the Python rules alone (tests, benchmarks)
        self.fast_accepts = 0                  # proposals the fast path accepted
        self.fast_declines: dict[str, int] = {}   # ... and why it left the others to Python
        self.plans = 0                         # admission plans made
        self.mismatches = 0                    # FastPathMismatch raised (must stay 0)
        self._configure(guardrails, config_generation)

    # ----------------------------------------------------------------- configuration
    def _configure(self, g: Guardrails, config_generation: int) -> None:
        problems = check_against(g, self.decl)
        if problems:
            raise ValueError("guardrails do not match the data plane's declaration; executor not started:\n  "
                             + "\n  ".join(problems))
        self.g = g
        self.config_generation = config_generation
        self._plan, self._admit_tpl = None, None   # the admission fast path's, made from this config
        self._no_plan_key: Optional[tuple] = None   # plan_key under which compile_plan made none
        d = self.decl
        self.rk: list[Optional[ResolvedKnob]] = [
            resolve_knob(g, k.name, k.min, k.max) if k.name in g.knobs else None for k in d.knobs]
        self.ranges = [(k.max - k.min) or 1.0 for k in d.knobs]
        # Per allowlisted knob, what validation reads for every value (one dict lookup, one unpack).
        self._knob_rules = {rk.name: (i, rk, d.knobs[i].integer, self.ranges[i], rk.lo, rk.hi,
                                      rk.delta_mode == "absolute", rk.max_delta)
                            for i, rk in enumerate(self.rk) if rk is not None}
        self._global_idx = tuple(i for i, k in enumerate(d.knobs) if k.is_global)
        self.kidx = {k.name: i for i, k in enumerate(d.knobs)}
        self.vidx = {v: i for i, v in enumerate(d.variants)}
        self.catalog = {c.variant: c for c in g.catalog.variants if c.variant is not None}
        self.presets = {c.id: c for c in g.catalog.variants}   # any entry may be named by Arm.preset
        r = g.rollout
        self.block_ns = int(r.block_s * NS)
        self.settle_ns = int(r.settle_s * NS)
        self.deadline_ns = int(r.step_deadline_s * NS)
        self.horizon_ns = int(max(g.budget.window_s, g.anti_thrashing.window_s, 1.0) * NS)
        self.checks = [_Check(s.name, s.field, s.stat, s.max is not None, s.max if s.max is not None else s.min,
                              s.min_samples, s.enforce) for s in g.slos]
        self.metrics = [("objective", g.objective.direction == "minimize", True)] + [
            (s.name, s.max is not None, s.enforce) for s in g.slos if s.compare]
        # Enforcing SLOs, for the lexicographic feasibility rule (judge.py: SLA first). Counts and
        # rates scale with a slot's traffic share, so they cannot be compared across the two sides.
        self._feas_slos = tuple((s.name, s.max is not None, s.max if s.max is not None else s.min)
                                for s in g.slos if s.enforce and s.stat not in _TIMED)
        self.test = PairedBlockTest(effect_margin=r.effect_margin, abort_margin=r.abort_margin, min_blocks=r.min_blocks)
        self.judged_steps = max(1, sum(1 for w in r.canary_steps if w < 1.0))
        self._checks_by_var: dict[int, tuple[_Check, ...]] = {}   # SLOs + the variant's catalog constraints
        # rollout.relief: slot-0 SLO windows while idle, and the last breach per enforcing SLO
        # as (t_ns, relative margin < 0), None once a window met it
        self._base_wins: dict[str, _Win] = {}
        self._base_breach: dict[str, Optional[tuple]] = {}
        # ... and on conditions: the approved presets that name a context, and the latest slot-0
        # means of the tuning.context fields as (t_ns, {field: mean}), measured here, not taken
        # from Tier 2's word
        self._ctx_fields = tuple(g.tuning.context) if r.relief else ()
        self._ctx_presets = tuple(c for c in g.catalog.variants if c.state in ELIGIBLE_STATES and c.context)
        self._fast_rise = dict(g.tuning.context_fast_rise)
        self._conditions: Optional[tuple[int, dict[str, float]]] = None
        self._cause: Optional[tuple] = None   # the last validated rollout's relief cause (see _validate)
        # What the knob rules read per allowlisted knob, in declaration order (the touches' order).
        self._limit_rows = tuple((i, rk.name, self.ranges[i], rk.min_interval_s, rk.rate_limit_hz)
                                 for i, rk in enumerate(self.rk) if rk is not None)
        self._budget_ns = int(g.budget.window_s * NS)
        self._budget_limit = g.budget.max_change + 1e-12
        # The strictest interval and rate of any allowlisted knob: what `_limits_clear` holds
        # every knob's bound to at once.
        rows = self._limit_rows
        self._max_min_iv = max((r[3] for r in rows), default=0.0)
        self._min_rate = min((r[4] for r in rows), default=math.inf)

    def _catalog_checks(self, variant: int) -> list[_Check]:
        if not self.decl.variants or variant >= len(self.decl.variants):
            return []
        c = self.catalog.get(self.decl.variants[variant])
        if c is None:
            return []
        f, out = self.g.catalog.fields, []
        n = self.g.rollout.probe_min_samples
        if c.max_p99 is not None:   # a p99 needs its own floor (config.Catalog.p99_min_samples)
            n99 = max(n, self.g.catalog.p99_min_samples)
            out.append(_Check(f"catalog:{c.id}:max_p99", f.latency, "p99", True, c.max_p99, n99, True))
        if c.min_quality is not None:
            out.append(_Check(f"catalog:{c.id}:min_quality", f.quality, "mean", False, c.min_quality, n, True))
        if c.max_cost is not None:
            out.append(_Check(f"catalog:{c.id}:max_cost", f.cost, "mean", True, c.max_cost, n, True))
        return out

    # ----------------------------------------------------------------- event plumbing
    def _emit(self, cls, now: int, **kw):
        if "proposal_id" not in kw and self.exp is not None:
            kw["proposal_id"] = self.exp.p.proposal_id
        e = cls(run_id=self.run_id, seq=self.state.last_seq + 1, cycle=self.cycle, t_ns=now,
                config_generation=self.config_generation, **kw)
        return self._push(e)

    def _push(self, e):
        """Fold `e` into the state and queue it (the hot emitters build their events literally:
        keyword construction from a dict costs more than the event itself)."""
        self.state.apply(e)
        self._events.append(e)
        return e

    def _pid(self) -> str:
        return self.exp.p.proposal_id if self.exp is not None else ""

    def _fire(self, now: int, trigger: str, measured=None, condition: str = "", threshold=None) -> None:
        new = next_state(self.mstate, trigger)
        self._push(ev.Transition(run_id=self.run_id, seq=self.state.last_seq + 1, cycle=self.cycle, t_ns=now,
                                 config_generation=self.config_generation, proposal_id=self._pid(),
                                 from_state=self.mstate.value, to_state=new.value, trigger=trigger,
                                 measured=measured, condition=condition, threshold=threshold))
        self.mstate = new

    def _take(self) -> StepOutput:
        out = StepOutput(self._snap, self._events, self._evals)
        self._events, self._evals, self._snap = [], [], None
        return out

    def _publish(self, now: int, slots: Sequence[SlotSpec], global_knobs: Sequence[float], salt: int, reason: str) -> None:
        self._apply(now, SnapshotSpec(generation=self.state.generation + 1, slots=tuple(slots),
                                      global_knobs=tuple(global_knobs), salt=salt), reason)

    def _apply(self, now: int, spec: SnapshotSpec, reason: str) -> None:
        """Record the Apply of `spec`, the next snapshot."""
        self._push(ev.Apply(run_id=self.run_id, seq=self.state.last_seq + 1, cycle=self.cycle, t_ns=now,
                            config_generation=self.config_generation, proposal_id=self._pid(),
                            new_config_version=spec.generation, reason=reason, snapshot=spec))
        self._snap = spec
        self._pub_ns = now
        if self.exp is not None:
            self.exp.gen = spec.generation

    def _base_slot(self, weight: float = 1.0) -> SlotSpec:
        return SlotSpec(weight, self.state.baseline_variant, self.state.baseline)

    def _publish_baseline(self, now: int, reason: str) -> None:
        self._publish(now, (self._base_slot(),), self.state.baseline, 0, reason)

    @property
    def snapshot(self) -> Optional[SnapshotSpec]:
        """The snapshot currently published (last Apply)."""
        return self.state.live

    # ----------------------------------------------------------------- start / reload
    def start(self, now_ns: int) -> StepOutput:
        """Begin a run: record the config, restore kill switch / safe mode / cooldown from the
        rebuilt state, and publish the baseline alone under a fresh generation."""
        self.started = True
        self._emit(ev.ConfigReload, now_ns, old_generation=self.state.config_generation, target=self.g.target)
        if self.g.kill_switch.engaged and not self.state.kill_switch_set:
            self._emit(ev.KillSwitch, now_ns, engaged=True, source="config")
        if self.state.kill_switch:
            self.mstate = S.FROZEN
        elif self.state.safe_mode:
            self.mstate = S.SAFE_MODE
        elif self.state.cooldown_until_ns > now_ns:
            self.mstate = S.COOLDOWN
        else:
            self.mstate = S.IDLE
        self._publish_baseline(now_ns, "start")
        return self._take()

    def _ensure_started(self, now: int) -> None:
        # A deferred proposal nobody completed: finish it first (the state must be whole before
        # any decision) and hand its events out with this call's.
        carry = self.complete() if self._pending is not None else None
        if not self.started:
            self.start(now)
            # keep start's output for the caller of this call
            self._keep = self._take()
        else:
            self._keep = StepOutput(None, carry, []) if carry else None

    def _out(self) -> tuple[Optional[SnapshotSpec], list, list]:
        """This call's (snapshot, events, evaluations), with start's output first when the call
        started the run (what `_merge_keep(_take())` returns, without the intermediate Structs)."""
        snap, events, evals = self._snap, self._events, self._evals
        self._events, self._evals, self._snap = [], [], None
        k = self._keep
        if k is not None:
            self._keep = None
            return snap or k.snapshot, k.events + events, k.evaluations + evals
        return snap, events, evals

    def _merge_keep(self, out: StepOutput) -> StepOutput:
        k = self._keep
        if k is None:
            return out
        self._keep = None
        return StepOutput(out.snapshot or k.snapshot, k.events + out.events, k.evaluations + out.evaluations)

    def reload(self, now_ns: int, guardrails: Guardrails, config_generation: int) -> StepOutput:
        """Swap in a new validated config. A live experiment is stopped first: it was approved
        under rules that no longer hold. Raises ValueError (nothing changed) if the config
        contradicts the declaration."""
        self._ensure_started(now_ns)
        problems = check_against(guardrails, self.decl)
        if problems:
            raise ValueError("reload refused, previous config kept:\n  " + "\n  ".join(problems))
        if self.exp is not None:
            self._stop(now_ns, "config_reload", "config reloaded under a live experiment", "config_reload",
                       None, None, regression=False, quarantine=False, status="aborted")
        old = self.config_generation
        self._configure(guardrails, config_generation)
        self._emit(ev.ConfigReload, now_ns, old_generation=old, target=guardrails.target)
        return self._merge_keep(self._take())

    # ----------------------------------------------------------------- propose
    def propose(self, now_ns: int, p: Proposal, *, defer: bool = False) -> Verdict:
        """Validate `p` fail-closed and all-or-nothing; on acceptance start the experiment and
        return the snapshot to publish. Rejections name rule, value and limit.

        defer=True returns as soon as the decision and the snapshot are made (`events` empty):
        the caller publishes, then calls `complete()` for the audit events (built and folded
        into the state then). Every other call completes a pending proposal first, so the
        state is whole before any decision and the events are the same either way.

        A knob-only proposal is first offered to the admission fast path (admit.py): if it
        accepts, the deferred verdict carries the snapshot as `staged` (C memory, laid out for
        the segment) and `snapshot` is None; complete() lays the experiment out and raises
        FastPathMismatch if what went live breaks a bound or that layout (a bug, never a policy)."""
        if self._pending is None and self.started:
            keep = self._keep = None             # _ensure_started's common case, without the call
        else:
            self._ensure_started(now_ns)
            keep, self._keep = self._keep, None
        pl = self._plan
        if pl is None or pl.key != (self.state.__dict__.get("_facts", 0), self.mstate, self.g, self.exp):
            why = "no_plan" if self.fast_path else ""
        elif p.proposal_id in self.state._id_set():   # _seen, one call fewer
            why = "duplicate"
        else:
            salt = (zlib.crc32(p.proposal_id.encode()) ^ (p.seed & 0xFFFFFFFF)) & 0xFFFFFFFF
            staged, why = fastpath.admit(pl, now_ns, p, salt)
            if staged is not None:
                self.fast_accepts += 1
                self._pending = (now_ns, p, self.state.last_seq, self.cycle, keep, None, staged, None)
                v = Verdict(True, p.proposal_id, message="accepted", staged=staged)
                if defer:
                    return v
                events = self.complete()
                return msgspec.structs.replace(v, events=events, snapshot=self.state.live, staged=None)
        if why:
            self.fast_declines[why] = self.fast_declines.get(why, 0) + 1
        v = self._decide(now_ns, p, keep)
        if defer:
            return v
        return msgspec.structs.replace(v, events=self.complete())

    def _decide(self, now: int, p: Proposal, keep: Optional[StepOutput]) -> Verdict:
        """The Python rules on `p` and, if accepted, the experiment's first snapshot; what
        complete() needs is left in `_pending`."""
        st = self.state
        self._pid_was_present = self._seen(p.proposal_id)
        fast = self._prescan(p)
        seq = st.last_seq   # the ProposalEvent and ValidationVerdict take the next two numbers
        thrash: dict[str, int] = {}
        try:
            arms, variants, is_global = self._validate(now, p, thrash, fast)
        except _Reject as r:
            msg = f"proposal {p.proposal_id} rejected by rule {r.rule}: {r.message}; nothing was applied"
            self._pending = (now, p, seq, self.cycle, keep, False, (r, msg, thrash), None)
            return Verdict(False, p.proposal_id, r.rule, r.value, r.limit, msg, keep.snapshot if keep else None)
        salt = (zlib.crc32(p.proposal_id.encode()) ^ (p.seed & 0xFFFFFFFF)) & 0xFFFFFFFF
        info = self._first_phase(p, arms, variants, is_global, salt)
        self._pending = (now, p, seq, self.cycle, keep, True, info, None)
        return Verdict(True, p.proposal_id, message="accepted", snapshot=info[4][0])

    def _first_phase(self, p: Proposal, arms: list, variants: list[int], is_global: bool, salt: int) -> tuple:
        """The experiment an accepted `p` starts and its first snapshot, laid out by the same
        function every phase uses: (arms, is_global, experiment, accept transition, (snapshot,
        layout)), what complete() takes. Its transition, phase accumulators, Apply event and the
        fold into the state wait for complete() (same events, same order)."""
        e = _Exp(p, arms, variants, is_global, salt)
        if p.kind == "probe" and is_global:
            n = len(arms)
            e.seg_order = list(range(n)) + list(reversed(range(n)))   # ABBA: drift cancels
        accept = self._accept_transition(e)
        lay = self._layout(e, next_state(self.mstate, accept[0]))
        snap = SnapshotSpec(generation=self.state.generation + 1, slots=lay[0], global_knobs=lay[1], salt=salt)
        return arms, is_global, e, accept, (snap, lay)

    def _staged_pending(self, pd: tuple) -> tuple:
        """complete() of a fast-path acceptance: the experiment and the snapshot as the Python
        path lays them out, from the values arqd_admit took (the rules it ran are proven
        equal to `_validate` in tests/test_admit.py; running them again here doubled the cost of
        every proposal). What it published is checked against the one invariant that must
        hold whatever the rules say (every candidate value allowlisted and inside its bounds,
        every other value the baseline's) and against this layout; a difference raises
        FastPathMismatch after recording what went live, and the caller must snap back."""
        now, p, seq, cycle, keep, _, staged, _ = pd
        st, nk = self.state, len(self.decl.knobs)
        base, bvar = st.baseline, st.baseline_variant
        n = staged.n_slots - 1
        kidx = self.kidx
        arms = []
        for a in p.arms:    # the values as given (the baseline's objects elsewhere), as _validate has them
            vals = list(base)
            for name, v in a.knobs.items():
                vals[kidx[name]] = v
            arms.append(tuple(vals))
        problem = "" if len(arms) == n else f"{n} candidate slots for {len(arms)} arms"
        tpl = self._admit_tpl
        for a in arms:
            for i, lo, hi in tpl.bounds:
                if not lo <= a[i] <= hi:
                    problem = f"value {a[i]!r} of knob {self.decl.knobs[i].name} is not allowed"
            for i in tpl.fixed:
                if a[i] != base[i]:
                    problem = f"value {a[i]!r} of knob {self.decl.knobs[i].name} is not allowed"
        self._cause = None   # no preset: no relief (what _validate decides for such an arm)
        self._pid_was_present = False
        info = self._first_phase(p, arms, [bvar] * n, False, staged.salt)
        snap = info[4][0]
        if not problem and not _same_snapshot(snap, staged, nk):
            problem = f"the Python layout is {snap!r}"
        if problem:
            self.mismatches += 1
            # What went live is recorded (an Apply with its own generation, so the snapback
            # that follows takes the next one)
            slots = tuple(SlotSpec(staged.weights[i], staged.variants[i], tuple(staged.knobs[i][0:nk]))
                          for i in range(staged.n_slots))
            self._apply(now, SnapshotSpec(generation=staged.generation, slots=slots,
                                          global_knobs=tuple(staged.global_knobs[0:nk]), salt=staged.salt),
                        "admission fast path (disagreed with the Python rules)")
            raise FastPathMismatch(f"proposal {p.proposal_id}: the admission fast path published generation "
                                   f"{staged.generation}, but {problem}")
        return now, p, seq, cycle, keep, True, info, None

    def complete(self) -> list:
        """The audit events of the last `propose(..., defer=True)`, in order, now folded into the
        state: the ProposalEvent (with its delta summary), the ValidationVerdict (with the knob
        touches it spends) and, when accepted, the experiment's first transition and Apply.
        None of it gates the snapshot, so it runs after the publish. [] when nothing is pending."""
        pd = self._pending
        if pd is None:
            return []
        self._pending = None
        if pd[5] is None:   # the fast path accepted: lay it out as the Python path does
            pd = self._staged_pending(pd)
        now, p, seq, cycle, keep, accepted, info, _ = pd
        cg = self.config_generation
        events = [ev.ProposalEvent(run_id=self.run_id, seq=seq + 1, cycle=cycle, t_ns=now, config_generation=cg,
                                   proposal_id=p.proposal_id, kind=p.kind, source=p.source, seed=p.seed,
                                   arms=p.arms, note=p.note, config_version=cg, delta_summary=self._delta_summary(p))]
        if accepted:
            arms, is_global, e, accept, laid_out = info
            events.append(ev.ValidationVerdict(
                run_id=self.run_id, seq=seq + 2, cycle=cycle, t_ns=now, config_generation=cg,
                proposal_id=p.proposal_id, accepted=True, rule="", value=None, limit=None, message="accepted",
                touches=tuple(kt for _, kt in self._knob_touches(p, arms, is_global)), horizon_ns=self.horizon_ns))
        else:
            r, msg, thrash = info
            events.append(ev.ValidationVerdict(
                run_id=self.run_id, seq=seq + 2, cycle=cycle, t_ns=now, config_generation=cg,
                proposal_id=p.proposal_id, accepted=False, rule=r.rule, value=r.value, limit=r.limit, message=msg,
                thrash_cooldown=thrash))
        apply = self.state.apply
        for x in events:
            apply(x)
        if accepted:
            # the experiment begins: its accept transition and the Apply of the snapshot already published
            self.exp = e
            self._fire(now, *accept)
            self._enter_phase(now, laid_out=laid_out)
            events += self._events
            self._events, self._snap = [], None   # the caller published the snapshot already
        if self.mstate is S.IDLE:
            self._replan(now)
        return keep.events + events if keep is not None else events

    def _replan(self, now: int) -> None:
        """Compile the admission plan when the facts it reads changed (or it is a second old:
        a budget spend it holds only shrinks with time, so an old plan declines more)."""
        if not self.fast_path:
            return
        key, pl = fastpath.plan_key(self), self._plan
        if pl is not None and pl.key == key and now - pl.t_ns <= NS or pl is None and self._no_plan_key == key:
            return   # current (or no plan can be made under these facts: not every cycle again)
        if self._admit_tpl is None:
            self._admit_tpl = fastpath.Template(self)
        self._plan = fastpath.compile_plan(self, now, self._admit_tpl)
        self._no_plan_key = key if self._plan is None else None
        self.plans += self._plan is not None

    def _seen(self, proposal_id: str) -> bool:
        return self.state.seen_id(proposal_id)

    def _prescan(self, p: Proposal) -> Optional[tuple[list[list[float]], float]]:
        """One pass over the arms for the common proposal (allowlisted knobs, float values that
        pass the per-value rules): each arm's full value list, and the largest normalised change
        of any value (no knob costs more than that x its traffic share). Anything else returns
        None and `_validate` walks the values itself, so a rejection names the same rule, value
        and limit as ever."""
        rules, base = self._knob_rules, self.state.baseline
        fast: list[list[float]] = []
        dmax = 0.0
        for a in p.arms:
            vals = list(base)
            for name, v in a.knobs.items():
                kc = rules.get(name)
                if kc is None or type(v) is not float:
                    return None
                i, _rk, integer, rng, lo, hi, absolute, max_delta = kc
                if not lo <= v <= hi or (integer and v != round(v)):   # NaN fails the bounds test
                    return None
                dv = abs(v - base[i])
                d = dv / rng
                if (dv if absolute else d) > max_delta + 1e-12:
                    return None
                if d > dmax:
                    dmax = d
                vals[i] = v
            fast.append(vals)
        return fast, dmax

    def _delta_summary(self, p: Proposal) -> dict[str, float]:
        out: dict[str, float] = {}
        kidx, base, ranges = self.kidx, self.state.baseline, self.ranges
        for a in p.arms:
            for name, v in a.knobs.items():
                i = kidx.get(name)
                if i is None or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                d = abs(v - base[i]) / ranges[i]
                prev = out.get(name, 0.0)
                out[name] = d if d > prev else prev   # max(prev, d), without the builtin's call cost
        return out

    def _validate(self, now: int, p: Proposal, thrash: dict[str, int],
                  fast: Optional[tuple[list[list[float]], float]] = None):
        """Every rule, in order; raises `_Reject` at the first one broken. Returns (arms,
        variants, is_global). `fast`: the prescan's value lists and largest change."""
        st, g, r = self.state, self.g, self.g.rollout
        if st.kill_switch:
            raise _Reject("kill_switch", "engaged", None, "the kill switch is engaged (thaw it first)")
        if st.safe_mode:
            raise _Reject("safe_mode", st.safe_mode_reason, None,
                          f"safe mode is active ({st.safe_mode_reason}); reset_safe_mode or wait for its exit condition")
        if self._pid_was_present:
            raise _Reject("duplicate_proposal_id", p.proposal_id, None, "proposal ids must be unique within a run")
        # relief is not an experiment restarting after a failure: the cooldown does not hold it
        # why this preset may skip the canary, if it may: decided once here, recorded by _accept_transition
        self._cause = self._relief_cause(now, p.arms[0].preset) \
            if p.kind == "rollout" and len(p.arms) == 1 else None
        relief = self.mstate in (S.IDLE, S.COOLDOWN, S.ABORTING) and self.exp is None and self._cause is not None
        if (self.mstate is S.COOLDOWN or st.cooldown_until_ns > now) and not relief:
            left = max(0, st.cooldown_until_ns - now) / NS
            raise _Reject("cooldown", round(left, 6), r.cooldown_after_rollback_s,
                          f"cooling down after a rollback: {left:.3f} s left of {r.cooldown_after_rollback_s} s")
        if self.mstate is not S.IDLE and not relief:
            active = self.exp.p.proposal_id if self.exp else self.mstate.value
            raise _Reject("one_experiment_per_scope", active, 1,
                          f"an experiment is already active in target {g.target!r} ({active}, state {self.mstate.value})")
        max_arms = 1 if p.kind == "rollout" else MAX_SLOTS - 1
        if not 1 <= len(p.arms) <= max_arms:
            raise _Reject("arm_count", len(p.arms), max_arms, f"a {p.kind} takes 1..{max_arms} arms, got {len(p.arms)}")
        base, bvar = st.baseline, st.baseline_variant
        knob_rules = self._knob_rules
        arms: list[tuple[float, ...]] = []
        variants: list[int] = []
        fast_vals = fast[0] if fast is not None else None
        for ai, a in enumerate(p.arms):
            preset = a.preset is not None and self._check_preset(ai, a)
            vals = fast_vals[ai] if fast_vals is not None else list(base)
            for name, v in (() if fast is not None else a.knobs.items()):
                kc = knob_rules.get(name)
                if kc is None:
                    raise _Reject("allowlist", name, ",".join(sorted(g.knobs)),
                                  f"arms[{ai}].{name}: knob {name!r} is not allowlisted in guardrails knobs")
                i, rk, integer, rng, lo, hi, absolute, max_delta = kc
                if type(v) is not float or not math.isfinite(v):   # the common case costs one test
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                        raise _Reject("not_finite", str(v), None, f"arms[{ai}].{name}: value {v!r} is not a finite number")
                    v = float(v)
                if integer and v != round(v):
                    raise _Reject("integer", v, None, f"arms[{ai}].{name}: knob is declared integer, got {v}")
                if not lo <= v <= hi:
                    raise _Reject("bounds", v, f"[{rk.lo}, {rk.hi}]", f"arms[{ai}].{name}: {v} outside bounds [{rk.lo}, {rk.hi}]")
                dv = abs(v - base[i])
                if preset:
                    pass   # an approved bundle: max_delta does not apply (see Arm.preset)
                elif absolute:
                    if dv > max_delta + 1e-12:
                        raise _Reject("max_delta", dv, rk.max_delta,
                                      f"arms[{ai}].{name}: |{v} - baseline {base[i]}| = {dv:g} exceeds max_delta {rk.max_delta} (absolute)")
                else:
                    dn = dv / rng
                    if dn > max_delta + 1e-12:
                        raise _Reject("max_delta", round(dn, 9), rk.max_delta,
                                      f"arms[{ai}].{name}: change {dn:.4g} of the range exceeds max_delta {rk.max_delta} (normalised)")
                vals[i] = v
            var = bvar
            if a.variant is not None:
                if a.variant not in self.vidx:
                    raise _Reject("variant_unknown", a.variant, ",".join(self.decl.variants),
                                  f"arms[{ai}].variant {a.variant!r} is not declared by the data plane")
                var = self.vidx[a.variant]
                if var != bvar:
                    c = self.catalog.get(a.variant)
                    if c is None:
                        raise _Reject("catalog", a.variant, "Approved|Promoted",
                                      f"arms[{ai}].variant {a.variant!r} is not in the approved catalog")
                    if c.state not in ELIGIBLE_STATES:
                        raise _Reject("catalog", c.state, "Approved|Promoted",
                                      f"arms[{ai}].variant {a.variant!r} ({c.id}) is {c.state}; only Approved/Promoted are eligible")
            t = tuple(vals)
            if p.kind == "rollout" and t == base and var == bvar:
                raise _Reject("no_change", 0.0, None, "the rollout arm equals the baseline")
            self._check_quarantine(now, ai, t, var)
            arms.append(t)
            variants.append(var)
        gi = self._global_idx
        is_global = bool(gi) and any(a[i] != base[i] for a in arms for i in gi)
        if fast is None or not self._limits_clear(now, p, arms, is_global, fast[1]):
            self._check_knob_limits(now, p, arms, is_global, thrash, self._knob_touches(p, arms, is_global))
        return arms, variants, is_global

    def _check_preset(self, ai: int, a) -> bool:
        """An arm naming a preset must apply exactly that approved entry's bundle and variant."""
        c = self.presets.get(a.preset)
        if c is None:
            raise _Reject("catalog", a.preset, ",".join(sorted(self.presets)) or "(no presets)",
                          f"arms[{ai}].preset {a.preset!r} is not a catalog entry")
        if c.state not in ELIGIBLE_STATES:
            raise _Reject("catalog", c.state, "Approved|Promoted",
                          f"arms[{ai}].preset {a.preset!r} is {c.state}; only Approved/Promoted are eligible")
        if dict(a.knobs) != dict(c.knobs) or a.variant != c.variant:
            raise _Reject("preset_mismatch", a.preset, None,
                          f"arms[{ai}]: knobs/variant differ from catalog entry {a.preset!r}'s approved bundle")
        return True

    def _check_quarantine(self, now: int, ai: int, vals: tuple[float, ...], var: int) -> None:
        if not self.state.quarantine:
            return
        x = self._norm(vals)
        for q in self.state.quarantine:
            if q.until_ns <= now or q.variant != var:
                continue
            if q.variant_only:
                raise _Reject("quarantine", self.decl.variants[var] if self.decl.variants else var, None,
                              f"arms[{ai}]: variant quarantined until t={q.until_ns} ns after a failure")
            dist = math.sqrt(sum((a - b) ** 2 for a, b in zip(x, q.center)))
            if dist <= q.radius:
                raise _Reject("quarantine", round(dist, 9), q.radius,
                              f"arms[{ai}]: within {dist:.4g} (normalised) of a failed point; quarantine radius {q.radius}")

    def _norm(self, vals: Sequence[float]) -> tuple[float, ...]:
        return tuple((v - k.min) / self.ranges[i] for i, (v, k) in enumerate(zip(vals, self.decl.knobs)))

    def _share(self, p: Proposal, n_arms: int, is_global: bool) -> float:
        """The traffic share a knob change is charged at: a rollout's whole, a split probe arm's
        probe_weight, a global probe's segment."""
        if p.kind == "rollout":
            return 1.0
        return (1.0 / n_arms) if is_global else self.g.rollout.probe_weight

    def _knob_touches(self, p: Proposal, arms, is_global: bool) -> list[tuple[tuple, ev.KnobTouch]]:
        """(the knob's `_limit_rows` row, what the proposal spends of it) for every allowlisted
        knob some arm moves, in declaration order. Cost: the largest normalised |arm - baseline|
        x the traffic share; rollouts also record the signed move and its direction."""
        base = self.state.baseline
        rollout = p.kind == "rollout"
        share = self._share(p, len(arms), is_global)
        KT = ev.KnobTouch
        out = []
        n_arms = len(arms)
        a0 = arms[0]
        a1 = arms[1] if n_arms == 2 else None
        for row in self._limit_rows:
            i, name, ri = row[0], row[1], row[2]
            bi = base[i]
            if n_arms == 1:
                m0 = (a0[i] - bi) / ri
                if m0 == 0:
                    continue   # this knob does not move
                amax = m0 if m0 >= 0 else -m0
            elif n_arms == 2:   # the symmetric probe: max(map(abs, moves)) without the list
                m0 = (a0[i] - bi) / ri
                m1 = (a1[i] - bi) / ri
                if m0 == 0 and m1 == 0:
                    continue
                c0 = m0 if m0 >= 0 else -m0
                c1 = m1 if m1 >= 0 else -m1
                amax = c1 if c1 > c0 else c0
            else:
                moves = [(a[i] - bi) / ri for a in arms]
                for m in moves:
                    if m != 0:
                        break
                else:
                    continue   # this knob does not move
                m0 = moves[0]
                amax = max(map(abs, moves))
            if rollout:
                out.append((row, KT(name, amax * share, 1 if m0 > 0 else -1, m0)))
            else:
                out.append((row, KT(name, amax * share, 0, 0.0)))
        return out

    def _limits_clear(self, now: int, p: Proposal, arms, is_global: bool, dmax: float) -> bool:
        """True when no knob's rate, interval, budget or anti-thrashing rule can refuse `p`,
        decided from the all-knob aggregate (`_AllLog`) in O(1) instead of one scan per knob.
        False means "not sure": `_check_knob_limits` then decides knob by knob, so a refusal
        names the same rule, value and limit as ever. `dmax`: the largest normalised change of
        any value of `p` (every knob's cost is at most dmax x the share)."""
        st = self.state
        d = st.__dict__
        agg = d.get("_all")
        if agg is None or agg.of is not st.history:
            agg = d["_all"] = _AllLog(st.history)
        if not agg.ordered:
            return False
        last = agg.last_t
        if last is not None:
            # every knob's last change is at or before `last`, so at least this long ago
            if now < last or (now - last) / NS < self._max_min_iv:
                return False
        rate_cut, budget_cut = now - NS, now - self._budget_ns
        if rate_cut < agg.cut or budget_cut < agg.cut:
            return False   # a window reaches back past what the aggregate still holds
        times = agg.times
        if len(times) - bisect_right(times, rate_cut) + 1 > self._min_rate:
            return False
        approx, err = agg.spend_approx(bisect_right(times, budget_cut))
        # Each knob's in-order spend is at most the aggregate's in-order sum (float addition is
        # monotone, its missing entries add exact zeros), which is within err of approx; the
        # relative slack covers the roundings of the knob's own spend + cost (NaN: not clear).
        cost = dmax * self._share(p, len(arms), is_global)
        if not (approx + 2.0 * err + cost) * (1.0 + 16.0 * _U) < self._budget_limit:
            return False
        if p.kind == "rollout":
            if st.thrash_until and max(st.thrash_until.values()) > now:
                return False
            if st.moves:   # a reversal of a promoted direction: hysteresis and flips decide
                base, a0, kidx = st.baseline, arms[0], self.kidx
                for name in p.arms[0].knobs:
                    mv = st.moves.get(name)
                    if mv:
                        i = kidx[name]
                        m = (a0[i] - base[i]) / self.ranges[i]
                        last_dir = mv[-1].direction
                        if m != 0 and last_dir != 0 and last_dir != (1 if m > 0 else -1):
                            return False
        return True

    def _check_knob_limits(self, now: int, p: Proposal, arms, is_global: bool, thrash: dict[str, int],
                           touched: list) -> None:
        """Rate, interval, budget and (rollouts only) anti-thrashing rules of every knob the
        proposal moves (`touched`, from `_knob_touches`), knob by knob in declaration order.
        Hysteresis and flips read the directions of *promoted* baseline changes
        (`ExecState.moves`): a probe or a rolled-back rollout never moved the baseline, so it is
        neither a reversal nor a flip, and a thrashing cooldown holds rollouts only (a probe
        leaves the baseline where it is; rate, interval and budget still bound it)."""
        g, st = self.g, self.state
        rollout = p.kind == "rollout"
        budget_cut = now - self._budget_ns
        rate_cut = now - NS
        limit = self._budget_limit
        history, thrash_until = st.history, st.thrash_until
        logs = st.__dict__.get("_logs")
        if logs is None:
            logs = st.__dict__["_logs"] = {}
        for (i, name, _ri, min_iv, rate), kt in touched:
            if rollout and thrash_until:
                until = thrash_until.get(name, 0)
                if until > now:
                    at = g.anti_thrashing
                    raise _Reject("anti_thrashing", round((until - now) / NS, 6), at.cooldown_s,
                                  f"knob {name}: thrashing cooldown, {(until - now) / NS:.3f} s left")
            hist = history.get(name)
            if hist:
                lg = logs.get(name)
                if lg is None or not (lg.hist is hist and lg.last is hist[-1] and len(lg.times) == len(hist)):
                    lg = logs[name] = _KnobLog(hist)   # stale (= not lg.fresh(hist))
                times = lg.times
                since = (now - times[-1]) / NS
                if since < min_iv:
                    raise _Reject("min_interval", round(since, 9), min_iv,
                                  f"knob {name}: {since:.4g} s since its last change, min_interval_s {min_iv}")
                if lg.ordered:   # times non-decreasing: a bisection counts what the scan would
                    recent = len(times) - bisect_right(times, rate_cut)
                else:
                    recent = sum(1 for h in hist if h.t_ns > rate_cut)
            else:
                lg, recent = None, 0
            if recent + 1 > rate:
                raise _Reject("rate_limit", recent + 1, rate,
                              f"knob {name}: {recent + 1} changes within 1 s, rate_limit_hz {rate}")
            if rollout:
                self._check_reversal(now, i, name, kt.move, kt.direction, thrash, preset=p.arms[0].preset is not None)
            cost = kt.cost
            if lg is None:
                spent = 0
            elif lg.ordered:
                j = bisect_right(times, budget_cut)
                cum = lg.cum
                if not lg.clean:            # lg.spend_approx(j), inlined
                    approx = err = math.nan
                elif j >= len(cum):
                    approx = err = 0.0
                else:
                    hi = cum[-1]
                    approx = hi - (cum[j - 1] if j else lg.cum0)
                    err = 4.0 * (lg.n_run + len(lg.costs) + 4) * _U * hi
                # The running sums settle the common case in O(1); near the limit (or to report a
                # refusal) the spend is summed exactly as the scan did, so the decision and the
                # reported value are bit-identical to it.
                slack = 2.0 * err + 8.0 * _U * (cost + abs(limit))   # nan (no bound) -> exact
                spent = approx if approx + cost + slack < limit else lg.spend_since(j)
            else:
                spent = sum(h.cost for h in hist if h.t_ns > budget_cut)
            if spent + cost > limit:
                raise _Reject("budget", round(spent + cost, 9), g.budget.max_change,
                              f"knob {name}: cumulative change {spent + cost:.4g} (normalised x traffic share) within "
                              f"{g.budget.window_s} s would exceed budget {g.budget.max_change}")

    def _check_reversal(self, now: int, i: int, name: str, move: float, direction: int, thrash: dict[str, int],
                        preset: bool = False) -> None:
        """A rollout against the last promoted direction of knob `name`: refused inside the dead
        band (hysteresis x max_delta), and counted as a flip of the baseline's direction. An
        approved preset is exempt from the dead band (it is not a tuner dithering around a
        point), never from the flip count."""
        mv = self.state.moves.get(name)
        last_dir = mv[-1].direction if mv else 0
        if last_dir == 0 or last_dir == direction:
            return
        at = self.g.anti_thrashing
        band = self._dead_band(i)
        if abs(move) < band and not preset:
            raise _Reject("hysteresis", round(abs(move), 9), band,
                          f"knob {name}: reversal of {abs(move):.4g} (normalised) is inside the dead band "
                          f"hysteresis x max_delta = {band:.4g}")
        flips = direction_flips(mv, now - int(at.window_s * NS))
        if flips + 1 > at.max_flips:
            thrash[name] = now + int(at.cooldown_s * NS)
            raise _Reject("anti_thrashing", flips + 1, at.max_flips,
                          f"knob {name}: {flips + 1} promoted direction flips within {at.window_s} s "
                          f"(max {at.max_flips}); {at.cooldown_s} s cooldown started")

    def _dead_band(self, i: int) -> float:
        """hysteresis x knob i's max_delta, normalised: a reversal of a promoted direction
        smaller than this is refused (the admission plan holds the same figure)."""
        rk = self.rk[i]
        nd = rk.max_delta if rk.delta_mode == "normalised" else rk.max_delta / self.ranges[i]
        return self.g.anti_thrashing.hysteresis * nd

    # ----------------------------------------------------------------- experiment phases
    def _accept_transition(self, e: _Exp) -> tuple:
        """The transition that starts experiment `e`: (trigger, measured, condition, threshold)."""
        r = self.g.rollout
        if e.p.kind == "probe":
            return "accept_probe", len(e.arms), "probe accepted", None
        cause = None if e.is_global else self._cause
        if cause is not None:
            return ("accept_relief", cause[0], f"relief: {cause[2]}; approved preset {e.p.arms[0].preset} "
                                               "bakes at 100% with SLO guardrails", cause[1])
        if e.is_global:
            return "accept_switchback", None, "rollout touches a global knob: switchback", None
        if r.shadow == "on" or (r.shadow == "auto" and e.variants[0] != self.state.baseline_variant):
            return "accept_rollout_shadow", r.shadow, "shadow policy", None
        return "accept_rollout", r.canary_steps[0], "first canary step", None

    def _layout(self, e: _Exp, state: S) -> Optional[tuple]:
        """What experiment `e` publishes in `state` (its current step and segment): (slots,
        global knobs, reason, candidate weight or None), or None for a state without a phase.
        Pure: propose lays out the first phase with it before the experiment begins."""
        r, base, bs = self.g.rollout, self.state.baseline, self._base_slot
        if state is S.PROBING and not e.is_global:
            w = r.probe_weight
            return ((bs(1.0 - w * len(e.arms)),) + tuple(SlotSpec(w, v, a) for a, v in zip(e.arms, e.variants)),
                    base, "probe", None)
        if state is S.PROBING:
            a = e.seg_order[e.seg]
            return ((bs(0.0), SlotSpec(1.0, e.variants[a], e.arms[a])), e.arms[a],
                    f"probe segment {e.seg} arm {a}", None)
        if state is S.SHADOW or state is S.CANARY:
            w = r.shadow_weight if state is S.SHADOW else r.canary_steps[e.step]
            return ((bs(1.0 - w), SlotSpec(w, e.variants[0], e.arms[0])), base,
                    "shadow" if state is S.SHADOW else f"canary step {e.step} weight {w}", w)
        if state is S.SWITCHBACK:
            if self._sb_is_candidate(e.seg):
                return ((bs(0.0), SlotSpec(1.0, e.variants[0], e.arms[0])), e.arms[0],
                        f"switchback segment {e.seg}: candidate", None)
            return (bs(1.0),), base, f"switchback segment {e.seg}: baseline", None
        if state is S.BAKING:
            return ((bs(0.0), SlotSpec(1.0, e.variants[0], e.arms[0])),
                    e.arms[0] if e.is_global else base, "baking", 1.0)
        return None

    def _enter_phase(self, now: int, new_segment: bool = False, laid_out: Optional[tuple] = None) -> None:
        """Publish the snapshot of the current phase and reset its accumulators. A new segment
        of the same phase (switchback, global probe) keeps the phase's pairs and series.
        laid_out: (snapshot, layout) of a first phase that propose already published."""
        e = self.exp
        if new_segment:
            e.wins, e.cand, e.base = {}, {}, {}
        else:
            e.reset_phase()
            e.phase_start = now
        snap, lay = laid_out if laid_out is not None else (None, self._layout(e, self.mstate))
        if lay is None:
            return
        slots, glob, reason, w = lay
        if w is not None:
            e.weight = w
        if snap is None:
            self._publish(now, slots, glob, e.salt, reason)
        else:
            self._apply(now, snap, reason)

    @staticmethod
    def _sb_is_candidate(seg: int) -> bool:
        # Pairs (2j, 2j+1): j even -> (C, B), j odd -> (B, C). ABBA order cancels linear drift.
        return (seg % 4) in (0, 3)

    def _roles(self) -> dict[int, tuple[str, int]]:
        """slot -> ("base", 0) or ("cand", arm index) for the live phase."""
        e = self.exp
        if self.mstate is S.PROBING:
            if e.is_global:
                return {1: ("cand", e.seg_order[e.seg])}
            return {0: ("base", 0), **{i + 1: ("cand", i) for i in range(len(e.arms))}}
        if self.mstate in (S.SHADOW, S.CANARY):
            return {0: ("base", 0), 1: ("cand", 0)}
        if self.mstate is S.BAKING:
            return {1: ("cand", 0)}
        if self.mstate is S.SWITCHBACK:
            return {1: ("cand", 0)} if self._sb_is_candidate(e.seg) else {0: ("base", 0)}
        return {}

    # ----------------------------------------------------------------- step
    def step(self, now_ns: int, inp: CycleInput) -> StepOutput:
        """Advance one decision cycle with this cycle's telemetry."""
        self._ensure_started(now_ns)
        now = now_ns
        self.cycle += 1
        st = self.state
        if inp.ack_generation >= st.generation > self._acked_gen:
            self._acked_gen = st.generation
            self._acked_ns = now
            self._emit(ev.Ack, now, generation=st.generation)
            if self.mstate in (S.ABORTING, S.PROMOTED):
                self._fire(now, "ack", measured=inp.ack_generation, condition="data plane applied the generation",
                           threshold=st.generation)
        if self.mstate in (S.ABORTING, S.PROMOTED) and self._acked_gen < st.generation and self._since_publish(now) >= self.deadline_ns:
            self._fire(now, "ack_timeout", measured=self._since_publish(now) / NS, condition="no ack within step_deadline_s",
                       threshold=self.g.rollout.step_deadline_s)
        if self.mstate is S.COOLDOWN and now >= st.cooldown_until_ns:
            self._fire(now, "cooldown_done", measured=now, condition="t >= cooldown end", threshold=st.cooldown_until_ns)
        if st.safe_mode and st.safe_mode_exit_at_ns and now >= st.safe_mode_exit_at_ns:
            self._emit(ev.SafeModeExited, now, duration_us=(now - st.safe_mode_since_ns) // 1000, exit_reason="timer")
            if self.mstate is S.SAFE_MODE:
                self._fire(now, "safe_mode_timer", measured=now, condition="t >= safe mode exit", threshold=None)
        if self._ctx_fields:
            self._measure_conditions(now, inp)
        if self.exp is not None and self.mstate in EXPERIMENT:
            self._advance(now, inp)
        elif self.g.rollout.relief:
            self._watch_baseline(now, inp)
        if self.mstate is S.IDLE:
            self._replan(now)
        return StepOutput(*self._out())

    def _measure_conditions(self, now: int, inp: CycleInput) -> None:
        for s in inp.slots:
            if s.slot == 0:
                cond = {}
                for f in self._ctx_fields:
                    fs = s.fields.get(f)
                    if fs is None or fs.count <= 0:
                        return
                    cond[f] = fs.mean
                self._conditions = (now, cond)
                return

    def _checks_for(self, var: int) -> tuple[_Check, ...]:
        """The SLOs plus variant `var`'s catalog constraints, built once per variant."""
        checks = self._checks_by_var.get(var)
        if checks is None:
            checks = self._checks_by_var[var] = tuple(self.checks + self._catalog_checks(var))
        return checks

    @staticmethod
    def _margin(c: _Check, value: float) -> float:
        """Distance to the limit as a ratio of |limit| (absolute when the limit is 0); < 0 breaches."""
        scale = abs(c.limit) if c.limit != 0 else 1.0
        return ((c.limit - value) if c.upper else (value - c.limit)) / scale

    def _watch_baseline(self, now: int, inp: CycleInput) -> None:
        """With rollout.relief on and no experiment: the baseline's enforcing SLO windows over
        slot 0, so a relief rollout knows whether the baseline breaches right now."""
        gen = self.state.generation
        checks = self._checks_for(self.state.baseline_variant)
        for s in inp.slots:
            if s.slot != 0 or s.generation != gen:
                continue
            for c in checks:
                fs = s.fields.get(c.field)
                if not c.enforce or fs is None or fs.count <= 0:
                    continue
                w = self._base_wins.get(c.name)
                if w is None:
                    w = self._base_wins[c.name] = _Win()
                w.add(fs, s.window_ns, _stat(fs, c.stat, s.window_ns))
                if w.n < c.min_samples:
                    continue
                margin = self._margin(c, w.value(c.stat))
                del self._base_wins[c.name]
                self._base_breach[c.name] = (now, margin) if margin < 0 else None

    def relief_ready(self, now_ns: int) -> bool:
        """rollout.relief is on and either the baseline breached an enforcing SLO within the last
        second or the conditions measured within it rose to a `tuning.context_fast_rise` factor
        beyond the context of the entry the baseline is: then the approved preset nearest them
        may start now, even during a cooldown (see `_relief_cause`). Otherwise (a fall, steady
        conditions) a preset would only be refused for the cooldown: nobody needs to ask."""
        if not self.g.rollout.relief:
            return False
        if self._baseline_breach(now_ns) is not None:
            return True
        c = self._conditions
        if c is None or now_ns - c[0] > NS or not self._ctx_presets:
            return False
        base = self._baseline_entry()
        return base is not None and risen_beyond(base.context, c[1], self._fast_rise) is not None

    def _relief_cause(self, now: int, preset: Optional[str]) -> Optional[tuple[float, Optional[float], str]]:
        """Why approved preset `preset` may skip the canary now, as (measured, threshold, reason)
        for the transition's record, or None.
        Either the baseline breaches an enforcing SLO (a 10 % canary would leave 90 % of the
        traffic breaching meanwhile), or the conditions Tier 1 itself measured in the last second
        rose, in a `tuning.context_fast_rise` field, by that factor beyond the context of the
        approved entry the baseline is, and `preset` is the approved entry nearest them: it was
        evaluated and approved for these conditions, the baseline for others, and waiting out a
        canary ramp after a load step is what breaks the SLA. A fall (a costlier entry for calmer
        conditions) takes the canary: that is the direction a canary protects. Bounds, rates,
        budget, quarantine and the SLO checks of the bake still apply; a breach during the bake
        rolls back at once."""
        if preset is None or not self.g.rollout.relief:
            return None
        breach = self._baseline_breach(now)
        if breach is not None:
            return breach[1], 0.0, f"the baseline breaches SLO {breach[0]}"
        c = self._conditions
        if c is None or now - c[0] > NS:
            return None
        best, dist = nearest_entry(self._ctx_presets, self._ctx_fields, c[1])
        if best is None or best.id != preset:
            return None
        base = self._baseline_entry()
        if base is None:
            return None
        f = risen_beyond(base.context, c[1], self._fast_rise)
        if f is None:
            return None
        now_v, was = c[1][f], base.context[f]
        return dist, None, (f"{f} measured now ({now_v:.4g}) is {now_v / was:.3g}x the {was:.4g} the baseline "
                            f"({base.id}) was approved for (tuning.context_fast_rise {f}: {self._fast_rise[f]:g}), "
                            f"and {preset} is the approved entry nearest these conditions ({dist:.3g} log2 units)")

    def _baseline_entry(self):
        """The approved entry with a context that the baseline is (its variant, and its bundle if
        it has one), or None: only then does Tier 1 know which conditions the baseline suits."""
        st, d = self.state, self.decl
        var = d.variants[st.baseline_variant] if d.variants else None
        for e in self._ctx_presets:
            if e.variant is not None and e.variant != var:
                continue
            if all(abs(st.baseline[self.kidx[k]] - v) <= 1e-12 for k, v in e.knobs.items() if k in self.kidx):
                return e
        return None

    def _baseline_breach(self, now: int):
        """(slo, relative margin) of an enforcing SLO the baseline breached in a window that
        closed within the last second (while idle, or beside the experiment that just stopped)."""
        for name, b in self._base_breach.items():
            if b is not None and now - b[0] <= NS:
                return name, b[1]
        return None

    def _since_publish(self, now: int) -> int:
        return now - self._pub_ns

    def _advance(self, now: int, inp: CycleInput) -> None:
        e = self.exp
        if not inp.lease_ok:
            self._stop(now, "lease_lost", "actuator lease lapsed: the data plane serves slot 0", "lease",
                       "lost", "ok", regression=False, quarantine=False, status="aborted")
            return
        gen = self.state.generation
        acked = self._acked_gen >= gen and e.gen == gen
        usable: list[SlotTelemetry] = []
        if acked and inp.generation == gen:
            start = self._acked_ns + self.settle_ns
            # Defense in depth: only this generation's records, only after the settle time.
            usable = [s for s in inp.slots if s.generation == gen and now - s.window_ns >= start]
        roles = self._roles()
        if usable and self._check_slos(now, usable, roles):
            return
        if e.relief is not None and self.mstate is S.CANARY:
            name, m = e.relief
            self._fire(now, "relief", measured=m, threshold=0.0,
                       condition=f"relief: the baseline breaches SLO {name} during the canary; approved preset "
                                 f"{e.p.arms[0].preset} bakes at 100% with SLO guardrails")
            e.step = len(self.g.rollout.canary_steps) - 1
            self._enter_phase(now)
            return
        if self.mstate is S.PROBING:
            self._on_probe(now, usable, roles, acked)
        elif self.mstate is S.SHADOW:
            self._on_guard_only(now, usable, roles, acked, self.g.rollout.shadow_s, "shadow_passed")
        elif self.mstate is S.CANARY:
            self._on_canary(now, usable, acked)
        elif self.mstate is S.SWITCHBACK:
            self._on_switchback(now, usable, roles, acked)
        elif self.mstate is S.BAKING:
            self._on_guard_only(now, usable, roles, acked, self.g.rollout.bake_s, "bake_done")

    # ----------------------------------------------------------------- SLO guardrails
    def _check_slos(self, now: int, usable: list[SlotTelemetry], roles) -> bool:
        """Feed SLO windows; on an enforcing breach roll back now. True if rolled back."""
        e = self.exp
        wins = e.wins
        dropped = False
        for s in usable:
            role = roles.get(s.slot)
            if role is None or (role[0] == "cand" and role[1] in e.failed):
                continue
            kind, arm = role
            var = e.variants[arm] if kind == "cand" else self.state.baseline_variant
            checks = self._checks_for(var)
            fields, window_ns, who = s.fields, s.window_ns, f"{kind}{arm}"
            for c in checks:
                fs = fields.get(c.field)
                if fs is None or fs.count <= 0:
                    continue
                key = (who, c.name)
                w = wins.get(key)
                if w is None:
                    w = wins[key] = _Win()
                stat = c.stat
                w.add(fs, window_ns, _stat(fs, stat, window_ns) if stat in _TIMED else float(getattr(fs, stat)))
                if w.n < c.min_samples:
                    continue
                value = w.value(c.stat)
                del wins[key]
                margin = self._margin(c, value)
                if kind == "base":
                    e.base_margin[c.name] = margin
                    # the same constraint under another name (a variant's catalog max_p99 and
                    # the latency SLO on the same field, stat and limit) compares with this too
                    e.base_margin[(c.field, c.stat, c.upper, c.limit)] = margin
                    if margin < 0 and c.enforce and self.mstate is S.CANARY and self.g.rollout.relief \
                            and e.p.arms[0].preset is not None and not e.is_global:
                        e.relief = (c.name, margin)
                    continue
                e.slo_windows_done[c.name] = e.slo_windows_done.get(c.name, 0) + 1
                if margin >= 0:
                    continue
                bm = e.base_margin.get(c.name)
                if bm is None:
                    bm = e.base_margin.get((c.field, c.stat, c.upper, c.limit))
                if margin >= -0.5 and bm is not None and bm < 0 and margin > bm:
                    outcome = "toward_feasibility"   # constraint first: the baseline is worse
                elif not c.enforce:
                    outcome = "dry_run_breach"
                else:
                    outcome = "breach"
                self._emit(ev.SloCheck, now, slo=c.name, slot=s.slot, stat=c.stat, value=value, limit=c.limit,
                           margin=margin, baseline_margin=bm, n=w.n, enforce=c.enforce, outcome=outcome)
                if outcome == "breach":
                    op = "<=" if c.upper else ">="
                    why = "margin below -0.5" if margin < -0.5 else "candidate breaks an SLO the baseline does not beat"
                    reason = f"SLO {c.name}: {c.field}.{c.stat} = {value:g}, limit {op} {c.limit:g} ({why})"
                    if self._drop_probe_arm(now, arm, reason, f"slo:{c.name}", value, c.limit):
                        dropped = True
                        break   # the other arms run on
                    self._stop(now, "slo_breach", reason, f"slo:{c.name}", value, c.limit, regression=True,
                               quarantine=True, status="slo_breach", failed_arm=arm)
                    return True
        if dropped:   # one republish for every arm stopped in this cycle
            w = self.g.rollout.probe_weight
            live = len(e.arms) - len(e.failed)
            slots = [self._base_slot(1.0 - w * live)] + [SlotSpec(0.0 if i in e.failed else w, v, a)
                                                        for i, (a, v) in enumerate(zip(e.arms, e.variants))]
            self._publish(now, slots, self.state.baseline, e.salt, f"probe without arms {sorted(e.failed)}")
        return False

    def _drop_probe_arm(self, now: int, arm: int, reason: str, rule: str, measured, threshold) -> bool:
        """A split probe with other healthy arms: stop only the breaching arm (its traffic returns
        to the baseline, slot 0; it is quarantined at once) and let the others run to the end of
        the window. Its `slo_breach` Evaluation comes with the others' when the probe ends (one
        batch per probe, in arm order). False when the whole experiment must stop instead (global
        probe, last healthy arm, or the regression that enters safe mode)."""
        e, r = self.exp, self.g.rollout
        if (self.mstate is not S.PROBING or e.is_global or len(e.arms) - len(e.failed) <= 1
                or self.state.consecutive_regressions + 1 >= r.max_consecutive_regressions):
            return False
        e.failed[arm] = (e.arm_series[arm].mean(), e.base_series.mean(), e.arm_series[arm].n)
        vo = e.variants[arm] != self.state.baseline_variant and e.arms[arm] == self.state.baseline
        self._emit(ev.Quarantine, now, center=self._norm(e.arms[arm]), variant=e.variants[arm], variant_only=vo,
                   radius=r.quarantine_radius, until_ns=now + int(r.quarantine_s * NS), reason=reason)
        self._emit(ev.Rollback, now, rollback_reason=f"probe arm {arm}: {reason}; other arms continue", rule=rule,
                   measured=measured, threshold=threshold, reverted_to_version=self.state.generation + 1,
                   cooldown_until_ns=now + int(r.cooldown_after_rollback_s * NS), counts_as_regression=True)
        # Same window and the other slots' SLO windows go on; only this arm's share returns to slot 0.
        # The caller republishes once per cycle (several arms may stop in one).
        who = f"cand{arm}"
        for key in [k for k in e.wins if k[0] == who]:
            del e.wins[key]
        return True

    # ----------------------------------------------------------------- stop / rollback
    def _stop(self, now: int, trigger: str, reason: str, rule: str, measured, threshold, *, regression: bool,
              quarantine: bool, status: str, failed_arm: Optional[int] = None) -> None:
        """Roll back to baseline-only in this call. Emits Transition, Rollback, Quarantine,
        Evaluation events and the Apply of the baseline-only snapshot."""
        e, r = self.exp, self.g.rollout
        limit_hit = regression and self.state.consecutive_regressions + 1 >= r.max_consecutive_regressions
        trig = "regressions_limit" if limit_hit and trigger not in ("kill", "enter_safe_mode") else trigger
        self._fire(now, trig, measured=measured, condition=reason, threshold=threshold)
        for i in range(len(e.arms)):
            if i in e.failed:
                self._evaluation(now, i, "slo_breach", *e.failed[i])
                continue
            st_i = status if (failed_arm is None or i == failed_arm or status == "aborted") else "aborted"
            self._evaluation(now, i, st_i)
        if quarantine:
            arms = [i for i in range(len(e.arms)) if i not in e.failed] if failed_arm is None else (failed_arm,)
            for i in arms:
                vo = e.variants[i] != self.state.baseline_variant and e.arms[i] == self.state.baseline
                self._emit(ev.Quarantine, now, center=self._norm(e.arms[i]), variant=e.variants[i], variant_only=vo,
                           radius=r.quarantine_radius, until_ns=now + int(r.quarantine_s * NS), reason=reason)
        cooldown = now + int(r.cooldown_after_rollback_s * NS) if trigger not in ("kill", "enter_safe_mode", "cancel") else now
        self._emit(ev.Rollback, now, rollback_reason=reason, rule=rule, measured=measured, threshold=threshold,
                   reverted_to_version=self.state.generation + 1, cooldown_until_ns=cooldown,
                   counts_as_regression=regression)
        if self.g.rollout.relief:
            enforcing = {c.name for c in self.checks if c.enforce}
            for name, m in e.base_margin.items():
                if name in enforcing:
                    self._base_breach[name] = (now, m) if m < 0 else None
        self.exp = None
        self._publish_baseline(now, f"rollback: {trigger}")
        if trig == "regressions_limit":
            self._enter_safe_mode(now, f"{r.max_consecutive_regressions} consecutive regressions")

    def _enter_safe_mode(self, now: int, reason: str) -> None:
        ex = self.g.safe_mode.exit_after_s
        exit_at = now + int(ex * NS) if ex > 0 else 0
        cond = f"timer {ex} s or reset_safe_mode" if ex > 0 else "manual reset_safe_mode"
        self._emit(ev.SafeModeEntered, now, reason=reason, exit_condition=cond, exit_at_ns=exit_at)

    def _evaluation(self, now: int, arm: int, status: str, objective=None, baseline_objective=None, n=0, blocks=0, se=None):
        e = self.exp
        ev_ = Evaluation(e.p.proposal_id, arm, status, objective, baseline_objective, n, blocks, se)
        self._evals.append(ev_)
        self._emit(ev.EvaluationEvent, now, arm=arm, status=status, objective=objective,
                   baseline_objective=baseline_objective, n_records=n, n_blocks=blocks, stderr=se)

    # ----------------------------------------------------------------- metric values
    def _objective_value(self, s: SlotTelemetry) -> Optional[float]:
        """The objective of one slot's cycle (None when a term's field is missing), summed as
        `_metric_values` does."""
        total = 0.0
        for t in self.g.objective.terms:
            fs = s.fields.get(t.field)
            if fs is None or fs.count <= 0:
                return None
            total += t.weight * _stat(fs, t.stat, s.window_ns)
        return total

    def _metric_values(self, s: SlotTelemetry) -> dict[str, float]:
        out: dict[str, float] = {}
        g = self.g
        total = 0.0
        for t in g.objective.terms:
            fs = s.fields.get(t.field)
            if fs is None or fs.count <= 0:
                break
            total += t.weight * _stat(fs, t.stat, s.window_ns)
        else:
            out["objective"] = total
        for sl in g.slos:
            if sl.compare or sl.enforce:   # compared by the judge, or tested for feasibility
                fs = s.fields.get(sl.field)
                if fs is not None and fs.count > 0:
                    out[sl.name] = _stat(fs, sl.stat, s.window_ns)
        return out

    # ----------------------------------------------------------------- probes
    def _on_probe(self, now: int, usable, roles, acked: bool) -> None:
        e, r = self.exp, self.g.rollout
        paired = not e.is_global   # a split probe: each arm beside slot 0 in the same cycles
        if paired and e.window_ack_ns is not None:
            start = e.window_ack_ns + self.settle_ns
            if now >= start:
                b = (now - start) // self.block_ns
                while e.cur_block < b:
                    self._close_probe_block()
                    e.cur_block += 1
        for s in usable:
            role = roles.get(s.slot)
            if role is None or (role[0] == "cand" and role[1] in e.failed):
                continue
            v = self._objective_value(s)
            if v is None:
                continue
            (e.base_series if role[0] == "base" else e.arm_series[role[1]]).add(v, s.n_records)
            if paired:
                (e.blk_base if role[0] == "base" else e.blk_arms[role[1]]).add(v, s.n_records)
        if acked and (e.window_ack_ns is None or e.is_global):
            e.window_ack_ns = self._acked_ns   # a stopped arm's republish does not restart the window
        if not acked and e.window_ack_ns is None:
            if now - e.phase_start >= self.deadline_ns:
                self._end_probe(now, "no ack from the data plane within step_deadline_s")
            return
        seg_ns = int(r.probe_window_s * NS / 2) if e.is_global else int(r.probe_window_s * NS)
        if now - (e.window_ack_ns + self.settle_ns) < seg_ns:
            return
        if e.is_global and e.seg + 1 < len(e.seg_order):
            e.seg += 1
            e.window_ack_ns = None
            self._enter_phase(now, new_segment=True)   # arms accumulate over segments
            return
        self._end_probe(now, "probe window complete")

    def _close_probe_block(self) -> None:
        """One probe block: each arm's mean minus slot 0's over the same cycles (objective units)."""
        e = self.exp
        bm = e.blk_base.mean()
        if bm is not None:
            for i, s in enumerate(e.blk_arms):
                am = s.mean()
                if am is not None and i not in e.failed:
                    e.blk_diffs[i].append(am - bm)
        e.blk_base = BlockSeries()
        e.blk_arms = [BlockSeries() for _ in e.arms]

    def _end_probe(self, now: int, why: str) -> None:
        e, r = self.exp, self.g.rollout
        bo = e.base_series.mean()
        for i, s in enumerate(e.arm_series):
            if i in e.failed:   # stopped earlier: reported now, with the others, in arm order
                self._evaluation(now, i, "slo_breach", *e.failed[i])
                continue
            ok = s.n >= r.probe_min_samples
            d = e.blk_diffs[i]
            nb, se = len(d), None
            if nb >= 2:   # standard error of the mean paired difference (arm - baseline), objective units
                md = sum(d) / nb
                se = math.sqrt(sum((x - md) ** 2 for x in d) / (nb - 1) / nb)
            self._evaluation(now, i, "ok" if ok else "insufficient_data", s.mean(), bo, s.n, nb, se)
        self._fire(now, "probe_done", measured=min(s.n for s in e.arm_series), condition=why,
                   threshold=r.probe_min_samples)
        self.exp = None
        self._publish_baseline(now, "probe done")

    # ----------------------------------------------------------------- shadow / baking
    def _on_guard_only(self, now: int, usable, roles, acked: bool, hold_s: float, trigger: str) -> None:
        """Phases judged by the absolute guardrails alone: pass after `hold_s` of data in which
        every enforcing SLO completed at least one window and min_samples records arrived."""
        e, r = self.exp, self.g.rollout
        for s in usable:
            if roles.get(s.slot, ("", 0))[0] == "cand":
                e.cand_samples += s.n_records
        limit_ns = self.deadline_ns + int(hold_s * NS)
        if acked and now - (self._acked_ns + self.settle_ns) >= int(hold_s * NS):
            need = [c.name for c in self.checks + self._catalog_checks(e.variants[0]) if c.enforce]
            missing = [n for n in need if not e.slo_windows_done.get(n)]
            min_n = r.min_samples if trigger == "bake_done" else 1
            if not missing and e.cand_samples >= min_n:
                self._pass_phase(now, trigger, e.cand_samples, f"{hold_s} s with every SLO window within limits",
                                 min_n)
                return
        if now - e.phase_start >= limit_ns:
            self._stop(now, "deadline", f"{'baking' if trigger == 'bake_done' else 'shadow'}: not enough evidence "
                       f"within {limit_ns / NS:g} s ({e.cand_samples} candidate records)", "deadline",
                       e.cand_samples, r.min_samples, regression=False, quarantine=False, status="insufficient_data")

    def _pass_phase(self, now: int, trigger: str, measured, condition: str, threshold) -> None:
        e = self.exp
        if trigger == "bake_done":
            self._fire(now, trigger, measured=measured, condition=condition, threshold=threshold)
            self._promote(now)
            return
        if trigger == "shadow_passed":
            self._fire(now, trigger, measured=measured, condition=condition, threshold=threshold)
            e.step = 0
            self._enter_phase(now)
            return

    def _promote(self, now: int) -> None:
        e = self.exp
        old, oldv = self.state.baseline, self.state.baseline_variant
        new, newv = e.arms[0], e.variants[0]
        vname = self.decl.variants[newv] if self.decl.variants and newv < len(self.decl.variants) else str(newv)
        c = self.catalog.get(vname)
        # The evidence is the last judged step's promote verdict (baking, which follows it, has none).
        lv = e.evidence
        ref = f"{self.run_id}/{e.p.proposal_id}/verdict-seq-{lv.seq if lv else 0}"
        co, bo, nb, se = None, None, 0, None
        if e.evidence_pairs is not None:   # that step's paired blocks, objective units
            cs, bs = e.evidence_pairs
            nb = len(cs)
            co, bo = sum(cs) / nb, sum(bs) / nb
            if nb >= 2:
                d = [c - b for c, b in zip(cs, bs)]
                md = sum(d) / nb
                se = math.sqrt(sum((x - md) ** 2 for x in d) / (nb - 1) / nb)
        self._evaluation(now, 0, "ok", co, bo, e.cand_samples, nb, se)
        moves = {rk.name: (1 if new[i] > old[i] else -1) for i, rk in enumerate(self.rk)
                 if rk is not None and new[i] != old[i]}
        self._emit(ev.Promotion, now, variant_id=c.id if c else vname, old_state="candidate", new_state="baseline",
                   evidence_ref=ref, old_baseline=old, new_baseline=new, old_variant=oldv, new_variant=newv,
                   moves=moves, horizon_ns=self.horizon_ns, reason=self._promotion_reason(e))
        self.exp = None
        self._publish_baseline(now, "promotion")

    @staticmethod
    def _promotion_reason(e: _Exp) -> str:
        if "feasibility_first" in e.rules:
            return ("feasibility_first: the baseline breached an enforcing SLO the candidate met over the same "
                    f"paired blocks ({e.rules.count('feasibility_first')} of {len(e.rules)} judged steps passed on "
                    "feasibility; see the judge_verdict events)")
        return "objective: not worse than the baseline by more than effect_margin on every enforcing metric"

    # ----------------------------------------------------------------- canary (split judging)
    def _look_alpha(self, blocks_available: int, steps: int) -> tuple[int, float]:
        """Looks per step and the one-sided alpha of each look (Bonferroni over judged steps,
        looks and enforcing metrics)."""
        r = self.g.rollout
        looks = max(1, blocks_available // r.min_blocks)
        n_enf = max(1, sum(1 for m in self.metrics if m[2]))
        return looks, (1.0 - r.confidence) / (steps * looks * n_enf)

    def _on_canary(self, now: int, usable, acked: bool) -> None:
        e, r = self.exp, self.g.rollout
        if acked:
            start = self._acked_ns + self.settle_ns
            if now >= start:
                b = (now - start) // self.block_ns
                while e.cur_block < b:
                    gen = e.gen
                    self._close_block(now)
                    if self.exp is not e or e.gen != gen:
                        return          # the look moved the rollout on (or stopped it)
                    e.cur_block += 1
                for s in usable:
                    vals = self._metric_values(s)
                    side = e.base if s.slot == 0 else e.cand if s.slot == 1 else None
                    if side is None:
                        continue
                    for m, v in vals.items():
                        side.setdefault(m, BlockSeries()).add(v, s.n_records)
                    if s.slot == 1:
                        e.cand_samples += s.n_records
        if self.exp is e and now - e.phase_start >= self.deadline_ns:
            v = e.last_verdict
            self._stop(now, "deadline", f"canary step {e.step} (weight {e.weight}): no promote verdict within "
                       f"step_deadline_s ({len(e.pairs.get('objective', ([], []))[0])} paired blocks, "
                       f"{e.n_blocks_missing} blocks missing data, {e.cand_samples} candidate records); "
                       f"missing data never passes",
                       "deadline", v.decision if v else "no verdict", "promote", regression=False, quarantine=False,
                       status="insufficient_data")

    def _close_block(self, now: int) -> None:
        e = self.exp
        cm = {m: s.mean() for m, s in e.cand.items()}
        bm = {m: s.mean() for m, s in e.base.items()}
        cn = e.cand.get("objective", BlockSeries()).n
        bn = e.base.get("objective", BlockSeries()).n
        e.cand, e.base = {}, {}
        self._record_pair(now, cm, bm, cn, bn, f"canary{e.step}", e.cur_block)

    def _record_pair(self, now: int, cm: dict, bm: dict, cn: int, bn: int, phase: str, block: int) -> None:
        e = self.exp
        names = [m[0] for m in self.metrics]
        complete = all(cm.get(m) is not None and bm.get(m) is not None for m in names)
        co, bo = cm.get("objective"), bm.get("objective")
        sign = 1.0 if self.metrics[0][1] else -1.0
        self._emit(ev.Digest, now, digest_id=f"{e.p.proposal_id}/{phase}/{block}", phase=phase, block=block,
                   candidate_objective=co, baseline_objective=bo, candidate_n=cn, baseline_n=bn,
                   objective_value=sign * (co - bo) if complete else None)
        if not complete:
            e.n_blocks_missing += 1
            return
        for m in names:
            c, b = e.pairs.setdefault(m, ([], []))
            c.append(cm[m])
            b.append(bm[m])
        for m, _up, _lim in self._feas_slos:
            c, b = cm.get(m), bm.get(m)
            if c is not None and b is not None:
                fc, fb = e.fpairs.setdefault(m, ([], []))
                fc.append(c)
                fb.append(b)
        self._maybe_look(now)

    def _maybe_look(self, now: int) -> None:
        e, r = self.exp, self.g.rollout
        n = len(e.pairs["objective"][0])
        if self.mstate is S.SWITCHBACK:   # a pair takes two segments; the deadline is doubled
            avail, steps = (2 * self.deadline_ns) // (2 * (self.block_ns + self.settle_ns)), 1
        else:
            avail, steps = (self.deadline_ns - self.settle_ns) // self.block_ns, self.judged_steps
        max_looks, alpha = self._look_alpha(max(1, avail), steps)
        if e.looks >= max_looks or n < r.min_blocks * (e.looks + 1) or e.cand_samples < r.min_samples:
            return
        e.looks += 1
        verdicts = tuple(self.test.decide(m, e.pairs[m][0], e.pairs[m][1], worse_if_higher=hi, alpha_look=alpha,
                                          enforce=enf) for m, hi, enf in self.metrics)
        decision = worst_of(verdicts)
        feas = tuple(self.test.feasibility(m, *e.fpairs.get(m, ((), ())), limit=lim, upper=up, alpha_look=alpha)
                     for m, up, lim in self._feas_slos)
        rule = "objective"
        lex = sla_first(feas)
        if lex == "feasibility_first":
            decision, rule = "promote", lex
        elif lex == "feasibility_pending" and decision == "abort" and all(
                v.decision != "abort" for v in verdicts if v.enforce and v.metric != "objective"):
            decision, rule = "hold", lex
        phase = "switchback" if self.mstate is S.SWITCHBACK else f"canary{e.step}"
        e.last_verdict = self._emit(ev.JudgeVerdict, now, phase=phase, step=e.step, weight=e.weight, decision=decision,
                                    metrics=verdicts, n_samples=e.cand_samples, min_samples=r.min_samples,
                                    min_blocks=r.min_blocks, look=e.looks, max_looks=max_looks, rule=rule,
                                    feasibility=tuple(f for f in feas if f is not None))
        worst = next((v for v in verdicts if v.enforce and v.decision == decision), verdicts[0])
        if decision == "promote":   # kept across phases: the promotion cites it
            e.evidence, e.evidence_pairs = e.last_verdict, e.pairs.get("objective")
        if rule == "feasibility_first":
            e.rules.append(rule)
            f = next(f for f in feas if f.base_infeasible)
            cond = (f"SLA first: baseline breaches SLO {f.slo} (violation lower bound {f.base_lcb:.4g} > 0) and the "
                    f"candidate meets every enforcing SLO (upper bounds < 0); the objective is not required")
            self._pass_judged_step(now, f.cand_ucb, cond, 0.0)
            return
        if decision == "abort":
            self._stop(now, "judge_abort", f"judge: {worst.metric} worse than baseline, lower bound {worst.lcb:.4g} "
                       f"> abort_margin {r.abort_margin} at alpha {alpha:.3g}", f"judge:{worst.metric}",
                       worst.lcb, r.abort_margin, regression=True, quarantine=True, status="regression")
        elif decision == "promote":
            e.rules.append("objective")
            cond = f"upper bound {worst.ucb:.4g} < effect_margin {r.effect_margin} on every enforcing metric"
            self._pass_judged_step(now, worst.ucb, cond, r.effect_margin)

    def _pass_judged_step(self, now: int, measured, cond: str, threshold) -> None:
        e, r = self.exp, self.g.rollout
        if self.mstate is S.SWITCHBACK:
            self._fire(now, "switchback_passed", measured=measured, condition=cond, threshold=threshold)
            self._enter_phase(now)
            return
        nxt = e.step + 1
        if r.canary_steps[nxt] >= 1.0:
            self._fire(now, "last_step_passed", measured=measured, condition=cond, threshold=threshold)
        else:
            self._fire(now, "step_passed", measured=measured, condition=cond, threshold=threshold)
        e.step = nxt
        self._enter_phase(now)

    # ----------------------------------------------------------------- switchback
    def _on_switchback(self, now: int, usable, roles, acked: bool) -> None:
        e = self.exp
        side = "cand" if self._sb_is_candidate(e.seg) else "base"
        for s in usable:
            if s.slot not in roles:
                continue
            acc = e.cand if side == "cand" else e.base
            for m, v in self._metric_values(s).items():
                acc.setdefault(m, BlockSeries()).add(v, s.n_records)
            if side == "cand":
                e.cand_samples += s.n_records
        if acked and now - (self._acked_ns + self.settle_ns) >= self.block_ns:
            acc = e.cand if side == "cand" else e.base
            means = {m: s.mean() for m, s in acc.items()}
            n = acc.get("objective", BlockSeries()).n
            e.cand, e.base = {}, {}
            if e.seg % 2 == 0:
                e.pending, e.pending_n = means, n
            else:
                first_c = self._sb_is_candidate(e.seg - 1)
                cm, bm = (e.pending, means) if first_c else (means, e.pending)
                cn, bn = (e.pending_n, n) if first_c else (n, e.pending_n)
                e.pending = None
                self._record_pair(now, cm, bm, cn, bn, "switchback", e.seg // 2)
                if self.exp is not e or self.mstate is not S.SWITCHBACK:
                    return
            e.seg += 1
            self._enter_phase(now, new_segment=True)
            return
        if now - e.phase_start >= 2 * self.deadline_ns:
            self._stop(now, "deadline", "switchback: no promote verdict within 2 x step_deadline_s; missing data never passes",
                       "deadline", e.last_verdict.decision if e.last_verdict else "no verdict", "promote",
                       regression=False, quarantine=False, status="insufficient_data")

    # ----------------------------------------------------------------- commands
    def command(self, now_ns: int, cmd: Command) -> StepOutput:
        """freeze | thaw | rollback | snapback | reset_safe_mode | enter_safe_mode | cancel."""
        self._ensure_started(now_ns)
        now, st = now_ns, self.state
        name = cmd.name

        def note(ok: bool, msg: str) -> None:
            self._emit(ev.CommandEvent, now, name=name, source=cmd.source, accepted=ok, message=msg)

        if name == "freeze":
            note(True, "kill switch engaged: baseline only, proposals refused until thaw")
            if self.exp is not None:
                self._stop(now, "kill", f"kill switch by {cmd.source}", "kill_switch", "engaged", None,
                           regression=False, quarantine=False, status="aborted")
                self._emit(ev.KillSwitch, now, engaged=True, source=cmd.source)
            else:
                if not st.kill_switch:
                    self._emit(ev.KillSwitch, now, engaged=True, source=cmd.source)
                self._fire(now, "kill", measured="engaged", condition=f"kill switch by {cmd.source}")
                if not self._is_baseline_only(st.live):
                    self._publish_baseline(now, "kill switch")
        elif name == "thaw":
            if not st.kill_switch:
                note(False, "kill switch is not engaged; nothing to thaw")
            else:
                note(True, "kill switch released")
                self._emit(ev.KillSwitch, now, engaged=False, source=cmd.source)
                if self.mstate is S.FROZEN:
                    self._fire(now, "thaw_to_safe_mode" if st.safe_mode else "thaw", measured="released",
                               condition=f"thaw by {cmd.source}")
        elif name in ("rollback", "snapback"):
            if self.exp is not None:
                note(True, f"{name}: active experiment stopped, baseline only")
                self._stop(now, name, f"{name} by {cmd.source}", name, None, None, regression=False,
                           quarantine=False, status="aborted")
            elif name == "rollback":
                note(False, "no active experiment to roll back")
            else:
                note(True, "snapback: baseline republished")
                self._fire(now, "snapback", condition=f"snapback by {cmd.source}")
                self._publish_baseline(now, "snapback")
        elif name == "cancel":
            # Tier 2 withdraws its own experiment (the conditions it was measured for are gone):
            # baseline only at once, no quarantine, no regression, no cooldown.
            if self.exp is not None:
                note(True, f"cancel: active experiment stopped ({cmd.reason or 'withdrawn'}), baseline only")
                self._stop(now, "cancel", f"cancelled by {cmd.source}: {cmd.reason or 'withdrawn'}", "cancel", None, None,
                           regression=False, quarantine=False, status="aborted")
            else:
                note(False, "no active experiment to cancel")
        elif name == "reset_safe_mode":
            if not st.safe_mode:
                note(False, "safe mode is not active")
            else:
                note(True, "safe mode reset")
                self._emit(ev.SafeModeExited, now, duration_us=(now - st.safe_mode_since_ns) // 1000,
                           exit_reason=f"manual reset by {cmd.source}")
                if self.mstate is S.SAFE_MODE:
                    self._fire(now, "reset_safe_mode", condition=f"reset by {cmd.source}")
        elif name == "enter_safe_mode":
            note(True, f"safe mode requested: {cmd.reason}")
            reason = cmd.reason or f"requested by {cmd.source}"
            if self.exp is not None:
                self._stop(now, "enter_safe_mode", reason, "safe_mode", None, None, regression=False,
                           quarantine=False, status="aborted")
            elif self.mstate is not S.FROZEN:
                self._fire(now, "enter_safe_mode", condition=reason)
            self._enter_safe_mode(now, reason)
            if not self._is_baseline_only(self.state.live):
                self._publish_baseline(now, "safe mode")
        return self._merge_keep(self._take())

    def _is_baseline_only(self, snap: Optional[SnapshotSpec]) -> bool:
        return (snap is not None and len(snap.slots) == 1 and snap.slots[0].knobs == self.state.baseline
                and snap.slots[0].variant == self.state.baseline_variant and snap.global_knobs == self.state.baseline)
