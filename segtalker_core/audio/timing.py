"""Video-frame timing in exact rational arithmetic.

``ceil(d * fps)`` in floats gives an extra frame for exact multiples (``0.4 * 25`` is fine, but
``1001/30000 * 29.97`` style products are not), so durations are ``Fraction`` and fps values are
turned into the fraction they were meant to be (29.97 -> 2997/100, 30000/1001 stays as is).
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Union

import numpy as np

MEL_STEPS_PER_SECOND = 80  # 16000 Hz / hop 200

FpsLike = Union[int, float, Fraction, str]


def as_fraction(fps: FpsLike, name: str = "fps") -> Fraction:
    """A positive frame rate as an exact fraction.

    Floats are snapped to the simplest fraction within float precision, so ``29.97`` means
    ``2997/100`` and ``30000/1001`` (a float) means ``30000/1001``.
    """
    if isinstance(fps, Fraction):
        f = fps
    elif isinstance(fps, (int, np.integer)):
        f = Fraction(int(fps))
    elif isinstance(fps, str):
        try:
            f = Fraction(fps.strip())
        except ValueError:
            raise ValueError(f"{name} must be a number such as 25 or 29.97, got {fps!r}.") from None
    else:
        try:
            x = float(fps)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number such as 25 or 29.97, got {fps!r}.") from None
        if not math.isfinite(x):
            raise ValueError(f"{name} must be finite, got {fps!r}.")
        # Any other fraction with denominator <= 1e6 is >= 1e-12 away; float error is ~1e-14.
        f = Fraction(x).limit_denominator(1_000_000)
    if f <= 0:
        raise ValueError(f"{name} must be positive, got {fps!r}.")
    return f


def frame_count(duration: Fraction | float, fps: FpsLike) -> int:
    """Video frames needed to cover ``duration`` seconds: ``ceil(duration * fps)``, at least 1.

    Give the duration as ``Fraction(samples, rate)`` to be exact; a float is snapped like an fps
    (2.2 means 11/5, so 2.2 s at 25 fps is 55 frames, not 56).
    """
    if isinstance(duration, Fraction):
        d = duration
    else:
        x = float(duration)
        if not math.isfinite(x):
            raise ValueError(f"duration must be finite, got {duration!r}.")
        d = Fraction(x).limit_denominator(1_000_000)
    if d < 0:
        raise ValueError(f"duration must not be negative, got {float(d)} s.")
    return max(1, math.ceil(d * as_fraction(fps)))


def frame_times(n_frames: int, fps: FpsLike) -> np.ndarray:
    """``[n_frames]`` float64 start time of each video frame in seconds."""
    f = as_fraction(fps)
    return np.arange(n_frames, dtype=np.float64) * (f.denominator / f.numerator)


def mel_window_starts(
    start: int, stop: int, fps: FpsLike, align: str = "start", window: int = 16
) -> np.ndarray:
    """``[stop - start]`` int64 first mel step of each frame's window.

    ``align="start"``: ``int(80 * i / fps)``, Wav2Lip's inference convention (the window begins at
    the frame). ``align="centre"``: the window's middle is the frame's middle, as the TSG and
    Seg-SyncNet are trained. Starts may be negative or run past the end: the caller pads.
    """
    f = as_fraction(fps)
    i = np.arange(start, stop, dtype=np.int64)
    num = MEL_STEPS_PER_SECOND * f.denominator
    if align == "start":
        return (i * num) // f.numerator
    if align == "centre":
        # floor(80 * (i + 1/2) / fps) - window / 2, kept in integers.
        return ((2 * i + 1) * num) // (2 * f.numerator) - window // 2
    raise ValueError(f"align must be 'start' or 'centre', got {align!r}.")
