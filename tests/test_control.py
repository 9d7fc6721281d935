"""Control socket: real Unix socket round trips, permissions, limits, peer check, client errors."""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from pathlib import Path

import msgspec
import pytest
import uvloop

from daemon.runtime import control
from daemon.runtime.control import (
    CommandError,
    ControlError,
    ControlServer,
    DaemonNotRunning,
    UnsafeSocketDir,
    call,
    call_target,
    check_target,
    ensure_private_dir,
    find_socket,
    peer_allowed,
    socket_path,
)
from daemon.runtime.status import RuntimeStatus


class ServerThread:
    """Runs a ControlServer on its own event loop so the blocking client can be tested for real."""

    def __init__(self, path: Path, handler, new_loop=asyncio.new_event_loop, **kw):
        self.loop = new_loop()
        self.errors: list[dict] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.errors.append(ctx))
        self.server = ControlServer(path, handler, **kw)
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(5), "control server did not start"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sockdir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def handler(cmd, args):
    if cmd == "status":
        return RuntimeStatus(target="t1", attached=True, generation_published=3)
    if cmd == "freeze":
        return {"frozen": True, "by": args.get("who", "?")}
    if cmd == "reload":
        raise CommandError("guardrails.yaml:12: knobs.decay.max_delta: expected float, got str; "
                           "kept the running config")
    if cmd == "rollback":
        raise RuntimeError("boom")
    return {"cmd": cmd}


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_round_trip_sync_and_async_handlers(sockdir, new_loop):
    path = sockdir / "t1.sock"

    async def ahandler(cmd, args):
        await asyncio.sleep(0)
        return handler(cmd, args)

    for h in (handler, ahandler):
        srv = ServerThread(path, h, new_loop)
        try:
            st = call(path, "status")
            assert msgspec.convert(st, RuntimeStatus).generation_published == 3
            assert call(path, "freeze", {"who": "ops"}) == {"frozen": True, "by": "ops"}
            with pytest.raises(ControlError, match=r"reload: guardrails.yaml:12: .*kept the running config"):
                call(path, "reload")
            with pytest.raises(ControlError, match="unknown command 'explode'; expected one of status"):
                call(path, "explode")
            with pytest.raises(ControlError, match="rollback: internal error RuntimeError: boom"):
                call(path, "rollback")
            assert srv.errors and isinstance(srv.errors[-1]["exception"], RuntimeError)  # logged, not swallowed
        finally:
            srv.stop()
        assert not path.exists()  # close removes the socket


def test_several_requests_on_one_connection_and_bad_json(sockdir):
    path = sockdir / "t.sock"
    srv = ServerThread(path, handler)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            f = s.makefile("rwb")
            f.write(b'{"cmd": "thaw"}\n{not json}\n{"cmd": "catalog", "args": {}, "extra": 1}\n')
            f.flush()
            r1, r2, r3 = (msgspec.json.decode(f.readline()) for _ in range(3))
        assert r1 == {"ok": True, "result": {"cmd": "thaw"}}
        assert r2["ok"] is False and r2["error"].startswith("bad request:")
        assert r3["ok"] is False and "extra" in r3["error"]
    finally:
        srv.stop()


def test_socket_and_directory_permissions(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    path = socket_path("cache-a", env)
    assert path == tmp_path / "arqond" / "cache-a.sock"
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    srv = ServerThread(path, handler)
    try:
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.getuid()
        assert find_socket("cache-a", env) == path
        assert call_target("cache-a", "thaw", env=env) == {"cmd": "thaw"}
    finally:
        srv.stop()


def test_client_finds_a_systemd_daemon_from_a_plain_shell(tmp_path):
    run = tmp_path / "run-arqond"        # stands in for /run/arqond (RuntimeDirectory=arqond)
    run.mkdir(mode=0o700)
    shell_env = {"XDG_RUNTIME_DIR": str(tmp_path / "user")}
    assert find_socket("cache-a", shell_env, systemd_dir=run) == tmp_path / "user" / "arqond" / "cache-a.sock"
    srv = ServerThread(socket_path("cache-a", {"RUNTIME_DIRECTORY": str(run)}), handler)
    try:
        assert find_socket("cache-a", shell_env, systemd_dir=run) == run / "cache-a.sock"
    finally:
        srv.stop()


def test_socket_path_rules(tmp_path):
    assert socket_path("a", {"RUNTIME_DIRECTORY": f"{tmp_path}:/other"}, create=False) == tmp_path / "a.sock"
    assert socket_path("a", {"XDG_RUNTIME_DIR": "/x"}, create=False) == Path("/x/arqond/a.sock")
    assert socket_path("a", {}, create=False) == Path(f"/tmp/arqond-{os.getuid()}/a.sock")
    for bad in ("../etc", "a/b", ".hidden", "", "-x", "x" * 65):
        with pytest.raises(ValueError, match="target name"):
            check_target(bad)
    assert check_target("cache-a@eu_1.v2") == "cache-a@eu_1.v2"


def test_unsafe_directories_are_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    with pytest.raises(UnsafeSocketDir, match="mode 0755, expected 0700"):
        ensure_private_dir(loose)
    with pytest.raises(UnsafeSocketDir, match=f"owned by uid {os.getuid()}, expected {os.getuid() + 1}"):
        ensure_private_dir(loose, uid=os.getuid() + 1)
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(UnsafeSocketDir, match="not a directory"):
        ensure_private_dir(link)
    fresh = ensure_private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o700


def test_oversize_request_rejected(sockdir):
    path = sockdir / "t.sock"
    srv = ServerThread(path, handler, max_request_bytes=1024)
    try:
        with pytest.raises(ControlError, match="request too large: over 1024 bytes"):
            call(path, "freeze", {"who": "x" * 5000})
        assert call(path, "freeze", {"who": "y"})["by"] == "y"  # the server survived
    finally:
        srv.stop()


def test_slow_client_is_cut_off(sockdir):
    path = sockdir / "t.sock"
    srv = ServerThread(path, handler, read_timeout_s=0.05)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(b'{"cmd": "sta')   # never finishes the line
            assert s.recv(100) == b""    # server closed the connection
    finally:
        srv.stop()


def test_slow_async_handler_times_out(sockdir):
    path = sockdir / "t.sock"

    async def slow(cmd, args):
        await asyncio.sleep(10)

    srv = ServerThread(path, slow, handler_timeout_s=0.05)
    try:
        with pytest.raises(ControlError, match="status: no answer within 0.05 s"):
            call(path, "status")
    finally:
        srv.stop()


def test_peer_credential_check(sockdir):
    assert peer_allowed(1000, 1000)
    assert peer_allowed(0, 1000)            # root may always command
    assert not peer_allowed(1001, 1000)
    # A server that believes it runs as another uid rejects us (unless we are root, who is allowed).
    path = sockdir / "t.sock"
    me = os.getuid()
    srv = ServerThread(path, handler, daemon_uid=me + 1)
    try:
        if me == 0:
            assert call(path, "thaw") == {"cmd": "thaw"}
        else:
            with pytest.raises(ControlError, match=f"peer uid {me} is neither the daemon's uid {me + 1}"):
                call(path, "thaw")
    finally:
        srv.stop()
    # The credentials read from a real socket pair are ours.
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert control.peer_credentials(a) == (os.getpid(), os.getuid(), os.getgid())


def test_client_errors(sockdir):
    with pytest.raises(DaemonNotRunning, match="no arqond daemon at .*missing.sock"):
        call(sockdir / "missing.sock", "status")
    # A stale socket file with no listener: connection refused.
    stale = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()
    with pytest.raises(DaemonNotRunning):
        call(stale, "status")
    # A listener that never answers: timeout is a ControlError naming the command.
    quiet = sockdir / "quiet.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as q:
        q.bind(str(quiet))
        q.listen(1)
        with pytest.raises(ControlError, match="status: no reply from .* within 0.1 s"):
            call(quiet, "status", timeout=0.1)
    assert issubclass(DaemonNotRunning, ControlError)


def test_stale_socket_replaced_live_socket_refused(sockdir):
    path = sockdir / "t.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()                                  # stale file left by a killed daemon
    srv = ServerThread(path, handler)
    try:
        assert call(path, "thaw") == {"cmd": "thaw"}
        second = ControlServer(path, handler)
        with pytest.raises(RuntimeError, match="in use by another arqond"):
            asyncio.run(second.start())
        assert call(path, "thaw") == {"cmd": "thaw"}   # the first one still serves
    finally:
        srv.stop()
