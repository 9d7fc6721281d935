"""The data plane's declaration and the snapshot the daemon publishes, as Python values.

These are the Python face of the memory contract: `segment.py` decodes a
`Declaration` from a live segment and encodes a `SnapshotSpec` into it. Tier 1
reasons about them without touching memory.

Units: knob values are in the knob's own unit; weights are ratios in [0, 1];
times are CLOCK_MONOTONIC nanoseconds.
"""
from __future__ import annotations

import msgspec

from .spec import MAX_FIELDS, MAX_KNOBS, MAX_SLOTS, MAX_VARIANTS, NAME_LEN


class KnobDecl(msgspec.Struct, frozen=True):
    """One tunable knob. The data plane's [min, max] are hard bounds nobody may widen."""
    name: str
    min: float
    max: float
    initial: float
    integer: bool = False    # values are whole numbers
    is_global: bool = False  # process-wide: one value for all keys (no traffic split)


class FieldDecl(msgspec.Struct, frozen=True):
    """One telemetry field, in record order."""
    name: str
    unit: str = ""


class Declaration(msgspec.Struct, frozen=True):
    """Everything the data plane declared at arq_open, as stored in its segment."""
    knobs: tuple[KnobDecl, ...]
    fields: tuple[FieldDecl, ...]
    variants: tuple[str, ...] = ()
    n_rings: int = 1
    ring_capacity: int = 4096

    def knob_index(self, name: str) -> int:
        for i, k in enumerate(self.knobs):
            if k.name == name:
                return i
        raise KeyError(name)

    def field_index(self, name: str) -> int:
        for i, f in enumerate(self.fields):
            if f.name == name:
                return i
        raise KeyError(name)

    def initial_values(self) -> tuple[float, ...]:
        return tuple(k.initial for k in self.knobs)


class SlotSpec(msgspec.Struct, frozen=True):
    """One traffic slot: the share of keys it serves, its variant and its knob values."""
    weight: float                 # ratio of keys, the weights of all slots sum to 1
    variant: int = 0
    knobs: tuple[float, ...] = ()


class SnapshotSpec(msgspec.Struct, frozen=True):
    """A whole parameter snapshot. Slot 0 is always the known-good baseline.

    `global_knobs` holds the live value of every knob (declaration order); the data
    plane uses it for knobs flagged GLOBAL and ignores its other entries.
    `salt` re-keys the slot hash so an experiment does not always hit the same keys.
    """
    generation: int
    slots: tuple[SlotSpec, ...]
    global_knobs: tuple[float, ...]
    salt: int = 0


def validate_declaration_limits(d: Declaration) -> None:
    """Raise ValueError naming the first declaration that does not fit the layout."""
    if not 1 <= len(d.knobs) <= MAX_KNOBS:
        raise ValueError(f"knobs: expected 1..{MAX_KNOBS} knobs, got {len(d.knobs)}")
    if len(d.fields) > MAX_FIELDS:
        raise ValueError(f"fields: expected at most {MAX_FIELDS}, got {len(d.fields)}")
    if len(d.variants) > MAX_VARIANTS:
        raise ValueError(f"variants: expected at most {MAX_VARIANTS}, got {len(d.variants)}")
    for i, k in enumerate(d.knobs):
        if len(k.name.encode()) >= NAME_LEN or not k.name:
            raise ValueError(f"knobs[{i}].name: expected 1..{NAME_LEN - 1} bytes, got {k.name!r}")
        if not (k.min <= k.initial <= k.max):
            raise ValueError(f"knobs[{i}] ({k.name}): expected min <= initial <= max, "
                             f"got {k.min} <= {k.initial} <= {k.max}")
    _ = MAX_SLOTS
