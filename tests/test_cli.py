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
