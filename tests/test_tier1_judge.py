"""The comparative judge: Student t against published quantiles, the paired block test's three
outcomes, autocorrelation widening, worst-of aggregation (dry run never masks), Kayenta peer."""
from __future__ import annotations

import numpy as np
import pytest

from daemon.tier1.events import MetricVerdict
from daemon.tier1.judge import PairedBlockTest, mann_whitney_kayenta, t_cdf, t_ppf, worst_of


@pytest.mark.parametrize("p,df,want", [
    (0.975, 10, 2.228139), (0.99, 5, 3.364930), (0.995, 1, 63.656741), (0.95, 30, 1.697261),
    (0.999, 7, 4.785290), (0.975, 1e6, 1.959966), (0.5, 4, 0.0), (0.025, 10, -2.228139)])
def test_t_quantiles_match_tables(p, df, want):
    assert t_ppf(p, df) == pytest.approx(want, abs=2e-6)
    if p != 0.5:
        assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, abs=1e-9)


def _test():
    return PairedBlockTest(effect_margin=0.05, abort_margin=0.0, min_blocks=8)


def test_hold_until_min_blocks():
    v = _test().decide("objective", [1.0] * 7, [1.0] * 7, worse_if_higher=True, alpha_look=0.01)
    assert v.decision == "hold" and v.n_blocks == 7 and v.lcb is None


def test_promote_abort_hold_on_paired_blocks():
    rng = np.random.default_rng(0)
    base = 1000 + 50 * rng.standard_normal(40)
    noise = 5 * rng.standard_normal(40)
    t = _test()
    ok = t.decide("objective", list(base + noise), list(base), worse_if_higher=True, alpha_look=0.001)
    assert ok.decision == "promote" and ok.ucb < 0.05
    bad = t.decide("objective", list(base * 1.1 + noise), list(base), worse_if_higher=True, alpha_look=0.001)
    assert bad.decision == "abort" and bad.lcb > 0 and bad.mean_diff == pytest.approx(0.1, abs=0.01)
    # a 10% INCREASE of a maximised metric is an improvement
    up = t.decide("throughput", list(base * 1.1 + noise), list(base), worse_if_higher=False, alpha_look=0.001)
    assert up.decision == "promote"
    noisy = t.decide("objective", list(base + 200 * rng.standard_normal(40)), list(base), worse_if_higher=True,
                     alpha_look=0.001)
    assert noisy.decision == "hold"


def test_pairing_cancels_shared_drift():
    drift = np.linspace(0, 500, 30)          # load rises by 50% during the step
    rng = np.random.default_rng(1)
    base = 1000 + drift + 3 * rng.standard_normal(30)
    cand = 1000 + drift + 3 * rng.standard_normal(30)
    v = _test().decide("objective", list(cand), list(base), worse_if_higher=True, alpha_look=0.001)
    assert v.decision == "promote" and abs(v.mean_diff) < 0.01


def test_autocorrelated_differences_widen_the_interval():
    rng = np.random.default_rng(2)
    e = np.zeros(40)
    for i in range(1, 40):                   # block length too short: AR(1) left in the blocks
        e[i] = 0.8 * e[i - 1] + rng.standard_normal()
    base = [1000.0] * 40
    ar = _test().decide("o", list(1000 + 10 * e), base, worse_if_higher=True, alpha_look=0.01)
    shuffled = _test().decide("o", list(1000 + 10 * rng.permutation(e)), base, worse_if_higher=True, alpha_look=0.01)
    assert ar.lag1 > 0.4
    assert ar.stderr > 1.5 * shuffled.stderr


def test_a_drifting_difference_is_not_counted_as_autocorrelation():
    # universe drift phase (seed 1, 16 blocks of 0.1 s): the target moves and the preset gains on
    # the baseline every block; on the raw differences r ~0.8 and the interval held to the deadline
    rng = np.random.default_rng(4)
    base = 1.0 + 0.012 * np.arange(16)
    cand = base - (0.1 + 0.045 * np.arange(16)) + 0.005 * rng.standard_normal(16)
    v = _test().decide("objective", list(cand), list(base), worse_if_higher=True, alpha_look=0.0025)
    assert v.decision == "promote" and v.lag1 < 0.4 and v.trend_end < v.mean_diff < -0.3
    # ...while noise correlated from block to block around a level still widens (see above)


def test_a_drift_past_the_margin_vetoes_promotion_and_a_drift_back_vetoes_abort():
    rng = np.random.default_rng(5)
    x = np.arange(16)
    base = [1.0] * 16
    # better on average over the blocks (-10 %), but the line is at +10 % by the latest block
    worse = 1.0 - 0.3 + 0.027 * x + 0.003 * rng.standard_normal(16)
    v = _test().decide("objective", list(worse), base, worse_if_higher=True, alpha_look=0.0025)
    assert v.ucb < 0.05 and v.trend_end > 0.05 and v.decision == "hold"
    # worse on average (+15 %), but back below the baseline by the latest block
    back = 1.0 + 0.35 - 0.027 * x + 0.003 * rng.standard_normal(16)
    v = _test().decide("objective", list(back), base, worse_if_higher=True, alpha_look=0.0025)
    assert v.lcb > 0.0 and v.trend_end < 0.0 and v.decision == "hold"


def _mv(decision, enforce=True):
    return MetricVerdict("m", decision, 8, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.05, 0.0, 0.01, enforce)


def test_worst_of_and_dry_run_never_masks():
    assert worst_of([_mv("promote"), _mv("hold")]) == "hold"
    assert worst_of([_mv("promote"), _mv("abort"), _mv("hold")]) == "abort"
    assert worst_of([_mv("abort"), _mv("promote", enforce=False)]) == "abort"
    assert worst_of([_mv("promote"), _mv("abort", enforce=False)]) == "promote"
    assert worst_of([_mv("promote", enforce=False)]) == "hold"    # no enforcing evidence never passes
    assert worst_of([]) == "hold"


def test_kayenta_peer_classifies_shifts():
    rng = np.random.default_rng(3)
    x = rng.normal(100, 10, 300)
    assert mann_whitney_kayenta(x + 20, x + rng.normal(0, 1, 300)) == "high"
    assert mann_whitney_kayenta(x - 20, x) == "low"
    assert mann_whitney_kayenta(rng.normal(100, 10, 300), rng.normal(100, 10, 300)) == "pass"
    assert mann_whitney_kayenta([], [1.0]) == "nodata"


def test_bench_trial_runs_through_the_real_executor():
    from daemon.bench import judge as bench
    from daemon.tier1.config import load_guardrails
    g = load_guardrails(bench.CONFIG)
    healthy = bench._trial(g, 0.0, 10_001)
    regressed = bench._trial(g, 0.10, 20_001)
    assert healthy["outcome"] == "promoted" and regressed["outcome"] == "rolled_back"
    assert regressed["time_s"] < healthy["time_s"]
