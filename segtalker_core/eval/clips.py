"""The clips an evaluation reads: a video (frames, frame rate, whether it has sound) or a still
image standing for a video of any length (a portrait that was animated)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_SIDE = 1024  # frames are evaluated at most this large (memory: all frames are held)


@dataclass(frozen=True)
class Clip:
    """``frames [N, H, W, 3]`` uint8; ``still``: one image that stands for every frame (then
    ``fps`` is None); ``scaled``: the frames were downscaled by this factor to ``max_side``."""

    path: str
    frames: np.ndarray
    fps: Fraction | None
    has_audio: bool
    still: bool = False
    scaled: float = 1.0

    def __post_init__(self) -> None:
        assert self.frames.ndim == 4 and self.frames.shape[3] == 3, self.frames.shape
        assert self.frames.dtype == np.uint8, self.frames.dtype
        assert self.still == (self.fps is None), (self.still, self.fps)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration(self) -> float | None:
        return None if self.fps is None else float(len(self.frames) / self.fps)


def is_image(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_clip(path: str | os.PathLike, what: str, max_side: int | None = DEFAULT_MAX_SIDE) -> Clip:
    """The video (or, by its extension, still image) at ``path``; ``what`` names it in errors
    (e.g. ``"--generated"``). Frames whose long side exceeds ``max_side`` are downscaled."""
    from ..image_files import read_image
    from ..video_io import probe_video, read_video

    text = os.fspath(path)
    if not Path(text).is_file():
        raise FileNotFoundError(f"{what} {text!r} does not exist (check the path)")
    if is_image(text):
        frames, scale = _fit(read_image(text, what)[None], max_side)
        return Clip(text, frames, None, has_audio=False, still=True, scaled=scale)
    try:
        info = probe_video(text)
        frames, fps = read_video(text)
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None
    frames, scale = _fit(frames, max_side)
    return Clip(text, frames, Fraction(fps), has_audio=info.has_audio, scaled=scale)


def _fit(frames: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    height, width = frames.shape[1:3]
    if max_side is None or max(height, width) <= max_side:
        return frames, 1.0
    scale = max_side / max(height, width)
    size = (max(16, round(width * scale)), max(16, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]), scale


def matched_sizes(generated: Clip, reference: Clip) -> tuple[Clip, str | None]:
    """``reference`` at ``generated``'s frame size (resized when they differ) and a note saying
    so; the metrics compare pixel to pixel."""
    if generated.size == reference.size:
        return reference, None
    height, width = generated.size
    frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA)
                       for f in reference.frames])
    note = (f"the reference is {reference.size[1]}x{reference.size[0]} and the generated video "
            f"{width}x{height}: the reference was resized to compare pixel to pixel")
    return Clip(reference.path, frames, reference.fps, reference.has_audio, reference.still,
                reference.scaled), note
