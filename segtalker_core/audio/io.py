"""Audio in: ComfyUI AUDIO mappings, files and arrays -> 16 kHz mono float32 (:class:`MonoAudio`).

Audio out: a ComfyUI-style AUDIO dict read from a file (:func:`audio_dict_from_file`), because
ComfyUI's own LoadAudio needs torchaudio.

The exact duration of the *source* is kept as a fraction (samples / rate) so that frame counts do
not depend on how a resampler rounds its output length.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

TARGET_RATE = 16000

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
        channels = _as_channels(_to_numpy(source), "audio array")
        rate = _check_rate(sample_rate, "sample_rate")
        what = "audio array"
    else:
        raise TypeError(
            f"load_audio: cannot read audio from a {type(source).__name__}; give a ComfyUI AUDIO "
            "mapping, a file path, or a numpy array with sample_rate."
        )
    return _to_mono(channels, rate, target_rate, what)


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file at its own rate: (float32 ``[C, T]``, sample rate)."""
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
        n_ch = int(stream.codec_context.channels or 1)
        # Planar float output gives [C, n] per frame whatever the codec's native sample format.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        chunks: list[np.ndarray] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(n_ch, -1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(n_ch, -1))
    if not chunks:
        raise ValueError(f"audio track of {str(path)!r} decoded to no samples.")
    return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), rate


def _is_mapping(x: Any) -> bool:
    # VideoHelperSuite hands over a lazy Mapping subclass, not a dict.
    return isinstance(x, Mapping) or (hasattr(x, "keys") and hasattr(x, "__getitem__"))


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] == "torch"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor, possibly on GPU or in half precision
        return x.detach().to("cpu").float().numpy()
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
            warnings.warn(
                f"AUDIO input holds a batch of {w.shape[0]} clips; using the first one.",
                stacklevel=3,
            )
        w = w[0]
    return _as_channels(w, "AUDIO input waveform"), _check_rate(rate, "AUDIO sample_rate")


def _as_channels(w: np.ndarray, what: str) -> np.ndarray:
    """Any ``[T]`` / ``[C, T]`` / ``[1, C, T]`` array -> float32 ``[C, T]`` in -1..1."""
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"{what} must be [T], [C, T] or [B, C, T]; got shape {w.shape}.")
    if w.shape[0] > 16 and w.shape[1] <= 16:
        # [T, C] (soundfile / scipy layout) given where [C, T] is expected.
        warnings.warn(f"{what} looks like [T, C] (shape {w.shape}); transposing.", stacklevel=4)
        w = w.T
    if np.issubdtype(w.dtype, np.integer):
        info = np.iinfo(w.dtype)
        w = (w.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    w = np.asarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        warnings.warn(f"{what} contains NaN or infinite samples; they were set to 0.", stacklevel=4)
        w = np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)
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
