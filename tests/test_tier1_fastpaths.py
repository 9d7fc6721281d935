"""Tier 1's hot-path shortcuts decide exactly as the plain scans they replace.

`Executor.propose` reads the knob history through `_KnobLog` (bisection, running sums with an
error bound), clears every knob's limits at once from the all-knob aggregate (`_AllLog`) when it
can, takes a one-pass prescan for ordinary proposals and looks proposal ids up in a set. `ScanExecutor` below is the executor with each shortcut swapped back for
the original scan; the same streams through both must give byte-identical events."""
from __future__ import annotations

import math
import random

import msgspec

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.tier1 import events as ev
from daemon.tier1.executor import ExecState, Executor, Touch, _KnobLog, _Reject
from daemon.tier1.model import Arm, Command, CycleInput, Proposal

from .test_tier1_properties import DECL, G, Run, action_st

NS = 1_000_000_000
MS = 1_000_000


class ScanExecutor(Executor):
    """The executor without the shortcuts: list membership, the two-pass validation and the
    full scans of every knob's history (the code before the shortcuts, kept verbatim but for the anti-thrashing rule, which now reads
    promoted baseline changes as the executor does), and without the admission fast path."""

    def __init__(self, *a, **kw):
        super().__init__(*a, fast_path=False, **kw)

    def _seen(self, proposal_id):
        return proposal_id in self.state.recent_ids

    def _prescan(self, p):
        return None

    def _limits_clear(self, now, p, arms, is_global, dmax):
        return False   # every proposal scans every knob's history

    def _moved(self, arms):
        """(index, rule, normalised moves of every arm) of each allowlisted knob some arm moves."""
        base = self.state.baseline
        for i, rk in enumerate(self.rk):
            if rk is None:
                continue
            moves = [(a[i] - base[i]) / self.ranges[i] for a in arms]
            if any(m != 0 for m in moves):
                yield i, rk, moves

    def _knob_touches(self, p, arms, is_global):
        share = 1.0 if p.kind == "rollout" else (1.0 / len(arms)) if is_global else self.g.rollout.probe_weight
        out = []
        for i, rk, moves in self._moved(arms):
            direction, move = 0, 0.0
            if p.kind == "rollout":
                move = moves[0]
                direction = 1 if move > 0 else -1
            out.append((None, ev.KnobTouch(rk.name, max(abs(m) for m in moves) * share, direction, move)))
        return out

    def _check_knob_limits(self, now, p, arms, is_global, thrash, touched):
        g, st_ = self.g, self.state
        at = g.anti_thrashing
        touches = []
        if p.kind == "probe":
            share = (1.0 / len(arms)) if is_global else g.rollout.probe_weight
        else:
            share = 1.0
        for i, rk, moves in self._moved(arms):
            name = rk.name
            hist = st_.history.get(name, [])
            until = st_.thrash_until.get(name, 0)
            if p.kind == "rollout" and until > now:   # a thrashing cooldown holds rollouts only
                raise _Reject("anti_thrashing", round((until - now) / NS, 6), at.cooldown_s,
                              f"knob {name}: thrashing cooldown, {(until - now) / NS:.3f} s left")
            if hist:
                since = (now - hist[-1].t_ns) / NS
                if since < rk.min_interval_s:
                    raise _Reject("min_interval", round(since, 9), rk.min_interval_s,
                                  f"knob {name}: {since:.4g} s since its last change, min_interval_s {rk.min_interval_s}")
            recent = sum(1 for h in hist if h.t_ns > now - NS)
            if recent + 1 > rk.rate_limit_hz:
                raise _Reject("rate_limit", recent + 1, rk.rate_limit_hz,
                              f"knob {name}: {recent + 1} changes within 1 s, rate_limit_hz {rk.rate_limit_hz}")
            direction, move = 0, 0.0
            if p.kind == "rollout":
                move = moves[0]
                direction = 1 if move > 0 else -1
                # reversals and flips: promoted baseline changes only
                dirs = [h.direction for h in st_.moves.get(name, []) if h.direction != 0]
                if dirs and dirs[-1] != direction:
                    nd = rk.max_delta if rk.delta_mode == "normalised" else rk.max_delta / self.ranges[i]
                    if abs(move) < at.hysteresis * nd:
                        raise _Reject("hysteresis", round(abs(move), 9), at.hysteresis * nd,
                                      f"knob {name}: reversal of {abs(move):.4g} (normalised) is inside the dead band "
                                      f"hysteresis x max_delta = {at.hysteresis * nd:.4g}")
                    win = [h.direction for h in st_.moves.get(name, [])
                           if h.direction != 0 and h.t_ns > now - int(at.window_s * NS)]
                    flips = sum(1 for a, b in zip(win, win[1:]) if a != b)
                    if flips + 1 > at.max_flips:
                        thrash[name] = now + int(at.cooldown_s * NS)
                        raise _Reject("anti_thrashing", flips + 1, at.max_flips,
                                      f"knob {name}: {flips + 1} promoted direction flips within {at.window_s} s "
                                      f"(max {at.max_flips}); {at.cooldown_s} s cooldown started")
            cost = max(abs(m) for m in moves) * share
            spent = sum(h.cost for h in hist if h.t_ns > now - int(g.budget.window_s * NS))
            if spent + cost > g.budget.max_change + 1e-12:
                raise _Reject("budget", round(spent + cost, 9), g.budget.max_change,
                              f"knob {name}: cumulative change {spent + cost:.4g} (normalised x traffic share) within "
                              f"{g.budget.window_s} s would exceed budget {g.budget.max_change}")
            touches.append(ev.KnobTouch(name, cost, direction, move))
        return touches


def _tight(max_change: float = 0.15):
    """G with a budget that binds often and short windows that expire history mid-stream."""
    b = msgspec.structs.replace(G.budget, max_change=max_change, window_s=0.4)
    at = msgspec.structs.replace(G.anti_thrashing, max_flips=2, window_s=0.5, cooldown_s=0.3, hysteresis=0.3)
    return msgspec.structs.replace(G, budget=b, anti_thrashing=at)


def _same(actions, g, fast_cls=Executor, ref_cls=ScanExecutor) -> Run:
    """The same actions through both executors give byte-identical events and states; returns
    the first's run."""
    fast, scan = Run(fast_cls, g), Run(ref_cls, g)
    for a in actions:
        fast.act(a)
        scan.act(a)
    assert ev.encode(fast.events) == ev.encode(scan.events)
    assert fast.x.state == scan.x.state
    return fast


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action_st, min_size=1, max_size=40))
def test_shortcuts_decide_like_the_scans(actions):
    _same(actions, G)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action_st, min_size=1, max_size=40))
def test_shortcuts_decide_like_the_scans_under_a_binding_budget(actions):
    _same(actions, _tight())


def test_many_small_probes_hit_the_budget_exactly_as_the_scan():
    """Hundreds of accepted probes: long histories, expiry, rejections by rate, interval, budget."""
    g = _tight(0.012)
    runs = [Run(Executor, g), Run(ScanExecutor, g)]
    rng = random.Random(7)
    rules = set()
    for i in range(600):
        dt = rng.choice([0.01, 0.05, 0.11, 0.2, 0.3]) * NS
        moves = {"a": rng.uniform(-0.05, 0.05), "b": rng.uniform(-0.4, 0.4)}
        kind = "rollout" if i % 25 == 0 else "probe"
        outs = []
        for r in runs:
            r.t += int(dt)
            base = r.x.state.baseline
            p = Proposal(f"p{i}", kind, (Arm({"a": base[0] + moves["a"], "b": base[1] + moves["b"]}),), seed=i)
            v = r.x.propose(r.t, p)
            outs.append(ev.encode(v.events))
            rules.add(v.rule)
            for _ in range(3):
                r.cycle("ok", "ok")
        assert outs[0] == outs[1]
    assert ev.encode(runs[0].events) == ev.encode(runs[1].events)
    assert {"", "budget", "min_interval"} <= rules, rules   # the stream reached those rules


def test_duplicate_ids_after_the_recent_list_is_trimmed():
    st_ = ExecState()
    seq = 0
    ids = [f"id{i}" for i in range(5000)] + [f"id{i}" for i in range(0, 5000, 7)]
    for pid in ids:
        seq += 1
        st_.apply(ev.ProposalEvent(run_id="r", seq=seq, cycle=0, t_ns=seq, config_generation=1, proposal_id=pid,
                                   kind="probe", source="", seed=0, arms=(), note="", config_version=1,
                                   delta_summary={}))
        assert st_.seen_id(pid) == (pid in st_.recent_ids)
    for pid in ("id0", "id1", "id4999", "id4000", "nope"):
        assert st_.seen_id(pid) == (pid in st_.recent_ids)


def _scan_sum(costs, times, cut):
    return sum(c for c, t in zip(costs, times) if t > cut)


def test_knob_log_running_sums_stay_within_their_bound():
    rng = random.Random(3)
    hist: list = []
    lg = _KnobLog(hist)
    t = 0
    for step in range(4000):
        t += rng.choice([1, 5, 50, 400]) * MS
        c = rng.choice([0.0, rng.random() * 1e-3, rng.random(), rng.random() * 1e-9, 1e3 * rng.random()])
        tc = Touch(t, c, rng.choice([-1, 0, 0, 1]), 0.0)
        hist.append(tc)
        lg.append(tc)
        k = 0
        while k < len(hist) and hist[k].t_ns <= t - 2 * NS:
            k += 1
        if k:
            del hist[:k]
            lg.trim(k)
        assert lg.fresh(hist)
        for j in (0, len(hist) // 2, len(hist) - 1, len(hist)):
            exact = lg.spend_since(j)
            assert exact == _scan_sum(lg.costs, lg.times, lg.times[j - 1] if j else -1)
            approx, err = lg.spend_approx(j)
            assert abs(approx - exact) <= err
    fresh = _KnobLog(hist)
    assert (fresh.times, fresh.costs) == (lg.times, lg.costs)


def test_knob_log_refuses_a_bound_for_odd_costs():
    hist = [Touch(1, 0.1, 0, 0.0), Touch(2, -0.05, 0, 0.0)]
    lg = _KnobLog(hist)
    approx, err = lg.spend_approx(0)
    assert math.isnan(approx) and math.isnan(err)
    assert lg.spend_since(0) == 0.1 + -0.05


def test_out_of_order_times_fall_back_to_the_scan():
    hist = [Touch(5 * NS, 0.1, 1, 0.1), Touch(1 * NS, 0.2, -1, -0.1), Touch(6 * NS, 0.05, 0, 0.0)]
    lg = _KnobLog(hist)
    assert not lg.ordered
    assert lg.times == [5 * NS, 1 * NS, 6 * NS]


class CheckedExecutor(Executor):
    """The executor that, whenever the all-knob aggregate clears a proposal, also runs every
    knob's exact rules and fails if one of them would have refused it (without the admission
    fast path, which would decide most of these proposals before the aggregate is asked)."""
    cleared = 0

    def __init__(self, *a, **kw):
        super().__init__(*a, fast_path=False, **kw)

    def _limits_clear(self, now, p, arms, is_global, dmax):
        ok = super()._limits_clear(now, p, arms, is_global, dmax)
        if ok:
            CheckedExecutor.cleared += 1
            try:
                self._check_knob_limits(now, p, arms, is_global, {}, self._knob_touches(p, arms, is_global))
            except _Reject as r:   # pragma: no cover - the failure this test looks for
                raise AssertionError(f"aggregate cleared {p.proposal_id}, the exact rule {r.rule} refuses it: "
                                     f"{r.message}") from None
        return ok


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action_st, min_size=1, max_size=40))
def test_the_aggregate_clears_only_what_every_knob_allows(actions):
    run = Run(CheckedExecutor, _tight(0.05))
    for a in actions:
        run.act(a)


def test_the_aggregate_clears_most_of_a_long_stream_and_never_wrongly():
    """Long histories near the rate, interval and budget limits (several configs): the bound is
    sound, and it is not vacuous (it clears most accepted proposals of an ordinary stream)."""
    CheckedExecutor.cleared = 0
    for g in (_tight(0.012), _tight(0.5), G):
        r = Run(CheckedExecutor, g)
        rng = random.Random(11)
        for i in range(400):
            r.t += int(rng.choice([0.01, 0.05, 0.11, 0.2, 0.3, 1.1]) * NS)
            base = r.x.state.baseline
            moves = {"a": rng.uniform(-0.05, 0.05), "b": rng.uniform(-0.4, 0.4)}
            kind = "rollout" if i % 9 == 0 else "probe"
            r.x.propose(r.t, Proposal(f"p{i}", kind, (Arm({"a": base[0] + moves["a"], "b": base[1] + moves["b"]}),),
                                      seed=i))
            for _ in range(3):
                r.cycle("ok", "ok")
    assert CheckedExecutor.cleared > 300


def test_the_aggregate_rebuilt_from_a_replaced_state_bounds_too():
    """A state not folded from the start (a copy) rebuilds the aggregate from the histories."""
    r = Run(Executor, _tight(0.5))
    for i in range(30):
        r.t += 120 * MS
        base = r.x.state.baseline
        r.x.propose(r.t, Proposal(f"p{i}", "probe", (Arm({"a": base[0] + 0.01, "b": base[1] - 0.2}),), seed=i))
        for _ in range(8):
            r.cycle("ok", "ok")
    copy = msgspec.structs.replace(r.x.state)
    assert "_all" not in copy.__dict__
    from daemon.tier1.executor import _AllLog
    agg = _AllLog(copy.history)
    own = r.x.state.__dict__["_all"]
    assert agg.last_t == own.last_t and agg.ordered
    # every entry of every knob is in it: counts and sums bound the per-verdict aggregate's
    assert len(agg.times) >= len(own.times) and agg.cum[-1] - agg.cum0 >= own.cum[-1] - own.cum0 - 1e-12


def _stream(defer: bool):
    """A run whose proposals go through `propose(defer=...)`; a deferred one is completed right
    away, or (every third) left for the next call to complete."""
    r = Run(Executor, _tight(0.2))
    rng = random.Random(5)
    for i in range(120):
        r.t += int(rng.choice([0.01, 0.06, 0.2, 0.5]) * NS)
        base = r.x.state.baseline
        a = Arm({"a": base[0] + rng.uniform(-0.05, 0.05), "b": base[1] + rng.uniform(-0.3, 0.3)})
        arms = (a,) if i % 4 == 0 else (a, Arm({"a": base[0] - 0.02}))
        p = Proposal(f"p{i}", "rollout" if i % 4 == 0 else "probe", arms, seed=i)
        v = r.x.propose(r.t, p, defer=defer)
        if defer:
            assert v.events == []
            if i % 3:
                r.events += r.x.complete()
                assert r.x.complete() == []
        else:
            r.events += v.events
        for _ in range(rng.choice([0, 1, 5, 30])):
            r.cycle(rng.choice(["ok", "ok", "slow", "breach"]), "ok")
    r.record(r.x.command(r.t, Command("snapback")))
    return r, v


def test_a_deferred_proposal_gives_the_same_events_and_state():
    plain, v0 = _stream(False)
    deferred, v1 = _stream(True)
    assert ev.encode(plain.events) == ev.encode(deferred.events)
    assert plain.x.state == deferred.x.state
    assert [e.seq for e in deferred.events] == list(range(1, len(deferred.events) + 1))
    assert msgspec.structs.replace(v1, events=v0.events) == v0
    # the replayed ledger gives the same state
    from daemon.tier1.executor import rebuild
    assert rebuild(deferred.events, DECL) == deferred.x.state


def test_a_deferred_snapshot_is_the_one_its_apply_records():
    r = Run(Executor, G)
    r.t += NS
    v = r.x.propose(r.t, Proposal("d1", "probe", (Arm({"a": 0.55}), Arm({"a": 0.45})), seed=1), defer=True)
    assert v.accepted and v.snapshot is not None and v.events == []
    assert r.x.state.live != v.snapshot                # not folded yet
    events = r.x.complete()
    assert [type(e).__name__ for e in events] == ["ProposalEvent", "ValidationVerdict", "Transition", "Apply"]
    assert events[-1].snapshot == v.snapshot == r.x.state.live
    bad = r.x.propose(r.t, Proposal("d2", "probe", (Arm({"zz": 0.1}),)), defer=True)
    assert not bad.accepted and bad.rule == "one_experiment_per_scope" and bad.snapshot is None
    out = r.x.step(r.t + 10 * MS, CycleInput(r.t + 10 * MS, v.snapshot.generation))   # completes d2 first
    names = [type(e).__name__ for e in out.events]
    assert names[:2] == ["ProposalEvent", "ValidationVerdict"] and out.events[1].rule == "one_experiment_per_scope"
