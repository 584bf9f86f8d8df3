"""Speech -> per-video-frame mouth articulation (:class:`ArticulationTrack`), the viseme rig's input.

Pipeline, at 100 analysis frames per second:

1. acoustic features (:mod:`.features`) and a speech likelihood (:mod:`.speechness`);
2. mouth targets with dominance weights, from
   * ``"acoustic"``: level, F2 cue, hiss and energy dips only (:mod:`.acoustic`), any language;
   * ``"phonemes"``: pocketsphinx allphone phones -> visemes (:mod:`.visemes`), the jaw scaled by
     the vowel-band level so that stressed syllables open wider;
   * ``"auto"``: both fused (the acoustic path carries the timing and the jaw, the phones the lip
     shape and the p/b/m closures); the acoustic path alone when recognition is unavailable or
     finds no phones;
3. non-speech gating: targets are pulled to the rest pose by ``1 - speech likelihood``, so noise
   and music do not work the jaw;
4. coarticulation (:mod:`.coarticulation`): dominance-weighted smoothing that still reaches
   closures;
5. strength: motion around the rest pose scaled by ``strength`` (0 = still, 2 = exaggerated);
6. one row per video frame (``ceil(duration * fps)`` rows unless ``n_frames`` says otherwise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .acoustic import acoustic_targets, vowel_loudness
from ..logs import get_logger
from .coarticulation import coarticulate
from .features import FRAME_RATE, acoustic_features
from .io import AudioSource, MonoAudio, load_audio
from .phonemes import PhonemeRecognizerUnavailable, PhoneSegment, phoneme_timeline
from .speechness import active_mask, level_reference, speech_likelihood
from .timing import FpsLike, as_fraction, frame_count
from .visemes import COLUMNS, REST, is_speech_phone, phone_targets

log = get_logger("audio")

METHODS = ("auto", "phonemes", "acoustic")
_LOW = np.array([0.0, -1.0, 0.0, 0.0, 0.0], np.float32)
_HIGH = np.array([1.0, 1.0, 1.0, 1.0, 1.0], np.float32)


@dataclass
class ArticulationTrack:
    """Mouth parameters per video frame.

    ``params[:, k]`` is column ``COLUMNS[k]``: jaw_open (0 shut .. 1 wide open), lip_width
    (-1 narrow/pursed .. 1 wide/spread), lip_round (0 .. 1 protruded), lip_closure (0 apart ..
    1 pressed; >= 0.5 means the lips touch; rest is 0.8, relaxed closed), teeth_visible (0 .. 1).
    ``speech[t]`` is how speech-like the audio under frame t is. ``method`` is the path that made
    the track: "phonemes+acoustic", "phonemes" or "acoustic".
    """

    params: np.ndarray  # [T, 5] float32
    fps: float
    method: str
    speech: np.ndarray  # [T] float32 0..1
    phones: list[PhoneSegment] = field(default_factory=list)  # recognised timeline, seconds

    COLUMNS: ClassVar[tuple[str, ...]] = COLUMNS
    REST: ClassVar[np.ndarray] = REST

    def __post_init__(self) -> None:
        assert self.params.ndim == 2 and self.params.shape[1] == len(COLUMNS), self.params.shape
        assert self.params.dtype == np.float32, self.params.dtype
        assert self.speech.shape == (len(self.params),), self.speech.shape

    def __len__(self) -> int:
        return int(self.params.shape[0])

    def column(self, name: str) -> np.ndarray:
        """``[T]`` one parameter by name."""
        if name not in COLUMNS:
            raise KeyError(f"unknown articulation parameter {name!r}; choose from {COLUMNS}.")
        return self.params[:, COLUMNS.index(name)]

    @property
    def jaw_open(self) -> np.ndarray:
        return self.column("jaw_open")

    @property
    def lip_width(self) -> np.ndarray:
        return self.column("lip_width")

    @property
    def lip_round(self) -> np.ndarray:
        return self.column("lip_round")

    @property
    def lip_closure(self) -> np.ndarray:
        return self.column("lip_closure")

    @property
    def teeth_visible(self) -> np.ndarray:
        return self.column("teeth_visible")


def check_options(method: str, strength: float) -> float:
    """``strength`` as a float, once ``method`` and ``strength`` are known good (else ValueError)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    strength = float(strength)
    if not np.isfinite(strength) or not 0.0 <= strength <= 2.0:
        raise ValueError(f"strength must be between 0 and 2, got {strength!r}.")
    return strength


def articulation_from_audio(
    audio: AudioSource,
    fps: FpsLike,
    n_frames: int | None = None,
    method: str = "auto",
    strength: float = 1.0,
    sample_rate: int | None = None,
    model_dir: str | None = None,
) -> ArticulationTrack:
    """Per-frame mouth articulation for ``audio`` (anything :func:`.io.load_audio` takes; a bare
    1-D array is 16 kHz unless ``sample_rate`` says otherwise).

    ``n_frames`` defaults to ``ceil(duration * fps)``; longer tracks rest after the audio ends.
    ``method``: "auto" | "phonemes" | "acoustic" (module doc). ``strength`` in 0..2 scales the
    motion around the rest pose. ``model_dir``: pocketsphinx en-us model directory (default: the
    one in the pocketsphinx wheel); if it is unusable, a warning is issued and the acoustic path used.
    """
    strength = check_options(method, strength)
    fps_q = as_fraction(fps)
    mono = _mono16k(audio, sample_rate)
    total = frame_count(mono.duration, fps_q) if n_frames is None else int(n_frames)
    if total < 0:
        raise ValueError(f"n_frames must not be negative, got {n_frames}.")

    wave = mono.samples
    feats = acoustic_features(wave)
    ref = level_reference(feats.level_db)
    active = active_mask(feats.level_db, ref)
    speech = speech_likelihood(feats, active)
    ac_t, ac_d = acoustic_targets(feats, active)
    loud = vowel_loudness(feats, active)

    phones: list[PhoneSegment] = []
    used = "acoustic"
    targets, dominance = ac_t, ac_d
    if method in ("auto", "phonemes") and speech.max() > 0.0:
        phones = _recognise(wave, model_dir)
        if any(is_speech_phone(p.phone) for p in phones):
            ph_t, ph_d, ph_speech = phone_targets(phones, len(feats), FRAME_RATE)
            ph_t[:, 0] *= 0.4 + 0.6 * loud
            if method == "phonemes":
                targets, dominance, used = ph_t, ph_d, "phonemes"
            else:
                targets, dominance = _fuse(ac_t, ac_d, ph_t, ph_d, ph_speech, loud)
                used = "phonemes+acoustic"
        elif method == "phonemes":
            log.warning(
                "phoneme recognition found no phones in speech-like audio; "
                "using the acoustic articulation instead."
            )

    gate = speech[:, None]
    targets = REST + gate * (targets - REST)
    smooth = coarticulate(targets, dominance, FRAME_RATE)
    params, speech_t = _to_video_frames(smooth, speech, total, fps_q)
    params = np.clip(REST + strength * (params - REST), _LOW, _HIGH).astype(np.float32)
    return ArticulationTrack(params=params, fps=float(fps_q), method=used, speech=speech_t, phones=phones)


def _mono16k(audio: AudioSource, sample_rate: int | None) -> MonoAudio:
    if isinstance(audio, np.ndarray) and audio.ndim == 1 and sample_rate is None:
        sample_rate = 16000
    return load_audio(audio, sample_rate=sample_rate)


def _recognise(wave: np.ndarray, model_dir: str | None) -> list[PhoneSegment]:
    try:
        return phoneme_timeline(wave, model_dir=model_dir)
    except PhonemeRecognizerUnavailable as exc:
        log.warning(
            "phoneme recognition unavailable (%s); using the acoustic articulation, which works "
            "for any language. Reinstall pocketsphinx or fix model_dir to get phonemes.", exc,
        )
        return []


def _fuse(ac_t, ac_d, ph_t, ph_d, ph_speech, loud) -> tuple[np.ndarray, np.ndarray]:
    """Acoustic timing and jaw, phone lip shapes where a speech phone was recognised.

    Silence or filler labels over sound the acoustics call speech are recogniser misses, so only
    speech phones are blended in. A recognised p/b/m closes the lips only where the sound is quiet
    enough for a closure (recognisers misplace phones by a frame or two, and mislabel: a loud
    frame is never a closure).
    """
    w = ph_speech.astype(np.float32)[:, None]  # [F, 1]
    t = ac_t.copy()
    t[:, 0:1] = ac_t[:, 0:1] + w * 0.4 * (ph_t[:, 0:1] - ac_t[:, 0:1])
    t[:, 1:3] = ac_t[:, 1:3] + w * 0.6 * (ph_t[:, 1:3] - ac_t[:, 1:3])
    t[:, 4:5] = ac_t[:, 4:5] + w * 0.5 * (ph_t[:, 4:5] - ac_t[:, 4:5])
    quiet = np.clip(1.5 - 2.0 * loud, 0.0, 1.0)
    ph_closure = ph_t[:, 3] * quiet * ph_speech
    t[:, 3] = np.maximum(ac_t[:, 3], ph_closure)
    d = np.where(ph_speech[:, None], np.maximum(ac_d, ph_d), ac_d)
    d[:, 3] = np.where(ph_closure > ac_t[:, 3], 1.0 + (ph_d[:, 3] - 1.0) * quiet, ac_d[:, 3])
    # where the phones added a closure, the jaw shuts with it
    t[:, 0] *= 1.0 - 0.9 * np.clip(t[:, 3] - ac_t[:, 3], 0.0, 1.0)
    return t.astype(np.float32), d.astype(np.float32)


def _to_video_frames(
    smooth: np.ndarray, speech: np.ndarray, total: int, fps_q
) -> tuple[np.ndarray, np.ndarray]:
    """``[F, 5]`` at 100/s -> ``[total, 5]``: the mean over each video frame's span, except that
    every lip closure and every opening between closures shows in at least one frame.

    A box average is the right low-pass, but at 24 fps it would blur a 60 ms /p/ into a half-open
    mouth, or a 40 ms unstressed vowel between two closures into a closed one. Such an event that
    no frame shows replaces the frame holding its extreme instant; closures go last, so they win
    when two events want the same frame (a missed p/b/m is what viewers notice).
    """
    n = len(smooth)
    params = np.tile(REST, (total, 1)).astype(np.float32)
    speech_t = np.zeros(total, np.float32)
    if total == 0 or n == 0:
        return params, speech_t
    i = np.arange(total + 1, dtype=np.int64)
    # Analysis frame k sits at k/100 s; video frame i spans [i/fps, (i+1)/fps).
    edges = -((-i * FRAME_RATE * fps_q.denominator) // fps_q.numerator)  # ceil(100 i / fps)
    starts = np.minimum(edges[:-1], n)
    stops = np.minimum(np.maximum(edges[1:], starts + 1), n)
    inside = starts < n  # frames after the audio stay at rest
    csum = np.concatenate([np.zeros((1, smooth.shape[1])), np.cumsum(smooth, axis=0, dtype=np.float64)])
    ssum = np.concatenate([[0.0], np.cumsum(speech, dtype=np.float64)])
    a, b = starts[inside], stops[inside]
    params[inside] = (csum[b] - csum[a]) / (b - a)[:, None]
    speech_t[inside] = (ssum[b] - ssum[a]) / (b - a)

    owner = np.searchsorted(edges[1:], np.arange(n), side="right")  # video frame of each instant
    opening = lambda p: (p[..., 3] < _OPEN_BELOW) & (p[..., 0] >= _OPEN_JAW)  # noqa: E731
    closing = lambda p: p[..., 3] >= _CLOSED_FROM  # noqa: E731
    _show_events(params, smooth, owner, opening, key=0)
    _show_events(params, smooth, owner, closing, key=3)
    return params.astype(np.float32), speech_t


_CLOSED_FROM = 0.6
_OPEN_BELOW = 0.4
_OPEN_JAW = 0.2


def _show_events(params: np.ndarray, smooth: np.ndarray, owner: np.ndarray, is_event, key: int) -> None:
    """For each run of instants where ``is_event`` holds that no overlapping video frame shows,
    put the run's instant with the largest column ``key`` into its frame (in place)."""
    total = len(params)
    hit = is_event(smooth)
    bounds = np.flatnonzero(np.diff(np.concatenate([[0], hit.astype(np.int8), [0]])))
    for r0, r1 in zip(bounds[::2], bounds[1::2]):
        t0, t1 = int(owner[r0]), int(min(owner[r1 - 1], total - 1))
        if t0 >= total or is_event(params[t0 : t1 + 1]).any():
            continue
        k = r0 + int(np.argmax(smooth[r0:r1, key]))
        if owner[k] < total:
            params[owner[k]] = smooth[k]
