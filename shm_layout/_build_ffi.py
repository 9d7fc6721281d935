"""Build shm_layout._shm: the cffi extension with the daemon's side of the shm protocols.

Run by `make ffi` (API mode: a real compiled call, ~100 ns, not libffi's ABI mode).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from cffi import FFI

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "native", "src")
INC = os.path.join(ROOT, "native", "include")

ffibuilder = FFI()
with open(os.path.join(SRC, "arqd_helper.h")) as f:
    ffibuilder.cdef("".join(line for line in f if not line.startswith("#")))
ffibuilder.set_source(
    "shm_layout._shm",
    '#include "arqd_helper.h"',
    sources=[os.path.join(SRC, "arqd_helper.c"), os.path.join(SRC, "arqd_admit.c")],
    include_dirs=[SRC, INC],
    # no FMA contraction: the quantile interpolation must round exactly like numpy's
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Werror", "-ffp-contract=off"],
)

if __name__ == "__main__":
    build = os.path.join(ROOT, "native", "build", "ffi")
    os.makedirs(build, exist_ok=True)
    out = ffibuilder.compile(tmpdir=build, verbose=False)
    dest = os.path.join(ROOT, "shm_layout")
    for old in glob.glob(os.path.join(dest, "_shm*.so")):
        os.remove(old)
    shutil.copy(out, dest)
    print(f"built {os.path.relpath(os.path.join(dest, os.path.basename(out)), ROOT)}", file=sys.stderr)
