"""The control socket: how `arqond status|freeze|thaw|rollback|snapback|reload|catalog` reach a daemon.

Wire format: one JSON object per line each way.
    request  {"cmd": "<name>", "args": {...}}
    response {"ok": true, "result": ...} | {"ok": false, "error": "<message a person can act on>"}

Access control is layered: the socket lives in a 0700 directory owned by the daemon's user, the
socket itself is 0600, and every connection's peer credentials (SO_PEERCRED) must show the daemon's
uid or root. Requests are bounded in size (`max_request_bytes`) and time (`read_timeout_s` to send a
request line, `handler_timeout_s` for an async handler to answer).

The server runs on the daemon's asyncio loop (uvloop in production) and hands each request to a
handler supplied by the decision loop: `handler(cmd, args) -> result`, sync or async. A handler
raises `CommandError` for a refusal the operator should read (e.g. "reload: guardrails.yaml:12 ...
kept the running config"); any other exception becomes an "internal error" reply and is re-raised
into the loop's exception handler so it is logged, not swallowed.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import socket
import stat
import struct
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import msgspec

COMMANDS: tuple[str, ...] = ("status", "freeze", "thaw", "rollback", "snapback", "reload", "catalog")
MAX_REQUEST_BYTES = 64 * 1024
SYSTEMD_RUNTIME_DIR = "/run/arqond"   # RuntimeDirectory=arqond of the unit

_TARGET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_UCRED = struct.Struct("iII")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}

Handler = Callable[[str, dict], Any | Awaitable[Any]]


class ControlError(Exception):
    """The daemon answered with an error, or the exchange itself failed."""


class DaemonNotRunning(ControlError):
    """No daemon listens on the socket (missing file or connection refused)."""


class CommandError(Exception):
    """Raised by a handler to refuse a command; the message goes to the operator verbatim."""


class UnsafeSocketDir(RuntimeError):
    """The socket directory could let another user reach or replace the socket."""


class Request(msgspec.Struct, forbid_unknown_fields=True):
    cmd: str
    args: dict[str, Any] = {}


# --- paths ------------------------------------------------------------------------------------
def check_target(target: str) -> str:
    """A target name becomes a file name: letters, digits, `_ . @ -`, at most 64, no leading dot."""
    if not _TARGET_RE.match(target):
        raise ValueError(f"target name {target!r}: expected 1-64 characters from [A-Za-z0-9_.@-], "
                         "not starting with '.' or '-'")
    return target


def _socket_dir(env: Mapping[str, str]) -> Path:
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may pass several colon-separated directories; ours is the first.
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "arqond"
    return Path(f"/tmp/arqond-{os.getuid()}")


def ensure_private_dir(path: Path, uid: int | None = None) -> Path:
    """Create `path` as a 0700 directory, or accept an existing one only if it is safe.

    Refuses (UnsafeSocketDir) a symlink, a non-directory, a directory owned by another uid, or one
    with any group/other permission bit: in a shared /tmp another user could otherwise pre-create
    it and read or swap our socket.
    """
    uid = os.getuid() if uid is None else uid
    try:
        path.mkdir(mode=0o700, parents=False)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeSocketDir(f"socket directory {path} is not a directory (a symlink or file); "
                              "remove it and restart arqond")
    if st.st_uid != uid:
        raise UnsafeSocketDir(f"socket directory {path} is owned by uid {st.st_uid}, expected {uid}; "
                              "remove it or run arqond as its owner")
    if st.st_mode & 0o077:
        raise UnsafeSocketDir(f"socket directory {path} has mode {stat.S_IMODE(st.st_mode):04o}, "
                              "expected 0700 (no group/other access); run `chmod 700 "
                              f"{path}` or set RuntimeDirectoryMode=0700")
    return path


def socket_path(target: str, env: Mapping[str, str] | None = None, *, create: bool = True) -> Path:
    """Where the daemon for `target` listens.

    `$RUNTIME_DIRECTORY/<target>.sock` under systemd, else `$XDG_RUNTIME_DIR/arqond/<target>.sock`,
    else `/tmp/arqond-<uid>/<target>.sock`. With `create`, the directory is created 0700 and checked.
    """
    env = os.environ if env is None else env
    d = _socket_dir(env)
    if create:
        ensure_private_dir(d)
    return d / f"{check_target(target)}.sock"


def find_socket(target: str, env: Mapping[str, str] | None = None,
                systemd_dir: str | os.PathLike = SYSTEMD_RUNTIME_DIR) -> Path:
    """Client side: the first existing socket for `target`.

    An operator's shell has no $RUNTIME_DIRECTORY, so after the daemon's own rule we also look in
    the systemd unit's /run/arqond. Returns the daemon's rule path if none exists (so the
    DaemonNotRunning message names where it looked first).
    """
    first = socket_path(target, env, create=False)
    for p in (first, Path(systemd_dir) / first.name):
        if p.exists():
            return p
    return first


# --- peer credentials -------------------------------------------------------------------------
def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected AF_UNIX socket."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


def peer_allowed(peer_uid: int, daemon_uid: int) -> bool:
    """Only the daemon's own user and root may command it."""
    return peer_uid == daemon_uid or peer_uid == 0


# --- server -----------------------------------------------------------------------------------
def _encode_reply(ok: bool, payload: Any) -> bytes:
    key = "result" if ok else "error"
    return msgspec.json.encode({"ok": ok, key: payload}) + b"\n"


class ControlServer:
    """asyncio Unix-socket server; one JSON line per request, several requests per connection."""

    def __init__(self, path: str | os.PathLike, handler: Handler, *,
                 commands: tuple[str, ...] = COMMANDS,
                 max_request_bytes: int = MAX_REQUEST_BYTES,
                 read_timeout_s: float = 5.0, handler_timeout_s: float = 30.0,
                 daemon_uid: int | None = None):
        self.path = Path(path)
        self.handler = handler
        self.commands = commands
        self.max_request_bytes = max_request_bytes
        self.read_timeout_s = read_timeout_s
        # reload re-reads and validates a file: allow it far more than a status reply needs.
        self.handler_timeout_s = handler_timeout_s
        self.daemon_uid = os.getuid() if daemon_uid is None else daemon_uid
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task] = set()   # Python 3.11's server.close() leaves them running
        self._decoder = msgspec.json.Decoder(Request)

    async def start(self) -> None:
        """Bind (replacing a stale socket, refusing a live one) and start serving."""
        ensure_private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if _is_live(self.path):
                raise RuntimeError(f"control socket {self.path} is in use by another arqond for this "
                                   "target; stop it first (systemctl stop arqond@<target>)")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve_client, path=str(self.path), limit=self.max_request_bytes)
        # The 0700 directory already keeps others out; 0600 is the second wall.
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> "ControlServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            sock = writer.get_extra_info("socket")
            _pid, uid, _gid = peer_credentials(sock)
            if not peer_allowed(uid, self.daemon_uid):
                writer.write(_encode_reply(False, f"permission denied: peer uid {uid} is neither the "
                                                  f"daemon's uid {self.daemon_uid} nor root"))
                await writer.drain()
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readuntil(b"\n"), self.read_timeout_s)
                except asyncio.IncompleteReadError:
                    return  # client closed
                except asyncio.LimitOverrunError:
                    writer.write(_encode_reply(False, f"request too large: over {self.max_request_bytes} "
                                                      "bytes; the connection is closed"))
                    await writer.drain()
                    return
                except asyncio.TimeoutError:
                    return  # idle or too slow to send a line
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, BrokenPipeError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        try:
            req = self._decoder.decode(line)
        except msgspec.DecodeError as e:
            return _encode_reply(False, f"bad request: {e}; expected {{\"cmd\": str, \"args\": object}}")
        if req.cmd not in self.commands:
            return _encode_reply(False, f"unknown command {req.cmd!r}; expected one of {', '.join(self.commands)}")
        try:
            result = self.handler(req.cmd, req.args)
            if inspect.isawaitable(result):
                result = await asyncio.wait_for(result, self.handler_timeout_s)
            return _encode_reply(True, result)
        except CommandError as e:
            return _encode_reply(False, f"{req.cmd}: {e}")
        except asyncio.TimeoutError:
            return _encode_reply(False, f"{req.cmd}: no answer within {self.handler_timeout_s} s; "
                                        "the daemon may be overloaded, check its log")
        except Exception as e:
            # Report to the operator and to the loop's exception handler; never kill the server.
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"control command {req.cmd!r} failed", "exception": e})
            return _encode_reply(False, f"{req.cmd}: internal error {type(e).__name__}: {e}")


def _is_live(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


# --- client -----------------------------------------------------------------------------------
def call(path: str | os.PathLike, cmd: str, args: dict | None = None, timeout: float = 5.0) -> Any:
    """Send one command and return its `result` (a dict for every built-in command).

    Raises DaemonNotRunning if nothing listens at `path`, ControlError on an error reply, a
    timeout, a permission problem or a malformed reply.
    """
    path = str(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise DaemonNotRunning(f"no arqond daemon at {path} ({e.strerror}); start it with "
                                   "`systemctl start arqond@<target>` or `arqond run`") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: run as the daemon's user or root") from None
        s.sendall(msgspec.json.encode({"cmd": cmd, "args": args or {}}) + b"\n")
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        raise ControlError(f"{cmd}: no reply from {path} within {timeout} s") from None
    except (ConnectionResetError, BrokenPipeError) as e:
        raise ControlError(f"{cmd}: connection to {path} lost ({e.strerror})") from None
    finally:
        s.close()
    try:
        reply = msgspec.json.decode(bytes(buf))
    except msgspec.DecodeError:
        raise ControlError(f"{cmd}: malformed reply from {path}: {bytes(buf[:200])!r}") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError(f"{cmd}: malformed reply from {path}: {reply!r}")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "error without message")))
    return reply.get("result")


def call_target(target: str, cmd: str, args: dict | None = None, timeout: float = 5.0,
                env: Mapping[str, str] | None = None) -> Any:
    """`call` on the socket `find_socket(target)` resolves: what each CLI command needs.
    Give `reload` a longer timeout than `status`: it re-reads and validates a file."""
    return call(find_socket(target, env), cmd, args, timeout)
