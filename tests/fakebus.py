"""A small stand-in for the ArqonBus gateway, for tests.

It enforces the envelope rules the real server enforces (see /work/shared/reference/arqonbus.md and
ArqonBus's validator): allowed top-level keys only, ``version`` "1.0", known ``type``, id format,
ISO-8601 timestamp, required fields per type, positive ``metadata.sequence``, valid
``metadata.causal_parent_id``. Like the real server it sends a welcome envelope with
``payload.client_id``, acks each ``message`` with a ``message_response`` of the same id, answers
``type: "error"`` with ``request_id`` for a validation failure, and answers an error *without*
request_id for a frame it cannot parse into an envelope (unknown key, bad JSON).

Deliberately independent of ``daemon.runtime.bus``: the rules are re-implemented here so a bug in
the publisher's envelope code cannot hide itself.

Faults a test can switch on: ``require_jwt`` (HS256, HTTP 401 on a bad/missing token), ``stall()``
(stop reading: the socket backs up), ``delay_s`` (slow processing), ``drop_acks``, ``reject``
(a predicate that makes the server refuse matching envelopes, like a CASIL block), ``down()``/``up()``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from websockets.asyncio.server import serve

ALLOWED = {"id", "timestamp", "type", "version", "room", "channel", "sender", "from_client", "to_client",
           "payload", "command", "args", "request_id", "status", "error", "error_code", "metadata"}
TYPES = {"message", "command", "response", "error", "telemetry", "operator.join"}
REQUIRED = {"message": ["id", "timestamp", "type", "version", "payload"],
            "command": ["id", "timestamp", "type", "version", "command"],
            "response": ["id", "timestamp", "type", "version", "request_id"],
            "error": ["id", "timestamp", "type", "version", "error"],
            "telemetry": ["id", "timestamp", "type", "version"],
            "operator.join": ["id", "timestamp", "type", "version", "payload"]}
_ID = re.compile(r"^arq_(?:\d+_\d+_[0-9a-fA-F]{6}|[0-9A-HJKMNP-TV-Z]{26})$")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def make_jwt(secret: bytes, claims: dict) -> str:
    """HS256 JWT (RFC 7519) with the standard library only."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def check_jwt(secret: bytes, token: str, now: float) -> str | None:
    """None if valid, else why not."""
    try:
        head, body, sig = token.split(".")
        if json.loads(_unb64url(head)).get("alg") != "HS256":
            return "alg is not HS256"
        want = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(want, _unb64url(sig)):
            return "bad signature"
        exp = json.loads(_unb64url(body)).get("exp")
        if exp is not None and now >= exp:
            return "expired"
    except (ValueError, TypeError) as e:
        return f"malformed: {e}"
    return None


def validate(env: Any) -> tuple[list[str], bool]:
    """(errors, parsable). parsable=False mirrors the real server failing to build an envelope at
    all, which it answers without a request_id."""
    if not isinstance(env, dict):
        return ["frame is not a JSON object"], False
    extra = set(env) - ALLOWED
    if extra:
        return [f"unknown envelope keys: {sorted(extra)}"], False
    errs = []
    t = env.get("type")
    if not t:
        errs.append("Message type is required")
    elif t not in TYPES:
        errs.append(f"Unsupported message type: {t}")
    if env.get("version") != "1.0":
        errs.append(f"Unsupported protocol version: {env.get('version')}")
    mid = env.get("id")
    if not isinstance(mid, str) or not _ID.match(mid):
        errs.append(f"Invalid message ID format: {mid}")
    ts = env.get("timestamp")
    try:
        if not isinstance(ts, str):
            raise ValueError
        datetime.fromisoformat(ts)
    except ValueError:
        errs.append(f"Invalid timestamp: {ts!r}")
    for field in REQUIRED.get(t, []):
        if env.get(field) in (None, ""):
            errs.append(f"Field '{field}' is required for {t} messages")
    md = env.get("metadata")
    if md is not None:
        if not isinstance(md, dict):
            errs.append("metadata must be an object")
        else:
            seq = md.get("sequence")
            if seq is not None and (type(seq) is not int or seq < 1):
                errs.append(f"metadata.sequence must be a positive integer, got {seq!r}")
            cp = md.get("causal_parent_id")
            if cp is not None and not (isinstance(cp, str) and _ID.match(cp)):
                errs.append(f"metadata.causal_parent_id is not a valid id: {cp!r}")
    return errs, True


class FakeBus:
    """Run with ``with FakeBus() as bus:``; the server lives on its own thread and loop.
    Lists are appended on the server thread; read them after ``wait_for``."""

    def __init__(self, *, jwt_secret: bytes | None = None):
        self.jwt_secret = jwt_secret
        self.port = 0
        self.received: list[dict] = []       # every valid envelope, in arrival order (duplicates kept)
        self.errors_sent: list[dict] = []
        self.handshakes: list[tuple[str | None, int]] = []  # (Authorization header, HTTP status)
        self.drop_acks = False
        self.delay_s = 0.0
        self.reject: Callable[[dict], str | None] | None = None  # -> reason to refuse, or None
        self._gate: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "FakeBus":
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._gate = asyncio.Event()
            self._gate.set()
            self._loop.run_until_complete(self._listen())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fakebus", daemon=True)
        self._thread.start()
        assert ready.wait(5), "fake bus did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _call(self, coro, timeout: float = 5.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        self._server = await serve(self._handler, "127.0.0.1", self.port, process_request=self._auth,
                                   compression=None, max_size=1 << 20, max_queue=4, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        self._gate.set()  # a stalled handler must see its connection close
        if self._server is not None:
            self._server.close()  # also closes open connections (code 1001)
            await self._server.wait_closed()
            self._server = None

    def down(self) -> None:
        """Stop listening and drop every connection (the bus "goes away")."""
        self._call(self._close())

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._listen())

    def stall(self) -> None:
        """Stop processing and reading frames (returns once in effect): the socket buffers fill and
        the client's sends back up."""
        async def clear():
            self._gate.clear()
        self._call(clear())

    def unstall(self) -> None:
        self._loop.call_soon_threadsafe(self._gate.set)

    def wait_for(self, pred: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if pred():
                    return True
            time.sleep(0.005)
        with self._lock:
            return pred()

    def ids(self, type: str | None = None, channel: str | None = None) -> list[str]:
        with self._lock:
            return [e["id"] for e in self.received
                    if (type is None or e["type"] == type) and (channel is None or e.get("channel") == channel)]

    # ---- server side ------------------------------------------------------------------------
    def _auth(self, connection, request):
        header = request.headers.get("Authorization")
        if self.jwt_secret is None:
            self.handshakes.append((header, 101))
            return None
        why = "missing bearer token"
        if header and header.startswith("Bearer "):
            why = check_jwt(self.jwt_secret, header[7:].strip(), time.time())
            if why is None:
                self.handshakes.append((header, 101))
                return None
        self.handshakes.append((header, 401))
        resp = connection.respond(401, f'{{"error":"Unauthorized","details":"{why}"}}\n')
        return resp

    def _new_id(self) -> str:
        return f"arq_{time.time_ns()}_{next(self._ids)}_abcdef"

    def _env(self, **kw) -> str:
        env = {"id": self._new_id(), "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "version": "1.0", "sender": "arqonbus"}
        env.update(kw)
        return json.dumps(env)

    async def _error(self, ws, error: str, code: str, request_id: str | None, payload=None) -> None:
        env = {"type": "error", "error": error, "error_code": code, "payload": payload or {}}
        if request_id:
            env["request_id"] = request_id
        with self._lock:
            self.errors_sent.append(env)
        await ws.send(self._env(**env))

    async def _handler(self, ws) -> None:
        client_id = f"arq_client_{next(self._ids):08x}"
        await ws.send(self._env(type="message", payload={"welcome": "Connected to ArqonBus",
                                                         "client_id": client_id}))
        while True:
            await self._gate.wait()
            try:
                frame = await ws.recv()
            except Exception:  # noqa: BLE001 - connection closed
                return
            await self._gate.wait()  # a frame read just before stall() waits too
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            try:
                env = json.loads(frame)
            except ValueError as e:
                await self._error(ws, f"Internal server error: Invalid JSON: {e}", "INTERNAL_ERROR", None)
                continue
            errs, parsable = validate(env)
            if not parsable:
                await self._error(ws, f"Internal server error: {errs[0]}", "INTERNAL_ERROR", None)
                continue
            if errs:
                await self._error(ws, "Message validation failed", "VALIDATION_ERROR",
                                  env.get("id") if isinstance(env.get("id"), str) else None, {"errors": errs})
                continue
            why = self.reject(env) if self.reject else None
            if why:
                await self._error(ws, "CASIL blocked message", why, env["id"], {"reason": why})
                continue
            env["sender"] = client_id
            with self._lock:
                self.received.append(env)
            if env["type"] == "message" and not self.drop_acks:
                await ws.send(self._env(id=env["id"], type="message_response", payload=env.get("payload")))
