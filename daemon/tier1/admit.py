"""Tier 1's admission fast path: a knob proposal decided in C on dense arrays.

Why: the loop sleeps between cycles, and after a 10 ms sleep this VM runs the same Python
3-5x slower than warm (measured on `Executor.propose` of an 8-knob probe: 31 us p50 warm,
109 us after a sleep), because every bytecode, dict and object it touches is a cold cache line.
The rules of a knob proposal are a few comparisons per value; in C on a plan of dense arrays
they touch a few hundred bytes.

How it stays exact: the executor compiles a `Plan` from its state while it is idle, when the
facts the plan reads changed (after the step or the proposal that changed them, never on a
proposal's path). `admit` hands a knob-only proposal (no variant, no preset, float values) to
`arqd_admit` (native/src/arqd_admit.c), which accepts only what `Executor._validate` accepts from
that state at a time not before the plan's, and lays the snapshot out as `Executor._layout` does.
The plan is conservative where the state moves with time (a budget spend only shrinks as its
window slides; a rate limit clears at a known time); whatever it cannot decide returns None and
the Python rules decide, so a refusal always names the rule, value and limit they name.
tests/test_admit.py proves the decisions equal on random and boundary streams; at run time
`Executor.complete` checks what went live against the bounds and the Python layout.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import TYPE_CHECKING, Optional

from shm_layout._shm import ffi, lib

from .rollout import State

if TYPE_CHECKING:
    from .executor import Executor
    from .model import Proposal

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
NS = 1_000_000_000
WIDTH = 16              # arqd_admit_plan's arrays (ARQ_MAX_KNOBS)
_FLOAT = {float}
_ORDERS_MAX = 64        # name orders remembered per plan (Tier 2 uses one or two)
QUARANTINE_MAX = 8      # arqd_admit_plan.q_*

# arqd_admit's reason codes (the ARQD_ADMIT_* enum in arqd_admit.c), named for the counters
REASONS = {1: "stale", 2: "arms", 3: "knob", 4: "value", 5: "no_change", 6: "global", 7: "limits",
           8: "quarantine", 9: "shadow"}


class Plan:
    """The C plan and the knob-name orders it has seen (names -> declaration indices)."""
    __slots__ = ("c", "key", "t_ns", "kidx", "orders")

    def __init__(self, c, key: tuple, t_ns: int, kidx: dict[str, int]) -> None:
        self.c = c
        self.key = key
        self.t_ns = t_ns      # = c.t_ns, read every idle cycle without a cffi access
        self.kidx = kidx
        self.orders: dict[tuple, Optional[list[int]]] = {}

    def order(self, names: tuple) -> Optional[list[int]]:
        """Declaration indices of `names` (None if one is not allowlisted), remembered."""
        ix = self.orders.get(names, False)
        if ix is False:
            got = [self.kidx.get(n) for n in names]
            ix = None if None in got else got
            if len(self.orders) >= _ORDERS_MAX:
                self.orders.clear()
            self.orders[names] = ix
        return ix


def plan_key(ex: "Executor") -> tuple:
    """What a plan depends on besides time: the state's facts (every event that may change one
    bumps `ExecState.facts`), the machine state, the config and the experiment (None).
    Executor.propose compares the same tuple inline."""
    return ex.state.facts, ex.mstate, ex.g, ex.exp


class Template:
    """The part of a plan that only the config decides, made once per config: the C struct
    with the rules filled in, and per allowlisted knob what the state part reads."""
    __slots__ = ("c", "kidx", "rows", "budget_ns", "window_ns", "max_flips", "bounds", "fixed")

    def __init__(self, ex: "Executor") -> None:
        g, decl = ex.g, ex.decl
        r, at = g.rollout, g.anti_thrashing
        c = self.c = ffi.new("arqd_admit_plan *")
        c.n_knobs = len(decl.knobs)
        c.shadow_rollout = r.shadow == "on"
        c.probe_weight = r.probe_weight
        c.rollout_weight = r.canary_steps[0]
        c.budget_limit = ex._budget_limit
        # the executor's per-allowlisted-knob rows (index, name, range, min interval, rate), with
        # the rate as K: changes allowed within 1 s (-1: none at all, None: no limit)
        self.rows = [(i, name, None if math.isinf(rate) else math.floor(rate) - 1)
                     for i, name, _rng, _iv, rate in ex._limit_rows]
        self.kidx = {name: i for i, name, _k in self.rows}
        # what a published candidate must satisfy whatever the rules say (Executor._staged_pending):
        # (index, lo, hi) of the knobs a fast proposal may move, the indices of the others
        self.bounds: list[tuple[int, float, float]] = []
        self.fixed: list[int] = []
        for i, k in enumerate(decl.knobs[:WIDTH]):
            c.rng[i] = ex.ranges[i]
            c.kmin[i] = k.min
            c.integer[i] = k.integer
            c.global_[i] = k.is_global
            c.last_t[i] = INT64_MIN
            c.rate_ns[i] = INT64_MIN
            rk = ex.rk[i]
            if rk is None or k.is_global:
                self.fixed.append(i)
            else:
                self.bounds.append((i, rk.lo, rk.hi))
            if rk is None:
                continue
            c.allowed[i] = 1
            c.lo[i], c.hi[i] = rk.lo, rk.hi
            c.absolute[i] = rk.delta_mode == "absolute"
            c.max_delta[i] = rk.max_delta
            c.min_iv[i] = rk.min_interval_s
            c.hyst[i] = ex._dead_band(i)
        self.budget_ns = ex._budget_ns
        self.window_ns = int(at.window_s * NS)
        self.max_flips = at.max_flips


def compile_plan(ex: "Executor", now: int, tpl: Template) -> Optional[Plan]:
    """The plan for proposals at `now` or later, or None when no proposal can be decided fast
    (not idle, kill switch, safe mode, too many knobs). Reads the knob logs the state keeps
    (`_KnobLog`), so it costs O(knobs), not O(history)."""
    from .executor import _KnobLog, direction_flips   # the executor imports this module
    st, decl = ex.state, ex.decl
    nk = len(decl.knobs)
    if ex.mstate is not State.IDLE or ex.exp is not None or st.kill_switch or st.safe_mode or nk > WIDTH:
        return None
    c = ffi.new("arqd_admit_plan *")
    c[0] = tpl.c[0]
    c.base_variant = st.baseline_variant
    c.t_ns = now
    c.generation = st.generation + 1
    c.base[0:nk] = st.baseline
    # _validate: a cooldown holds every proposal until it ends; a quarantine entry refuses points
    # near a failed one (checked in C while it lives; more entries than fit: Python decides)
    c.open_ns = st.cooldown_until_ns
    live = [q for q in st.quarantine if q.until_ns > now]
    if len(live) > QUARANTINE_MAX:
        c.open_ns = max(c.open_ns, max(q.until_ns for q in live))
    else:
        c.n_quar = len(live)
        for j, q in enumerate(live):
            c.q_variant[j], c.q_variant_only[j], c.q_until[j], c.q_radius[j] = q.variant, q.variant_only, q.until_ns, q.radius
            c.q_center[j][0:nk] = q.center[:nk]
    budget_cut = now - tpl.budget_ns
    history, thrash, moves = st.history, st.thrash_until, st.moves
    logs = st.__dict__.get("_logs")
    if logs is None:
        logs = st.__dict__["_logs"] = {}
    for i, name, allowed in tpl.rows:
        if thrash:
            c.thrash_ns[i] = thrash.get(name, 0)
        mv = moves.get(name)
        if mv:
            c.last_dir[i] = mv[-1].direction
            # the flips within the window now (a later window holds a suffix: never more);
            # fewer moves than max_flips cannot flip that often, whatever the window holds
            if len(mv) <= tpl.max_flips:
                c.flips_ok[i] = 1
            else:
                c.flips_ok[i] = direction_flips(mv, now - tpl.window_ns) + 1 <= tpl.max_flips
        hist = history.get(name)
        if not hist:
            continue
        lg = logs.get(name)
        if lg is None or not lg.fresh(hist):
            lg = logs[name] = _KnobLog(hist)   # as the rules would make it
        if not lg.clean:
            c.rate_ns[i] = INT64_MAX     # a negative or odd cost: no bound on a later spend
            continue
        times = lg.times
        c.last_t[i] = times[-1]
        # An upper bound on the budget rule's spend at `now` and later: the running sums'
        # approximation plus its error bound (O(1); _KnobLog.spend_approx), or when out of order
        # the exact in-order sum (later windows hold a subset of these nonnegative terms, and
        # an in-order float sum of fewer terms is never larger). arqd_admit adds a 1e-9
        # relative margin for any other summation.
        if lg.ordered:
            approx, err = lg.spend_approx(bisect_right(times, budget_cut))
            c.spent[i] = approx + 2.0 * err
            newest = times
        else:
            c.spent[i] = sum(h.cost for h in hist if h.t_ns > budget_cut)
            newest = sorted(times)
        # rate: refused when (changes within the last second) + 1 > rate, i.e. allowed while at
        # most K = floor(rate) - 1 of them are newer than now - 1 s: from the (K+1)-th newest + 1 s
        if allowed is None:
            continue
        if allowed < 0:
            c.rate_ns[i] = INT64_MAX
        elif len(newest) > allowed:
            c.rate_ns[i] = newest[-(allowed + 1)] + NS
    return Plan(c, plan_key(ex), now, tpl.kidx)


def admit(plan: Plan, now: int, p: "Proposal", salt: int):
    """(the staged snapshot (`arqd_staged *`), "") if the C rules accept `p` at `now`, else
    (None, why) and the Python rules decide. Only knob-only arms with float values are taken."""
    idx: list[int] = []
    vals: list = []
    given: list[int] = []
    for a in p.arms:
        if a.variant is not None or a.preset is not None:
            return None, "variant_or_preset"
        kn = a.knobs
        names = tuple(kn)
        ix = plan.orders.get(names)
        if ix is None:
            ix = plan.order(names)
            if ix is None:
                return None, "knob"
        idx += ix
        vals += kn.values()
        given.append(len(ix))
    if vals and set(map(type, vals)) != _FLOAT:   # ints, bools, numpy scalars: the Python rules
        return None, "type"
    out = ffi.new("arqd_staged *")
    rc = lib.arqd_admit(plan.c, now, p.kind == "rollout", len(given), given, idx, vals, salt, out)
    return (out, "") if rc == 0 else (None, REASONS.get(rc, "unknown"))
