"""Whether a video's frames are evenly spaced in time (constant vs variable frame rate).

Decision for variable-frame-rate (VFR) sources, e.g. phone recordings: the dub uses the stream's
*average* frame rate and the frames as stored, with one warning; it does not resample to a
constant rate. The average rate is ``frames / duration``, so the output lasts as long as the
source and the speech ends with the picture; only where the source's spacing strays from the
average does a frame show a little early or late (the lips follow the audio at the average
rate). Resampling by timestamps would repeat or drop frames, which shows as stutter on a face.

Checking costs one pass over the packets (no decoding): milliseconds per minute of video. The same
pass tells whether the file holds the packets its container promises (:class:`PacketScan`): a
file cut short is found before any frame is decoded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .logs import get_logger

log = get_logger("video")

# Spacing that strays from the median by more than this fraction (and a timestamp tick) is VFR.
VFR_TOLERANCE = 0.05
# H.264/HEVC reorder at most 16 frames: that many packets past a frame, its timing has settled
# and it can be decoded.
REORDER_MARGIN = 16


@dataclass(frozen=True)
class FrameTiming:
    """Spacing of a video's first ``frames`` frames (seconds between displayed frames)."""

    frames: int
    average_fps: float  # frames per second of the span the checked frames cover
    min_interval: float
    max_interval: float
    variable: bool


@dataclass(frozen=True)
class PacketScan:
    """A video stream's packets read up to ``limit`` (headers and data, nothing decoded).

    ``packets`` counts the packets with data (at most ``limit``); ``pts`` holds their timestamps
    (decode order); ``error`` is FFmpeg's words when the demuxer failed before the limit or the
    end (a damaged file), else None. Fewer packets than the container promises means the file
    ends early (it was cut short).
    """

    packets: int
    pts: tuple[int, ...]
    time_base: Fraction
    limit: int | None
    error: str | None = None


def scan_video_packets(path: str | os.PathLike, limit: int | None = None) -> PacketScan:
    """Read the packets of ``path``'s first video stream, stopping after ``limit`` of them.

    A demuxer error (a truncated or damaged file) ends the scan instead of raising: what was read
    is what the file holds."""
    import av

    pts: list[int] = []
    packets, problem = 0, None
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        base = stream.time_base or Fraction(1, 90000)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the end-of-stream marker, not a frame
                    continue
                packets += 1
                if packet.pts is not None:
                    pts.append(int(packet.pts))
                if limit is not None and packets >= limit:
                    break
        except av.error.FFmpegError as error:
            problem = str(getattr(error, "strerror", None) or error)
    return PacketScan(packets=packets, pts=tuple(pts), time_base=Fraction(base), limit=limit,
                      error=problem)


def timing_of(scan: PacketScan, max_frames: int | None = None) -> FrameTiming | None:
    """The timing of the first ``max_frames`` frames of a scan; None when fewer than three
    frames have timestamps."""
    if len(scan.pts) < 3:
        return None
    times = np.sort(np.asarray(scan.pts, dtype=np.int64))
    if max_frames is not None:
        times = times[: max(int(max_frames), 3)]
    deltas = np.diff(times)
    median = float(np.median(deltas))
    stray = np.abs(deltas - median) > max(1.0, VFR_TOLERANCE * median)
    seconds = deltas.astype(np.float64) * float(scan.time_base)
    span = float(seconds.sum())
    return FrameTiming(
        frames=len(times),
        average_fps=(len(times) - 1) / span if span > 0 else 0.0,
        min_interval=float(seconds.min()),
        max_interval=float(seconds.max()),
        variable=bool(stray.any()),
    )


def frame_timing(path: str | os.PathLike, max_frames: int | None = None) -> FrameTiming | None:
    """The timing of the first ``max_frames`` frames of ``path``'s video stream, read from the
    packet timestamps; None when there are fewer than three timed frames."""
    # Packets come in decode order: read a few past the limit so reordering settles.
    limit = None if max_frames is None else int(max_frames) + REORDER_MARGIN
    return timing_of(scan_video_packets(path, limit), max_frames)


def warn_if_variable(path: str | os.PathLike, fps: float, max_frames: int | None,
                     input_name: str, scan: PacketScan | None = None) -> FrameTiming | None:
    """Log one warning when ``path`` has a variable frame rate (see the module's decision).
    ``scan``: packets already read from ``path`` (:func:`scan_video_packets`), so the file is
    not read twice."""
    timing = frame_timing(path, max_frames) if scan is None else timing_of(scan, max_frames)
    if timing is not None and timing.variable:
        log.warning(
            "input '%s' has a variable frame rate (frames %.0f to %.0f ms apart); it is dubbed at "
            "its average %.3g fps with its frames as stored, so the length and the speech match "
            "but a frame may show slightly early or late. Convert it to a constant rate first "
            "(e.g. ffmpeg -i in.mp4 -fps_mode cfr -r 25 out.mp4) for exact timing.",
            input_name, 1000 * timing.min_interval, 1000 * timing.max_interval, fps,
        )
    return timing
