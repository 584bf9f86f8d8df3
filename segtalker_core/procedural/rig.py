"""Landmark rig: articulation parameters -> driven face-mesh landmarks.

The built-in talking-segmentation backend moves the reference face's 478 face-mesh points with five
articulation parameters per frame (the ``ArticulationTrack`` columns of ``segtalker_core.audio``):

====  ===============  =========  ==========================================================
col   name             range      what moves
====  ===============  =========  ==========================================================
0     jaw_open         0..1       lower lip, chin and jaw line drop (cheeks stretch)
1     lip_width        -1..1      mouth corners in (narrow) / out (wide)
2     lip_round        0..1       corners in, lips everted and pushed forward (z)
3     lip_closure      0..1       inner lips brought together: free <= 0.3, sealed >= 0.6 (p/b/m)
4     teeth_visible    0..1       lips retracted from the teeth (parts them a little)
====  ===============  =========  ==========================================================

Geometry lives in a *face frame*: origin at the mouth centre, ``u`` along the eye line (image left
eye -> image right eye), ``v`` down the face, unit = inter-ocular distance (IOD, between the lid
centres of the two eyes). Every amplitude below is in IOD units, so the rig behaves the same at any
crop size.

Every parameter except closure moves each point by a fixed vector times the parameter value
(a *basis*), so driving ``T`` frames is one ``[T, 4] @ [4, 478*3]`` product. Closure is applied
afterwards because it depends on the gap the other parameters left.

Membership functions have compact support: points above the nose base (nose, eyes, brows,
forehead) get exactly zero displacement for any parameters, which the warp relies on to leave the
upper face pixel-identical.

The reference need not have a closed mouth. :meth:`MouthRig.fit` estimates how far the reference
is open (jaw and lip retraction, see :func:`estimate_reference_params`), takes those off to get a
*closed rest* and drives relative to that: parameters are absolute, all-zero parameters close the
mouth, and ``reference_params`` give the reference mouth back *exactly*. The linear rig only
approximates the reference there (the rest is sealed, the split of the gap is a guess, a mouth
may open wider than the rig can), so the rig keeps the difference (``residual``): the person's own
mouth shape, added in proportion to :meth:`MouthRig.residual_weight` -- kept while the mouth
opens further or changes width and rounding, fading out as jaw or lip retraction go below the
reference's and as the lips seal. :meth:`MouthRig.reference_weight` says how near a pose is to
the reference pose itself (the renderer fades its painted interior in with it).

A portrait at silence must look like the person: its own mouth, parted lips and teeth included.
That is the caller's choice of parameters, not the rig's: :func:`anchor_at_reference` maps an
audio articulation onto the reference, so silence (the audio's rest pose) gives
``reference_params`` and speech opens from there (closure still seals the lips for p/b/m).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..face import mesh_topology as T

log = logging.getLogger("segtalker.rig")

PARAM_NAMES: tuple[str, ...] = ("jaw_open", "lip_width", "lip_round", "lip_closure", "teeth_visible")
NUM_PARAMS = 5
JAW, WIDTH, ROUND, CLOSURE, TEETH = range(NUM_PARAMS)
PARAM_RANGES: tuple[tuple[float, float], ...] = ((0, 1), (-1, 1), (0, 1), (0, 1), (0, 1))
# Parameters that act through a fixed basis (closure is applied separately).
LINEAR_PARAMS: tuple[int, ...] = (JAW, WIDTH, ROUND, TEETH)
_BISECTIONS = 14  # halvings of a <= 0.3 IOD bracket: < 2e-5 IOD, far below a pixel
# Parameter distance over which the reference's residual fades out, at least: a reference that is
# barely open must not make the residual flip on and off between near-identical all-zero poses.
_RESIDUAL_SPAN = 0.1
# Parameter distance from the audio's rest pose within which a frame counts partly as silence
# (see anchor_at_reference): speech frames, bilabials included, lie further out.
_SILENCE_REACH = 0.1

# Besides its inner and outer contours, each lip has two rings of mesh points inside it (checked on
# a photo: each lies within its lip's polygon). Like the contours they run image left -> image
# right between two corner points; the rig must move them with their lip, or triangles would
# join a lower-lip point to an upper-lip one across the mouth.
LIPS_UPPER_SEMI_INNER = (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292)
LIPS_UPPER_SEMI_OUTER = (76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306)
LIPS_LOWER_SEMI_INNER = (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292)
LIPS_LOWER_SEMI_OUTER = (76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306)

# Rings of each lip from the opening outwards, without their corner points: the i-th point of
# every ring sits at about the same place along the mouth, and the i-th upper and i-th lower
# inner points face each other across it.
_UPPER_RINGS = tuple(np.array(ring[1:-1]) for ring in (
    T.LIPS_INNER_UPPER, LIPS_UPPER_SEMI_INNER, LIPS_UPPER_SEMI_OUTER, T.LIPS_OUTER_UPPER))
_LOWER_RINGS = tuple(np.array(ring[1:-1]) for ring in (
    T.LIPS_INNER_LOWER, LIPS_LOWER_SEMI_INNER, LIPS_LOWER_SEMI_OUTER, T.LIPS_OUTER_LOWER))
_RING_DEPTH = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)  # 0 at the opening, 1 at the outer contour
_INNER_UPPER, _INNER_LOWER = _UPPER_RINGS[0], _LOWER_RINGS[0]
_OUTER_UPPER, _OUTER_LOWER = _UPPER_RINGS[-1], _LOWER_RINGS[-1]
_UPPER_LIP = np.concatenate(_UPPER_RINGS)
_LOWER_LIP = np.concatenate(_LOWER_RINGS)
_CORNERS = np.array(
    T.MOUTH_CORNERS + T.INNER_MOUTH_CORNERS
    + (LIPS_UPPER_SEMI_INNER[0], LIPS_UPPER_SEMI_INNER[-1])
    + (LIPS_UPPER_SEMI_OUTER[0], LIPS_UPPER_SEMI_OUTER[-1])
)
_LIP_POINTS = np.unique(np.concatenate([_UPPER_LIP, _LOWER_LIP, _CORNERS]))


@dataclass(frozen=True)
class RigConfig:
    """Amplitudes of the rig, in IOD units at parameter value 1 (closure: fractions)."""

    jaw_drop: float = 0.30  # lower-lip / chin drop at jaw_open = 1 (a wide "aa")
    corner_jaw_share: float = 0.45  # how much of the jaw drop the mouth corners follow
    upper_lip_lift: float = 0.06  # upper lip rises by this fraction of the jaw drop
    jaw_edge_share: float = 0.3  # jaw-line points at the face edge follow this much of the drop
    width_shift: float = 0.07  # each mouth corner moves out (wide) / in (narrow) by this
    round_narrow: float = 0.11  # each corner moves in at lip_round = 1
    round_evert: float = 0.03  # outer lip contours move away from the mouth line
    round_protrude: float = 0.12  # lips come forward (z) at lip_round = 1
    teeth_upper: float = 0.035  # inner upper lip retracts up at teeth_visible = 1
    teeth_lower: float = 0.030  # inner lower lip retracts down
    closure_upper_share: float = 0.4  # in a seal the upper lip covers this part of the gap
    closure_outer_follow: float = 0.5  # outer contour follows the inner one by this fraction
    closed_gap: float = 0.02  # reference lip gap (IOD) below which the jaw counts as closed
    # Keep the reference's own mouth shape (the residual) on top of the rig: right for a portrait;
    # a dubbed video turns it off, or each frame's own opening would make the lips jitter.
    keep_reference_shape: bool = True

    @property
    def jaw_gap(self) -> float:
        """Lip gap at the mouth centre per unit of jaw_open."""
        return self.jaw_drop * (1.0 + self.upper_lip_lift)

    @property
    def teeth_gap(self) -> float:
        """Lip gap at the mouth centre per unit of teeth_visible."""
        return self.teeth_upper + self.teeth_lower


@dataclass(frozen=True)
class FaceFrame:
    """Orthonormal face frame in crop pixels; face units are IOD lengths.

    ``origin`` [2]: mouth centre; ``u_axis`` [2]: unit vector image-left eye -> image-right eye;
    ``v_axis`` [2]: ``u_axis`` turned 90 degrees, pointing down the face; ``iod``: px.
    """

    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    iod: float

    @staticmethod
    def from_landmarks(landmarks: np.ndarray) -> "FaceFrame":
        """Frame of one face ``[478, 2+]`` (crop px), origin midway between the inner lip centres."""
        xy = np.asarray(landmarks, dtype=np.float64)[:, :2]
        eye_left = xy[list(T.RIGHT_EYE)].mean(axis=0)  # person's right eye = image left
        eye_right = xy[list(T.LEFT_EYE)].mean(axis=0)
        axis = eye_right - eye_left
        iod = float(np.hypot(*axis))
        if not np.isfinite(iod) or iod < 2.0:
            raise ValueError(
                f"landmarks give an inter-ocular distance of {iod:.2f} px; need a detected face "
                f"(finite landmarks, eyes at least 2 px apart)"
            )
        u = axis / iod
        v = np.array([-u[1], u[0]])  # y-down image: turning +90 degrees points down the face
        origin = 0.5 * (xy[T.UPPER_LIP_BOTTOM] + xy[T.LOWER_LIP_TOP])
        return FaceFrame(origin, u, v, iod)

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        """Crop px ``[..., 2]`` -> face units ``[..., 2]`` (u, v)."""
        d = np.asarray(xy, dtype=np.float64)[..., :2] - self.origin
        return np.stack([d @ self.u_axis, d @ self.v_axis], axis=-1) / self.iod

    def to_crop(self, uv: np.ndarray) -> np.ndarray:
        """Face units ``[..., 2]`` -> crop px ``[..., 2]``."""
        return self.origin + self.vectors_to_crop(uv)

    def vectors_to_crop(self, duv: np.ndarray) -> np.ndarray:
        """Displacements in face units ``[..., 2]`` -> crop px ``[..., 2]``."""
        duv = np.asarray(duv, dtype=np.float64)
        return (duv[..., :1] * self.u_axis + duv[..., 1:2] * self.v_axis) * self.iod


@dataclass
class MouthRig:
    """A reference face ready to be driven. Build with :meth:`fit`.

    ``reference`` [478, 3]: landmarks of the source image; ``rest`` [478, 3]: the same face with the
    mouth closed (equal to ``reference`` up to a sub-pixel seal when it was closed already);
    ``basis`` [4, 478, 3]: crop-px displacement per unit of jaw, width, round, teeth
    (:data:`LINEAR_PARAMS` order); ``jaw_weight`` [478]: share of the jaw drop each point follows;
    ``reference_params`` [5]: estimated articulation of the reference (driving with it
    reproduces ``reference`` exactly, unless ``config.keep_reference_shape`` is off); ``moving`` [478] bool: points any parameter can move;
    ``residual`` [478, 3] float64 crop px: ``reference`` minus the linear rig at
    ``reference_params``.
    """

    reference: np.ndarray
    rest: np.ndarray
    frame: FaceFrame
    basis: np.ndarray
    jaw_weight: np.ndarray
    reference_params: np.ndarray
    moving: np.ndarray
    residual: np.ndarray
    config: RigConfig = field(default_factory=RigConfig)

    @staticmethod
    def fit(
        landmarks: np.ndarray, config: RigConfig | None = None, source_teeth: float = 0.0
    ) -> "MouthRig":
        """Rig one face. ``landmarks`` [478, 3] crop px; ``source_teeth`` 0..1: how clearly the
        reference shows teeth (decides whether its lip gap is lip retraction or an open jaw)."""
        config = config or RigConfig()
        reference = check_landmarks(landmarks, "landmarks").astype(np.float64)
        frame = FaceFrame.from_landmarks(reference)
        uv = frame.to_face(reference)
        ref_params = estimate_reference_params(uv, config, source_teeth)
        rest_uv = _remove_opening(uv, ref_params, config)
        rest = reference.copy()
        rest[:, :2] = frame.to_crop(rest_uv)
        rest = _apply_closure(rest, np.ones(1), config)[0]
        # Frame of the rest: origin where its lips meet (teeth and cavity are placed from it).
        frame = FaceFrame(
            0.5 * (rest[T.UPPER_LIP_BOTTOM, :2] + rest[T.LOWER_LIP_TOP, :2]),
            frame.u_axis, frame.v_axis, frame.iod,
        )
        rest_uv = frame.to_face(rest)
        shape = _MouthShape.of(rest_uv)
        jaw_weight = _jaw_weight(rest_uv, shape, config)
        basis = _basis(rest_uv, shape, frame, jaw_weight, config)
        moving = np.abs(basis).max(axis=(0, 2)) > 1e-6
        moving[_LIP_POINTS] = True
        rig = MouthRig(
            reference=reference.astype(np.float32), rest=rest.astype(np.float32), frame=frame,
            basis=basis.astype(np.float32), jaw_weight=jaw_weight.astype(np.float32),
            reference_params=ref_params.astype(np.float32), moving=moving,
            residual=np.zeros_like(reference, np.float64), config=config,
        )
        # (drive puts the exact float32 reference back at reference_params, so the warp sees
        # static vertices there and the source pixels come back bit-exact.)
        if config.keep_reference_shape:
            linear = rig._linear(rig.reference_params[None].astype(np.float64))[0]
            rig.residual = reference - linear
        return rig

    def drive(self, params: np.ndarray) -> np.ndarray:
        """``params`` [T, 5] (or [5]) -> driven landmarks float32 [T, 478, 3] (or [478, 3])."""
        single = np.ndim(params) == 1
        p = check_params(np.atleast_2d(params), "params")
        driven = self._linear(p)
        if not self.config.keep_reference_shape:
            driven = driven.astype(np.float32)
            return driven[0] if single else driven
        weight = self.residual_weight(p)
        rows = np.flatnonzero(weight)
        if len(rows):
            driven[rows] += weight[rows, None, None] * self.residual
        driven = driven.astype(np.float32)
        # At the reference pose exactly, the exact float32 reference (no rounding residue).
        exact = np.flatnonzero((p == self.reference_params).all(axis=1))
        if len(exact):
            driven[exact] = self.reference
        return driven[0] if single else driven

    def residual_weight(self, params: np.ndarray) -> np.ndarray:
        """Share of the reference's own mouth shape (``residual``) a pose keeps: [T] in 0..1.

        1 at and beyond the reference opening (jaw and lip retraction at or above the
        reference's; any width or rounding); linear down to 0 as jaw or retraction fall to 0 (over
        at least :data:`_RESIDUAL_SPAN`, so a barely open reference does not flip it on and off);
        a sealing closure (0.3 -> 0.6) takes it to 0. Continuous in the parameters.
        """
        p = np.atleast_2d(np.asarray(params, np.float64))
        ref = self.reference_params[[JAW, TEETH]].astype(np.float64)
        below = (ref - p[:, [JAW, TEETH]]) / np.maximum(ref, _RESIDUAL_SPAN)
        opening = np.clip(1.0 - below, 0.0, 1.0)
        return (1.0 - _seal(p[:, CLOSURE])) * opening[:, 0] * opening[:, 1]

    def reference_weight(self, params: np.ndarray) -> np.ndarray:
        """How close ``params`` [T, 5] (clipped) are to the reference pose: [T] in 0..1.

        1 at ``reference_params`` only; along each parameter it falls linearly to 0 at the end of
        that parameter's range (at least :data:`_RESIDUAL_SPAN` away), the factors multiplied; a
        sealing closure (0.3 -> 0.6) takes it to 0. Continuous in the parameters.
        """
        p = np.atleast_2d(np.asarray(params, np.float64))
        ref = self.reference_params.astype(np.float64)
        low = np.array([r[0] for r in PARAM_RANGES])
        high = np.array([r[1] for r in PARAM_RANGES])
        above = np.maximum(high - ref, _RESIDUAL_SPAN)
        below = np.maximum(ref - low, _RESIDUAL_SPAN)
        distance = np.where(p >= ref, (p - ref) / above, (ref - p) / below)
        factors = np.clip(1.0 - distance, 0.0, 1.0)
        factors[:, CLOSURE] = 1.0 - _seal(p[:, CLOSURE])
        return np.prod(factors, axis=1)

    def _linear(self, p: np.ndarray) -> np.ndarray:
        """The linear rig plus closure, without the residual: float64 [T, 478, 3]."""
        linear = p[:, list(LINEAR_PARAMS)] @ self.basis.reshape(len(LINEAR_PARAMS), -1)
        driven = self.rest[None].astype(np.float64) + linear.reshape(len(p), -1, 3)
        return _apply_closure(driven, p[:, CLOSURE], self.config)

    def jaw_offset(self, params: np.ndarray) -> np.ndarray:
        """Crop-px displacement of the lower jaw (lower teeth) from the closed rest: [T, 2]."""
        p = check_params(np.atleast_2d(params), "params")
        drop = p[:, JAW] * self.config.jaw_drop * self.frame.iod
        return drop[:, None] * self.frame.v_axis[None]


def estimate_reference_params(
    uv: np.ndarray, config: RigConfig, source_teeth: float = 0.0
) -> np.ndarray:
    """How open the reference mouth is, as parameters ``[5]`` (jaw_open, teeth_visible set).

    The lip gap at the mouth centre is split into lip retraction (up to the full teeth_visible gap,
    only if the source shows teeth: a smile) and jaw opening (the rest, beyond
    ``config.closed_gap``). Landmarks alone cannot tell a retracted smile from a dropped jaw; this
    split keeps smiles from being read as a wide-open jaw.
    """
    gap = float(uv[T.LOWER_LIP_TOP, 1] - uv[T.UPPER_LIP_BOTTOM, 1])
    teeth = float(np.clip(source_teeth, 0.0, 1.0))
    teeth = min(teeth, max(gap, 0.0) / config.teeth_gap)
    # Gaps up to closed_gap are landmark noise on closed lips; beyond twice that, the whole gap
    # is opening. Smooth in between, so frames of a video near the threshold do not jump.
    excess = max(gap - teeth * config.teeth_gap - config.closed_gap, 0.0)
    jaw_gap = excess + config.closed_gap * float(_smoothstep(excess / config.closed_gap))
    jaw = jaw_gap / config.jaw_gap
    params = np.zeros(NUM_PARAMS)
    params[JAW] = float(np.clip(jaw, 0.0, 1.0))
    params[TEETH] = teeth
    return params


def anchor_at_reference(
    articulation: np.ndarray, reference_params: np.ndarray, silence: np.ndarray
) -> np.ndarray:
    """Audio articulation ``[T, 5]`` -> rig parameters ``[T, 5]`` that start from the reference
    mouth, so that a portrait at silence keeps its own mouth.

    ``silence`` [5] is the articulation's rest pose (``ArticulationTrack.REST``: jaw 0, closure
    0.8 "relaxed closed"); ``reference_params`` [5] the rig's estimate of the source's pose.

    * Jaw and lip retraction open *from* the reference: ``r + a (1 - r)``, so silence gives the
      reference's own opening, full articulation the rig's widest, and speech moves the mouth
      even where the reference is already open.
    * Closure: the rest pose's closure belongs to silence, which is now the source's mouth; a
      frame's share of it is taken off in proportion to how close the frame is to the rest pose
      (within :data:`_SILENCE_REACH`). Speech frames keep their closure: p/b/m are at least
      0.14 away from the rest pose in some parameter, and seal the lips as before -- with the
      articulation's own (small) jaw opening, not the reference's.
    * Width and rounding act as given (the reference's are 0).
    """
    a = check_params(np.atleast_2d(articulation), "articulation")
    r = np.clip(np.asarray(reference_params, np.float64).reshape(NUM_PARAMS), 0.0, 1.0)
    rest = np.asarray(silence, np.float64).reshape(NUM_PARAMS)
    # How far each frame is from silence: 0 there, 1 once any parameter has moved the reach.
    speaking = np.clip(np.abs(a - rest).max(axis=1) / _SILENCE_REACH, 0.0, 1.0)
    out = a.copy()
    out[:, CLOSURE] = np.clip(a[:, CLOSURE] - (1.0 - speaking) * rest[CLOSURE], 0.0, 1.0)
    # Lips that seal bring the jaw up with them (a p/b/m is made nearly shut): sealing frames
    # take the articulation's own jaw and retraction, not the reference's opening, so a
    # wide-open source does not stretch its lips over a dropped jaw.
    seal = _seal(out[:, CLOSURE])
    for col in (JAW, TEETH):
        raw = np.clip(a[:, col] - rest[col], 0.0, 1.0)
        out[:, col] = (1.0 - seal) * (r[col] + raw * (1.0 - r[col])) + seal * raw
    for col in (WIDTH, ROUND):
        out[:, col] = a[:, col] - rest[col]
    return check_params(out, "anchored articulation")


_SPEECH_OPEN_JAW = 0.3  # articulated jaw opening from which a spoken frame opens as anchored
SPEECH_GAP_S = 0.35  # pauses inside speech shorter than this count as speech (a breath, a stop)
SPEECH_RAMP_S = 0.08  # seconds over which a portrait's mouth hands over between its rest and speech


def speech_activity(articulation: np.ndarray, silence: np.ndarray, fps: float) -> np.ndarray:
    """``[T]`` 0..1: how much each frame of an articulation track ``[T, 5]`` at ``fps`` belongs
    to running speech (1) rather than to a rest between utterances (0).

    A frame is spoken when some parameter is :data:`_SILENCE_REACH` away from ``silence``; pauses
    shorter than :data:`SPEECH_GAP_S` are filled (between two words the lips meet as anyone's do;
    the person's own rest returns only in real pauses), and the activity ramps (smoothstep, over
    :data:`SPEECH_RAMP_S`) into the rests on both sides. A single frame (no track) is judged alone.
    """
    a = check_params(np.atleast_2d(articulation), "articulation")
    rest = np.asarray(silence, np.float64).reshape(NUM_PARAMS)
    spoken = np.abs(a - rest).max(axis=1) >= _SILENCE_REACH
    if not spoken.any():
        return np.zeros(len(a))
    index = np.flatnonzero(spoken)
    gap = max(int(round(SPEECH_GAP_S * fps)), 1)
    for start, stop in zip(index[:-1], index[1:]):
        if 1 < stop - start <= gap:
            spoken[start:stop] = True
    ramp = max(SPEECH_RAMP_S * fps, 1.0)
    return _smoothstep(np.clip(1.0 - _distance_to(spoken) / ramp, 0.0, 1.0))


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Frames from each frame to the nearest True of ``mask`` [T] (at least one True)."""
    n = len(mask)
    forward = np.empty(n)
    last = -float(2 * n + 2)
    for t in range(n):
        last = t if mask[t] else last
        forward[t] = t - last
    backward = np.empty(n)
    following = float(3 * n + 3)
    for t in range(n - 1, -1, -1):
        following = t if mask[t] else following
        backward[t] = following - t
    return np.minimum(forward, backward)


def blend_rest_and_speech(
    articulation: np.ndarray, reference_params: np.ndarray, silence: np.ndarray,
    activity: np.ndarray | None = None,
) -> np.ndarray:
    """Rig parameters ``[T, 5]`` of a portrait: the source's own mouth at rest
    (:func:`anchor_at_reference`), the articulation as it is in running speech, mixed by
    ``activity`` ``[T]`` (:func:`speech_activity` of the whole track; default: of these frames
    alone, at one frame per second).

    Why not anchored throughout: a person who rests with parted lips (a smile showing teeth) does
    not speak from that smile; speech shapes the lips itself -- between words they come together
    as for anyone -- and the smile returns in the pauses. Anchored throughout, the lips stay
    parted through the quiet consonants and only the loud vowels and the p/b/m move them, which
    measured as weak sync (mouth-opening vs speech-envelope r 0.43 on the example portrait, 0.63
    with this hand-over).
    """
    a = check_params(np.atleast_2d(articulation), "articulation")
    activity = speech_activity(a, silence, 1.0) if activity is None else activity
    w = np.clip(np.asarray(activity, np.float64).reshape(-1, 1), 0.0, 1.0)
    assert len(w) == len(a), (len(w), len(a))
    anchored = anchor_at_reference(a, reference_params, silence)
    # In speech, open frames (vowels) open from the person's own mouth as anchored -- past a smile
    # -- and nearly closed ones (consonants, stops) take the articulation's own small opening, so
    # the opening spans the whole range the speech does.
    spoken = a.copy()
    rest_jaw = float(np.asarray(silence, np.float64).reshape(NUM_PARAMS)[JAW])
    open_share = _smoothstep(np.clip((a[:, JAW] - rest_jaw) / _SPEECH_OPEN_JAW, 0.0, 1.0))
    for col in (JAW, TEETH):
        spoken[:, col] = a[:, col] + open_share * (anchored[:, col] - a[:, col])
    return check_params(anchored + w * (spoken - anchored), "rig parameters")



def check_landmarks(landmarks: np.ndarray, name: str) -> np.ndarray:
    """``[478, 3]`` finite float landmarks (float32 copy) or a clear error."""
    lm = np.asarray(landmarks)
    if lm.shape != (T.NUM_POINTS, 3):
        raise ValueError(
            f"{name} must be face-mesh landmarks of shape (478, 3) in crop pixels, got {lm.shape}"
        )
    if not np.isfinite(lm).all():
        raise ValueError(f"{name} contain NaN/inf: no face was found in that frame")
    return lm.astype(np.float32, copy=True)


def check_params(params: np.ndarray, name: str) -> np.ndarray:
    """``[T, 5]`` articulation parameters as float64, clipped to their ranges (with a warning)."""
    p = np.asarray(params, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_PARAMS:
        raise ValueError(
            f"{name} must have shape (T, {NUM_PARAMS}) with columns {', '.join(PARAM_NAMES)}; "
            f"got {p.shape}"
        )
    if not np.isfinite(p).all():
        raise ValueError(f"{name} contain NaN/inf; check the articulation track")
    low = np.array([r[0] for r in PARAM_RANGES])
    high = np.array([r[1] for r in PARAM_RANGES])
    clipped = np.clip(p, low, high)
    if np.abs(clipped - p).max(initial=0.0) > 1e-3:
        bad = [PARAM_NAMES[i] for i in range(NUM_PARAMS) if np.abs(clipped[:, i] - p[:, i]).max() > 1e-3]
        log.warning("%s: values outside their range were clipped (%s)", name, ", ".join(bad))
    return clipped


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(x: np.ndarray) -> np.ndarray:
    """1 at 0, 0 for |x| >= 1, smooth (C1) in between."""
    return np.clip(1.0 - x * x, 0.0, None) ** 2


@dataclass(frozen=True)
class _MouthShape:
    """What the weights are measured against, in face units of one frame: the mouth centre
    (midway between the corners, and where the lips meet), corner height, half width, and the
    lowest point of the nose base (nothing at or above it ever moves)."""

    centre_u: float
    centre_v: float
    corner_v: float
    half_width: float
    nose_v: float

    @staticmethod
    def of(uv: np.ndarray) -> "_MouthShape":
        corners = uv[list(T.MOUTH_CORNERS)]
        return _MouthShape(
            centre_u=float(corners[:, 0].mean()),
            centre_v=float(0.5 * (uv[T.UPPER_LIP_BOTTOM, 1] + uv[T.LOWER_LIP_TOP, 1])),
            corner_v=float(corners[:, 1].mean()),
            half_width=float(abs(corners[1, 0] - corners[0, 0]) / 2),
            nose_v=float(uv[list(T.NOSE_BASE), 1].max()),
        )

    def lateral(self, u: np.ndarray) -> np.ndarray:
        """|u| from the mouth centre, in half mouth widths, capped at 1."""
        return np.minimum(np.abs(u - self.centre_u) / self.half_width, 1.0)

    def lip_line(self, u: np.ndarray) -> np.ndarray:
        """v where the lips meet: the centre curving up (or down) to the corners' level."""
        s = self.lateral(u)
        return self.centre_v + (self.corner_v - self.centre_v) * s * s

    def below_nose(self, v: np.ndarray) -> np.ndarray:
        """0 at and above the nose base, 1 from a little below it."""
        return _smoothstep((v - self.nose_v - 0.02) / 0.08)


def _skin_jaw_weight(u: np.ndarray, v: np.ndarray, shape: _MouthShape, config: RigConfig) -> np.ndarray:
    """Share of the jaw drop a skin point at (u, v) follows; non-decreasing in v."""
    return _skin_jaw_weight_along(u, shape, config)(v)


def _skin_jaw_weight_along(u: np.ndarray, shape: _MouthShape, config: RigConfig):
    """The skin weight as a function of v for fixed ``u`` (the u-only parts computed once)."""
    beyond = np.maximum(np.abs(u - shape.centre_u) - shape.half_width, 0.0)
    # A soft hinge around the lip line, wider towards the cheeks so they stretch smoothly.
    band = 0.16 + 0.6 * beyond
    line = shape.lip_line(u)
    # The mandible pivots near the ears: the face edge drops less than the chin.
    edge = 1.0 - (1.0 - config.jaw_edge_share) * _smoothstep((np.abs(u - shape.centre_u) - 0.45) / 0.55)
    return lambda v: _smoothstep((v - line) / band + 0.5) * edge * shape.below_nose(v)


def _lip_jaw_weight(u: np.ndarray, shape: _MouthShape, config: RigConfig) -> tuple[np.ndarray, np.ndarray]:
    """(lower lip, upper lip) share of the jaw drop; depends on u only. The lower lip drops
    fully at the centre and like the corners at its ends (an elliptic opening); the upper lip
    lifts a little at the centre."""
    s = shape.lateral(u)
    corner = config.corner_jaw_share
    return 1.0 - (1.0 - corner) * s**3, corner * s**3 - config.upper_lip_lift * (1 - s**2)


def _jaw_weight(uv: np.ndarray, shape: _MouthShape, config: RigConfig) -> np.ndarray:
    """Share of the jaw drop each point follows [478]: 1 on the lower lip and chin, 0 upper face."""
    u, v = uv[:, 0], uv[:, 1]
    weight = _skin_jaw_weight(u, v, shape, config)
    lower_lip, upper_lip = _lip_jaw_weight(u, shape, config)
    weight[_LOWER_LIP] = lower_lip[_LOWER_LIP]
    weight[_UPPER_LIP] = upper_lip[_UPPER_LIP]
    weight[_CORNERS] = config.corner_jaw_share
    return weight


def _remove_opening(uv: np.ndarray, params: np.ndarray, config: RigConfig) -> np.ndarray:
    """Face coordinates ``uv`` [478, 2] of the pose that ``params`` (jaw, teeth) would open into
    ``uv``: the inverse of the rig, with weights evaluated at the *result*.

    So the same face seen open or closed gets the same rest (and then the same basis), and dubbing
    a video does not make the skin round the mouth jitter with each frame's own opening. Lip points
    have weights that depend on u only (the jaw moves along v), so they are solved directly; skin
    points solve ``v_open = v + drop * w(u, v)`` by bisection (w is non-decreasing in v).
    """
    rest = np.array(uv, dtype=np.float64, copy=True)
    drop = params[JAW] * config.jaw_drop
    if drop <= 0 and params[TEETH] <= 0:
        return rest
    shape = _MouthShape.of(uv)
    lips = _LIP_POINTS
    lower_lip, upper_lip = _lip_jaw_weight(uv[:, 0], shape, config)
    s = shape.lateral(uv[:, 0])
    middle = 1.0 - s**4
    move = np.zeros(len(uv))
    for rings, jaw_share, retract in (
        (_LOWER_RINGS, lower_lip, config.teeth_lower), (_UPPER_RINGS, upper_lip, -config.teeth_upper),
    ):
        for ring, depth in zip(rings, _RING_DEPTH):
            share = _retraction_share(depth)
            move[ring] = drop * jaw_share[ring] + params[TEETH] * retract * share * middle[ring]
    move[_CORNERS] = drop * config.corner_jaw_share
    rest[lips, 1] -= move[lips]
    if drop > 0:
        # The skin weights are measured against the *rest* mouth.
        rest_shape = _MouthShape.of(rest)
        # Skin at or above the nose base never moves: nothing to solve there.
        skin = np.setdiff1d(np.nonzero(uv[:, 1] > rest_shape.nose_v)[0], lips)
        weight = _skin_jaw_weight_along(uv[skin, 0], rest_shape, config)
        target = uv[skin, 1]
        low, high = target - drop, target.copy()
        for _ in range(_BISECTIONS):
            mid = 0.5 * (low + high)
            too_low = mid + drop * weight(mid) < target
            low = np.where(too_low, mid, low)
            high = np.where(too_low, high, mid)
        rest[skin, 1] = 0.5 * (low + high)
    return rest


def _spread_weight(uv: np.ndarray, shape: _MouthShape) -> np.ndarray:
    """How much a point follows the mouth corners sideways [478] (signed by side)."""
    u, v = uv[:, 0], uv[:, 1]
    s = shape.lateral(u)
    dv = v - shape.lip_line(u)
    beyond = np.maximum(np.abs(u - shape.centre_u) - shape.half_width, 0.0)
    reach_v = np.where(dv < 0, 0.3, 0.45)  # less room up to the nose than down to the chin
    weight = s * _bump(beyond / 0.45) * _bump(dv / reach_v) * shape.below_nose(v)
    weight[_LIP_POINTS] = s[_LIP_POINTS]
    return np.sign(u - shape.centre_u) * weight


def _basis(
    uv: np.ndarray, shape: _MouthShape, frame: FaceFrame, jaw_weight: np.ndarray,
    config: RigConfig,
) -> np.ndarray:
    """Crop-px displacement per unit parameter, [4, 478, 3] in :data:`LINEAR_PARAMS` order."""
    n = len(uv)
    s = shape.lateral(uv[:, 0])
    centre = 1.0 - s * s
    spread = _spread_weight(uv, shape)
    duv = np.zeros((len(LINEAR_PARAMS), n, 2))
    dz = np.zeros((len(LINEAR_PARAMS), n))

    duv[0, :, 1] = config.jaw_drop * jaw_weight

    duv[1, :, 0] = config.width_shift * spread

    duv[2, :, 0] = -config.round_narrow * spread
    dz[2, _LIP_POINTS] = -config.round_protrude * centre[_LIP_POINTS]
    # Retraction is strongest mid-lip (s^4 keeps the corners still) and at the opening.
    middle = 1.0 - s**4
    for upper, lower, depth in zip(_UPPER_RINGS, _LOWER_RINGS, _RING_DEPTH):
        # Rounding everts the lips: their outer parts move away from the mouth line.
        duv[2, upper, 1] = -config.round_evert * depth * centre[upper]
        duv[2, lower, 1] = config.round_evert * depth * centre[lower]
        share = _retraction_share(depth)
        duv[3, upper, 1] = -config.teeth_upper * share * middle[upper]
        duv[3, lower, 1] = config.teeth_lower * share * middle[lower]

    basis = np.zeros((len(LINEAR_PARAMS), n, 3))
    basis[..., :2] = frame.vectors_to_crop(duv)
    basis[..., 2] = dz * frame.iod
    return basis


def _apply_closure(landmarks: np.ndarray, closure: np.ndarray, config: RigConfig) -> np.ndarray:
    """Bring the inner lip contours together by ``closure`` [T] (1: they meet): [T, 478, 3]."""
    out = np.array(landmarks, dtype=np.float64, copy=True)
    if out.ndim == 2:
        out = out[None]
    # ArticulationTrack closure is not a gap fraction: >= 0.6 (its "closed" threshold) means the lips
    # touch and <= 0.3 leaves them free, so coarticulated p/b/m peaks of 0.7-0.95 seal the lips.
    c = _seal(closure).reshape(-1, 1, 1)
    gap = out[:, _INNER_LOWER, :2] - out[:, _INNER_UPPER, :2]
    share = config.closure_upper_share
    move_upper = c * share * gap
    move_lower = -c * (1.0 - share) * gap
    # Lip tissue stretches: the rings further out follow less (the outer contour by
    # closure_outer_follow), so the lips do not thin to nothing in a seal with the jaw open.
    for upper, lower, depth in zip(_UPPER_RINGS, _LOWER_RINGS, _RING_DEPTH):
        follow = 1.0 - (1.0 - config.closure_outer_follow) * depth
        out[:, upper, :2] += follow * move_upper
        out[:, lower, :2] += follow * move_lower
    return out


def _seal(closure: np.ndarray) -> np.ndarray:
    """How far lip_closure brings the lips together: 0 up to 0.3, 1 from 0.6 (float64)."""
    return np.clip((np.asarray(closure, dtype=np.float64) - 0.3) / 0.3, 0.0, 1.0)


def _retraction_share(depth: float) -> float:
    """Share of the inner contour's retraction that a lip ring at ``depth`` (0..1) follows."""
    return 1.0 - 0.6 * depth
