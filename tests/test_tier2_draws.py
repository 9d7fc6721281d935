"""Block-drawn randomness (core.Draws): exact distributions, determinism, continuation after save/load."""
import math

import numpy as np
import pytest

from daemon.tier2 import load, make_bandit
from daemon.tier2.core import Draws


@pytest.mark.parametrize("a", [0.05, 0.4, 1.0, 2.5, 40.0, 1e4])
def test_gammas_have_the_gamma_mean_and_variance(a):
    rng, dr = np.random.Generator(np.random.PCG64(7)), Draws()
    x = np.array([v for _ in range(2000) for v in dr.gammas(rng, [a] * 10)])
    # Gamma(a, 1): mean a, variance a, excess kurtosis 6/a; 20,000 draws: the sample mean and variance
    # are within 5 standard errors.
    assert abs(x.mean() - a) < 5 * math.sqrt(a / x.size), (a, x.mean())
    assert abs(x.var() / a - 1.0) < 5 * math.sqrt((6 / a + 2) / x.size), (a, x.var())
    assert (x >= 0).all()


@pytest.mark.parametrize("a, b", [(1.0, 1.0), (3.0, 40.0), (0.5, 0.7), (900.0, 2.0)])
def test_betas_have_the_beta_mean_and_variance(a, b):
    rng, dr = np.random.Generator(np.random.PCG64(8)), Draws()
    x = np.array([v for _ in range(2000) for v in dr.betas(rng, [0.0] * 10, [0.0] * 10, 1.0, a, b)])
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    kurt = 6 * ((a - b) ** 2 * (a + b + 1) - a * b * (a + b + 2)) / (a * b * (a + b + 2) * (a + b + 3))
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / x.size), (a, b, x.mean())
    assert abs(x.var() / var - 1.0) < 5 * math.sqrt((kurt + 2) / x.size), (a, b, x.var())
    assert ((0 <= x) & (x <= 1)).all()


def test_fast_and_slow_gamma_paths_are_one_stream():
    # gammas() takes the squeeze-accepted draws inline and hands everything else to _gamma_slow from the
    # same position: drawing shape by shape through _gamma_slow alone must give the same numbers. One
    # block holds every number either side takes, so both read the same stream.
    shapes = [0.3, 1.0, 1.7, 5.0, 0.9, 60.0] * 30
    r1, r2 = np.random.Generator(np.random.PCG64(3)), np.random.Generator(np.random.PCG64(3))
    d1, d2 = Draws(block=4096), Draws(block=4096)
    fast = d1.gammas(r1, shapes)
    slow = [d2._gamma_slow(r2, a) for a in shapes]
    assert fast == slow and d1.nb.size == d2.nb.size == 4096


def test_block_boundaries():
    # A request that does not fit in what is left draws a fresh block of max(block, k + SLACK).
    rng = np.random.Generator(np.random.PCG64(1))
    dr = Draws(block=16)
    sl = Draws.SLACK
    first = dr.normals(rng, 10)  # block of 10 + slack
    rest = dr.normals(rng, 10)  # fits in the slack: same block
    third = dr.normals(rng, 10)  # does not fit in what is left: a fresh block, no straddling
    assert len(first) == len(rest) == len(third) == 10 and dr.ni == 10
    big = dr.normals(rng, 40)  # larger than the block: 40 + slack
    u = dr.uniforms(rng, 5)
    ref = np.random.Generator(np.random.PCG64(1))
    blocks = [ref.standard_normal(max(16, 10 + sl)), ref.standard_normal(max(16, 10 + sl)),
              ref.standard_normal(40 + sl), ref.random(max(16, 5 + sl))]
    if 10 + 10 <= 10 + sl:
        assert first == blocks[0][:10].tolist() and rest == blocks[0][10:20].tolist()
        assert third == blocks[1][:10].tolist()
    assert big == blocks[2][:40].tolist() and u == blocks[3][:5].tolist()


def test_per_request_blocks_draw_once_per_request_unless_the_slack_runs_out():
    # block = 0: one Generator call per stream per request (nothing drawn ahead for a later step),
    # unless squeeze rejections run past the slack.
    rng, dr = np.random.Generator(np.random.PCG64(11)), Draws(block=0)
    calls = []
    real_n, real_u = dr._refill_n, dr._refill_u
    dr._refill_n = lambda r, k: calls.append("n") or real_n(r, k)
    dr._refill_u = lambda r, k: calls.append("u") or real_u(r, k)
    for _ in range(200):
        calls.clear()
        dr.betas(rng, [3.0] * 10, [9.0] * 10, 1.0, 1.0, 1.0)
        assert calls.count("n") <= 2 and calls.count("u") <= 2
        assert calls[:2] == ["n", "u"]  # the request's own block comes first, whatever is left over


def test_thompson_save_mid_block_continues_and_saves_identically():
    b = make_bandit("thompson", 10, seed=5, discount=0.99)
    rng = np.random.default_rng(0)
    for _ in range(37):  # 37 steps x 20 gammas: mid-block
        a = b.select()
        b.update(a, float(rng.random() < 0.5))
    assert 0 < b.draws.ni < b.draws.nb.size
    c = load(b.save())
    assert c.save() == b.save()
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(300):
        a1, a2 = b.select(), c.select()
        assert a1 == a2
        b.update(a1, float(r1.random() < 0.5))
        c.update(a2, float(r2.random() < 0.5))
    assert b.save() == c.save()


def test_a_blob_of_another_format_version_is_refused():
    import msgspec

    blob = make_bandit("thompson", 3, seed=1).save()
    doc = msgspec.msgpack.decode(blob)
    doc["version"] = 1  # arm statistics as one (5, k) array, no Draws: not this layout
    with pytest.raises(ValueError, match="blob version 1, this build reads 2"):
        load(msgspec.msgpack.encode(doc))
