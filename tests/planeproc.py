"""Start the C test data plane (native/build/tool_plane) as a real separate process."""
from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "native" / "build" / "tool_plane"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Plane:
    """A tool_plane process. It prints 'ready <pid>' once its segment exists."""

    def __init__(self, mode: str, name: str, *args: str):
        if not TOOL.exists():
            raise RuntimeError(f"{TOOL} is missing: run `make native`")
        self.name = name
        self.proc = subprocess.Popen([str(TOOL), mode, name, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"tool_plane {mode} did not start: {line!r}")

    def send(self, text: str) -> None:
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def result(self) -> dict:
        return json.loads(self.proc.stdout.readline())

    def finish(self, timeout: float = 20) -> int:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> "Plane":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except (BrokenPipeError, OSError):
                pass
