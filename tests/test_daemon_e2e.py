"""End to end: a real C data plane (universe), `arqond run`, shared memory, metrics, ledger.

It watches the daemon tune, injects a bad candidate that breaches an SLO and sees the rollback
in shared memory, the metrics and the ledger; kills the daemon with SIGKILL and sees the data
plane fall back through the lease; restarts it and sees the baseline rebuilt from the ledger;
stops it with SIGTERM and sees the lease released.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from daemon.tier1.ledger import read_events, verify
from shm_layout import spec
from shm_layout.segment import Segment
from tests.planeproc import ROOT, unique_name

UNIVERSE = ROOT / "native" / "build" / "universe"
ARQOND = [sys.executable, "-m", "daemon.cli"]


def _config(tmp: Path, name: str, port: int) -> Path:
    cfg = tmp / "g.yaml"
    cfg.write_text(f"""
target: {name}
knobs:
  diffusion: {{min: 0.05, max: 1.0}}
  decay: {{min: 0.02, max: 0.8, max_delta: 0.05}}
  noise: {{max: 2.0, delta_mode: absolute, max_delta: 2.0}}
objective: {{direction: minimize, terms: [{{field: error, stat: mean, weight: 1.0}}]}}
slos:
  - {{name: error_ceiling, field: error, stat: mean, max: 2.0, min_samples: 20}}
  - {{name: instability, field: instability, stat: mean, max: 0.05, min_samples: 20}}
rollout: {{canary_steps: [0.1, 0.5, 1.0], min_samples: 100, min_blocks: 6, block_s: 0.1, bake_s: 0.3,
          step_deadline_s: 5, cooldown_after_rollback_s: 0.5, probe_window_s: 0.3}}
budget: {{max_change: 2.0}}
lease: {{duration_s: 0.3}}
audit: {{path: {tmp}/audit.log}}
metrics: {{address: "127.0.0.1:{port}"}}
tuning: {{seed: 3, knobs: [diffusion, decay], rollout_every: 2}}
""")
    return cfg


def _ctl(sock: Path, *args: str, check: bool = True) -> dict:
    r = subprocess.run(ARQOND + [*args, "--socket", str(sock)], capture_output=True, text=True, timeout=30, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"arqond {' '.join(args)} failed ({r.returncode}): {r.stderr} {r.stdout}")
    return json.loads(r.stdout) if r.stdout.strip().startswith("{") else {"rc": r.returncode, "stderr": r.stderr}


def _wait(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [r.event for r in read_events(path, check=False)]


@pytest.fixture
def plane(tmp_path):
    if not UNIVERSE.exists():
        pytest.fail(f"{UNIVERSE} missing: run `make native`")
    name = unique_name("e2e")
    p = subprocess.Popen([str(UNIVERSE), "--name", name, "--scenario", "short", "--duration", "120", "--seed", "5"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout.readline().startswith("ready")
    yield name, p
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
    p.stdout.close()


def _start_daemon(cfg: Path, sock: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(ARQOND + ["run", "-c", str(cfg), "--control-socket", str(sock)], cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def test_tune_breach_rollback_kill9_lease_restart_rebuild(plane, tmp_path):
    name, _ = plane
    port = 0                      # the daemon binds any free port and reports it in status
    cfg = _config(tmp_path, name, port)
    sock = tmp_path / "ctl" / "c.sock"
    ledger = tmp_path / "audit.log"
    d = _start_daemon(cfg, sock, tmp_path / "d1.log")
    try:
        # 1. it attaches and tunes: probes evaluated, an experiment promoted or rolled out
        _wait(lambda: sock.exists() and _ctl(sock, "status", name, "--json", check=False).get("attached"), 15, "attach")
        _wait(lambda: sum(1 for e in _events(ledger) if e["event"] == "evaluation") >= 4, 20, "probe evaluations")
        with Segment.attach(name) as seg:
            assert seg.plane_state().lease_state == spec.LEASE_ACTIVE

        # 2. a bad candidate (noise 2.0: the field drowns, error >> 2) is caught and rolled back
        res = _ctl(sock, "propose", name, "--set", "noise=2.0", "--note", "fault injection")
        assert res["accepted"], res
        pid = res["proposal_id"]
        rb = _wait(lambda: [e for e in _events(ledger) if e["event"] == "rollback" and e.get("proposal_id") == pid],
                   10, "rollback of the injected candidate")[0]
        assert "error_ceiling" in json.dumps(rb)
        st = _ctl(sock, "status", name, "--json")
        noise = next(k for k in st["knobs"] if k["name"] == "noise")
        assert noise["baseline"] < 2.0
        # the probes and the operator's knob proposal were decided by Tier 1's admission fast path,
        # and what went live never disagreed with the Python layout (a mismatch would have snapped back)
        assert st["fast_path"].get("accepted", 0) >= 4 and st["fast_path"]["mismatch"] == 0, st["fast_path"]
        with Segment.attach(name) as seg:
            _seq, snap = seg.read_snapshot()
            ni = seg.declaration.knob_index("noise")
            assert all(s.knobs[ni] < 2.0 for s in snap.slots), "bad candidate still live in shared memory"
        applies = [e for e in _events(ledger) if e["event"] == "apply"]
        t_apply = next(e["t_ns"] for e in applies if e.get("proposal_id") == pid)
        assert rb["t_ns"] - t_apply < 5 * 10**9
        port = _ctl(sock, "status", name, "--json")["metrics_port"]
        assert port > 0
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "arqond_rollbacks_total" in scrape and "arqond_tier1_fast_path_proposals_total" in scrape
        lint = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True)
        assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr

        # 3. SIGKILL: the data plane falls back to slot 0 by itself when the lease lapses
        d.send_signal(signal.SIGKILL)
        d.wait()
        with Segment.attach(name) as seg:
            _wait(lambda: seg.plane_state().lease_state == spec.LEASE_LAPSED, 3, "lease lapse")
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()

    # 4. restart: the known-good baseline is rebuilt from the ledger and published. What the ledger
    # holds durably is the truth (a promotion published in the last instants before SIGKILL may
    # not have reached the disk, and is then rightly not restored).
    from daemon.tier1 import events as ev
    from daemon.tier1.executor import rebuild
    with Segment.attach(name) as seg:
        decl = seg.declaration
    durable = rebuild([r.event for r in read_events(ledger, type=ev.Event)], decl)
    baseline_before = dict(zip((k.name for k in decl.knobs), durable.baseline))
    d = _start_daemon(cfg, sock, tmp_path / "d2.log")
    try:
        _wait(lambda: _ctl(sock, "status", name, "--json", check=False).get("attached"), 15, "re-attach")
        st = _ctl(sock, "status", name, "--json")
        assert {k["name"]: k["baseline"] for k in st["knobs"]} == baseline_before
        with Segment.attach(name) as seg:
            _wait(lambda: seg.plane_state().lease_state == spec.LEASE_ACTIVE, 3, "lease renewed")
        # 5. SIGTERM: clean stop, baseline only, lease released
        d.send_signal(signal.SIGTERM)
        assert d.wait(15) == 0
        with Segment.attach(name) as seg:
            assert seg.plane_state().lease_state in (spec.LEASE_NONE, spec.LEASE_LAPSED)
            _seq, snap = seg.read_snapshot()
            assert len(snap.slots) == 1
    finally:
        if d.poll() is None:
            d.kill()
            d.wait()
    rep = verify(ledger)
    assert rep.ok and rep.n_records > 10, rep


def test_invalid_config_is_refused_with_the_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("target: x\nknobs:\n  a: {min: 2, max: 1}\n")
    r = subprocess.run(ARQOND + ["run", "-c", str(cfg)], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 1
    assert "bad.yaml:3" in r.stderr and "not started" in r.stderr
