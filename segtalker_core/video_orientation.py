"""Upright frames: the display matrix a phone stores with a sideways-recorded video, read from a
decoded frame's side data and applied to its pixels (90/180/270 degrees and mirroring, the
``ffmpeg`` command line's autorotation rules)."""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .logs import get_logger

log = get_logger("video")


@dataclass(frozen=True)
class Orientation:
    """How stored frames are turned to show upright: transpose (swap rows and columns) first,
    then flip the rows (upside down) and/or the columns (mirror). ``rotation``: the degrees
    counter-clockwise the display turns the stored picture (0, 90, 180, 270), for messages."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    rotation: int = 0

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a stored ``width`` x ``height`` frame once turned."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """``[H, W, C]`` stored -> the upright frame (contiguous; the input itself if identity)."""
        if self.identity:
            return frame
        view = frame.transpose(1, 0, 2) if self.transpose else frame
        if self.flip_rows:
            view = view[::-1]
        if self.flip_cols:
            view = view[:, ::-1]
        return np.ascontiguousarray(view)


def orientation_from_matrix(matrix: tuple[int, ...] | list[int]) -> Orientation:
    """The :class:`Orientation` of an FFmpeg display matrix (9 int32, 16.16 fixed point).

    The rules are the ``ffmpeg`` command line's autorotation (what players show): the rotation
    angle is ``av_display_rotation_get``'s, and the signs of the matrix entries say which
    mirroring goes with it. An angle that is not a multiple of 90 degrees is not applied (one
    warning): no phone writes one, and turning by it would need a larger, padded frame.
    """
    a, b, _, c, d = (float(v) / 65536.0 for v in matrix[:5])
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return Orientation()
    # av_display_rotation_get: counter-clockwise degrees; the ffmpeg tool turns by its negation.
    counter_clockwise = -math.degrees(math.atan2(b / scale_y, a / scale_x))
    clockwise = (-round(counter_clockwise)) % 360
    rotation = (360 - clockwise) % 360
    if clockwise == 90:  # "transpose=clock", or "cclock_flip" when mirrored
        if c > 0:
            return Orientation(transpose=True, rotation=rotation)
        return Orientation(transpose=True, flip_cols=True, rotation=rotation)
    if clockwise == 270:  # "transpose=cclock", or "clock_flip" when mirrored
        if c < 0:
            return Orientation(transpose=True, flip_rows=True, flip_cols=True, rotation=rotation)
        return Orientation(transpose=True, flip_rows=True, rotation=rotation)
    if clockwise == 180:
        return Orientation(flip_rows=d < 0, flip_cols=a < 0, rotation=rotation)
    if clockwise == 0:
        return Orientation(flip_rows=d < 0)
    log.warning("a video is rotated by %d degrees, not a multiple of 90; its frames are used as "
                "stored", clockwise)
    return Orientation()


def frame_orientation(frame: Any) -> Orientation:
    """The orientation a decoded frame's display matrix side data asks for (none: as stored)."""
    try:
        from av.sidedata.sidedata import Type
    except ImportError:  # a PyAV without frame side data types: frames are used as stored
        return Orientation()
    # Looked up by type: PyAV 19 made side_data a mapping whose iteration yields the types, not
    # the entries (PyAV 18 has .get too).
    side = frame.side_data.get(Type.DISPLAYMATRIX)
    if side is not None:
        raw = bytes(side)
        if len(raw) >= 36:
            return orientation_from_matrix(struct.unpack("<9i", raw[:36]))
    return Orientation()
