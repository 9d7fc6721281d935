"""Tier-2 bandits: find the best arm, drift recovery, SLA-first selection, determinism, save/load."""
import numpy as np
import pytest

from daemon.tier2 import NoChange, load, make_bandit

K = 10
SIMPLE = ["thompson", "gaussian_thompson", "ucb", "klucb"]


def bernoulli_run(b, means, steps, rng, feasible_rate=None):
    picks = np.zeros(len(means), dtype=int)
    for _ in range(steps):
        a = b.select()
        picks[a] += 1
        r = float(rng.random() < means[a])
        feas = None if feasible_rate is None else bool(rng.random() < feasible_rate[a])
        b.update(a, r, feasible=feas)
    return picks


@pytest.mark.parametrize("kind", SIMPLE + ["lexicographic"])
def test_finds_the_best_arm(kind):
    # Sampling bandits sometimes sit behind the second-best arm (0.64 vs 0.70) for the whole 3,000
    # steps: 1 seed in 40 for Beta Thompson and for the lexicographic selector, with any Draws block
    # size. So: the best arm is found on at least two of three seeds.
    means = np.linspace(0.2, 0.7, K)
    found = []
    for seed in (2, 3, 4):
        b = make_bandit(kind, K, seed=seed)
        picks = bernoulli_run(b, means, 3000, np.random.default_rng(seed - 1),
                              feasible_rate=np.ones(K) if kind == "lexicographic" else None)
        found.append(bool(np.argmax(picks) == K - 1 and picks[-1] > 0.4 * 3000))
    assert sum(found) >= 2, found


@pytest.mark.parametrize("kind", ["linucb", "lints"])
def test_linear_bandits_learn_the_context_dependent_best_arm(kind):
    rng = np.random.default_rng(3)
    d, k = 4, 3
    theta = np.array([[1.0, 0.0, 0.0, 0.2], [0.0, 1.0, 0.0, 0.2], [0.0, 0.0, 1.0, 0.2]])
    b = make_bandit(kind, k, seed=4, dim=d, alpha=0.5)
    correct = []
    for t in range(1500):
        x = np.zeros(d)
        x[rng.integers(0, 3)] = 1.0
        x[3] = 1.0
        a = b.select(context=x)
        correct.append(a == int(np.argmax(theta @ x)))
        b.update(a, float(theta[a] @ x + rng.normal(0, 0.1)), context=x)
    assert np.mean(correct[-500:]) > 0.9
    assert np.argmax(b.predict(np.array([0, 1, 0, 1.0]))) == 1


@pytest.mark.parametrize("kind", ["linucb", "lints"])
def test_discounted_linear_bandit_follows_a_swap(kind):
    rng = np.random.default_rng(5)
    theta = np.array([[1.0, 0.0], [0.5, 0.0]])
    b = make_bandit(kind, 2, seed=1, dim=2, alpha=1.0, discount=0.98)
    x = np.array([1.0, 0.0])
    for t in range(1200):
        if t == 600:
            theta = theta[::-1].copy()
        a = b.select(context=x)
        b.update(a, float(theta[a] @ x + rng.normal(0, 0.05)), context=x)
    assert [b.select(context=x) for _ in range(20)].count(1) >= 18


def test_lexicographic_respects_the_sla():
    rng = np.random.default_rng(6)
    quality = np.array([0.9, 0.85, 0.8, 0.5, 0.6, 0.3])
    feas = np.array([0.5, 0.6, 0.99, 0.99, 0.99, 0.99])  # the two best are infeasible at rate 0.9
    lex = make_bandit("lexicographic", len(quality), seed=7, feasible_rate=0.9)
    plain = make_bandit("gaussian_thompson", len(quality), seed=7)
    picks_lex, picks_plain = np.zeros(6), np.zeros(6)
    for _ in range(3000):
        for b, picks in ((lex, picks_lex), (plain, picks_plain)):
            a = b.select()
            picks[a] += 1
            b.update(a, quality[a] + rng.normal(0, 0.1), feasible=bool(rng.random() < feas[a]))
    assert picks_lex[:2].sum() / 3000 < 0.05  # few plays of infeasible variants
    assert np.argmax(picks_lex) == 2  # best among the feasible
    assert picks_plain[:2].sum() / 3000 > 0.5  # ignoring the SLA picks the infeasible ones


def test_lexicographic_falls_back_to_most_likely_feasible():
    b = make_bandit("lexicographic", 3, seed=1, feasible_rate=0.95)
    # Feasible in 50%, 80% and 0% of 30 plays: no variant can plausibly meet a 95% SLA.
    for i in range(30):
        for a, rate in ((0, 0.5), (1, 0.8), (2, 0.0)):
            b.update(a, 1.0 - a * 0.1, feasible=i < rate * 30)
    picks = [b.select() for _ in range(50)]
    assert picks.count(1) >= 48  # highest posterior feasibility, although arm 0 has better quality
    assert b.fallbacks >= 48


@pytest.mark.parametrize("opts", [{"discount": 0.99}, {"window": 300}, {"detector": "ph"}])
def test_discounting_recovers_after_a_change(opts):
    # Whether one run re-discovers the improved arm depends on its random stream (the detector only
    # resets arms that are played), so the claim is checked over 8 seeds: most recover, and on average
    # far better than plain Thompson sampling does.
    means = np.array([0.8, 0.5, 0.2])
    ours, plain_picks = [], []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        b = make_bandit("thompson", 3, seed=seed, **opts)
        bernoulli_run(b, means, 1500, rng)
        ours.append(bernoulli_run(b, means[::-1].copy(), 1500, rng)[2])
        plain = make_bandit("thompson", 3, seed=seed)
        bernoulli_run(plain, means, 1500, rng)
        plain_picks.append(bernoulli_run(plain, means[::-1].copy(), 1500, rng)[2])
    assert sum(p > 0.6 * 1500 for p in ours) >= 6, ours
    assert np.mean(plain_picks) < np.mean(ours), (plain_picks, ours)


def test_change_detector_restarts_only_the_affected_arm():
    b = make_bandit("gaussian_thompson", 2, seed=1, detector="ph")
    for _ in range(100):
        b.update(0, 1.0 + 0.01 * np.sin(_))
        b.update(1, 0.5 + 0.01 * np.cos(_))
    for _ in range(30):
        b.update(0, -3.0)
    assert b.restarts[0] >= 1 and b.restarts[1] == 0
    assert b.stats.n[1] == 100


def test_tournament_picks_the_best_candidate_and_restarts_on_change():
    rng = np.random.default_rng(10)
    scores = np.array([0.1, 0.5, 0.9, 0.3, 0.7])
    b = make_bandit("tournament", 5, seed=1, evals_per_round=6)
    for _ in range(200):
        a = b.select()
        b.update(a, scores[a] + rng.normal(0, 0.05))
    assert b.winner == 2 and b.select() == 2
    for _ in range(100):
        a = b.select()
        b.update(a, (scores[a] if a != 2 else -1.0) + rng.normal(0, 0.05))
    assert b.tournaments >= 2 and b.winner == 4


@pytest.mark.parametrize("kind", SIMPLE + ["lexicographic", "tournament", "linucb", "lints", "linucb_plain",
                                  "lints_plain", "thompson_window"])
def test_save_load_continues_byte_identically(kind):
    lin = kind.startswith("lin")
    plain = kind.endswith("_plain")
    opts = {"dim": 3} if plain else {"dim": 3, "discount": 0.99} if lin else (
        {"window": 50} if kind == "thompson_window" else {"discount": 0.995} if kind != "tournament" else {})
    kind = kind.replace("_plain", "").replace("_window", "")
    b = make_bandit(kind, 5, seed=3, **opts)

    def drive(bb, rng, n):
        out = []
        for _ in range(n):
            x = rng.random(3) if lin else None
            a = bb.select(context=x)
            out.append(a)
            bb.update(a, float(rng.random() < 0.1 * (a + 1)), context=x, feasible=bool(rng.random() < 0.9))
        return out

    drive(b, np.random.default_rng(1), 60)
    blob = b.save()
    c = load(blob)
    assert c.save() == blob
    assert drive(b, np.random.default_rng(2), 80) == drive(c, np.random.default_rng(2), 80)
    assert b.save() == c.save()


def test_same_seed_same_rewards_identical_and_seed_matters():
    def seq(seed):
        b = make_bandit("thompson", K, seed=seed)
        return bernoulli_run(b, np.linspace(0.4, 0.6, K), 300, np.random.default_rng(0)).tolist()

    assert seq(1) == seq(1)
    assert seq(1) != seq(2)


def test_select_deadline_and_validation():
    b = make_bandit("ucb", 3, seed=1)
    nc = b.select(deadline=1.0, now=1.0)
    assert isinstance(nc, NoChange)
    assert b.select(deadline=1.0, now=0.5) == 0
    assert isinstance(b.update(0, 1.0, deadline=1.0, now=1.0), NoChange) and b.t == 0
    with pytest.raises(ValueError, match=r"arm must be in \[0, 3\)"):
        b.update(3, 1.0)
    with pytest.raises(ValueError, match="reward must be in"):
        make_bandit("thompson", 2, seed=1).update(0, 2.0)
    with pytest.raises(ValueError, match="context vector of length 4"):
        make_bandit("linucb", 2, seed=1, dim=4).select(context=[1.0, 2.0])
    with pytest.raises(ValueError, match="discount"):
        make_bandit("thompson", 2, seed=1, discount=1.5)
    with pytest.raises(ValueError, match="unknown kind"):
        make_bandit("epsilon", 2, seed=1)

