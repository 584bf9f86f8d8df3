"""Dominance-weighted coarticulation: per-frame mouth targets -> smooth, reachable trajectories.

Every frame ``s`` pulls the mouth toward its target ``x_s`` with weight ``w_s`` (its dominance),
and the pull fades with distance as ``exp(-|t - s| / tau)``::

    p(t) = sum_s w_s K(t - s) x_s / sum_s w_s K(t - s)

(Cohen & Massaro's dominance model applied per frame). A plain low-pass would round a 60 ms /p/
off to a half-closed mouth; here the pressed lips' dominance (20x) wins over the neighbouring
vowels, so closures are reached, while weak consonants borrow the vowels' shape.
The two-sided exponential is run as a forward and a backward first-order recursion: O(F).
"""
from __future__ import annotations

import numpy as np

# Per column (jaw, width, round, closure, teeth), seconds. Rounding spreads widest (lips round
# well before an /u/), the jaw and closure follow the syllables closely.
TAU_S = np.array([0.025, 0.050, 0.060, 0.010, 0.030], np.float32)


def coarticulate(targets: np.ndarray, dominance: np.ndarray, frame_rate: float, tau_s: np.ndarray = TAU_S) -> np.ndarray:
    """``targets``, ``dominance``: ``[F, P]`` -> ``[F, P]`` float32 smoothed trajectories."""
    assert targets.shape == dominance.shape and targets.ndim == 2, (targets.shape, dominance.shape)
    assert tau_s.shape == (targets.shape[1],), tau_s.shape
    if len(targets) == 0:
        return targets.astype(np.float32)
    w = np.maximum(dominance.astype(np.float64), 1e-6)
    a = np.exp(-1.0 / (frame_rate * tau_s.astype(np.float64)))  # [P]
    # Numerator and denominator in one pass: one Python step per frame for both.
    p = targets.shape[1]
    both = _two_sided(np.concatenate([w * targets, w], axis=1), np.concatenate([a, a]))
    return (both[:, :p] / both[:, p:]).astype(np.float32)


def _two_sided(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``sum_s a^|t-s| x_s`` along axis 0 for each column, ``a`` per column: ``x`` ``[F, P]``
    float64, ``a`` ``[P]`` -> ``[F, P]`` float64."""
    assert x.ndim == 2 and a.shape == (x.shape[1],), (x.shape, a.shape)
    forward = _decaying_sum(x, a)
    backward = _decaying_sum(x[::-1], a)[::-1]
    return forward + backward - x  # both sums hold x_t itself once


def _decaying_sum(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``y_t = x_t + a y_{t-1}`` (``y_0 = x_0``) down axis 0, every column at once.

    The first-order recursion ``scipy.signal.lfilter([1], [1, -a], x)`` computes, written out
    (the same operations in the same order, so the same floats): importing ``scipy.signal``
    cost a third of a second of every cold start. A Python step per frame is ~1 us per column
    set, 0.1 s for an hour of audio at 25 fps, against seconds of rendering.
    """
    out = np.empty_like(x)
    if len(x) == 0:
        return out
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = x[t] + a * out[t - 1]
    return out
