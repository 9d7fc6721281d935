"""Change detectors shared by the tuners and the bandits.

Both detectors watch one scalar stream and answer ``update(x) -> bool`` (True: a change was detected at
this sample; the detector has already reset itself). They are pure and own no RNG.
"""
from __future__ import annotations

import math

import numpy as np

from .core import Saveable, register


@register()
class PageHinkley(Saveable):
    """Page-Hinkley / CUSUM test for a shift of the mean, in units of the stream's own spread.

    The reference level is an exponentially forgotten mean (rate ``alpha``) so that a slow trend (an
    optimizer making progress) is absorbed while a step is not. Deviations are divided by a running mean
    absolute deviation (x1.25 ~ one standard deviation for Gaussian noise), so ``delta`` (allowed drift per
    sample) and ``threshold`` (alarm level) are in standard deviations and the detector is scale-free.

    direction: +1 detects increases only, -1 decreases only, 0 both. ``min_samples`` observations are
    taken after every reset before an alarm can fire (they calibrate level and spread).
    """

    def __init__(self, delta: float = 0.5, threshold: float = 8.0, alpha: float = 0.05,
                 direction: int = 0, min_samples: int = 10, min_scale: float = 1e-12):
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"PageHinkley.alpha: expected 0 < alpha <= 1, got {alpha}")
        if direction not in (-1, 0, 1):
            raise ValueError(f"PageHinkley.direction: expected -1, 0 or +1, got {direction}")
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.direction = int(direction)
        self.min_samples = int(min_samples)
        self.min_scale = float(min_scale)
        self.alarms = 0
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.mad = 0.0
        self.g_up = 0.0
        self.g_dn = 0.0

    def update(self, x: float) -> bool:
        x = float(x)
        if not math.isfinite(x):
            return False
        self.n += 1
        if self.n <= self.min_samples:
            # Warm-up: plain running mean and MAD so the reference is not biased toward the first sample.
            w = 1.0 / self.n
            self.mad += w * (abs(x - self.mean) - self.mad) if self.n > 1 else 0.0
            self.mean += w * (x - self.mean)
            return False
        # Conditional expressions instead of max(): this runs once per optimizer round (same values).
        mean, mad = self.mean, self.mad
        scale = 1.25 * mad
        if scale < self.min_scale:
            scale = self.min_scale
        dev = x - mean
        z = dev / scale
        if self.direction >= 0:
            g = self.g_up + z - self.delta
            self.g_up = g if g > 0.0 else 0.0
        if self.direction <= 0:
            g = self.g_dn - z - self.delta
            self.g_dn = g if g > 0.0 else 0.0
        if self.g_up > self.threshold or self.g_dn > self.threshold:
            self.alarms += 1
            self.reset()
            return True
        a = self.alpha
        self.mad = mad + a * ((dev if dev >= 0.0 else -dev) - mad)
        self.mean = mean + a * dev
        return False


@register()
class GLR(Saveable):
    """Gaussian generalized-likelihood-ratio test for one mean shift inside a sliding window.

    Statistic over the last ``window`` samples: max over split points k of
    k (n-k) / n * (mean_left - mean_right)^2 / (2 sigma^2). sigma is ``sigma`` if given, else estimated from
    successive differences in the window (robust to the shift itself). Alarm when the statistic exceeds
    ``threshold`` (a log-likelihood ratio; ~ log(window / false-alarm probability)). O(window) per update.
    """

    def __init__(self, window: int = 64, threshold: float = 12.0, sigma: float | None = None,
                 min_samples: int = 16, min_split: int = 4):
        if window < 2 * min_split or min_split < 1:
            raise ValueError(f"GLR.window: expected >= 2*min_split ({2 * min_split}), got {window}")
        self.window = int(window)
        self.threshold = float(threshold)
        self.sigma = None if sigma is None else float(sigma)
        self.min_samples = max(int(min_samples), 2 * int(min_split))
        self.min_split = int(min_split)
        self.alarms = 0
        self.buf = np.zeros(self.window)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.pos = 0

    def statistic(self) -> float:
        n = min(self.n, self.window)
        if n < self.min_samples:
            return 0.0
        # Oldest first.
        x = np.roll(self.buf, -self.pos)[-n:] if self.n >= self.window else self.buf[:n]
        if self.sigma is not None:
            s2 = self.sigma * self.sigma
        else:
            d = np.diff(x)
            s2 = max(float(np.mean(d * d)) / 2.0, 1e-24)
        c = np.cumsum(x)
        k = np.arange(self.min_split, n - self.min_split + 1)
        left = c[k - 1] / k
        right = (c[-1] - c[k - 1]) / (n - k)
        stat = k * (n - k) / n * (left - right) ** 2 / (2.0 * s2)
        return float(stat.max())

    def update(self, x: float) -> bool:
        x = float(x)
        if not math.isfinite(x):
            return False
        self.buf[self.pos] = x
        self.pos = (self.pos + 1) % self.window
        self.n += 1
        if self.statistic() > self.threshold:
            self.alarms += 1
            self.reset()
            return True
        return False


def make_detector(spec, **defaults):
    """None -> None; "ph"/"glr" -> a detector with ``defaults``; a dict {"kind": ..., **options} too."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, str):
        kind, opts = spec, {}
    elif isinstance(spec, dict):
        opts = dict(spec)
        kind = opts.pop("kind", "ph")
    else:
        raise ValueError(f"detector: expected None, 'ph', 'glr' or a dict with 'kind', got {spec!r}")
    opts = {**defaults, **opts} if kind == "ph" else opts
    if kind == "ph":
        return PageHinkley(**opts)
    if kind == "glr":
        return GLR(**opts)
    raise ValueError(f"detector.kind: expected 'ph' or 'glr', got {kind!r}")
