"""ARPAbet phonemes -> mouth targets (visemes) and how strongly each phoneme holds them (dominance).

Targets are the five :class:`~segtalker_core.audio.articulation.ArticulationTrack` columns:
jaw_open 0..1, lip_width -1..1 (narrow..wide), lip_round 0..1, lip_closure 0..1 (1 = pressed),
teeth_visible 0..1. Values are hand-set from phonetics (vowel height -> jaw, F2/rounding ->
width and round, place of articulation -> closure and teeth), not fitted to data.

Dominance, per column (Cohen & Massaro's coarticulation idea): a phoneme that *must* reach its
target (lips pressed for p/b/m, rounding for w/uw) dominates its neighbours; one whose mouth shape
hardly matters (h, t, k for the lips) takes its shape from them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLUMNS = ("jaw_open", "lip_width", "lip_round", "lip_closure", "teeth_visible")

# Rest = silence: jaw shut, lips closed without pressing, neutral width.
REST = np.array([0.0, 0.0, 0.0, 0.8, 0.0], np.float32)
REST_DOMINANCE = np.array([0.5, 0.5, 0.5, 0.5, 0.5], np.float32)


@dataclass(frozen=True)
class Viseme:
    target: tuple[float, float, float, float, float]
    dominance: tuple[float, float, float, float, float]


def _v(jaw, width, rnd, closure, teeth, dom=(1.0, 1.0, 1.0, 1.0, 1.0)) -> Viseme:
    return Viseme((jaw, width, rnd, closure, teeth), dom)


_VOWEL = (1.0, 1.0, 1.0, 1.0, 1.0)
_WEAK_LIPS = (0.6, 0.2, 0.2, 0.6, 0.4)  # tongue consonants: the lips follow the vowels
_BILABIAL = (2.0, 0.5, 0.5, 4.0, 3.0)
_ROUNDED = (0.8, 3.0, 3.0, 1.0, 1.0)

VISEMES: dict[str, Viseme] = {
    # vowels
    "AA": _v(0.90, 0.10, 0.00, 0.0, 0.50, _VOWEL),  # father
    "AE": _v(0.75, 0.50, 0.00, 0.0, 0.70, _VOWEL),  # cat
    "AH": _v(0.55, 0.10, 0.00, 0.0, 0.40, _VOWEL),  # but
    "AO": _v(0.70, -0.40, 0.60, 0.0, 0.30, _VOWEL),  # caught
    "AW": _v(0.75, -0.10, 0.30, 0.0, 0.40, _VOWEL),  # cow
    "AY": _v(0.70, 0.30, 0.00, 0.0, 0.60, _VOWEL),  # bite
    "EH": _v(0.50, 0.45, 0.00, 0.0, 0.70, _VOWEL),  # bet
    "ER": _v(0.30, -0.30, 0.45, 0.0, 0.30, _VOWEL),  # bird
    "EY": _v(0.40, 0.55, 0.00, 0.0, 0.70, _VOWEL),  # bait
    "IH": _v(0.30, 0.50, 0.00, 0.0, 0.70, _VOWEL),  # bit
    "IY": _v(0.20, 0.80, 0.00, 0.0, 0.80, _VOWEL),  # beet
    "OW": _v(0.50, -0.60, 0.80, 0.0, 0.20, _ROUNDED),  # boat
    "OY": _v(0.50, -0.40, 0.60, 0.0, 0.30, _VOWEL),  # boy
    "UH": _v(0.30, -0.50, 0.70, 0.0, 0.20, _ROUNDED),  # book
    "UW": _v(0.20, -0.80, 1.00, 0.0, 0.10, _ROUNDED),  # boot
    # lips pressed
    "P": _v(0.02, 0.00, 0.00, 1.0, 0.0, _BILABIAL),
    "B": _v(0.02, 0.00, 0.00, 1.0, 0.0, _BILABIAL),
    "M": _v(0.02, 0.00, 0.00, 1.0, 0.0, _BILABIAL),
    # lower lip to upper teeth
    "F": _v(0.10, 0.10, 0.00, 0.5, 0.8, (1.5, 0.5, 0.5, 3.0, 3.0)),
    "V": _v(0.10, 0.10, 0.00, 0.5, 0.8, (1.5, 0.5, 0.5, 3.0, 3.0)),
    # tongue between the teeth
    "TH": _v(0.15, 0.20, 0.00, 0.0, 0.9, (1.5, 0.3, 0.3, 1.0, 3.0)),
    "DH": _v(0.15, 0.20, 0.00, 0.0, 0.9, (1.5, 0.3, 0.3, 1.0, 3.0)),
    # tongue tip / blade
    "T": _v(0.15, 0.20, 0.00, 0.0, 0.6, _WEAK_LIPS),
    "D": _v(0.15, 0.20, 0.00, 0.0, 0.6, _WEAK_LIPS),
    "N": _v(0.15, 0.20, 0.00, 0.0, 0.6, _WEAK_LIPS),
    "L": _v(0.25, 0.20, 0.00, 0.0, 0.6, _WEAK_LIPS),
    "S": _v(0.08, 0.40, 0.00, 0.0, 1.0, (1.5, 0.8, 0.8, 1.0, 3.0)),
    "Z": _v(0.08, 0.40, 0.00, 0.0, 1.0, (1.5, 0.8, 0.8, 1.0, 3.0)),
    "SH": _v(0.12, -0.30, 0.60, 0.0, 0.8, (1.5, 2.0, 2.0, 1.0, 2.0)),
    "ZH": _v(0.12, -0.30, 0.60, 0.0, 0.8, (1.5, 2.0, 2.0, 1.0, 2.0)),
    "CH": _v(0.12, -0.30, 0.60, 0.0, 0.8, (1.5, 2.0, 2.0, 1.0, 2.0)),
    "JH": _v(0.12, -0.30, 0.60, 0.0, 0.8, (1.5, 2.0, 2.0, 1.0, 2.0)),
    "R": _v(0.15, -0.30, 0.50, 0.0, 0.3, (0.8, 1.5, 1.5, 1.0, 0.8)),
    "Y": _v(0.12, 0.50, 0.00, 0.0, 0.5, (0.8, 1.0, 0.5, 1.0, 0.8)),
    "W": _v(0.10, -0.80, 1.00, 0.0, 0.0, _ROUNDED),
    # back of the tongue
    "K": _v(0.25, 0.10, 0.00, 0.0, 0.4, _WEAK_LIPS),
    "G": _v(0.25, 0.10, 0.00, 0.0, 0.4, _WEAK_LIPS),
    "NG": _v(0.25, 0.10, 0.00, 0.0, 0.4, _WEAK_LIPS),
    # breath: the mouth is already shaped for the next vowel
    "HH": _v(0.35, 0.10, 0.00, 0.0, 0.4, (0.2, 0.1, 0.1, 0.2, 0.2)),
}

SILENCE_PHONES = frozenset({"SIL", "<sil>", "<s>", "</s>"})


def viseme_of(phone: str) -> tuple[np.ndarray, np.ndarray]:
    """(target ``[5]``, dominance ``[5]``) float32 of an ARPAbet phone.

    Stress digits are ignored (``AA1`` = ``AA``). Silence, fillers (``+NSN+``, ``+BREATH+``...)
    and unknown symbols give the rest pose; spoken noise (``+SPN+``) a neutral half-open mouth.
    """
    p = phone.strip().upper().rstrip("012")
    if p in VISEMES:
        v = VISEMES[p]
        return np.array(v.target, np.float32), np.array(v.dominance, np.float32)
    if p == "+SPN+":
        return np.array([0.35, 0.1, 0.0, 0.0, 0.4], np.float32), np.full(5, 0.3, np.float32)
    return REST.copy(), REST_DOMINANCE.copy()


def is_speech_phone(phone: str) -> bool:
    return phone.strip().upper().rstrip("012") in VISEMES


def phone_targets(phones, n_frames: int, frame_rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (targets ``[F, 5]``, dominance ``[F, 5]``, is_speech ``[F]`` bool) from a phone
    timeline.

    ``phones``: segments with ``phone``, ``start``, ``end`` (seconds). Frame ``k`` (time
    ``k / frame_rate``) takes the viseme of the phone covering it; uncovered frames rest.
    ``is_speech`` marks frames covered by a speech phone (not silence or a filler).
    """
    targets = np.tile(REST, (n_frames, 1))
    dominance = np.tile(REST_DOMINANCE, (n_frames, 1))
    speech = np.zeros(n_frames, bool)
    for seg in phones:
        a = max(0, int(np.ceil(seg.start * frame_rate - 1e-9)))
        b = min(n_frames, int(np.ceil(seg.end * frame_rate - 1e-9)))
        if b > a:
            t, d = viseme_of(seg.phone)
            targets[a:b] = t
            dominance[a:b] = d
            speech[a:b] = is_speech_phone(seg.phone)
    return targets, dominance, speech
