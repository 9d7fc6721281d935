"""`arqond run`: the decision loop and the only code that touches the world.

Every cycle (guardrails `cycle.period_s`, default 10 ms), on uvloop:
  drain the rings, renew the lease and summarise per slot (published generation, past the
  settle time), all in one C call -> Tier 1 step -> publish its snapshot (if any) -> Tier 2
  driver proposes when Tier 1 is idle -> Tier 1 validates -> publish -> events to the ledger
  queue -> (after the time-critical part) wake the ledger writer, status for the metrics.
Slow things never run in the cycle: the ledger and the bus have their own threads and encode
there, metrics are rendered at scrape time from a status refreshed a few times a second,
control commands run between cycles on the same event loop (so no locks: the executor is only
ever touched from this loop). Cycles are paced by a timerfd at absolute deadlines (one wake-up
per cycle, ns precision; libuv's timers round to 1 ms).

An overrun (a cycle longer than its period before it could propose) proposes nothing that
cycle and is counted; a rollback is never skipped. If the data plane disappears the loop waits
and re-attaches (new epoch); if the daemon stops, the lease lets the data plane fall back alone.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

import msgspec

from daemon import __version__
from daemon.runtime import sdnotify
from daemon.runtime.control import COMMANDS, CommandError, ControlServer, socket_path
from daemon.runtime.metrics import Metrics, serve as serve_metrics
from daemon.runtime.status import (AuditStatus, BusStatus, ConfigStatus, CycleStatus, KnobStatus, LeaseStatus,
                                   RingStatus, RuntimeStatus, SlotStatus, Statistic)
from daemon.runtime.summarize import quantile_mask, telemetry
from daemon.tier1 import events as ev
from daemon.tier1.config import ConfigError, Guardrails, check_against, load_guardrails
from daemon.tier1.executor import Executor
from daemon.tier1.ledger import LedgerWriter, read_events
from daemon.tier1.model import Arm, Command, CycleInput, Proposal, StepOutput
from daemon.tier1.rollout import State
from daemon.tier2.driver import TuningDriver
from shm_layout import spec
from shm_layout.decl import SnapshotSpec
from shm_layout._shm import lib as _lib
from shm_layout.segment import AttachError, Segment

log = logging.getLogger("arqond")
NS = 1_000_000_000
METRICS_REFRESH_NS = NS // 4     # state gauges (status) are rebuilt at most 4 times a second
CHECK_NS = NS // 10              # is the segment still the data plane's, is the ledger healthy
TIMINGS_KEPT = 2000              # samples per stage that `timings` and the cycle quantiles use
# Group commit of the audit ledger: the writer thread is woken at the end of a cycle that queued
# an event changing the baseline or the safety state (URGENT_EVENTS), else at most every
# audit.batch_s. Each batch costs the writer a wake-up, encoding, a write and an fdatasync whatever
# its size, so bookkeeping events (apply, ack, transition, evaluation...) are batched: durable
# within audit.batch_s + one fdatasync, a promotion or rollback within one cycle + one.
URGENT_EVENTS = frozenset(("Promotion", "Rollback", "Quarantine", "SafeModeEntered", "SafeModeExited", "KillSwitch",
                           "CommandEvent", "ConfigReload"))


class CycleTimer:
    """A periodic CLOCK_MONOTONIC timerfd on an absolute grid; the event loop watches `fd`."""

    def __init__(self):
        fd = _lib.arqd_timer_open()
        if fd < 0:
            raise OSError(-fd, f"cycle timer: timerfd_create failed: {os.strerror(-fd)}")
        self.fd = fd

    def arm_every(self, first_ns: int, period_ns: int) -> None:
        """First expiry at `first_ns`, then every `period_ns` on that grid (no syscall per
        cycle; a late cycle is one wake-up, its ack counting the expirations missed)."""
        rc = _lib.arqd_timer_arm_every(self.fd, first_ns, period_ns)
        if rc < 0:
            raise OSError(-rc, f"cycle timer: timerfd_settime failed: {os.strerror(-rc)}")

    def ack(self) -> int:
        """Expirations since the last ack; 0 for a spurious wake-up."""
        return _lib.arqd_timer_ack(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class Daemon:
    """One daemon for one target (segment)."""

    def __init__(self, config_path: str | Path, *, audit_path: Optional[str] = None,
                 metrics_address: Optional[str] = None, control_path: Optional[str] = None,
                 allow_foreign_owner: bool = True, tuning: Optional[bool] = None):
        self.config_path = str(config_path)
        self.g: Guardrails = load_guardrails(self.config_path)   # ConfigError propagates: refuse to start
        self.audit_path = audit_path or self.g.audit.path
        self.metrics_address = metrics_address or self.g.metrics.address
        self.control_path = Path(control_path) if control_path else socket_path(self.g.target)
        self.allow_foreign_owner = allow_foreign_owner
        self.tuning_override = tuning
        self.config_generation = 1
        self.seg: Optional[Segment] = None
        self.ex: Optional[Executor] = None
        self.driver: Optional[TuningDriver] = None
        self.metrics = Metrics(version=__version__)
        self.ledger: Optional[LedgerWriter] = None
        self.stop_event: Optional[asyncio.Event] = None
        self.started_mono = time.monotonic()
        self.published_ns = 0
        self.generation = 0
        self.last_cycle_ns = 0
        self.overruns = 0
        self.last_stats: dict[int, Any] = {}
        self.last_reload_ok, self.last_reload_time, self.last_reload_error = True, time.time(), ""
        self.breaches: dict[str, int] = {}
        self.safe_mode_reason = ""
        self.cycles = 0
        self.manual_seq = 0
        self.metrics_port = 0
        self.operator_queue: list = []
        # Decision-path timings (seconds), last 2000 of each: what `bench decision` reports.
        # summarize: the one C call that drains, renews the lease and summarises, plus building the
        # SlotTelemetry. For a Tier 2 proposal:
        #   t1_apply      proposal handed to Tier 1 -> its snapshot is in shared memory: the
        #                 decision (Executor.propose(defer=True), alone: t1_propose) + the publish
        #   t1_deferred   what follows the publish in the same cycle: Executor.complete (audit
        #                 events, state fold, experiment set-up: t1_complete), the driver's
        #                 on_verdict and the events' audit/metrics/bus enqueues (t1_bookkeeping)
        #   t1_total      both: the whole cost of the proposal (was t1_apply before the split)
        #   propose_cycle_cpu  the CPU time of a whole cycle that submitted a Tier 2 proposal
        # publish: cycle start -> the snapshot Tier 1's step decided (a rollback, a canary step, a
        # promotion) is in shared memory.
        self.timings: dict[str, list[float]] = {"cycle": [], "summarize": [], "t1_step": [], "t2_decision": [],
                                                "t1_apply": [], "t1_apply_fast": [], "t1_apply_slow": [], "t1_propose": [], "t1_complete": [],
                                                "t1_bookkeeping": [], "t1_deferred": [], "t1_total": [],
                                                "publish": [], "t2_decision_cpu": [], "t1_apply_cpu": [],
                                                "t1_deferred_cpu": [], "propose_cycle_cpu": []}
        # *_cpu: the same spans in this thread's CPU time (time.thread_time): without the time the
        # co-located data plane held the core, with cold caches and GC (which wall time also has)
        self._published_at = (0.0, 0.0)   # (perf_counter, thread_time) when _submit's snapshot went out
        self._qf = self._quantile_fields(self.g)
        self._qmask = 0
        self._ns = self._periods_ns(self.g)
        self._audit_batch_ns = int(self.g.audit.batch_s * NS)
        self.bus = None
        self.last_summary_ns = 0
        self._audit_pending = False       # events queued with wake=False since the writer was woken
        self._audit_urgent = False        # ... one of which is in URGENT_EVENTS
        self._audit_woken_ns = 0
        self._next_metrics_ns = 0
        self._next_check_ns = 0
        self._cycles_folded = 0           # timings["cycle"] entries already in the metrics histogram
        self._timer: Optional[CycleTimer] = None
        self._tick_period_ns = 0          # what the periodic cycle timer is armed with
        self._ready = False
        self._pacer = None
        self._fatal: Optional[BaseException] = None

    # ---- ledger -------------------------------------------------------------------------

    def _open_ledger(self) -> list:
        os.makedirs(os.path.dirname(os.path.abspath(self.audit_path)), exist_ok=True)
        history = []
        if os.path.exists(self.audit_path):
            history = [r.event for r in read_events(self.audit_path, type=ev.Event)]
        # No linger: the loop wakes the writer once per cycle, after its time-critical part, so
        # a cycle's events are one batch and the writer runs while the loop sleeps.
        self.ledger = LedgerWriter(self.audit_path, queue_size=self.g.audit.queue_size,
                                   high_water=self.g.audit.high_water_ratio, linger_s=0.0)
        return history

    def _record(self, now: int, events: list) -> None:
        """Audit, count and forward `events`: O(1) enqueues per event (the ledger and bus threads
        encode); the ledger writer is woken at the end of the cycle (`_wake_audit`)."""
        if not events:
            return
        if self.ledger.submit_many(events, wake=False) < len(events):
            # never drop silently: a full audit queue puts Tier 1 in safe mode, said on the ledger
            if self.ex is not None and not self.ex.state.safe_mode:
                self._handle(now, self.ex.command(now, Command("enter_safe_mode", "runtime", "audit queue full")),
                             record=False)
        counted = self._COUNTED
        for e in events:
            tag = type(e).__name__
            if tag in counted:
                self._count(e)
            if tag in URGENT_EVENTS:
                self._audit_urgent = True
        self._audit_pending = True
        if self.bus is not None:
            self._bus_events(events)

    def _wake_audit(self, now: int) -> None:
        """End of cycle: wake the ledger writer per the group-commit rule (see URGENT_EVENTS)."""
        if self._audit_pending and self.ledger is not None and (
                self._audit_urgent or now - self._audit_woken_ns >= self._audit_batch_ns):
            self._audit_pending = self._audit_urgent = False
            self._audit_woken_ns = now
            self.ledger.wake()

    # Rollback.rule prefix -> the bounded reason label of the metrics (status.ROLLBACK_REASONS).
    _REASONS = (("slo:", "slo_breach"), ("catalog:", "slo_breach"), ("judge:", "judge_abort"),
                ("deadline", "deadline"), ("lease", "lease_lost"), ("ack", "ack_timeout"),
                ("kill_switch", "kill"), ("rollback", "rollback"), ("snapback", "snapback"),
                ("config_reload", "config_reload"), ("regressions", "regressions_limit"), ("cancel", "cancel"))

    _COUNTED = frozenset(("ValidationVerdict", "Rollback", "SafeModeEntered"))

    def _count(self, e) -> None:
        tag = type(e).__name__
        if tag == "ValidationVerdict":
            self.metrics.count_proposal("applied" if e.accepted else
                                        "blocked" if e.rule in ("kill_switch", "safe_mode") else "rejected")
        elif tag == "Rollback":
            rule = e.rule or ""
            reason = next((r for prefix, r in self._REASONS if rule.startswith(prefix)), "other")
            self.metrics.count_rollback(reason)
            if reason == "slo_breach":
                name = rule.split(":", 1)[1] if ":" in rule else rule
                self.breaches[name] = self.breaches.get(name, 0) + 1
                self.metrics.count_breach(name)
        elif tag == "SafeModeEntered":
            self.safe_mode_reason = getattr(e, "reason", "")

    # ---- bus (optional; never on the decision path: publish calls only append to a queue) ----

    def _start_bus(self) -> None:
        b = self.g.bus
        if not b.enabled:
            return
        from daemon.runtime.bus import BusConfig, BusPublisher
        spool = b.spool_dir or os.path.join(os.path.dirname(os.path.abspath(self.audit_path)), "bus-spool")
        try:
            cfg = BusConfig(url=b.url, room=b.room or f"prod:{self.g.target}", jwt_file=b.token_file,
                            summary_hz=b.summary_hz, spool_dir=spool, scope=self.g.target)
        except ValueError as e:
            raise SystemExit(f"{self.config_path}: {e}; not started") from None
        self.bus = BusPublisher(cfg).start()

    _CHANNELS = {"ProposalEvent": "proposals", "ValidationVerdict": "proposals", "Evaluation": "evaluations",
                 "JudgeVerdict": "evaluations", "Transition": "rollouts", "Promotion": "rollouts",
                 "Rollback": "rollouts", "Apply": "config_state", "SafeModeEntered": "alerts",
                 "KillSwitch": "alerts"}

    def _bus_events(self, events: list) -> None:
        for e in events:
            name = type(e).__name__
            if name in ("Digest", "Ack"):
                continue                      # high-rate bookkeeping stays in the ledger
            md = {"run_id": getattr(e, "run_id", ""), "change_kind": "knob"}
            pid = getattr(e, "proposal_id", "")
            if pid:
                md["proposal_id"] = pid
            # the frozen event itself: the bus thread encodes it, not the decision loop
            self.bus.publish_event(self._CHANNELS.get(name, "audit"), e, md)
            if name in ("Rollback", "Promotion", "Transition"):
                self.bus.publish_event("audit", e, md)

    def _bus_summary(self, now: int) -> None:
        if now - self.last_summary_ns < NS / self.g.bus.summary_hz:
            return
        self.last_summary_ns = now
        ex = self.ex
        snap = ex.snapshot
        d = self.seg.declaration
        self.bus.publish_summary({
            "target": self.g.target, "generation": self.generation, "rollout_state": ex.mstate.value,
            "baseline": dict(zip((k.name for k in d.knobs), ex.state.baseline)),
            "slots": [{"weight": s.weight, "variant": s.variant} for s in snap.slots] if snap else [],
            "telemetry": {str(sl): {f: {"count": fs.count, "mean": fs.mean, "p99": fs.p99} for f, fs in t.fields.items()}
                          for sl, t in sorted(self.last_stats.items())},
        }, {"run_id": ex.run_id})

    # ---- attach ------------------------------------------------------------------------

    def _try_attach(self, now: int) -> bool:
        try:
            seg = Segment.attach(self.g.target, allow_foreign_owner=self.allow_foreign_owner)
        except AttachError as e:
            if e.check != "exists":
                log.warning("%s", e)
            return False
        problems = check_against(self.g, seg.declaration)
        if problems:
            seg.close()
            raise SystemExit(f"{self.config_path}: does not match /arqon.{self.g.target}:\n  " + "\n  ".join(problems))
        seg.acquire_writer()
        self.seg = seg
        self.field_names = tuple(f.name for f in seg.declaration.fields)
        self.knob_names = [k.name for k in seg.declaration.knobs]
        self._qmask = quantile_mask(self.field_names, self._qf)
        history = self._open_ledger() if self.ledger is None else list(self._history())
        self.ex = Executor(self.g, seg.declaration, run_id=f"arqond-{os.getpid()}-{seg.epoch & 0xffff:04x}",
                           config_generation=self.config_generation, history=history)
        self.driver = self._new_driver(self.g, seg.declaration)
        self._handle(now, self.ex.start(now))
        # What exists now (modules, config, rebuilt state) lives as long as the attachment: out
        # of the collector's reach, so a full collection never walks it inside a decision.
        gc.collect()
        gc.freeze()
        log.info("attached to /arqon.%s (pid %d, epoch %016x)", self.g.target, seg.creator_pid, seg.epoch)
        return True

    def _new_driver(self, g: Guardrails, decl) -> TuningDriver:
        """Tier 2 for config `g`; `--no-tuning` wins over the file, across reloads too."""
        if self.tuning_override is not None:
            g = msgspec.structs.replace(g, tuning=msgspec.structs.replace(g.tuning, enabled=self.tuning_override))
        return TuningDriver(g, decl)

    def _history(self):
        self.ledger.flush(5.0)
        for r in read_events(self.audit_path, type=ev.Event):
            yield r.event

    def _detach(self, why: str) -> None:
        log.warning("detaching from /arqon.%s: %s", self.g.target, why)
        if self.seg is not None:
            self.seg.close()
        self.seg, self.ex, self.driver = None, None, None

    # ---- one cycle ------------------------------------------------------------------------

    def _publish(self, now: int, snap) -> None:
        """Publish `snap`: a SnapshotSpec, or a snapshot Tier 1's admission fast path staged in C
        memory (`arqd_staged *`, Verdict.staged)."""
        if type(snap) is SnapshotSpec:
            self.seg.publish(snap, now + self._ns[1])
        else:
            self.seg.publish_staged(snap, now + self._ns[1])
        self.generation = snap.generation
        self.published_ns = now

    def _handle(self, now: int, out: StepOutput, record: bool = True) -> None:
        if out.snapshot is not None:
            self._publish(now, out.snapshot)
            if now == self.last_cycle_ns:          # a cycle's step: how long after the cycle started
                self.timings["publish"].append((time.monotonic_ns() - now) / 1e9)
        if record:
            self._record(now, out.events)
        if out.evaluations and self.driver is not None:
            self.driver.on_evaluations(out.evaluations)

    @staticmethod
    def _periods_ns(g: Guardrails) -> tuple[int, int, int]:
        """(cycle period, lease duration, settle time) of `g` in ns, read every cycle."""
        return int(g.cycle.period_s * NS), int(g.lease.duration_s * NS), int(g.rollout.settle_s * NS)

    @staticmethod
    def _quantile_fields(g: Guardrails) -> frozenset:
        """Fields whose p50/p95/p99 some rule of `g` reads (objective, SLO, catalog): only those
        pay for a quantile in the summaries."""
        q = {"p50", "p95", "p99"}
        names = {t.field for t in g.objective.terms if t.stat in q} | {s.field for s in g.slos if s.stat in q}
        if any(c.max_p99 is not None for c in g.catalog.variants):
            names.add(g.catalog.fields.latency)
        return frozenset(names)

    def _tier2_inputs(self) -> tuple[dict[str, float], str, Optional[dict[str, float]]]:
        """What Tier 2 reads: the baseline knobs by name, the baseline variant's name, and the
        conditions (the latest slot-0 means of the `tuning.context` fields; None if unknown)."""
        st, d = self.ex.state, self.seg.declaration
        bv = d.variants[st.baseline_variant] if d.variants else ""
        s0 = self.last_stats.get(0)
        ctx = None
        if s0 is not None and self.g.tuning.context:
            ctx = {f: s0.fields[f].mean for f in self.g.tuning.context if f in s0.fields and s0.fields[f].count}
        return dict(zip(self.knob_names, st.baseline)), bv, ctx

    def _fold_timings(self) -> None:
        """Cycle durations into the metrics histogram (one lock per batch), then trim every stage
        to its last TIMINGS_KEPT samples."""
        xs = self.timings["cycle"]
        self.metrics.observe_cycles(xs[self._cycles_folded:])
        self._cycles_folded = len(xs)
        for k, xs in self.timings.items():
            if len(xs) > 2 * TIMINGS_KEPT:
                cut = len(xs) - TIMINGS_KEPT
                del xs[:cut]
                if k == "cycle":
                    self._cycles_folded -= cut

    def timing_summary(self, keys=None) -> dict[str, dict[str, float]]:
        """p50/p99/max in microseconds of each decision-path stage over the last samples."""
        out = {}
        for k in keys or self.timings:
            xs = self.timings[k][-TIMINGS_KEPT:]
            if xs:
                ys = sorted(xs)
                out[k] = {"n": len(ys), "p50_us": ys[len(ys) // 2] * 1e6,
                          "p99_us": ys[min(len(ys) - 1, int(len(ys) * 0.99))] * 1e6, "max_us": ys[-1] * 1e6}
        return out

    def cycle(self) -> None:
        now = time.monotonic_ns()
        if self.seg is None:
            if not self._try_attach(now):
                return
        seg, ex = self.seg, self.ex
        check = now >= self._next_check_ns
        if check:
            self._next_check_ns = now + CHECK_NS
            if not seg.is_current():
                self._detach("the data plane closed or replaced its segment")
                return
        self.cycles += 1
        period_ns, lease_ns, settle_ns = self._ns
        window = now - self.last_cycle_ns if self.last_cycle_ns else period_ns
        self.last_cycle_ns = now
        c0 = time.thread_time()
        propose_cycle = False            # a Tier 2 proposal was submitted in this cycle
        t0 = time.perf_counter()
        # one C call: drain every ring, renew the lease, read the plane's state, summarise
        _drained, used, st = seg.poll_summary(now, now + lease_ns, self.generation, self.published_ns + settle_ns,
                                              self._qmask)
        slots = telemetry(seg.slot_records, seg.stats, self.field_names, self.generation, window) if used else ()
        t1 = time.perf_counter()
        tm = self.timings
        tm["summarize"].append(t1 - t0)
        if st.state != spec.STATE_READY:
            self._detach("the data plane is closing its segment")
            return
        lease_ok = st.lease_state == spec.LEASE_ACTIVE or self.generation == 0
        out = ex.step(now, CycleInput(now, self.generation, slots, st.ack_generation, lease_ok))
        self._handle(now, out)
        tm["t1_step"].append(time.perf_counter() - t1)
        for s in slots:
            self.last_stats[s.slot] = s
        drv = self.driver
        t2_in = None     # (baseline, baseline variant, context): built once a cycle, when Tier 2 needs it
        if drv is not None and self.g.tuning.context:
            # Tier 2 follows the conditions every cycle; when they moved to another regime it
            # withdraws the experiment it made for the old ones (a cancel leaves the baseline as is)
            t2_in = self._tier2_inputs()
            if drv.observe(t2_in[2], t2_in[0], t2_in[1], now) \
                    and ex.exp is not None and drv.pending is not None and ex.exp.p.proposal_id == drv.pending.proposal_id:
                self._handle(now, ex.command(now, Command("cancel", "tier2", f"conditions changed (regime {list(drv.regime)})")))
        # Proposals only when Tier 1 is idle (operator first, then Tier 2), never after an overrun.
        if ex.exp is None and self.driver is not None:
            self.driver.on_experiment_end()
        if time.monotonic_ns() - now > period_ns:
            self.overruns += 1
        elif ex.mstate is State.IDLE or (ex.mstate in (State.COOLDOWN, State.ABORTING) and drv is not None
                                         and drv.regime_due() and ex.relief_ready(now)):
            relief_only = ex.mstate is not State.IDLE   # only the regime's preset, which relief may start now
            if self.operator_queue and not relief_only:
                p, fut = self.operator_queue.pop(0)
                v = self._submit(now, p)
                if not fut.done():
                    fut.set_result(v)
            elif self.driver is not None:
                baseline, bv, ctx = t2_in or self._tier2_inputs()
                c2 = time.thread_time()
                t2 = time.perf_counter()
                p = self.driver.next_proposal(baseline, bv, ctx, now, regime_only=relief_only)
                t3 = time.perf_counter()
                c3 = time.thread_time()
                if p is not None:
                    tm["t2_decision"].append(t3 - t2)
                    tm["t2_decision_cpu"].append(c3 - c2)
                    # t1_apply: proposal -> snapshot in shared memory (the decision and the publish);
                    # the rest of the proposal's work (t1_deferred) follows the publish
                    v = self._submit(now, p, record=False)
                    t5, c5 = self._published_at
                    t6 = time.perf_counter()
                    try:
                        self.driver.on_verdict(v)
                    finally:   # the verdict is applied: its events are recorded whatever happens
                        self._record(now, v.events)
                    t7 = time.perf_counter()
                    tm["t1_bookkeeping"].append(t7 - t6)
                    tm["t1_deferred"].append(t7 - t5)
                    tm["t1_deferred_cpu"].append(time.thread_time() - c5)
                    tm["t1_total"].append(t7 - t3)
                    propose_cycle = True
        if self.bus is not None:
            self._bus_summary(now)
        if check and self.ledger is not None and not self.ledger.healthy and not ex.state.safe_mode:
            # disk full, unwritable path or a full queue: audit is sacred, so stop changing things
            err = self.ledger.state.error or "audit queue full"
            self._handle(now, ex.command(now, Command("enter_safe_mode", "runtime", f"audit ledger unhealthy: {err}")))
        tm["cycle"].append((time.monotonic_ns() - now) / 1e9)   # into the metrics by _fold_timings
        if propose_cycle:
            tm["propose_cycle_cpu"].append(time.thread_time() - c0)

    # ---- commands -----------------------------------------------------------------------

    def status(self, cycle_quantiles: bool = True) -> RuntimeStatus:
        """cycle_quantiles=False skips sorting the cycle timings (the metrics only read overruns)."""
        seg, ex = self.seg, self.ex
        xs = self.timings["cycle"]
        ct = self.timing_summary(("cycle",)).get("cycle", {}) if cycle_quantiles else {}
        cyc = CycleStatus(last_s=xs[-1] if xs else 0.0, p50_s=ct.get("p50_us", 0.0) / 1e6,
                          p99_s=ct.get("p99_us", 0.0) / 1e6, overruns=self.overruns)
        cfg = ConfigStatus(self.config_path, self.last_reload_ok, self.last_reload_time, self.last_reload_error)
        aud = AuditStatus()
        if self.ledger is not None:
            ls = self.ledger.state
            aud = AuditStatus(depth=ls.depth, high_water=ls.high_water_total, capacity=ls.capacity,
                              healthy=ls.healthy)
        bus = BusStatus(enabled=False)
        if self.bus is not None:
            bs = self.bus.state
            bus = BusStatus(enabled=True, connected=bs.connected, queued=bs.pending_events + bs.inbox_depth,
                            dropped=bs.dropped_events_total + bs.dropped_summaries_total, spooled=bs.spooled_total)
        base = RuntimeStatus(target=self.g.target, version=__version__, config=cfg, cycle=cyc, audit=aud, bus=bus,
                             uptime_s=time.monotonic() - self.started_mono, metrics_port=self.metrics_port)
        if seg is None or ex is None:
            return base
        st = seg.plane_state()
        snap = ex.snapshot
        d = seg.declaration
        knobs, slots = (), ()
        if snap is not None:
            knobs = tuple(KnobStatus(k.name, ex.state.baseline[i], tuple(s.knobs[i] for s in snap.slots))
                          for i, k in enumerate(d.knobs))
            slots = tuple(SlotStatus(s.weight, d.variants[s.variant] if s.variant < len(d.variants) else "")
                          for s in snap.slots)
        objs, slos = [], []
        for sl, t in sorted(self.last_stats.items()):
            for term in self.g.objective.terms:
                fs = t.fields.get(term.field)
                if fs is not None:
                    objs.append(Statistic(f"{term.field}_{term.stat}", sl, float(getattr(fs, term.stat, fs.mean))))
            for s in self.g.slos:
                fs = t.fields.get(s.field)
                if fs is not None and s.stat in ("mean", "p50", "p95", "p99", "min", "max"):
                    v = float(getattr(fs, s.stat))
                    lim = s.max if s.max is not None else s.min
                    br = (v > s.max) if s.max is not None else (v < s.min if s.min is not None else False)
                    slos.append(Statistic(s.name, sl, v, lim, br))
        rings = tuple(RingStatus(r.fill_ratio, r.drops) for r in (seg.ring_stats(i) for i in range(seg.n_rings)))
        return msgspec.structs.replace(
            base, epoch=seg.epoch, attached=True, dataplane_pid=seg.creator_pid,
            lease=LeaseStatus(deadline_monotonic_s=st.lease_deadline_ns / 1e9, ok=st.lease_state == spec.LEASE_ACTIVE,
                              lapses=st.lease_lapses),
            generation_published=self.generation, generation_acked=st.ack_generation,
            knobs=knobs, slots=slots, objectives=tuple(objs), slos=tuple(slos),
            rollout_state=ex.mstate.value, experiment_id=ex.exp.p.proposal_id if ex.exp is not None else "",
            safe_mode=ex.state.safe_mode, safe_mode_reason=self.safe_mode_reason if ex.state.safe_mode else "",
            kill_switch=ex.state.kill_switch, breaches=dict(self.breaches), rings=rings,
            proposals={k: v for k, v in self.metrics.counts()["proposals"].items() if v},
            rollbacks={k: v for k, v in self.metrics.counts()["rollbacks"].items() if v},
            fast_path={"accepted": ex.fast_accepts, "mismatch": ex.mismatches, "plans": ex.plans,
                       **{f"declined_{k}": v for k, v in sorted(ex.fast_declines.items())}})

    def reload(self) -> dict:
        try:
            g = load_guardrails(self.config_path)
        except (ConfigError, OSError) as e:
            msgs = e.errors if isinstance(e, ConfigError) else [f"{self.config_path}: {e}"]
            self.last_reload_ok, self.last_reload_error = False, "; ".join(msgs)[:500]
            raise CommandError("reload refused, running config kept:\n" + "\n".join(msgs))
        if g.target != self.g.target:
            self.last_reload_ok, self.last_reload_error = False, "target changed"
            raise CommandError(f"reload refused: target changed from {self.g.target!r} to {g.target!r} "
                               "(restart the unit instead); running config kept")
        now = time.monotonic_ns()
        if self.ex is not None:
            try:
                out = self.ex.reload(now, g, self.config_generation + 1)
            except ValueError as e:
                self.last_reload_ok, self.last_reload_error = False, str(e)[:500]
                raise CommandError(str(e))
            self._handle(now, out)
            self.driver = self._new_driver(g, self.seg.declaration)
        self.g = g
        self._qf = self._quantile_fields(g)
        self._ns = self._periods_ns(g)
        self._audit_batch_ns = int(g.audit.batch_s * NS)
        if self.seg is not None:
            self._qmask = quantile_mask(self.field_names, self._qf)
        self.config_generation += 1
        self.last_reload_ok, self.last_reload_time, self.last_reload_error = True, time.time(), ""
        return {"config_generation": self.config_generation}

    def command(self, name: str) -> dict:
        if self.ex is None:
            raise CommandError(f"not attached to /arqon.{self.g.target} yet; nothing to {name}")
        now = time.monotonic_ns()
        self._handle(now, self.ex.command(now, Command(name, "operator")))
        return {"state": self.ex.mstate.value, "generation": self.generation}

    async def propose(self, args: dict) -> dict:
        """An operator's proposal (or a fault injection): it goes through Tier 1 like any other,
        so every rule applies. It waits for the next cycle in which Tier 1 is idle (one
        experiment per scope) and takes precedence over Tier 2 there; the verdict comes back
        with its rule, value and limit."""
        if self.ex is None:
            raise CommandError(f"not attached to /arqon.{self.g.target} yet; nothing to propose to")
        try:
            arm = msgspec.convert({"knobs": args.get("knobs") or {}, "variant": args.get("variant")}, Arm)
            self.manual_seq += 1
            p = Proposal(f"op-{os.getpid()}-{self.manual_seq}", args.get("kind", "rollout"), (arm,),
                         source="operator", note=str(args.get("note", "")))
        except (msgspec.ValidationError, TypeError) as e:
            raise CommandError(f"propose: bad arguments: {e}; expected knobs {{name: number}}, variant, kind")
        fut = asyncio.get_running_loop().create_future()
        self.operator_queue.append((p, fut))
        try:
            v = await asyncio.wait_for(fut, timeout=float(args.get("timeout_s", 20.0)))
        except asyncio.TimeoutError:
            self.operator_queue = [(q, f) for q, f in self.operator_queue if f is not fut]
            raise CommandError("propose: Tier 1 stayed busy with another experiment; nothing was applied "
                               "(retry, or `arqond rollback` first)") from None
        return {"accepted": v.accepted, "proposal_id": v.proposal_id, "rule": v.rule, "value": v.value,
                "limit": v.limit, "message": v.message, "generation": self.generation}

    def _submit(self, now: int, p: Proposal, record: bool = True):
        """Tier 1 decides on `p` and, if accepted, its snapshot is published at once; then Tier 1
        completes the verdict (audit events, state). Returns the verdict with its events.
        record=False leaves the events to the caller, who must `_record` them before anything else."""
        ex, tm = self.ex, self.timings
        t0, c0 = time.perf_counter(), time.thread_time()
        v = ex.propose(now, p, defer=True)       # the rules and the snapshot: nothing else
        t1 = time.perf_counter()
        snap = v.staged if v.staged is not None else v.snapshot   # staged: decided by the fast path
        if snap is not None:
            self._publish(now, snap)             # the data plane sees the change first
        t2, c2 = time.perf_counter(), time.thread_time()
        tm["t1_propose"].append(t1 - t0)
        tm["t1_apply"].append(t2 - t0)
        tm["t1_apply_fast" if v.staged is not None else "t1_apply_slow"].append(t2 - t0)
        tm["t1_apply_cpu"].append(c2 - c0)
        # audit events and state: whole before anything else runs (a FastPathMismatch, a bug,
        # propagates: the cycle's handler snaps back to the baseline)
        events = ex.complete()
        v = msgspec.structs.replace(v, events=events, snapshot=ex.state.live if v.staged is not None else v.snapshot,
                                    staged=None)
        tm["t1_complete"].append(time.perf_counter() - t2)
        self._published_at = (t2, c2)            # for the caller's t1_deferred
        if record:
            self._record(now, v.events)
        return v

    async def handle(self, cmd: str, args: dict) -> Any:
        if cmd == "status":
            return msgspec.to_builtins(self.status())
        if cmd in ("freeze", "thaw", "rollback", "snapback"):
            return self.command(cmd)
        if cmd == "reload":
            return self.reload()
        if cmd == "timings":
            return self.timing_summary()
        if cmd == "propose":
            return await self.propose(args)
        if cmd == "catalog":
            return [msgspec.to_builtins(c) for c in self.g.catalog.variants]
        raise CommandError(f"unknown command {cmd!r}")

    # ---- lifecycle --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Clean stop: baseline only, lease released, ledger flushed."""
        now = time.monotonic_ns()
        if self.seg is not None and self.ex is not None:
            try:
                self._handle(now, self.ex.command(now, Command("snapback", "runtime", "daemon stopping")))
            except Exception:  # noqa: BLE001 - stopping must not fail half-way
                log.exception("snapback on stop failed")
            self.seg.renew_lease(0)   # released: the data plane serves slot 0 by itself
            self.seg.close()
            self.seg = None
        if self.ledger is not None:
            self.ledger.close(10.0)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self._sighup)
        host, _, port = self.metrics_address.rpartition(":")
        self.metrics_server, self.metrics_port = serve_metrics(self.metrics.registry, host or "127.0.0.1", int(port))
        control = ControlServer(self.control_path, self.handle, commands=COMMANDS + ("propose", "timings"))
        await control.start()
        self._start_bus()
        sdnotify.status(f"waiting for /arqon.{self.g.target}")
        wd = sdnotify.watchdog_interval()
        self._pacer = sdnotify.WatchdogPacer(wd) if wd else None
        self._timer = CycleTimer()
        loop.add_reader(self._timer.fd, self._tick)
        self._tick_period_ns = NS // 10           # until attached: look for the segment 10x a second
        self._timer.arm_every(time.monotonic_ns(), self._tick_period_ns)
        try:
            await self.stop_event.wait()          # cycles run in _tick, from the event loop
            if self._fatal is not None:
                raise self._fatal
        finally:
            loop.remove_reader(self._timer.fd)
            self._timer.close()
            sdnotify.stopping()
            self.shutdown()
            await control.close()
            self.metrics_server.shutdown()
            if self.bus is not None:
                self.bus.stop(5.0)

    def _tick(self) -> None:
        """One cycle, then the bookkeeping that may wait (audit writer wake-up, metrics status,
        watchdog), then the timer for the next deadline. Runs as the timerfd's reader callback."""
        if not _lib.arqd_timer_ack(self._timer.fd) or self.stop_event.is_set():
            return                                # spurious wake-up, or stopping
        try:
            self.cycle()
        except SystemExit as e:                   # refuse to run (config does not match): stop
            self._fatal = e
            self.stop_event.set()
            return
        except Exception:  # noqa: BLE001 - a bug in one cycle must not leave a candidate live
            log.exception("cycle failed; snapping back to the baseline")
            if self.ex is not None:
                now = time.monotonic_ns()
                self._handle(now, self.ex.command(now, Command("snapback", "runtime", "cycle exception")))
        try:
            now = time.monotonic_ns()
            self._wake_audit(now)
            if self.seg is not None and not self._ready:
                sdnotify.ready(f"attached to /arqon.{self.g.target}")
                self._ready = True
            if now >= self._next_metrics_ns:
                self._next_metrics_ns = now + METRICS_REFRESH_NS
                self._fold_timings()
                self.metrics.update(self.status(cycle_quantiles=False))
            if self._pacer is not None and self._pacer.due(now / NS):
                sdnotify.watchdog()
            # The timer is periodic: re-armed only when the period changes (attach, detach, a
            # reload of cycle.period_s), not once per cycle. A cycle that fell behind is one
            # wake-up whatever it missed (the ack above consumes the count): no burst to catch up.
            period = self._ns[0] if self.seg is not None else NS // 10
            if period != self._tick_period_ns:
                self._tick_period_ns = period
                self._timer.arm_every(time.monotonic_ns() + period, period)
        except BaseException as e:                # noqa: BLE001 - never a silent stall: stop and say why
            log.exception("decision loop bookkeeping failed; stopping")
            self._fatal = e
            self.stop_event.set()

    def _sighup(self) -> None:
        try:
            self.reload()
            log.info("reloaded %s", self.config_path)
        except CommandError as e:
            log.error("%s", e)


def run_daemon(config: str, **kw) -> None:
    import sys

    import uvloop
    # The ledger, bus and metrics threads share the GIL with the decision loop; the default
    # 5 ms switch interval would let any of them delay a cycle (and a rollback) by 5 ms.
    sys.setswitchinterval(0.0005)
    d = Daemon(config, **kw)
    uvloop.run(d.run())
