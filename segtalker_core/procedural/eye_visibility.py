"""Which eyes of a portrait may blink: per eye a blink strength 0..1 from parsing and appearance.

Painted lids are only believable over an eye one can see. Over sunglasses, goggles or a dark tinted
lens a blink paints skin-coloured lids and a lash line onto the lens -- a glitch no real face
shows -- and a blink of an eye that is already nearly shut (looking down, squinting) has almost
nothing to close. :func:`eye_visibility` decides once per source, from five cues per eye:

* **texture**: an open eye is the highest-contrast patch of the face (white sclera, dark iris,
  lash line). The lightness spread inside the eye polygon, relative to the cheek's lightness (so
  exposure cancels), separates it from a lens: opaque lenses and goggle bands are flat; a tinted
  lens scales the contrast down with the light it lets through.
* **darkness**: the eye's mean lightness against the cheek's. An eye is a little darker than skin
  (iris, lash shadow); a dark lens is far darker.
* **glasses**: the share of the eye polygon the parser labels ``eyeglasses``. Clear glasses often
  get that label too, so it only lowers the blink where the texture is doubtful as well; the
  labelled pixels themselves are protected at paint time (:attr:`BlinkGate.protect`): frames lie
  in front of the lids.
* **aperture**: lid gap / eye width from the landmarks, against a typical open eye.
* **pupil**: the lightness at the iris centre. An open eye shows its pupil there; a lid that is
  (nearly) down shows skin. Face-mesh lids often stay apart over a nearly shut eye, so this
  catches what the aperture misses; it is only asked when the lids are not clearly apart.

The strength is the product of the cue factors: every cue can veto a blink on its own. A toned
down eye closes only part of the way (the renderer scales its closure), which over a light tint
or a half-closed eye looks like a smaller blink rather than a translucent lid.

The built-in landmark parser labels the lens area ``eyes`` (it draws the eye polygon from the
landmarks whatever covers it), so the appearance cues decide on their own when the map has no
``eyeglasses``.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .mouth_segmentation import polygon_mask
from .warp import Box

EYEGLASSES = L.region_index("eyeglasses")
SKIN = L.region_index("skin")
SIDES = ("right", "left")  # the person's, like mesh_topology (and blink's lid order)
_LIDS = ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER), (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER))
_IRISES = ((T.RIGHT_IRIS_CENTER, T.RIGHT_IRIS), (T.LEFT_IRIS_CENTER, T.LEFT_IRIS))
_PUPIL_SHARE = 0.3  # of the iris radius: the disc around the iris centre that shows the pupil
_LEVEL_FLOOR = 45.0  # Lab L: for contrast, a lower level (dark skin, dim light) counts as this
_MIN_EYE_PX = 12  # fewer pixels than this: no appearance to judge (the aperture decides)


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the cues, each a ramp ``(lo, hi)``: the cue counts 0 at or below lo, 1 at or
    above hi (smoothly between), set from the astronaut and painted covers of its eyes.

    Lightness levels are relative to the cheek's, or to half the crop's bright end (p95) where
    the cheek is darker than that (dark skin under normal light).

    ``texture``: eye lightness spread (p90 - p10) / that level (at least 45 Lab L, so neither dark
    skin nor dim light inflates it) -- open eyes 0.74-0.92 (blurred copies included; 1.16-1.24
    on darkened skin, 0.56-0.63 on under-exposed copies), lids 80 % shut 0.58-0.64, a x0.35
    tinted lens 0.32-0.34, opaque dark lenses 0.03-0.22 (0.07-0.33 on darkened skin), goggle
    bands 0.03-0.08. ``darkness``: eye mean lightness / the level -- open 0.56-0.72 (about 1 on
    darkened skin), tinted 0.23-0.24, dark lenses 0.12-0.18 (0.23-0.29 on darkened skin).
    ``aperture``: mean lid gap / eye width -- open 0.22-0.24 (face-mesh detected 0.19-0.24),
    lids 80 % shut 0.05 (detected 0.12-0.16: the mesh lags a closing lid).
    ``pupil``: lightness at the iris centre / the level, counted *against* blinking -- open
    0.14-0.37 (0.49 with a catchlight), lids 80 % shut 0.9-1.1 (detected 0.40-0.45); it counts
    only as far as the aperture is below ``wide_open``. ``glasses``: share of the eye labelled
    ``eyeglasses``. ``skip``: strengths below it become 0 (a faint blink over a lens reads as a
    smudge, not as a blink).
    """

    texture: tuple[float, float] = (0.25, 0.5)
    darkness: tuple[float, float] = (0.3, 0.45)
    aperture: tuple[float, float] = (0.11, 0.21)
    pupil: tuple[float, float] = (0.35, 0.6)
    wide_open: tuple[float, float] = (0.17, 0.23)
    glasses: tuple[float, float] = (0.2, 0.6)
    skip: float = 0.15


@dataclass(frozen=True)
class EyeCues:
    """The measured cues of one eye (see :class:`GateConfig` for the units)."""

    texture: float
    darkness: float
    glasses: float
    aperture: float
    pupil: float


@dataclass(frozen=True)
class BlinkGate:
    """Per-eye blink strengths of one source (right, left), 0 = never blink that eye .. 1 = full.

    ``reasons``: per eye, why it is toned down (empty when it blinks fully); ``cues``: the
    measurements; ``protect`` [S, S] bool: pixels a blink must never change (``eyeglasses`` in
    the source's map: frames and labelled lenses).
    """

    strengths: tuple[float, float]
    reasons: tuple[str, str]
    cues: tuple[EyeCues, EyeCues]
    protect: np.ndarray

    @staticmethod
    def open(size: int) -> "BlinkGate":
        """Both eyes blink fully and nothing is protected (no appearance check)."""
        cues = EyeCues(float("nan"), float("nan"), 0.0, float("nan"), float("nan"))
        return BlinkGate((1.0, 1.0), ("", ""), (cues, cues), np.zeros((size, size), bool))

    @property
    def blinks(self) -> bool:
        """Whether any eye blinks at all."""
        return max(self.strengths) > 0.0

    def describe(self) -> str:
        """One log line, e.g. ``blink: right 0.00 (dark lens: 0.18 of the skin's lightness),
        left 1.00``."""
        parts = []
        for side, strength, reason in zip(SIDES, self.strengths, self.reasons):
            parts.append(f"{side} {strength:.2f}" + (f" ({reason})" if reason else ""))
        return "blink: " + ", ".join(parts)


def eye_visibility(
    crop: np.ndarray, landmarks: np.ndarray, regions12: np.ndarray, config: GateConfig | None = None
) -> BlinkGate:
    """The :class:`BlinkGate` of a source: ``crop`` [S, S, 3] uint8, ``landmarks`` [478, 2+] crop
    px, ``regions12`` [S, S] 12-region map. Deterministic (pure image statistics)."""
    config = config or GateConfig()
    crop = np.asarray(crop)
    regions = np.asarray(regions12)
    landmarks = np.asarray(landmarks, np.float64)
    square = crop.ndim == 3 and crop.shape[2] == 3 and crop.shape[0] == crop.shape[1]
    if not square or crop.dtype != np.uint8:
        raise ValueError(
            f"crop must be a square RGB uint8 image [S, S, 3], got {crop.shape} {crop.dtype}; "
            f"convert with face.image.to_rgb_uint8"
        )
    if regions.shape != crop.shape[:2]:
        raise ValueError(
            f"regions12 must be a label map like the crop {crop.shape[:2]}, got {regions.shape}"
        )
    if landmarks.ndim != 2 or landmarks.shape[0] < 468 or landmarks.shape[1] < 2:
        raise ValueError(
            f"landmarks must be face-mesh points [478, 2+] in crop px, got {landmarks.shape}"
        )
    iod = float(np.linalg.norm(
        landmarks[list(T.LEFT_EYE), :2].mean(0) - landmarks[list(T.RIGHT_EYE), :2].mean(0)
    ))
    lightness = cv2.cvtColor(crop.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)[..., 0]
    # Skin lighter than half the crop's bright end (white of clothes, background, highlights):
    # below that, a cheek tells the skin's own tone more than the light, and a dark lens would
    # pass for an eye merely a little darker than dark skin.
    exposure = 0.5 * float(np.percentile(lightness, 95))
    skin_level = max(_cheek_lightness(lightness, landmarks, regions, iod), exposure)
    strengths, reasons, cues = [], [], []
    for (upper, lower), iris in zip(_LIDS, _IRISES):
        cue = _eye_cues(lightness, landmarks, regions, upper, lower, iris, skin_level)
        strength, reason = _decide(cue, config)
        strengths.append(strength)
        reasons.append(reason)
        cues.append(cue)
    return BlinkGate(tuple(strengths), tuple(reasons), tuple(cues), regions == EYEGLASSES)


def _cheek_lightness(
    lightness: np.ndarray, landmarks: np.ndarray, regions: np.ndarray, iod: float
) -> float:
    """Median lightness of the cheeks beside the nostrils.

    Below every lens or goggle band, above most beards, lit like the eyes. Parsed skin there only;
    any skin of the map when the cheeks are not skin (a beard, a mask).
    """
    size = lightness.shape[0]
    y = landmarks[T.NOSE_BOTTOM, 1]
    values = []
    for eye in (T.RIGHT_EYE, T.LEFT_EYE):
        x = landmarks[list(eye), 0].mean()
        box = Box.around(np.array([[x, y]]), 0.12 * iod, size)
        patch = regions[box.slices] == SKIN
        values.append(lightness[box.slices][patch])
    cheek = np.concatenate(values)
    if cheek.size < 50:
        cheek = lightness[regions == SKIN]
    if cheek.size < 50:
        cheek = lightness.ravel()
    return float(np.median(cheek))


def _eye_cues(
    lightness: np.ndarray, landmarks: np.ndarray, regions: np.ndarray, upper, lower, iris,
    skin_level: float,
) -> EyeCues:
    polygon = landmarks[list(T.closed_polygon(upper, lower)), :2]
    box = Box.around(polygon, 2.0, lightness.shape[0])
    inside = polygon_mask(polygon, box).astype(bool)
    width = float(np.linalg.norm(landmarks[upper[0], :2] - landmarks[upper[-1], :2]))
    up, low = list(upper[1:-1]), list(lower[1:-1])
    gap = float(np.mean(landmarks[low, 1] - landmarks[up, 1]))
    aperture = max(gap, 0.0) / max(width, 1e-6)
    glasses = float((regions[box.slices][inside] == EYEGLASSES).mean()) if inside.any() else 0.0
    level = max(skin_level, 1.0)
    # Sclera and iris are about as light on any skin: dark skin must not inflate the contrast of
    # an eye (or of a lens's sheen), so contrast is normalised by exposure only above a floor.
    contrast_level = max(skin_level, _LEVEL_FLOOR)
    pupil = _pupil_lightness(lightness, landmarks, iris) / level
    values = lightness[box.slices][inside]
    if values.size < _MIN_EYE_PX:
        return EyeCues(float("nan"), float("nan"), glasses, aperture, pupil)
    p10, p90 = np.percentile(values, (10, 90))
    texture = float(p90 - p10) / contrast_level
    darkness = float(values.mean()) / level
    return EyeCues(texture, darkness, glasses, aperture, pupil)


def _pupil_lightness(lightness: np.ndarray, landmarks: np.ndarray, iris) -> float:
    """Median lightness of a small disc at the iris centre; NaN without iris landmarks.

    An open eye shows its pupil there, the darkest spot of the face; a lid that is down (or
    nearly: looking down, squinting) shows skin. Face-mesh lids of a nearly shut eye often stay
    too far apart, so this is the better witness of a shut eye than the aperture.
    """
    centre, ring = iris
    if landmarks.shape[0] <= max(ring):
        return float("nan")
    c = landmarks[centre, :2]
    radius = float(np.linalg.norm(landmarks[list(ring), :2] - c, axis=1).mean())
    r = max(1.5, _PUPIL_SHARE * radius)
    box = Box.around(c[None], r + 1.0, lightness.shape[0])
    ys, xs = np.mgrid[box.y0:box.y1, box.x0:box.x1]
    disc = (xs - c[0]) ** 2 + (ys - c[1]) ** 2 <= r * r
    values = lightness[box.slices][disc]
    return float(np.median(values)) if values.size else float("nan")


def _ramp(value: float, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    x = float(np.clip((value - lo) / max(hi - lo, 1e-9), 0.0, 1.0))
    return x * x * (3.0 - 2.0 * x)


def _decide(cue: EyeCues, config: GateConfig) -> tuple[float, str]:
    """Blink strength and reason of one eye from its cues."""
    factors: list[tuple[float, str]] = [(
        _ramp(cue.aperture, config.aperture),
        f"nearly closed: aperture {cue.aperture:.2f} of the eye width",
    )]
    if not np.isnan(cue.pupil):
        # Only where the lids are not clearly apart: a catchlight or a light iris can brighten
        # the iris centre of a wide open eye, and there the aperture alone is trusted.
        doubt = 1.0 - _ramp(cue.aperture, config.wide_open)
        factors.append((
            1.0 - doubt * _ramp(cue.pupil, config.pupil),
            f"no pupil: iris centre {cue.pupil:.2f} of the skin's lightness",
        ))
    if np.isnan(cue.texture):
        factors.append((0.0, "eye too small to see"))
    else:
        texture = _ramp(cue.texture, config.texture)
        factors.append((texture, f"flat: contrast {cue.texture:.1f}x the skin's"))
        factors.append((
            _ramp(cue.darkness, config.darkness),
            f"dark lens: {cue.darkness:.2f} of the skin's lightness",
        ))
        # The label counts only as far as the appearance is doubtful: clear glasses are often
        # labelled over the lens, and their eyes blink.
        label = _ramp(cue.glasses, config.glasses) * (1.0 - texture)
        factors.append((1.0 - label, f"eyeglasses over {cue.glasses:.0%} of the eye"))
    strength = float(np.prod([f for f, _ in factors]))
    reasons = "; ".join(reason for f, reason in factors if f < 0.99)
    if strength < config.skip:
        strength = 0.0
    return round(strength, 4), reasons
