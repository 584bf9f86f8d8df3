"""MP4 in and out through PyAV: a streaming H.264 + AAC writer and a chunked video reader.

Writer decisions:

* H.264 (libx264), ``yuv420p`` so every player decodes it. 4:2:0 needs even width and height; an
  odd size is padded (edge pixels repeated) or cropped by one pixel, with a warning.
* RGB -> YUV uses BT.709 (limited range) and the stream is tagged BT.709, so players that honour
  the tags (and this module's reader) decode the colours that were written.
* Frame rates are kept as exact fractions: 29.97 becomes 30000/1001 (see :func:`fps_fraction`).
* Audio is AAC, muxed while frames arrive (so the file interleaves and nothing but the waveform
  waits in memory). The audio is trimmed or zero-padded to ``ceil(n_frames * sr / fps)`` samples,
  the rule ComfyUI's core ``SaveVideo`` uses, so picture and sound end together.
* Frames are encoded as they are pushed: memory does not grow with the video's length.

Reader: frames come out in chunks ``[n, H, W, 3]`` uint8 with the stream's average frame rate.
Variable-frame-rate sources are read frame by frame as stored (not resampled to a constant rate).
A file's audio track is read by :func:`.audio.io.read_audio_file`, the one audio reader.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .audio.io import as_channels
from .face.image import to_rgb_uint8
from .logs import get_logger

log = get_logger("video")

# Sample rates the AAC encoder accepts; others are resampled to 48 kHz.
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
                    8000, 7350)
_FALLBACK_AUDIO_RATE = 48000
_AUDIO_CHUNK = 4096  # samples handed to the encoder at a time (it re-frames to 1024 itself)

_BT709 = 1  # AVCOL_SPC/PRI/TRC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG


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
        ntsc = Fraction(round(value_f * 1001 / 1000) * 1000, 1001)
        if ntsc > 0 and abs(float(ntsc) - value_f) < 0.002 and ntsc.denominator != 1:
            return ntsc
        value = Fraction(value_f).limit_denominator(1001)
    if value <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return value


def audio_samples_for_frames(n_frames: int, sample_rate: int, fps: float | Fraction) -> int:
    """Audio length matching ``n_frames`` of video: ``ceil(n_frames * sr / fps)`` (exact arithmetic)."""
    return math.ceil(Fraction(n_frames) * sample_rate / fps_fraction(fps))


def as_waveform(audio: Any, name: str = "audio") -> np.ndarray:
    """Audio for the AAC track -> ``float32 [C, T]`` with C in (1, 2), clipped to ±1.

    Layouts, integer scaling and NaN handling are :func:`.audio.io.as_channels`'s one policy
    (``[T]``, ``[C, T]``, ``[T, C]``, ``[1, C, T]``; torch tensors too). AAC is written mono or
    stereo, so more than two channels are downmixed to mono, with a warning.
    """
    wave = as_channels(audio, name)
    if wave.shape[0] > 2:
        log.warning("%s has %d channels; downmixing to mono for AAC", name, wave.shape[0])
        wave = wave.mean(axis=0, keepdims=True)
    return np.clip(wave, -1.0, 1.0)


@dataclass(frozen=True)
class EncodeSettings:
    """libx264/AAC knobs. ``crf``: 0 lossless .. 51 worst (18 is visually lossless);
    ``preset``: x264 speed/size trade-off; ``odd_size``: "pad" or "crop" to reach even sizes."""

    crf: int = 18
    preset: str = "veryfast"
    audio_bitrate: int = 128_000
    odd_size: str = "pad"
    faststart: bool = True  # moov atom in front: browsers start playing before the download ends

    def __post_init__(self) -> None:
        if not 0 <= int(self.crf) <= 51:
            raise ValueError(f"crf must be in 0..51 (18 ~ visually lossless), got {self.crf}")
        if self.odd_size not in ("pad", "crop"):
            raise ValueError(f"odd_size must be 'pad' or 'crop', got {self.odd_size!r}")


@dataclass(frozen=True)
class WriteSummary:
    """What :class:`Mp4Writer` wrote."""

    path: str
    frames: int
    width: int  # encoded size (even)
    height: int
    fps: Fraction
    audio_sample_rate: int | None
    audio_samples: int  # samples written (after trim/pad), 0 without audio
    size_note: str | None  # how an odd input size was made even, if it was

    @property
    def duration(self) -> float:
        return float(self.frames / self.fps)


class Mp4Writer:
    """Streaming H.264/AAC mp4 writer; frames are pushed one (or a few) at a time.

    >>> with Mp4Writer("out.mp4", 25, audio=wave, sample_rate=16000) as writer:
    ...     for frame in frames:          # [H, W, 3] uint8
    ...         writer.write(frame)
    >>> writer.summary.frames

    If the block raises, the half-written file is removed. The frame size is fixed by the first
    frame; later frames of another size are an error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        *,
        audio: Any = None,
        sample_rate: int | None = None,
        settings: EncodeSettings | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.fps = fps_fraction(fps)
        self.settings = settings or EncodeSettings()
        self._audio: np.ndarray | None = None
        self._sample_rate: int | None = None
        if audio is not None:
            if sample_rate is None or int(sample_rate) <= 0:
                raise ValueError("audio was given without a positive sample_rate")
            self._audio = as_waveform(audio)
            self._sample_rate = int(sample_rate)
        self._container: Any = None
        self._video: Any = None
        self._audio_stream: Any = None
        self._audio_pos = 0  # samples handed to the encoder so far
        self._frames = 0
        self._in_size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._out_size: tuple[int, int] | None = None  # (H, W) encoded
        self._size_note: str | None = None
        self.summary: WriteSummary | None = None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writing ---------------------------------------------------------------------------
    def write(self, frames: np.ndarray) -> None:
        """Encode ``[H, W, C]`` or ``[N, H, W, C]`` frames: anything :func:`.face.image.to_rgb_uint8`
        accepts (uint8 or float 0..1 RGB; grey and alpha too)."""
        if self.summary is not None:
            raise RuntimeError(f"Mp4Writer for {self.path} is closed; open a new one")
        frames = np.asarray(frames)
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4:
            raise ValueError(f"frames must be [H, W, 3] or [N, H, W, 3]; got shape {frames.shape}")
        for frame in batch:
            self._write_one(to_rgb_uint8(frame, f"frame {self._frames}"))

    def _write_one(self, frame: np.ndarray) -> None:
        import av

        if self._container is None:
            self._open(frame.shape[:2])
        if frame.shape[:2] != self._in_size:
            raise ValueError(
                f"frame {self._frames} is {frame.shape[1]}x{frame.shape[0]} but the video is "
                f"{self._in_size[1]}x{self._in_size[0]}; all frames must have one size"
            )
        frame = self._make_even(frame)
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame = video_frame.reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
        )
        video_frame.pts = self._frames
        for packet in self._video.encode(video_frame):
            self._container.mux(packet)
        self._frames += 1
        if self._audio_stream is not None:
            self._push_audio(audio_samples_for_frames(self._frames, self._sample_rate, self.fps))

    def _open(self, size: tuple[int, int]) -> None:
        import av

        height, width = size
        if height < 2 or width < 2:
            raise ValueError(f"frames of {width}x{height} are too small for H.264 (min 2x2)")
        self._in_size = (height, width)
        out_h, out_w = height, width
        if height % 2 or width % 2:
            if self.settings.odd_size == "pad":
                out_h, out_w = height + height % 2, width + width % 2
                verb = "padded (edge pixels repeated)"
            else:
                out_h, out_w = height - height % 2, width - width % 2
                verb = "cropped"
            self._size_note = (
                f"{width}x{height} {verb} to {out_w}x{out_h}: H.264 yuv420p needs even sizes"
            )
            log.warning("%s", self._size_note)
        self._out_size = (out_h, out_w)

        options = {"movflags": "+faststart"} if self.settings.faststart else {}
        self._container = av.open(self.path, mode="w", format="mp4", options=options)
        video = self._container.add_stream("libx264", rate=self.fps)
        video.width, video.height, video.pix_fmt = out_w, out_h, "yuv420p"
        video.options = {"crf": str(int(self.settings.crf)), "preset": self.settings.preset}
        codec = video.codec_context
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = _LIMITED_RANGE
        self._video = video
        if self._audio is not None:
            rate = self._sample_rate
            if rate not in AAC_SAMPLE_RATES:
                log.warning("AAC cannot store %d Hz audio; it is resampled to %d Hz", rate,
                            _FALLBACK_AUDIO_RATE)
                rate = _FALLBACK_AUDIO_RATE  # the encoder's resampler converts each frame
            stream = self._container.add_stream("aac", rate=rate)
            stream.layout = "mono" if self._audio.shape[0] == 1 else "stereo"
            stream.bit_rate = int(self.settings.audio_bitrate)
            self._audio_stream = stream

    def _make_even(self, frame: np.ndarray) -> np.ndarray:
        out_h, out_w = self._out_size
        height, width = frame.shape[:2]
        if (height, width) == (out_h, out_w):
            return frame
        if out_h <= height and out_w <= width:
            return frame[:out_h, :out_w]
        return np.pad(frame, ((0, out_h - height), (0, out_w - width), (0, 0)), mode="edge")

    def _push_audio(self, until: int) -> None:
        """Encode audio samples ``[self._audio_pos, until)``, zero-padding past the waveform's end."""
        import av

        layout = "mono" if self._audio.shape[0] == 1 else "stereo"
        while self._audio_pos < until:
            stop = min(until, self._audio_pos + _AUDIO_CHUNK)
            chunk = self._audio[:, self._audio_pos:stop]
            if chunk.shape[1] < stop - self._audio_pos:
                chunk = np.pad(chunk, ((0, 0), (0, stop - self._audio_pos - chunk.shape[1])))
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp",
                                               layout=layout)
            frame.sample_rate = self._sample_rate
            frame.pts = self._audio_pos
            frame.time_base = Fraction(1, self._sample_rate)
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
            self._audio_pos = stop

    # -- finishing -------------------------------------------------------------------------
    def close(self) -> WriteSummary:
        """Flush the encoders and finish the file; returns (and keeps) a :class:`WriteSummary`."""
        if self.summary is not None:
            return self.summary
        if self._container is None:
            raise ValueError(f"no frames were written to {self.path}; an mp4 needs at least one")
        try:
            if self._audio_stream is not None:
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
            for packet in self._video.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
        out_h, out_w = self._out_size
        self.summary = WriteSummary(
            path=self.path, frames=self._frames, width=out_w, height=out_h, fps=self.fps,
            audio_sample_rate=self._sample_rate, audio_samples=self._audio_pos,
            size_note=self._size_note,
        )
        return self.summary

    def abort(self) -> None:
        """Stop without finishing: close what is open and delete the partial file."""
        if self._container is not None and self.summary is None:
            try:
                self._container.close()
            except Exception:  # the file is being discarded; a second error would hide the first
                pass
            if os.path.exists(self.path):
                os.remove(self.path)
        self._container = None


class BackgroundWriter:
    """Runs a writer's ``write`` on a worker thread, so encoding overlaps rendering.

    FFmpeg releases the GIL while it converts and encodes, so on two cores the render loop and the
    encoder run side by side. A bounded queue keeps memory flat; an error in the worker is raised
    in the caller at the next ``write`` or at exit.
    """

    def __init__(self, writer: "Mp4Writer", max_pending: int = 4) -> None:
        import queue
        import threading

        self._writer = writer
        self._queue: "queue.Queue[np.ndarray | None]" = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mp4-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._error is None:
                try:
                    self._writer.write(frame)
                except BaseException as error:  # re-raised in the caller's thread
                    self._error = error

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, frame: np.ndarray) -> None:
        self._raise_pending()
        self._queue.put(np.asarray(frame))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_pending()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def write_mp4(
    path: str | os.PathLike,
    frames: Any,
    fps: float | Fraction,
    *,
    audio: Any = None,
    sample_rate: int | None = None,
    settings: EncodeSettings | None = None,
) -> WriteSummary:
    """Write an iterable of frames (``[H, W, 3]`` each, or ``[N, H, W, 3]`` batches) to an mp4."""
    with Mp4Writer(path, fps, audio=audio, sample_rate=sample_rate, settings=settings) as writer:
        for item in frames:
            writer.write(item)
    return writer.summary


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``frame_count`` is exact when ``frame_count_exact`` is True
    (the container stores it, as mp4 does); otherwise it is ``duration * fps`` rounded."""

    path: str
    width: int
    height: int
    fps: Fraction
    frame_count: int
    frame_count_exact: bool
    duration: float  # seconds
    has_audio: bool
    audio_sample_rate: int | None
    audio_channels: int


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and audio presence of a video file (nothing is decoded)."""
    import av

    path = _existing(path)
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream; is it an audio file or an image?")
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        else:
            duration = 0.0
        exact = bool(stream.frames and stream.frames > 0)
        count = int(stream.frames) if exact else int(round(duration * fps))
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=path,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            fps=fps,
            frame_count=count,
            frame_count_exact=exact,
            duration=duration,
            has_audio=audio is not None,
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else 0,
        )


class VideoReader:
    """Decode a video's frames in chunks ``[n, H, W, 3]`` uint8 (the last chunk may be shorter).

    >>> with VideoReader("in.mp4", chunk_size=32) as reader:
    ...     print(reader.info.fps, reader.info.frame_count)
    ...     for chunk in reader:
    ...         ...

    Only ``chunk_size`` frames are in memory at a time. ``max_frames`` stops early.
    Colours are converted with the stream's own matrix/range tags.
    """

    def __init__(self, path: str | os.PathLike, chunk_size: int = 32,
                 max_frames: int | None = None) -> None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if max_frames is not None and int(max_frames) < 0:
            raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
        self.info = probe_video(path)
        self.chunk_size = int(chunk_size)
        self.max_frames = None if max_frames is None else int(max_frames)
        self._container: Any = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def frames(self) -> Iterator[np.ndarray]:
        """Yield single frames ``[H, W, 3]`` uint8 in display order."""
        import av

        self.close()
        self._container = av.open(self.info.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding; order is still display order
        emitted = 0
        for frame in self._container.decode(stream):
            if self.max_frames is not None and emitted >= self.max_frames:
                break
            yield _frame_to_rgb(frame)
            emitted += 1
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        chunk: list[np.ndarray] = []
        for frame in self.frames():
            chunk.append(frame)
            if len(chunk) == self.chunk_size:
                yield np.stack(chunk)
                chunk = []
        if chunk:
            yield np.stack(chunk)


def _frame_to_rgb(frame: Any) -> np.ndarray:
    # Untagged streams (colorspace "unspecified") fall back to swscale's default, BT.601.
    kwargs: dict[str, Any] = {}
    if getattr(frame, "color_range", 0) in (1, 2):
        kwargs["src_color_range"] = int(frame.color_range)
    return frame.to_ndarray(format="rgb24", **kwargs)


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> tuple[np.ndarray, Fraction]:
    """All frames ``[N, H, W, 3]`` uint8 and the frame rate (for short clips; else use VideoReader)."""
    with VideoReader(path, chunk_size=64, max_frames=max_frames) as reader:
        chunks = list(reader)
        info = reader.info
    if not chunks:
        raise ValueError(f"{path} decoded to no frames")
    return np.concatenate(chunks), info.fps


def _existing(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    return path
