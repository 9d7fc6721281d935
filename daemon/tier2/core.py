"""Shared machinery of Tier 2: NoChange decisions, deadline checks, owned RNGs and save/load.

Everything here is pure: no clock reads (a clock is only ever *passed in*), no files, no global RNG.

Save format (bytes, msgpack via msgspec): ``{"format": "arqond.tier2", "version": 2, "kind": <kind>,
"class": <class name>, "state": <encoded attributes>}``. The state is the object's whole attribute dict,
encoded exactly (numpy arrays as raw bytes, the PCG64 bit-generator state with its 128-bit integers), so a
loaded object continues byte-identically: same asks, same selections, same next save().
"""
from __future__ import annotations

import enum
import math
from typing import Any, Callable

import msgspec
import numpy as np

FORMAT = "arqond.tier2"
FORMAT_VERSION = 2  # 2: arm statistics as float lists, Draws blocks, optimizer state in user units


class Reason(str, enum.Enum):
    """Why a call returned NoChange instead of a proposal."""

    DEADLINE = "deadline"  # the call's estimated cost would end past the deadline passed in


class NoChange(msgspec.Struct, frozen=True, tag="no_change"):
    """A decision to propose nothing this time. The component's state is unchanged.

    reason: machine-readable cause; detail: a sentence a person can act on.
    """

    reason: Reason
    detail: str = ""


Clock = Callable[[], float]
Now = float | Clock | None


def rng_from_seed(seed: int | np.random.SeedSequence) -> np.random.Generator:
    """The component's own Generator (PCG64). Never the global numpy state."""
    if isinstance(seed, np.random.SeedSequence):
        return np.random.Generator(np.random.PCG64(seed))
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    return np.random.Generator(np.random.PCG64(int(seed)))


class Budgeted:
    """Mixin: deadline checks against a cost estimate.

    Units: seconds, in whatever time base the caller uses for ``deadline`` and ``now`` (e.g. monotonic
    seconds). ``now`` may be a number or a callable; an injected ``clock`` is used only when ``now`` is not
    given. With no deadline, no time is ever read.
    """

    _transient = ("clock",)
    clock: Clock | None = None

    def _over_budget(self, deadline: float | None, now: Now, cost: float, what: str) -> NoChange | None:
        if deadline is None:
            return None
        if now is None:
            now = self.clock
        if now is None:
            raise ValueError(
                f"{type(self).__name__}.{what}: a deadline was given but no time: pass now=<value or "
                "callable> or construct with clock=<callable>; the core never reads the clock itself"
            )
        t = now() if callable(now) else float(now)
        if t + cost > deadline:
            return NoChange(
                Reason.DEADLINE,
                f"{type(self).__name__}.{what}: now={t:.6f} s + estimated cost {cost * 1e6:.0f} us > "
                f"deadline={deadline:.6f} s; nothing was changed, call again with more time",
            )
        return None


def _make_eigh():
    """Symmetric eigendecomposition (ascending eigenvalues, eigenvectors in columns) of a float64 matrix.

    np.linalg.eigh spends about half of its time at d <= 10 in Python-level checks; the LAPACK gufunc
    behind it is called directly when this numpy has it (same routine, same results), else the public
    function."""
    try:
        from numpy.linalg import _umath_linalg

        raw = _umath_linalg.eigh_lo
        m = np.eye(2)
        raw(m, signature="d->dd")

        def eigh(a: np.ndarray):
            return raw(a, signature="d->dd")

        return eigh
    except Exception:  # a numpy without the private gufunc: the public path is exact too
        return np.linalg.eigh


eigh = _make_eigh()


# ----------------------------------------------------------------------------------------------- registry
_BY_CLASS: dict[str, type] = {}
_BY_KIND: dict[str, type] = {}


def register(kind: str | None = None):
    """Class decorator: makes a class restorable by load() (and constructible by kind, if given)."""

    def deco(cls):
        _BY_CLASS[cls.__name__] = cls
        if kind is not None:
            _BY_KIND[kind] = cls
            cls.kind = kind
        return cls

    return deco


def kinds() -> dict[str, type]:
    return dict(_BY_KIND)


# --------------------------------------------------------------------------------- block-drawn randomness
@register()
class Draws:
    """Standard normals and uniforms [0, 1) drawn from a component's Generator in blocks.

    A request (normals(k), uniforms(k), or the 2k of each that betas() needs) that does not fit in
    what is left of the current block discards the rest and draws a fresh block of
    max(``block``, k + SLACK) numbers (and its Python-list copy), then hands them out in order. The
    slack lets the squeeze rejections of the gamma draws, and small follow-up requests (the
    lexicographic selector's k normals after its 2k), continue in the same block. One Generator call
    costs ~2 us of overhead, so larger blocks cost less on average, but a refill lands on one step
    and its cost grows with the block. For a 10-arm Beta Thompson step (20 normals and 20 uniforms)
    interleaved replays (min over 9 of per-step CPU) gave p50/p99 16.5/20.7 us drawing per request
    (block 0), 14.2/19.0 with block 64, 13.0/20.2 with 128, 12.2/29.2 with 256: 64 to 128 are
    equally good within the host's noise, so the default stays 128, as before. The Generator is
    passed in on every call, never stored here (it stays the component's one ``rng`` and is saved
    once).

    Determinism: the numbers depend only on the seed, ``block`` and the sequence of requests. The
    current block and position are part of the saved state, so a loaded component continues with the
    same numbers (a blob saved with another block size keeps it). The Python-list copy of a block
    (what the scalar hot paths index) is rebuilt from the saved array on first use after load, never
    saved.
    """

    _transient = ("_nl", "_ul")
    _nl: list | None = None  # list copies of nb / ub: indexing a list is ~10x cheaper than an ndarray
    _ul: list | None = None
    SLACK = 16  # numbers drawn beyond a request (see the class docstring)

    def __init__(self, block: int = 128):
        if block < 0:
            raise ValueError(f"Draws.block: expected >= 0 (0: k + SLACK per request), got {block}")
        self.block = int(block)
        self.nb = np.empty(0)  # current block of standard normals
        self.ni = 0  # next unused index in nb
        self.ub = np.empty(0)  # current block of uniforms
        self.ui = 0

    # -- refills (return the list copy; index 0 is the first unused number)
    def _refill_n(self, rng: np.random.Generator, k: int) -> list:
        self.nb = rng.standard_normal(max(self.block, k + self.SLACK))
        self.ni = 0
        self._nl = nl = self.nb.tolist()
        return nl

    def _refill_u(self, rng: np.random.Generator, k: int) -> list:
        self.ub = rng.random(max(self.block, k + self.SLACK))
        self.ui = 0
        self._ul = ul = self.ub.tolist()
        return ul

    def _lists(self) -> tuple[list, list]:
        nl, ul = self._nl, self._ul
        if nl is None:  # first use after load (or construction): the list copies of the saved blocks
            nl = self._nl = self.nb.tolist()
        if ul is None:
            ul = self._ul = self.ub.tolist()
        return nl, ul

    # -- requests
    def normals(self, rng: np.random.Generator, k: int) -> list:
        """k standard normals as Python floats."""
        nl = self._nl
        if nl is None:
            nl = self._lists()[0]
        i = self.ni
        j = i + k
        if j > len(nl):
            nl, i, j = self._refill_n(rng, k), 0, k
        self.ni = j
        return nl[i:j]

    def uniforms(self, rng: np.random.Generator, k: int) -> list:
        """k uniforms in [0, 1) as Python floats."""
        ul = self._ul
        if ul is None:
            ul = self._lists()[1]
        i = self.ui
        j = i + k
        if j > len(ul):
            ul, i, j = self._refill_u(rng, k), 0, k
        self.ui = j
        return ul[i:j]

    def gammas(self, rng: np.random.Generator, shapes: list, sqrt=math.sqrt) -> list:
        """Gamma(a, 1) draws, one per shape a > 0, as Python floats: Marsaglia & Tsang (2000) on the
        buffered normals and uniforms; a < 1 through Gamma(a + 1) * U^(1/a). Exact in distribution, like
        Generator.standard_gamma, at about half of that call's cost for 20 shapes (most of which is
        its argument checking).

        The loop below is only the squeeze-accepted case (one normal, one uniform; > 98 % of draws for
        a >= 1); anything else (a < 1, v <= 0, the squeeze failing) goes to _gamma_slow for that one
        shape, which continues the same stream with the same operations in the same order (so the
        two paths give the same bits). The blocks are refilled first if the fast path for the shapes
        left might not fit."""
        nl, ul = self._lists()
        i, j = self.ni, self.ui
        k = len(shapes)
        if i + k > len(nl):
            nl, i = self._refill_n(rng, k), 0
        if j + k > len(ul):
            ul, j = self._refill_u(rng, k), 0
        out = []
        for a in shapes:
            d = a - 0.3333333333333333
            x = nl[i]
            v = 1.0 + (0.3333333333333333 / sqrt(d)) * x if a >= 1.0 else -1.0  # a < 1: the boost, slow path
            u = ul[j]
            x *= x
            if v > 0.0 and u < 1.0 - 0.0331 * x * x:
                i += 1
                j += 1
                out.append(d * (v * v * v))
            else:
                self.ni, self.ui = i, j
                out.append(self._gamma_slow(rng, a))
                nl, ul = self._nl, self._ul
                i, j = self.ni, self.ui
                rest = k - len(out)
                if i + rest > len(nl):
                    nl, i = self._refill_n(rng, rest), 0
                if j + rest > len(ul):
                    ul, j = self._refill_u(rng, rest), 0
        self.ni, self.ui = i, j
        return out

    def betas(self, rng: np.random.Generator, s: list, n: list, scale: float = 1.0, pa: float = 0.0,
              pb: float = 0.0, sqrt=math.sqrt) -> list:
        """Beta(a_i, b_i) draws as Python floats, a_i = pa + scale s_i and b_i = pb + scale (n_i - s_i)
        (a Beta posterior from successes and trials kept in 1/scale units, as ArmStats keeps them).
        Ga / (Ga + Gb), the two gammas of each pair drawn one after the other with gammas()'s squeeze
        fast path inline (no shape or gamma lists); anything else goes to _gamma_slow. If both gammas
        underflow (shapes << 1) the draw is the mean a / (a + b)."""
        nl, ul = self._lists()
        i, j = self.ni, self.ui
        need = 2 * len(s)
        if i + need > len(nl):
            nl, i = self._refill_n(rng, need), 0
        if j + need > len(ul):
            ul, j = self._refill_u(rng, need), 0
        out = []
        for si, ni in zip(s, n):
            aa = pa + si * scale
            bb = pb + (ni - si) * scale
            ga = -1.0
            for sh in (aa, bb):
                d = sh - 0.3333333333333333
                x = nl[i]
                v = 1.0 + (0.3333333333333333 / sqrt(d)) * x if sh >= 1.0 else -1.0
                u = ul[j]
                x *= x
                if v > 0.0 and u < 1.0 - 0.0331 * x * x:
                    i += 1
                    j += 1
                    g = d * (v * v * v)
                else:
                    self.ni, self.ui = i, j
                    g = self._gamma_slow(rng, sh)
                    nl, ul = self._nl, self._ul
                    i, j = self.ni, self.ui
                    rest = need - 2 * len(out)  # what the fast path may still take (an upper bound)
                    if i + rest > len(nl):
                        nl, i = self._refill_n(rng, rest), 0
                    if j + rest > len(ul):
                        ul, j = self._refill_u(rng, rest), 0
                if ga < 0.0:
                    ga = g
                else:
                    t = ga + g
                    out.append(ga / t if t > 0.0 else aa / (aa + bb))
        self.ni, self.ui = i, j
        return out

    def _gamma_slow(self, rng: np.random.Generator, a: float, log=math.log, sqrt=math.sqrt) -> float:
        """One Gamma(a, 1) draw, the full Marsaglia & Tsang loop (and the a < 1 boost), refilling the
        blocks as needed. Starts at the same numbers the fast loop looked at."""
        boost = a < 1.0
        d = (a + 1.0 if boost else a) - 0.3333333333333333
        c = 0.3333333333333333 / sqrt(d)
        while True:
            x = self.normals(rng, 1)[0]
            v = 1.0 + c * x
            if v <= 0.0:
                continue
            v = v * v * v
            u = self.uniforms(rng, 1)[0]
            x2 = x * x
            if u < 1.0 - 0.0331 * x2 * x2 or log(u) < 0.5 * x2 + d * (1.0 - v + log(v)):
                break
        g = d * v
        if boost:
            g *= self.uniforms(rng, 1)[0] ** (1.0 / a)
        return g


# ----------------------------------------------------------------------------------------- exact encoding
_I64 = (-(1 << 63), (1 << 63) - 1)


def _enc(v: Any) -> Any:
    # Order matters: bool before int, numpy scalars before Python scalars they subclass.
    if v is None or isinstance(v, (bool, str, bytes)):
        return v
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        return {"__nd__": [a.dtype.str, list(a.shape), a.tobytes()]}
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        i = int(v)
        return i if _I64[0] <= i <= _I64[1] else {"__big__": format(i, "x")}
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, np.random.Generator):
        return {"__rng__": _enc(v.bit_generator.state)}
    if isinstance(v, enum.Enum):
        return {"__enum__": [type(v).__name__, v.value]}
    if isinstance(v, msgspec.Struct):
        return {"__struct__": [type(v).__name__, msgspec.to_builtins(v)]}
    if isinstance(v, dict):
        return {"__dict__": [[_enc(k), _enc(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    if type(v).__name__ in _BY_CLASS:
        return {"__obj__": [type(v).__name__, _enc_attrs(v)]}
    raise TypeError(f"tier2 save: cannot encode {type(v).__name__} ({v!r:.60})")


def _enc_attrs(obj: Any) -> dict:
    skip = getattr(obj, "_transient", ())
    return {k: _enc(x) for k, x in obj.__dict__.items() if k not in skip}


_STRUCTS: dict[str, type] = {}
_ENUMS: dict[str, type] = {"Reason": Reason}


def register_struct(cls):
    """Config Structs that appear inside saved state must be registered here."""
    _STRUCTS[cls.__name__] = cls
    return cls


def _dec(v: Any) -> Any:
    if isinstance(v, list):
        return [_dec(x) for x in v]
    if not isinstance(v, dict):
        return v
    (tag, body), = v.items()
    if tag == "__nd__":
        dt, shape, raw = body
        return np.frombuffer(raw, dtype=np.dtype(dt)).reshape(shape).copy()
    if tag == "__big__":
        return int(body, 16)
    if tag == "__rng__":
        state = _dec(body)
        if state.get("bit_generator") != "PCG64":
            raise ValueError(f"tier2 load: unsupported bit generator {state.get('bit_generator')!r}")
        bg = np.random.PCG64()
        bg.state = state
        return np.random.Generator(bg)
    if tag == "__enum__":
        return _ENUMS[body[0]](body[1])
    if tag == "__struct__":
        return msgspec.convert(body[1], _STRUCTS[body[0]])
    if tag == "__dict__":
        return {_dec(k): _dec(x) for k, x in body}
    if tag == "__obj__":
        return _restore(body[0], body[1])
    raise ValueError(f"tier2 load: unknown tag {tag!r}")


def _restore(cls_name: str, attrs: dict) -> Any:
    try:
        cls = _BY_CLASS[cls_name]
    except KeyError:
        raise ValueError(f"tier2 load: unknown class {cls_name!r}; known: {sorted(_BY_CLASS)}") from None
    obj = cls.__new__(cls)
    obj.__dict__.update({k: _dec(x) for k, x in attrs.items()})
    return obj


class Saveable:
    """Mixin: save() -> bytes holding the whole state, RNG included."""

    def save(self) -> bytes:
        return msgspec.msgpack.encode(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "kind": getattr(self, "kind", None),
                "class": type(self).__name__,
                "state": _enc_attrs(self),
            }
        )


def load(blob: bytes, clock: Clock | None = None) -> Any:
    """Restore any optimizer or bandit from save() bytes. ``clock`` is re-injected (it is never saved)."""
    try:
        doc = msgspec.msgpack.decode(blob)
    except msgspec.DecodeError as e:
        raise ValueError(f"tier2 load: blob is not a tier2 save ({e}); nothing was restored") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"tier2 load: expected format {FORMAT!r}; nothing was restored")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"tier2 load: blob version {doc.get('version')!r}, this build reads {FORMAT_VERSION}; "
            "nothing was restored"
        )
    obj = _restore(doc["class"], doc["state"])
    if clock is not None:
        obj.clock = clock
    return obj
