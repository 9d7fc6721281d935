"""Operating the daemon: reload (valid, invalid, SIGHUP), kill switch across restarts, ArqonBus up and down."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shm_layout.segment import Segment
from tests.fakebus import FakeBus
from tests.planeproc import ROOT, unique_name
from tests.test_daemon_e2e import ARQOND, UNIVERSE, _ctl, _events, _wait, plane  # noqa: F401 (fixture)


def _closed_port() -> int:
    """A loopback port nothing listens on (for a bus that is down)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

BASE = """
target: {name}
knobs:
  diffusion: {{min: 0.05, max: 1.0}}
  decay: {{min: 0.02, max: 0.8}}
  noise: {{max: 0.5}}
objective: {{direction: minimize, terms: [{{field: error, stat: mean, weight: 1.0}}]}}
slos:
  - {{name: instability, field: instability, stat: mean, max: 0.05, min_samples: 20}}
rollout: {{canary_steps: [0.1, 1.0], min_blocks: 4, block_s: 0.1, bake_s: 0.2, probe_window_s: 0.2, effect_margin: 0.3, abort_margin: 0.3,
          step_deadline_s: 8}}
lease: {{duration_s: 0.3}}
audit: {{path: {tmp}/audit.log}}
metrics: {{address: "127.0.0.1:{port}"}}
cycle: {{period_s: {period}}}
tuning: {{seed: 2, knobs: [diffusion, decay], rollout_every: 2}}
{extra}
"""


@pytest.fixture
def universe(plane):
    return plane[0]


class Daemon:
    def __init__(self, tmp: Path, name: str, extra: str = "", period: float = 0.01):
        self.tmp, self.name = tmp, name
        self.cfg = tmp / "g.yaml"
        self.sock = tmp / "ctl" / "c.sock"
        self.port = 0
        self.write(extra, period)
        self.proc = None

    def write(self, extra: str = "", period: float = 0.01) -> None:
        self.cfg.write_text(BASE.format(name=self.name, tmp=self.tmp, port=self.port, period=period, extra=extra))

    def start(self, *flags: str) -> "Daemon":
        self.proc = subprocess.Popen(ARQOND + ["run", "-c", str(self.cfg), "--control-socket", str(self.sock), *flags],
                                     cwd=ROOT, stdout=open(self.tmp / "d.log", "ab"), stderr=subprocess.STDOUT)
        _wait(lambda: self.sock.exists() and self.status().get("attached"), 15, "attach")
        return self

    def status(self) -> dict:
        return _ctl(self.sock, "status", self.name, "--json", check=False)

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(15)
        return self.proc.returncode if self.proc else 0


def test_reload_valid_invalid_and_sighup(universe, tmp_path):
    d = Daemon(tmp_path, universe).start()
    try:
        assert d.status()["config"]["last_reload_ok"]
        # an invalid file: refused with file:line, the running config is kept
        good = d.cfg.read_text()
        d.cfg.write_text(good.replace("max: 0.05, min_samples", "max: -1, min_samples").replace("period_s: 0.01", "period_s: 0"))
        r = subprocess.run(ARQOND + ["reload", universe, "--socket", str(d.sock)], capture_output=True, text=True,
                           timeout=40, cwd=ROOT)
        assert r.returncode == 1 and "g.yaml:" in r.stderr and "running config kept" in r.stderr, r.stderr
        st = d.status()
        assert not st["config"]["last_reload_ok"] and st["attached"]
        # a valid change applies, and is recorded in the ledger
        d.cfg.write_text(good.replace("period_s: 0.01", "period_s: 0.02"))
        assert _ctl(d.sock, "reload", universe)["config_generation"] == 2
        assert d.status()["config"]["last_reload_ok"]
        # SIGHUP reloads too
        d.proc.send_signal(signal.SIGHUP)
        _wait(lambda: sum(1 for e in _events(tmp_path / "audit.log") if e["event"] == "config_reload") >= 3, 10,
              "config_reload events")
    finally:
        assert d.stop() == 0


def test_kill_switch_holds_baseline_and_persists_across_restart(universe, tmp_path):
    d = Daemon(tmp_path, universe).start()
    try:
        _ctl(d.sock, "freeze", universe)
        st = d.status()
        assert st["kill_switch"] and st["rollout_state"] == "frozen"
        with Segment.attach(universe) as seg:
            assert len(seg.read_snapshot()[1].slots) == 1
        time.sleep(0.5)  # no experiment starts while frozen
        assert d.status()["experiment_id"] == ""
        res = _ctl(d.sock, "propose", universe, "--set", "diffusion=0.2", check=False)
        assert res.get("rc") == 1 or res.get("accepted") is False
    finally:
        assert d.stop() == 0
    d.start()                         # restart: rebuilt from the ledger, still frozen
    try:
        st = d.status()
        assert st["kill_switch"] and st["rollout_state"] == "frozen"
        _ctl(d.sock, "thaw", universe)
        _wait(lambda: not d.status()["kill_switch"], 5, "thaw")
    finally:
        assert d.stop() == 0


def test_bus_receives_valid_envelopes_and_a_down_bus_changes_nothing(universe, tmp_path):
    with FakeBus() as fb:
        d = Daemon(tmp_path, universe, extra=f"bus: {{enabled: true, url: '{fb.url}', summary_hz: 5}}").start()
        try:
            _wait(lambda: len(fb.ids(channel="rollouts")) > 0 and len(fb.ids(type="telemetry")) > 0, 15,
                  "rollout events and summaries on the bus")
            assert not fb.errors_sent, fb.errors_sent[:3]
            assert d.status()["bus"]["connected"]
        finally:
            assert d.stop() == 0
    # a bus that is not there: the daemon attaches and tunes all the same
    down = tmp_path / "down"
    down.mkdir()
    d2 = Daemon(down, universe, extra=f"bus: {{enabled: true, url: 'ws://127.0.0.1:{_closed_port()}'}}").start()
    try:
        _wait(lambda: sum(1 for e in _events(down / "audit.log") if e["event"] == "evaluation") >= 2, 15,
              "probe evaluations with the bus down")
        st = d2.status()
        assert st["bus"]["enabled"] and not st["bus"]["connected"]
    finally:
        assert d2.stop() == 0


def test_data_plane_restart_is_reattached_with_the_baseline_restored(tmp_path):
    name = unique_name("re")

    def start_plane():
        p = subprocess.Popen([str(UNIVERSE), "--name", name, "--scenario", "short", "--duration", "120"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout.readline().startswith("ready")
        return p

    p1 = start_plane()
    d = Daemon(tmp_path, name).start("--no-tuning")
    try:
        epoch1 = d.status()["epoch"]
        res = _ctl(d.sock, "propose", name, "--set", "noise=0.0")     # less noise: closer to the target
        assert res["accepted"], res
        ended = _wait(lambda: [e for e in _events(tmp_path / "audit.log") if e.get("proposal_id") == res["proposal_id"]
                               and e["event"] in ("promotion", "rollback")], 30, "the rollout to end")
        assert ended[0]["event"] == "promotion", ended[0]
        base = {k["name"]: k["baseline"] for k in d.status()["knobs"]}
        assert base["noise"] == 0.0
        p1.kill()                                   # the data plane dies (kill -9) ...
        p1.wait()
        p1.stdout.close()
        p2 = start_plane()                          # ... and comes back: new segment, new epoch
        try:
            _wait(lambda: d.status().get("attached") and d.status()["epoch"] != epoch1, 30, "re-attach")
            st = d.status()
            assert {k["name"]: k["baseline"] for k in st["knobs"]} == base
            with Segment.attach(name) as seg:
                _wait(lambda: seg.read_snapshot()[1].slots[0].knobs[seg.declaration.knob_index("noise")] == 0.0, 5,
                      "baseline published to the new data plane")
        finally:
            assert d.stop() == 0
            p2.send_signal(signal.SIGTERM)
            p2.wait(10)
            p2.stdout.close()
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
        if p1.poll() is None:
            p1.kill()


def test_no_tuning_survives_a_reload(universe, tmp_path):
    d = Daemon(tmp_path, universe).start("--no-tuning")
    try:
        assert _ctl(d.sock, "reload", universe)["config_generation"] == 2
        time.sleep(1.5)   # Tier 2 would have proposed several probes by now (probe window 0.2 s)
        assert not [e for e in _events(tmp_path / "audit.log") if e["event"] == "proposal"]
    finally:
        assert d.stop() == 0
