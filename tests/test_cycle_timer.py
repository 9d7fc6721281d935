"""The decision loop's pacing: a periodic timerfd on an absolute CLOCK_MONOTONIC grid."""
from __future__ import annotations

import select
import time

import pytest

from daemon.runtime.loop import CycleTimer


def test_fires_at_the_absolute_first_deadline_not_before_and_acks_once():
    t = CycleTimer()
    try:
        assert t.ack() == 0                                   # nothing yet: a spurious wake-up says 0
        for delay_ns in (2_000_000, 500_000, 1_000_000):
            deadline = time.monotonic_ns() + delay_ns
            t.arm_every(deadline, 10**9)                      # the period is far off: one expiry here
            r, _, _ = select.select([t.fd], [], [], 1.0)
            woke = time.monotonic_ns()
            assert r == [t.fd] and woke >= deadline           # never early: same clock as monotonic_ns
            assert woke - deadline < 200_000_000              # and not lost (generous: a busy CI host)
            assert t.ack() == 1 and t.ack() == 0
        t.arm_every(time.monotonic_ns() - 5_000_000, 10**9)   # behind schedule: fires at once
        assert select.select([t.fd], [], [], 1.0)[0] == [t.fd] and t.ack() == 1
        t.arm_every(0, 10**9)                                 # 0 would disarm a timerfd; it fires instead
        assert select.select([t.fd], [], [], 1.0)[0] == [t.fd] and t.ack() >= 1   # (every second since 1 ns)
    finally:
        t.close()


def test_periodic_timer_keeps_its_grid_and_a_late_reader_gets_one_wakeup():
    """The loop arms the timer once per period (arm_every): expirations on the grid first + k x
    period, never early; a reader that was late sees one readable fd and the missed count."""
    t = CycleTimer()
    try:
        period = 2_000_000
        first = time.monotonic_ns() + period
        t.arm_every(first, period)
        for k in range(5):
            assert select.select([t.fd], [], [], 1.0)[0] == [t.fd]
            assert time.monotonic_ns() >= first + k * period       # never early
            assert t.ack() >= 1
        time.sleep(0.021)                                           # late by ~10 periods
        assert select.select([t.fd], [], [], 1.0)[0] == [t.fd]
        assert t.ack() >= 9 and t.ack() == 0                        # one read: the count, then nothing
        with pytest.raises(OSError):
            t.arm_every(time.monotonic_ns(), 0)                     # period 0 would be one-shot: refused
    finally:
        t.close()
