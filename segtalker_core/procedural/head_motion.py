"""Idle head motion of a talking portrait: the schedule (how much the head moves, frame by frame).

A portrait has one pose; a person speaking never holds still. This module decides a small rigid
motion per output frame -- a pure function of the frame count, the frame rate, the seed, the
strength and (optionally) the speech -- and :mod:`.head_warp` applies it to the frames.

The motion, at ``strength`` 1 (it scales linearly; 0 is exactly no motion):

* **Sway**: horizontal shift (the look of a slight yaw), a small vertical bob, roll and a tiny
  scale (leaning in), each a sum of :data:`SWAY_TERMS` sinusoids of random frequency within
  :data:`SWAY_BAND_HZ` (all below 0.5 Hz: a head sways, it does not shake) and random phase. The
  amplitudes of a channel sum to its peak (:data:`SWAY_PEAK`), so the sway never exceeds it.
* **Nods** on stressed syllables: from the per-frame speech drive (the articulation's
  ``jaw_open``), the strongest syllable peaks at least :data:`NOD_SPACING_S` apart each get a
  raised-cosine dip of the head (a vertical shift downward, the look of pitch), whose lowest
  point is at the syllable's peak, :data:`NOD_WIDTH_S` long, up to :data:`NOD_PEAK` deep.
* **No drift**: every channel is multiplied by an envelope that rises from 0 over the first
  :data:`EDGE_S` seconds and falls back to 0 over the last (the first and the last frame are the
  portrait's own pose, so a clip loops cleanly), and its envelope-weighted mean is removed first,
  so each channel has zero mean over the clip: the head's average pose is the portrait's. A
  channel stays within twice its peak (mean removal can add at most the peak once more).

Units: shifts in face heights (forehead top to chin), so the motion is the same on any image
size; roll in degrees (positive: clockwise on screen); scale as a relative change (0.004 = 0.4%
larger). Same arguments, same motion: the random numbers come from ``seed`` alone, in a stream of
their own (changing the blink seed's use elsewhere does not move the head).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_STRENGTH = 0.5  # the CLI's and the nodes' default: clearly alive, never busy
SWAY_BAND_HZ = (0.06, 0.4)  # slow: below the 0.5 Hz a swaying head stays under
SWAY_TERMS = 3  # sinusoids per channel: enough to never look periodic within a clip
# Peak of each sway channel at strength 1: shifts in face heights, roll in degrees, scale relative.
SWAY_PEAK = {"shift_x": 0.02, "shift_y": 0.006, "roll": 1.5, "scale": 0.005}
NOD_PEAK = 0.015  # face heights: the deepest nod (on the strongest syllable)
NOD_WIDTH_S = 0.45  # one nod: down and back up
NOD_SPACING_S = 0.7  # at most one nod per this many seconds: nodding on every syllable is a tic
NOD_MIN_DRIVE = 0.25  # a syllable peak below this jaw opening is no stress worth a nod
NOD_RELATIVE = 0.6  # ... nor one below this fraction of the clip's strongest syllable
EDGE_S = 0.5  # envelope ramp at each end of the clip
_SEED_STREAM = 0x4E0D  # the head's own random stream of the seed


@dataclass(frozen=True)
class HeadMotion:
    """Per-frame rigid motion of the head, ``T`` frames. All zeros: the portrait as it is.

    ``shift`` [T, 2] float32 face heights (x right, y down); ``roll`` [T] float32 degrees
    (clockwise on screen); ``scale`` [T] float32 relative size change; ``nods`` [T] int32 frame
    indices of the syllables nodded on (provenance; their dips are already in ``shift[:, 1]``).
    """

    shift: np.ndarray
    roll: np.ndarray
    scale: np.ndarray
    nods: np.ndarray

    def __post_init__(self) -> None:
        t = len(self.roll)
        assert self.shift.shape == (t, 2), (self.shift.shape, t)
        assert self.scale.shape == (t,), (self.scale.shape, t)

    def __len__(self) -> int:
        return len(self.roll)

    def is_still(self, t: int) -> bool:
        """Whether frame ``t`` has no motion at all (then it is left bit for bit as it is)."""
        return not (self.shift[t].any() or self.roll[t] or self.scale[t])


def check_strength(strength, input_name: str = "head_motion") -> float:
    """``strength`` as a float in 0..1, or a ValueError naming ``input_name``."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(strength, bool) or not 0.0 <= value <= 1.0:  # NaN fails the comparison too
        raise ValueError(
            f"input '{input_name}' must be a number within 0..1 (0: the head stays still, 0.5: "
            f"the default small idle motion, 1: the most), got {strength!r}")
    return value


def head_motion_schedule(num_frames: int, fps: float, seed: int = 0, strength: float = DEFAULT_STRENGTH,
                         speech: np.ndarray | None = None,
                         input_name: str = "head_motion") -> HeadMotion:
    """The idle head motion of ``num_frames`` frames at ``fps`` (see the module docstring).

    ``speech``: ``[num_frames]`` per-frame speech drive (the articulation's ``jaw_open``); None
    or silence: sway only, no nods. ``strength`` 0..1 (``input_name`` names it in the error).
    """
    strength = check_strength(strength, input_name)
    n = int(num_frames)
    assert n >= 0 and fps > 0, (num_frames, fps)
    zeros = np.zeros(n, np.float32)
    nods = nod_frames(speech, fps) if speech is not None else np.zeros(0, np.int32)
    if strength == 0.0 or n == 0:
        return HeadMotion(np.zeros((n, 2), np.float32), zeros, zeros.copy(), nods)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _SEED_STREAM])
    times = np.arange(n, dtype=np.float64) / fps
    # Drawn in a fixed order, each channel always drawing the same count: a channel's motion
    # depends on the seed alone, never on the clip's length or on whether there is speech.
    channels = {name: _sway(times, peak, rng) for name, peak in SWAY_PEAK.items()}
    if speech is not None:
        assert len(speech) == n, (len(speech), n)
        channels["shift_y"] = channels["shift_y"] + _nod_dips(nods, np.asarray(speech, np.float64), n, fps)
    envelope = _envelope(n, fps)
    out = {name: (strength * _zero_mean(values, envelope)).astype(np.float32)
           for name, values in channels.items()}
    return HeadMotion(np.stack([out["shift_x"], out["shift_y"]], axis=1), out["roll"], out["scale"], nods)


def nod_frames(speech: np.ndarray, fps: float) -> np.ndarray:
    """Frames ``[K]`` int32 (sorted) of the stressed syllables to nod on: peaks of the per-frame
    speech drive ``[T]`` that are strong (at least :data:`NOD_MIN_DRIVE` and
    :data:`NOD_RELATIVE` of the strongest), taken strongest first, none closer than
    :data:`NOD_SPACING_S` to one already taken."""
    drive = np.nan_to_num(np.asarray(speech, np.float64).reshape(-1))
    if len(drive) < 3:
        return np.zeros(0, np.int32)
    # A syllable is a local maximum of the drive (a plateau counts once, at its first frame).
    inner = drive[1:-1]
    peaks = np.flatnonzero((inner > drive[:-2]) & (inner >= drive[2:])) + 1
    floor = max(NOD_MIN_DRIVE, NOD_RELATIVE * float(drive.max()))
    peaks = peaks[drive[peaks] >= floor]
    spacing = NOD_SPACING_S * fps
    chosen: list[int] = []
    for p in peaks[np.argsort(-drive[peaks], kind="stable")]:
        if all(abs(int(p) - c) >= spacing for c in chosen):
            chosen.append(int(p))
    return np.array(sorted(chosen), np.int32)


def _sway(times: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """``[T]`` sum of SWAY_TERMS sinusoids whose amplitudes sum to ``peak``."""
    low, high = SWAY_BAND_HZ
    # Log-uniform frequencies: as many slow drifts as quicker sways.
    freqs = np.exp(rng.uniform(math.log(low), math.log(high), SWAY_TERMS))
    phases = rng.uniform(0.0, 2.0 * math.pi, SWAY_TERMS)
    weights = rng.uniform(0.5, 1.0, SWAY_TERMS)
    amplitudes = peak * weights / weights.sum()
    return (amplitudes[:, None] * np.sin(2.0 * math.pi * freqs[:, None] * times[None] + phases[:, None])).sum(0)


def _nod_dips(nods: np.ndarray, drive: np.ndarray, n: int, fps: float) -> np.ndarray:
    """``[T]`` downward raised-cosine dips, lowest at each nod frame, deeper on stronger syllables."""
    dips = np.zeros(n, np.float64)
    if not len(nods):
        return dips
    strongest = float(drive[nods].max())
    half = 0.5 * NOD_WIDTH_S * fps
    frames = np.arange(n, dtype=np.float64)
    for p in nods:
        depth = NOD_PEAK * float(np.clip(drive[p] / strongest, 0.5, 1.0))
        phase = np.clip((frames - p) / half, -1.0, 1.0)
        dips += depth * 0.5 * (1.0 + np.cos(math.pi * phase))
    return dips


def _envelope(n: int, fps: float) -> np.ndarray:
    """``[T]`` 0 at the first and last frame, raised-cosine ramps of EDGE_S (at most a quarter
    of the clip each), 1 between."""
    ramp = max(1.0, min(EDGE_S * fps, (n - 1) / 4.0))
    frames = np.arange(n, dtype=np.float64)
    distance = np.minimum(frames, (n - 1) - frames)
    return 0.5 * (1.0 - np.cos(math.pi * np.clip(distance / ramp, 0.0, 1.0)))


def _zero_mean(values: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """``envelope * (values - m)`` with ``m`` the envelope-weighted mean: zero mean, and zero
    wherever the envelope is."""
    total = envelope.sum()
    mean = float((envelope * values).sum() / total) if total > 0 else 0.0
    return envelope * (values - mean)
