"""The comparative judge: is the candidate worse than the baseline it runs beside?

Why blocks: per-cycle telemetry is autocorrelated (AR(1) phi 0.8-0.95 is common), so a test
on raw samples (Kayenta's Mann-Whitney) sees far more evidence than there is and flags 15-30%
of healthy changes. Means over blocks longer than the correlation time are close to
independent; a residual lag-1 autocorrelation of the block differences, if any, widens the
interval further (effective sample size n(1-r)/(1+r)). A drift of the difference itself (the
conditions move and the two settings respond to them differently) is measured, not noise: the
lag-1 estimate is taken around the least-squares line of the differences, and neither verdict may
contradict that line at the latest block (see `decide`).

Why pairs: the candidate and its control run at the same time (separate traffic slots), so a
block's difference cancels load drift. For global knobs adjacent switchback segments
(ordered ABBA) are paired instead.

Decision per metric, on oriented relative differences d (+ = candidate worse, as a ratio of
|mean baseline|), with a one-sided t bound at `alpha_look`:
  abort   if lower bound > abort_margin    (confidently worse)
  promote if upper bound < effect_margin   (confidently not worse by more than the margin)
  hold    otherwise, and always while fewer than min_blocks blocks exist.
`alpha_look` is the experiment's error budget (1 - confidence) split, Bonferroni, over the
judged canary steps, the looks per step and the enforcing metrics, so the chance of a false
abort (or a false promotion) over a whole rollout stays below 1 - confidence.
Worst-of over enforcing metrics: abort > hold > promote; dry-run metrics are reported and
never decide (so they can never mask an enforcing verdict).

SLA first (lexicographic: feasibility, then the objective). Over the same paired blocks each
enforcing SLO's block statistic is also tested against its limit on each side
(`PairedBlockTest.feasibility`). When the baseline confidently breaches an SLO (lower bound of
its violation > 0) and the candidate confidently meets every enforcing SLO (upper bounds < 0),
the step passes on feasibility alone, whatever the objective says (rule `feasibility_first`):
a worse objective inside the SLOs beats a better one outside them. While the baseline's mean
breaches an SLO that the candidate's mean meets (every enforcing SLO) but the bounds are not
yet conclusive, an abort from the objective test alone becomes a hold (`feasibility_pending`).
The reverse (a candidate breaching what the baseline meets) is the absolute guardrail's job
and rolls back at once.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

from .events import FeasibilityVerdict, MetricVerdict

_ORDER = {"promote": 0, "hold": 1, "abort": 2}


# --------------------------------------------------------------------------- Student t

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student t cumulative distribution (df may be fractional)."""
    x = df / (df + t * t)
    tail = 0.5 * _betai(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student t, by bisection on `t_cdf` (deterministic, ~1e-10 absolute)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_ppf: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e12:
            return hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- the test

class PairedBlockTest:
    """One metric's promote/hold/abort over paired block means. Pure; no state between calls.

    Units: block means in the metric's unit; margins and bounds are ratios of |mean baseline|
    (absolute units when the baseline mean is 0).
    """

    def __init__(self, *, effect_margin: float, abort_margin: float, min_blocks: int):
        self.effect_margin = effect_margin
        self.abort_margin = abort_margin
        self.min_blocks = min_blocks
        self._tcache: dict[tuple[float, float], float] = {}

    def _t(self, p: float, df: float) -> float:
        key = (p, round(df, 3))
        v = self._tcache.get(key)
        if v is None:
            v = self._tcache[key] = t_ppf(p, key[1])
        return v

    def decide(self, metric: str, cand: Sequence[float], base: Sequence[float], *, worse_if_higher: bool,
               alpha_look: float, enforce: bool = True) -> MetricVerdict:
        n = len(cand)
        if n < self.min_blocks:
            return MetricVerdict(metric, "hold", n, None, None, None, None, None, None,
                                 self.effect_margin, self.abort_margin, alpha_look, enforce)
        sign = 1.0 if worse_if_higher else -1.0
        d = [sign * (c - b) for c, b in zip(cand, base)]
        mb = sum(base) / n
        scale = abs(mb) if mb != 0 else 1.0
        md = sum(d) / n
        var = sum((x - md) ** 2 for x in d) / (n - 1)
        # The least-squares line through the differences (block index centred): a drift of the
        # difference itself (the conditions move and the two settings respond differently) is
        # measured, not sampling noise. Its variance stays in `var` (conservative), but it must
        # not count a second time as autocorrelation: the lag-1 estimate is taken on the
        # residuals around the line. On the raw differences a steady drift reads r ~0.6-0.8
        # and widened the interval by 2-4x, so a candidate better in every one of 16 blocks
        # (universe drift preset, -41 % on average) held to its step deadline.
        xc = (n - 1) / 2.0
        sxx = n * (n * n - 1) / 12.0
        slope = sum((i - xc) * x for i, x in enumerate(d)) / sxx
        res = [x - md - slope * (i - xc) for i, x in enumerate(d)]
        ss = sum(e * e for e in res)
        # (residuals at rounding level: an exact line, nothing left to correlate)
        r1 = sum(res[i] * res[i + 1] for i in range(n - 1)) / ss if ss > 1e-12 * (n - 1) * var else 0.0
        # Widen by the lag-1 autocorrelation from 8 blocks on (from fewer it is mostly noise, as
        # in `feasibility`), through the standard error only: the t quantile keeps n - 1 degrees
        # of freedom. Taking n_eff - 1 as well made a trending difference (a drifting target,
        # r ~0.8) undecidable however large the effect (t quantile ~127 at df 1).
        r = min(max(r1, 0.0), 0.9) if n >= 8 else 0.0   # only ever widen the interval
        n_eff = n * (1.0 - r) / (1.0 + r)
        se = math.sqrt(var / n_eff)
        tc = self._t(1.0 - alpha_look, n - 1.0)
        mean_rel = md / scale
        se_rel = se / scale
        lcb, ucb = mean_rel - tc * se_rel, mean_rel + tc * se_rel
        # The bounds are on the mean over the blocks; with a drift the latest blocks say more
        # about what follows. Neither verdict may contradict the line at the latest block: no
        # promotion while the drift has already carried the candidate past effect_margin, no
        # abort once it has brought the candidate back within abort_margin. A veto only (a point
        # estimate never decides); without a drift it practically never binds.
        end_rel = (md + slope * xc) / scale
        if lcb > self.abort_margin and end_rel > self.abort_margin:
            decision = "abort"
        elif ucb < self.effect_margin and end_rel < self.effect_margin:
            decision = "promote"
        else:
            decision = "hold"
        return MetricVerdict(metric, decision, n, mean_rel, se_rel, r1, tc, lcb, ucb,
                             self.effect_margin, self.abort_margin, alpha_look, enforce, end_rel)

    def feasibility(self, slo: str, cand: Sequence[float], base: Sequence[float], *, limit: float, upper: bool,
                    alpha_look: float) -> Optional[FeasibilityVerdict]:
        """Each side's block means of `slo` against its limit (None below min_blocks).
        Violation = (stat - limit) / |limit| for a maximum, (limit - stat) / |limit| for a
        minimum; one-sided bounds, with the lag-1 widening of `decide` from 8 blocks on (a lag-1
        estimate from fewer blocks is mostly noise and would block the first look; blocks are
        sized to outlast the correlation time)."""
        n = len(cand)
        if n < self.min_blocks or len(base) != n:
            return None
        scale = abs(limit) if limit != 0 else 1.0
        sign = 1.0 if upper else -1.0
        tc = 0.0
        out = []
        for xs in (cand, base):
            v = [sign * (x - limit) / scale for x in xs]
            m = sum(v) / n
            var = sum((x - m) ** 2 for x in v) / (n - 1)
            r1 = 0.0
            if n >= 8 and var > 0:
                r1 = sum((v[i] - m) * (v[i + 1] - m) for i in range(n - 1)) / ((n - 1) * var)
            r = min(max(r1, 0.0), 0.9)
            n_eff = n * (1.0 - r) / (1.0 + r)
            t = self._t(1.0 - alpha_look, max(n_eff - 1.0, 1.0))
            tc = max(tc, t)
            out.append((m, t * math.sqrt(var / n_eff)))
        (mc, hc), (mb, hb) = out
        return FeasibilityVerdict(slo, n, limit, mc, mc + hc, mb, mb - hb, tc, mc + hc < 0.0, mb - hb > 0.0)


def sla_first(feas: Sequence[Optional[FeasibilityVerdict]]) -> str:
    """The lexicographic rule over every enforcing SLO's feasibility verdict (None: too few
    blocks): "feasibility_first" (promote on feasibility), "feasibility_pending" (no abort on
    the objective alone), or "" (the ordinary judge decides)."""
    if not feas or any(f is None for f in feas):
        return ""
    if all(f.cand_feasible for f in feas) and any(f.base_infeasible for f in feas):
        return "feasibility_first"
    if all(f.cand_violation <= 0.0 for f in feas) and any(f.base_violation > 0.0 for f in feas):
        return "feasibility_pending"
    return ""


def worst_of(verdicts: Sequence[MetricVerdict]) -> str:
    """Aggregate enforcing verdicts: any abort aborts, any hold holds; dry-run ones never count.
    No enforcing metric at all is 'hold' (missing evidence never passes)."""
    enforcing = [v.decision for v in verdicts if v.enforce]
    if not enforcing:
        return "hold"
    return max(enforcing, key=_ORDER.__getitem__)


# --------------------------------------------------------------------------- blocks

class BlockSeries:
    """Count-weighted block means of one metric for one side (candidate or baseline).

    A cycle's value enters with weight = its record count (so a block mean of a `mean`
    statistic is exact; of a percentile it is the count-weighted mean of per-cycle percentiles).
    """
    __slots__ = ("sum", "n")

    def __init__(self) -> None:
        self.sum = 0.0
        self.n = 0

    def add(self, value: float, n: int) -> None:
        if n > 0:
            self.sum += value * n
            self.n += n

    def mean(self) -> Optional[float]:
        return self.sum / self.n if self.n else None


def mann_whitney_kayenta(experiment: Sequence[float], control: Sequence[float], *, confidence: float = 0.98,
                         fraction: float = 0.25) -> str:
    """Kayenta's MannWhitneyClassifier as a reference peer (not used by the executor).

    Hodges-Lehmann shift estimate of experiment - control with a normal-approximation
    confidence interval; "high" when the interval's lower end exceeds fraction x |estimate|,
    "low" when the upper end is below -fraction x |estimate|, else "pass". numpy for speed.
    """
    import numpy as np
    from statistics import NormalDist
    x = np.asarray(experiment, dtype=float)
    y = np.asarray(control, dtype=float)
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return "nodata"
    diffs = np.sort((x[:, None] - y[None, :]).ravel())
    est = float(np.median(diffs))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    k = int(math.floor(n * m / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0)))
    k = min(max(k, 0), n * m - 1)
    lower, upper = float(diffs[k]), float(diffs[n * m - 1 - k])
    crit = fraction * abs(est)
    if lower > crit:
        return "high"
    if upper < -crit:
        return "low"
    return "pass"
