"""Mouth targets from acoustic features alone: works for any language, needs no model.

* jaw_open follows the vowel-band level relative to the recording's loud parts: open vowels are
  the loudest sounds in speech, consonants and pauses the quietest;
* lip_width / lip_round follow an F2 cue (800..3000 Hz centroid) against the speaker's running
  median (+-5 s):
  spread vowels (ee) raise F2, rounding (oo, w) lowers it;
* teeth_visible grows with the jaw (teeth show in a half-open mouth) and with sibilance (s, sh);
* lip_closure comes from *energy dips*: a stop or nasal between two vowels is a short fall of the
  700..3500 Hz level of 7+ dB below both neighbours within 150 ms; the lips are taken as closed there
  unless the dip is hissy (a fricative). Acoustics cannot tell p/b/m from t/d/n, so tongue stops close
  the lips too: a readable approximation the phoneme path refines.
"""
from __future__ import annotations

import numpy as np

from .features import FRAME_RATE, AcousticFeatures
from .speechness import running_percentile
from .visemes import REST

JAW_RANGE_DB = 28.0  # vowel-band dB below the reference over which the jaw goes from open to shut
F2_WIDTH_HZ = 450.0  # F2 above the median that makes the widest lips
F2_ROUND_HZ = 350.0  # F2 below the median that makes the roundest lips
DIP_MIN_DB = 7.0
DIP_FULL_DB = 13.0
REF_HALF_WINDOW = 5 * FRAME_RATE  # references follow the level over +-5 s
DIP_REACH = 15  # frames (150 ms) each side to look for the surrounding vowels
CLOSURE_DOMINANCE = 4.0


def band_reference(band_db: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``[F]`` level of the loud parts of a band around each frame (95th percentile, +-5 s)."""
    fallback = float(np.max(band_db)) if len(band_db) else 0.0
    return running_percentile(band_db, active, 95.0, REF_HALF_WINDOW, fallback=fallback)


def vowel_loudness(feats: AcousticFeatures, active: np.ndarray) -> np.ndarray:
    """``[F]`` 0..1 vowel-band level from shut (``JAW_RANGE_DB`` below the loud parts) to open."""
    ref = band_reference(feats.vowel_db, active)
    return np.clip((feats.vowel_db - (ref - JAW_RANGE_DB)) / JAW_RANGE_DB, 0.0, 1.0).astype(np.float32)


def acoustic_targets(feats: AcousticFeatures, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(targets ``[F, 5]``, dominance ``[F, 5]``) float32 from features.

    ``active`` ``[F]`` bool: frames that are sound rather than silence.
    """
    n = len(feats)
    v = feats.vowel_db
    voiced = np.clip((feats.voicing - 0.35) / 0.25, 0.0, 1.0) * active

    vowel_ref_db = band_reference(v, active)
    jaw = 0.9 * np.clip((v - (vowel_ref_db - JAW_RANGE_DB)) / JAW_RANGE_DB, 0.0, 1.0)
    jaw *= 0.6 + 0.4 * voiced  # unvoiced sounds (fricatives, bursts) are made with a nearly shut jaw

    f2 = feats.f2_hz
    # The speaker's own neutral F2 (it differs by ~20 % between men, women and children).
    med = running_percentile(f2, active & (voiced > 0.5), 50.0, REF_HALF_WINDOW, fallback=1500.0)
    width = np.clip((f2 - med) / F2_WIDTH_HZ, -1.0, 1.0) * voiced
    rnd = np.clip((med - f2) / F2_ROUND_HZ, 0.0, 1.0) * voiced

    # Hiss: the 4-8 kHz band rivals the vowel band and is itself loud.
    sibilance = np.clip((feats.high_db - v + 3.0) / 10.0, 0.0, 1.0) * np.clip(
        (feats.high_db - (vowel_ref_db - 35.0)) / 10.0, 0.0, 1.0
    ) * active
    teeth = np.maximum(np.clip(1.4 * jaw, 0.0, 1.0) * (0.6 + 0.4 * np.clip(width, 0.0, 1.0)) * (1 - 0.6 * rnd), sibilance)
    width = np.clip(width + 0.3 * sibilance, -1.0, 1.0)

    closure = _dip_closure(feats.mid_db, band_reference(feats.mid_db, active)) * (1.0 - sibilance)
    open_ = 1.0 - closure
    targets = np.stack([jaw * open_, width, rnd, closure, teeth * open_], axis=1).astype(np.float32)
    dominance = np.ones((n, 5), np.float32)
    dominance[:, 0] += 1.0 * closure
    dominance[:, 3] += (CLOSURE_DOMINANCE - 1.0) * closure
    dominance[:, 4] += 2.0 * closure

    # Silence is the rest pose, but a silent stop closure keeps its (stronger) pressed lips.
    silent = ~active
    closure_silent = np.maximum(REST[3], closure[silent])
    targets[silent] = REST
    targets[silent, 3] = closure_silent
    return targets, dominance


def _dip_closure(band_db: np.ndarray, ref_db: np.ndarray) -> np.ndarray:
    """``[F]`` 0..1: how clearly each frame sits in a short dip between two vowel-level peaks."""
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    # Digital silence (-120 dB) would make every stop look infinitely deep; 60 dB is plenty.
    e = uniform_filter1d(np.maximum(band_db, ref_db - 60.0), 3, mode="nearest")
    # Highest level within `reach` frames before (incl.) and after (incl.) each frame.
    left = maximum_filter1d(e, DIP_REACH + 1, mode="nearest", origin=DIP_REACH // 2)
    right = maximum_filter1d(e, DIP_REACH + 1, mode="nearest", origin=-(DIP_REACH + 1) // 2)
    walls = np.minimum(left, right)
    depth = walls - e
    strong_walls = np.clip((walls - (ref_db - 25.0)) / 5.0, 0.0, 1.0)  # the neighbours are vowels
    return (np.clip((depth - DIP_MIN_DB) / (DIP_FULL_DB - DIP_MIN_DB), 0.0, 1.0) * strong_walls).astype(np.float32)
