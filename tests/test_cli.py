"""The CLI as an operator uses it, against real processes and files."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from daemon.cli import app
from tests.planeproc import ROOT, Plane, unique_name

runner = CliRunner()


def test_inspect_shows_a_live_segment_as_json_and_table():
    with Plane("idle", unique_name()) as p:
        r = runner.invoke(app, ["inspect", p.name, "--json"])
        assert r.exit_code == 0, r.output
        info = json.loads(r.output)
        assert info["header"]["creator_pid"] == p.proc.pid
        assert [k["name"] for k in info["declaration"]["knobs"]][:2] == ["k0", "k1"]
        assert info["lease"]["state"] == "none"
        assert len(info["rings"]) == 2 and info["rings"][0]["drops"] == 0
        r = runner.invoke(app, ["inspect", p.name])
        assert r.exit_code == 0 and "lease: none" in r.output and "ring 1:" in r.output
        p.finish()


def test_inspect_refuses_a_missing_segment_with_the_reason():
    r = runner.invoke(app, ["inspect", unique_name("none")])
    assert r.exit_code == 1
    assert "refused (exists)" in r.output


def test_check_accepts_the_default_file_and_names_the_line_of_a_broken_one(tmp_path):
    r = runner.invoke(app, ["check", str(ROOT / "guardrails.yaml")])
    assert r.exit_code == 0, r.output
    bad = tmp_path / "g.yaml"
    bad.write_text((ROOT / "guardrails.yaml").read_text().replace("target: universe", "target: [1, 2]", 1))
    r = runner.invoke(app, ["check", str(bad)])
    assert r.exit_code == 1
    assert re.search(r"g\.yaml:\d+", r.output) and "target" in r.output


def test_readme_c_example_compiles_and_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"```c\n(.*?)```", text, re.S).group(1)
    src = tmp_path / "app.c"
    src.write_text(code.replace('"example"', f'"{unique_name("readme")}"'))
    exe = tmp_path / "app"
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", f"-I{ROOT}/native/include", str(src),
                    str(ROOT / "native/build/libarqon.a"), "-lpthread", "-lm", "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)], timeout=30).returncode == 0


def test_snapback_without_a_daemon_writes_the_baseline_and_releases_the_lease(tmp_path):
    import time

    from shm_layout import spec
    from shm_layout.segment import Segment
    from tests.test_segment import checked_snapshot
    with Plane("idle", unique_name()) as p:
        with Segment.attach(p.name) as seg:
            seg.acquire_writer()
            seg.publish(checked_snapshot(7), time.monotonic_ns() + 10**10)
            seg.release_writer()
        r = runner.invoke(app, ["snapback", p.name, "--socket", str(tmp_path / "none.sock")])
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        assert out["generation"] == 8 and out["lease"] == "released"
        with Segment.attach(p.name) as seg:
            _seq, snap = seg.read_snapshot()
            assert len(snap.slots) == 1 and snap.slots[0].knobs == checked_snapshot(7).slots[0].knobs
            deadline = time.monotonic() + 2
            while seg.plane_state().lease_state != spec.LEASE_NONE and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seg.plane_state().lease_state == spec.LEASE_NONE
        p.finish()


def test_snapback_with_nothing_running_is_a_no_op():
    r = runner.invoke(app, ["snapback", unique_name("gone"), "--socket", "/nonexistent/x.sock"])
    assert r.exit_code == 0 and "nothing to do" in r.output
