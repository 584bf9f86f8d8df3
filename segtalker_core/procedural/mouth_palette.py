"""Colours and grain of the built-in mouth interior, sampled from the source face.

Nothing here is a fixed palette. Every colour starts from what the crop shows -- the lips (they
carry the face's lighting and white balance and are the same mucosa as the inside of the mouth),
the skin, the whites of the eyes, the source's own teeth -- and fixed hue *priors* (what a tongue
or gum looks like under neutral light) only steer the hue, after being put under the face's light:

* ``light`` [3]: the colour cast of the scene, the skin's chromaticity relative to a typical skin's,
  half strength (skin tone itself varies between people, so only part of the difference is light);
* ``white``: how bright a white object is in this crop: the whites of the eyes when the parse
  shows them, otherwise the skin's brightness; sets the synthetic teeth's brightness, so teeth do
  not glow on an under-exposed face or turn grey on a dark-skinned one;
* a minimum chroma keeps red mucosa red on washed-out (over-exposed, low-chroma) faces, and a
  luminance floor relative to the lips keeps the deep cavity from being pure black on dark ones.

``grain`` [3] is the source's own noise: per channel, the robust std of the skin's high-pass
residual (the image minus its Gaussian blur of :data:`GRAIN_SIGMA` px). The synthetic grain is
normalised by the same measure, so the interior's residual matches the photo's around it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .mouth_segmentation import polygon_mask
from .warp import Box

SKIN = L.region_index("skin")
LIPS = L.region_index("lips")
EYES = L.region_index("eyes")

# Hue priors under neutral light (only their chromaticity is used, scaled to sampled brightness).
_PRIOR_SKIN = np.array([0.80, 0.60, 0.50], np.float32)
_PRIOR_IVORY = np.array([0.93, 0.90, 0.83], np.float32)
_PRIOR_TONGUE = np.array([0.80, 0.42, 0.42], np.float32)
_PRIOR_GUM = np.array([0.85, 0.50, 0.52], np.float32)
_PRIOR_THROAT = np.array([0.55, 0.16, 0.14], np.float32)  # dark red-brown back of the mouth
_MIN_CHROMA = 0.22  # (max - min) / luma of mucosa colours: never grey
_GRAIN_MAX = 12.0 / 255.0  # beyond this the "noise" is texture or edges, not grain
GRAIN_SIGMA = 1.2  # px: the blur whose residual measures grain (source and synthetic alike)


@dataclass(frozen=True)
class MouthPalette:
    """Float32 RGB (0..1) colours of the synthesised interior, plus the source's grain.

    ``teeth``: lit incisor colour; ``cavity``: the cavity near the lips, where light reaches in;
    ``tongue``: lit tongue; ``cavity_deep``: the back of the mouth; ``gum``: gums; ``wet``: the
    inner, wet surface of the lips; ``grain`` [3]: noise std per channel (0..1 units). The last
    four default to values derived from the first three (palettes made before they existed).
    """

    teeth: np.ndarray
    cavity: np.ndarray
    tongue: np.ndarray
    cavity_deep: np.ndarray | None = None
    gum: np.ndarray | None = None
    wet: np.ndarray | None = None
    grain: np.ndarray | None = None

    def __post_init__(self) -> None:
        teeth, tongue = np.asarray(self.teeth, np.float32), np.asarray(self.tongue, np.float32)
        derived = {
            "cavity_deep": 0.35 * np.asarray(self.cavity, np.float32),
            "gum": 0.5 * (tongue + teeth * np.array([1.0, 0.7, 0.7], np.float32)),
            "wet": 0.8 * np.asarray(self.tongue, np.float32),
            "grain": np.zeros(3, np.float32),
        }
        for name in ("teeth", "cavity", "tongue", "cavity_deep", "gum", "wet", "grain"):
            value = getattr(self, name)
            value = derived[name] if value is None else value
            value = np.asarray(value, np.float32).reshape(3)
            object.__setattr__(self, name, np.clip(value, 0.0, 1.0).astype(np.float32))

    @staticmethod
    def from_source(
        crop: np.ndarray, landmarks: np.ndarray, regions12: np.ndarray | None = None,
        teeth_rgb: np.ndarray | None = None,
    ) -> "MouthPalette":
        """Colours matched to a source crop [S, S, 3] uint8 with landmarks [478, 2+]: lips, skin
        and eye whites from ``regions12`` (or the landmark polygons when a region is empty),
        teeth from ``teeth_rgb`` (the source's own teeth, RGB 0..1) when given."""
        lips = region_colour(crop, regions12, LIPS, landmarks, "lips")
        skin = region_colour(crop, regions12, SKIN, landmarks, "skin")
        light = scene_light(skin)
        lips_luma = max(float(luma(lips)), 0.02)
        white = white_level(crop, regions12, skin)
        if teeth_rgb is None:
            teeth = _with_luma(_tinted(_PRIOR_IVORY, light) + 0.05 * _chromaticity(lips), 0.92 * white)
        else:
            teeth = np.asarray(teeth_rgb, np.float32)
        # Mucosa: the lips' own hue, pulled half way to each part's prior under the scene light.
        def mucosa(prior: np.ndarray, share: float, brightness: float) -> np.ndarray:
            hue = (1.0 - share) * _chromaticity(lips) + share * _tinted(prior, light)
            return _with_luma(_min_chroma(hue, _MIN_CHROMA), brightness)

        cavity = mucosa(_PRIOR_THROAT, 0.5, 0.5 * lips_luma)
        # Floor: a little light always reaches the back (and a black hole reads as a hole).
        deep = mucosa(_PRIOR_THROAT, 0.7, max(0.16 * lips_luma, 0.025))
        tongue = mucosa(_PRIOR_TONGUE, 0.5, 0.8 * lips_luma)
        gum = mucosa(_PRIOR_GUM, 0.5, min(0.95 * lips_luma + 0.1 * white, 0.9))
        wet = mucosa(_PRIOR_TONGUE, 0.3, 0.55 * lips_luma)
        return MouthPalette(teeth, cavity, tongue, deep, gum, wet, estimate_grain(crop, regions12, landmarks))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB ``[..., 3]``."""
    rgb = np.asarray(rgb)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def scene_light(skin: np.ndarray) -> np.ndarray:
    """Colour cast [3] (luma 1) of the light, guessed from the skin: half of how the skin's
    chromaticity differs from a typical skin's (the other half is the person's own tone)."""
    ratio = _chromaticity(skin) / _chromaticity(_PRIOR_SKIN)
    return _with_luma(np.sqrt(np.clip(ratio, 0.2, 5.0)), 1.0)


def white_level(crop: np.ndarray, regions12: np.ndarray | None, skin: np.ndarray) -> float:
    """Luma (0..1) a white object has in this crop.

    The whites of the eyes are the best white reference a face has: the 85th percentile of the
    unsaturated eye pixels (iris and lashes are darker, so they fall below it). Without a usable
    eye region, the skin's brightness relative to a typical skin's stands in (it cannot tell a
    dark skin from a dark photo, hence the narrow clip)."""
    fallback = float(np.clip(float(luma(skin)) / 0.62, 0.45, 1.05)) * 0.9
    if regions12 is None:
        return fallback
    mask = regions12 == EYES
    if mask.sum() < 30:
        return fallback
    pixels = crop[mask].astype(np.float32) / 255.0
    value = pixels.max(axis=1)
    pale = pixels[(value - pixels.min(axis=1)) < 0.35 * np.maximum(value, 1e-3)]
    if len(pale) < 15:
        return fallback
    sclera = float(np.quantile(luma(pale), 0.85))
    # Teeth are brighter than the whites of the eyes, which sit in the brows' shadow and are
    # partly covered by the lids and lashes.
    return float(np.clip(1.3 * sclera, 0.08, 0.97))


def estimate_grain(crop: np.ndarray, regions12: np.ndarray | None, landmarks: np.ndarray) -> np.ndarray:
    """Grain [3] (0..1 units) of the source's skin round the mouth: robust (MAD) std of the
    residual after a :data:`GRAIN_SIGMA` blur, on skin pixels away from region edges. Capped:
    strong residuals are edges or texture."""
    # The skin round the mouth (cheeks, chin, upper lip): the grain the interior sits in, and a
    # small window keeps the blur cheap.
    mouth = np.asarray(landmarks)[list(T.LIPS_OUTER), :2]
    points = np.asarray(landmarks)[:, :2]
    iod = float(np.linalg.norm(points[list(T.LEFT_EYE)].mean(0) - points[list(T.RIGHT_EYE)].mean(0)))
    try:
        box = Box.around(mouth, max(0.5 * iod, 8.0), crop.shape[0])
    except ValueError:  # mouth off the crop
        return np.zeros(3, np.float32)
    mask = _region_mask(crop, regions12, SKIN, landmarks, "skin")[box.slices]
    mask = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < 50:
        return np.zeros(3, np.float32)
    image = crop[box.slices].astype(np.float32) / 255.0
    residual = image - cv2.GaussianBlur(image, (0, 0), GRAIN_SIGMA)
    where = np.flatnonzero(mask)
    samples = residual.reshape(-1, 3)[where[:: max(1, len(where) // 6000)]]
    # The median absolute deviation ignores the few pores and hairs; x 1.4826 is std for noise.
    mad = np.median(np.abs(samples - np.median(samples, axis=0)), axis=0)
    return np.clip(1.4826 * mad, 0.0, _GRAIN_MAX).astype(np.float32)


def region_colour(
    crop: np.ndarray, regions12: np.ndarray | None, region: int, landmarks: np.ndarray, name: str
) -> np.ndarray:
    """Median colour (float32 RGB 0..1) of a region, or of its landmark polygon if it is empty."""
    where = np.flatnonzero(_region_mask(crop, regions12, region, landmarks, name))
    # A few thousand pixels give the median to well under a grey level; gathering all of a large
    # region is most of the cost.
    pixels = crop.reshape(-1, 3)[where[:: max(1, len(where) // 4000)]]
    if len(pixels) == 0:
        # No such pixels at all (a landmark polygon off the crop): a typical colour, better than
        # failing, and the renderer's output stays plausible.
        return (_PRIOR_SKIN if name == "skin" else np.array([0.7, 0.4, 0.4], np.float32)).copy()
    return (np.median(pixels, axis=0) / 255.0).astype(np.float32)


def _region_mask(
    crop: np.ndarray, regions12: np.ndarray | None, region: int, landmarks: np.ndarray, name: str
) -> np.ndarray:
    if regions12 is not None:
        mask = regions12 == region
        if mask.sum() >= 20:
            return mask
    size = crop.shape[0]
    polygons = [T.UPPER_LIP, T.LOWER_LIP] if name == "lips" else [T.FACE_OVAL]
    mask = np.zeros(crop.shape[:2], bool)
    full = Box(0, 0, size, size)
    for poly in polygons:
        mask |= polygon_mask(np.asarray(landmarks)[list(poly), :2], full) > 0
    if name == "skin":
        for poly in (T.LIPS_OUTER, T.LEFT_EYE, T.RIGHT_EYE, T.LEFT_BROW, T.RIGHT_BROW):
            mask &= polygon_mask(np.asarray(landmarks)[list(poly), :2], full) == 0
    return mask


def _chromaticity(rgb: np.ndarray) -> np.ndarray:
    """The colour scaled to luma 1 (hue and saturation, no brightness)."""
    rgb = np.maximum(np.asarray(rgb, np.float32), 1e-3)
    return rgb / max(float(luma(rgb)), 1e-3)


def _tinted(prior: np.ndarray, light: np.ndarray) -> np.ndarray:
    return _chromaticity(np.asarray(prior, np.float32) * light)


def _with_luma(rgb: np.ndarray, target: float) -> np.ndarray:
    """``rgb`` scaled to luma ``target``; where a channel would pass 1 the colour is mixed towards
    white of that luma instead, so the brightness is kept."""
    out = _chromaticity(rgb) * target
    top = float(out.max())
    if top > 1.0:
        share = (top - 1.0) / max(top - target, 1e-6)
        out = out + share * (target - out)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _min_chroma(hue: np.ndarray, minimum: float) -> np.ndarray:
    """A luma-1 colour whose chroma (max - min) is at least ``minimum``, pushed away from grey
    along its own hue (or towards red when it has none)."""
    hue = _chromaticity(hue)
    chroma = float(hue.max() - hue.min())
    if chroma >= minimum:
        return hue
    direction = hue - 1.0 if chroma > 1e-3 else np.array([1.0, -0.4, -0.4], np.float32)
    direction = direction / max(float(direction.max() - direction.min()), 1e-6)
    return _chromaticity(1.0 + minimum * direction)
