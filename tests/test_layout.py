"""The layout has one source of truth: shm_layout/spec.py. The C header is generated from it."""
from pathlib import Path

import numpy as np

from shm_layout import gen_header, segment, spec

ROOT = Path(__file__).resolve().parents[1]


def test_checked_in_header_matches_spec():
    checked_in = (ROOT / "native" / "include" / "arqon_layout.h").read_text()
    assert checked_in == gen_header.render(), "arqon_layout.h drifted from shm_layout/spec.py: run `make header`"


def test_numpy_views_match_struct_sizes():
    for dt, s in ((segment.HEADER_DT, spec.HEADER), (segment.CONTROL_DT, spec.CONTROL),
                  (segment.COPY_DT, spec.SNAPSHOT_COPY), (segment.RING_DT, spec.RING_HEAD),
                  (segment.KNOB_DT, spec.KNOB_DECL)):
        assert dt.itemsize == s.size
        for f in s.fields:
            assert dt.fields[f.name][1] == f.offset


def test_hash_changes_with_layout():
    assert spec.LAYOUT_HASH == spec._fnv1a64(spec._describe().encode())
    assert spec._fnv1a64(spec._describe().replace("seq", "sequence").encode()) != spec.LAYOUT_HASH


def test_indices_sit_on_their_own_blocks_and_records_fit():
    assert spec.RING_HEAD.off("head") - spec.RING_HEAD.off("tail") >= spec.BLOCK
    assert spec.CONTROL.off("ack_generation") >= spec.BLOCK
    assert spec.record_size(spec.MAX_FIELDS) <= 128
    assert spec.RINGS_OFF % spec.PAGE == 0


def test_slot_hash_is_stable_and_splits_by_weight():
    cum = segment.cum_weights([0.25, 0.75])
    slots = np.array([segment.slot_for_key(k, 99, cum, 2) for k in range(20000)])
    assert 0.22 < (slots == 0).mean() < 0.28
    assert segment.mix64(0) == 0xE220A8397B1DCDAF  # splitmix64 reference value
