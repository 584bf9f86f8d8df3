"""Which video files the pack writes, and at which frame rates.

* The container follows the output's extension (:data:`CONTAINERS`): ``.mp4``, ``.mov`` and
  ``.mkv`` hold H.264 + AAC; ``.webm`` holds VP9 + Opus (the only codecs browsers accept in WebM).
  Any other extension (``.gif``, ``.avi``, none) is refused before any work.
* Frame rates are exact fractions (:func:`fps_fraction`) within :data:`FPS_RANGE`; 0 fps is an
  error, never replaced by a default.
* Sound is trimmed or padded to ``ceil(n_frames * sr / fps)`` samples
  (:func:`audio_samples_for_frames`), the rule ComfyUI's core ``SaveVideo`` uses.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

FPS_RANGE = (1, 120)  # frames per second a video may be written at (the CLI's --fps range too)

# Sample rates the AAC encoder accepts; others are resampled to 48 kHz.
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
                    8000, 7350)
_FALLBACK_AUDIO_RATE = 48000


@dataclass(frozen=True)
class ContainerFormat:
    """What a video file of one extension holds. ``audio_rates``: the rates the audio encoder
    takes (others are resampled to ``fallback_rate``)."""

    suffix: str
    muxer: str  # FFmpeg's format name
    video_codec: str
    audio_codec: str
    audio_rates: tuple[int, ...]
    fallback_rate: int
    faststart: bool  # the muxer can move its index to the front (mp4/mov)
    codecs: str  # in words, for messages

    def audio_rate(self, rate: int) -> int:
        """The rate the audio is encoded at: ``rate`` if the encoder takes it, else the fallback."""
        return rate if rate in self.audio_rates else self.fallback_rate


def _h264(suffix: str, muxer: str, faststart: bool) -> ContainerFormat:
    return ContainerFormat(suffix, muxer, "libx264", "aac", AAC_SAMPLE_RATES, _FALLBACK_AUDIO_RATE,
                           faststart, "H.264 + AAC")


# The video files the writer makes, by extension (lower case).
CONTAINERS: dict[str, ContainerFormat] = {
    ".mp4": _h264(".mp4", "mp4", True),
    ".mov": _h264(".mov", "mov", True),
    ".mkv": _h264(".mkv", "matroska", False),
    # Opus is a 48 kHz codec at heart, and every WebM player expects 48 kHz: always resampled.
    ".webm": ContainerFormat(".webm", "webm", "libvpx-vp9", "libopus", (48000,), 48000, False,
                             "VP9 + Opus"),
}


def supported_video_outputs() -> str:
    """The writable extensions in words: ``.mp4, .mov, .mkv (H.264 + AAC) or .webm (VP9 + Opus)``."""
    groups: dict[str, list[str]] = {}
    for suffix, spec in CONTAINERS.items():
        groups.setdefault(spec.codecs, []).append(suffix)
    parts = [f"{', '.join(suffixes)} ({codecs})" for codecs, suffixes in groups.items()]
    return " or ".join(parts)


def container_for(path: str | os.PathLike, what: str = "output") -> ContainerFormat:
    """The container a video written to ``path`` gets, from its extension; any extension not in
    :data:`CONTAINERS` (``.gif``, ``.avi``, none) is a ValueError naming ``what`` and the choices."""
    text = os.fspath(path)
    suffix = os.path.splitext(text)[1].lower()
    spec = CONTAINERS.get(suffix)
    if spec is None:
        said = f"the extension {suffix!r}" if suffix else "no extension"
        raise ValueError(
            f"{what} {text!r} has {said}: a video can be written as {supported_video_outputs()}; "
            "give the output one of these extensions")
    return spec


def fps_fraction(fps: float | int | Fraction) -> Fraction:
    """Frame rate as an exact fraction: NTSC rates (29.97, 23.976, 59.94) become ``N*1000/1001``.

    A float such as 29.97 is a rounded NTSC rate; encoding it as 2997/100 would drift against
    audio made for 30000/1001, so rates within 0.002 of ``k*1000/1001`` snap to it.
    """
    if isinstance(fps, Fraction):
        value = fps
    else:
        value_f = float(fps)
        if not math.isfinite(value_f) or value_f <= 0:
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if value_f.is_integer():  # 1 fps is 1, not the NTSC-like 1000/1001 it is close to
            return Fraction(int(value_f))
        ntsc = Fraction(round(value_f * 1001 / 1000) * 1000, 1001)
        if ntsc > 0 and abs(float(ntsc) - value_f) < 0.002 and ntsc.denominator != 1:
            return ntsc
        value = Fraction(value_f).limit_denominator(1001)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return value


def check_fps(fps: Any, what: str = "fps") -> Fraction:
    """``fps`` as an exact fraction (:func:`fps_fraction`), refused outside :data:`FPS_RANGE`.

    0, negative, NaN, None and 1000 are all errors naming ``what``: a default must never stand
    in for a rate that was given wrong.
    """
    low, high = FPS_RANGE
    problem = f"{what} must be within {low}..{high} frames per second"
    if isinstance(fps, bool):
        raise ValueError(f"{problem}, got {fps!r}")
    try:
        value = fps_fraction(fps)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{problem}, got {fps!r}; 25 or 30 is usual") from None
    if not low <= value <= high:
        raise ValueError(f"{problem}, got {fps!r}; 25 or 30 is usual")
    return value


def audio_samples_for_frames(n_frames: int, sample_rate: int, fps: float | Fraction) -> int:
    """Audio length matching ``n_frames`` of video: ``ceil(n_frames * sr / fps)`` (exact arithmetic)."""
    return math.ceil(Fraction(n_frames) * sample_rate / fps_fraction(fps))
