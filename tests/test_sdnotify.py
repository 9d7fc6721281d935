"""sd_notify over a real AF_UNIX datagram socket, path and abstract, as systemd would listen."""
from __future__ import annotations

import os
import socket
import time

import pytest

from daemon.runtime import sdnotify


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(tmp_path / "notify.sock")
        s.bind(addr)
        env_value = addr
    else:
        name = f"arqond-test-{os.getpid()}-{time.monotonic_ns()}"
        s.bind("\0" + name)
        env_value = "@" + name
    s.settimeout(5)
    with s:
        yield s, {"NOTIFY_SOCKET": env_value}


def recv(s) -> list[str]:
    return s.recv(4096).decode().split("\n")


def test_messages(listener):
    s, env = listener
    assert sdnotify.ready("attached to cache-a\nepoch 7", env=env)
    assert recv(s) == ["READY=1", "STATUS=attached to cache-a epoch 7"]   # one line, no injected keys
    assert sdnotify.ready(env=env)
    assert recv(s) == ["READY=1"]
    assert sdnotify.status("canary 5%", env=env)
    assert recv(s) == ["STATUS=canary 5%"]
    assert sdnotify.watchdog(env=env)
    assert recv(s) == ["WATCHDOG=1"]
    assert sdnotify.stopping(env=env)
    assert recv(s) == ["STOPPING=1"]
    assert sdnotify.reloading(123456789, env=env)
    assert recv(s) == ["RELOADING=1", "MONOTONIC_USEC=123456789"]


def test_reloading_uses_the_monotonic_clock(listener):
    s, env = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    sdnotify.reloading(env=env)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = recv(s)
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_noop_without_notify_socket():
    assert sdnotify.ready("x", env={}) is False
    assert sdnotify.watchdog(env={"NOTIFY_SOCKET": ""}) is False


def test_errors_are_raised_not_hidden(tmp_path):
    with pytest.raises(OSError):
        sdnotify.watchdog(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with pytest.raises(OSError, match="expected an absolute path or an @abstract name"):
        sdnotify.watchdog(env={"NOTIFY_SOCKET": "relative/path"})


def test_watchdog_interval():
    assert sdnotify.watchdog_interval({}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    me = os.getpid()
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(me)}) == 2.5
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(me + 1)}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "42"}, pid=42) == 1e-6


def test_watchdog_pacer():
    p = sdnotify.WatchdogPacer(10.0)
    assert p.due(100.0)               # first ping right away
    assert not p.due(104.9)
    assert p.due(105.0)               # every half interval
    assert not p.due(109.0)
    assert p.due(200.0)
    off = sdnotify.WatchdogPacer(None)
    assert not off.due(0.0) and not off.due(1e9)
