"""Audio in: ComfyUI AUDIO mappings, files and arrays -> 16 kHz mono float32 (:class:`MonoAudio`).

Audio out: a ComfyUI-style AUDIO dict read from a file (:func:`audio_dict_from_file`), because
ComfyUI's own LoadAudio needs torchaudio.

The exact duration of the *source* is kept as a fraction (samples / rate) so that frame counts do
not depend on how a resampler rounds its output length.

One policy for waveform arrays (:func:`as_channels`, also used by the mp4 writer):

* layouts ``[T]`` (mono), ``[C, T]``, ``[T, C]`` and ComfyUI's ``[1, C, T]``; of a 2-d array the
  smaller dimension is the channel axis, and it must be at most :data:`MAX_CHANNELS` (8, i.e.
  7.1 sound), otherwise the array is refused: a [T, C] array from soundfile or scipy is
  transposed, and no real recording is 8 samples long;
* integers are scaled by their dtype's full range: int16 by 1/32768, int32 by 1/2**31, uint8 is
  centred on 128 and scaled by 1/128, so full scale is -1..1 (as soundfile reads PCM);
* NaN and infinite samples are set to 0 with one warning (logger ``"segtalker.audio"``) that
  names the input.

Files: wav/flac/ogg are read by soundfile, everything else by ffmpeg through PyAV
(:func:`read_audio_file`); for mp4/m4a the decoder drops AAC's priming samples (the edit list)
and the padding of the last AAC frame is cut at the stream's duration, so the audio lines up
with the video it came with.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..logs import get_logger

TARGET_RATE = 16000
MAX_CHANNELS = 8  # the channel axis of a 2-d waveform is the smaller one, and at most this long

log = get_logger("audio")

AudioSource = Union["MonoAudio", Mapping, str, os.PathLike, np.ndarray, Any]


@dataclass(frozen=True)
class MonoAudio:
    """Mono float32 audio at ``sample_rate`` plus the exact duration of what it was made from."""

    samples: np.ndarray  # [N] float32
    sample_rate: int
    duration: Fraction  # seconds, exact: source samples / source rate

    def __post_init__(self) -> None:
        assert self.samples.ndim == 1 and self.samples.dtype == np.float32, (
            self.samples.shape,
            self.samples.dtype,
        )
        assert self.sample_rate > 0, self.sample_rate

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def seconds(self) -> float:
        return float(self.duration)


def load_audio(
    source: AudioSource, sample_rate: int | None = None, target_rate: int = TARGET_RATE
) -> MonoAudio:
    """Any supported audio -> mono float32 at ``target_rate``.

    ``source`` may be a ComfyUI AUDIO mapping (``waveform`` [B, C, T], ``sample_rate``), a file
    path (wav/flac/ogg via soundfile, anything else ffmpeg reads via PyAV: mp3, m4a, mp4, ...),
    a numpy array / torch tensor (``[T]``, ``[C, T]`` or ``[B, C, T]``) with ``sample_rate``,
    or a :class:`MonoAudio` (resampled if its rate differs).
    """
    if isinstance(source, MonoAudio):
        if source.sample_rate == target_rate:
            return source
        return MonoAudio(
            _resample(source.samples, source.sample_rate, target_rate),
            target_rate,
            source.duration,
        )
    if isinstance(source, (str, os.PathLike)):
        channels, rate = read_audio_file(source)
        what = f"audio file {os.fspath(source)!r}"
    elif _is_mapping(source):
        channels, rate = _from_comfy_audio(source)
        what = "AUDIO input"
    elif _is_array(source):
        if sample_rate is None:
            raise ValueError(
                "load_audio: an array was given without sample_rate; pass sample_rate=<Hz>."
            )
        channels = as_channels(source, "audio array")
        rate = _check_rate(sample_rate, "sample_rate")
        what = "audio array"
    else:
        raise TypeError(
            f"load_audio: cannot read audio from a {type(source).__name__}; give a ComfyUI AUDIO "
            "mapping, a file path, or a numpy array with sample_rate."
        )
    return _to_mono(channels, rate, target_rate, what)


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file at its own rate and channel count: (float32 ``[C, T]``, sample rate).

    A file without an audio track (a silent video) is a ValueError naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audio file {os.fspath(path)!r} does not exist (check the path).")
    try:
        import soundfile as sf

        data, rate = sf.read(str(p), dtype="float32", always_2d=True)  # [T, C]
        return np.ascontiguousarray(data.T), int(rate)
    except Exception:
        # soundfile (libsndfile) reads wav/flac/ogg; everything else goes through ffmpeg.
        pass
    return _read_with_av(p)


def audio_dict_from_file(path: str | os.PathLike) -> dict[str, Any]:
    """A ComfyUI AUDIO dict from a file, at the file's own rate and channel count.

    Returns ``{"waveform": torch.float32 [1, C, T], "sample_rate": int}``.
    """
    import torch

    channels, rate = read_audio_file(path)
    return {"waveform": torch.from_numpy(channels).unsqueeze(0).contiguous(), "sample_rate": rate}


def _read_with_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # av raises its own error zoo; one message is what a user needs
        raise ValueError(
            f"audio file {str(path)!r} could not be opened ({exc}); use wav, flac, mp3, m4a or a "
            "video file with an audio track."
        ) from exc
    with container:
        if not container.streams.audio:
            raise ValueError(f"file {str(path)!r} has no audio track.")
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        # Planar float output gives [C, n] per frame whatever the codec's native sample format.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            frame.pts = None  # the resampler would otherwise insert silence at timestamp gaps
            chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
        chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        end = (round(stream.duration * stream.time_base * rate)
               if stream.duration is not None and stream.time_base is not None else None)
    if not chunks:
        raise ValueError(f"audio track of {str(path)!r} decoded to no samples.")
    wave = np.concatenate(chunks, axis=1)
    if end is not None:
        # The last AAC frame is padded to 1024 samples; the stream's duration says where it ends.
        wave = wave[:, : int(end)]
    return np.ascontiguousarray(wave, dtype=np.float32), rate


def _is_mapping(x: Any) -> bool:
    # VideoHelperSuite hands over a lazy Mapping subclass, not a dict.
    return isinstance(x, Mapping) or (hasattr(x, "keys") and hasattr(x, "__getitem__"))


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] == "torch"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU or in half precision
        tensor = x.detach().to("cpu")
        # Integer PCM keeps its dtype, so as_channels scales it by the dtype's range.
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    return np.asarray(x)


def _check_rate(rate: Any, name: str) -> int:
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of Hz, got {rate!r}.") from None
    if not np.isfinite(r) or r <= 0 or r != int(r):
        raise ValueError(f"{name} must be a positive whole number of Hz, got {rate!r}.")
    return int(r)


def _from_comfy_audio(audio: Any) -> tuple[np.ndarray, int]:
    try:
        waveform = audio["waveform"]
        rate = audio["sample_rate"]
    except KeyError as exc:
        raise ValueError(
            f"AUDIO input lacks the key {exc.args[0]!r}; expected a mapping with 'waveform' "
            "[B, C, T] and 'sample_rate' (connect a Load Audio node's output)."
        ) from None
    w = _to_numpy(waveform)
    if w.ndim == 3:
        if w.shape[0] == 0:
            raise ValueError("AUDIO input has an empty batch (waveform shape %s)." % (w.shape,))
        if w.shape[0] > 1:
            log.warning("AUDIO input holds a batch of %d clips; using the first one.", w.shape[0])
        w = w[0]
    return as_channels(w, "AUDIO input waveform"), _check_rate(rate, "AUDIO sample_rate")


def as_channels(waveform: Any, what: str = "audio") -> np.ndarray:
    """A waveform array (numpy or torch) -> float32 ``[C, T]`` by the module's one policy.

    ``[T]``, ``[C, T]``, ``[T, C]`` (the smaller dimension, at most :data:`MAX_CHANNELS`, is the
    channels) or ``[1, C, T]``; integers scaled by their dtype's full range; NaN/inf set to 0
    with a warning naming ``what``. Values are not clipped.
    """
    w = _to_numpy(waveform)
    given = tuple(w.shape)
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"{what} must be [T], [C, T], [T, C] or [1, C, T]; got shape {w.shape}.")
    rows, cols = w.shape
    if rows > cols >= 1:
        w, rows, cols = w.T, cols, rows  # [T, C], the soundfile / scipy layout
    if rows == 0:
        raise ValueError(f"{what} has no channels (shape {given}).")
    if rows > MAX_CHANNELS:
        raise ValueError(
            f"{what} has shape {given}: neither axis is a channel axis "
            f"of at most {MAX_CHANNELS}; give [T], [C, T] or [T, C]."
        )
    if np.issubdtype(w.dtype, np.integer):
        info = np.iinfo(w.dtype)
        w = (w.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    w = np.ascontiguousarray(w, dtype=np.float32)
    finite = np.isfinite(w)
    if not finite.all():
        log.warning("%s contains %d NaN or infinite samples; they were set to 0.",
                    what, int(w.size - np.count_nonzero(finite)))
        w = np.where(finite, w, np.float32(0.0))
    return w


def _to_mono(channels: np.ndarray, rate: int, target_rate: int, what: str) -> MonoAudio:
    assert channels.ndim == 2, channels.shape
    if channels.shape[1] == 0:
        raise ValueError(f"{what} has no samples; give a non-empty recording.")
    # No float64 detour: 10 minutes of audio would briefly cost 77 MB more.
    mono = channels[0] if channels.shape[0] == 1 else channels.mean(axis=0, dtype=np.float32)
    duration = Fraction(channels.shape[1], rate)
    return MonoAudio(_resample(mono, rate, target_rate), target_rate, duration)


def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample ``[T]`` float32; the output has exactly ``ceil(T * target / rate)`` samples."""
    if rate == target:
        return np.ascontiguousarray(x, dtype=np.float32)
    n_out = -(-len(x) * target // rate)
    try:
        import soxr

        y = soxr.resample(x.astype(np.float32), rate, target, quality="HQ")
    except ImportError:
        import librosa

        y = librosa.resample(x.astype(np.float32), orig_sr=rate, target_sr=target)
    y = np.asarray(y, dtype=np.float32)
    if len(y) < n_out:
        y = np.pad(y, (0, n_out - len(y)))
    return np.ascontiguousarray(y[:n_out])
