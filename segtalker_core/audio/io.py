"""Audio in: ComfyUI AUDIO mappings, files and arrays -> 16 kHz mono float32 (:class:`MonoAudio`).

Audio out: a ComfyUI-style AUDIO dict read from a file (:func:`audio_dict_from_file`), because
ComfyUI's own LoadAudio needs torchaudio.

The exact duration of the *source* is kept as a fraction (samples / rate) so that frame counts do
not depend on how a resampler rounds its output length.

**One policy for every input**, whatever it came as (file, ComfyUI AUDIO mapping, numpy array,
torch tensor, :class:`MonoAudio` built by hand). :func:`audio_channels` is the one door for
files, mappings and arrays, and :class:`MonoAudio` checks itself when it is built:

* **Sample rate**: a whole number of Hz (``bool``, ``NaN``, strings are refused) within
  :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE` (1 kHz .. 768 kHz), checked before anything
  is decoded, copied or resampled (a rate of 1 Hz would otherwise ask the resampler for 16000
  output samples per input sample).
* **Empty audio** (0 samples) is refused with a ValueError naming the input.
* **NaN / inf samples** (:func:`finite_waveform`): replaced by 0 with *one* warning (logger
  ``"segtalker.audio"``) naming the input and how many samples (and what share) were bad. If more
  than half of the samples (:data:`MAX_NON_FINITE_SHARE`) are NaN/inf, the input is refused with
  a ValueError instead: such audio is not speech with a few glitches but the output of a stage
  that failed, and dubbing it as silence would hide that. The check is one float64 sum over the
  samples (no temporary array, no numpy RuntimeWarning); samples are counted only when it fails.
* **Layouts** (:func:`as_channels`, also used by the mp4 writer): ``[T]`` (mono), ``[C, T]``,
  ``[T, C]`` and ComfyUI's ``[1, C, T]``; of a 2-d array the smaller dimension is the channel
  axis, and it must be at most :data:`MAX_CHANNELS` (8, i.e. 7.1 sound), otherwise the array is
  refused: a [T, C] array from soundfile or scipy is transposed, and no real recording is 8
  samples long;
* **Integers** are scaled by their dtype's full range: int16 by 1/32768, int32 by 1/2**31, uint8
  is centred on 128 and scaled by 1/128, so full scale is -1..1 (as soundfile reads PCM). Values
  are not clipped.

Files: wav/flac/ogg are read by soundfile, everything else by ffmpeg through PyAV
(:func:`read_audio_file`). Encoder priming is removed the same way for every container: where the
container says how much to skip (mp4/mov edit lists, Matroska's codec delay, the LAME header of
an mp3) ffmpeg skips it; where nothing says so (mp4 without edit list or fragmented, raw ADTS
``.aac``, MPEG-TS), the AAC decoder's own 1024-sample lead-in (one frame: every AAC encoder
primes at least that much) is dropped here. The padding of the last frame is cut at the
stream's duration (Matroska/WebM: the segment's), which mp4 and Matroska keep to the
millisecond; raw ADTS and MPEG-TS record no end, so up to one frame of padding stays there. So a
speech file gives the same number of samples (to within a millisecond), and the same number of
video frames, whether it is a wav or the sound track of an mp4.
"""
from __future__ import annotations

import numbers
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
MIN_SAMPLE_RATE = 1_000  # below: a rate in kHz given as Hz, or a frame rate
MAX_SAMPLE_RATE = 768_000  # the highest rate audio interfaces record at
MAX_NON_FINITE_SHARE = 0.5  # more NaN/inf than this is refused, not silenced

log = get_logger("audio")

AudioSource = Union["MonoAudio", Mapping, str, os.PathLike, np.ndarray, Any]


@dataclass(frozen=True)
class MonoAudio:
    """Mono float32 audio at ``sample_rate`` plus the exact duration of what it was made from.

    Built by hand, it is held to the module's policy: a rate in range, at least one sample, and
    NaN/inf samples set to 0 with a warning (or refused when most are bad).
    """

    samples: np.ndarray  # [N] float32
    sample_rate: int
    duration: Fraction  # seconds, exact: source samples / source rate

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray) or self.samples.ndim != 1 \
                or self.samples.dtype != np.float32:
            shape = getattr(self.samples, "shape", None)
            dtype = getattr(self.samples, "dtype", type(self.samples).__name__)
            raise TypeError(f"MonoAudio.samples must be a 1-d float32 numpy array, got shape "
                            f"{shape} of {dtype}; build it with load_audio()")
        object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate, "MonoAudio"))
        if len(self.samples) == 0:
            raise ValueError("MonoAudio holds no samples; give a non-empty recording.")
        object.__setattr__(self, "samples", finite_waveform(self.samples, "MonoAudio"))

    def __len__(self) -> int:
        return int(self.samples.shape[0])

    @property
    def seconds(self) -> float:
        return float(self.duration)


def load_audio(
    source: AudioSource, sample_rate: int | None = None, target_rate: int = TARGET_RATE, *,
    name: str | None = None,
) -> MonoAudio:
    """Any supported audio -> mono float32 at ``target_rate``.

    ``source`` may be a ComfyUI AUDIO mapping (``waveform`` [B, C, T], ``sample_rate``), a file
    path (wav/flac/ogg via soundfile, anything else ffmpeg reads via PyAV: mp3, m4a, mp4, ...),
    a numpy array / torch tensor (``[T]``, ``[C, T]`` or ``[B, C, T]``) with ``sample_rate``,
    or a :class:`MonoAudio` (resampled if its rate differs). ``name`` (e.g. the node input's
    name) is used in warnings and errors about a mapping or an array.
    """
    target_rate = check_sample_rate(target_rate, "load_audio target_rate")
    if isinstance(source, MonoAudio):
        if source.sample_rate == target_rate:
            return source
        return MonoAudio(
            _resample(source.samples, source.sample_rate, target_rate),
            target_rate,
            source.duration,
        )
    channels, rate = audio_channels(source, sample_rate, name=name)
    return _to_mono(channels, rate, target_rate)


def audio_channels(source: AudioSource, sample_rate: int | None = None, *,
                   name: str | None = None) -> tuple[np.ndarray, int]:
    """Any supported audio at its own rate and channel count: (float32 ``[C, T]``, rate).

    The one door through which files, ComfyUI AUDIO mappings and arrays pass the module's policy
    (rate, emptiness, NaN/inf, layout, integer scaling). A :class:`MonoAudio` gives ``[1, N]`` at
    its rate. ``sample_rate`` is required for arrays only. Raises ValueError / TypeError /
    FileNotFoundError with a message naming the input.
    """
    if isinstance(source, MonoAudio):
        return source.samples[None], source.sample_rate
    if isinstance(source, (str, os.PathLike)):
        return read_audio_file(source)
    if _is_mapping(source):
        return _from_comfy_audio(source, "AUDIO input" + (f" {name!r}" if name else ""))
    if _is_array(source):
        what = "audio array" + (f" {name!r}" if name else "")
        if sample_rate is None:
            raise ValueError(f"{what} was given without sample_rate; pass sample_rate=<Hz>.")
        rate = check_sample_rate(sample_rate, what)  # before as_channels copies anything
        return _non_empty(as_channels(source, what), what), rate
    raise TypeError(
        f"cannot read audio from a {type(source).__name__}; give a ComfyUI AUDIO "
        "mapping, a file path, or a numpy array with sample_rate."
    )


def read_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file at its own rate and channel count: (float32 ``[C, T]``, sample rate).

    The rate is checked before the samples are decoded; an empty file, a file without an audio
    track (a silent video) and mostly-NaN audio are ValueErrors naming the file; a few NaN/inf
    samples are set to 0 with a warning naming it.
    """
    p = Path(path)
    what = f"audio file {os.fspath(path)!r}"
    if not p.is_file():
        raise FileNotFoundError(f"{what} does not exist (check the path).")
    read = _read_with_soundfile(p, what)
    channels, rate = read if read is not None else _read_with_av(p, what)
    return finite_waveform(_non_empty(channels, what), what), rate


def audio_dict_from_file(path: str | os.PathLike) -> dict[str, Any]:
    """A ComfyUI AUDIO dict from a file, at the file's own rate and channel count.

    Returns ``{"waveform": torch.float32 [1, C, T], "sample_rate": int}``.
    """
    import torch

    channels, rate = read_audio_file(path)
    return {"waveform": torch.from_numpy(channels).unsqueeze(0).contiguous(), "sample_rate": rate}


# ----------------------------------------------------------------------------------- policy

def check_sample_rate(rate: Any, what: str) -> int:
    """``rate`` as an int after refusing what is not a whole number of Hz in range.

    Accepts ints (numpy ints too), whole floats (``44100.0``) and 0-d tensors/arrays of them.
    Refuses ``bool``, strings, NaN/inf, fractions of a Hz and rates outside
    :data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE`, with a ValueError naming ``what``.
    """
    if hasattr(rate, "item") and getattr(rate, "ndim", None) == 0:
        rate = rate.item()  # a 0-d numpy array or torch tensor
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real):
        raise ValueError(f"{what}: sample_rate must be a whole number of Hz, got {rate!r} "
                         f"({type(rate).__name__}); give e.g. 16000, 44100 or 48000.")
    if isinstance(rate, numbers.Integral):
        value = int(rate)
    else:
        as_float = float(rate)
        if not np.isfinite(as_float) or as_float != int(as_float):
            raise ValueError(f"{what}: sample_rate must be a whole number of Hz, got "
                             f"{rate!r}; give e.g. 16000, 44100 or 48000.")
        value = int(as_float)
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ValueError(f"{what}: sample_rate {value} Hz is outside {MIN_SAMPLE_RATE}.."
                         f"{MAX_SAMPLE_RATE} Hz; give the rate the audio was recorded at "
                         f"(e.g. 16000, 44100 or 48000).")
    return value


def finite_waveform(wave: np.ndarray, what: str) -> np.ndarray:
    """``wave`` (a float array) with NaN/inf samples set to 0, by the module's one policy.

    Returned as is when every sample is finite. A few bad samples: zeroed, with one warning
    naming ``what``, the count and the share. More than :data:`MAX_NON_FINITE_SHARE` of them:
    ValueError naming ``what``.
    """
    with np.errstate(all="ignore"):  # the sum is only a probe: NaN/inf anywhere make it non-finite
        if np.isfinite(np.sum(wave, dtype=np.float64)):
            return wave
    finite = np.isfinite(wave)
    bad = int(wave.size - np.count_nonzero(finite))
    if bad > MAX_NON_FINITE_SHARE * wave.size:
        raise ValueError(
            f"{what} holds no usable sound ({bad} of {wave.size} samples are NaN/inf); check the "
            f"node or file that produced it."
        )
    log.warning("%s: %d of %d samples (%s) are NaN/inf; they were set to 0 (silence).",
                what, bad, wave.size, _share(bad, wave.size))
    return np.where(finite, wave, wave.dtype.type(0))


def _share(part: int, whole: int) -> str:
    share = part / whole
    return "<0.1%" if share < 0.001 else f"{share:.1%}"


def _non_empty(channels: np.ndarray, what: str) -> np.ndarray:
    if channels.shape[-1] == 0:
        raise ValueError(f"{what} has no samples; give a non-empty recording.")
    return channels


# ----------------------------------------------------------------------------------- files

def _read_with_soundfile(path: Path, what: str) -> tuple[np.ndarray, int] | None:
    """(``[C, T]``, rate) of a file libsndfile reads (wav/flac/ogg), else None (try ffmpeg)."""
    try:
        import soundfile as sf

        sound = sf.SoundFile(str(path))
    except Exception:
        return None  # not a libsndfile format: ffmpeg decides
    with sound:
        rate = check_sample_rate(sound.samplerate, what)  # before the samples are read
        try:
            data = sound.read(dtype="float32", always_2d=True)  # [T, C]
        except Exception:
            return None  # a damaged or unusual file ffmpeg may still read
    return np.ascontiguousarray(data.T), rate


def _read_with_av(path: Path, what: str) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(str(path))
    except Exception as exc:  # av raises its own error zoo; one message is what a user needs
        raise ValueError(
            f"{what} could not be opened ({exc}); use wav, flac, mp3, m4a or a "
            "video file with an audio track."
        ) from exc
    with container:
        if not container.streams.audio:
            raise ValueError(f"file {str(path)!r} has no audio track.")
        stream = container.streams.audio[0]
        rate = check_sample_rate(stream.rate or stream.codec_context.sample_rate, what)
        # Planar float output gives [C, n] per frame whatever the codec's native sample format.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        chunks: list[np.ndarray] = []
        first_packet_pts = first_frame_pts = None
        try:
            for packet in container.demux(stream):
                if first_packet_pts is None and packet.pts is not None:
                    first_packet_pts = packet.pts
                for frame in packet.decode():
                    if first_frame_pts is None and frame.pts is not None:
                        first_frame_pts = frame.pts
                    frame.pts = None  # the resampler would otherwise insert silence at gaps
                    chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.error.FFmpegError as exc:
            raise ValueError(f"{what} could not be decoded ({exc}); the file is damaged or "
                             "truncated: re-export or re-download it.") from None
        track = _TrackTiming.of(stream, rate, first_packet_pts, first_frame_pts,
                                container_duration=container.duration,
                                exact_duration=_has_exact_durations(container))
    if not chunks:
        raise ValueError(f"audio track of {str(path)!r} decoded to no samples.")
    wave = track.trim(np.concatenate(chunks, axis=1))
    return np.ascontiguousarray(wave, dtype=np.float32), rate


def _has_exact_durations(container: Any) -> bool:
    # mp4/mov durations come from sample tables and edit lists; raw streams (ADTS, mp3 without a
    # header) only have an estimate from the bitrate, Matroska one rounded to the millisecond.
    name = getattr(container.format, "name", "") or ""
    return "mov" in name.split(",") or "mp4" in name.split(",")


@dataclass(frozen=True)
class _TrackTiming:
    """Where the real audio of a decoded track starts and ends, in samples of its output."""

    priming: int  # leading samples to drop: the AAC lead-in no container signalled
    end: int | None  # samples to keep after dropping the priming, from the stream's duration
    max_tail: int  # the most that ``end`` may cut off; more means the duration is an estimate

    @classmethod
    def of(cls, stream: Any, rate: int, first_packet_pts: int | None,
           first_frame_pts: int | None, container_duration: int | None,
           exact_duration: bool) -> "_TrackTiming":
        time_base = stream.time_base
        frame_size = int(stream.codec_context.frame_size or 0) or 1024

        def samples(pts: int | None) -> int:
            return 0 if pts is None or time_base is None else round(pts * time_base * rate)

        # Whether ffmpeg already skipped a lead-in (edit list, codec delay, LAME header): then the
        # first decoded sample comes after the first packet. How much it skipped is not read from
        # that gap: Matroska's millisecond timestamps round it (1014 for 1024 at 44.1 kHz).
        skipped = samples(first_frame_pts) - samples(first_packet_pts) > 0
        is_aac = (stream.codec_context.name or "").startswith("aac")
        priming = frame_size if is_aac and not skipped else 0
        end = None
        if stream.duration is not None and time_base is not None:
            start = stream.start_time if stream.start_time is not None else first_frame_pts
            stop = samples(stream.duration) + samples(start)
            end = stop - samples(first_frame_pts) - priming
        elif container_duration is not None and first_packet_pts is not None:
            # Matroska/WebM store no per-stream duration and no length of the last block; the
            # segment's duration (microseconds, to the millisecond) counts from the first packet,
            # lead-in included, and it ends where the encoder said the sound ends.
            stop = samples(first_packet_pts) + round(container_duration * rate / 1_000_000)
            end = stop - samples(first_frame_pts) - priming
        return cls(priming, end, max_tail=(1 << 62) if exact_duration else frame_size)

    def trim(self, wave: np.ndarray) -> np.ndarray:
        wave = wave[:, self.priming:]
        if self.end is not None and 0 < self.end < wave.shape[1] \
                and wave.shape[1] - self.end <= self.max_tail:
            # The last AAC/mp3 frame is padded to a whole frame; the duration says where it ends.
            wave = wave[:, : self.end]
        return wave


# ----------------------------------------------------------------------------------- arrays

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


def _from_comfy_audio(audio: Any, what: str) -> tuple[np.ndarray, int]:
    try:
        waveform = audio["waveform"]
        rate = audio["sample_rate"]
    except KeyError as exc:
        raise ValueError(
            f"{what} lacks the key {exc.args[0]!r}; expected a mapping with 'waveform' "
            "[B, C, T] and 'sample_rate' (connect a Load Audio node's output)."
        ) from None
    rate = check_sample_rate(rate, what)  # before the waveform is copied or converted
    w = _to_numpy(waveform)
    if w.ndim == 3:
        if w.shape[0] == 0:
            raise ValueError(f"{what} has an empty batch (waveform shape {w.shape}).")
        if w.shape[0] > 1:
            log.warning("%s holds a batch of %d clips; using the first one.", what, w.shape[0])
        w = w[0]
    return _non_empty(as_channels(w, what), what), rate


def as_channels(waveform: Any, what: str = "audio") -> np.ndarray:
    """A waveform array (numpy or torch) -> float32 ``[C, T]`` by the module's one policy.

    ``[T]``, ``[C, T]``, ``[T, C]`` (the smaller dimension, at most :data:`MAX_CHANNELS`, is the
    channels) or ``[1, C, T]``; integers scaled by their dtype's full range; NaN/inf by
    :func:`finite_waveform` (zeroed with a warning naming ``what``, refused when most are bad).
    Values are not clipped.
    """
    w = _to_numpy(waveform)
    given = tuple(w.shape)
    if w.dtype.kind not in "iuf":
        raise ValueError(f"{what} has samples of dtype {w.dtype}; give float or integer PCM.")
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
    return finite_waveform(w, what) if w.size else w


def _to_mono(channels: np.ndarray, rate: int, target_rate: int) -> MonoAudio:
    """``[C, T]`` (already through the policy) -> :class:`MonoAudio` at ``target_rate``."""
    assert channels.ndim == 2 and channels.shape[1] > 0, channels.shape
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
