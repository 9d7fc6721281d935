"""The audit ledger: an append-only, hash-chained JSON Lines file of Tier-1 events.

"Audit is sacred": every decision the daemon takes is written here, in order, and the file is the
source of truth that replay rebuilds state from. The chain makes after-the-fact edits evident.

Record format (one line, UTF-8, ``\\n``-terminated, no other whitespace)::

    {"seq":<int>,"ts_ns":<int>,"prev":"<64 hex>","event":<event JSON object>,"hash":"<64 hex>"}

* ``seq`` starts at 1 (or a caller-given first seq after rotation) and grows by exactly 1 per line.
* ``ts_ns`` is the wall-clock time (ns since the Unix epoch, UTC) at which the event was submitted.
* ``event`` is the event encoded by ``msgspec.json`` (tag field included for tagged Structs).
* ``hash`` is the lowercase hex SHA-256 of the line's bytes *before* ``,"hash":"`` -- i.e. of
  ``{"seq":..,"ts_ns":..,"prev":"..","event":{..}`` exactly as written. The writer emits the header
  keys in that order with no spaces, and ``verify`` checks those header bytes, so the form is canonical
  without re-encoding the event (re-encoding floats would not be byte-stable across libraries).
* ``prev`` is the ``hash`` of the previous line, or ``GENESIS`` (64 zeros) for the first record of a
  chain. A rotated file may start from the last hash and seq of its predecessor (``genesis=``,
  ``first_seq=``), which chains the files together.

What the chain proves and what it does not: editing, deleting, inserting or reordering any record
breaks the chain at that record (unless the attacker rewrites every later record too). Truncating
the *end* of the file cannot be detected from the file alone: compare ``last_seq``/``last_hash``
with an outside copy (metrics, the bus ``audit`` channel) for that.

Writing: ``LedgerWriter.submit`` is called by the decision loop. It never blocks and never does I/O;
a writer thread serialises, chains, writes and fsyncs in batches (group commit). Nothing is dropped
silently: a full queue makes ``submit`` return False (the caller enters safe mode) and an I/O error
keeps the events in memory, is retried, and shows as ``healthy == False``.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import threading
import time
from typing import Any, Callable, Iterator, Literal

import msgspec

__all__ = [
    "GENESIS", "LedgerCorrupt", "VerifyReport", "LedgerRecord", "LedgerStats", "LedgerWriter",
    "verify", "read_events", "tail", "show", "format_record", "format_ts",
]

GENESIS = "0" * 64

_HASH_KEY = b',"hash":"'
# ,"hash":"<64 hex>"}  -- the fixed-length tail of every record line.
_SUFFIX_LEN = len(_HASH_KEY) + 64 + 2
_HEX = frozenset(b"0123456789abcdef")


class LedgerCorrupt(Exception):
    """A complete record in the middle of the ledger fails its checks.

    Raised when opening for append (the writer refuses to extend a damaged chain) and by
    ``read_events``. ``line`` is 1-based; ``seq`` is the sequence number expected at that line.
    """

    def __init__(self, path: str, line: int, seq: int, reason: str):
        self.path, self.line, self.seq, self.reason = path, line, seq, reason
        super().__init__(
            f"audit ledger {path}:{line}: record (expected seq {seq}) is corrupt: {reason}. "
            f"Refusing to append so the chain is not extended past a damaged record; the daemon must "
            f"stay in safe mode. Inspect with `arqond audit verify {path}`; to start a new chain, move "
            f"the file aside (keep it as evidence) and restart.")


class VerifyReport(msgspec.Struct, frozen=True):
    """Result of ``verify``.

    ``ok`` is True when every complete line is a valid record continuing the chain. ``first_bad_seq``
    is the sequence number that was *expected* at the first bad line (for a deleted record that is the
    missing seq; for a swap, the seq that should have been there). ``n_records`` counts the valid
    records before it. ``torn_tail`` flags a last line without its newline (a crash mid-write, or a
    writer appending right now); it does not make ``ok`` False because it was never committed --
    opening the ledger for append moves it aside.
    """
    ok: bool
    n_records: int
    first_bad_seq: int | None = None
    first_bad_line: int | None = None
    reason: str = ""
    last_seq: int = 0
    last_hash: str = GENESIS
    torn_tail: bool = False


class LedgerRecord(msgspec.Struct, frozen=True):
    """One decoded record. ``event`` is a dict, or an instance of the type given to ``read_events``."""
    seq: int
    ts_ns: int
    prev: str
    hash: str
    event: Any


class LedgerStats(msgspec.Struct, frozen=True):
    """Snapshot of a writer for metrics and health checks (counters are totals since start).

    ``depth`` counts events accepted by ``submit`` but not yet durable (queued + being written).
    ``healthy`` is False while an I/O error is unresolved, when the queue is full, or after the
    writer stopped on a corrupt ledger: the caller must then enter safe mode.
    """
    path: str
    depth: int
    capacity: int
    high_water_reached: bool
    full: bool
    healthy: bool
    error: str | None
    written_total: int
    bytes_total: int
    errors_total: int
    rejected_total: int
    high_water_total: int
    fsync_total: int
    last_fsync_seconds: float
    last_seq: int
    last_hash: str
    torn_moved_to: str | None


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    seq: int
    ts_ns: int
    prev: str
    event: msgspec.Raw
    hash: str


_line_decoder = msgspec.json.Decoder(_Line)
_event_encoder = msgspec.json.Encoder()


def _body_header(seq: int, ts_ns: int, prev: str) -> bytes:
    return b'{"seq":%d,"ts_ns":%d,"prev":"%s","event":' % (seq, ts_ns, prev.encode("ascii"))


def _encode_line(seq: int, ts_ns: int, prev: str, event_json: bytes) -> tuple[bytes, str]:
    body = _body_header(seq, ts_ns, prev) + event_json
    digest = hashlib.sha256(body).hexdigest()
    return body + _HASH_KEY + digest.encode("ascii") + b'"}\n', digest


class _Check(msgspec.Struct, frozen=True):
    """Outcome of checking one line. ``parsed`` is False when the bytes are not a ledger record at
    all (bad JSON, wrong shape): the signature of a torn write rather than of an edit."""
    ok: bool
    parsed: bool
    reason: str = ""
    rec: _Line | None = None


def _check_line(content: bytes, expect_seq: int, prev: str) -> _Check:
    """Check one line (without its newline) against the chain position it sits at."""
    try:
        rec = _line_decoder.decode(content)
    except msgspec.DecodeError as e:
        return _Check(False, False, f"not a ledger record ({e})")
    h = rec.hash
    if len(h) != 64 or not _HEX.issuperset(h.encode("ascii", "replace")):
        return _Check(False, True, f"hash field is not 64 lowercase hex digits: {h[:80]!r}")
    if not content.endswith(_HASH_KEY + h.encode("ascii") + b'"}'):
        return _Check(False, True, "non-canonical form: \"hash\" must be the last key, with no spaces")
    body = content[:-_SUFFIX_LEN]
    header = _body_header(rec.seq, rec.ts_ns, rec.prev)
    if not body.startswith(header) or not body[len(header):].startswith(b"{"):
        return _Check(False, True,
                      "non-canonical form: expected keys seq, ts_ns, prev, event in that order, "
                      "no spaces, and an event object")
    if hashlib.sha256(body).hexdigest() != h:
        return _Check(False, True, f"hash mismatch at seq {rec.seq}: the record was changed after it was written")
    if rec.seq != expect_seq:
        return _Check(False, True,
                      f"found seq {rec.seq} where seq {expect_seq} was expected "
                      f"(a record was deleted, inserted or moved)")
    if rec.prev != prev:
        return _Check(False, True,
                      f"prev does not match the hash of the record before it "
                      f"(expected {prev[:16]}..., found {rec.prev[:16]}...): a record was replaced or moved")
    return _Check(True, True, rec=rec)


class _Scan(msgspec.Struct):
    report: VerifyReport
    good_size: int           # byte offset just after the last valid, newline-terminated record
    tail_offset: int = -1    # start of a torn/unparsable last line, -1 if none
    tail_complete_record: bool = False  # last line is a valid record missing only its newline
    tail_unparsable: bool = False      # last line is newline-terminated garbage (crash artifact)


def _scan(path: str, genesis: str, first_seq: int) -> _Scan:
    """Walk the file once, checking every record. Stops at the first bad line."""
    expect, prev, n, good = first_seq, genesis, 0, 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        lineno = 0
        while True:
            start = f.tell()
            raw = f.readline()
            if not raw:
                break
            lineno += 1
            terminated = raw.endswith(b"\n")
            content = raw[:-1] if terminated else raw
            is_last = f.tell() >= size
            c = _check_line(content, expect, prev)
            if c.ok and terminated:
                n += 1
                expect, prev, good = expect + 1, c.rec.hash, f.tell()
                continue
            rep_ok = dict(last_seq=expect - 1, last_hash=prev)
            if not terminated:  # necessarily the last line
                return _Scan(VerifyReport(True, n, torn_tail=True,
                                          reason=f"line {lineno}: incomplete last record (no newline): "
                                                 f"crash mid-write or a writer appending now", **rep_ok),
                             good, tail_offset=start, tail_complete_record=c.ok)
            rep = VerifyReport(False, n, first_bad_seq=expect, first_bad_line=lineno,
                               reason=f"line {lineno}: {c.reason}", **rep_ok)
            return _Scan(rep, good, tail_offset=start if is_last else -1,
                         tail_unparsable=is_last and not c.parsed)
    return _Scan(VerifyReport(True, n, last_seq=expect - 1, last_hash=prev), good)


def verify(path: str | os.PathLike, *, genesis: str = GENESIS, first_seq: int = 1) -> VerifyReport:
    """Check the whole chain of ``path`` and report the first bad record.

    ``genesis``/``first_seq``: the ``prev`` and ``seq`` the first record must carry (64 zeros and 1 for
    a fresh chain; the predecessor's last hash and seq + 1 for a rotated file). A missing file raises
    ``FileNotFoundError``; an empty file is a valid, empty chain.
    """
    return _scan(os.fspath(path), genesis, first_seq).report


def read_events(path: str | os.PathLike, type: Any = None, *, check: bool = True,
                genesis: str | None = None, first_seq: int | None = None) -> Iterator[LedgerRecord]:
    """Iterate the records of ``path`` in order.

    ``type``: decode each event into this msgspec type (a tagged Struct or a Union of them); None
    gives plain dicts. ``check``: verify each record's hash and its link to the previous one and raise
    ``LedgerCorrupt`` at the first bad complete line -- replay must never consume a damaged record.
    ``genesis``/``first_seq`` default to whatever the first record carries (so rotated files read
    fine). An incomplete last line (no newline) is skipped: it is a crash artifact or a write in
    progress, never a committed record.
    """
    path = os.fspath(path)
    dec = msgspec.json.Decoder(type) if type is not None else msgspec.json.Decoder()
    expect, prev = first_seq, genesis
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                return
            content = raw[:-1]
            if check:
                if expect is None or prev is None:
                    try:
                        head = _line_decoder.decode(content)
                    except msgspec.DecodeError as e:
                        raise LedgerCorrupt(path, lineno, expect or 0, f"not a ledger record ({e})") from None
                    expect = head.seq if expect is None else expect
                    prev = head.prev if prev is None else prev
                c = _check_line(content, expect, prev)
                if not c.ok:
                    raise LedgerCorrupt(path, lineno, expect, c.reason)
                rec = c.rec
                expect, prev = expect + 1, rec.hash
            else:
                rec = _line_decoder.decode(content)
            try:
                ev = dec.decode(rec.event)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:
                raise ValueError(f"audit ledger {path}:{lineno} (seq {rec.seq}): event does not decode as "
                                 f"{type!r}: {e}") from None
            yield LedgerRecord(rec.seq, rec.ts_ns, rec.prev, rec.hash, ev)


# ---------------------------------------------------------------------------------------------
# Rendering for people (`arqond audit tail` / `arqond audit show`)

def format_ts(ts_ns: int) -> str:
    """ns since the epoch -> ``2026-02-20T00:00:00.123456Z`` (UTC, microseconds)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ns // 1000:06d}Z"


_KEY_FIRST = ("run_id", "proposal_id", "variant_id", "reason", "rollback_reason", "exit_reason")


def _event_tag(ev: Any) -> str:
    if isinstance(ev, dict):
        for k in ("event", "type", "kind"):
            if isinstance(ev.get(k), str):
                return ev[k]
        return "?"
    return getattr(type(ev), "__struct_config__", None) and type(ev).__struct_config__.tag or type(ev).__name__


def format_record(rec: LedgerRecord, max_fields: int = 6, width: int = 40) -> str:
    """One line: seq, UTC time, event tag, then up to ``max_fields`` scalar fields as key=value
    (identifiers and reasons first, long values cut to ``width`` characters)."""
    ev = rec.event if isinstance(rec.event, dict) else msgspec.to_builtins(rec.event)
    tag = _event_tag(ev)
    keys = [k for k in _KEY_FIRST if k in ev] + [k for k in ev if k not in _KEY_FIRST]
    parts = []
    for k in keys:
        v = ev[k]
        if k == "event" or isinstance(v, (dict, list)):
            continue
        # Quote only strings that would be ambiguous in a space-separated line.
        s = v if isinstance(v, str) and v and " " not in v and "=" not in v else json.dumps(v)
        if len(s) > width:
            s = s[:width - 3] + "..."
        parts.append(f"{k}={s}")
        if len(parts) >= max_fields:
            break
    return f"{rec.seq:>8}  {format_ts(rec.ts_ns)}  {tag:<18} {' '.join(parts)}".rstrip()


def _last_lines(path: str, n: int) -> list[bytes]:
    """The last ``n`` newline-terminated lines, reading backwards in blocks (ledgers grow large)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        buf, pos, block = b"", end, 1 << 16
        while pos > 0 and buf.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
    lines = buf.split(b"\n")
    lines.pop()  # after the final newline: empty, or an incomplete tail that was never committed
    if pos > 0:
        lines = lines[1:]  # the first piece may be a partial line
    return lines[-n:] if n > 0 else []


def tail(path: str | os.PathLike, n: int = 20) -> list[str]:
    """The last ``n`` records rendered one per line. Each line's own hash is checked; a line that
    fails is shown as ``CORRUPT`` (run ``verify`` for the chain)."""
    out = []
    for raw in _last_lines(os.fspath(path), n):
        try:
            rec = _line_decoder.decode(raw)
        except msgspec.DecodeError as e:
            out.append(f"{'?':>8}  CORRUPT line: {e}")
            continue
        c = _check_line(raw, rec.seq, rec.prev)
        line = format_record(LedgerRecord(rec.seq, rec.ts_ns, rec.prev, rec.hash, msgspec.json.decode(rec.event)))
        out.append(line if c.ok else f"{line}  [CORRUPT: {c.reason}]")
    return out


def show(path: str | os.PathLike, seq: int) -> str:
    """Full, multi-line view of the record ``seq``: header, chain fields and the indented event.
    Raises ``LookupError`` naming the range present when ``seq`` is not in the file."""
    path = os.fspath(path)
    first = last = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                rec = _line_decoder.decode(raw[:-1])
            except msgspec.DecodeError:
                continue
            first = rec.seq if first is None else first
            last = rec.seq
            if rec.seq != seq:
                continue
            c = _check_line(raw[:-1], rec.seq, rec.prev)
            ev = msgspec.json.decode(rec.event)
            return "\n".join([
                format_record(LedgerRecord(rec.seq, rec.ts_ns, rec.prev, rec.hash, ev)),
                f"  line   {lineno} of {path}",
                f"  time   {format_ts(rec.ts_ns)} ({rec.ts_ns} ns)",
                f"  prev   {rec.prev}",
                f"  hash   {rec.hash} ({'ok' if c.ok else 'BAD: ' + c.reason})",
                "  event  " + json.dumps(ev, indent=2, sort_keys=False).replace("\n", "\n         "),
            ])
    have = f"seq {first}..{last}" if first is not None else "no records"
    raise LookupError(f"audit ledger {path}: no record with seq {seq} (file holds {have})")


# ---------------------------------------------------------------------------------------------
# Writer

FsyncMode = Literal["batch", "always", "never"]


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_aside(path: str, offset: int, seq: int) -> str:
    """Copy bytes [offset, EOF) of ``path`` to a new ``<path>.torn-<seq>`` (never overwriting an
    older one), make that durable, then cut ``path`` back to ``offset``."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    base = f"{path}.torn-{seq}"
    for i in range(1000):
        dest = base if i == 0 else f"{base}.{i}"
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        except FileExistsError:
            continue
        break
    else:
        raise OSError(errno.EEXIST, f"too many torn files next to {path}", base)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path)
    return dest


class LedgerWriter:
    """Append events to the ledger from a background thread; ``submit`` is the only hot-path call.

    Threading: ``submit``, ``state``, ``flush`` and ``close`` may be called from any thread. One
    writer thread owns the file descriptor and the chain state.

    Durability: ``fsync="batch"`` (default) fdatasyncs once per written batch, so everything
    ``flush`` reports as written is on disk; ``"always"`` syncs after every record (slow, for tests
    of the worst case); ``"never"`` leaves it to the kernel (a crash may lose the last seconds, and
    recovery will move a torn tail aside).

    Events must not be mutated after ``submit`` (use frozen Structs): they are encoded later, on the
    writer thread, so the decision loop does not pay for serialisation.

    ``fault_hook(n_records)`` is for tests and fault injection: called on the writer thread before
    each batch write; it may block (to hold the queue full) or raise ``OSError`` (to act as a failing disk).
    """

    def __init__(self, path: str | os.PathLike, *, queue_size: int = 65536, high_water: float = 0.8,
                 fsync: FsyncMode = "batch", batch_max: int = 1024, genesis: str = GENESIS,
                 first_seq: int = 1, clock: Callable[[], int] = time.time_ns,
                 retry_initial_s: float = 0.05, retry_max_s: float = 2.0, linger_s: float = 0.002,
                 fault_hook: Callable[[int], None] | None = None):
        if queue_size < 1:
            raise ValueError(f"LedgerWriter: queue_size must be >= 1, got {queue_size}")
        if not 0.0 < high_water <= 1.0:
            raise ValueError(f"LedgerWriter: high_water must be in (0, 1], got {high_water}")
        if fsync not in ("batch", "always", "never"):
            raise ValueError(f"LedgerWriter: fsync must be 'batch', 'always' or 'never', got {fsync!r}")
        self.path = os.fspath(path)
        self._cap = queue_size
        self._hw_n = max(1, int(queue_size * high_water))
        self._fsync = fsync
        self._batch_max = batch_max
        self._clock = clock
        self._retry = (retry_initial_s, retry_max_s)
        self._hook = fault_hook
        self._linger = linger_s
        self._genesis, self._first_seq = genesis, first_seq

        self._cond = threading.Condition()
        self._q: collections.deque = collections.deque()
        self._inflight = 0
        self._stop = False
        self._abandon = False
        self._fatal: str | None = None
        self._error: str | None = None
        self._hw = False
        self._idle = False
        # counters (written under _cond or by the writer thread only; read as a snapshot)
        self._written = self._bytes = self._errors = self._rejected = self._hw_total = 0
        self._fsyncs = 0
        self._last_fsync_s = 0.0
        self._torn_moved_to: str | None = None

        # chain state, owned by the writer thread once it runs
        self._fd: int | None = None
        self._size = 0
        self._seq = first_seq - 1
        self._hash = genesis

        try:
            self._open()  # LedgerCorrupt propagates: the caller must know before the loop starts
        except OSError as e:
            self._set_error(e, "open")

        self._thread = threading.Thread(target=self._run, name="arqond-ledger", daemon=True)
        self._thread.start()

    # ---- hot path -------------------------------------------------------------------------
    def submit(self, event: Any, ts_ns: int | None = None, *, wake: bool = True) -> bool:
        """Queue ``event`` (a msgspec Struct, normally tagged) for the ledger. Never blocks, never
        does I/O. Returns False when the queue is full or the writer is closed: the event was NOT
        accepted and the caller must enter safe mode. ``ts_ns`` defaults to ``clock()`` now.

        ``wake=False`` leaves an idle writer asleep: the caller promises to call ``wake()`` soon
        (the decision loop does, once per cycle after its time-critical part, so the writer
        thread does not take the GIL in the middle of a cycle). A writer that is not woken still
        looks at the queue at least once a second.

        Fast path without the lock: deque.append/len are atomic under the GIL and only the writer
        removes items, so a racing writer can only make the queue look fuller, never overfull (with
        several submitting threads the bound may be exceeded by at most threads - 1)."""
        ts = self._clock() if ts_ns is None else ts_ns
        q = self._q
        depth = len(q) + self._inflight
        if depth >= self._cap or self._stop:
            with self._cond:
                self._rejected += 1
            return False
        q.append((ts, event))
        if depth + 1 >= self._hw_n and not self._hw:
            with self._cond:
                if not self._hw:
                    self._hw = True
                    self._hw_total += 1
        # The writer sets _idle *before* it checks the queue, so either it sees this item or we
        # see _idle and wake it: no lost wake-up, and no lock taken while it is busy writing.
        if wake and self._idle:
            with self._cond:
                self._cond.notify()
        return True

    def submit_many(self, events: list, ts_ns: int | None = None, *, wake: bool = True) -> int:
        """``submit`` of each of ``events`` in order with one timestamp (one decision's events);
        returns how many were accepted (fewer than ``len(events)``: the rest were NOT, as for
        ``submit`` returning False)."""
        ts = self._clock() if ts_ns is None else ts_ns
        n = 0
        for e in events:
            n += self.submit(e, ts, wake=False)     # each refusal is counted, as with submit
        if n and wake:
            self.wake()
        return n

    def wake(self) -> None:
        """Wake an idle writer (after ``submit(..., wake=False)``). Cheap when it is busy."""
        if self._idle:
            with self._cond:
                self._cond.notify()

    # ---- status ---------------------------------------------------------------------------
    @property
    def state(self) -> LedgerStats:
        with self._cond:
            depth = len(self._q) + self._inflight
            err = self._fatal or self._error
            return LedgerStats(
                path=self.path, depth=depth, capacity=self._cap,
                high_water_reached=depth >= self._hw_n, full=depth >= self._cap,
                healthy=err is None and depth < self._cap and not self._stop,
                error=err, written_total=self._written, bytes_total=self._bytes,
                errors_total=self._errors, rejected_total=self._rejected,
                high_water_total=self._hw_total, fsync_total=self._fsyncs,
                last_fsync_seconds=self._last_fsync_s, last_seq=self._seq, last_hash=self._hash,
                torn_moved_to=self._torn_moved_to)

    @property
    def healthy(self) -> bool:
        return self.state.healthy

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def last_hash(self) -> str:
        return self._hash

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every accepted event is written (and synced, unless fsync="never").
        Returns False on timeout or if the writer stopped on a fatal error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()   # events submitted with wake=False
            while self._q or self._inflight:
                if self._fatal or not self._thread.is_alive():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left if left is not None else 0.5)
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, drain everything, close the file. Returns True when nothing was left
        unwritten. On timeout (e.g. the disk is still failing) the writer gives up and the count of
        unwritten events is left in ``state.error``."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abandon = True
                self._cond.notify_all()
            self._thread.join()
        with self._cond:
            left = len(self._q) + self._inflight
            if left:
                self._error = (f"closed with {left} audit events unwritten to {self.path}: "
                               f"{self._fatal or self._error}")
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        return left == 0

    def __enter__(self) -> "LedgerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- writer thread --------------------------------------------------------------------
    def _set_error(self, e: OSError, during: str) -> None:
        name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
        with self._cond:
            self._errors += 1
            self._error = (f"audit ledger {self.path}: {during} failed: [{name}] {e.strerror or e}; "
                           f"{len(self._q) + self._inflight} events held in memory, retrying")

    def _open(self) -> None:
        """Recover the tail, check the chain and open for append (writer state := file state)."""
        path = self.path
        try:
            sc = _scan(path, self._genesis, self._first_seq)
        except FileNotFoundError:
            sc = None
        if sc is not None:
            rep = sc.report
            if sc.tail_complete_record:
                # A whole, valid record that lost only its newline: complete it rather than move it.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                try:
                    os.write(fd, b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                sc = _scan(path, self._genesis, self._first_seq)
                rep = sc.report
            if sc.tail_offset >= 0 and (rep.torn_tail or sc.tail_unparsable):
                self._torn_moved_to = _move_aside(path, sc.tail_offset, rep.last_seq + 1)
                rep = VerifyReport(True, rep.n_records, last_seq=rep.last_seq, last_hash=rep.last_hash)
            if not rep.ok:
                with self._cond:
                    self._fatal = (f"audit ledger {path}:{rep.first_bad_line}: corrupt record "
                                   f"(expected seq {rep.first_bad_seq}): {rep.reason}")
                raise LedgerCorrupt(path, rep.first_bad_line, rep.first_bad_seq, rep.reason)
            self._seq, self._hash = rep.last_seq, rep.last_hash
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(fd).st_size
        if sc is None:
            _fsync_dir(path)  # the new directory entry must survive a crash too
        self._fd = fd
        with self._cond:
            self._error = None

    def _encode(self, items: list) -> tuple[list[bytes], int, str]:
        lines, seq, prev = [], self._seq, self._hash
        for ts, ev in items:
            try:
                body = _event_encoder.encode(ev)
                if not body.startswith(b"{"):
                    raise TypeError(f"event encodes to {body[:20]!r}, not a JSON object")
            except (TypeError, msgspec.EncodeError) as e:
                # Never lose it silently: the chain records that an event could not be written.
                body = _event_encoder.encode({"event": "ledger_encode_error",
                                              "type": type(ev).__qualname__, "error": str(e)[:500]})
                with self._cond:
                    self._errors += 1
            seq += 1
            line, prev = _encode_line(seq, ts, prev, body)
            lines.append(line)
        return lines, seq, prev

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _sync(self) -> None:
        t0 = time.perf_counter()
        os.fdatasync(self._fd)
        dt = time.perf_counter() - t0
        with self._cond:
            self._fsyncs += 1
            self._last_fsync_s = dt

    def _write_batch(self, items: list) -> tuple[int, int, str]:
        """Write ``items`` after the current chain head. Encoding happens here, per attempt, so a
        retry after a reopen always chains from what the file really holds; since ``ts_ns`` was
        fixed at submit, a retry writes the same bytes. Returns (bytes, last seq, last hash)."""
        if self._fd is None:
            self._open()
        lines, seq, h = self._encode(items)
        if self._hook is not None:
            self._hook(len(lines))
        if os.fstat(self._fd).st_size != self._size:
            # A previous attempt failed mid-write: cut the partial bytes so the chain stays clean.
            os.ftruncate(self._fd, self._size)
        if self._fsync == "always":
            for ln in lines:
                self._write_all(ln)
                self._sync()
        else:
            self._write_all(b"".join(lines))
            if self._fsync == "batch":
                self._sync()
        return sum(len(x) for x in lines), seq, h

    def _requeue(self, items: list) -> None:
        with self._cond:
            self._q.extendleft(reversed(items))
            self._inflight = 0
            self._cond.notify_all()

    def _run(self) -> None:
        lo, hi = self._retry
        while True:
            with self._cond:
                self._idle = True
                while not self._q and not self._stop:
                    self._cond.wait(1.0)
                self._idle = False
                if not self._q:
                    return  # stopping and drained
                if self._linger and not self._stop and len(self._q) < self._batch_max:
                    # Group commit: let a few more events arrive so the decision loop's thread
                    # yields the GIL to us once per batch rather than once per event.
                    self._cond.wait(self._linger)
                n = min(len(self._q), self._batch_max)
                items = [self._q.popleft() for _ in range(n)]
                self._inflight = n
            delay = lo
            while True:
                try:
                    nbytes, seq, h = self._write_batch(items)
                    break
                except LedgerCorrupt:
                    self._drop_fd()
                    self._requeue(items)  # _fatal is set; the events stay visible as depth
                    return
                except OSError as e:
                    self._set_error(e, "write" if self._fd is not None else "open")
                    if self._fd is not None and e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EINTR):
                        self._drop_fd()  # EIO, EBADF...: reopen (and rescan) before the next try
                    # Sleep the whole backoff even if submit() notifies: a failing disk must not be
                    # hammered at the decision-loop rate.
                    deadline = time.monotonic() + delay
                    with self._cond:
                        while not self._abandon and (left := deadline - time.monotonic()) > 0:
                            self._cond.wait(left)
                        if self._abandon:
                            self._q.extendleft(reversed(items))
                            self._inflight = 0
                            return
                    delay = min(hi, delay * 2)
            with self._cond:
                self._size += nbytes
                self._seq, self._hash = seq, h
                self._written += n
                self._bytes += nbytes
                self._inflight = 0
                self._error = None
                if len(self._q) < self._hw_n:
                    self._hw = False
                self._cond.notify_all()

    def _drop_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
