"""Temporal stability: how much the parts of a frame that should stay put change from frame to
frame, and single frames that flicker.

A flicker frame differs from *both* its neighbours (a brightness pop, a crop that jumps for one
frame); a cut or a real motion step differs from one neighbour only. So a frame's flicker score
is the smaller of its mean absolute differences to the previous and to the next frame, over the
static region (0..255 levels); a frame is listed when its score stands out of the clip's own
(median + :data:`SPIKE_MADS` median absolute deviations, at least :data:`SPIKE_FLOOR` levels)
and, with a reference, exceeds twice the reference's score at that time plus one level.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SPIKE_FLOOR = 3.0
SPIKE_MADS = 8.0


@dataclass(frozen=True)
class FlickerFrame:
    frame: int  # generated frame index
    score: float  # levels (0..255), mean absolute change to its nearer neighbour
    reference_score: float | None


def masked_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> float:
    """Mean absolute difference of two uint8 frames over ``mask [H, W]`` (all when None)."""
    diff = cv2.absdiff(a, b)
    if mask is None:
        return float(diff.mean())
    if not mask.any():
        return float("nan")
    return float(np.mean(cv2.mean(diff, mask=mask.view(np.uint8))[:diff.shape[2] if diff.ndim == 3 else 1]))


def frame_changes(frames: np.ndarray, masks: list[np.ndarray | None]) -> np.ndarray:
    """``[N - 1]``: change from frame ``i`` to ``i + 1`` over ``masks[i + 1]``."""
    return np.array([masked_change(frames[i], frames[i + 1], masks[i + 1])
                     for i in range(len(frames) - 1)], np.float64)


def flicker_scores(changes: np.ndarray) -> np.ndarray:
    """``[N]`` from :func:`frame_changes` ``[N - 1]``: min(change in, change out); 0 at the ends
    (a first or last frame has one neighbour, it cannot be told from a cut)."""
    n = len(changes) + 1
    scores = np.zeros(n, np.float64)
    if n >= 3:
        scores[1:-1] = np.minimum(changes[:-1], changes[1:])
    return scores


def flicker_frames(scores: np.ndarray, reference_scores: np.ndarray | None = None) -> list[FlickerFrame]:
    """The frames whose flicker score is a spike (see the module docstring)."""
    valid = np.isfinite(scores)
    if not valid.any():
        return []
    median = float(np.median(scores[valid]))
    mad = float(np.median(np.abs(scores[valid] - median)))
    threshold = max(SPIKE_FLOOR, median + SPIKE_MADS * mad)
    out = []
    for i in np.flatnonzero(valid & (scores > threshold)):
        ref = None if reference_scores is None else float(reference_scores[i])
        if ref is not None and np.isfinite(ref) and scores[i] <= 2.0 * ref + 1.0:
            continue  # the reference changes as much there: the source's own motion
        out.append(FlickerFrame(int(i), float(scores[i]), ref))
    return out
