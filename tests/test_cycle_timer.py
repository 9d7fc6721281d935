"""The decision loop's pacing: a timerfd armed at absolute CLOCK_MONOTONIC deadlines."""
from __future__ import annotations

import select
import time

from daemon.runtime.loop import CycleTimer


def test_fires_at_the_absolute_deadline_not_before_and_acks_once():
    t = CycleTimer()
    try:
        assert t.ack() == 0                                   # nothing yet: a spurious wake-up says 0
        for delay_ns in (2_000_000, 500_000, 1_000_000):
            deadline = time.monotonic_ns() + delay_ns
            t.arm(deadline)
            r, _, _ = select.select([t.fd], [], [], 1.0)
            woke = time.monotonic_ns()
            assert r == [t.fd] and woke >= deadline           # never early: same clock as monotonic_ns
            assert woke - deadline < 200_000_000              # and not lost (generous: a busy CI host)
            assert t.ack() == 1 and t.ack() == 0
        t.arm(time.monotonic_ns() - 5_000_000)                # behind schedule: fires at once
        assert select.select([t.fd], [], [], 1.0)[0] == [t.fd] and t.ack() == 1
        t.arm(0)                                              # 0 would disarm a timerfd; it fires instead
        assert select.select([t.fd], [], [], 1.0)[0] == [t.fd] and t.ack() == 1
    finally:
        t.close()
