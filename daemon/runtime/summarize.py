"""Per-cycle telemetry summaries: drained records -> one SlotTelemetry per slot.

Deterministic for a given set of records (numpy percentiles, linear interpolation). Only
records of the published generation that started after the settle time are summarised: the
rest were produced under another configuration and must never decide anything.
"""
from __future__ import annotations

import numpy as np

from daemon.tier1.model import FieldStats, SlotTelemetry
from shm_layout.spec import RECORD_HEADER_WORDS


_NAN = float("nan")


def summarize(batches: list[np.ndarray], field_names: tuple[str, ...], generation: int, since_ns: int,
              window_ns: int, quantile_fields: frozenset | None = None) -> tuple[tuple[SlotTelemetry, ...], int, int]:
    """Summarise drained record batches. Returns (per-slot telemetry, records used, records skipped).

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
    ok = (rows[:, 0] != 0) & (rows[:, 2] == np.uint64(generation)) & (rows[:, 1] >= np.uint64(max(since_ns, 0)))
    rows = rows[ok]
    used = len(rows)
    if used == 0:
        return (), 0, total
    slots = (rows[:, 3] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    nf = len(field_names)
    vals = rows[:, RECORD_HEADER_WORDS:RECORD_HEADER_WORDS + nf].view(np.float64)
    out = []
    for s in np.unique(slots):
        sel = vals[slots == s]
        fields = {}
        for j, name in enumerate(field_names):
            col = sel[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0:
                continue
            if quantile_fields is None or name in quantile_fields:
                p50, p95, p99 = (float(v) for v in np.percentile(col, (50.0, 95.0, 99.0)))
            else:
                p50 = p95 = p99 = _NAN
            fields[name] = FieldStats(int(col.size), float(col.mean()), float(col.min()), float(col.max()), p50, p95, p99)
        out.append(SlotTelemetry(slot=int(s), generation=generation, n_records=int(len(sel)),
                                 window_ns=window_ns, fields=fields))
    return tuple(out), used, total - used
