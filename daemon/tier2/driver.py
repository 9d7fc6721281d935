"""The Tier-2 driver: turns optimizer asks and bandit picks into Tier-1 Proposals, and Tier-1
Evaluations back into tell()/update(). Pure and deterministic: no clock, no I/O; the runtime
passes `now_ns`, the current baseline and every Evaluation.

How continuous tuning meets Tier 1's rules (every arm within max_delta of the baseline):
an *epoch* is a trust-region run of the optimizer started AT the baseline, with perturbation
and step sizes derived from max_delta. Each round's points run as probe arms beside slot 0 at
the same time (their objective is paired with the baseline over the same blocks, so load drift
cancels: y = arm - baseline). Every `rollout_every` rounds the recommendation is rolled out
through the canary steps; whatever the outcome, the next epoch starts at the (possibly new)
baseline with a seed derived from (seed, epoch). A probe arm that beat the baseline clearly
(paired, by more than GREEDY_SE standard errors and GREEDY_REL of the baseline) is rolled out
at once instead: it has already been measured beside the baseline, so waiting for the
optimizer's iterate only delays a move the data supports (this is what lets the tuner follow a
scenario change within seconds). Probes sit at the full max delta (the largest move Tier 1
allows), so a winning arm is the largest step the rules permit in a descent direction. Variants: every `explore_every` rounds the
eligible variants play a tournament as probe arms; a discounted bandit keeps their relative
reward and SLA feasibility; a new leader is rolled out.

Conditions (`tuning.context`: telemetry fields such as the offered load, as slot-0 means passed
in by the runtime) split the world into *regimes*: per field, a band of width CONTEXT_BAND in
log2 units, with hysteresis and persistence (`regimes.py`). Entering a regime, the driver proposes
(once, retried a bounded number of times if refused) what it knows is good there: the
configuration it last promoted in that regime, else the approved catalog preset whose `context`
point is nearest (log distance). Tier 1 canaries and judges that rollout like any other (or, with
`rollout.relief`, bakes it at once while the baseline breaches an SLO). The variant bandit
restarts on entering a regime: its rewards, relative to the old baseline under the old
conditions, say nothing about the new ones; what was learned is kept as the regime's memory.
"""
from __future__ import annotations

import math
import zlib
from typing import Optional

import numpy as np

from daemon.tier1.config import ELIGIBLE_STATES, Guardrails, nearest_entry, resolve_knob, risen_beyond
from daemon.tier1.model import Arm, Evaluation, Proposal, Verdict
from shm_layout.decl import Declaration
from shm_layout.spec import MAX_SLOTS

from . import make_bandit, make_optimizer
from .core import NoChange
from .regimes import Regimes


GREEDY_SE = 2.0      # a probe arm must beat the baseline by this many standard errors...
GREEDY_REL = 0.02    # ...and by this fraction of |baseline objective| to be rolled out at once
GREEDY_REL_NO_SE = 0.05   # probes report no standard error: then a larger relative margin
MAX_REJECTS = 3      # consecutive rejected probes (quarantine, rate) before a fresh epoch
BACKOFF_CALLS = 5    # after a refusal, stay quiet for this many calls (cycles): no refusal storms
BLOCK_ROUNDS = 3     # a breaching or quarantined variant sits out this many probe rounds
RETRY_RULES = ("min_interval", "rate_limit", "one_experiment_per_scope", "cooldown")   # transient: retry the winner
REGIME_RETRY_CALLS = 50   # a regime rollout Tier 1 refused (quarantine, dead band, cooldown) is retried after
REGIME_ATTEMPTS = 3       # this many calls, at most this many times per regime entry
REGIME_TRANSIENT_TRIES = 100   # ...and refusals that only say "not now" (RETRY_RULES) this many times
PRESET_SCALE = 0.25       # after a regime rollout, probe at this fraction of max_delta: refine, do not leap


class TuningDriver:
    """One per target. Call `next_proposal` when Tier 1 is idle; feed it every Evaluation and
    every rejected Verdict. `log` records (round, kind, inputs) for the audit trail."""

    def __init__(self, g: Guardrails, decl: Declaration):
        t = g.tuning
        self.g, self.decl, self.cfg = g, decl, t
        names = list(t.knobs) or [k.name for k in decl.knobs if k.name in g.knobs]
        # Integer knobs are tuned when listed explicitly (points are rounded to whole numbers);
        # by default only the continuous ones.
        self.names = names if t.knobs else ([n for n in names if not decl.knobs[decl.knob_index(n)].integer] or names)
        self.integer = np.array([decl.knobs[decl.knob_index(n)].integer for n in self.names])
        self.rk = [resolve_knob(g, n, decl.knobs[decl.knob_index(n)].min, decl.knobs[decl.knob_index(n)].max)
                   for n in self.names]
        self.bounds = np.array([[r.lo, r.hi] for r in self.rk], dtype=float)
        # max_delta as a ratio of the optimizer's (narrowed) range, per knob; Tier 1 measures
        # normalised deltas against the declared range.
        md = []
        for r, n in zip(self.rk, self.names):
            k = decl.knobs[decl.knob_index(n)]
            decl_range = (k.max - k.min) or 1.0
            step = r.max_delta * decl_range if r.delta_mode == "normalised" else r.max_delta
            md.append(step)
        self.max_delta = np.array(md)          # user units
        self.epoch = 0
        self.round = 0
        self.seq = 0
        self.pending: Optional[Proposal] = None
        self.pending_kind = ""
        self.opt = None
        self.a_gain: Optional[float] = None
        self.winner: Optional[Arm] = None     # a probe arm that clearly beat the baseline
        self.rejects = 0
        self.quiet = 0                        # calls left to stay silent after a refusal
        self.scale = 1.0                      # probe size, fraction of max_delta (trust region)
        self.blocked: dict[str, int] = {}     # variant -> round until which it sits out tournaments
        self.variants = self._eligible_variants() if t.variants else []
        self.bandit = self._new_bandit(t.seed * 7919 + 1)
        self.lo = self.bounds[:, 0].tolist()
        self.hi = self.bounds[:, 1].tolist()
        self.md = self.max_delta.tolist()
        self.int_list = self.integer.tolist()
        # Conditions: the regimes tracker, the entry rollout's bookkeeping and, per regime, the
        # configuration last promoted there.
        self.ctx_fields = tuple(t.context)
        self.presets = [c for c in g.catalog.variants if c.state in ELIGIBLE_STATES and c.context
                        and (c.knobs or (c.variant is not None and c.variant in decl.variants))]
        self.regimes = Regimes(self.ctx_fields, persist_s=t.context_persist_s, fast_rise=dict(t.context_fast_rise))
        self.obs_ns = 0                    # now_ns of the last observe() (next_proposal skips a repeat)
        self.pending_regime: Optional[tuple] = None   # the regime a pending proposal was made in
        self.regime_acted = False          # the regime's entry rollout was proposed already
        self.regime_tries = 0              # entry rollouts refused, or rolled back for a breach, in this regime
        self.regime_wait = 0               # calls left before a refused entry rollout is retried
        self.regime_transient = 0          # transient refusals of it so far (RETRY_RULES)
        self.regime_failed: set[str] = set()   # presets rolled back for an SLO breach or a regression in this regime
        self.regime_base: Optional[tuple] = None   # the baseline when the regime was entered
        self.memory: dict[tuple, tuple] = {}      # regime -> (knobs tuple, variant) last promoted there
        self.hold_variants = False         # no variant exploration in this regime (entered by a fast-rise field rising)
        self.conditions: dict[str, float] = {}   # the last context observed
        # Warm the first-call paths now, at attach, not inside the first decision: the first
        # optimizer imports numpy.random (~25 ms). The throwaway changes no state.
        if self.names:
            self._start_epoch([float(decl.knobs[decl.knob_index(n)].initial) for n in self.names])
            self.opt.ask()
            self.opt = None

    # ---- helpers ------------------------------------------------------------------------

    def _new_bandit(self, seed: int):
        if len(self.variants) < 2:
            return None
        return make_bandit(self.cfg.bandit, len(self.variants), seed=seed, discount=0.95)

    def _eligible_variants(self) -> list[str]:
        eligible = {c.variant for c in self.g.catalog.variants if c.state in ELIGIBLE_STATES}
        return [v for v in self.decl.variants if v in eligible]

    def _new_id(self, kind: str) -> str:
        self.seq += 1
        return f"t2-{self.cfg.seed}-{self.epoch}-{self.seq}-{kind}"

    def _start_epoch(self, base: np.ndarray) -> None:
        span = self.bounds[:, 1] - self.bounds[:, 0]
        span = np.where(span > 0, span, 1.0)
        md_norm = float(np.min(self.max_delta / span))
        opts = dict(self.cfg.options)
        opts.setdefault("x0", [float(v) for v in base])
        if self.cfg.optimizer == "spsa":
            # perturbation half of max_delta, steps small enough that rollout_every rounds of
            # drift plus a perturbation stay within max_delta of the baseline.
            opts.setdefault("c", max(1e-4, min(0.49, self.scale * md_norm)))
            opts.setdefault("max_step", max(1e-4, 0.5 * md_norm / self.cfg.rollout_every))
            opts.setdefault("tracking", True)
            if self.a_gain is not None:
                opts.setdefault("a", self.a_gain)
        self.opt = make_optimizer(self.cfg.optimizer, self.bounds,
                                  seed=self.cfg.seed * 100003 + self.epoch * 7 + self.rejects, **opts)
        self.round = 0

    def _clip(self, x, base: list[float]) -> list[float]:
        """Within max_delta of the baseline and inside the bounds; integer knobs rounded. Plain
        floats: at a handful of knobs one numpy call costs more than the whole loop."""
        out = []
        for v, b, md, lo, hi, integer in zip(x, base, self.md, self.lo, self.hi, self.int_list):
            v = float(v)
            v = b - md if v < b - md else (b + md if v > b + md else v)
            v = lo if v < lo else (hi if v > hi else v)
            out.append(float(round(v)) if integer else v)
        return out

    def _baseline_vec(self, baseline: dict[str, float]) -> list[float]:
        return [float(baseline[n]) for n in self.names]

    # ---- decisions ----------------------------------------------------------------------

    def regime_due(self) -> bool:
        """A regime's entry rollout is still to be proposed (the runtime may then ask with
        regime_only=True while Tier 1 cools down: relief does not wait for the cooldown)."""
        return self.pending is None and self.regime is not None and not self.regime_acted

    def next_proposal(self, baseline: dict[str, float], baseline_variant: str,
                      context: Optional[dict[str, float]] = None, now_ns: int = 0,
                      regime_only: bool = False) -> Optional[Proposal]:
        """The next thing to try, or None (something is pending or tuning is off). `context`:
        the current means of the `tuning.context` fields on slot 0 (missing: conditions unknown)."""
        if not self.cfg.enabled or self.pending is not None:
            return None
        if self.blocked:
            for v in [v for v, r in self.blocked.items() if r <= self.round]:
                del self.blocked[v]
        base = self._baseline_vec(baseline)
        if self.ctx_fields and context and not (now_ns and now_ns == self.obs_ns):
            self._observe(context, baseline, baseline_variant, now_ns)
        if self.regime_wait > 0:
            self.regime_wait -= 1
            if self.regime_wait == 0:
                self.regime_acted = False
        if self.quiet > 0:
            self.quiet -= 1
            return None
        if self.regime is not None and not self.regime_acted:
            arm, why = self._regime_arm(baseline, baseline_variant, context or {})
            if regime_only and (arm is None or arm.preset is None):
                return None      # only an approved preset may start during a cooldown: wait for idle
            self.regime_acted = True
            if arm is not None:
                self.epoch += 1
                self.opt = None
                return self._set_pending(Proposal(self._new_id("regime"), "rollout", (arm,), source="context",
                                                  seed=self.cfg.seed, note=f"regime {list(self.regime)}: {why}"),
                                         "rollout")
        if regime_only:
            return None
        if self.opt is None:
            self._start_epoch(base)
        if self.winner is not None:
            arm, self.winner = self.winner, None
            self.epoch += 1
            self.opt = None
            src = f"bandit:{self.cfg.bandit}" if arm.variant else self.cfg.optimizer
            return self._set_pending(Proposal(self._new_id("rollout"), "rollout", (arm,), source=src,
                                              seed=self.cfg.seed, note=f"epoch {self.epoch - 1} probe winner"),
                                     "rollout")
        if self.bandit is not None:
            p = self._variant_step(baseline_variant)
            if p is not None:
                return self._set_pending(p, p.kind if p.kind == "rollout" else "variant_probe")
        if self.round >= self.cfg.rollout_every:
            x = self._clip(self._current(), base)
            self.epoch += 1
            self.opt = None
            hyst = self.g.anti_thrashing.hysteresis
            if any(abs(a - b) > hyst * m for a, b, m in zip(x, base, self.md)):
                arm = Arm(knobs=dict(zip(self.names, x)))
                return self._set_pending(Proposal(self._new_id("rollout"), "rollout", (arm,), source=self.cfg.optimizer,
                                                  seed=self.cfg.seed, note=f"epoch {self.epoch - 1} recommendation"), "rollout")
            self._start_epoch(base)
        X = self.opt.ask()
        if isinstance(X, NoChange):
            return None
        names = self.names
        arms = tuple(Arm(knobs=dict(zip(names, self._clip(x, base)))) for x in X.tolist()[: MAX_SLOTS - 1])
        if len(arms) < len(X):
            self.opt.reject()  # more points than free slots: this optimizer cannot run here as configured
            return None
        return self._set_pending(Proposal(self._new_id("probe"), "probe", arms, source=self.cfg.optimizer,
                                          seed=self.cfg.seed, note=f"epoch {self.epoch} round {self.round}"), "probe")

    # ---- conditions -----------------------------------------------------------------------

    def observe(self, context: Optional[dict[str, float]], baseline: dict[str, float], variant: str,
                now_ns: int = 0) -> bool:
        """Called by the runtime every cycle (whatever Tier 1 is doing, cooldowns included, so a
        regime's persistence time runs from the change itself). Returns True when one of this
        driver's experiments, measured for conditions that are gone, should be cancelled so the
        new regime's rollout can go first; that includes a regime rollout once the conditions it
        was for are gone (a step entered half-way: the preset for the rest of it goes next)."""
        if not self.ctx_fields or not context:
            return False
        self._observe(context, baseline, variant, now_ns)
        self.obs_ns = now_ns
        p = self.pending
        if p is None or self.regime == self.pending_regime:
            return False
        if p.source == "context" and not self.regime_acted:
            arm, _ = self._regime_arm(baseline, variant, context)
            if arm is not None and arm == p.arms[0]:
                # the new regime's choice is the rollout already running: it serves this one too
                self.pending_regime, self.regime_acted = self.regime, True
                return False
        return True

    @property
    def regime(self) -> Optional[tuple]:
        return self.regimes.regime

    def _observe(self, context: dict[str, float], baseline: dict[str, float], variant: str, now_ns: int = 0) -> None:
        self.conditions = context
        r = self.regimes.regime
        what = self.regimes.update(context, now_ns)
        if what in ("unknown", "pending"):
            return
        cur = (tuple(baseline[n] for n in self.names), variant)
        if what == "stay":
            if cur != self.regime_base:
                self.memory[r] = cur     # a promotion happened in this regime: remember it
            return
        self.regime_acted, self.regime_base = False, cur
        self.regime_tries, self.regime_wait, self.regime_transient = 0, 0, 0
        self.regime_failed = set()
        # SLA first under rising load: entering by a rise in a `context_fast_rise` field (the
        # operator's word that such a rise threatens the SLA) holds variant exploration for the
        # regime's stay. The approved preset for these conditions goes first; a tournament of the
        # other variants at 10 % each would run costlier ones where they cannot keep up, and
        # their queues are the service's p99. Knob probes go on, narrow (PRESET_SCALE).
        self.hold_variants = r is not None and any(
            nb > ob for nb, ob, k in zip(self.regime, r, self.regimes.fast_rise) if k != math.inf)
        # the variants' relative rewards describe the old conditions: a fresh bandit (a local
        # restart), seeded from the regime so the run stays deterministic
        self.bandit = self._new_bandit(self.cfg.seed * 7919 + (zlib.crc32(repr(self.regime).encode()) & 0xFFFF))
        self.blocked = {}

    def _regime_arm(self, baseline: dict[str, float], variant: str, context: dict[str, float]):
        """What to roll out on entering a regime: what was last promoted here, else the nearest
        approved preset; None when the baseline already is that."""
        mem = self.memory.get(self.regime)
        if mem is not None:
            knobs, v = mem
            x = self._clip(knobs, self._baseline_vec(baseline))   # not an approved bundle: max_delta applies
            arm = Arm(knobs={n: a for n, a, b in zip(self.names, x, (baseline[n] for n in self.names)) if a != b},
                      variant=v if v and v != variant else None)
            if not arm.knobs and arm.variant is None:
                return None, ""
            return arm, "what was promoted last time in these conditions"
        entries = [c for c in self.presets if c.id not in self.regime_failed] if self.regime_failed else self.presets
        best, dist = nearest_entry(entries, self.ctx_fields, context)
        if best is None:
            return None, ""
        knobs = {k: float(v) for k, v in best.knobs.items()}
        same_knobs = all(abs(baseline.get(k, math.nan) - v) <= 1e-12 for k, v in knobs.items())
        if same_knobs and (best.variant is None or best.variant == variant):
            return None, ""
        arm = Arm(knobs=knobs, variant=best.variant, preset=best.id)
        return arm, f"nearest approved preset {best.id} (distance {dist:.3g} log2 units)"

    def _variant_step(self, baseline_variant: str) -> Optional[Proposal]:
        means = self.bandit.means()
        if baseline_variant in self.variants:
            bi = self.variants.index(baseline_variant)
            feas = getattr(self.bandit, "feasible_prob", None)
            ok = feas() if feas is not None else np.ones(len(self.variants))
            cand = [i for i in range(len(self.variants)) if i != bi and not math.isnan(means[i]) and ok[i] >= 0.5
                    and self.bandit.stats.n[i] >= 2]
            if cand:
                best = max(cand, key=lambda i: means[i])
                if means[best] > 0.0:   # rewards are relative to the baseline variant
                    return Proposal(self._new_id("variant"), "rollout", (Arm(variant=self.variants[best]),),
                                    source=f"bandit:{self.cfg.bandit}", seed=self.cfg.seed,
                                    note=f"relative reward {means[best]:.4g}")
        if self.round % self.cfg.explore_every != 0 or self.pending_kind == "variant_probe" or self.hold_variants:
            return None
        others = [v for v in self.variants if v != baseline_variant and v not in self.blocked
                  and not self._beyond_approval(v)][: MAX_SLOTS - 1]
        if not others:
            return None
        return Proposal(self._new_id("tournament"), "probe", tuple(Arm(variant=v) for v in others),
                        source=f"bandit:{self.cfg.bandit}", seed=self.cfg.seed, note="variant tournament")

    def _beyond_approval(self, variant: str) -> bool:
        """The conditions are at least the fast-rise factor beyond every approved context of
        `variant` (tuning.context_fast_rise): it was found best, and approved, for lighter
        conditions, and a tournament there runs it at 10 % of the traffic where it cannot keep up
        (serve: fp32, approved at 0.2 fp32 capacities, under the medium phase's 0.5 and its bursts).
        A variant with no approved context is explored anywhere."""
        fr, now = self.cfg.context_fast_rise, self.conditions
        scopes = [c.context for c in self.presets if c.variant == variant and not c.knobs]
        if not fr or not now or not scopes:
            return False
        return all(risen_beyond(ctx, now, fr) is not None for ctx in scopes)

    def _current(self) -> np.ndarray:
        """The point to roll out: the optimizer's current iterate when it has one (a short
        trust-region epoch ends on its last step; a tail average would lag), else recommend()."""
        theta = getattr(self.opt, "theta", None)
        if theta is not None and hasattr(self.opt, "to_user"):
            return np.asarray(self.opt.to_user(np.asarray(theta)), dtype=float)
        return np.asarray(self.opt.recommend(), dtype=float)

    def _set_pending(self, p: Proposal, kind: str) -> Proposal:
        self.pending, self.pending_kind, self.pending_regime = p, kind, self.regime
        return p

    # ---- feedback -----------------------------------------------------------------------

    def on_verdict(self, v: Verdict) -> None:
        """A rejected proposal: the optimizer's round does not count (k not advanced)."""
        if self.pending is None or v.proposal_id != self.pending.proposal_id or v.accepted:
            return
        self.quiet = BACKOFF_CALLS
        if v.rule == "hysteresis":
            # the move was inside Tier 1's dead band (a small reversal): probe wider, new epoch
            self.scale = min(1.0, 2.0 * self.scale)
            self.epoch += 1
            self.opt = None
        if v.rule == "quarantine" and isinstance(v.value, str) and v.value in self.variants:
            self.blocked[v.value] = self.round + BLOCK_ROUNDS   # Tier 1 quarantined it: tournament without it
        if self.pending_kind == "rollout" and self.pending.source == "context":
            # conditions still want it: try again once the refusal may have cleared, a bounded
            # number of times. A transient refusal (a cooldown, a knob's min interval) says "not
            # now", not "no": it is retried at the next call and counts against a wider bound (a
            # rollback just before a phase change held one run's surge preset for three calls
            # inside its cooldown, and the regime never got it)
            transient = v.rule in RETRY_RULES
            if transient:
                self.regime_transient += 1
            else:
                self.regime_tries += 1
            if self.regime_tries < REGIME_ATTEMPTS and self.regime_transient < REGIME_TRANSIENT_TRIES:
                self.regime_wait = 1 if transient else REGIME_RETRY_CALLS
        if self.pending_kind == "rollout" and v.rule in RETRY_RULES and "winner" in self.pending.note:
            self.winner = self.pending.arms[0]      # a transient refusal: the measured winner stays wanted
        if self.pending_kind == "probe" and self.opt is not None:
            self.opt.reject()
            self.rejects += 1
            if self.rejects >= MAX_REJECTS:
                # the optimizer keeps asking for points Tier 1 refuses (a quarantined region
                # next to the baseline): a fresh epoch with another seed instead of a refusal loop
                self.epoch += 1
                self.opt = None
        self.pending, self.pending_kind = None, ""

    def on_evaluations(self, evals: list[Evaluation]) -> None:
        if self.pending is None:
            return
        mine = sorted((e for e in evals if e.proposal_id == self.pending.proposal_id), key=lambda e: e.arm)
        if not mine:
            return
        sign = 1.0 if self.g.objective.direction == "minimize" else -1.0
        kind, p = self.pending_kind, self.pending
        self.pending, self.pending_kind = None, ""
        if kind == "probe" and self.opt is not None:
            y = []
            if any(e.status == "slo_breach" for e in mine):
                # a probe broke an SLO: the region next to the baseline is steep; probe closer
                self.scale = max(0.25, 0.5 * self.scale)
            else:
                self.scale = min(1.0, 1.25 * self.scale)   # a clean round: widen again, slowly
            for e in mine:
                if e.status == "slo_breach":
                    scale = abs(e.baseline_objective) if e.baseline_objective else 1.0
                    y.append(scale)            # as bad as doubling the objective: move away
                elif (e.status in ("ok", "regression", "insufficient_data") and e.objective is not None
                      and e.baseline_objective is not None):
                    # a short window is still a measurement (an arm that blows up reports little
                    # and badly); only an arm with no value at all voids the round
                    y.append(sign * (e.objective - e.baseline_objective))
                else:
                    y = None
                    break
            if y is None or len(y) != len(p.arms):
                self.opt.reject()
            else:
                self.rejects = 0
                self.opt.tell(np.array(y))
                self.round += 1
                self._greedy(p, mine, y)
                a = getattr(self.opt, "a", None)
                if isinstance(a, float):
                    self.a_gain = a
        elif kind == "variant_probe" and self.bandit is not None:
            for e in mine:
                v = p.arms[e.arm].variant
                if v not in self.variants:
                    continue
                i = self.variants.index(v)
                if e.status == "slo_breach":
                    self.bandit.update(i, -1.0, feasible=False)
                    # one breaching arm aborts the whole tournament: leave it out so the others
                    # can be measured. With conditions (tuning.context), for the rest of this
                    # regime: SLA first, a variant that broke the SLA here is not tried again until
                    # the conditions change (each try costs 10 % of the traffic its breach);
                    # without, for a few rounds (the load may change; it comes back later)
                    self.blocked[v] = math.inf if self.ctx_fields else self.round + BLOCK_ROUNDS
                elif e.objective is not None and e.baseline_objective is not None:
                    rel = -sign * (e.objective - e.baseline_objective) / (abs(e.baseline_objective) or 1.0)
                    self.bandit.update(i, rel, feasible=e.status != "regression")
            # a variant that beat the baseline clearly beside it (e.g. the baseline's own variant
            # is overloaded) is rolled out at once, like a winning knob probe
            ok = [e for e in mine if e.status == "ok" and e.objective is not None and e.baseline_objective is not None
                  and p.arms[e.arm].variant in self.variants]
            if ok and all(e.status != "slo_breach" for e in mine):
                best = max(ok, key=lambda e: -sign * (e.objective - e.baseline_objective))
                gain = -sign * (best.objective - best.baseline_objective)
                if gain > GREEDY_REL_NO_SE * (abs(best.baseline_objective) or 1.0):
                    self.winner = p.arms[best.arm]
            self.round += 1
        elif kind == "rollout":
            if p.source == "context" and p.arms[0].preset is not None \
                    and any(e.status in ("slo_breach", "regression") for e in mine):
                # The regime's preset failed here (entered half-way up a load step, the preset
                # nearest the load measured then cannot carry the rest of it): choose again without
                # it, after the cooldown, within the regime's attempts. Before, the regime counted
                # as acted: the knob tuner then probed an overloaded baseline until five regressions
                # put Tier 1 in safe mode (serve, 1 short demo in ~10).
                self.regime_failed.add(p.arms[0].preset)
                self.regime_tries += 1
                if self.regime_tries < REGIME_ATTEMPTS:
                    self.regime_wait = 1   # as a refusal's retry (on_verdict): act again at the next call
            self._after_rollout(p)

    def _greedy(self, p: Proposal, mine: list[Evaluation], y: list[float]) -> None:
        """Remember the best probe arm if it beat the baseline clearly (oriented: y < 0 is better)."""
        i = int(np.argmin(y))
        e = mine[i]
        if e.status != "ok" or e.baseline_objective is None or y[i] >= 0:
            return
        scale = abs(e.baseline_objective)
        if e.stderr is not None and math.isfinite(e.stderr):
            clear = -y[i] > GREEDY_SE * e.stderr and -y[i] > GREEDY_REL * scale
        else:
            clear = -y[i] > GREEDY_REL_NO_SE * scale
        if clear:
            self.winner = p.arms[e.arm]

    def on_experiment_end(self) -> None:
        """Tier 1 has no live experiment any more: whatever was pending is over (a promoted
        rollout, an abort without evaluations, a kill switch)."""
        if self.pending is None:
            return
        kind, p = self.pending_kind, self.pending
        self.pending, self.pending_kind = None, ""
        if kind == "probe" and self.opt is not None:
            self.opt.reject()
        elif kind == "rollout":
            self._after_rollout(p)

    def _after_rollout(self, p: Proposal) -> None:
        # the baseline moved: probe wide again; after a regime rollout (a preset or a memory,
        # already good for these conditions) probe narrow, to refine rather than leap
        self.scale = PRESET_SCALE if p.source == "context" else min(1.0, 2.0 * self.scale)
        # Relative variant rewards were measured against the old baseline; start afresh.
        if any(a.variant for a in p.arms) and self.bandit is not None:
            self.bandit = self._new_bandit(self.cfg.seed * 7919 + self.seq)
        self.opt = None   # next epoch starts at the (possibly new) baseline
