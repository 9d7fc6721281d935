"""The demo's unguarded arm: raw Tier-2 output applied straight to the live parameters.

The same optimizer (and, with variants, the same bandit) that Tier 2 runs inside arqond, with
none of Tier 1: no allowlist narrowing beyond the tuning box, no max delta, no canary slot, no
judge, no SLO check, no rollback. Each point the optimizer asks for is published to slot 0
(all traffic) for one evaluation window; its objective (the profile's objective terms over the
records of that generation, past the settle time) is told back. A bad candidate injected into
it becomes its incumbent, exactly as an accepted rollout would, and stays until the optimizer
itself moves away. Variants explore as Tier 2's do: a tournament every `explore_every` rounds and
after every change of the conditions' regime (tuning.context), each other eligible variant for
one window, on all traffic (without Tier 1 there are no probe slots); the bandit (which learns the
SLA per play) then names the variant to hold.

`UnguardedTuner` is the pure core (time and records are passed in, seeded RNG owned);
`main()` is the edge (shared memory, stdin commands, stdout trace), run as
`python -m daemon.demo.unguarded --config PROFILE --name SEGMENT`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
import zlib
from typing import Optional

import numpy as np

from daemon.runtime.summarize import summarize
from daemon.tier1.config import ELIGIBLE_STATES, Guardrails, load_guardrails, resolve_knob
from daemon.tier2 import make_bandit, make_optimizer
from daemon.tier2.core import NoChange
from daemon.tier2.regimes import Regimes
from shm_layout.decl import Declaration, SlotSpec, SnapshotSpec

NS = 1_000_000_000


def objective_of(g: Guardrails, fields: dict) -> Optional[float]:
    """The profile's objective (sum of weight x field.stat) of one summary's fields, oriented
    so that lower is better; None when a term has no data."""
    total = 0.0
    for term in g.objective.terms:
        fs = fields.get(term.field)
        if fs is None:
            return None
        total += term.weight * float(getattr(fs, term.stat, fs.mean))
    return total if g.objective.direction == "minimize" else -total


def slos_met(g: Guardrails, fields: dict) -> Optional[bool]:
    """Whether one window meets every enforcing SLO of the profile (None: too few records to say)."""
    verdict = True
    for s in g.slos:
        if not s.enforce:
            continue
        fs = fields.get(s.field)
        if fs is None or fs.count < s.min_samples:
            return None
        v = float(getattr(fs, s.stat, fs.mean))
        if (s.max is not None and v > s.max) or (s.min is not None and v < s.min):
            verdict = False
    return verdict


class UnguardedTuner:
    """Sequential, all-traffic evaluation of whatever Tier 2 asks. Pure: `step(now_ns, rows)`
    returns the next snapshot to publish (or None); it never reads a clock.

    Invariants: exactly one slot (weight 1.0); knobs outside the tuning box keep the value they
    last had (the declared initial value, or an injected one); generation increases by one per
    published point."""

    def __init__(self, g: Guardrails, decl: Declaration, *, seed: Optional[int] = None, min_samples: int = 20):
        t = g.tuning
        self.g, self.decl = g, decl
        self.seed = t.seed if seed is None else seed
        names = list(t.knobs) or [k.name for k in decl.knobs if k.name in g.knobs]
        self.names = [n for n in names if not decl.knobs[decl.knob_index(n)].integer] or names
        self.idx = [decl.knob_index(n) for n in self.names]
        rk = [resolve_knob(g, n, decl.knobs[decl.knob_index(n)].min, decl.knobs[decl.knob_index(n)].max)
              for n in self.names]
        self.bounds = np.array([[r.lo, r.hi] for r in rk], dtype=float)
        self.values = [float(k.initial) for k in decl.knobs]   # every knob's live value (user units)
        eligible = {c.variant for c in g.catalog.variants if c.state in ELIGIBLE_STATES}
        self.variants = [v for v in decl.variants if v in eligible] if t.variants else []
        self.variant = 0
        self.bandit = (make_bandit(t.bandit, len(self.variants), seed=self.seed * 7919 + 1, discount=0.95)
                       if len(self.variants) > 1 else None)
        self.window_ns = int(g.rollout.probe_window_s * NS)
        self.settle_ns = int(g.rollout.settle_s * NS)
        self.min_samples = min_samples
        self.fields = tuple(f.name for f in decl.fields)
        self.generation = 0
        self.applied_ns = 0
        self.rows: list[np.ndarray] = []
        self.queue: list[tuple[np.ndarray, int, str]] = []   # (point, variant index, kind) still to run
        self.told: list[float] = []
        self.arm_variant: list[int] = []
        self.trace: list[dict] = []      # one entry per finished evaluation
        self.opt = None
        # Tier 2's regimes; one observation here is a whole evaluation window, so it counts at once
        self.regimes = Regimes(tuple(g.tuning.context), persist=1, persist_s=0.0)
        self.variant_ids = [list(decl.variants).index(v) for v in self.variants]
        self.rounds = 0
        self.explore_now = True                  # a tournament first, and after every regime change
        self.kind = "point"                      # what the live window is: point | tournament | injected
        self._restart(np.array([self.values[i] for i in self.idx]))

    def _restart(self, x0: np.ndarray) -> None:
        x0 = np.clip(x0, self.bounds[:, 0], self.bounds[:, 1])
        opts = {"x0": [float(v) for v in x0]}
        if self.g.tuning.optimizer == "spsa":
            opts.update(tracking=True, c=0.05, max_step=0.1)   # the same constant-gain tracking mode Tier 2 uses
        opts.update(self.g.tuning.options)
        self.opt = make_optimizer(self.g.tuning.optimizer, self.bounds, seed=self.seed * 100003, **opts)
        self.queue, self.told, self.arm_variant = [], [], []

    def _observe_context(self, fields: dict) -> None:
        """Tier 2's regimes (`daemon.tier2.regimes`): entering a new one restarts the variant
        bandit, as Tier 2 does inside arqond, so both arms explore again when the conditions change."""
        first = self.regimes.regime is None
        if self.regimes.update({f: fs.mean for f, fs in fields.items() if fs.count}) != "entered":
            return
        reg = self.regimes.regime
        if not first and self.bandit is not None:
            self.bandit = make_bandit(self.g.tuning.bandit, len(self.variants),
                                      seed=self.seed * 7919 + (zlib.crc32(repr(reg).encode()) & 0xFFFF),
                                      discount=0.95)
        self.explore_now = True
        self.trace.append({"t_ns": self.applied_ns, "event": "regime", "regime": list(reg)})

    # ---- snapshots -----------------------------------------------------------------------

    def snapshot(self) -> SnapshotSpec:
        vals = tuple(float(v) for v in self.values)
        return SnapshotSpec(self.generation, (SlotSpec(1.0, self.variant, vals),), vals, salt=self.generation)

    def _apply(self, now_ns: int, x: Optional[np.ndarray], variant: int) -> SnapshotSpec:
        if x is not None:
            for i, v in zip(self.idx, x):
                k = self.decl.knobs[i]
                self.values[i] = float(round(v)) if k.integer else float(v)
        self.variant = variant
        self.generation += 1
        self.applied_ns = now_ns
        self.rows = []
        return self.snapshot()

    def start(self, now_ns: int) -> SnapshotSpec:
        return self._next(now_ns)

    def inject(self, now_ns: int, knobs: dict[str, float], variant: Optional[str] = None) -> SnapshotSpec:
        """A candidate handed to the unguarded optimizer becomes its incumbent at once."""
        for name, v in knobs.items():
            self.values[self.decl.knob_index(name)] = float(v)
        vi = self.variant
        if variant:
            vi = list(self.decl.variants).index(variant)
        self._restart(np.array([self.values[i] for i in self.idx]))
        self.queue = [(np.array([self.values[i] for i in self.idx]), vi, "injected")]
        x, vi, self.kind = self.queue.pop(0)
        return self._apply(now_ns, None, vi)

    # ---- the loop ------------------------------------------------------------------------

    def _leader(self) -> int:
        """The variant to hold (declared index): the best mean reward among variants likely to
        meet the SLA, as the driver rolls out a tournament's clear winner; the current one while
        nothing is known."""
        means = self.bandit.means()
        feas = getattr(self.bandit, "feasible_prob", None)
        ok = feas() if feas is not None else np.ones(len(self.variants))
        n = self.bandit.stats.n
        cand = [i for i in range(len(self.variants)) if n[i] >= 1 and ok[i] >= 0.5 and not math.isnan(means[i])]
        if not cand:
            return self.variant
        return self.variant_ids[max(cand, key=lambda i: means[i])]

    def _next(self, now_ns: int) -> Optional[SnapshotSpec]:
        if not self.queue:
            self.rounds += 1
            here = np.array([self.values[i] for i in self.idx])
            if self.bandit is not None and (self.explore_now or self.rounds % max(1, self.g.tuning.explore_every) == 0):
                # Tier 2's variant tournament: every other eligible variant for one window. Without
                # Tier 1 there are no probe slots, so each plays on all traffic in turn.
                self.explore_now = False
                self.queue = [(here, vi, "tournament") for vi in self.variant_ids if vi != self.variant]
            if not self.queue:
                X = self.opt.ask()
                if isinstance(X, NoChange):
                    return None
                vi = self._leader() if self.bandit is not None else self.variant
                self.queue = [(np.asarray(x, float), vi, "point") for x in np.atleast_2d(X)]
                self.told = []
        x, vi, self.kind = self.queue.pop(0)
        return self._apply(now_ns, x, vi)

    def step(self, now_ns: int, rows: np.ndarray) -> Optional[SnapshotSpec]:
        """Feed the records drained this cycle; returns a snapshot when the point changes."""
        if len(rows):
            self.rows.append(rows)
        if now_ns - self.applied_ns < self.window_ns + self.settle_ns:
            return None
        slots, used, _ = summarize(self.rows, self.fields, self.generation, self.applied_ns + self.settle_ns,
                                   now_ns - self.applied_ns)
        if used < self.min_samples:
            if now_ns - self.applied_ns < 5 * (self.window_ns + self.settle_ns):
                return None    # not enough traffic yet: keep the point a little longer
        y = objective_of(self.g, slots[0].fields) if slots else None
        y = math.inf if y is None else y
        self.trace.append({"t_ns": now_ns, "generation": self.generation, "objective": y, "n": used, "kind": self.kind,
                           "knobs": {self.decl.knobs[i].name: self.values[i] for i in self.idx},
                           "variant": self.decl.variants[self.variant] if self.decl.variants else ""})
        if self.kind != "injected":    # the injected incumbent's own window: the optimizer goes on from it
            if slots and self.g.tuning.context:
                self._observe_context(slots[0].fields)
            if self.bandit is not None and self.variant in self.variant_ids:
                arm = self.variant_ids.index(self.variant)
                # the bandit learns the SLA as Tier 2 does inside arqond (feasibility per play),
                # so it explores the same way; what is missing is Tier 1, not information
                ok = slos_met(self.g, slots[0].fields) if slots else None
                self.bandit.update(arm, -y if math.isfinite(y) else -1e6, feasible=ok)
            if self.kind == "point":
                self.told.append(y if math.isfinite(y) else 1e6)
                if (not any(q[2] == "point" for q in self.queue)
                        and len(self.told) == max(1, getattr(self.opt, "batch_size", 1))):
                    self.opt.tell(np.array(self.told))
                    self.told = []
        return self._next(now_ns)


# ---- edge -----------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m daemon.demo.unguarded", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="profile (guardrails.yaml) whose tuning section to run")
    ap.add_argument("--name", required=True, help="segment name of the data plane")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--attach-timeout", type=float, default=15.0)
    a = ap.parse_args(argv)
    from shm_layout.segment import AttachError, Segment   # edge-only import (cffi helper)

    g = load_guardrails(a.config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    deadline = time.monotonic() + a.attach_timeout
    while True:
        try:
            seg = Segment.attach(a.name, allow_foreign_owner=True)
            break
        except (AttachError, FileNotFoundError, OSError) as e:
            if time.monotonic() > deadline:
                print(f"unguarded: could not attach to /arqon.{a.name} within {a.attach_timeout} s: {e}",
                      file=sys.stderr)
                return 1
            time.sleep(0.05)
    seg.acquire_writer()
    tuner = UnguardedTuner(g, seg.declaration, seed=a.seed)
    inbox: list[dict] = []
    lock = threading.Lock()

    def read_stdin() -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError:
                continue
            with lock:
                inbox.append(cmd)
        stop.set()   # the orchestrator went away

    threading.Thread(target=read_stdin, daemon=True).start()
    lease_ns = int(g.lease.duration_s * NS)
    period = g.cycle.period_s
    out = sys.stdout

    def publish(snap: SnapshotSpec, now: int, why: str) -> None:
        seg.publish(snap, now + lease_ns)
        s = snap.slots[0]
        out.write(json.dumps({"t_ns": now, "event": why, "generation": snap.generation,
                              "knobs": dict(zip((k.name for k in seg.declaration.knobs), s.knobs)),
                              "variant": seg.declaration.variants[s.variant] if seg.declaration.variants else ""})
                  + "\n")
        out.flush()

    now = time.monotonic_ns()
    publish(tuner.start(now), now, "apply")
    sent = 0
    try:
        while not stop.is_set():
            now = time.monotonic_ns()
            with lock:
                cmds, inbox[:] = list(inbox), []
            for c in cmds:
                if "inject" in c:
                    publish(tuner.inject(now, c["inject"].get("knobs", {}), c["inject"].get("variant")), now, "inject")
            batches, _plane = seg.poll(now, now + lease_ns)   # the daemon's own per-cycle call
            rows = np.concatenate(batches)
            snap = tuner.step(now, rows)
            for t in tuner.trace[sent:]:
                out.write(json.dumps({"event": "evaluation", **t}) + "\n")
            sent = len(tuner.trace)
            if snap is not None:
                publish(snap, now, "apply")
            out.flush()
            stop.wait(max(0.0, period - (time.monotonic_ns() - now) / NS))
    finally:
        seg.renew_lease(0)
        seg.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
