"""`arqond bench tier1` runs its stream to the end on both executors (it once broke silently when
a fast-path verdict stopped carrying a SnapshotSpec); its timings are the benchmark's business."""
from __future__ import annotations

from daemon.bench import tier1


def test_bench_tier1_quick_runs_both_executors_on_the_same_stream():
    out = tier1.run(quick=True)
    assert out["outcomes"]["n_unexpected"] == 0, out["outcomes"]
    accepted = out["outcomes"]["accepted"]
    assert accepted == 400 and out["step_canary"]["promoted"]
    # with the fast path every accepted proposal of this knob-only stream was decided by it
    assert out["fast_path"]["enabled"] and out["fast_path"]["accepted"] >= accepted   # + the canary rollouts
    peer = out["python_rules"]
    assert peer["decide_accept_probe"]["n"] == out["decide_accept_probe"]["n"] == 300
    assert peer["decide_accept_rollout"]["n"] == out["decide_accept_rollout"]["n"] == 100
