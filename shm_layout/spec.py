"""The shared-memory layout: the single source of truth for every offset and size.

A segment `/arqon.<name>` is laid out as

    [ header 256 B | control 256 B | snapshot region | declaration | pad to 4 KiB | ring 0 | ring 1 | ... ]

Every struct below is described once, as an ordered list of (field, type, count).
`gen_header.py` turns these into `native/include/arqon_layout.h` (C structs with
static offset asserts) and `segment.py` turns them into numpy dtypes, so C and
Python cannot disagree. `LAYOUT_HASH` is an FNV-1a hash of this description:
a segment written by a different layout is refused at attach time.

Ownership of words (who writes; everyone else only reads):
- header: the data plane, once, before `state` goes READY (release).
- control.daemon block: the daemon (lease, heartbeat, writer pid).
- control.plane block: the data plane (ack, heartbeat, lease state).
- snapshot: the daemon, through a double-buffered seqlock (see native/src/shm_proto.h).
- ring producer block and records: the one producer thread of that ring.
- ring consumer block: the daemon.
"""
from __future__ import annotations

from dataclasses import dataclass

# ---- limits -------------------------------------------------------------------
MAX_KNOBS = 16
MAX_SLOTS = 4          # slot 0 is always the known-good baseline
MAX_FIELDS = 12        # keeps a record within 128 bytes
MAX_VARIANTS = 32
MAX_RINGS = 64
NAME_LEN = 32          # NUL-terminated names
UNIT_LEN = 16
MIN_RING_CAPACITY = 64
MAX_RING_CAPACITY = 1 << 24

MAGIC = 0x314D485351524141  # b"AARQSHM1" little-endian
VERSION_MAJOR = 1          # bumped on any incompatible change; attach refuses another major
VERSION_MINOR = 0

# header.state: written last at create (release), so a reader that sees READY sees the rest.
STATE_INIT = 1
STATE_READY = 2
STATE_CLOSED = 3

# control.plane.lease_state
LEASE_NONE = 0      # never leased: the data plane serves slot 0
LEASE_ACTIVE = 1
LEASE_LAPSED = 2    # the daemon stopped renewing: the data plane serves slot 0 by itself

# knob flags (match arqon.h)
KNOB_INTEGER = 1 << 0
KNOB_GLOBAL = 1 << 1

RECORD_HEADER_WORDS = 4   # seq, t_ns, generation, slot | variant << 32
BLOCK = 128               # producer/consumer indices each alone on a 128-byte block

HEADER_SIZE = 256
CONTROL_SIZE = 256
PAGE = 4096

_CTYPES = {"u8": ("uint8_t", 1), "u32": ("uint32_t", 4), "u64": ("uint64_t", 8),
           "i64": ("int64_t", 8), "f64": ("double", 8), "char": ("char", 1)}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str     # key of _CTYPES
    count: int = 1  # array length (1 = scalar)
    offset: int = 0

    @property
    def size(self) -> int:
        return _CTYPES[self.ctype][1] * self.count


@dataclass(frozen=True)
class Struct:
    """A C struct with explicit offsets and a fixed total size (tail padding is explicit)."""
    name: str
    fields: tuple[Field, ...]
    size: int
    align: int = 8

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name}.{name}")

    def off(self, name: str) -> int:
        return self.field(name).offset


def _struct(name: str, spec: list[tuple], size: int | None = None, align: int = 8) -> Struct:
    """Lay fields out in order; a ("@", n) entry moves the cursor to offset n (explicit padding)."""
    fields: list[Field] = []
    cur = 0
    for item in spec:
        if item[0] == "@":
            if item[1] < cur:
                raise ValueError(f"{name}: offset {item[1]} overlaps previous field (cursor {cur})")
            cur = item[1]
            continue
        fname, ctype, *cnt = item
        count = cnt[0] if cnt else 1
        a = _CTYPES[ctype][1]
        cur = (cur + a - 1) // a * a
        f = Field(fname, ctype, count, cur)
        fields.append(f)
        cur += f.size
    total = size if size is not None else (cur + align - 1) // align * align
    if cur > total:
        raise ValueError(f"{name}: fields take {cur} bytes, more than its size {total}")
    return Struct(name, tuple(fields), total, align)


HEADER = _struct("arq_shm_header", [
    ("magic", "u64"),
    ("version_major", "u32"), ("version_minor", "u32"),
    ("layout_hash", "u64"),
    ("header_size", "u64"),          # = HEADER_SIZE, checked at attach
    ("total_size", "u64"),           # checked against fstat
    ("state", "u32"),                # STATE_*: written last (release)
    ("mode", "u32"),                 # permission bits the creator asked for
    ("creator_pid", "u32"), ("creator_uid", "u32"),
    ("creator_start_ticks", "u64"),  # /proc/<pid>/stat field 22: tells a reused pid apart
    ("epoch", "u64"),                # random per create: the daemon re-attaches when it changes
    ("created_realtime_ns", "u64"),  # for people
    ("n_knobs", "u32"), ("n_fields", "u32"),
    ("n_variants", "u32"), ("n_rings", "u32"),
    ("ring_capacity", "u32"), ("record_size", "u32"),
    ("control_off", "u64"), ("snapshot_off", "u64"), ("decl_off", "u64"),
    ("rings_off", "u64"), ("ring_stride", "u64"),
], size=HEADER_SIZE)

CONTROL = _struct("arq_shm_control", [
    # daemon block (written by the daemon only)
    ("lease_deadline_ns", "u64"),    # CLOCK_MONOTONIC; 0 = no lease
    ("daemon_heartbeat_ns", "u64"),
    ("daemon_pid", "u32"),
    ("writer_pid", "u32"),           # pid holding the snapshot writer role (CAS), 0 = free
    ("daemon_epoch", "u64"),         # random per daemon start
    ("@", BLOCK),
    # plane block (written by the data plane only)
    ("ack_generation", "u64"),       # highest snapshot generation the data plane has adopted
    ("plane_heartbeat_ns", "u64"),   # CLOCK_MONOTONIC, written by libarqon's tick
    ("lease_state", "u32"),          # LEASE_*
    ("plane_flags", "u32"),
    ("lease_lapses", "u64"),         # times the data plane fell back by itself
    ("reads_total", "u64"),          # arq_read calls seen by tick sampling (approximate)
], size=CONTROL_SIZE)

SNAPSHOT_COPY = _struct("arq_snapshot_copy", [
    ("generation", "u64"),
    ("salt", "u64"),                 # re-keys the slot hash per experiment
    ("n_slots", "u32"),              # active slots, 1..MAX_SLOTS
    ("flags", "u32"),
    ("cum_weight", "u32", MAX_SLOTS),  # slot i serves hash32 < cum_weight[i]; last active slot takes the rest
    ("variant", "u32", MAX_SLOTS),
    ("global_knobs", "f64", MAX_KNOBS),
    ("knobs", "f64", MAX_SLOTS * MAX_KNOBS),  # [slot][knob]
], align=64)

SNAPSHOT = _struct("arq_shm_snapshot", [
    ("seq", "u64"),                  # double-buffer seqlock: readers use copy[seq & 1]
    ("@", BLOCK),
    ("copy", "u8", 2 * SNAPSHOT_COPY.size),
])

KNOB_DECL = _struct("arq_shm_knob", [
    ("name", "char", NAME_LEN), ("min", "f64"), ("max", "f64"), ("initial", "f64"),
    ("flags", "u32"),
], size=64)
FIELD_DECL = _struct("arq_shm_field", [("name", "char", NAME_LEN), ("unit", "char", UNIT_LEN)], size=48)
VARIANT_DECL = _struct("arq_shm_variant", [("name", "char", NAME_LEN)], size=32)

DECL = _struct("arq_shm_decl", [
    ("knobs", "u8", MAX_KNOBS * KNOB_DECL.size),
    ("fields", "u8", MAX_FIELDS * FIELD_DECL.size),
    ("variants", "u8", MAX_VARIANTS * VARIANT_DECL.size),
])

RING_HEAD = _struct("arq_shm_ring", [
    # producer block
    ("tail", "u64"),                 # next position to write; records [head, tail) are readable
    ("drops", "u64"),                # records dropped because the ring was full
    ("producer_heartbeat_ns", "u64"),
    ("@", BLOCK),
    # consumer block
    ("head", "u64"),                 # next position to read
    ("consumer_heartbeat_ns", "u64"),
    ("seq_errors", "u64"),           # records whose sequence word did not match (torn/foreign)
], size=2 * BLOCK)

RECORD_HEADER = _struct("arq_record_header", [
    ("seq", "u64"),                  # position + 1, stored last (release)
    ("t_ns", "u64"),                 # CLOCK_MONOTONIC, libarqon tick resolution
    ("generation", "u64"),           # snapshot generation the request ran under
    ("slot", "u32"), ("variant", "u32"),
])

STRUCTS = (HEADER, CONTROL, SNAPSHOT_COPY, SNAPSHOT, KNOB_DECL, FIELD_DECL, VARIANT_DECL, DECL,
           RING_HEAD, RECORD_HEADER)

CONTROL_OFF = HEADER_SIZE
SNAPSHOT_OFF = CONTROL_OFF + CONTROL_SIZE
DECL_OFF = SNAPSHOT_OFF + SNAPSHOT.size
RINGS_OFF = (DECL_OFF + DECL.size + PAGE - 1) // PAGE * PAGE


def record_size(n_fields: int) -> int:
    """Bytes per telemetry record: header + fields, rounded up to a 64-byte cache line."""
    raw = (RECORD_HEADER_WORDS + n_fields) * 8
    return (raw + 63) // 64 * 64


def ring_stride(capacity: int, n_fields: int) -> int:
    return RING_HEAD.size + capacity * record_size(n_fields)


def total_size(n_rings: int, capacity: int, n_fields: int) -> int:
    raw = RINGS_OFF + n_rings * ring_stride(capacity, n_fields)
    return (raw + PAGE - 1) // PAGE * PAGE


def _describe() -> str:
    parts = [f"v{VERSION_MAJOR};K{MAX_KNOBS};S{MAX_SLOTS};F{MAX_FIELDS};V{MAX_VARIANTS};R{MAX_RINGS};"
             f"N{NAME_LEN};U{UNIT_LEN};RH{RECORD_HEADER_WORDS};M{MAGIC:x}"]
    for s in STRUCTS:
        parts.append(f"{s.name}[{s.size}]:" + ",".join(f"{f.name}:{f.ctype}x{f.count}@{f.offset}" for f in s.fields))
    parts.append(f"off:{CONTROL_OFF},{SNAPSHOT_OFF},{DECL_OFF},{RINGS_OFF}")
    return ";".join(parts)


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


LAYOUT_DESCRIPTION = _describe()
LAYOUT_HASH = _fnv1a64(LAYOUT_DESCRIPTION.encode())
