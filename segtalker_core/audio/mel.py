"""Wav2Lip-compatible mel spectrogram and the per-video-frame mel windows.

The spectrogram is Wav2Lip's (hparams of the public repository): 16 kHz, pre-emphasis 0.97,
STFT n_fft 800 / hop 200 / win 800 Hann, centred with reflect padding (what librosa did before
0.10 changed the default), |STFT| through 80 Slaney mels 55..7600 Hz, ``20 log10(max(1e-5, m)) - 20``
then ``clip(8 (S + 100) / 100 - 4, -4, 4)``. 80 mel steps per second; step ``j`` is centred on
sample ``200 j``.

Any range of steps can be computed on its own (:func:`mel_range`) and equals the same steps of the
whole-file spectrogram (to float rounding), which is what lets :func:`iter_mel_windows` walk hours of audio in flat
memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .io import TARGET_RATE, AudioSource, MonoAudio, load_audio
from .timing import FpsLike, frame_count, mel_window_starts

N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL = 1e-5  # -100 dB
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS = 4.0
WINDOW_STEPS = 16  # 0.2 s per video frame
SILENCE_VALUE = -MAX_ABS  # what digital silence maps to


@lru_cache(maxsize=1)
def mel_basis() -> np.ndarray:
    """``[80, 401]`` float32 Slaney mel filter bank (keyword arguments: librosa >= 0.10 needs them)."""
    import librosa

    basis = librosa.filters.mel(
        sr=TARGET_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX, htk=False, norm="slaney"
    )
    return basis.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """``[800]`` float64 periodic Hann window (librosa's / ``scipy.signal.get_window("hann",
    800)``): the symmetric window of 801 points without its last one, so that overlapping
    frames at hop 200 sum to a constant. Computed here because importing ``scipy.signal`` for
    it cost a third of a second of every cold start."""
    phase = np.linspace(-np.pi, np.pi, WIN + 1)
    return (0.5 + 0.5 * np.cos(phase))[:WIN]


def num_mel_steps(n_samples: int) -> int:
    """Steps of a centred STFT over ``n_samples``."""
    return 1 + n_samples // HOP


def mel_range(wave16k: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Mel steps ``start..stop-1`` of ``wave16k`` ([N] float at 16 kHz) -> ``[80, stop-start]`` float32."""
    n = len(wave16k)
    assert wave16k.ndim == 1 and n > 0, wave16k.shape
    assert 0 <= start <= stop <= num_mel_steps(n), (start, stop, num_mel_steps(n))
    out = np.empty((N_MELS, stop - start), np.float32)
    # Blocks bound the [steps, 800] frame matrix (10 min at once would be ~300 MB).
    for a in range(start, stop, _BLOCK_STEPS):
        b = min(a + _BLOCK_STEPS, stop)
        out[:, a - start : b - start] = _mel_block(wave16k, a, b)
    return out


_BLOCK_STEPS = 2048


def _mel_block(wave16k: np.ndarray, start: int, stop: int) -> np.ndarray:
    n = len(wave16k)
    # Sample indices the frames touch, reflected at the ends like np.pad(mode="reflect").
    lo = start * HOP - N_FFT // 2
    hi = (stop - 1) * HOP + N_FFT // 2
    idx = _reflect_indices(np.arange(lo, hi), n)
    # Pre-emphasis comes before the padding (lfilter over the whole file, zero initial state), so
    # a reflected sample is the emphasised value of the sample it mirrors.
    cur = wave16k[idx].astype(np.float64)
    prev = np.where(idx > 0, wave16k[np.maximum(idx - 1, 0)], 0.0).astype(np.float64)
    emph = cur - PREEMPHASIS * prev
    frames = np.lib.stride_tricks.sliding_window_view(emph, N_FFT)[::HOP]  # [steps, 800]
    assert frames.shape[0] == stop - start, (frames.shape, start, stop)
    spec = np.abs(np.fft.rfft(frames * _hann(), axis=1)).astype(np.float32)  # [steps, 401]
    return _normalise(mel_basis() @ spec.T)  # [80, steps]


def melspectrogram(audio: AudioSource | np.ndarray, sample_rate: int | None = None) -> np.ndarray:
    """The whole Wav2Lip mel spectrogram, ``[80, M]`` float32 with ``M = 1 + N // 200``.

    ``audio`` is anything :func:`~segtalker_core.audio.io.load_audio` accepts; a bare array is
    taken as 16 kHz unless ``sample_rate`` says otherwise.
    """
    wave = _wave16k(audio, sample_rate)
    return mel_range(wave, 0, num_mel_steps(len(wave)))


def _normalise(mel: np.ndarray) -> np.ndarray:
    s = 20.0 * np.log10(np.maximum(MIN_LEVEL, mel)) - REF_LEVEL_DB
    s = 2 * MAX_ABS * (s - MIN_LEVEL_DB) / (-MIN_LEVEL_DB) - MAX_ABS
    return np.clip(s, -MAX_ABS, MAX_ABS).astype(np.float32)


def _reflect_indices(i: np.ndarray, n: int) -> np.ndarray:
    """Indices into an array of length n, reflected without repeating the edge (np.pad 'reflect')."""
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    j = np.mod(i, period)
    return np.where(j >= n, period - j, j)


def _wave16k(audio: AudioSource | np.ndarray, sample_rate: int | None) -> np.ndarray:
    # A bare float32 [T] array at 16 kHz passes load_audio without a copy, and through the same
    # rate / empty / NaN policy as every other input.
    return load_audio(audio, sample_rate=sample_rate or TARGET_RATE).samples


@dataclass(frozen=True)
class MelWindows:
    """Mel windows for video frames ``start..start+len-1``."""

    start: int  # index of the first video frame
    windows: np.ndarray  # [T, 80, 16] float32

    def __len__(self) -> int:
        return int(self.windows.shape[0])


def mel_windows(
    audio: AudioSource | np.ndarray,
    fps: FpsLike,
    start: int = 0,
    stop: int | None = None,
    n_frames: int | None = None,
    align: str = "start",
    pad: str = "silence",
    sample_rate: int | None = None,
) -> np.ndarray:
    """``[stop-start, 80, 16]`` float32 mel windows, one per video frame.

    Frame ``i``'s window starts at mel step ``int(80 i / fps)`` (``align="start"``, Wav2Lip
    inference) or is centred on the frame (``align="centre"``). Steps outside the audio are
    filled with ``pad``: ``"silence"`` (-4, what silence maps to) or ``"edge"`` (the first/last
    step repeated), so every frame has a full window.

    ``n_frames`` defaults to ``ceil(duration * fps)``; only the mel steps the frames need are
    computed, so a slice of a long file costs only its own length.
    """
    audio = _as_mono(audio, sample_rate)
    total = frame_count(audio.duration, fps) if n_frames is None else int(n_frames)
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise ValueError(f"frame range {start}..{stop} is outside 0..{total}.")
    if pad not in ("silence", "edge"):
        raise ValueError(f"pad must be 'silence' or 'edge', got {pad!r}.")
    if stop == start:
        return np.zeros((0, N_MELS, WINDOW_STEPS), np.float32)
    wave = audio.samples
    m_total = num_mel_steps(len(wave))
    starts = mel_window_starts(start, stop, fps, align=align, window=WINDOW_STEPS)
    lo = int(np.clip(starts.min(), 0, m_total - 1))
    hi = int(np.clip(starts.max() + WINDOW_STEPS, lo + 1, m_total))
    mel = mel_range(wave, lo, hi)  # [80, hi - lo]
    steps = starts[:, None] + np.arange(WINDOW_STEPS)[None, :]  # [T, 16] absolute mel steps
    inside = (steps >= 0) & (steps < m_total)
    local = np.clip(steps, lo, hi - 1) - lo
    out = mel[:, local]  # [80, T, 16]
    if pad == "silence":
        out = np.where(inside[None], out, np.float32(SILENCE_VALUE))
    # "edge": clipping the indices already repeats the first/last computed step, and those are the
    # file's first/last steps whenever a window actually runs outside the audio.
    return np.ascontiguousarray(out.transpose(1, 0, 2), dtype=np.float32)


def iter_mel_windows(
    audio: AudioSource | np.ndarray,
    fps: FpsLike,
    chunk_frames: int = 256,
    start: int = 0,
    stop: int | None = None,
    n_frames: int | None = None,
    align: str = "start",
    pad: str = "silence",
    sample_rate: int | None = None,
) -> Iterator[MelWindows]:
    """Mel windows for frames ``start..stop`` in chunks of ``chunk_frames``; memory stays flat.

    Concatenating the chunks gives :func:`mel_windows` over the same range (to float rounding:
    the matrix products are blocked differently, ~1e-6).
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}.")
    audio = _as_mono(audio, sample_rate)
    total = frame_count(audio.duration, fps) if n_frames is None else int(n_frames)
    stop = total if stop is None else stop
    for a in range(start, stop, chunk_frames):
        b = min(a + chunk_frames, stop)
        w = mel_windows(audio, fps, a, b, n_frames=total, align=align, pad=pad)
        yield MelWindows(start=a, windows=w)


def _as_mono(audio: AudioSource | np.ndarray, sample_rate: int | None) -> MonoAudio:
    return load_audio(audio, sample_rate=sample_rate or TARGET_RATE)
