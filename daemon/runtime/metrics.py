"""Prometheus exposition for one daemon.

Two kinds of facts reach the scrape:
- state that lives elsewhere (the segment, the lease, the audit queue, the bus client) arrives as
  the latest `RuntimeStatus` through `update()`; that only swaps a reference, so the loop pays
  nothing per field and a knob or slot that disappears leaves no stale series;
- events the loop sees one at a time (a cycle took 0.4 ms, a proposal was rejected) go through the
  `observe_*` / `count_*` methods, which are plain increments cheap enough for the 1 ms cycle.

Everything is rendered by one collector at scrape time, in the HTTP server's thread, from those two
sources. The collector owns its `CollectorRegistry` (never the global one), so several daemons or
tests can live in one process.

Naming: prefix `arqond_`, base units, counters end in `_total`, build labels in `arqond_build_info`.
Labels are bounded: knob (declaration), slot and ring (layout), slo (config, capped at
`max_label_values`), and outcome / reason / state from the fixed tuples in `status.py`.
"""
from __future__ import annotations

import bisect
import platform
import threading
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from .status import (
    EXPERIMENT_EVENTS,
    PROPOSAL_OUTCOMES,
    ROLLBACK_REASONS,
    ROLLOUT_STATES,
    RuntimeStatus,
)

# A decision cycle runs every ~1 ms and must finish well inside it; 50 ms is a stall.
CYCLE_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
)
# Publish -> data-plane ack: one data-plane tick at best, up to the ack timeout at worst.
ACK_BUCKETS_S: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9464


class _Histogram:
    """Fixed-bucket histogram without prometheus_client's per-child locks and `_created` series.

    Invariant: counts[i] is the number of observations v with bounds[i-1] < v <= bounds[i]
    (counts[-1] is the +Inf overflow). The lock keeps count and sum consistent for the scraper.
    """

    __slots__ = ("bounds", "counts", "sum", "lock")

    def __init__(self, bounds: Iterable[float]):
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.bounds, v)
        with self.lock:
            self.counts[i] += 1
            self.sum += v

    def observe_many(self, vs: Iterable[float]) -> None:
        """Several observations under one lock acquisition (same result as observe() of each)."""
        bounds, idx = self.bounds, bisect.bisect_left
        vs = list(vs)
        ix = [idx(bounds, v) for v in vs]
        with self.lock:
            counts, total = self.counts, self.sum
            for i, v in zip(ix, vs):
                counts[i] += 1
                total += v
            self.sum = total

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        with self.lock:
            counts = list(self.counts)
            total = self.sum
        cumulative, acc = [], 0
        for b, c in zip(self.bounds + (float("inf"),), counts):
            acc += c
            cumulative.append((repr(b) if b != float("inf") else "+Inf", acc))
        return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


def _fold(key: str, allowed: tuple[str, ...]) -> str:
    return key if key in allowed else "other"


class Metrics:
    """All arqond metrics of one daemon, in their own registry.

    Thread model: the decision loop calls `update` and the event methods; the HTTP thread calls
    `collect` (through the registry). Increments of distinct ints under the GIL are safe for a
    reader that tolerates a value one event old, which a scrape does.
    """

    def __init__(self, *, version: str = "", max_label_values: int = 64):
        self.version = version
        self.max_label_values = max_label_values
        self._status: RuntimeStatus | None = None
        self._proposals = dict.fromkeys(PROPOSAL_OUTCOMES, 0)
        self._rollbacks = dict.fromkeys(ROLLBACK_REASONS, 0)
        self._experiments = dict.fromkeys(EXPERIMENT_EVENTS, 0)
        self._breaches: dict[str, int] = {}
        self._cycle = _Histogram(CYCLE_BUCKETS_S)
        self._ack = _Histogram(ACK_BUCKETS_S)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # --- inputs -------------------------------------------------------------------------------
    def update(self, status: RuntimeStatus) -> None:
        """Make `status` the source of every state gauge. O(1): rendering happens at scrape time."""
        self._status = status

    def observe_cycle(self, seconds: float) -> None:
        """One decision cycle's wall duration, in seconds."""
        self._cycle.observe(seconds)

    def observe_cycles(self, seconds: list[float]) -> None:
        """A batch of cycle durations, in seconds: the loop folds its own timing record in a few
        times a second instead of taking the histogram's lock every cycle."""
        if seconds:
            self._cycle.observe_many(seconds)

    def observe_ack(self, seconds: float) -> None:
        """Delay from publishing a generation to the data plane acknowledging it, in seconds."""
        self._ack.observe(seconds)

    def count_proposal(self, outcome: str) -> None:
        """`outcome` from PROPOSAL_OUTCOMES; anything else counts as "other"."""
        self._proposals[_fold(outcome, PROPOSAL_OUTCOMES)] += 1

    def count_rollback(self, reason: str) -> None:
        """`reason` from ROLLBACK_REASONS; anything else counts as "other"."""
        self._rollbacks[_fold(reason, ROLLBACK_REASONS)] += 1

    def count_breach(self, slo: str) -> None:
        """A guardrail breach of SLO `slo` (a name from the config)."""
        if slo not in self._breaches and len(self._breaches) >= self.max_label_values:
            slo = "other"  # a config with hundreds of SLOs must not blow up the series count
        self._breaches[slo] = self._breaches.get(slo, 0) + 1

    def count_experiment(self, event: str) -> None:
        """`event` is one of EXPERIMENT_EVENTS: started, promoted, rolled_back."""
        if event not in self._experiments:
            raise ValueError(f"count_experiment: expected one of {EXPERIMENT_EVENTS}, got {event!r}")
        self._experiments[event] += 1

    def counts(self) -> dict[str, dict[str, int]]:
        """Copies of the event tallies, for the loop to put into `RuntimeStatus` (one tally, two views)."""
        return {"proposals": dict(self._proposals), "rollbacks": dict(self._rollbacks),
                "breaches": dict(self._breaches), "experiments": dict(self._experiments)}

    # --- output -------------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        info = InfoMetricFamily("arqond_build", "arqond build information.")
        info.add_metric([], {"version": self.version or "unknown",
                             "python": platform.python_version()})
        yield info
        yield from self._event_families()
        yield self._cycle.family("arqond_cycle_duration_seconds", "Wall time of one decision cycle.")
        yield self._ack.family("arqond_ack_latency_seconds",
                               "Delay from publishing a generation to the data plane acknowledging it.")
        if self._status is not None:
            yield from status_families(self._status)

    def _event_families(self) -> Iterator[Metric]:
        f = CounterMetricFamily("arqond_proposals", "Tier-2 proposals by Tier-1 outcome.", labels=["outcome"])
        for k, v in self._proposals.items():
            f.add_metric([k], v)
        yield f
        f = CounterMetricFamily("arqond_rollbacks", "Rollbacks to the baseline by reason.", labels=["reason"])
        for k, v in self._rollbacks.items():
            f.add_metric([k], v)
        yield f
        f = CounterMetricFamily("arqond_guardrail_breaches", "Guardrail breaches by SLO.", labels=["slo"])
        for k, v in list(self._breaches.items()):
            f.add_metric([k], v)
        yield f
        for event in EXPERIMENT_EVENTS:
            yield CounterMetricFamily(f"arqond_experiments_{event}", f"Experiments {event.replace('_', ' ')}.",
                                      value=self._experiments[event])

    def serve(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        """Serve /metrics from a daemon thread. Returns (server, bound_port); port 0 picks a free one.

        Stop with `server.shutdown(); server.server_close()`.
        """
        return serve(self.registry, host, port)


def serve(registry: CollectorRegistry, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """Start prometheus_client's HTTP exposition of `registry`; returns (server, bound_port)."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise OSError(e.errno, f"metrics: cannot listen on {host}:{port}: {e.strerror}; "
                               "choose another metrics port in the config or free this one") from e
    return server, server.server_port


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def status_families(s: RuntimeStatus) -> Iterator[Metric]:
    """Every state family derived from one status (pure: no clock, no I/O)."""
    yield _gauge("arqond_attached", "1 if attached to the data plane's segment.", float(s.attached))
    yield _gauge("arqond_uptime_seconds", "Seconds since the daemon started.", s.uptime_s)
    yield _gauge("arqond_lease_ok", "1 while the actuator lease is held.", float(s.lease.ok))
    yield CounterMetricFamily("arqond_lease_lapses", "Times the actuator lease lapsed.", value=s.lease.lapses)
    yield _gauge("arqond_generation_published", "Last snapshot generation published.", s.generation_published)
    yield _gauge("arqond_generation_acked", "Last snapshot generation the data plane acknowledged.",
                 s.generation_acked)
    fp = CounterMetricFamily("arqond_tier1_fast_path_proposals",
                             "Proposals Tier 1's admission fast path decided (accepted; mismatch: what went "
                             "live disagreed with the Python rules, snapped back) or left to the Python rules, "
                             "by reason (declined_*).", labels=["outcome"])
    for k, v in s.fast_path.items():
        if k != "plans":
            fp.add_metric([k], v)
    yield fp

    live = GaugeMetricFamily("arqond_knob_value", "Live knob value per traffic slot (knob's own unit).",
                             labels=["knob", "slot"])
    base = GaugeMetricFamily("arqond_knob_baseline_value", "Known-good baseline knob value.", labels=["knob"])
    for k in s.knobs:
        base.add_metric([k.name], k.baseline)
        for i, v in enumerate(k.live):
            live.add_metric([k.name, str(i)], v)
    yield live
    yield base
    w = GaugeMetricFamily("arqond_slot_weight_ratio", "Share of keys served by each traffic slot.",
                          labels=["slot"])
    for i, sl in enumerate(s.slots):
        w.add_metric([str(i)], sl.weight)
    yield w

    obj = GaugeMetricFamily("arqond_objective_value", "Measured objective per slot.", labels=["objective", "slot"])
    for x in s.objectives:
        obj.add_metric([x.name, str(x.slot)], x.value)
    yield obj
    slo = GaugeMetricFamily("arqond_slo_value", "Measured SLO statistic per slot.", labels=["slo", "slot"])
    lim = GaugeMetricFamily("arqond_slo_limit", "SLO limit per slot (same unit as the value).",
                            labels=["slo", "slot"])
    breached = GaugeMetricFamily("arqond_slo_breached", "1 while Tier 1 judges the SLO breached in this slot.",
                                 labels=["slo", "slot"])
    for x in s.slos:
        labels = [x.name, str(x.slot)]
        slo.add_metric(labels, x.value)
        breached.add_metric(labels, float(x.breached))
        if x.limit is not None:
            lim.add_metric(labels, x.limit)
    yield slo
    yield lim
    yield breached

    st = GaugeMetricFamily("arqond_rollout_state", "1 for the current rollout state.", labels=["state"])
    known = s.rollout_state in ROLLOUT_STATES
    for name in ROLLOUT_STATES:
        st.add_metric([name], float(name == s.rollout_state))
    st.add_metric(["unknown"], float(not known))
    yield st
    yield _gauge("arqond_experiment_active", "1 while an experiment is running.", float(bool(s.experiment_id)))
    yield _gauge("arqond_safe_mode", "1 while in safe mode (no changes are applied).", float(s.safe_mode))
    yield _gauge("arqond_kill_switch", "1 while the kill switch holds the baseline.", float(s.kill_switch))
    yield CounterMetricFamily("arqond_cycle_overruns", "Decision cycles that exceeded their period.",
                              value=s.cycle.overruns)

    fill = GaugeMetricFamily("arqond_ring_fill_ratio", "Telemetry ring occupancy.", labels=["ring"])
    drops = CounterMetricFamily("arqond_ring_dropped_records", "Records the data plane dropped on a full ring.",
                                labels=["ring"])
    for i, r in enumerate(s.rings):
        fill.add_metric([str(i)], r.fill_ratio)
        drops.add_metric([str(i)], r.drops)
    yield fill
    yield drops

    a = s.audit
    yield _gauge("arqond_audit_queue_depth", "Audit events waiting for the writer.", a.depth)
    yield _gauge("arqond_audit_queue_high_water", "Largest audit queue depth seen.", a.high_water)
    yield _gauge("arqond_audit_queue_capacity", "Audit queue capacity.", a.capacity)
    yield _gauge("arqond_audit_healthy", "0 once the audit queue overflowed.", float(a.healthy))

    b = s.bus
    yield _gauge("arqond_bus_connected", "1 while connected to the bus (0 if disabled).",
                 float(b.enabled and b.connected))
    yield _gauge("arqond_bus_queued_events", "Bus events waiting for the connection.", b.queued)
    yield CounterMetricFamily("arqond_bus_dropped_events", "Bus events dropped.", value=b.dropped)
    yield CounterMetricFamily("arqond_bus_spooled_events", "Bus events written to the local spool.",
                              value=b.spooled)

    c = s.config
    yield _gauge("arqond_config_last_reload_successful", "1 if the last config (re)load succeeded.",
                 float(c.last_reload_ok))
    yield _gauge("arqond_config_last_reload_success_timestamp_seconds",
                 "Unix time of the last successful config (re)load.", c.last_reload_time_s)
