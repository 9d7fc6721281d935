"""The per-cycle summaries computed in C (arqd_summarize) against a numpy reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from daemon.runtime.summarize import quantile_mask, summarize
from shm_layout.spec import MAX_SLOTS, RECORD_HEADER_WORDS

FIELDS = ("latency_s", "cost", "errors")


def reference(rows: np.ndarray, names, generation: int, since_ns: int, qf) -> dict:
    """The summary as numpy computes it (the implementation arqd_summarize replaced)."""
    ok = (rows[:, 0] != 0) & (rows[:, 2] == np.uint64(generation)) & (rows[:, 1] >= np.uint64(since_ns))
    rows = rows[ok]
    slots = (rows[:, 3] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    rows, slots = rows[slots < MAX_SLOTS], slots[slots < MAX_SLOTS]
    vals = rows[:, RECORD_HEADER_WORDS:RECORD_HEADER_WORDS + len(names)].view(np.float64)
    out = {}
    for s in np.unique(slots):
        sel = vals[slots == s]
        fields = {}
        for j, name in enumerate(names):
            col = sel[:, j][np.isfinite(sel[:, j])]
            if col.size:
                q = tuple(float(v) for v in np.percentile(col, (50.0, 95.0, 99.0))) if name in qf else (math.nan,) * 3
                fields[name] = (int(col.size), float(col.mean()), float(col.min()), float(col.max())) + q
        out[int(s)] = (len(sel), fields)
    return out


def make_rows(rng: np.random.Generator, n: int, *, gens=(7,), slots=MAX_SLOTS, values=None) -> np.ndarray:
    rows = np.zeros((n, RECORD_HEADER_WORDS + len(FIELDS)), dtype=np.uint64)
    rows[:, 0] = np.arange(1, n + 1)
    rows[:, 1] = rng.integers(0, 2000, n)
    rows[:, 2] = rng.choice(np.array(gens, dtype=np.uint64), n)
    rows[:, 3] = rng.integers(0, slots, n).astype(np.uint64) | (np.uint64(3) << np.uint64(32))
    v = values if values is not None else rng.lognormal(-7, 1.5, (n, len(FIELDS)))
    rows[:, RECORD_HEADER_WORDS:] = np.ascontiguousarray(v, dtype=np.float64).view(np.uint64)
    return rows


def check(rows: np.ndarray, generation: int = 7, since: int = 0, qf=frozenset({"latency_s", "cost"})):
    got, used, skipped = summarize([rows], FIELDS, generation, since, 10_000, qf)
    ref = reference(rows, FIELDS, generation, since, qf)
    assert used + skipped == len(rows)
    assert [t.slot for t in got] == sorted(ref)
    assert used == sum(n for n, _ in ref.values())
    for t in got:
        n, fields = ref[t.slot]
        assert t.n_records == n and t.generation == generation and t.window_ns == 10_000
        assert set(t.fields) == set(fields)
        for name, (c, mean, lo, hi, p50, p95, p99) in fields.items():
            fs = t.fields[name]
            assert (fs.count, fs.min, fs.max) == (c, lo, hi)
            assert fs.mean == pytest.approx(mean, rel=1e-12, abs=0.0)
            for a, b in ((fs.p50, p50), (fs.p95, p95), (fs.p99, p99)):
                assert (math.isnan(a) and math.isnan(b)) or a == b, (name, a, b)   # bit for bit
    return got


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 101, 1000, 20_000])
def test_matches_numpy_on_random_records(n):
    rng = np.random.default_rng(n)
    check(make_rows(rng, n, gens=(6, 7)), since=300)


@pytest.mark.parametrize("shape", ["sorted", "reversed", "constant", "two_values", "organ_pipe", "ints"])
def test_matches_numpy_on_adversarial_orders(shape):
    rng = np.random.default_rng(1)
    n = 5000
    x = np.arange(n, dtype=np.float64)
    col = {"sorted": x, "reversed": x[::-1], "constant": np.full(n, 0.25), "two_values": (x % 2) * 1e-3,
           "organ_pipe": np.minimum(x, n - x), "ints": rng.integers(0, 5, n).astype(np.float64)}[shape]
    check(make_rows(rng, n, slots=1, values=np.stack([col] * len(FIELDS), axis=1)))


def test_non_finite_values_seq_errors_and_foreign_slots_are_left_out():
    rng = np.random.default_rng(3)
    rows = make_rows(rng, 400)
    vals = rows[:, RECORD_HEADER_WORDS:].view(np.float64)
    vals[::5, 0] = np.nan
    vals[1::7, 1] = np.inf
    vals[:, 2] = np.nan                     # a field with no finite value is absent, not zero
    rows[::11, 0] = 0                       # sequence error: never summarised
    rows[3::13, 3] = np.uint64(MAX_SLOTS + 2)
    got = check(rows)
    assert all("errors" not in t.fields for t in got)


def test_quantiles_only_where_asked_and_same_records_same_summary():
    rng = np.random.default_rng(4)
    rows = make_rows(rng, 3000)
    a = check(rows, qf=frozenset({"cost"}))
    b = check(rows.copy(), qf=frozenset({"cost"}))
    assert repr(a) == repr(b)           # NaN != NaN, so compare the exact printed values
    assert all(math.isnan(t.fields["latency_s"].p99) and not math.isnan(t.fields["cost"].p99) for t in a)
    assert quantile_mask(FIELDS, None) == 0b111 and quantile_mask(FIELDS, frozenset({"cost"})) == 0b010


def test_settle_and_generation_filters():
    rng = np.random.default_rng(5)
    rows = make_rows(rng, 1000, gens=(1, 2, 3))
    got, used, skipped = summarize([rows[:500], rows[500:]], FIELDS, 2, 1500, 1, None)
    keep = (rows[:, 2] == 2) & (rows[:, 1] >= 1500)
    assert used == int(keep.sum()) and skipped == 1000 - used
    assert summarize([], FIELDS, 2, 0, 1) == ((), 0, 0)
    assert summarize([rows[:0]], FIELDS, 2, 0, 1) == ((), 0, 0)
