"""Frame regions drawn from face landmarks: the face box, the lower face (what a dub changes),
the lips, the eyes, the face oval. Masks are ``[H, W]`` bool in frame pixels."""
from __future__ import annotations

import cv2
import numpy as np

from ..face import mesh_topology as mesh
from .landmarks import face_scale

# The lower face grows by this many eye-corner distances: a dub's paste-back feathers past the
# jaw line, and those pixels change too.
LOWER_FACE_MARGIN = 0.25
FACE_BOX_MARGIN = 0.15  # of the box's size on each side
REGION_NAMES = ("lips", "lower face", "eyes", "upper face", "background")


def polygon_mask(points: np.ndarray, indices: tuple[int, ...], shape: tuple[int, int],
                 grow_px: float = 0.0) -> np.ndarray:
    """The filled polygon ``points[indices]`` (``points [478, 2]``), grown by ``grow_px``.
    Drawn in the polygon's own box (grown), so a small feature costs little in a large frame."""
    radius = max(int(round(grow_px)), 0)
    polygon = np.round(points[list(indices)]).astype(np.int32)
    height, width = shape
    x0 = int(np.clip(polygon[:, 0].min() - radius - 1, 0, width))
    y0 = int(np.clip(polygon[:, 1].min() - radius - 1, 0, height))
    x1 = int(np.clip(polygon[:, 0].max() + radius + 2, 0, width))
    y1 = int(np.clip(polygon[:, 1].max() + radius + 2, 0, height))
    mask = np.zeros(shape, bool)
    if x1 <= x0 or y1 <= y0:
        return mask  # the face lies outside the frame
    part = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(part, [polygon - np.array([x0, y0], np.int32)], 1)
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        part = cv2.dilate(part, kernel)
    mask[y0:y1, x0:x1] = part.astype(bool)
    return mask


def lower_face_mask(points: np.ndarray, shape: tuple[int, int],
                    margin: float = LOWER_FACE_MARGIN) -> np.ndarray:
    """Jaw, chin, mouth and cheeks below the cheekbones (the jaw line closed between the widest
    oval points), grown by ``margin`` eye-corner distances."""
    return polygon_mask(points, mesh.JAW, shape, margin * float(face_scale(points)))


def face_box(points: np.ndarray, shape: tuple[int, int],
             margin: float = FACE_BOX_MARGIN) -> tuple[int, int, int, int]:
    """Square box ``(x0, y0, x1, y1)`` around the landmarks, grown by ``margin``, inside the
    frame (at least 16 px a side, so SSIM's window fits)."""
    x0, y0 = np.nanmin(points, axis=0)
    x1, y1 = np.nanmax(points, axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height, width = shape
    side = int(min(max(side, 16), height, width))
    left = int(np.clip(round(cx - side / 2), 0, width - side))
    top = int(np.clip(round(cy - side / 2), 0, height - side))
    return left, top, left + side, top + side


def region_masks(points: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Disjoint masks by :data:`REGION_NAMES` (lips first: each pixel goes to the first region
    that holds it); together they cover the frame."""
    scale = float(face_scale(points))
    lips = polygon_mask(points, mesh.LIPS_OUTER, shape, 0.03 * scale)
    lower = lower_face_mask(points, shape)
    eyes = (polygon_mask(points, mesh.RIGHT_EYE, shape, 0.05 * scale)
            | polygon_mask(points, mesh.LEFT_EYE, shape, 0.05 * scale))
    face = polygon_mask(points, mesh.FACE_OVAL, shape)
    taken = np.zeros(shape, bool)
    out = {}
    for name, mask in (("lips", lips), ("lower face", lower), ("eyes", eyes),
                       ("upper face", face), ("background", np.ones(shape, bool))):
        out[name] = mask & ~taken
        taken |= mask
    return out
