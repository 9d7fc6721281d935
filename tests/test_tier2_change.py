"""Change detectors: detect a step quickly, stay quiet on stationary noise and slow progress."""
import numpy as np
import pytest

from daemon.tier2 import GLR, PageHinkley, load


@pytest.mark.parametrize("make", [lambda: PageHinkley(), lambda: GLR()])
def test_detects_a_step_and_not_noise(make):
    rng = np.random.default_rng(0)
    det = make()
    alarms = [det.update(x) for x in rng.normal(5.0, 1.0, 2000)]
    assert not any(alarms)
    delay = next(i for i, x in enumerate(rng.normal(8.0, 1.0, 200)) if det.update(x))
    assert delay < 40


def test_page_hinkley_direction_and_trend():
    rng = np.random.default_rng(1)
    up = PageHinkley(direction=1)
    # A decreasing level (an optimizer making progress) must not alarm an increase detector.
    assert not any(up.update(x) for x in 100 * np.exp(-np.arange(500) / 100) + rng.normal(0, 1, 500))
    assert not any(up.update(x) for x in rng.normal(0.0, 1.0, 50) - 10)
    both = PageHinkley(direction=0)
    for x in rng.normal(0, 1, 100):
        both.update(x)
    assert any(both.update(x) for x in rng.normal(-5, 1, 50))


def test_detectors_are_saveable_and_scale_free():
    rng = np.random.default_rng(2)
    a, b = PageHinkley(), PageHinkley()
    xs = rng.normal(0, 1, 300)
    ra = [a.update(x) for x in xs]
    rb = [b.update(1e6 * x) for x in xs]  # same stream in other units
    assert ra == rb
    c = load(a.save())
    ys = rng.normal(3, 1, 100)
    assert [a.update(y) for y in ys] == [c.update(y) for y in ys]
    assert any(c.update(y) for y in rng.normal(10, 1, 20)) or c.alarms >= 1
