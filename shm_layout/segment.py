"""The daemon's side of an arqon segment: attach defensively, drain, publish, lease.

Attach refuses anything it cannot fully vouch for and says which check failed:
a segment is data written by another process, possibly dead, possibly foreign.
Ordered accesses (seqlock, ring indices, lease, ack) go through the compiled cffi
helper `shm_layout._shm` so they carry acquire/release semantics on every CPU;
numpy views are used for words written once before `state` became READY.
"""
from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
import msgspec
import numpy as np
import posix_ipc

from . import spec
from .decl import Declaration, FieldDecl, KnobDecl, SnapshotSpec, SlotSpec

try:
    from ._shm import ffi, lib
except ImportError as e:  # pragma: no cover - exercised only on a broken install
    raise ImportError("shm_layout._shm is not built: run `make` in the repository "
                      f"(cffi helper for ordered shared-memory access): {e}") from e

_NP = {"u8": np.uint8, "u32": np.uint32, "u64": np.uint64, "i64": np.int64, "f64": np.float64, "char": "S1"}


def _dtype(s: spec.Struct) -> np.dtype:
    names, formats, offsets = [], [], []
    for f in s.fields:
        names.append(f.name)
        if f.ctype == "char":
            formats.append(f"S{f.count}")
        elif f.count > 1:
            formats.append((_NP[f.ctype], (f.count,)))
        else:
            formats.append(_NP[f.ctype])
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": s.size})


HEADER_DT = _dtype(spec.HEADER)
CONTROL_DT = _dtype(spec.CONTROL)
COPY_DT = _dtype(spec.SNAPSHOT_COPY)
KNOB_DT = _dtype(spec.KNOB_DECL)
FIELD_DT = _dtype(spec.FIELD_DECL)
VARIANT_DT = _dtype(spec.VARIANT_DECL)
RING_DT = _dtype(spec.RING_HEAD)
MASK64 = (1 << 64) - 1
# One summary of arqd_summarize (native/src/arqd_helper.h): STAT_WORDS doubles in this order.
STAT_COUNT, STAT_SUM, STAT_MIN, STAT_MAX, STAT_P50, STAT_P95, STAT_P99 = range(7)
STAT_WORDS = 7
# Field offsets looked up on every cycle: resolved once here, not per call.
_CTL_OFF = {f.name: f.offset for f in spec.CONTROL.fields}
_RING_OFF = {f.name: f.offset for f in spec.RING_HEAD.fields}
_STATE_OFF = spec.HEADER.off("state")
_C = spec.SNAPSHOT_COPY
# Where POSIX shared memory objects are files (glibc on Linux), or None: then shm_open is used.
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


def _copy_struct(nk: int):
    """struct format of a snapshot copy for a declaration of `nk` knobs, from spec (the layout
    stays the single source): the knob columns past `nk` are pad bytes ('x': written as zeros,
    no argument), so a publish passes 12 + nk * (MAX_SLOTS + 1) values, not all 92."""
    import struct
    codes = {"u32": "I", "u64": "Q", "f64": "d"}
    knobs = f"{nk}d{(spec.MAX_KNOBS - nk) * 8}x"
    fmt, cur = "<", 0
    for f in _C.fields:
        if f.offset != cur:
            raise RuntimeError(f"snapshot copy: unexpected padding before {f.name}")
        if f.name == "global_knobs":
            fmt += knobs
        elif f.name == "knobs":
            fmt += knobs * spec.MAX_SLOTS
        else:
            fmt += (str(f.count) if f.count > 1 else "") + codes[f.ctype]
        cur = f.offset + f.size
    st = struct.Struct(fmt)
    assert st.size == cur <= _C.size
    return st


class AttachError(Exception):
    """A segment was refused. `check` names the failed check; the message says what was
    found and what was expected."""

    def __init__(self, name: str, check: str, detail: str):
        self.name, self.check, self.detail = name, check, detail
        super().__init__(f"/arqon.{name}: refused ({check}): {detail}")


def shm_name(name: str) -> str:
    return f"/arqon.{name}"


def mix64(x: int) -> int:
    """splitmix64, identical to libarqon's slot hash."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def cum_weights(weights: list[float]) -> list[int]:
    """Cumulative 32-bit thresholds for slot selection (last active slot takes the rest)."""
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(min(0xFFFFFFFF, max(0, int(round(acc * 4294967296.0)))))
    out[-1] = 0xFFFFFFFF
    return out


def slot_for_key(key: int, salt: int, cum: list[int], n_slots: int) -> int:
    h = mix64((key ^ salt) & MASK64) >> 32
    slot = 0
    while slot + 1 < n_slots and h >= cum[slot]:
        slot += 1
    return slot


def _cstr(b: bytes, where: str, name: str) -> str:
    raw = bytes(b)
    if b"\0" in raw:
        raw = raw[: raw.index(b"\0")]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AttachError(name, "declaration", f"{where}: expected a UTF-8 name, got {raw!r}") from None


@dataclass(frozen=True)
class RingStats:
    ring: int
    head: int
    tail: int
    drops: int
    seq_errors: int
    fill_ratio: float
    producer_heartbeat_ns: int


class PlaneState(msgspec.Struct, frozen=True):
    """The data plane's side of the control block. One is built every cycle, so it is a msgspec
    Struct built positionally: with a NamedTuple built by keyword, `poll_summary` with no records
    took 77-81 us p50 after a 10 ms sleep (the loop's cold caches, 2-vCPU VM), 63-64 us now."""
    ack_generation: int
    lease_state: int            # spec.LEASE_*
    lease_deadline_ns: int
    lease_lapses: int
    plane_heartbeat_ns: int
    state: int                  # spec.STATE_*


class Segment:
    """An attached segment. Not thread-safe: one decision loop owns it."""

    def __init__(self, name: str, fd: int, mm: mmap.mmap, hdr: np.void, decl: Declaration, st: os.stat_result):
        self.name = name
        self._fd = fd
        self._mm = mm
        self._buf = np.frombuffer(mm, dtype=np.uint8)
        self._base = ffi.from_buffer("char[]", mm, require_writable=True)
        self.header = hdr
        self.declaration = decl
        self.epoch = int(hdr["epoch"])
        self.creator_pid = int(hdr["creator_pid"])
        self.size = int(hdr["total_size"])
        self.n_rings = int(hdr["n_rings"])
        self.capacity = int(hdr["ring_capacity"])
        self.record_words = int(hdr["record_size"]) // 8
        self.rings_off = int(hdr["rings_off"])
        self.ring_stride = int(hdr["ring_stride"])
        self._ino = (st.st_dev, st.st_ino)
        self._ctl = self._base + spec.CONTROL_OFF
        self._copy = np.zeros(1, dtype=COPY_DT)
        self._copy_ptr = ffi.from_buffer("char[]", self._copy)
        self._copy_view = memoryview(self._copy.view(np.uint8))
        self._copy_struct = _copy_struct(len(decl.knobs))
        self._nk = len(decl.knobs)
        # one region per ring so a whole cycle's drain is one C call (see poll)
        self._drain_buf = np.zeros(self.n_rings * self.capacity * self.record_words, dtype=np.uint64)
        self._drain_ptr = ffi.cast("uint64_t *", ffi.from_buffer("char[]", self._drain_buf))
        self._counts = np.zeros(self.n_rings, dtype=np.int64)
        self._counts_ptr = ffi.cast("int64_t *", ffi.from_buffer("char[]", self._counts))
        self._state = np.zeros(5, dtype=np.uint64)
        self._state_ptr = ffi.cast("uint64_t *", ffi.from_buffer("char[]", self._state))
        # per-cycle summaries computed in C (poll_summary): [slot][field][count, sum, min, max, p50, p95, p99]
        nf = len(self.declaration.fields)
        self._scratch = np.zeros(self.n_rings * self.capacity, dtype=np.float64)
        self._scratch_ptr = ffi.cast("double *", ffi.from_buffer("char[]", self._scratch))
        self._slot_records = np.zeros(spec.MAX_SLOTS, dtype=np.uint64)
        self._slot_records_ptr = ffi.cast("uint64_t *", ffi.from_buffer("char[]", self._slot_records))
        self._stats = np.zeros((spec.MAX_SLOTS, max(nf, 1), STAT_WORDS), dtype=np.float64)
        self._stats_ptr = ffi.cast("double *", ffi.from_buffer("char[]", self._stats))
        self._used = ffi.new("uint64_t *")
        # poll_summary's arguments that never change, looked up once
        self._nf = nf
        self._ps_rings = (self._base, self.rings_off, self.ring_stride, self.n_rings, self.capacity,
                          self.record_words, self._drain_ptr, self._counts_ptr)
        self._ps_out = (spec.MAX_SLOTS, self._scratch_ptr, self._slot_records_ptr, self._stats_ptr, self._used)
        self._writer = False

    # ---- attach ---------------------------------------------------------------------

    @classmethod
    def attach(cls, name: str, *, allow_foreign_owner: bool = False) -> "Segment":
        """Open /arqon.<name> read-write and validate everything before use."""
        try:
            shm = posix_ipc.SharedMemory(shm_name(name), flags=0)
        except posix_ipc.ExistentialError:
            raise AttachError(name, "exists", "no such segment (is the data plane running?)") from None
        except posix_ipc.PermissionsError as e:
            raise AttachError(name, "permissions", f"cannot open read-write: {e}") from None
        fd = shm.fd
        try:
            st = os.fstat(fd)
            cls._check_owner(name, st, allow_foreign_owner)
            if st.st_size < spec.HEADER_SIZE:
                raise AttachError(name, "size", f"file is {st.st_size} bytes, smaller than the "
                                  f"{spec.HEADER_SIZE}-byte header")
            mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        try:
            hdr = np.frombuffer(mm, dtype=HEADER_DT, count=1)[0].copy()
            state_ptr = ffi.cast("uint32_t *", ffi.from_buffer("char[]", mm)) + spec.HEADER.off("state") // 4
            state = int(lib.arqd_load_acq32(state_ptr))
            hdr = np.frombuffer(mm, dtype=HEADER_DT, count=1)[0].copy()  # re-read after the acquire
            cls._check_header(name, hdr, state, st.st_size)
            decl = cls._decode_decl(name, mm, hdr)
            seg = cls(name, fd, mm, hdr, decl, st)
            seg._check_rings()
            return seg
        except BaseException:
            try:
                mm.close()
            except BufferError:
                pass
            os.close(fd)
            raise

    @staticmethod
    def _check_owner(name: str, st: os.stat_result, allow_foreign_owner: bool) -> None:
        if allow_foreign_owner:
            return
        if st.st_uid != os.geteuid():
            raise AttachError(name, "owner", f"owned by uid {st.st_uid}, expected our uid {os.geteuid()} "
                              "(pass allow_foreign_owner to accept)")
        if st.st_mode & stat.S_IWOTH:
            raise AttachError(name, "mode", f"mode {stat.S_IMODE(st.st_mode):04o} is writable by others; "
                              "expected no o+w (0600 or 0660)")

    @staticmethod
    def _check_header(name: str, h: np.void, state: int, file_size: int) -> None:
        def need(check: str, ok: bool, found, expected) -> None:
            if not ok:
                raise AttachError(name, check, f"found {found}, expected {expected}")
        need("magic", int(h["magic"]) == spec.MAGIC, hex(int(h["magic"])), hex(spec.MAGIC))
        need("version", int(h["version_major"]) == spec.VERSION_MAJOR,
             f"major {int(h['version_major'])}", f"major {spec.VERSION_MAJOR}")
        need("layout_hash", int(h["layout_hash"]) == spec.LAYOUT_HASH, hex(int(h["layout_hash"])),
             hex(spec.LAYOUT_HASH))
        need("state", state == spec.STATE_READY, f"state {state}", f"READY ({spec.STATE_READY})")
        need("header_size", int(h["header_size"]) == spec.HEADER_SIZE, int(h["header_size"]), spec.HEADER_SIZE)
        nk, nf, nv, nr = (int(h[k]) for k in ("n_knobs", "n_fields", "n_variants", "n_rings"))
        cap, rs = int(h["ring_capacity"]), int(h["record_size"])
        need("n_knobs", 1 <= nk <= spec.MAX_KNOBS, nk, f"1..{spec.MAX_KNOBS}")
        need("n_fields", 0 <= nf <= spec.MAX_FIELDS, nf, f"0..{spec.MAX_FIELDS}")
        need("n_variants", 0 <= nv <= spec.MAX_VARIANTS, nv, f"0..{spec.MAX_VARIANTS}")
        need("n_rings", 1 <= nr <= spec.MAX_RINGS, nr, f"1..{spec.MAX_RINGS}")
        need("ring_capacity", spec.MIN_RING_CAPACITY <= cap <= spec.MAX_RING_CAPACITY and cap & (cap - 1) == 0,
             cap, f"a power of two in {spec.MIN_RING_CAPACITY}..{spec.MAX_RING_CAPACITY}")
        need("record_size", rs == spec.record_size(nf), rs, spec.record_size(nf))
        for key, want in (("control_off", spec.CONTROL_OFF), ("snapshot_off", spec.SNAPSHOT_OFF),
                          ("decl_off", spec.DECL_OFF), ("rings_off", spec.RINGS_OFF),
                          ("ring_stride", spec.ring_stride(cap, nf))):
            need(key, int(h[key]) == want, int(h[key]), want)
        total = spec.total_size(nr, cap, nf)
        need("total_size", int(h["total_size"]) == total, int(h["total_size"]), f"{total} for this declaration")
        need("file_size", file_size == total, file_size, f"{total} (header total_size)")

    @staticmethod
    def _decode_decl(name: str, mm: mmap.mmap, h: np.void) -> Declaration:
        off = spec.DECL_OFF
        knobs_raw = np.frombuffer(mm, dtype=KNOB_DT, count=int(h["n_knobs"]), offset=off)
        off_f = off + spec.DECL.off("fields")
        fields_raw = np.frombuffer(mm, dtype=FIELD_DT, count=int(h["n_fields"]), offset=off_f)
        off_v = off + spec.DECL.off("variants")
        vars_raw = np.frombuffer(mm, dtype=VARIANT_DT, count=int(h["n_variants"]), offset=off_v)
        knobs = []
        for i, k in enumerate(knobs_raw):
            kname = _cstr(k["name"], f"knobs[{i}].name", name)
            lo, hi, init, fl = float(k["min"]), float(k["max"]), float(k["initial"]), int(k["flags"])
            if not kname or not all(math.isfinite(v) for v in (lo, hi, init)) or not lo <= init <= hi:
                raise AttachError(name, "declaration", f"knobs[{i}] ({kname!r}): expected finite "
                                  f"min <= initial <= max, found {lo} <= {init} <= {hi}")
            if fl & ~(spec.KNOB_INTEGER | spec.KNOB_GLOBAL):
                raise AttachError(name, "declaration", f"knobs[{i}].flags: unknown bits {fl:#x}")
            knobs.append(KnobDecl(kname, lo, hi, init, bool(fl & spec.KNOB_INTEGER), bool(fl & spec.KNOB_GLOBAL)))
        fields = tuple(FieldDecl(_cstr(f["name"], f"fields[{i}].name", name), _cstr(f["unit"], f"fields[{i}].unit", name))
                       for i, f in enumerate(fields_raw))
        variants = tuple(_cstr(v["name"], f"variants[{i}].name", name) for i, v in enumerate(vars_raw))
        names = [k.name for k in knobs]
        if len(set(names)) != len(names):
            raise AttachError(name, "declaration", f"duplicate knob names in {names}")
        return Declaration(tuple(knobs), fields, variants, int(h["n_rings"]), int(h["ring_capacity"]))

    def _check_rings(self) -> None:
        for r in range(self.n_rings):
            s = self.ring_stats(r)
            if not s.head <= s.tail <= s.head + self.capacity:
                raise AttachError(self.name, "ring_invariant", f"ring {r}: head {s.head}, tail {s.tail}; "
                                  f"expected head <= tail <= head + {self.capacity}")

    # ---- ordered word access ------------------------------------------------------------

    def _u64(self, off: int):
        return ffi.cast("uint64_t *", self._base + off)

    def _u32(self, off: int):
        return ffi.cast("uint32_t *", self._base + off)

    def _ctl_off(self, fname: str) -> int:
        return spec.CONTROL_OFF + _CTL_OFF[fname]

    def _ring_off(self, ring: int, fname: str) -> int:
        return self.rings_off + ring * self.ring_stride + _RING_OFF[fname]

    def load_u64(self, off: int) -> int:
        return int(lib.arqd_load_acq(self._u64(off)))

    # ---- state -----------------------------------------------------------------------

    def plane_state(self) -> PlaneState:
        ld = self.load_u64
        return PlaneState(
            ack_generation=ld(self._ctl_off("ack_generation")),
            lease_state=int(lib.arqd_load_acq32(self._u32(self._ctl_off("lease_state")))),
            lease_deadline_ns=ld(self._ctl_off("lease_deadline_ns")),
            lease_lapses=ld(self._ctl_off("lease_lapses")),
            plane_heartbeat_ns=ld(self._ctl_off("plane_heartbeat_ns")),
            state=int(lib.arqd_load_acq32(self._u32(_STATE_OFF))),
        )

    def ring_stats(self, ring: int) -> RingStats:
        ld = self.load_u64
        head, tail = ld(self._ring_off(ring, "head")), ld(self._ring_off(ring, "tail"))
        return RingStats(ring, head, tail, ld(self._ring_off(ring, "drops")), ld(self._ring_off(ring, "seq_errors")),
                         (tail - head) / self.capacity, ld(self._ring_off(ring, "producer_heartbeat_ns")))

    def is_current(self) -> bool:
        """False once the data plane closed this segment or a new one took its name."""
        if int(lib.arqd_load_acq32(self._u32(_STATE_OFF))) != spec.STATE_READY:
            return False
        if _SHM_DIR is not None:   # Linux: one stat of the name, no open/close (the loop asks 10x a second)
            try:
                st = os.stat(_SHM_DIR + shm_name(self.name))
            except OSError:
                return False
            return (st.st_dev, st.st_ino) == self._ino
        try:
            shm = posix_ipc.SharedMemory(shm_name(self.name), flags=0, read_only=True)
        except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
            return False
        try:
            st = os.fstat(shm.fd)
        finally:
            os.close(shm.fd)
        return (st.st_dev, st.st_ino) == self._ino

    # ---- telemetry -------------------------------------------------------------------

    def drain(self, ring: int, max_records: int | None = None) -> np.ndarray:
        """Move up to max_records complete records out of a ring.

        Returns an (n, record_words) uint64 view into a buffer reused by the next call:
        copy what you keep. Records with a bad sequence word have column 0 zeroed.
        """
        m = self.capacity if max_records is None else min(max_records, self.capacity)
        n = lib.arqd_drain(self._base, self.rings_off, self.ring_stride, ring, self.capacity,
                           self.record_words, self._drain_ptr, m)
        if n < 0:
            raise AttachError(self.name, "ring_invariant", f"ring {ring}: indices broke head <= tail <= head + cap")
        return self._drain_buf[: n * self.record_words].reshape(n, self.record_words)

    def poll(self, now_ns: int, lease_deadline_ns: int) -> tuple[list[np.ndarray], PlaneState]:
        """The decision loop's one call per cycle: drain every ring, stamp the heartbeats, renew
        the lease and read the data plane's state. Returned arrays are views into a buffer the
        next call reuses: copy what you keep."""
        lib.arqd_poll(self._base, self.rings_off, self.ring_stride, self.n_rings, self.capacity, self.record_words,
                      self._drain_ptr, self.capacity, self._counts_ptr, now_ns, lease_deadline_ns, self._state_ptr)
        per = self.capacity * self.record_words
        out = []
        for r, n in enumerate(self._counts.tolist()):
            if n < 0:
                raise AttachError(self.name, "ring_invariant", f"ring {r}: indices broke head <= tail <= head + cap")
            out.append(self._drain_buf[r * per: r * per + n * self.record_words].reshape(n, self.record_words))
        st = self._state.tolist()
        return out, PlaneState(ack_generation=st[0], lease_state=st[1], lease_deadline_ns=lease_deadline_ns,
                               lease_lapses=st[2], plane_heartbeat_ns=st[3], state=st[4])

    def poll_summary(self, now_ns: int, lease_deadline_ns: int, generation: int, since_ns: int,
                     quantile_mask: int) -> tuple[int, int, PlaneState]:
        """`poll` and the cycle's telemetry summary in one C call, without handing the records to
        Python: returns (records drained, records summarised, plane state). The summary is left
        in `slot_records` (records used per slot) and `stats` ([slot][field][STAT_*]), buffers
        the next call reuses; see arqd_summarize in native/src/arqd_helper.h for which records
        count. quantile_mask: bit j set = compute p50/p95/p99 of declaration field j."""
        drained = lib.arqd_poll_summarize(*self._ps_rings, now_ns, lease_deadline_ns, self._state_ptr, self._nf,
                                          generation, since_ns if since_ns > 0 else 0, quantile_mask, *self._ps_out)
        if drained < 0:
            r = -drained - 1
            raise AttachError(self.name, "ring_invariant", f"ring {r}: indices broke head <= tail <= head + cap")
        st = self._state.tolist()
        # positional, in field order: (ack_generation, lease_state, lease_deadline_ns, lease_lapses,
        # plane_heartbeat_ns, state)
        return drained, self._used[0], PlaneState(st[0], st[1], lease_deadline_ns, st[2], st[3], st[4])

    @property
    def slot_records(self) -> np.ndarray:
        """Records summarised per slot by the last poll_summary (a reused buffer)."""
        return self._slot_records

    @property
    def stats(self) -> np.ndarray:
        """[slot][field][STAT_*] of the last poll_summary (a reused buffer; count is 0 where a slot
        had no finite value of a field)."""
        return self._stats

    # ---- snapshot ----------------------------------------------------------------------

    def acquire_writer(self, pid: int | None = None, *, steal_from_dead: bool = True) -> None:
        """Take the single-writer role for the snapshot (CAS on control.writer_pid)."""
        pid = os.getpid() if pid is None else pid
        ptr = self._u32(self._ctl_off("writer_pid"))
        for _ in range(2):
            cur = int(lib.arqd_load_acq32(ptr))
            if cur in (0, pid):
                if lib.arqd_cas32(ptr, cur, pid):
                    self._writer = True
                    return
                continue
            if steal_from_dead and not _pid_alive(cur):
                if lib.arqd_cas32(ptr, cur, pid):
                    self._writer = True
                    return
                continue
            raise AttachError(self.name, "writer", f"snapshot writer role held by live pid {cur}")
        raise AttachError(self.name, "writer", "lost the race for the snapshot writer role")

    def release_writer(self) -> None:
        if self._writer:
            lib.arqd_cas32(self._u32(self._ctl_off("writer_pid")), os.getpid(), 0)
            self._writer = False

    def encode(self, snap: SnapshotSpec) -> np.ndarray:
        """Fill the private copy buffer from a SnapshotSpec (validated by the caller: Tier 1).

        One struct.pack_into over the whole copy (format derived from spec for this declaration's
        knob count): numpy slice assignments cost ~1-2 us each and a publish needs a dozen."""
        n_slots = len(snap.slots)
        if not 1 <= n_slots <= spec.MAX_SLOTS:
            raise ValueError(f"slots: expected 1..{spec.MAX_SLOTS}, got {n_slots}")
        nk = len(self.declaration.knobs)
        missing = spec.MAX_SLOTS - n_slots
        cum = cum_weights([s.weight for s in snap.slots]) + [0xFFFFFFFF] * missing
        variants = [s.variant for s in snap.slots] + [0] * missing
        knobs: list[float] = list(snap.global_knobs)
        if len(knobs) != nk:
            raise ValueError(f"global_knobs: expected {nk} values, got {len(knobs)}")
        for i, sl in enumerate(snap.slots):
            if len(sl.knobs) != nk:
                raise ValueError(f"slots[{i}].knobs: expected {nk} values, got {len(sl.knobs)}")
            knobs.extend(sl.knobs)
        knobs.extend((0.0,) * (nk * missing))
        self._copy_struct.pack_into(self._copy_view, 0, snap.generation, snap.salt & MASK64, n_slots, 0,
                                    *cum, *variants, *knobs)
        return self._copy

    def publish(self, snap: SnapshotSpec, lease_deadline_ns: int) -> int:
        """Publish a whole snapshot, then set the lease; returns the seqlock seq.

        One C call encodes and publishes (arqd_encode_publish: the slot tuples go in as they
        are); it writes the same bytes as `encode` (tested), at a fraction of the cost on the
        decision path (~65 -> ~15 us with cold caches at a 10 ms cadence)."""
        if not self._writer:
            raise RuntimeError("publish without the writer role: call acquire_writer() first")
        slots = snap.slots
        n_slots = len(slots)
        if not 1 <= n_slots <= spec.MAX_SLOTS:
            raise ValueError(f"slots: expected 1..{spec.MAX_SLOTS}, got {n_slots}")
        nk = self._nk
        if len(snap.global_knobs) != nk:
            raise ValueError(f"global_knobs: expected {nk} values, got {len(snap.global_knobs)}")
        knobs = [ffi.NULL] * spec.MAX_SLOTS
        for i, sl in enumerate(slots):
            if len(sl.knobs) != nk:
                raise ValueError(f"slots[{i}].knobs: expected {nk} values, got {len(sl.knobs)}")
            knobs[i] = sl.knobs
        return int(lib.arqd_encode_publish(self._base, self._copy_ptr, nk, snap.generation, snap.salt & MASK64, n_slots,
                                           [s.weight for s in slots], [s.variant for s in slots], snap.global_knobs,
                                           *knobs, lease_deadline_ns))

    def publish_staged(self, staged, lease_deadline_ns: int) -> int:
        """Publish a snapshot staged in C memory (`arqd_staged *`, from Tier 1's admission fast
        path), then set the lease, as `publish` does; returns the seqlock seq."""
        if not self._writer:
            raise RuntimeError("publish without the writer role: call acquire_writer() first")
        if not 1 <= staged.n_slots <= spec.MAX_SLOTS:
            raise ValueError(f"slots: expected 1..{spec.MAX_SLOTS}, got {staged.n_slots}")
        return int(lib.arqd_publish_staged(self._base, self._copy_ptr, self._nk, staged, lease_deadline_ns))

    def renew_lease(self, deadline_ns: int) -> None:
        lib.arqd_store_rel(self._u64(self._ctl_off("lease_deadline_ns")), deadline_ns)

    def read_snapshot(self) -> tuple[int, SnapshotSpec]:
        out = np.zeros(1, dtype=COPY_DT)
        seq = int(lib.arqd_read_snapshot(self._base, ffi.from_buffer("char[]", out)))
        c = out[0]
        n = int(c["n_slots"])
        nk = len(self.declaration.knobs)
        knobs = np.asarray(c["knobs"]).reshape(spec.MAX_SLOTS, spec.MAX_KNOBS)
        cum = [int(x) for x in c["cum_weight"]]
        slots, prev = [], 0
        for i in range(max(1, min(n, spec.MAX_SLOTS))):
            hi = cum[i] + 1 if i + 1 < n else 1 << 32
            slots.append(SlotSpec((hi - prev) / 4294967296.0, int(c["variant"][i]), tuple(float(x) for x in knobs[i, :nk])))
            prev = hi
        return seq, SnapshotSpec(int(c["generation"]), tuple(slots),
                                 tuple(float(x) for x in np.asarray(c["global_knobs"])[:nk]), int(c["salt"]))

    def close(self) -> None:
        self.release_writer()
        self._buf = None
        self._base = None
        self._drain_ptr = None
        self._ps_rings = self._ps_out = None
        try:
            self._mm.close()
        except BufferError:
            pass  # a caller still holds a view; the mapping goes with the last reference
        os.close(self._fd)

    def __enter__(self) -> "Segment":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def decode_records(rows: np.ndarray, n_fields: int) -> dict[str, np.ndarray]:
    """Columns of drained records: seq, t_ns, generation, slot, variant, fields (n, n_fields) float64."""
    return {
        "seq": rows[:, 0],
        "t_ns": rows[:, 1],
        "generation": rows[:, 2],
        "slot": (rows[:, 3] & 0xFFFFFFFF).astype(np.uint32),
        "variant": (rows[:, 3] >> np.uint64(32)).astype(np.uint32),
        "fields": rows[:, spec.RECORD_HEADER_WORDS: spec.RECORD_HEADER_WORDS + n_fields].view(np.float64),
    }
