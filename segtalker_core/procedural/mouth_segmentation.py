"""Talking segmentation of the built-in backend: the reference 12-region map, re-shaped per frame.

The same backward warp that moves the source pixels moves the reference label map (nearest
neighbour), so the chin covering the neck, the lips stretching and the jaw line moving are all
consistent with the rendered image. Then the mouth opening is re-rasterised from the driven inner
lip polygon:

* pixels inside the driven opening become ``mouth_interior``;
* pixels the warp *moved* that still carry ``mouth_interior`` (the reference's own opening,
  squeezed by a closing mouth) become ``lips``: the lips meet there.

Pixels the warp does not move keep their reference label, and at the source's own pose (an
identity warp) the whole map is the reference's, opening included; everything outside the moving
box always is.
"""
from __future__ import annotations

import cv2
import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .warp import Box, WarpField

LIPS = L.region_index("lips")
MOUTH_INTERIOR = L.region_index("mouth_interior")
_SHIFT = 4  # 1/16 px vertex precision when filling polygons


def polygon_mask(points: np.ndarray, box: Box) -> np.ndarray:
    """uint8 ``box.shape`` mask (1 inside) of a polygon ``[N, 2]`` given in crop px."""
    mask = np.zeros(box.shape, np.uint8)
    pts = np.round((np.asarray(points, np.float64)[:, :2] - (box.x0, box.y0)) * (1 << _SHIFT))
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return mask


def polygon_area(points: np.ndarray) -> float:
    """Absolute area (px^2) of a polygon ``[N, 2]`` (shoelace)."""
    x, y = np.asarray(points, np.float64)[:, 0], np.asarray(points, np.float64)[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def opening_polygon(landmarks: np.ndarray) -> np.ndarray:
    """The inner-lip polygon ``[20, 2]`` (crop px) of one face's landmarks ``[478, 2+]``."""
    return np.asarray(landmarks)[list(T.MOUTH_OPENING), :2]


def mouth_opening_mask(landmarks: np.ndarray, size: int, min_area: float = 0.5) -> tuple[Box, np.ndarray] | None:
    """Mask of the open mouth in a ``size`` crop: ``(box, uint8 mask)``, or ``None`` when closed."""
    polygon = opening_polygon(landmarks)
    # fillPoly draws a sliver's outline, so a mouth open by a fraction of a pixel would label a
    # whole mouth-wide line; under half a pixel of mean width (2 * area / perimeter) it is closed.
    perimeter = float(np.linalg.norm(polygon - np.roll(polygon, 1, axis=0), axis=1).sum())
    if polygon_area(polygon) < max(min_area, 0.25 * perimeter):
        return None
    try:
        box = Box.around(polygon, 1.0, size)
    except ValueError:
        return None
    mask = polygon_mask(polygon, box)
    return (box, mask) if mask.any() else None


def drive_regions(
    reference: np.ndarray, field: WarpField, driven_landmarks: np.ndarray
) -> np.ndarray:
    """One frame's 12-region map ``[S, S]`` uint8.

    ``reference`` [S, S] uint8 12-region map of the source crop; ``field``: the frame's warp;
    ``driven_landmarks`` [478, 3]: the frame's driven points (blinks do not matter here).
    """
    assert reference.ndim == 2 and reference.shape[0] == reference.shape[1], reference.shape
    if field.is_identity:
        # The source's own pose: its parsed opening (the teeth as the parser saw them), not the
        # landmark polygon, which only approximates it.
        return reference.copy()
    regions = field.apply_labels(reference)
    if not field.is_identity:
        window = regions[field.box.slices]
        window[(window == MOUTH_INTERIOR) & field.moved] = LIPS
    opening = mouth_opening_mask(driven_landmarks, reference.shape[0])
    if opening is not None:
        box, mask = opening
        regions[box.slices][mask > 0] = MOUTH_INTERIOR
    return regions
