"""sd_notify(3) without libsystemd: one datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`.

`$NOTIFY_SOCKET` is a filesystem path, or an abstract socket name when it starts with `@`. Every
function is a no-op returning False when the variable is unset (not started by systemd with
Type=notify), and raises OSError if systemd's socket refuses the message: the caller decides
whether that matters (a lost WATCHDOG=1 gets the service killed, so the loop should log it).

Ping the watchdog from the decision loop after a completed cycle, never from a side thread: a
thread would keep pinging while the loop is stuck, which is what the watchdog exists to catch.
Pace the pings with `WatchdogPacer` (systemd recommends every half interval).

Environment is read at call time from `env` (default `os.environ`) so tests pass their own.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Mapping


def _address(value: str) -> str:
    # Abstract namespace: a leading NUL instead of '@' (Linux only, which is where systemd is).
    return "\0" + value[1:] if value.startswith("@") else value


def notify(*assignments: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `KEY=VALUE` lines as one datagram. False if not under systemd, True once sent."""
    env = os.environ if env is None else env
    target = env.get("NOTIFY_SOCKET")
    if not target:
        return False
    if not (target.startswith("/") or target.startswith("@")):
        raise OSError(f"NOTIFY_SOCKET={target!r}: expected an absolute path or an @abstract name")
    msg = "\n".join(assignments).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(_address(target))
        s.sendall(msg)
    return True


def _one_line(text: str) -> str:
    # A newline would start a new assignment systemd would try to interpret.
    return " ".join(text.splitlines())


def ready(status: str | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Startup finished: systemd considers the unit started (ExecStartPost and dependents run)."""
    lines = ["READY=1"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify(*lines, env=env)


def status(text: str, env: Mapping[str, str] | None = None) -> bool:
    """Free-form one-line status shown by `systemctl status`."""
    return notify(f"STATUS={_one_line(text)}", env=env)


def watchdog(env: Mapping[str, str] | None = None) -> bool:
    """Keep-alive ping; must arrive at least every WatchdogSec."""
    return notify("WATCHDOG=1", env=env)


def reloading(monotonic_usec: int | None = None, env: Mapping[str, str] | None = None) -> bool:
    """A reload started. MONOTONIC_USEC is CLOCK_MONOTONIC in microseconds (sd_notify's contract).
    Send `ready()` again when the reload is done, whether it was accepted or refused."""
    if monotonic_usec is None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", env=env)


def stopping(env: Mapping[str, str] | None = None) -> bool:
    """Shutdown started (snapback and audit flush follow)."""
    return notify("STOPPING=1", env=env)


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """WatchdogSec in seconds if the watchdog is enabled for this process, else None.

    WATCHDOG_PID, when set, names the process that must ping; if it is not us (e.g. a child
    inherited the environment) the watchdog is not ours to serve.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        v = int(usec)
    except ValueError:
        return None
    return v / 1e6 if v > 0 else None


class WatchdogPacer:
    """Decides when the next WATCHDOG=1 is due: every `interval_s / 2` (pure; time passed in)."""

    def __init__(self, interval_s: float | None):
        self.period_s = None if interval_s is None else interval_s / 2
        self._next = float("-inf")

    def due(self, now_s: float) -> bool:
        """True (and schedule the next ping) if a ping should be sent at monotonic time `now_s`."""
        if self.period_s is None or now_s < self._next:
            return False
        self._next = now_s + self.period_s
        return True
