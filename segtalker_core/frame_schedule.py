"""Which input frame stands behind each output frame when video and audio lengths differ."""
from __future__ import annotations

import numpy as np

MODES = ("loop", "pingpong")


def source_indices(n_input: int, n_output: int, mode: str = "pingpong") -> np.ndarray:
    """``[n_output]`` int64 indices into ``n_input`` frames.

    A longer input is cut; a shorter one repeats (``loop``: 0..n-1, 0..n-1, ...) or plays back and
    forth without doubling the turning frames (``pingpong``: 0..n-1, n-2..1, 0..). One input frame
    (a portrait) is repeated.
    """
    if mode not in MODES:
        raise ValueError(f"video_mode must be one of {MODES}, got {mode!r}")
    if n_input < 1:
        raise ValueError("the input has no frames")
    t = np.arange(n_output, dtype=np.int64)
    if n_input == 1:
        return np.zeros(n_output, dtype=np.int64)
    if n_output <= n_input or mode == "loop":
        return t % n_input
    period = 2 * n_input - 2
    phase = t % period
    return np.where(phase < n_input, phase, period - phase)
