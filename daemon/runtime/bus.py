"""Optional ArqonBus publisher: telemetry summaries and governance/audit events, outbound only.

The bus improves observability and governance, never correctness: the daemon runs and stays safe
with the bus down, slow or refusing messages. Therefore:

* ``publish_summary`` / ``publish_event`` never wait on the bus. They are thread-safe, make no
  syscall (they append to a bounded in-memory queue that the bus thread polls every ``poll_s``)
  and return at once.
* Telemetry summaries are rate-limited to ``summary_hz`` (latest wins) and are dropped -- counted,
  by reason -- when superseded, when the bus is down or when the socket is backed up. They get no ack.
* Events (proposals, rollouts, rollbacks, audit, alerts) are ``type: "message"`` envelopes that the
  bus acks with a ``message_response`` carrying the same id. They stay pending until acked: in memory
  up to ``memory_events``, beyond that -- and whenever the bus is down -- in an on-disk spool that is
  resent after reconnect (and after a restart). Delivery is at-least-once; the envelope id is the
  idempotency key, so a consumer drops duplicates by id.
* A server ``error`` naming an event (``request_id``) dead-letters it to ``<spool_dir>/rejected.jsonl``
  with the reason: it is never retried forever. So is an event that was sent ``max_attempts`` times
  without any answer (the bus keeps dropping it).
* Reconnect uses capped exponential backoff with seeded jitter. A JWT is read from ``jwt_file`` at
  every connect (so a rotated token is picked up) and sent as ``Authorization: Bearer <jwt>``.

Wire facts (see docs/bus.md and the shared arqonbus reference): only the envelope keys in
``ENVELOPE_KEYS``; ``version`` "1.0"; ids ``arq_<ns>_<counter>_<6 hex>``; ISO-8601 timestamps with
``Z``; rooms ``prod:<service>`` etc.; ``metadata.sequence`` a positive int.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import random
import re
import threading
import time
from typing import Any, Literal, Mapping, Protocol

import msgspec

log = logging.getLogger("arqond.bus")

__all__ = [
    "ENVELOPE_KEYS", "ENVELOPE_TYPES", "CHANNELS", "ID_RE", "BusConfig", "BusState", "BusPublisher",
    "EnvelopeCodec", "JsonCodec", "IdGen", "Backoff", "iso8601_z", "make_envelope",
]

ENVELOPE_KEYS = frozenset({
    "id", "timestamp", "type", "version", "room", "channel", "sender", "from_client", "to_client",
    "payload", "command", "args", "request_id", "status", "error", "error_code", "metadata"})
ENVELOPE_TYPES = frozenset({"message", "command", "response", "error", "telemetry", "operator.join"})
# Channels of the suggested topology; any lowercase name is accepted, these are the ones arqond uses.
CHANNELS = ("telemetry", "config_state", "proposals", "evaluations", "approvals", "rollouts",
            "outcomes", "audit", "alerts")
ID_RE = re.compile(r"^arq_(?:\d+_\d+_[0-9a-fA-F]{6}|[0-9A-HJKMNP-TV-Z]{26})$")
_ROOM_RE = re.compile(r"^(?:(?:prod|staging|sandbox):[A-Za-z0-9][A-Za-z0-9_.-]*|omega:lab)$")
_CHANNEL_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_CHANGE_KINDS = frozenset({"knob", "structure", "policy"})
_TIERS = frozenset({"1", "2", "omega"})


# ---------------------------------------------------------------------------------------------
# Pure pieces: config, ids, timestamps, envelopes, backoff, codec

class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Publisher settings. Times in seconds, sizes in events unless named ``_bytes``.

    ``spool_dir`` is what makes events survive a bus outage longer than ``memory_events`` and a
    daemon restart; without it, events beyond the memory bound are dropped (counted, logged).
    """
    url: str = "ws://127.0.0.1:9100"
    room: str = "prod:arqond"
    jwt_file: str | None = None
    summary_hz: float = 2.0
    summary_queue: int = 8
    inbox_events: int = 8192
    memory_events: int = 1024
    max_inflight: int = 64
    spool_dir: str | None = None
    spool_max_bytes: int = 64 << 20
    ack_timeout_s: float = 5.0
    max_attempts: int = 10
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    open_timeout_s: float = 5.0
    poll_s: float = 0.02
    seed: int = 0
    operator_tier: Literal["1", "2", "omega"] = "1"
    scope: str | None = None
    encoding: Literal["json"] = "json"

    def __post_init__(self) -> None:
        def bad(key: str, expected: str, got: Any) -> None:
            raise ValueError(f"bus.{key}: expected {expected}, got {got!r}")
        if not (self.url.startswith("ws://") or self.url.startswith("wss://")):
            bad("url", "a ws:// or wss:// URL", self.url)
        if not _ROOM_RE.match(self.room):
            bad("room", "prod:<service>, staging:<service>, sandbox:<service> or omega:lab", self.room)
        if not 0.0 < self.summary_hz <= 10.0:
            bad("summary_hz", "a rate in (0, 10] Hz (the bus carries summaries, never per-tick data)",
                self.summary_hz)
        for key in ("summary_queue", "inbox_events", "memory_events", "max_inflight", "max_attempts"):
            if getattr(self, key) < 1:
                bad(key, "an integer >= 1", getattr(self, key))
        for key in ("ack_timeout_s", "backoff_initial_s", "backoff_max_s", "open_timeout_s", "poll_s"):
            if getattr(self, key) <= 0:
                bad(key, "a duration > 0 s", getattr(self, key))
        if self.backoff_max_s < self.backoff_initial_s:
            bad("backoff_max_s", f">= backoff_initial_s ({self.backoff_initial_s})", self.backoff_max_s)


_iso_cache: tuple[int, str] = (-1, "")


def iso8601_z(ts_ns: int) -> str:
    """ns since the epoch -> ``2026-02-20T00:00:00.123456Z`` (UTC, microseconds)."""
    global _iso_cache
    s, ns = divmod(ts_ns, 1_000_000_000)
    cs, prefix = _iso_cache  # one tuple read: safe without a lock
    if cs != s:
        # strftime costs ~5 us; events of the same second share the prefix.
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))
        _iso_cache = (s, prefix)
    return f"{prefix}.{ns // 1000:06d}Z"


class IdGen:
    """Envelope ids ``arq_<ts_ns>_<counter>_<6 hex>``: the counter makes them unique within a
    publisher, the timestamp across restarts; the hex comes from the caller's seeded RNG.
    Not thread-safe on its own (the publisher holds its lock)."""

    def __init__(self, rng: random.Random):
        self._rng = rng
        self._n = 0

    def next(self, ts_ns: int) -> str:
        self._n += 1
        return f"arq_{ts_ns}_{self._n}_{self._rng.getrandbits(24):06x}"


class Backoff:
    """Capped exponential backoff with "equal jitter": attempt k waits uniformly in
    [b/2, b] with b = min(cap, initial * 2**k). Seeded, so a test can replay the delays."""

    def __init__(self, initial_s: float, cap_s: float, rng: random.Random):
        self._initial, self._cap, self._rng = initial_s, cap_s, rng
        self._k = 0

    def next(self) -> float:
        b = min(self._cap, self._initial * (2 ** min(self._k, 62)))
        self._k += 1
        return b / 2 + self._rng.random() * b / 2

    def reset(self) -> None:
        self._k = 0


def _check_metadata(md: Mapping[str, Any]) -> None:
    seq = md.get("sequence")
    if seq is not None and (type(seq) is not int or seq < 1):
        raise ValueError(f"bus metadata.sequence: expected a positive int, got {seq!r}")
    cp = md.get("causal_parent_id")
    if cp is not None and not (isinstance(cp, str) and ID_RE.match(cp)):
        raise ValueError(f"bus metadata.causal_parent_id: expected an envelope id, got {cp!r}")
    ck = md.get("change_kind")
    if ck is not None and ck not in _CHANGE_KINDS:
        raise ValueError(f"bus metadata.change_kind: expected one of {sorted(_CHANGE_KINDS)}, got {ck!r}")
    tier = md.get("operator_tier")
    if tier is not None and str(tier) not in _TIERS:
        raise ValueError(f"bus metadata.operator_tier: expected 1, 2 or omega, got {tier!r}")


def make_envelope(*, id: str, ts_ns: int, type: str, room: str, channel: str, payload: Any,
                  metadata: Mapping[str, Any]) -> dict:
    """Build an envelope with only keys the bus accepts. ``payload`` is anything msgspec encodes
    (a dict or a Struct). Raises ValueError on what the bus would reject."""
    if type not in ("message", "telemetry"):
        raise ValueError(f"bus envelope type: arqond publishes 'message' or 'telemetry', got {type!r}")
    if not _CHANNEL_RE.match(channel):
        raise ValueError(f"bus channel: expected a lowercase name such as {', '.join(CHANNELS)}; got {channel!r}")
    _check_metadata(metadata)
    return {"id": id, "type": type, "version": "1.0", "timestamp": iso8601_z(ts_ns), "room": room,
            "channel": channel, "payload": payload, "metadata": dict(metadata)}


class EnvelopeCodec(Protocol):
    """What goes on the wire. JSON text frames now; a protobuf codec (``arqon.v1.Envelope``,
    binary frames) can implement the same two methods."""
    name: str

    def encode(self, envelope: Mapping[str, Any]) -> str | bytes: ...

    def decode(self, frame: str | bytes) -> dict: ...


class JsonCodec:
    name = "json"

    def __init__(self) -> None:
        self._enc = msgspec.json.Encoder()

    def encode(self, envelope: Mapping[str, Any]) -> str:
        return self._enc.encode(envelope).decode("utf-8")

    def decode(self, frame: str | bytes) -> dict:
        out = msgspec.json.decode(frame)
        if not isinstance(out, dict):
            raise ValueError(f"bus frame is not a JSON object: {str(out)[:80]}")
        return out


# ---------------------------------------------------------------------------------------------
# The on-disk spool (bus thread only)

class _Spool:
    """``outbox.jsonl``: envelopes awaiting an ack, one JSON line each, resent in file order after a
    reconnect or restart; truncated once everything read from it is acked. ``rejected.jsonl``:
    dead letters with their reason, kept for an operator (never resent automatically)."""

    def __init__(self, directory: str, max_bytes: int):
        self._enc = msgspec.json.Encoder()
        # Dead letters must be writable even when the payload is what could not be encoded.
        self._dead_enc = msgspec.json.Encoder(enc_hook=repr)
        self.outbox = os.path.join(directory, "outbox.jsonl")
        self.rejected_path = os.path.join(directory, "rejected.jsonl")
        self._max = max_bytes
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            self._f = open(self.outbox, "a+b")
        except OSError as e:
            raise OSError(e.errno, f"bus.spool_dir {directory!r}: cannot open the spool ({e.strerror}); "
                                   f"fix the path or its permissions, or unset spool_dir to run "
                                   f"without a durable spool") from None
        data = self._read_all()
        if data and not data.endswith(b"\n"):
            # Crash mid-append: keep the fragment as a dead letter, cut it from the outbox.
            cut = data.rfind(b"\n") + 1
            self.dead_letter_raw(data[cut:], "torn spool line after a crash")
            self._f.truncate(cut)
            data = data[:cut]
        self._size = len(data)
        self._read_off = 0
        self.unread = data.count(b"\n")
        self.outstanding = 0

    def _read_all(self) -> bytes:
        self._f.seek(0)
        return self._f.read()

    @property
    def depth(self) -> int:
        return self.unread + self.outstanding

    def append(self, envelopes: list[dict]) -> tuple[int, list[tuple[dict, str]]]:
        """Append and fsync. Returns (how many were written -- they fit under ``max_bytes`` --,
        the envelopes whose payload cannot be encoded, with the reason). The caller owns the rest."""
        lines, size, bad = [], self._size, []
        for env in envelopes:
            try:
                ln = self._enc.encode(env) + b"\n"
            except (TypeError, msgspec.EncodeError) as e:
                bad.append((env, f"payload cannot be encoded: {e}"))
                continue
            if size + len(ln) > self._max:
                break
            lines.append(ln)
            size += len(ln)
        if lines:
            self._f.seek(0, os.SEEK_END)
            self._f.write(b"".join(lines))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._size = size
            self.unread += len(lines)
        return len(lines), bad

    def take(self, n: int) -> list[dict]:
        out = []
        self._f.seek(self._read_off)
        while len(out) < n and self.unread:
            ln = self._f.readline()
            self._read_off += len(ln)
            self.unread -= 1
            try:
                env = msgspec.json.decode(ln)
                if not isinstance(env, dict) or not isinstance(env.get("id"), str):
                    raise ValueError("not an envelope")
            except (msgspec.DecodeError, ValueError) as e:
                self.dead_letter_raw(ln, f"unreadable spool line: {e}")
                continue
            out.append(env)
            self.outstanding += 1
        return out

    def done(self) -> None:
        """One envelope taken from the spool was acked or dead-lettered."""
        self.outstanding -= 1
        if self.outstanding == 0 and self.unread == 0 and self._size:
            self._f.truncate(0)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._size = self._read_off = 0

    def dead_letter(self, env: Mapping[str, Any], reason: str, error_code: str | None = None) -> None:
        rec = {"reason": reason, "error_code": error_code, "envelope": env}
        with open(self.rejected_path, "ab") as f:
            f.write(self._dead_enc.encode(rec) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def dead_letter_raw(self, raw: bytes, reason: str) -> None:
        self.dead_letter({"raw": raw.decode("utf-8", "replace")}, reason)

    def close(self) -> None:
        self._f.close()


# ---------------------------------------------------------------------------------------------
# The publisher

class BusState(msgspec.Struct, frozen=True):
    """Snapshot for metrics and `arqond status`. Counters are totals since start.

    ``sent_total`` counts event sends including resends; ``acked_total`` distinct acks.
    ``dropped_events_total`` counts events that could not be kept (inbox full, or memory and spool
    both full / no spool): each is logged, and the audit ledger still has it.
    ``dropped_summaries`` maps reason -> count: superseded (rate limit, latest wins), overflow (queue
    full), disconnected, backpressure (socket write buffer above its limit).
    """
    connected: bool
    client_id: str | None
    url: str
    sent_total: int
    acked_total: int
    summaries_sent_total: int
    dropped_summaries_total: int
    dropped_summaries: dict[str, int]
    dropped_events_total: int
    rejected_total: int
    spooled_total: int
    server_errors_total: int
    connects_total: int
    connect_failures_total: int
    auth_failures_total: int
    inbox_depth: int
    summary_depth: int
    pending_events: int
    inflight: int
    spool_depth: int
    last_error: str | None


class _Out:
    __slots__ = ("env", "frame", "from_spool", "attempts", "sent_at")

    def __init__(self, env: dict, from_spool: bool):
        self.env, self.from_spool = env, from_spool
        self.frame: str | bytes | None = None
        self.attempts = 0
        self.sent_at: float | None = None


class BusPublisher:
    """Publishes to ArqonBus from its own thread and asyncio loop.

    ``publish_summary`` and ``publish_event`` may be called from any thread, before or after
    ``start``; ``state`` is a snapshot. ``clock`` gives wall time in ns for ids and timestamps.
    """

    def __init__(self, config: BusConfig, *, clock=time.time_ns, codec: EnvelopeCodec | None = None):
        self.cfg = config
        self._clock = clock
        self._codec = codec or JsonCodec()
        self._lock = threading.Lock()
        self._inbox: collections.deque = collections.deque()
        self._summaries: collections.deque = collections.deque()
        self._ids = IdGen(random.Random(config.seed))
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s,
                                random.Random(config.seed + 0x5EED))
        self._sequence = 0
        self._in_transit = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: collections.OrderedDict[str, _Out] = collections.OrderedDict()
        self._spool = _Spool(config.spool_dir, config.spool_max_bytes) if config.spool_dir else None
        self._connected = False
        self._client_id: str | None = None
        self._ws = None
        self._c = collections.Counter()
        self._drop_reasons = collections.Counter()
        self._last_error: str | None = None
        self._write_limit = 32 * 1024

    # Counters are bumped from callers (under the lock) and from the bus thread: both use the lock
    # so no increment is lost.
    def _inc(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._c[key] += n

    def _inc_drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._drop_reasons[reason] += n

    # ---- caller side (any thread, never blocks) -------------------------------------------
    def _meta(self, metadata: Mapping[str, Any] | None, seq: int | None) -> dict:
        md: dict[str, Any] = {"operator_tier": self.cfg.operator_tier}
        if self.cfg.scope:
            md["scope"] = self.cfg.scope
        if metadata:
            md.update(metadata)
        if md.get("sequence") is None:
            md["sequence"] = seq
        return md

    def _next_seq_locked(self, metadata: Mapping[str, Any] | None) -> int | None:
        if metadata and metadata.get("sequence") is not None:
            return None  # the caller's own sequence (e.g. the ledger seq) is kept
        self._sequence += 1
        return self._sequence

    def publish_event(self, channel: str, payload: Any, metadata: Mapping[str, Any] | None = None) -> str | None:
        """Queue a governance/audit event (``type: "message"``, acked). Returns its envelope id --
        the idempotency key a consumer dedupes on -- or None if the bounded inbox is full (counted).

        ``metadata`` may carry operator_tier, scope, change_kind, run_id, proposal_id, sequence
        (positive int; assigned from a per-publisher counter, in call order, when absent).
        Never raises for bad input: the envelope is built on the bus thread, and an event the bus
        would refuse (bad channel or metadata) is dead-lettered there with the reason, like a
        server rejection. ``payload`` must not be mutated afterwards (it is encoded later)."""
        ts = self._clock()
        md = dict(metadata) if metadata else None
        with self._lock:
            if len(self._inbox) >= self.cfg.inbox_events:
                self._c["dropped_events"] += 1
                self._last_error = f"bus inbox full ({self.cfg.inbox_events} events): event dropped"
                return None
            eid = self._ids.next(ts)
            self._inbox.append((eid, ts, channel, payload, md, self._next_seq_locked(md)))
        return eid

    def publish_summary(self, payload: Any, metadata: Mapping[str, Any] | None = None) -> bool:
        """Offer a telemetry summary (``type: "telemetry"``, channel ``telemetry``, no ack). At most
        ``summary_hz`` are sent; the newest wins. Returns False when an older queued summary had to
        be dropped to make room (counted as overflow); the offered one is always kept."""
        ts = self._clock()
        with self._lock:
            dropped = len(self._summaries) >= self.cfg.summary_queue
            if dropped:
                self._summaries.popleft()
                self._drop_reasons["overflow"] += 1
            self._summaries.append((ts, payload, dict(metadata) if metadata else None))
        return not dropped

    # ---- status ---------------------------------------------------------------------------
    @property
    def state(self) -> BusState:
        with self._lock:
            c, dr = dict(self._c), dict(self._drop_reasons)
            inbox, summ = len(self._inbox) + self._in_transit, len(self._summaries)
        for _ in range(3):  # the bus thread may resize the dict while we copy it
            try:
                pend = list(self._pending.values())
                break
            except RuntimeError:
                pend = []
        return BusState(
            connected=self._connected, client_id=self._client_id, url=self.cfg.url,
            sent_total=c.get("sent", 0), acked_total=c.get("acked", 0),
            summaries_sent_total=c.get("summaries_sent", 0),
            dropped_summaries_total=sum(dr.values()), dropped_summaries=dr,
            dropped_events_total=c.get("dropped_events", 0), rejected_total=c.get("rejected", 0),
            spooled_total=c.get("spooled", 0), server_errors_total=c.get("server_errors", 0),
            connects_total=c.get("connects", 0), connect_failures_total=c.get("connect_failures", 0),
            auth_failures_total=c.get("auth_failures", 0), inbox_depth=inbox, summary_depth=summ,
            pending_events=len(pend), inflight=sum(1 for o in pend if o.sent_at is not None),
            spool_depth=self._spool.depth if self._spool else 0, last_error=self._last_error)

    def wait_delivered(self, timeout: float) -> bool:
        """Block (the caller, not the loop) until every published event is acked or dead-lettered.
        For shutdown and tests; never call it from the decision loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state
            if s.inbox_depth == 0 and s.pending_events == 0 and s.spool_depth == 0:
                return True
            time.sleep(0.005)
        return False

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "BusPublisher":
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="arqond-bus", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop and keep what is undelivered: queued and in-memory events go to the spool (when
        configured) and are resent by the next publisher using the same ``spool_dir``."""
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "BusPublisher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- bus thread -----------------------------------------------------------------------
    def _thread_main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._stopping = asyncio.Event()
        self._work = asyncio.Event()
        with self._lock:
            self._loop = loop
        ready.set()
        try:
            loop.run_until_complete(self._main())
        finally:
            with self._lock:
                self._loop = None
            loop.close()

    async def _poll(self) -> None:
        """Collect what callers queued, every ``poll_s``. Polling (not a cross-thread wake-up per
        call) keeps the publish calls free of syscalls and lets the bus thread take the GIL once per
        batch instead of once per event; 20 ms is nothing next to a 1-10 Hz bus."""
        while True:
            self._intake()
            if not self._connected:
                self._drop_summaries("disconnected")
            with self._lock:
                busy = bool(self._summaries)
            if busy or any(o.sent_at is None for o in self._pending.values()):
                self._work.set()
            await asyncio.sleep(self.cfg.poll_s)

    def _drop_summaries(self, reason: str) -> None:
        with self._lock:
            if self._summaries:
                self._drop_reasons[reason] += len(self._summaries)
                self._summaries.clear()

    def _set_error(self, msg: str, level: int = logging.WARNING) -> None:
        self._last_error = msg
        log.log(level, "%s", msg)

    def _intake(self) -> None:
        """Move events from the caller-side inbox to memory (connected, room, spool drained) or
        to the spool (bus down, memory full, or older events still on disk: keep order)."""
        with self._lock:
            items = list(self._inbox)
            self._inbox.clear()
            self._in_transit = len(items)  # still reported as inbox depth until routed
        if not items:
            return
        try:
            envs = []
            for eid, ts, channel, payload, md, seq in items:
                try:
                    envs.append(make_envelope(id=eid, ts_ns=ts, type="message", room=self.cfg.room,
                                              channel=channel, payload=payload, metadata=self._meta(md, seq)))
                except ValueError as e:
                    self._dead_letter(_Out({"id": eid, "channel": channel, "payload": payload,
                                            "metadata": md}, from_spool=False), str(e), "INVALID_ENVELOPE")
            self._route(envs)
        finally:
            with self._lock:
                self._in_transit = 0

    def _route(self, envs: list[dict]) -> None:
        to_disk: list[dict] = []
        mem = self.cfg.memory_events
        for env in envs:
            if self._spool is not None:
                if not self._connected or self._spool.unread or len(self._pending) >= mem:
                    to_disk.append(env)
                else:
                    self._pending[env["id"]] = _Out(env, from_spool=False)
            elif len(self._pending) < mem:
                self._pending[env["id"]] = _Out(env, from_spool=False)
            else:
                self._inc("dropped_events", 1)
                self._set_error(f"bus: memory queue full ({mem}) and no spool_dir configured: event "
                                f"{env['id']} dropped (it is still in the audit ledger)", logging.ERROR)
        if to_disk:
            self._spill(to_disk)

    def _spill(self, envs: list[dict]) -> None:
        bad: list[tuple[dict, str]] = []
        try:
            n, bad = self._spool.append(envs)
        except OSError as e:
            n = 0
            self._set_error(f"bus spool {self._spool.outbox}: write failed: {e}", logging.ERROR)
        for env, why in bad:
            self._dead_letter(_Out(env, from_spool=False), why, "ENCODE_ERROR")
        self._inc("spooled", n)
        if n + len(bad) < len(envs):
            lost = len(envs) - n - len(bad)
            self._inc("dropped_events", lost)
            self._set_error(f"bus spool {self._spool.outbox} full ({self.cfg.spool_max_bytes} bytes) or "
                            f"unwritable: {lost} events dropped (they are still in the audit ledger)",
                            logging.ERROR)

    def _refill(self) -> None:
        if self._spool is None:
            return
        room = self.cfg.memory_events - len(self._pending)
        if room > 0 and self._spool.unread:
            for env in self._spool.take(room):
                if env["id"] in self._pending:  # already pending from memory: the spool copy is a dup
                    self._spool.done()
                    continue
                self._pending[env["id"]] = _Out(env, from_spool=True)

    def _finish(self, out: _Out) -> None:
        self._pending.pop(out.env["id"], None)
        if out.from_spool and self._spool is not None:
            self._spool.done()

    def _dead_letter(self, out: _Out, reason: str, code: str | None) -> None:
        self._inc("rejected", 1)
        self._set_error(f"bus rejected event {out.env['id']} (channel {out.env.get('channel')}): {reason}"
                        f"{f' [{code}]' if code else ''}; dead-lettered, not retried", logging.ERROR)
        if self._spool is not None:
            try:
                self._spool.dead_letter(out.env, reason, code)
            except OSError as e:
                log.error("bus: cannot write dead letter to %s: %s", self._spool.rejected_path, e)
        self._finish(out)

    async def _main(self) -> None:
        poller = asyncio.create_task(self._poll())
        try:
            await self._connection_loop()
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            self._intake()
            if self._spool is not None:
                keep = [o.env for o in self._pending.values() if not o.from_spool]
                if keep:
                    self._spill(keep)
                self._pending.clear()
                self._spool.close()
            elif self._pending:
                self._set_error(f"bus stopped with {len(self._pending)} events unacked and no spool_dir")

    async def _sleep_or_stop(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except asyncio.TimeoutError:
            pass

    def _headers(self) -> dict[str, str] | None:
        if not self.cfg.jwt_file:
            return {}
        try:
            with open(self.cfg.jwt_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            self._set_error(f"bus: cannot read JWT file {self.cfg.jwt_file}: {e}; not connecting "
                            f"(the bus would answer 401); retrying")
            return None
        if not token:
            self._set_error(f"bus: JWT file {self.cfg.jwt_file} is empty; not connecting; retrying")
            return None
        return {"Authorization": f"Bearer {token}"}

    async def _connection_loop(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        while not self._stopping.is_set():
            headers = self._headers()
            ws = None
            if headers is not None:
                try:
                    ws = await connect(self.cfg.url, additional_headers=headers, proxy=None,
                                       open_timeout=self.cfg.open_timeout_s, compression=None,
                                       max_size=1 << 20, write_limit=self._write_limit)
                except InvalidStatus as e:
                    code = e.response.status_code
                    self._inc("connect_failures", 1)
                    if code in (401, 403):
                        self._inc("auth_failures", 1)
                        self._set_error(f"bus {self.cfg.url} refused the handshake: HTTP {code} (JWT "
                                        f"{'from ' + self.cfg.jwt_file if self.cfg.jwt_file else 'missing'} "
                                        f"not accepted); events are held until delivered; retrying with backoff")
                    else:
                        self._set_error(f"bus {self.cfg.url} refused the handshake: HTTP {code}; retrying")
                except (OSError, asyncio.TimeoutError, Exception) as e:  # noqa: BLE001 - any connect failure
                    self._inc("connect_failures", 1)
                    self._set_error(f"bus {self.cfg.url} unreachable: {type(e).__name__}: {e}; "
                                    f"events are held until delivered; retrying with backoff")
            if ws is None:
                await self._sleep_or_stop(self._backoff.next())
                continue
            self._inc("connects", 1)
            self._backoff.reset()
            self._ws = ws
            self._connected = True
            self._work.set()
            tasks = [asyncio.create_task(self._reader(ws)), asyncio.create_task(self._writer(ws)),
                     asyncio.create_task(self._stopping.wait())]
            done, rest = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self._connected = False
            self._client_id = None
            self._ws = None
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            for t in done:
                exc = t.exception() if not t.cancelled() else None
                if exc is not None:
                    self._set_error(f"bus connection to {self.cfg.url} lost: {type(exc).__name__}: {exc}")
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing a dead socket
                pass
            for out in self._pending.values():
                out.sent_at = None  # unacked: resend on the next connection (same id)
            self._drop_summaries("disconnected")
            if not self._stopping.is_set():
                await self._sleep_or_stop(self._backoff.next())

    async def _reader(self, ws) -> None:
        async for frame in ws:
            try:
                msg = self._codec.decode(frame)
            except (msgspec.DecodeError, ValueError) as e:
                self._inc("server_errors", 1)
                self._set_error(f"bus sent an undecodable frame: {e}")
                continue
            kind = msg.get("type")
            if kind == "message_response":
                out = self._pending.get(msg.get("id"))
                if out is not None:
                    self._inc("acked", 1)
                    self._finish(out)
                    self._work.set()
            elif kind == "error":
                self._inc("server_errors", 1)
                reason = msg.get("error") or "error"
                detail = msg.get("payload")
                if detail:
                    reason = f"{reason}: {msgspec.json.encode(detail).decode()[:300]}"
                out = self._pending.get(msg.get("request_id") or "")
                if out is not None:
                    self._dead_letter(out, reason, msg.get("error_code"))
                    self._work.set()
                else:
                    self._set_error(f"bus error (no matching event): {reason} [{msg.get('error_code')}]")
            elif kind == "message" and isinstance(msg.get("payload"), dict) and "client_id" in msg["payload"]:
                self._client_id = str(msg["payload"]["client_id"])

    def _buffered(self, ws) -> int:
        tr = getattr(ws, "transport", None)
        return tr.get_write_buffer_size() if tr is not None else 0

    async def _send(self, ws, frame) -> None:
        await ws.send(frame)

    async def _writer(self, ws) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.cfg.summary_hz
        next_summary = loop.time()
        while True:
            now = loop.time()
            # Unanswered sends: resend, or dead-letter once the bus has ignored it max_attempts times.
            for out in list(self._pending.values()):
                if out.sent_at is not None and now - out.sent_at >= self.cfg.ack_timeout_s:
                    if out.attempts >= self.cfg.max_attempts:
                        self._dead_letter(out, f"no ack after {out.attempts} sends", None)
                    else:
                        out.sent_at = None
            self._refill()
            inflight = sum(1 for o in self._pending.values() if o.sent_at is not None)
            for out in [o for o in self._pending.values() if o.sent_at is None]:
                if inflight >= self.cfg.max_inflight:
                    break
                if out.env["id"] not in self._pending or out.sent_at is not None:
                    continue
                if out.frame is None:
                    try:
                        out.frame = self._codec.encode(out.env)
                    except (TypeError, msgspec.EncodeError) as e:
                        self._dead_letter(out, f"payload cannot be encoded: {e}", "ENCODE_ERROR")
                        continue
                out.attempts += 1
                out.sent_at = loop.time()
                inflight += 1
                self._inc("sent", 1)
                await self._send(ws, out.frame)
            now = loop.time()
            if now >= next_summary:
                with self._lock:
                    item = self._summaries.pop() if self._summaries else None
                    if item is not None and self._summaries:
                        self._drop_reasons["superseded"] += len(self._summaries)
                        self._summaries.clear()
                if item is not None:
                    next_summary = now + period
                    if self._buffered(ws) > self._write_limit:
                        self._inc_drop("backpressure", 1)
                    else:
                        ts, payload, md = item
                        try:
                            with self._lock:
                                eid, seq = self._ids.next(ts), self._next_seq_locked(md)
                            env = make_envelope(id=eid, ts_ns=ts, type="telemetry", room=self.cfg.room,
                                                channel="telemetry", payload=payload,
                                                metadata=self._meta(md, seq))
                            frame = self._codec.encode(env)
                        except ValueError as e:
                            self._inc_drop("invalid", 1)
                            self._set_error(f"bus: telemetry summary not sent: {e}")
                        except (TypeError, msgspec.EncodeError) as e:
                            self._inc_drop("unencodable", 1)
                            self._set_error(f"bus: telemetry summary cannot be encoded: {e}")
                        else:
                            self._inc("summaries_sent", 1)
                            await self._send(ws, frame)
            # Sleep until new work, the next summary slot or the next ack deadline.
            now = loop.time()
            wait = 1.0
            with self._lock:
                has_summary = bool(self._summaries)
            if has_summary:
                wait = min(wait, max(0.0, next_summary - now))
            deadlines = [o.sent_at + self.cfg.ack_timeout_s for o in self._pending.values() if o.sent_at is not None]
            if deadlines:
                wait = min(wait, max(0.0, min(deadlines) - now))
            unsent = any(o.sent_at is None for o in self._pending.values())
            if unsent and inflight < self.cfg.max_inflight or (self._spool and self._spool.unread
                                                              and len(self._pending) < self.cfg.memory_events):
                continue
            self._work.clear()
            try:
                await asyncio.wait_for(self._work.wait(), wait)
            except asyncio.TimeoutError:
                pass
