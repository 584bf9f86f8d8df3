"""Lip sync without learned weights: the mouth opening against the speech envelope.

The envelope is the speech's loudness in the vowel band (150-3000 Hz, the pack's acoustic
features) per video frame, in dB, floored :data:`ENVELOPE_RANGE_DB` below its peak: a mouth opens
for vowels, so a synced video's opening follows it. Their Pearson correlation is taken at audio
shifts of ``-max_offset..max_offset`` frames; the shift with the highest correlation is the
audio-video offset. Sign: offset ``k > 0`` means the mouth moves ``k`` frames *after* the sound
(the video lags the audio).

The correlation is taken over the *spoken stretch* (first to last frame within :data:`SPOKEN_DB`
of the peak loudness, :func:`spoken_stretch`): before the first word and after the last the
face rests, and a person whose lips are parted at rest (a smile showing teeth) rightly keeps
them so. Over the whole clip such a rest, open while the speech is silent, would read as bad
sync; how the mouth rests is judged against the source instead (static and texture metrics).
The whole-clip figure is reported beside it.

Bilabials (p, b, m) close the lips: with a phone timing (a file, or recognised by the pack's
phoneme recogniser), each bilabial's frames should hold a closed mouth.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

ENVELOPE_RANGE_DB = 45.0
SPOKEN_DB = 30.0  # frames within this of the peak loudness are speech (the spoken stretch)
SPOKEN_PAD = 2  # frames kept each side of the spoken stretch (the lips part before the sound)
DEFAULT_MAX_OFFSET = 15  # frames: 0.6 s at 25 fps
MOTIONLESS = 1e-3  # std of the mouth opening (eye-corner distances) below which it does not move
BILABIALS = frozenset({"P", "B", "M", "p", "b", "m"})
CLOSED_SHARE = 0.3  # closed: opening at most this share of the clip's open level (90th percentile)
NEIGHBOURHOOD_S = 0.2  # seconds each side of a bilabial its local open level is read over


@dataclass(frozen=True)
class SyncResult:
    """``correlations[j]`` is at offset ``offsets[j]``; ``best_offset`` maximises it."""

    offsets: np.ndarray
    correlations: np.ndarray
    best_offset: int
    best_correlation: float
    correlation_at_zero: float
    frames_used: int
    note: str | None = None


def speech_envelope(wave16k: np.ndarray, fps: Fraction | float, n_frames: int) -> np.ndarray:
    """``[n_frames]`` vowel-band loudness in dB per video frame (the mean power of the 10 ms
    analysis frames inside each video frame), floored ``ENVELOPE_RANGE_DB`` below the peak;
    frames past the audio get the floor."""
    from ..audio.features import FRAME_RATE, acoustic_features

    assert wave16k.ndim == 1, wave16k.shape
    power = 10.0 ** (acoustic_features(wave16k.astype(np.float32)).vowel_db.astype(np.float64) / 10.0)
    times = np.arange(len(power)) / FRAME_RATE
    frame_of = np.floor(times * float(fps) + 1e-9).astype(np.int64)
    inside = frame_of < n_frames
    sums = np.bincount(frame_of[inside], weights=power[inside], minlength=n_frames)
    counts = np.bincount(frame_of[inside], minlength=n_frames)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    db = 10.0 * np.log10(np.maximum(mean, 1e-12))
    floor = db.max() - ENVELOPE_RANGE_DB
    return np.maximum(db, floor)


def spoken_stretch(envelope: np.ndarray) -> slice:
    """Frames ``[first, last]`` whose loudness is within :data:`SPOKEN_DB` of the peak, padded by
    :data:`SPOKEN_PAD`; the whole clip when nothing is loud (no speech to bound)."""
    loud = np.flatnonzero(envelope >= envelope.max() - SPOKEN_DB)
    if len(loud) == 0 or envelope.max() - envelope.min() < SPOKEN_DB:
        return slice(0, len(envelope))
    return slice(max(int(loud[0]) - SPOKEN_PAD, 0), min(int(loud[-1]) + SPOKEN_PAD + 1, len(envelope)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the finite pairs; 0 when either side does not vary (no linear relation)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else 0.0


def sync_offset(mouth: np.ndarray, envelope: np.ndarray, max_offset: int = DEFAULT_MAX_OFFSET) -> SyncResult:
    """Correlation of ``mouth [N]`` (NaN: no face) with ``envelope [N]`` shifted by each offset."""
    assert mouth.shape == envelope.shape and mouth.ndim == 1, (mouth.shape, envelope.shape)
    n = len(mouth)
    max_offset = max(0, min(int(max_offset), n // 3))
    offsets = np.arange(-max_offset, max_offset + 1)
    note = None
    finite = mouth[np.isfinite(mouth)]
    if len(finite) >= 3 and float(finite.std()) < MOTIONLESS:
        note = "the mouth does not move: no correlation with the speech"
    if note is not None:
        # Landmark jitter on a still mouth would correlate by chance: report none.
        zeros = np.zeros(len(offsets))
        return SyncResult(offsets, zeros, 0, 0.0, 0.0, int(len(finite)), note)
    correlations = np.array([_shifted(mouth, envelope, int(k)) for k in offsets])
    if np.all(~np.isfinite(correlations)):
        return SyncResult(offsets, correlations, 0, math.nan, math.nan, int(len(finite)),
                          "too few frames with a face to correlate")
    j = int(np.nanargmax(correlations))
    return SyncResult(offsets, correlations, int(offsets[j]), float(correlations[j]),
                      float(correlations[max_offset]), int(len(finite)), note)


def _shifted(mouth: np.ndarray, envelope: np.ndarray, k: int) -> float:
    # offset k: mouth[t] against envelope[t - k]
    if k >= 0:
        return pearson(mouth[k:], envelope[:len(envelope) - k])
    return pearson(mouth[:k], envelope[-k:])


@dataclass(frozen=True)
class Phone:
    phone: str
    start: float  # seconds
    end: float


def read_phones(path: str | os.PathLike) -> list[Phone]:
    """A phone timing file: one ``START END PHONE`` a line (seconds; whitespace or tabs; ``#``
    comments), as aligners and ``espeak-ng``-based scripts write them."""
    phones = []
    text = os.fspath(path)
    try:
        lines = open(text, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--phones {text!r} cannot be read as text ({error})") from None
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            start, end, phone = float(parts[0]), float(parts[1]), parts[2]
        except (IndexError, ValueError):
            raise ValueError(f"--phones {text!r} line {number}: expected 'START END PHONE' "
                             f"(seconds), got {line!r}") from None
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"--phones {text!r} line {number}: the end must not come before the "
                             f"start, got {start} .. {end}")
        phones.append(Phone(phone, start, end))
    return phones


def recognised_phones(wave16k: np.ndarray) -> list[Phone]:
    """Phones recognised by the pack's phone-loop recogniser (English-trained)."""
    from ..audio.phonemes import phoneme_timeline

    return [Phone(s.phone, s.start, s.end) for s in phoneme_timeline(wave16k.astype(np.float32))]


@dataclass(frozen=True)
class ClosureResult:
    bilabials: int  # bilabial phones inside the clip with a face on their frames
    closed: int
    open_level: float  # the clip's 90th-percentile opening, eye-corner distances
    missed_at: tuple[float, ...]  # start times (s) of the bilabials the mouth stayed open on
    # Per bilabial: its smallest opening / the largest within NEIGHBOURHOOD_S around it (the
    # vowels it sits between); 0 = shut, 1 = no closing motion at all. Local, so a clip that
    # opens little overall is not excused by its low open level.
    local_ratios: tuple[float, ...] = ()


def bilabial_closure(mouth: np.ndarray, fps: Fraction | float, phones: list[Phone]) -> ClosureResult:
    """Whether the mouth closes (opening at most ``CLOSED_SHARE`` of the open level) on some
    frame of each bilabial, give or take one frame."""
    finite = mouth[np.isfinite(mouth)]
    open_level = float(np.percentile(finite, 90)) if len(finite) else math.nan
    count = closed = 0
    missed, ratios = [], []
    reach = int(round(NEIGHBOURHOOD_S * float(fps)))
    for phone in phones:
        if phone.phone not in BILABIALS:
            continue
        first = int(math.floor(phone.start * float(fps))) - 1
        last = int(math.ceil(phone.end * float(fps))) + 1
        window = mouth[max(first, 0):min(last, len(mouth))]
        window = window[np.isfinite(window)]
        if len(window) == 0:
            continue
        count += 1
        if float(window.min()) <= CLOSED_SHARE * open_level:
            closed += 1
        else:
            missed.append(round(phone.start, 3))
        around = mouth[max(first - reach, 0):min(last + reach, len(mouth))]
        peak = float(np.nanmax(around))
        ratios.append(float(window.min()) / peak if peak > 0 else 1.0)
    return ClosureResult(count, closed, open_level, tuple(missed), tuple(ratios))
