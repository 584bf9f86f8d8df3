"""Pairs of frames to compare between two clips, matched by time, not by index.

Generated frame ``i`` shows time ``i / fps_g``; it is compared with the reference frame shown
at that time, ``round(i * fps_r / fps_g)``. Clips of different frame rates or lengths are thus
compared over the time both cover; a still reference pairs with every generated frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class FramePairs:
    """``generated[k]`` is compared with ``reference[k]`` (frame indices ``[K]``)."""

    generated: np.ndarray
    reference: np.ndarray
    generated_total: int
    reference_total: int
    notes: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.generated.shape == self.reference.shape and self.generated.ndim == 1

    def __len__(self) -> int:
        return len(self.generated)


def pair_frames(generated_count: int, generated_fps: Fraction, reference_count: int,
                reference_fps: Fraction | None) -> FramePairs:
    """Frame pairs by time (``reference_fps`` None: a still reference of one frame)."""
    if generated_count < 1 or reference_count < 1:
        raise ValueError(f"nothing to compare: the generated clip has {generated_count} frames, "
                         f"the reference {reference_count}")
    gen = np.arange(generated_count)
    notes: list[str] = []
    if reference_fps is None:
        return FramePairs(gen, np.zeros_like(gen), generated_count, reference_count,
                          ("the reference is a still image: every generated frame is compared with it",))
    ratio = Fraction(reference_fps) / Fraction(generated_fps)
    # Exact rational arithmetic: a 25 vs 50 fps pair maps frame i to exactly 2i.
    ref = np.array([round(Fraction(int(i)) * ratio) for i in gen], np.int64)
    keep = ref < reference_count
    if ratio != 1:
        notes.append(f"frame rates differ (generated {float(generated_fps):g} fps, reference "
                     f"{float(reference_fps):g} fps): frames are matched by time")
    gen_seconds = generated_count / float(generated_fps)
    ref_seconds = reference_count / float(reference_fps)
    if abs(gen_seconds - ref_seconds) > 0.5 / float(generated_fps):
        notes.append(f"lengths differ (generated {gen_seconds:.2f} s, reference {ref_seconds:.2f} s): "
                     f"only the first {min(gen_seconds, ref_seconds):.2f} s are compared")
    if not keep.any():
        raise ValueError("the clips share no time to compare")
    return FramePairs(gen[keep], ref[keep], generated_count, reference_count, tuple(notes))
