"""Per-cycle telemetry summaries: drained records -> one SlotTelemetry per slot.

The statistics are computed in C (`arqd_summarize`, native/src/arqd_helper.c): the decision loop
gets them from `Segment.poll_summary` in the same call that drains the rings, so no record
reaches Python. Per (slot, field): count, mean, min, max of the finite values, and p50/p95/p99
(numpy's "linear" percentile, bit for bit) only for the fields some rule reads. Deterministic:
the same records in the same order give the same summary; count, sum, min and max merge
across windows.

Only records of the published generation that started after the settle time are summarised:
the rest were produced under another configuration and must never decide anything.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from daemon.tier1.model import FieldStats, SlotTelemetry
from shm_layout import spec
from shm_layout._shm import ffi, lib
from shm_layout.segment import STAT_WORDS


def quantile_mask(field_names: Iterable[str], quantile_fields: frozenset | None) -> int:
    """Bit j set when field j pays for its quantiles (None: every field)."""
    return sum(1 << j for j, name in enumerate(field_names)
               if j < 64 and (quantile_fields is None or name in quantile_fields))


def telemetry(slot_records: np.ndarray, stats: np.ndarray, field_names: tuple[str, ...], generation: int,
              window_ns: int) -> tuple[SlotTelemetry, ...]:
    """SlotTelemetry of every slot with records, from arqd_summarize's output (a field with no
    finite value in a slot is left out of that slot's `fields`)."""
    out = []
    rows = None
    for s, n in enumerate(slot_records.tolist()):
        if not n:
            continue
        if rows is None:
            rows = stats.tolist()                 # one conversion for every slot
        fields = {}
        for name, row in zip(field_names, rows[s]):
            c = row[0]
            if c:
                fields[name] = FieldStats(int(c), row[1] / c, row[2], row[3], row[4], row[5], row[6])
        out.append(SlotTelemetry(slot=s, generation=generation, n_records=n, window_ns=window_ns, fields=fields))
    return tuple(out)


def summarize(batches: list[np.ndarray], field_names: tuple[str, ...], generation: int, since_ns: int,
              window_ns: int, quantile_fields: frozenset | None = None) -> tuple[tuple[SlotTelemetry, ...], int, int]:
    """Summarise drained record batches (rows of uint64 words, as `Segment.drain`/`poll` return
    them). Returns (per-slot telemetry, records used, records skipped).

    since_ns: records stamped before this (CLOCK_MONOTONIC) are inside the settle time; skipped.
    quantile_fields: fields whose p50/p95/p99 are computed (None: all); the others carry NaN
    there, since no rule reads them and quantiles are most of the cost.
    """
    if not batches:
        return (), 0, 0
    rows = batches[0] if len(batches) == 1 else np.concatenate(batches)
    total = len(rows)
    if total == 0:
        return (), 0, 0
    rows = np.ascontiguousarray(rows, dtype=np.uint64)
    nf = len(field_names)
    scratch = np.empty(total, dtype=np.float64)
    slot_records = np.zeros(spec.MAX_SLOTS, dtype=np.uint64)
    stats = np.zeros((spec.MAX_SLOTS, max(nf, 1), STAT_WORDS), dtype=np.float64)
    used = lib.arqd_summarize(ffi.cast("uint64_t *", ffi.from_buffer("char[]", rows)), total, rows.shape[1], nf,
                              generation, max(since_ns, 0), quantile_mask(field_names, quantile_fields),
                              spec.MAX_SLOTS, ffi.cast("double *", ffi.from_buffer("char[]", scratch)),
                              ffi.cast("uint64_t *", ffi.from_buffer("char[]", slot_records)),
                              ffi.cast("double *", ffi.from_buffer("char[]", stats)))
    return telemetry(slot_records, stats, field_names, generation, window_ns), used, total - used
