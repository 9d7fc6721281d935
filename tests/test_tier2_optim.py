"""Tier-2 optimizers: convergence, bounds, determinism, save/load, reject, deadlines."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from daemon.tier2 import NoChange, Reason, load, make_optimizer

KINDS = ["spsa", "es", "cmaes", "pbt"]
D = 10


def sphere(X, xs):
    return ((np.atleast_2d(X) - xs) ** 2).sum(-1)


def run(opt, xs, evals, noise, rng):
    while opt.rounds * opt.batch_size < evals:
        X = opt.ask()
        opt.tell(sphere(X, xs) + rng.normal(0, noise, len(X)))
    return opt


@pytest.mark.parametrize("kind,tol", [("spsa", 0.1), ("es", 1.0), ("cmaes", 2.0), ("pbt", 4.0)])
def test_converges_on_noisy_sphere(kind, tol):
    bounds = np.tile([-5.0, 5.0], (D, 1))
    rng = np.random.default_rng(7)
    xs = rng.uniform(-2, 2, D)
    opt = make_optimizer(kind, bounds, seed=3)
    start = float(sphere(opt.recommend(), xs)[0])
    run(opt, xs, 2000, 1.0, rng)
    err = float(sphere(opt.recommend(), xs)[0])
    assert err < tol < start, (kind, err, start)


def test_spsa_reaches_small_error_with_averaging():
    bounds = np.tile([-5.0, 5.0], (D, 1))
    errs = []
    for s in range(3):
        rng = np.random.default_rng(100 + s)
        xs = rng.uniform(-2, 2, D)
        opt = run(make_optimizer("spsa", bounds, seed=s), xs, 2000, 1.0, rng)
        errs.append(float(sphere(opt.recommend(), xs)[0]))
    assert np.mean(errs) < 0.05, errs


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lo=st.floats(-1e6, 1e6), width=st.floats(1e-3, 1e6),
       corner=st.integers(0, 2))
def test_never_leaves_bounds(kind, seed, lo, width, corner):
    d = 4
    bounds = np.array([[lo, lo + width]] * d)
    # Optimum outside the box (below, above, or at a corner): the search presses on a face.
    target = {0: lo - 10 * width, 1: lo + 10 * width, 2: lo}[corner]
    opt = make_optimizer(kind, bounds, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(40):
        X = opt.ask()
        assert np.all(X >= bounds[:, 0]) and np.all(X <= bounds[:, 1])
        y = np.abs(X - target).sum(-1) * rng.choice([1.0, 1e9, 1e-9]) + rng.normal(0, 1, len(X))
        opt.tell(y)
        r = opt.recommend()
        assert np.all(r >= bounds[:, 0]) and np.all(r <= bounds[:, 1])


def _drive(opt, rng, rounds):
    asks = []
    for _ in range(rounds):
        X = opt.ask()
        asks.append(X.tobytes())
        opt.tell(sphere(X, 0.3) + rng.normal(0, 0.1, len(X)))
    return asks


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_observations_identical(kind):
    bounds = np.tile([0.0, 1.0], (D, 1))
    a = _drive(make_optimizer(kind, bounds, seed=11), np.random.default_rng(1), 30)
    b = _drive(make_optimizer(kind, bounds, seed=11), np.random.default_rng(1), 30)
    c = _drive(make_optimizer(kind, bounds, seed=12), np.random.default_rng(1), 30)
    assert a == b
    assert a != c


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_continues_byte_identically(kind):
    bounds = np.tile([-1.0, 3.0], (D, 1))
    opt = make_optimizer(kind, bounds, seed=5)
    _drive(opt, np.random.default_rng(2), 17)
    blob = opt.save()
    clone = load(blob)
    assert type(clone) is type(opt)
    assert clone.save() == blob
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert _drive(opt, rng_a, 25) == _drive(clone, rng_b, 25)
    assert opt.save() == clone.save()
    assert opt.recommend().tobytes() == clone.recommend().tobytes()


@pytest.mark.parametrize("kind", KINDS)
def test_save_with_pending_round(kind):
    opt = make_optimizer(kind, np.tile([0.0, 1.0], (3, 1)), seed=9)
    X = opt.ask()
    clone = load(opt.save())
    assert clone.ask().tobytes() == X.tobytes()  # the pending round survives
    y = sphere(X, 0.5)
    opt.tell(y)
    clone.tell(y)
    assert opt.ask().tobytes() == clone.ask().tobytes()


def test_spsa_reject_does_not_advance_k():
    opt = make_optimizer("spsa", np.tile([0.0, 1.0], (D, 1)), seed=1)
    _drive(opt, np.random.default_rng(0), 5)
    k, gains, theta = opt.k, opt.gains(), opt.theta.copy()
    opt.ask()
    opt.reject()
    X = opt.ask()
    opt.tell([np.nan, 1.0])  # NaN = not measured: same as reject
    assert opt.k == k and opt.gains() == gains and np.array_equal(opt.theta, theta)
    assert opt.rejected == 2 and opt.pending is None
    X2 = opt.ask()
    assert not np.array_equal(X, X2)  # a fresh perturbation, same c_k
    assert np.allclose(np.abs(X2[0] - X2[1]), 2 * opt.gains()[1])
    opt.tell(sphere(X2, 0.2))
    assert opt.k == k + 1


def test_spsa_points_are_symmetric_and_gains_follow_spall():
    opt = make_optimizer("spsa", np.tile([0.0, 1.0], (4, 1)), seed=1, a=0.2, c=0.1, iterations=100,
                         detector=None)
    for k in range(5):
        a_k, c_k = opt.gains()
        assert a_k == pytest.approx(0.2 / (k + 1 + 10) ** 0.602)
        assert c_k == pytest.approx(0.1 / (k + 1) ** 0.101)
        X = opt.ask()
        assert np.allclose(X.mean(0), np.clip(opt.theta, c_k, 1 - c_k))
        assert set(np.round((X[0] - X[1]) / (2 * c_k), 9)) <= {-1.0, 1.0}
        opt.tell(sphere(X, 0.3))


def test_spsa_switches_to_tracking_on_jump():
    bounds = np.tile([-5.0, 5.0], (D, 1))
    rng = np.random.default_rng(4)
    opt = make_optimizer("spsa", bounds, seed=4)
    run(opt, rng.uniform(-2, 2, D), 600, 1.0, rng)
    assert not opt.tracking
    a_before = opt.gains()[0]
    xs2 = rng.uniform(-2, 2, D) + 2.0
    for _ in range(60):
        X = opt.ask()
        opt.tell(sphere(X, np.clip(xs2, -5, 5)) + rng.normal(0, 1, 2))
    assert opt.tracking and opt.changes >= 1
    assert opt.gains()[0] > a_before  # constant, larger gain to follow the optimum


def test_step_clipping_bounds_each_move():
    opt = make_optimizer("spsa", np.tile([0.0, 1.0], (3, 1)), seed=2, max_step=0.01, detector=None)
    prev = opt.theta.copy()
    for _ in range(20):
        X = opt.ask()
        opt.tell([1e12, -1e12])
        assert np.max(np.abs(opt.theta - prev)) <= 0.01 + 1e-15
        prev = opt.theta.copy()


def test_options_are_validated_with_the_key_name():
    with pytest.raises(ValueError, match="spsa options.*iterations"):
        make_optimizer("spsa", [[0, 1]], seed=1, iterations="many")
    with pytest.raises(ValueError, match="unknown kind"):
        make_optimizer("nope", [[0, 1]], seed=1)
    with pytest.raises(ValueError, match=r"bounds\[1\]"):
        make_optimizer("es", [[0, 1], [2, 2]], seed=1)
    with pytest.raises(ValueError, match="seed"):
        make_optimizer("es", [[0, 1]], seed=-1)
    with pytest.raises(ValueError, match="not a tier2 save"):
        load(b"\xc1garbage")


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_returns_nochange_and_changes_nothing(kind):
    opt = make_optimizer(kind, np.tile([0.0, 1.0], (D, 1)), seed=1)
    before = opt.save()
    nc = opt.ask(deadline=10.0, now=9.99999)  # 10 us left < the ask cost estimate
    assert isinstance(nc, NoChange) and nc.reason is Reason.DEADLINE and "deadline" in nc.detail
    assert opt.save() == before
    X = opt.ask(deadline=10.0, now=lambda: 9.0)
    assert isinstance(X, np.ndarray)
    pending = opt.save()
    nc = opt.tell(sphere(X, 0.5), deadline=1.0, now=1.0)
    assert isinstance(nc, NoChange) and opt.save() == pending  # still pending, retry possible
    assert opt.tell(sphere(X, 0.5), deadline=2.0, now=1.0) is None
    assert opt.rounds == 1


def test_deadline_uses_injected_clock_only_when_given():
    ticks = iter([5.0, 5.0])
    opt = make_optimizer("spsa", [[0, 1]] * 2, seed=1, clock=lambda: next(ticks))
    assert isinstance(opt.ask(deadline=5.00001), NoChange)
    assert isinstance(opt.ask(deadline=6.0), np.ndarray)
    bare = make_optimizer("spsa", [[0, 1]] * 2, seed=1)
    with pytest.raises(ValueError, match="never reads the clock"):
        bare.ask(deadline=1.0)
    assert isinstance(bare.ask(), np.ndarray)  # no deadline: no time needed


def test_cmaes_defers_eigendecomposition_under_a_tight_deadline():
    opt = make_optimizer("cmaes", np.tile([0.0, 1.0], (D, 1)), seed=1, detector=None)
    X = opt.ask()
    B = opt.B.copy()
    # 300 us left: the full boundary (500 us estimate) does not fit, the cheap update (150 us) does.
    assert opt.tell(sphere(X, 0.2), deadline=1.0003, now=1.0) is None
    assert opt.rounds == 1 and np.array_equal(opt.B, B) and not np.allclose(opt.C, np.eye(D))
    X = opt.ask()
    opt.tell(sphere(X, 0.2))
    assert not np.array_equal(opt.B, B)  # caught up at the next boundary


def test_ask_is_idempotent_until_tell():
    opt = make_optimizer("es", [[0, 1]] * 3, seed=1)
    assert opt.ask().tobytes() == opt.ask().tobytes()
    with pytest.raises(ValueError, match="expected 8 values"):
        opt.tell([1.0, 2.0])
    with pytest.raises(RuntimeError, match="no pending round"):
        make_optimizer("spsa", [[0, 1]], seed=1).tell([1.0, 2.0])


def test_es_sigma_decays_when_stationary_and_is_floored():
    opt = make_optimizer("es", np.tile([-5.0, 5.0], (D, 1)), seed=1, sigma0=0.1, sigma_min=0.02, detector=None)
    rng = np.random.default_rng(1)
    run(opt, np.zeros(D), 3000, 0.01, rng)  # the optimum is the start point: nothing to track
    assert opt.sigma == pytest.approx(0.02)


def test_es_sigma_restored_on_detected_change():
    opt = make_optimizer("es", np.tile([-5.0, 5.0], (D, 1)), seed=1, sigma0=0.1, sigma_min=0.01)
    rng = np.random.default_rng(2)
    run(opt, np.zeros(D), 2000, 0.1, rng)
    assert opt.sigma < 0.05
    run(opt, np.full(D, 3.0), 2400, 0.1, rng)  # the optimum jumps (run() counts evaluations in total)
    assert opt.changes >= 1


def test_pbt_explore_moves_are_bounded():
    opt = make_optimizer("pbt", np.tile([0.0, 1.0], (D, 1)), seed=3, interval=1, explore_sigma=1.0,
                         explore_max=0.05)
    rng = np.random.default_rng(3)
    for _ in range(30):
        before = opt.members.copy()
        X = opt.ask()
        opt.tell(rng.random(len(X)))
        # each new member is a copy of some old member moved by at most explore_max per coordinate
        for m in opt.members:
            assert np.min(np.max(np.abs(before - m), axis=1)) <= 0.05 + 1e-12
