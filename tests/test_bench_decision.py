"""Smoke test of `arqond bench decision --quick`: a real C data plane (tool_breach), real daemons,
real breaches. It checks the report's structure and that every measured breach was an SLO
rollback of the injected candidate; it asserts no speed (the figures are the benchmark's job)."""
from __future__ import annotations

import math

import pytest

from daemon.bench import decision

FIGURES = ("t2_decision_us_p50", "t2_decision_us_p99", "t1_apply_us_p50", "t1_apply_us_p99",
           "summarize_us_p50", "summarize_us_p99", "daemon_cpu_share", "daemon_rss_mb",
           "e2e_ms_p50", "e2e_ms_p99", "e2e_ms_max")
FLOORS = ("t1_apply_p99_le_100us", "t2_decision_p99_le_1ms", "e2e_p99_le_2ms_at_1ms_cadence",
          "cpu_le_5pct_at_10ms_100k_rps", "rss_le_120mb")


@pytest.fixture(scope="module")
def report():
    if not decision.TOOL.exists():
        pytest.fail(f"{decision.TOOL} missing: run `make native`")
    return decision.run(quick=True)


def test_report_has_every_figure_and_floor(report):
    for k in FIGURES:
        assert isinstance(report[k], (int, float)) and math.isfinite(report[k]) and report[k] >= 0, k
    assert set(report["floors"]) == set(FLOORS)
    assert all(isinstance(v, bool) for v in report["floors"].values()), report["floors"]
    m = report["machine"]
    assert m["cores"] >= 1 and len(m["loadavg_at_start"]) == 3 and 0 <= m["host_busy_share_during_run"] <= 1
    assert report["decision_knobs"] == 8
    assert report["t2_decision_us_n"] > 0 and report["t1_apply_us_n"] == report["t2_decision_us_n"]
    assert report["daemon_rss_peak_mb"] >= report["daemon_rss_mb"] > 0


def test_every_breach_is_an_slo_rollback_at_both_cadences(report):
    for pre in ("e2e_10ms", "e2e_1ms"):
        n = report[f"{pre}_breaches"]
        assert n == 20, (pre, report[f"{pre}_errors"])
        # each sample's proposal was rolled back by the SLO guardrail (read from the ledger)
        assert report[f"{pre}_slo_rollbacks"] == n
        rows = report["samples"][pre]
        assert len(rows) == n and all(r[0] > 0 and r[3] >= 1 for r in rows)
        assert report[f"{pre}_ms_p50"] <= report[f"{pre}_ms_p99"] <= report[f"{pre}_ms_max"]
    assert report["e2e_ms_p99"] == report["e2e_1ms_ms_p99"]


def test_generated_profile_is_a_valid_guardrails_file(tmp_path):
    text = decision.profile("t", 0.001, tmp_path / "a.log", 9999, tuning=False)
    from daemon.tier1.config import load_guardrails
    p = tmp_path / "g.yaml"
    p.write_text(text)
    g = load_guardrails(str(p))
    assert g.cycle.period_s == 0.001 and not g.tuning.enabled
    assert [s.min_samples for s in g.slos] == [decision.BURST]
    assert len(g.knobs) == decision.NK
