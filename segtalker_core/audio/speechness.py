"""How speech-like each 10 ms frame is (0..1), and the loudness references the mouth is scaled by.

A frame counts as speech when, within about +-250 ms of it,

* the sound is mostly *periodic* (voiced): white noise, hiss and breath are not; and
* the *spectral shape moves* (median level-free spectral change over 40 ms above ~3 dB):
  formants glide all the time in speech, while a held note or chord keeps its shape and only
  changes level, and music's note changes are brief spikes the median ignores.

Both conditions are soft ramps, multiplied, widened by 200 ms (so a long vowel inside speech stays
speech) and smoothed. It is a heuristic, tuned on synthetic speech (espeak-ng), white noise and
synthetic chords; singing and some music will pass it, in which case the mouth moves with it.
"""
from __future__ import annotations

import numpy as np

from .features import FRAME_RATE, AcousticFeatures

REF_WINDOW_S = 5.0  # loudness reference follows the recording's level over +-5 s
ACTIVE_RANGE_DB = 45.0  # frames this far below the reference are silence
ABS_FLOOR_DB = -70.0  # below this (dBFS) is silence whatever the reference
_STAT_HALF = 25  # +-250 ms
_FLUX_LO, _FLUX_HI = 2.5, 4.5
_VOICE_LO, _VOICE_HI = 0.30, 0.55


def running_percentile(
    x: np.ndarray, mask: np.ndarray, q: float, half_window: int, step: int = 50, fallback: float = np.nan
) -> np.ndarray:
    """``[F]`` q-th percentile of ``x[mask]`` in a +-``half_window`` frame window.

    Evaluated every ``step`` frames and linearly interpolated (a 10-minute file is 60 000 frames);
    windows without any masked frame take the nearest defined value, or ``fallback`` if none is.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, np.float32)
    grid = np.arange(0, n, step)
    if grid[-1] != n - 1:
        grid = np.append(grid, n - 1)
    vals = np.full(len(grid), np.nan)
    for j, c in enumerate(grid):
        a, b = max(0, c - half_window), min(n, c + half_window + 1)
        sel = x[a:b][mask[a:b]]
        if sel.size:
            vals[j] = np.percentile(sel, q)
    ok = ~np.isnan(vals)
    if not ok.any():
        return np.full(n, fallback, np.float32)
    vals = np.interp(grid, grid[ok], vals[ok])
    return np.interp(np.arange(n), grid, vals).astype(np.float32)


def level_reference(level_db: np.ndarray) -> np.ndarray:
    """``[F]`` dB of the loud parts around each frame (95th percentile over +-5 s)."""
    half = int(REF_WINDOW_S * FRAME_RATE)
    audible = level_db > ABS_FLOOR_DB
    return running_percentile(level_db, audible, 95.0, half, fallback=ABS_FLOOR_DB)


def active_mask(level_db: np.ndarray, reference_db: np.ndarray) -> np.ndarray:
    """``[F]`` bool: frames loud enough to be sound rather than silence."""
    return (level_db > reference_db - ACTIVE_RANGE_DB) & (level_db > ABS_FLOOR_DB)


def speech_likelihood(feats: AcousticFeatures, active: np.ndarray) -> np.ndarray:
    """``[F]`` float32 0..1 (see module doc)."""
    n = len(feats)
    if n == 0 or not active.any():
        return np.zeros(n, np.float32)
    flux_med = _windowed_nanstat(feats.flux, active, np.nanmedian)
    voiced = _windowed_nanstat(feats.voicing, active, np.nanmean)
    score = _ramp(flux_med, _FLUX_LO, _FLUX_HI) * _ramp(voiced, _VOICE_LO, _VOICE_HI)
    score = np.nan_to_num(score, nan=0.0)
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    widened = maximum_filter1d(score, 41, mode="nearest")
    return np.clip(uniform_filter1d(widened, 11, mode="nearest"), 0.0, 1.0).astype(np.float32)


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _windowed_nanstat(x: np.ndarray, mask: np.ndarray, stat, half: int = _STAT_HALF) -> np.ndarray:
    """``stat`` over masked frames in +-``half`` frames, in blocks so memory stays bounded."""
    n = len(x)
    vals = np.where(mask, x, np.nan).astype(np.float32)
    padded = np.pad(vals, half, constant_values=np.nan)
    out = np.full(n, np.nan, np.float32)
    for a in range(0, n, 4096):
        b = min(n, a + 4096)
        win = np.lib.stride_tricks.sliding_window_view(padded[a : b + 2 * half], 2 * half + 1)
        has = ~np.isnan(win).all(axis=1)
        if has.any():
            out[a:b][has] = stat(win[has], axis=1)
    return out
