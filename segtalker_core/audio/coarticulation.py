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
    num = _two_sided(w * targets, a)
    den = _two_sided(w, a)
    return (num / den).astype(np.float32)


def _two_sided(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``sum_s a^|t-s| x_s`` along axis 0 for each column, ``a`` per column."""
    import scipy.signal

    out = np.empty_like(x)
    for j in range(x.shape[1]):
        b, den = [1.0], [1.0, -a[j]]
        fwd = scipy.signal.lfilter(b, den, x[:, j])
        bwd = scipy.signal.lfilter(b, den, x[::-1, j])[::-1]
        out[:, j] = fwd + bwd - x[:, j]
    return out
