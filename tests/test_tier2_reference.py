"""Tier-2 internals checked against straightforward reference computations."""
import math

import numpy as np
import pytest

from daemon.tier2 import make_bandit, make_optimizer
from daemon.tier2.bandits.base import ArmStats


def _kl(p, q):
    p = min(max(p, 1e-12), 1 - 1e-12)
    q = min(max(q, 1e-12), 1 - 1e-12)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _klucb_bisect(p, budget):
    lo, hi = p, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _kl(p, mid) <= budget else (lo, mid)
    return lo


def test_klucb_index_matches_bisection_reference_over_time():
    # select() solves only the arms whose upper bound can still win; its pick must be the argmax of
    # the exact indices all the same, and indices() (every arm solved) must match the reference.
    rng = np.random.default_rng(0)
    for discount in (1.0, 0.99):
        b = make_bandit("klucb", 6, seed=1, discount=discount)
        for t in range(400):
            a = b.select()
            if t > 10:
                st = b.stats
                n = st.n
                budget = math.log(n.sum()) / n
                ref = [_klucb_bisect(min(max(p, 1e-9), 1 - 1e-9), bu) for p, bu in zip(st.s / n, budget)]
                assert ref[a] >= max(ref) - 1e-9, (t, a, ref)
                if t % 37 == 0:
                    assert np.allclose(b.indices(), ref, atol=1e-6), (t, b.indices(), ref)
            b.update(a, float(rng.random() < 0.1 + 0.12 * a))


@pytest.mark.parametrize("g", [0.97, 1.0])  # discounted (batched solve) and plain (recursive least squares)
def test_linear_arm_model_equals_discounted_ridge_regression(g):
    rng = np.random.default_rng(1)
    d, k, lam = 4, 3, 0.7
    b = make_bandit("linucb", k, seed=1, dim=d, ridge=lam, discount=g)
    A = np.repeat(lam * np.eye(d)[None], k, axis=0)
    bb = np.zeros((k, d))
    for _ in range(200):
        x = rng.normal(size=d)
        a = int(rng.integers(0, k))
        r = float(rng.normal())
        b.update(a, r, context=x)
        A = g * (A - lam * np.eye(d)) + lam * np.eye(d)
        bb *= g
        A[a] += np.outer(x, x)
        bb[a] += r * x
    x = rng.normal(size=d)
    mu, sd = b._mean_sd(x)
    theta = np.linalg.solve(A, bb[..., None])[..., 0]
    assert np.allclose(mu, theta @ x, atol=1e-9)
    assert np.allclose(sd ** 2, [x @ np.linalg.solve(A[i], x) for i in range(k)], atol=1e-9)


def test_window_statistics_equal_the_last_w_observations():
    rng = np.random.default_rng(2)
    w, k = 50, 4
    st = ArmStats(k, 1.0, w)
    hist = []
    for _ in range(333):
        a, r = int(rng.integers(0, k)), float(rng.random())
        f = bool(rng.random() < 0.7)
        st.add(a, r, f)
        hist.append((a, r, f))
    last = hist[-w:]
    for a in range(k):
        rows = [(r, f) for (aa, r, f) in last if aa == a]
        assert st.n[a] == len(rows)
        assert math.isclose(st.s[a], sum(r for r, _ in rows), abs_tol=1e-9)
        assert math.isclose(st.ss[a], sum(r * r for r, _ in rows), abs_tol=1e-9)
        assert st.fz[a] == sum(f for _, f in rows)


def test_cmaes_learns_an_ill_conditioned_ellipsoid():
    # Noise-free, condition number 1e4: an isotropic search with these evaluations stalls far above
    # 1e-8; covariance adaptation gets there.
    d = 5
    scales = 10.0 ** (2 * np.arange(d) / (d - 1))  # axis weights 1 .. 100 -> condition 1e4
    xs = np.full(d, 0.3)

    def f(X):
        return (((X - xs) * scales) ** 2).sum(-1)

    opt = make_optimizer("cmaes", np.tile([-1.0, 1.0], (d, 1)), seed=2, detector=None, tol_x=1e-12)
    while opt.rounds * opt.batch_size < 4000:
        X = opt.ask()
        opt.tell(f(X))
    assert f(opt.recommend()) < 1e-8
    assert opt.D.max() / opt.D.min() > 30  # the learnt shape follows the axis scales


def test_pooled_variance_from_tracked_residuals_equals_the_formula():
    from daemon.tier2.bandits.thompson import pooled_var

    rng = np.random.default_rng(4)
    for discount, window in ((1.0, 0), (0.97, 0), (1.0, 40)):
        st = ArmStats(5, discount, window, resid=True)
        for t in range(400):
            a = int(rng.integers(0, 5))
            st.add(a, float(rng.normal(a, 0.5 + a)), None)
            if t == 200:
                st.reset_arm(2)
        n, s, ss = st.n, st.s, st.ss
        ref = max((ss.sum() - (s * s / np.maximum(n, 1e-300)).sum()) / n.sum(), 1e-6)
        assert math.isclose(pooled_var(st, 1.0, 5), ref, rel_tol=1e-9), (discount, window)
