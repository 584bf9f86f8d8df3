"""Phoneme timeline from pocketsphinx's shipped en-us acoustic model, in phone-loop (allphone) mode.

Allphone decoding needs no words and no dictionary: a phone n-gram (``en-us-phone.lm.bin``, in the
pocketsphinx wheel) constrains the phone sequence. It is English-trained; on other languages it
still returns the nearest English phones, which is why the articulation also has an acoustic path.

Only the sounding stretches are decoded, in pieces of at most :data:`MAX_PIECE_S` seconds split at
pauses (:func:`split_points`), so memory and search time per piece are bounded on long audio.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RATE = 16000
FRAME_RATE = 100  # pocketsphinx's default -frate
MAX_PIECE_S = 20.0
MIN_PIECE_S = 8.0


class PhonemeRecognizerUnavailable(RuntimeError):
    """pocketsphinx or its model cannot be used; callers fall back to the acoustic path."""


@dataclass(frozen=True)
class PhoneSegment:
    phone: str  # ARPAbet (``SIL`` for silence, ``+NSN+`` etc. for fillers)
    start: float  # seconds
    end: float  # seconds, exclusive

    @property
    def duration(self) -> float:
        return self.end - self.start


def default_model_dir() -> str:
    """The en-us model directory inside the pocketsphinx wheel (holds ``en-us/`` and the phone LM)."""
    try:
        import pocketsphinx
    except ImportError as exc:
        raise PhonemeRecognizerUnavailable(f"pocketsphinx is not installed ({exc}).") from exc
    return pocketsphinx.get_model_path("en-us")


def phoneme_timeline(
    wave16k: np.ndarray, model_dir: str | None = None, max_piece_s: float = MAX_PIECE_S
) -> list[PhoneSegment]:
    """Recognise phones in 16 kHz mono ``[N]`` audio -> time-ordered, non-overlapping segments.

    ``model_dir`` holds the acoustic model directory ``en-us/`` and ``en-us-phone.lm.bin``
    (default: the one shipped with pocketsphinx). Sounding stretches are decoded in pieces of at
    most ``max_piece_s`` seconds cut at pauses; silence between them gets no segment. Raises :class:`PhonemeRecognizerUnavailable`
    if pocketsphinx or the model is missing.
    """
    assert wave16k.ndim == 1, wave16k.shape
    model_dir = model_dir or default_model_dir()
    hmm = os.path.join(model_dir, "en-us")
    phone_lm = os.path.join(model_dir, "en-us-phone.lm.bin")
    for path in (hmm, phone_lm):
        if not os.path.exists(path):
            raise PhonemeRecognizerUnavailable(
                f"pocketsphinx model file {path!r} is missing (model_dir={model_dir!r})."
            )
    decoder, lock = _decoder(hmm, phone_lm)
    out: list[PhoneSegment] = []
    with lock:
        # The live cepstral mean (and the rest of the feature state) adapts across utterances:
        # without a fresh start the phones of one recording would depend on what the cached
        # decoder heard before (seen as a dub whose first frames differed after another file had
        # been talked). Within one recording the pieces share it, as in a fresh decoder.
        decoder.reinit_feat()
        for a, b in split_points(wave16k, max_s=max_piece_s, min_s=min(MIN_PIECE_S, max_piece_s / 2)):
            pcm = (np.clip(wave16k[a:b], -1.0, 1.0) * 32767.0).astype("<i2")
            out.extend(_decode_piece(decoder, pcm, a / RATE))
    return out


def split_points(
    wave16k: np.ndarray, max_s: float = MAX_PIECE_S, min_s: float = MIN_PIECE_S
) -> list[tuple[int, int]]:
    """Sample ranges ``(a, b)`` worth decoding: the sounding stretches of the signal.

    Stretches are frames within 45 dB of the loud parts (and above -70 dBFS), joined across gaps
    under 0.3 s and padded with 0.15 s of context; one longer than ``max_s`` is cut at the
    quietest 100 ms between ``min_s`` and ``max_s`` into it. Long silences are left out: the
    allphone decoder turns them into phantom phones (its live cepstral mean drifts on silence).
    """
    from scipy.ndimage import uniform_filter1d

    n = len(wave16k)
    hop = RATE // FRAME_RATE
    frames = n // hop
    if frames == 0:
        return [(0, n)] if n else []
    view = wave16k[: frames * hop].reshape(frames, hop)
    # einsum sums squares per frame without a squared copy of the whole file.
    energy = np.einsum("ij,ij->i", view, view).astype(np.float64) / hop
    level = 10.0 * np.log10(np.maximum(energy, 1e-12))
    loud = level[level > _ABS_FLOOR_DB]
    if loud.size == 0:
        return []
    sounding = level > max(_ABS_FLOOR_DB, float(np.percentile(loud, 95)) - _RANGE_DB)
    runs = _runs(sounding)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < _JOIN_GAP:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    # "nearest" edges: zero padding would make the ends of a search range look quiet
    smooth = uniform_filter1d(energy, 10, mode="nearest")
    max_f, min_f = int(max_s * FRAME_RATE), max(1, int(min_s * FRAME_RATE))
    pieces: list[tuple[int, int]] = []
    for a, b in merged:
        a, b = max(0, a - _PAD), min(frames, b + _PAD)
        while b - a > max_f:
            cut = a + min_f + int(np.argmin(smooth[a + min_f : a + max_f]))
            pieces.append((a, cut))
            a = cut
        pieces.append((a, b))
    out = [(a * hop, b * hop) for a, b in pieces]
    if out and out[-1][1] == frames * hop:
        out[-1] = (out[-1][0], n)  # keep the tail shorter than one frame
    return out


_ABS_FLOOR_DB = -70.0
_RANGE_DB = 45.0
_JOIN_GAP = 30  # frames
_PAD = 15  # frames


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


@lru_cache(maxsize=2)
def _decoder(hmm: str, phone_lm: str):
    try:
        import pocketsphinx
    except ImportError as exc:
        raise PhonemeRecognizerUnavailable(f"pocketsphinx is not installed ({exc}).") from exc
    try:
        # Beams wide open as recommended for allphone; lw 2 keeps the phone LM from
        # overruling the acoustics.
        decoder = pocketsphinx.Decoder(
            hmm=hmm, allphone=phone_lm, lw=2.0, beam=1e-20, pbeam=1e-20, loglevel="FATAL"
        )
    except Exception as exc:
        raise PhonemeRecognizerUnavailable(f"pocketsphinx could not load its model: {exc}") from exc
    # A decoder is not re-entrant; the lock lets threads share the cached one.
    return decoder, threading.Lock()


def _decode_piece(decoder, pcm: np.ndarray, offset_s: float) -> list[PhoneSegment]:
    if len(pcm) < RATE // 10:  # under 100 ms: nothing to recognise
        return []
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    segs = []
    for s in decoder.seg():
        start = offset_s + s.start_frame / FRAME_RATE
        end = offset_s + (s.end_frame + 1) / FRAME_RATE
        if end > start:
            segs.append(PhoneSegment(str(s.word), start, end))
    return segs
