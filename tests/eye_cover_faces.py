"""Portraits whose eyes are hidden or half hidden, made from the astronaut (this module holds no
tests): sunglasses, tinted lenses, goggles, clear glasses and nearly closed lids.

Everything is painted with landmark-placed shapes, so each face comes with the exact pixels of its
lens (``cover`` [S, S] bool) for the check "a blink changes no pixel there".
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T

EYEGLASSES = L.region_index("eyeglasses")
EYES = L.region_index("eyes")


@dataclass(frozen=True)
class CoveredFace:
    """crop [S, S, 3] uint8, landmarks [478, 3], regions [S, S] uint8, cover [S, S] bool."""

    crop: np.ndarray
    landmarks: np.ndarray
    regions: np.ndarray
    cover: np.ndarray


def _iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(
        landmarks[list(T.LEFT_EYE), :2].mean(0) - landmarks[list(T.RIGHT_EYE), :2].mean(0)
    ))


def lens_masks(landmarks: np.ndarray, size: int, axes=(0.36, 0.27)) -> list[np.ndarray]:
    """One filled ellipse [S, S] float32 0..1 per eye (right, left), sized like sunglass lenses."""
    iod = _iod(landmarks)
    masks = []
    for eye in (T.RIGHT_EYE, T.LEFT_EYE):
        cx, cy = landmarks[list(eye), :2].mean(0)
        mask = np.zeros((size, size), np.float32)
        cv2.ellipse(
            mask, (int(round(cx * 16)), int(round((cy + 0.03 * iod) * 16))),
            (int(axes[0] * iod * 16), int(axes[1] * iod * 16)), 0, 0, 360, 1.0, -1, cv2.LINE_AA, 4,
        )
        masks.append(mask)
    return masks


def _bridge(landmarks: np.ndarray, size: int, thickness: float) -> np.ndarray:
    iod = _iod(landmarks)
    inner = [landmarks[c[1], :2] for c in (T.RIGHT_EYE_CORNERS, T.LEFT_EYE_CORNERS)]
    mask = np.zeros((size, size), np.float32)
    a, b = (np.round(np.array(p) * 16).astype(int) for p in inner)
    cv2.line(mask, tuple(a), tuple(b), 1.0, max(1, int(thickness * iod)), cv2.LINE_AA, 4)
    return mask


def _frames(lenses: list[np.ndarray], width: int) -> np.ndarray:
    """Rim of each lens, ``width`` px wide."""
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    rims = [cv2.dilate((m > 0.5).astype(np.uint8), kernel) - (m > 0.5) for m in lenses]
    return np.clip(sum(r.astype(np.float32) for r in rims), 0, 1)


def _blend(crop: np.ndarray, alpha: np.ndarray, paint: np.ndarray) -> np.ndarray:
    out = crop.astype(np.float32)
    out += alpha[..., None] * (paint - out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _noise(image: np.ndarray, seed: int, sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def _labelled(regions: np.ndarray, cover: np.ndarray, label: bool) -> np.ndarray:
    regions = np.array(regions, copy=True)
    if label:
        regions[cover] = EYEGLASSES
    return regions


def sunglasses(crop, landmarks, regions, label: bool = True) -> CoveredFace:
    """Opaque near-black lenses with a soft sheen, a dark rim and bridge; ``label``: the map
    marks them ``eyeglasses`` (else the parser's own eyes stay, as the landmark parser does)."""
    size = crop.shape[0]
    lenses = lens_masks(landmarks, size)
    lens = np.clip(lenses[0] + lenses[1], 0, 1)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    iod = _iod(landmarks)
    # Sheen: a faint diagonal gradient plus a soft highlight streak in the upper lens half.
    cy = landmarks[list(T.RIGHT_EYE), 1].mean()
    shade = 16 + 22 * np.clip(1.0 - (ys - cy + 0.25 * iod) / (0.5 * iod), 0, 1)
    streak = 40 * np.exp(-(((xs + ys) % (1.4 * iod) - 0.5 * iod) / (0.04 * iod)) ** 2) * (ys < cy)
    paint = np.stack([shade + streak, shade + streak, shade * 1.1 + streak], -1)
    out = _blend(crop, lens, paint)
    frame = np.clip(_frames(lenses, 2) + _bridge(landmarks, size, 0.04), 0, 1)
    out = _blend(out, frame, np.full(3, 12.0, np.float32))
    cover = (lens + frame) > 0.02
    return CoveredFace(_noise(out, 1), landmarks, _labelled(regions, cover, label), cover)


def tinted(crop, landmarks, regions, label: bool = False, factor: float = 0.35) -> CoveredFace:
    """See-through lenses: the eye area darkened x``factor`` with a brown cast, thin dark rims."""
    size = crop.shape[0]
    lenses = lens_masks(landmarks, size)
    lens = np.clip(lenses[0] + lenses[1], 0, 1)
    paint = crop.astype(np.float32) * factor * np.array([1.15, 0.95, 0.75], np.float32)
    out = _blend(crop, lens, paint)
    frame = np.clip(_frames(lenses, 1) + _bridge(landmarks, size, 0.03), 0, 1)
    out = _blend(out, frame, np.full(3, 30.0, np.float32))
    cover = (lens + frame) > 0.02
    return CoveredFace(_noise(out, 2), landmarks, _labelled(regions, cover, label), cover)


def goggles(crop, landmarks, regions, colour=(190, 192, 198), label: bool = False) -> CoveredFace:
    """An opaque band over both eyes (ski goggles), shaded top to bottom, with a strap."""
    size = crop.shape[0]
    iod = _iod(landmarks)
    eyes = landmarks[list(T.RIGHT_EYE + T.LEFT_EYE), :2]
    (x0, y0), (x1, y1) = eyes.min(0), eyes.max(0)
    cy = 0.5 * (y0 + y1)
    band = np.zeros((size, size), np.float32)
    r = int(0.2 * iod)
    pts = np.array([[x0 - 0.3 * iod, cy - 0.28 * iod], [x1 + 0.3 * iod, cy - 0.28 * iod],
                    [x1 + 0.3 * iod, cy + 0.3 * iod], [x0 - 0.3 * iod, cy + 0.3 * iod]])
    cv2.fillPoly(band, [np.round(pts * 16).astype(np.int32)], 1.0, cv2.LINE_AA, 4)
    band = cv2.GaussianBlur(cv2.erode(band, np.ones((r, r), np.uint8)), (0, 0), 0.25 * r)
    band = np.clip(band * 2.5, 0, 1) * (cv2.dilate(band, np.ones((r, r), np.uint8)) > 0)
    strap = np.zeros((size, size), np.float32)
    cv2.rectangle(strap, (0, int(cy - 0.1 * iod)), (size - 1, int(cy + 0.1 * iod)), 1.0, -1)
    columns = np.arange(size)
    strap *= (band < 0.5) * ((columns < x0 - 0.2 * iod) | (columns > x1 + 0.2 * iod))[None]
    ys = np.arange(size, dtype=np.float32)[:, None, None]
    shade = 1.08 - 0.25 * np.clip((ys - cy + 0.3 * iod) / (0.6 * iod), 0, 1)
    out = _blend(crop, band, np.array(colour, np.float32)[None, None] * shade)
    out = _blend(out, strap * 0.95, np.array([25, 25, 30], np.float32))
    cover = band > 0.02
    return CoveredFace(_noise(out, 3), landmarks, _labelled(regions, cover, label), cover)


def clear_glasses(crop, landmarks, regions) -> CoveredFace:
    """Clear lenses in thin dark frames, the frames labelled ``eyeglasses``: eyes stay visible."""
    size = crop.shape[0]
    lenses = lens_masks(landmarks, size, axes=(0.38, 0.3))
    frame = np.clip(_frames(lenses, 2) + _bridge(landmarks, size, 0.03), 0, 1)
    out = _blend(crop, frame, np.full(3, 25.0, np.float32))
    cover = frame > 0.02
    return CoveredFace(_noise(out, 4), landmarks, _labelled(regions, cover, True), cover)


def darker_skin(crop, regions, factor: float = 0.4) -> np.ndarray:
    """The crop with its skin (and nose, lips, brows, ears, neck) darkened x``factor``, eyes as
    they were: a dark-skinned stand-in, whose eyes are as light as anyone's."""
    names = ("skin", "nose", "ears", "neck", "lips", "brows")
    skin = np.isin(regions, [L.region_index(n) for n in names]).astype(np.float32)
    skin = cv2.GaussianBlur(skin, (0, 0), 2.0)[..., None]
    return np.clip(crop * (1.0 - skin * (1.0 - factor)), 0, 255).astype(np.uint8)
