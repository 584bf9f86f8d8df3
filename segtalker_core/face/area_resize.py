"""An area-filtered downscale of a video frame, computed only where the next step looks.

Why: the face mesh works on a frame shrunk to at most 1280 px (:class:`.detect.FaceMeshDetector`).
While a face is tracked, the mesh only samples the tracked face's rectangle, but shrinking a
whole 1080p frame with ``INTER_AREA`` costs about 10 ms. OpenCV's area filter gives every output
pixel from the input pixels it covers, so a part of the frame whose edges fall on the scale's
grid (input ``q``-multiples onto output ``p``-multiples, the scale ``p/q`` in lowest terms)
shrinks to exactly the pixels the whole frame gives there: the landmarks stay bit-identical.
"""
from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np


class PartialAreaResize:
    """``cv2.resize(frame, size, interpolation=INTER_AREA)`` of frames of one size, filled in
    only inside the boxes asked for, into one reused output buffer."""

    def __init__(
        self,
        frame_size: tuple[int, int],  # (width, height) of the input frames
        size: tuple[int, int],  # (width, height) of the shrunk frame, each at most the input's
    ) -> None:
        if not (0 < size[0] <= frame_size[0] and 0 < size[1] <= frame_size[1]):
            raise ValueError(f"size {size} must be positive and within the frame size {frame_size}")
        self.frame_size = frame_size
        self.size = size
        self._scale = (Fraction(size[0], frame_size[0]), Fraction(size[1], frame_size[1]))
        self._out = np.zeros((size[1], size[0], 3), np.uint8)

    def __call__(self, frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The shrunk ``frame`` ``[H, W, 3]`` uint8, correct inside ``box`` (x0, y0, x1, y1 in the
        shrunk frame's pixels; clipped to it). Outside the box the pixels are left from earlier
        calls: only a reader of the box may use it, and only until the next call."""
        assert frame.shape == (self.frame_size[1], self.frame_size[0], 3), (frame.shape, self.frame_size)
        x0, x1 = _aligned_span(box[0], box[2], self._scale[0], self.size[0])
        y0, y1 = _aligned_span(box[1], box[3], self._scale[1], self.size[1])
        if x1 > x0 and y1 > y0:
            source = frame[_to_input(y0, self._scale[1]):_to_input(y1, self._scale[1]),
                           _to_input(x0, self._scale[0]):_to_input(x1, self._scale[0])]
            cv2.resize(source, (x1 - x0, y1 - y0), dst=self._out[y0:y1, x0:x1],
                       interpolation=cv2.INTER_AREA)
        return self._out


def _aligned_span(start: float, end: float, scale: Fraction, length: int) -> tuple[int, int]:
    """``[start, end)`` widened to output pixels that are multiples of the scale's numerator
    (input pixels that are multiples of its denominator), clipped to ``[0, length)``."""
    step = scale.numerator
    first = max(0, int(np.floor(start)) // step * step)
    last = min(length, -(-int(np.ceil(end)) // step) * step)
    return first, max(first, last)


def _to_input(index: int, scale: Fraction) -> int:
    """Output pixel edge ``index`` -> input pixel edge (exact for aligned edges; the frame's last
    edge for the clipped end)."""
    return index * scale.denominator // scale.numerator
