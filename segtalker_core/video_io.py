"""Video files in and out through PyAV: a streaming writer and a chunked reader.

Writer decisions:

* The container follows the output's extension, and only extensions whose contents are known to
  play everywhere are written (anything else is refused before any work, see :data:`CONTAINERS`):
  ``.mp4``, ``.mov`` and ``.mkv`` hold H.264 (libx264) + AAC; ``.webm`` holds VP9 (libvpx-vp9) +
  Opus (libopus, 48 kHz), the only codecs browsers accept in WebM. ``faststart`` (the index in
  front, so a browser plays while downloading) applies to mp4/mov, the containers that have it.
* ``yuv420p`` so every player decodes it. 4:2:0 needs even width and height; an odd size is
  padded (edge pixels repeated) or cropped by one pixel, with a warning.
* RGB -> YUV uses BT.709 (limited range) and the stream is tagged BT.709, so players that honour
  the tags (and this module's reader) decode the colours that were written.
* Frame rates are kept as exact fractions: 29.97 becomes 30000/1001 (see :func:`fps_fraction`),
  and must lie in :data:`FPS_RANGE` (0 fps is an error, never replaced by a default).
* Audio is muxed while frames arrive (so the file interleaves and nothing but the waveform waits
  in memory). The audio is trimmed or zero-padded to ``ceil(n_frames * sr / fps)`` samples, the
  rule ComfyUI's core ``SaveVideo`` uses, so picture and sound end together.
* Frames are encoded as they are pushed: memory does not grow with the video's length.
* Nothing half-written is ever left at the output's name: the file is written under a hidden
  temporary name next to it (:func:`.atomic_files.atomic_output`) and renamed over the target
  only when :meth:`VideoWriter.close` has finished it. A failure, Ctrl-C or a signal removes the
  temporary file and leaves a file already at the target as it was; a full disk is an
  :class:`OutputWriteError` that names the output and says so.

Reader decisions:

* Frames come out in chunks ``[n, H, W, 3]`` uint8 with the stream's average frame rate.
  Variable-frame-rate sources are read frame by frame as stored (not resampled to a constant rate).
* Frames come out upright: a display matrix (phones store portrait video sideways and say how to
  turn it) is applied (90/180/270 degrees and mirroring), and :func:`probe_video` reports the
  displayed size.
* A file that does not open, or of which no frame decodes, is a ValueError that says it is
  truncated or corrupt. A file that breaks off (fewer frames decode than it promises, or the
  decoder fails mid-stream) gives the frames that decoded and one warning (logger
  ``segtalker.video``) that says how many of how many.
* A file's audio track is read by :func:`.audio.io.read_audio_file`, the one audio reader.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .atomic_files import atomic_output, check_output_path
from .audio.io import as_channels
from .face.image import to_rgb_uint8
from .logs import get_logger
# Re-exported: formats and orientation are part of this module's interface.
from .video_formats import (AAC_SAMPLE_RATES, CONTAINERS, FPS_RANGE, ContainerFormat,  # noqa: F401
                            audio_samples_for_frames, check_fps, container_for, fps_fraction,
                            supported_video_outputs)
from .video_orientation import Orientation, frame_orientation, orientation_from_matrix  # noqa: F401

log = get_logger("video")

_AUDIO_CHUNK = 4096  # samples handed to the encoder at a time (it re-frames them itself)

_BT709 = 1  # AVCOL_SPC/PRI/TRC_BT709
_LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG

# errno values that mean "no room left" (a full disk or a used-up quota).
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def as_waveform(audio: Any, name: str = "audio") -> np.ndarray:
    """Audio for the sound track -> ``float32 [C, T]`` with C in (1, 2), clipped to ±1.

    Layouts, integer scaling and NaN handling are :func:`.audio.io.as_channels`'s one policy
    (``[T]``, ``[C, T]``, ``[T, C]``, ``[1, C, T]``; torch tensors too). The track is written mono
    or stereo, so more than two channels are downmixed to mono, with a warning.
    """
    wave = as_channels(audio, name)
    if wave.shape[0] > 2:
        log.warning("%s has %d channels; downmixing to mono for the sound track", name,
                    wave.shape[0])
        wave = wave.mean(axis=0, keepdims=True)
    return np.clip(wave, -1.0, 1.0)


@dataclass(frozen=True)
class EncodeSettings:
    """Encoder knobs. ``crf``: 0 lossless .. 51 worst on x264's scale (18 is visually lossless;
    VP9's 0..63 scale gets the same share, 18 -> 22); ``preset``: x264 speed/size trade-off;
    ``odd_size``: "pad" or "crop" to reach even sizes; ``faststart``: mp4/mov index in front."""

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

    @property
    def vp9_crf(self) -> int:
        return round(int(self.crf) * 63 / 51)


@dataclass(frozen=True)
class WriteSummary:
    """What :class:`VideoWriter` wrote."""

    path: str
    frames: int
    width: int  # encoded size (even)
    height: int
    fps: Fraction
    audio_sample_rate: int | None  # the rate given (the track may be resampled, see the format)
    audio_samples: int  # samples written (after trim/pad), 0 without audio
    size_note: str | None  # how an odd input size was made even, if it was

    @property
    def duration(self) -> float:
        return float(self.frames / self.fps)


class OutputWriteError(OSError):
    """The output file could not be written (a full disk, a failing drive, no permission).

    A plain OSError to whoever catches one (``errno``, ``strerror`` and ``filename``, the output's
    final name and not its temporary one, are set), whose message says what happened and what to
    do. Nothing half-written was left at ``filename``.
    """

    def __init__(self, code: int | None, strerror: str, filename: str, advice: str) -> None:
        super().__init__(code, strerror, filename)
        self.advice = advice

    def __str__(self) -> str:
        return f"cannot write the video {self.filename!r}: {self.advice} ({self.strerror})"


def output_write_error(error: BaseException, path: str) -> BaseException:
    """``error`` from writing ``path`` (or its temporary file) as the error to raise: an OSError
    (PyAV's carry the errno) becomes an :class:`OutputWriteError` naming ``path``; anything
    else is returned as it is."""
    if not isinstance(error, OSError) or isinstance(error, OutputWriteError):
        return error
    code = error.errno
    words = error.strerror or (os.strerror(code) if code else str(error))
    if code in _DISK_FULL:
        advice = ("the disk is full, so it was not written (a file already at that name is kept "
                  "as it was); free some space or write elsewhere")
    else:
        advice = ("it was not written (a file already at that name is kept as it was); check the "
                  "folder's permissions and free space")
    return OutputWriteError(code, words, path, advice)


class VideoWriter:
    """Streaming video writer (H.264/AAC or VP9/Opus by extension); frames are pushed one (or a
    few) at a time, and the file appears at ``path`` whole on :meth:`close`, or not at all.

    >>> with VideoWriter("out.mp4", 25, audio=wave, sample_rate=16000) as writer:
    ...     for frame in frames:          # [H, W, 3] uint8
    ...         writer.write(frame)
    >>> writer.summary.frames

    The output is checked when the writer is made (extension, folder, not an input: ``inputs``
    is ``{name: path}`` of the files the run reads, ``what`` names the output in messages). If
    the block raises (Ctrl-C and signals too), :meth:`abort` removes the temporary file and a
    file already at ``path`` stays as it was. The frame size is fixed by the first frame; later
    frames of another size are an error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        *,
        audio: Any = None,
        sample_rate: int | None = None,
        settings: EncodeSettings | None = None,
        inputs: Mapping[str, str | os.PathLike | None] | None = None,
        what: str = "output",
    ) -> None:
        self.format = container_for(path, what)
        check_output_path(path, inputs, what)
        self.path = os.fspath(path)
        self.fps = check_fps(fps)
        self.settings = settings or EncodeSettings()
        self._inputs = dict(inputs or {})
        self._what = what
        self._audio: np.ndarray | None = None
        self._sample_rate: int | None = None
        if audio is not None:
            if sample_rate is None or int(sample_rate) <= 0:
                raise ValueError("audio was given without a positive sample_rate")
            self._audio = as_waveform(audio)
            self._sample_rate = int(sample_rate)
        self._atomic: Any = None  # the atomic_output context of the temporary file, once open
        self.temp_path: str | None = None  # where the file is written until close()
        self._container: Any = None
        self._video: Any = None
        self._audio_stream: Any = None
        self._audio_pos = 0  # samples handed to the encoder so far
        self._frames = 0
        self._in_size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._out_size: tuple[int, int] | None = None  # (H, W) encoded
        self._size_note: str | None = None
        self.summary: WriteSummary | None = None
        self._aborted = False  # the file was discarded: the writer cannot be used again

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "VideoWriter":
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
            raise RuntimeError(f"the writer of {self.path} is closed; open a new one")
        self._check_usable()
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
        self._mux_all(self._video, video_frame)
        self._frames += 1
        if self._audio_stream is not None:
            self._push_audio(audio_samples_for_frames(self._frames, self._sample_rate, self.fps))

    def _mux_all(self, stream: Any, frame: Any) -> None:
        """Encode ``frame`` (None: flush) on ``stream`` and mux the packets. A file-system error
        (a full disk) ends the file: it is discarded and raised as an :class:`OutputWriteError`."""
        try:
            for packet in stream.encode(frame):
                self._mux(packet)
        except OSError as error:
            self._fail(error)

    def _mux(self, packet: Any) -> None:
        self._container.mux(packet)

    def _open(self, size: tuple[int, int]) -> None:
        height, width = size
        if height < 2 or width < 2:
            raise ValueError(f"frames of {width}x{height} are too small for video (min 2x2)")
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
                f"{width}x{height} {verb} to {out_w}x{out_h}: yuv420p video needs even sizes"
            )
            log.warning("%s (H.264 yuv420p needs even sizes)", self._size_note)
        self._out_size = (out_h, out_w)
        self._atomic = atomic_output(self.path, self._inputs, self._what)
        self.temp_path = os.fspath(self._atomic.__enter__())
        try:
            self._open_container(out_w, out_h)
        except BaseException as error:
            self._fail(error)

    def _open_container(self, width: int, height: int) -> None:
        import av

        spec = self.format
        faststart = self.settings.faststart and spec.faststart
        options = {"movflags": "+faststart"} if faststart else {}
        self._container = av.open(self.temp_path, mode="w", format=spec.muxer, options=options)
        video = self._container.add_stream(spec.video_codec, rate=self.fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = self._video_options()
        codec = video.codec_context
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = _LIMITED_RANGE
        self._video = video
        if self._audio is not None:
            rate = spec.audio_rate(self._sample_rate)
            if rate != self._sample_rate and spec.audio_codec == "aac":
                log.warning("AAC cannot store %d Hz audio; it is resampled to %d Hz",
                            self._sample_rate, rate)
            # The encoder's resampler converts each frame from the waveform's rate.
            stream = self._container.add_stream(spec.audio_codec, rate=rate)
            stream.layout = "mono" if self._audio.shape[0] == 1 else "stereo"
            stream.bit_rate = int(self.settings.audio_bitrate)
            self._audio_stream = stream

    def _video_options(self) -> dict[str, str]:
        if self.format.video_codec == "libvpx-vp9":
            # Constant quality (b=0 + crf). Measured on 1080p, 2 cores: "realtime" at cpu-used 8
            # with row threads encodes 9 fps (x264 veryfast here: 7.7) at 42 dB PSNR; "good"
            # (libvpx caps its cpu-used at 5) gives the same quality at 1.9 fps.
            return {"crf": str(self.settings.vp9_crf), "b": "0", "deadline": "realtime",
                    "cpu-used": "8", "row-mt": "1"}
        return {"crf": str(int(self.settings.crf)), "preset": self.settings.preset}

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
            self._mux_all(self._audio_stream, frame)
            self._audio_pos = stop

    # -- finishing -------------------------------------------------------------------------
    def close(self) -> WriteSummary:
        """Flush the encoders, finish the file and rename it onto ``path``; returns (and keeps)
        a :class:`WriteSummary`. If finishing fails, nothing is left at ``path`` (or a file that
        was there is kept) and the error is raised (:class:`OutputWriteError` for the disk)."""
        if self.summary is not None:
            return self.summary
        self._check_usable()
        if self._container is None:
            self.abort()
            raise ValueError(f"no frames were written to {self.path}; a video needs at least one")
        if self._audio_stream is not None:
            self._mux_all(self._audio_stream, None)
        self._mux_all(self._video, None)
        try:
            self._container.close()  # the trailer (and the faststart rewrite) is written here
            self._container = None
            atomic, self._atomic = self._atomic, None
            atomic.__exit__(None, None, None)  # fsync, rename onto the target
        except BaseException as error:
            self._fail(error)
        out_h, out_w = self._out_size
        self.summary = WriteSummary(
            path=self.path, frames=self._frames, width=out_w, height=out_h, fps=self.fps,
            audio_sample_rate=self._sample_rate, audio_samples=self._audio_pos,
            size_note=self._size_note,
        )
        return self.summary

    def _check_usable(self) -> None:
        if self._aborted:
            raise RuntimeError(f"the writer of {self.path} was aborted (its file was discarded); "
                               "open a new one")

    def _fail(self, error: BaseException) -> None:
        """Discard the file and raise ``error`` (a file-system one as an OutputWriteError)."""
        self.abort()
        translated = output_write_error(error, self.path)
        if translated is error:
            raise error
        raise translated from error

    def abort(self) -> None:
        """Stop without finishing: close what is open and remove the temporary file. The file at
        ``path`` (if one was there before) is not touched. Safe to call more than once."""
        if self._atomic is not None or self._container is not None:
            self._aborted = True
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is being discarded; a second error would hide the first
                pass
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            # Throwing into atomic_output's block runs its cleanup: the temporary file goes.
            try:
                atomic.__exit__(_Discarded, _Discarded(), None)
            except _Discarded:
                pass


Mp4Writer = VideoWriter  # the writer's first name, when it wrote mp4 only


class _Discarded(Exception):
    """Thrown into :func:`atomic_output`'s block to have it discard the temporary file."""


class BackgroundWriter:
    """Runs a writer's ``write`` on a worker thread, so encoding overlaps rendering.

    FFmpeg releases the GIL while it converts and encodes, so on two cores the render loop and the
    encoder run side by side. A bounded queue keeps memory flat; an error in the worker is raised
    in the caller at the next ``write`` or at exit. If the caller's block raises (Ctrl-C too), the
    frames still queued are dropped and the worker is stopped and joined before the exception
    goes on, so the writer's own exit (``abort``) never closes a file the worker is encoding into.
    """

    def __init__(self, writer: VideoWriter, max_pending: int = 4) -> None:
        import queue
        import threading

        self._writer = writer
        self._queue: "queue.Queue[np.ndarray | None]" = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="video-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            if self._error is None and not self._cancelled:
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
        """Encode what is queued, stop the worker, and raise its error if it had one."""
        self._queue.put(None)
        self._join()
        self._raise_pending()

    def cancel(self) -> None:
        """Drop the queued frames and stop the worker (it finishes the frame it is encoding)."""
        import queue

        self._cancelled = True
        while True:  # make room for the stop mark, whatever the worker is doing
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self._join()

    def _join(self) -> None:
        """Wait for the worker even through a second Ctrl-C: the file must not be closed under
        it. The interruption is raised once the worker is done."""
        interrupted: BaseException | None = None
        while self._thread.is_alive():
            try:
                self._thread.join(0.2)
            except BaseException as error:  # KeyboardInterrupt, the CLI's Terminated
                self._cancelled = True
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()


def write_video(
    path: str | os.PathLike,
    frames: Any,
    fps: float | Fraction,
    *,
    audio: Any = None,
    sample_rate: int | None = None,
    settings: EncodeSettings | None = None,
    inputs: Mapping[str, str | os.PathLike | None] | None = None,
    what: str = "output",
) -> WriteSummary:
    """Write an iterable of frames (``[H, W, 3]`` each, or ``[N, H, W, 3]`` batches) to a video
    file whose container follows the extension (:data:`CONTAINERS`)."""
    with VideoWriter(path, fps, audio=audio, sample_rate=sample_rate, settings=settings,
                     inputs=inputs, what=what) as writer:
        for item in frames:
            writer.write(item)
    return writer.summary


write_mp4 = write_video  # the first name, when only mp4 was written


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds. ``width`` x ``height`` is the displayed (upright) size;
    ``frame_count`` is exact when ``frame_count_exact`` is True (the container stores it, as mp4
    does); otherwise it is ``duration * fps`` rounded. ``orientation``: how the stored frames are
    turned to show upright (the reader applies it)."""

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
    orientation: Orientation = Orientation()

    @property
    def rotation(self) -> int:
        return self.orientation.rotation


def _ffmpeg_words(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or error).strip() or type(error).__name__


def corrupt_video_error(path: str, detail: str) -> ValueError:
    return ValueError(f"video {path!r} is truncated or corrupt ({detail}); re-export it, or "
                      "convert it (e.g. ffmpeg -i IN -c:v libx264 -c:a aac OUT.mp4)")


def _open_input(path: str) -> Any:
    """``av.open`` for reading; a file FFmpeg cannot open (a truncated mp4 whose index was still
    to come, random bytes) is a ValueError that names it."""
    import av

    try:
        return av.open(path)
    except av.error.FFmpegError as error:
        if isinstance(error, OSError):
            raise  # a file-system error (permission, I/O): it says what it is
        raise corrupt_video_error(path, f"it does not open: {_ffmpeg_words(error)}") from None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count, orientation and audio presence of a video file.

    Only the first frame is decoded (it carries the display matrix, and a file of which not even
    that decodes is refused here, before any work).
    """
    path = _existing(path)
    with _open_input(path) as container:
        if not container.streams.video and not container.streams.audio:
            # An mp4 whose index was cut off opens with a bare data stream, or none at all.
            raise corrupt_video_error(path, "it holds no picture or sound")
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream; is it an audio file or an image?")
        stream = container.streams.video[0]
        fps = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 25)
        duration = _stream_seconds(stream, container)
        exact = bool(stream.frames and stream.frames > 0)
        count = int(stream.frames) if exact else int(round(duration * fps))
        audio = container.streams.audio[0] if container.streams.audio else None
        first = _first_frame(container, stream, path)
        orientation = frame_orientation(first)
        width, height = orientation.displayed_size(int(first.width), int(first.height))
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=fps,
            frame_count=count,
            frame_count_exact=exact,
            duration=duration,
            has_audio=audio is not None,
            audio_sample_rate=int(audio.codec_context.sample_rate) if audio is not None else None,
            audio_channels=int(audio.codec_context.channels) if audio is not None else 0,
            orientation=orientation,
        )


def _stream_seconds(stream: Any, container: Any) -> float:
    """How long the video stream lasts: its own duration (mp4, mov), else Matroska/WebM's
    per-track DURATION tag, else the container's (which counts the audio's tail too)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    if tagged is not None:
        return tagged
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return 0.0


def _tag_seconds(text: str | None) -> float | None:
    """``"00:01:02.500000000"`` -> 62.5 (None when absent or not that form)."""
    if not text:
        return None
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _first_frame(container: Any, stream: Any, path: str) -> Any:
    import av

    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as error:
        raise corrupt_video_error(path, f"its first frame does not decode: "
                                        f"{_ffmpeg_words(error)}") from None
    raise corrupt_video_error(path, "no frame of it decodes")


class VideoReader:
    """Decode a video's frames upright, in chunks ``[n, H, W, 3]`` uint8 (the last chunk may be
    shorter).

    >>> with VideoReader("in.mp4", chunk_size=32) as reader:
    ...     print(reader.info.fps, reader.info.frame_count)
    ...     for chunk in reader:
    ...         ...

    Only ``chunk_size`` frames are in memory at a time. ``max_frames`` stops early.
    Colours are converted with the stream's own matrix/range tags. A file that breaks off gives
    the frames that decoded, with one warning (``self.decoded`` counts them); ``self.damaged``
    says whether it broke off.
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
        self.decoded = 0  # frames given by the last pass
        self.damaged = False  # whether the last pass ended before the frames the file promises
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
        """Yield single upright frames ``[H, W, 3]`` uint8 in display order."""
        self.close()
        self._container = _open_input(self.info.path)
        self.decoded, self.damaged = 0, False
        turn = self.info.orientation
        for frame in self._decoded_frames():
            if self.max_frames is not None and self.decoded >= self.max_frames:
                break
            yield turn.apply(_frame_to_rgb(frame))
            self.decoded += 1
        self.close()
        if self.decoded == 0 and self.max_frames != 0:
            raise corrupt_video_error(self.info.path, "no frame of it decodes")

    def _decoded_frames(self) -> Iterator[Any]:
        """The stream's frames; a decoder or demuxer error ends them with one warning, as does a
        file that ends before the frames its container promises."""
        import av

        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-threaded decoding; order is still display order
        problem: str | None = None
        try:
            for packet in self._container.demux(stream):
                yield from stream.decode(packet)
        except av.error.FFmpegError as error:
            problem = f"the decoder stopped: {_ffmpeg_words(error)}"
            try:  # the frames the decoder still holds are good
                yield from stream.decode(None)
            except av.error.FFmpegError:
                pass
        wanted = self.info.frame_count
        if self.max_frames is not None:
            wanted = min(wanted, self.max_frames)
        # An estimated count (no exact one in the container) may be one frame off by rounding.
        slack = 0 if self.info.frame_count_exact else 1
        if problem is None and self.decoded + slack < wanted:
            problem = "the file ends early"
        if problem is not None and self.decoded < wanted:
            self.damaged = True
            log.warning(
                "video %r is truncated or damaged: %d of its %d frames decoded (%s). Going on "
                "with the %d frames that decoded; re-export the video to use all of it",
                self.info.path, self.decoded, self.info.frame_count, problem, self.decoded)

    def __iter__(self) -> Iterator[np.ndarray]:
        # Each frame is copied once, into a chunk allocated up front (no list of frames and a
        # stacked copy of it alive together). A chunk is new for every yield, never reused: the
        # caller may keep its frames (the aligner holds a few back for its smoothing).
        chunk, count = None, 0
        for frame in self.frames():
            if chunk is None:
                chunk = np.empty((self.chunk_size,) + frame.shape, np.uint8)
            chunk[count] = frame
            count += 1
            if count == self.chunk_size:
                yield chunk
                chunk, count = None, 0
        if count:
            yield chunk[:count]


def prefetched(items: Iterable[Any], depth: int = 1, name: str = "video-decoder") -> Iterator[Any]:
    """``items`` decoded on a worker thread up to ``depth`` ahead of the caller (FFmpeg releases
    the GIL while it decodes and converts): :func:`.run_ahead.run_ahead`."""
    from .run_ahead import run_ahead

    return run_ahead(items, depth, name)


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
