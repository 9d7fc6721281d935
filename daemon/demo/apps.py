"""Launch the demo data planes (`native/build/universe`, `native/build/serve`) and read them.

A data plane prints `ready <pid>` once its segment `/arqon.<name>` exists, then (with
`--status-every S`) one JSON status line per interval, then (with `--json`) one final JSON
summary. `AppProcess` waits for `ready`, collects status lines on a background thread and
returns the summary from `result()`. This module is an edge: it spawns processes and reads
pipes; nothing here decides anything.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from shm_layout.decl import FieldDecl, KnobDecl

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "native" / "build"
KINDS = ("universe", "serve")

# Mirror of each app's C declaration (native/apps/<kind>.c). The C side is the source of
# truth; tests/test_apps.py checks this mirror against a live segment so they cannot drift.
_KNOBS: dict[str, tuple[KnobDecl, ...]] = {
    "universe": (
        KnobDecl("diffusion", 0.01, 1.5, 0.15),
        KnobDecl("decay", 0.02, 1.0, 0.25),
        KnobDecl("noise", 0.0, 2.0, 0.05),
        KnobDecl("substeps", 1, 16, 4, integer=True),
    ),
    "serve": (
        KnobDecl("batch_max", 1, 32, 1, integer=True),
        KnobDecl("batch_wait_us", 0, 2000, 0),
        KnobDecl("threads", 1, 2, 1, integer=True, is_global=True),
    ),
}
_FIELDS: dict[str, tuple[FieldDecl, ...]] = {
    "universe": (FieldDecl("step_time_s", "s"), FieldDecl("error", "1"), FieldDecl("instability", "1"),
                 FieldDecl("cost", "cell_updates"), FieldDecl("load", "cells"), FieldDecl("strength", "1")),
    "serve": (FieldDecl("latency_s", "s"), FieldDecl("error", "1"), FieldDecl("quality", "1"),
              FieldDecl("load", "1")),
}
_VARIANTS: dict[str, tuple[str, ...]] = {
    "universe": (),
    "serve": ("fp32", "fp32_blocked", "int8", "early_exit_1", "early_exit_2"),
}
# Scenario phases (names in order), as declared in the C sources.
PHASES: dict[str, tuple[str, ...]] = {
    "universe": ("calm", "surge", "heavy", "drift"),
    "serve": ("low", "high", "medium", "night"),
}
# Scenario lengths in seconds at time scale 1.
SCENARIO_SECONDS = {"demo": 72.0, "short": 8.0}


class AppError(RuntimeError):
    """A data plane did not start, or did not produce what it should have."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")


def binary(kind: str) -> Path:
    _check_kind(kind)
    path = BUILD / kind
    if not path.exists():
        raise AppError(f"{path} is missing: run `make native` (it builds every native/apps/*.c)")
    return path


def declared_knobs(kind: str) -> tuple[KnobDecl, ...]:
    """The knobs `kind` declares, in declaration order (bounds are hard limits)."""
    _check_kind(kind)
    return _KNOBS[kind]


def declared_fields(kind: str) -> tuple[FieldDecl, ...]:
    _check_kind(kind)
    return _FIELDS[kind]


def declared_variants(kind: str) -> tuple[str, ...]:
    _check_kind(kind)
    return _VARIANTS[kind]


def format_fixed(fixed: str | Mapping[str, object] | None) -> str | None:
    """`{"decay": 0.1, "variant": "int8"}` -> `"decay=0.1,variant=int8"` (the --fixed syntax)."""
    if fixed is None or isinstance(fixed, str):
        return fixed
    return ",".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in fixed.items())


class AppProcess:
    """One running data plane. Status lines accumulate in `statuses()`; `result()` is the summary."""

    def __init__(self, kind: str, name: str, argv: Sequence[str], *, ready_timeout: float = 15.0):
        self.kind, self.name, self.argv = kind, name, list(argv)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self._lock = threading.Lock()
        self._status: list[dict] = []
        self._summary: dict | None = None
        self._other: list[str] = []
        self._ready = threading.Event()
        self.pid = 0
        self._reader = threading.Thread(target=self._read, name=f"{kind}-{name}-stdout", daemon=True)
        self._reader.start()
        ready = self._ready.wait(ready_timeout)
        if not ready or not self.pid:
            self.kill()
            why = f"no 'ready' line within {ready_timeout:.0f} s" if not ready else "exited before it was ready"
            raise AppError(f"{' '.join(self.argv)}: {why}; exit code {self.proc.returncode}; "
                           f"stderr: {self._stderr_tail()!r}")

    def _stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return ""
        try:
            return (self.proc.stderr.read() or "")[-500:]
        except (ValueError, OSError):
            return ""

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            if not self._ready.is_set():
                if line.startswith("ready "):
                    self.pid = int(line.split()[1])
                    self._ready.set()
                    continue
                self._other.append(line)
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                with self._lock:
                    self._other.append(line)
                continue
            with self._lock:
                if "phases" in obj:
                    self._summary = obj
                else:
                    self._status.append(obj)
        self._ready.set()   # EOF: unblock a waiter (the constructor then sees pid == 0)

    def statuses(self) -> list[dict]:
        with self._lock:
            return list(self._status)

    def latest_status(self) -> dict | None:
        with self._lock:
            return self._status[-1] if self._status else None

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc

    def result(self, timeout: float | None = None) -> dict:
        """Wait for the process to finish and return its final JSON summary (needs --json)."""
        rc = self.wait(timeout)
        with self._lock:
            summary = self._summary
        if rc != 0 or summary is None:
            raise AppError(f"{self.kind} --name {self.name}: exit code {rc}, summary "
                           f"{'present' if summary else 'missing (was --json passed?)'}; "
                           f"stderr: {self._stderr_tail()!r}")
        return summary

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the app closes its segment and prints its summary), then wait."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "AppProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_app(kind: str, name: str, scenario: str = "demo", seed: int = 1, *,
              fixed: str | Mapping[str, object] | None = None, time_scale: float = 1.0,
              extra: Sequence[str] = (), json_summary: bool = True, status_every: float | None = None,
              ready_timeout: float = 15.0) -> AppProcess:
    """Start `native/build/<kind>` on segment `name` and wait for it to be ready.

    fixed: static knob values (and `variant`) that make the app ignore the daemon.
    extra: more command-line options, e.g. ("--phase", "2", "--duration", "1", "--unpaced").
    """
    argv = [str(binary(kind)), "--name", name, "--scenario", scenario, "--seed", str(int(seed)),
            "--time-scale", repr(float(time_scale))]
    f = format_fixed(fixed)
    if f:
        argv += ["--fixed", f]
    if json_summary:
        argv.append("--json")
    if status_every:
        argv += ["--status-every", repr(float(status_every))]
    argv += list(extra)
    return AppProcess(kind, name, argv, ready_timeout=ready_timeout)


def unique_name(prefix: str = "app") -> str:
    """A segment name no other run uses (pid + monotonic ns)."""
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**12}"
