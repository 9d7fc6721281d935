"""The systemd unit: systemd-analyze finds nothing to say, /dev/shm-breaking settings are absent,
and MemoryDenyWriteExecute=yes really is compatible with the daemon's Python stack."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "arqond@.service"
CLI = "/usr/local/bin/arqond"


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install Debian's `{package}` package (apt-get install -y {package}); "
                    "the unit check must not be skipped")
    return path


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """section -> [(key, value)] in order; repeated keys kept (systemd accumulates some of them)."""
    out: dict[str, list[tuple[str, str]]] = {}
    section = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = []
            continue
        key, _, value = line.partition("=")
        out[section].append((key.strip(), value.strip()))
    return out


def render(tmp_path: Path, extra: str = "") -> Path:
    """A copy of the unit whose only change is the CLI path (verify checks the binary exists)."""
    text = UNIT.read_text()
    assert CLI in text
    stand_in = os.path.realpath(shutil.which("true"))
    rendered = text.replace(CLI, stand_in) + extra
    assert rendered.replace(stand_in, CLI) == text + extra.replace(stand_in, CLI)
    (tmp_path / UNIT.name).write_text(rendered)
    return tmp_path / "arqond@demo.service"


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([tool("systemd-analyze", "systemd"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60, cwd=unit.parent)


def test_systemd_analyze_verify_is_silent(tmp_path):
    res = verify(render(tmp_path))
    said = res.stdout + res.stderr
    assert res.returncode == 0 and said == "", f"systemd-analyze verify said:\n{said}"


def test_verify_would_catch_a_mistake(tmp_path):
    # verify exits 0 on unknown keys; this proves that treating any output as failure catches them.
    res = verify(render(tmp_path, extra="\n[Service]\nRestartSecs=3\n"))
    assert "Unknown key" in res.stdout + res.stderr


def test_unit_settings():
    u = parse_unit(UNIT.read_text())
    svc = dict(u["Service"])          # last value wins, like systemd for scalar settings
    unit = dict(u["Unit"])
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"   # 252 ignores notify-reload
    assert svc["ExecStartPre"] == f"{CLI} check /etc/arqond/%i.yaml"
    assert svc["ExecStart"] == f"{CLI} run --config /etc/arqond/%i.yaml"
    assert svc["ExecReload"] == f"{CLI} reload %i"
    assert svc["ExecStopPost"] == f"{CLI} snapback %i"
    assert svc["Restart"] == "on-failure" and "RestartSec" in svc and "WatchdogSec" in svc
    assert "StartLimitIntervalSec" in unit and "StartLimitBurst" in unit
    assert svc["RuntimeDirectory"] == "arqond" and svc["RuntimeDirectoryPreserve"] == "yes"
    assert svc["RuntimeDirectoryMode"] == "0700"   # control.ensure_private_dir refuses anything looser
    assert svc["StateDirectory"] == "arqond"
    assert svc["User"] == "arqond" and svc["Group"] == "arqond"
    assert svc["ProtectSystem"] == "strict" and svc["ProtectHome"] == "yes"
    assert svc["PrivateTmp"] == "yes" and svc["NoNewPrivileges"] == "yes"
    assert svc["CapabilityBoundingSet"] == ""
    assert svc["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    filters = [v for k, v in u["Service"] if k == "SystemCallFilter"]
    assert "@system-service" in filters
    # What would break the data plane's /dev/shm segment.
    assert "DynamicUser" not in svc and "RemoveIPC" not in svc
    for k, v in u["Service"]:
        if k in ("ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem"):
            assert "/dev/shm" not in v and v.split()[0] not in ("/", "-/"), f"{k}={v} hides /dev/shm"


def test_security_exposure_stays_low(tmp_path):
    res = subprocess.run([tool("systemd-analyze", "systemd"), "security", "--offline=true",
                          str(render(tmp_path))], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout + res.stderr)
    assert m, res.stdout + res.stderr
    # 1.5 with systemd 252 (docs/operations.md). A loose bound so a systemd upgrade that re-weighs
    # checks does not fail, while dropping the hardening block (~9) does.
    assert float(m.group(1)) <= 3.0, res.stdout


# systemd's MemoryDenyWriteExecute=yes seccomp filter (src/shared/seccomp-util.c), x86-64 only:
# mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, shmat with SHM_EXEC -> EPERM.
MDWE_C = r"""
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
#define ARG2 (offsetof(struct seccomp_data, args[2]))
int main(int argc, char **argv) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD|BPF_W|BPF_ABS, offsetof(struct seccomp_data, nr)),        /* 0 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, SYS_mmap, 0, 4),                           /* 1 */
    BPF_STMT(BPF_LD|BPF_W|BPF_ABS, ARG2),                                      /* 2 */
    BPF_STMT(BPF_ALU|BPF_AND|BPF_K, PROT_WRITE|PROT_EXEC),                     /* 3 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, PROT_WRITE|PROT_EXEC, 12, 0),              /* 4 -> 17 */
    BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),                                /* 5 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, SYS_mprotect, 1, 0),                       /* 6 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, SYS_pkey_mprotect, 0, 4),                  /* 7 */
    BPF_STMT(BPF_LD|BPF_W|BPF_ABS, ARG2),                                      /* 8 */
    BPF_STMT(BPF_ALU|BPF_AND|BPF_K, PROT_EXEC),                                /* 9 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, PROT_EXEC, 6, 0),                          /* 10 -> 17 */
    BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),                                /* 11 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, SYS_shmat, 0, 3),                          /* 12 */
    BPF_STMT(BPF_LD|BPF_W|BPF_ABS, ARG2),                                      /* 13 */
    BPF_STMT(BPF_ALU|BPF_AND|BPF_K, SHM_EXEC),                                 /* 14 */
    BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K, SHM_EXEC, 1, 0),                           /* 15 -> 17 */
    BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ALLOW),                                /* 16 */
    BPF_STMT(BPF_RET|BPF_K, SECCOMP_RET_ERRNO | EPERM),                        /* 17 */
  };
  struct sock_fprog prog = { sizeof f / sizeof f[0], f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
    perror("seccomp"); return 111;
  }
  execv(argv[1], argv + 1); perror("execv"); return 112;
}
"""

PROBE = r"""
import asyncio, mmap, numpy, cffi, uvloop
import shm_layout.segment                          # the compiled cffi helper (API mode)
from daemon.runtime import control, metrics, sdnotify, status
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("FILTER-INACTIVE")
except OSError:
    pass
try:
    cffi.FFI().callback("int(int)", lambda x: x)
    print("ABI-CALLBACK-ALLOWED")
except MemoryError:
    print("ABI-CALLBACK-DENIED")
m = metrics.Metrics(); m.update(status.RuntimeStatus(target="t")); m.observe_cycle(0.001)
from prometheus_client import generate_latest
assert b"arqond_cycle_duration_seconds_count 1.0" in generate_latest(m.registry)
async def main():
    await asyncio.sleep(0)
uvloop.run(main())
print("STACK-OK", float(numpy.arange(4).sum()))
"""


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                    reason="the seccomp filter above encodes x86-64 syscall numbers")
def test_memory_deny_write_execute_is_compatible(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler (cc): install build-essential; `make` needs it for the data plane anyway")
    exe = tmp_path / "mdwe"
    subprocess.run([cc, "-O1", "-o", str(exe), "-x", "c", "-"], input=MDWE_C, text=True, check=True,
                   capture_output=True, timeout=60)
    res = subprocess.run([str(exe), sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = res.stdout
    assert res.returncode == 0, f"daemon stack failed under MemoryDenyWriteExecute:\n{res.stderr}"
    assert "FILTER-INACTIVE" not in out
    assert "ABI-CALLBACK-DENIED" in out    # the filter bites where libffi needs W+X pages...
    assert "STACK-OK 6.0" in out           # ...and the daemon's own stack does not need them
