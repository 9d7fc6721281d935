"""The decision loop's group commit of the audit ledger (Daemon._wake_audit): urgent events wake
the writer at the end of their cycle, bookkeeping events at most every audit.batch_s."""
from __future__ import annotations

from types import SimpleNamespace

from daemon.runtime.loop import URGENT_EVENTS, Daemon
from daemon.tier1.config import load_guardrails

MS = 1_000_000


class _Ledger:
    def __init__(self) -> None:
        self.wakes: list[int] = []


def _loop(batch_s: float) -> SimpleNamespace:
    d = SimpleNamespace(ledger=_Ledger(), _audit_pending=False, _audit_urgent=False, _audit_woken_ns=0,
                        _audit_batch_ns=int(batch_s * 1e9))
    d.ledger.wake = lambda: d.ledger.wakes.append(d.now)
    return d


def _end_of_cycle(d: SimpleNamespace, now: int, pending: bool = False, urgent: bool = False) -> None:
    d.now = now
    d._audit_pending = d._audit_pending or pending
    d._audit_urgent = d._audit_urgent or urgent
    Daemon._wake_audit(d, now)


def test_bookkeeping_waits_for_the_batch_and_urgent_events_do_not():
    d = _loop(0.1)
    _end_of_cycle(d, 1000 * MS, pending=True)          # first batch: nothing written for > batch_s
    assert d.ledger.wakes == [1000 * MS]
    for t in range(1010, 1100, 10):                    # routine events every cycle: held
        _end_of_cycle(d, t * MS, pending=True)
    assert d.ledger.wakes == [1000 * MS]
    _end_of_cycle(d, 1100 * MS)                        # batch_s after the last wake: written
    assert d.ledger.wakes == [1000 * MS, 1100 * MS]
    _end_of_cycle(d, 1110 * MS, pending=True, urgent=True)   # a rollback: at the end of its cycle
    assert d.ledger.wakes[-1] == 1110 * MS
    _end_of_cycle(d, 1120 * MS)                        # nothing pending: no wake
    assert len(d.ledger.wakes) == 3


def test_batch_zero_writes_every_cycle_and_the_default_is_documented():
    d = _loop(0.0)
    for t in (10, 20, 30):
        _end_of_cycle(d, t * MS, pending=True)
    assert d.ledger.wakes == [10 * MS, 20 * MS, 30 * MS]
    g = load_guardrails("target: t\nknobs: {k: {}}\nobjective: {terms: [{field: f, stat: mean}]}\n")
    assert g.audit.batch_s == 0.1
    assert {"Promotion", "Rollback", "KillSwitch", "SafeModeEntered"} <= URGENT_EVENTS
