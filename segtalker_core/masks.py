"""Binary masks: the one dilation/erosion, soft masks with feathering, crop -> frame projection.

Morphology (:func:`dilate`, :func:`erode`) works with a Euclidean radius through the distance
transform rather than a structuring element: the cost does not grow with the radius (a 17x17
ellipse costs ~10x more at radius 8) and fractional radii mean something. A pixel is inside the
grown mask when its distance to the mask is at most ``radius``, which for whole radii is the
disk-shaped structuring element.
"""
from __future__ import annotations

import cv2
import numpy as np


def distance_outside(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool -> float32 ``[H, W]``: Euclidean distance of each pixel to the nearest
    mask pixel, 0 on the mask (float32 max everywhere when the mask is empty)."""
    return cv2.distanceTransform((~np.asarray(mask, bool)).astype(np.uint8), cv2.DIST_L2, 5)


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """``[H, W]`` bool grown by ``radius`` px (a disk); ``radius <= 0`` returns it unchanged."""
    mask = np.asarray(mask, bool)
    if radius <= 0 or not mask.any():
        return mask
    return distance_outside(mask) <= radius


def erode(mask: np.ndarray, radius: float, *, shrink_from_edge: bool = False) -> np.ndarray:
    """``[H, W]`` bool shrunk by ``radius`` px (a disk); ``radius <= 0`` returns it unchanged.

    ``shrink_from_edge``: pixels beyond the image edge count as outside the mask, so a mask
    touching the edge shrinks away from it (a paste mask must fade before the crop's border);
    by default they count as inside, as in OpenCV's ``erode``.
    """
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask
    if not shrink_from_edge:
        return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5) > radius
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1] > radius


def shape_mask(binary: np.ndarray, dilate_px: int = 0, feather_px: int = 0) -> np.ndarray:
    """``[N, H, W]`` bool -> float32 0..1. Positive ``dilate_px`` grows, negative shrinks;
    ``feather_px`` is the Gaussian sigma x 2 of the soft edge."""
    assert binary.ndim == 3, binary.shape
    out = np.empty(binary.shape, dtype=np.float32)
    for i, mask in enumerate(binary.astype(bool)):
        mask = dilate(mask, dilate_px) if dilate_px > 0 else erode(mask, -dilate_px)
        soft = mask.astype(np.float32)
        if feather_px > 0:
            soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=feather_px / 2.0)
        out[i] = soft
    return out


def frame_space_masks(masks: np.ndarray, transforms: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Crop-space masks ``[N, S, S]`` -> frame-space ``[N, H, W]`` through each frame->crop affine."""
    height, width = frame_size
    out = np.zeros((len(masks), height, width), dtype=np.float32)
    for i, (mask, matrix) in enumerate(zip(masks, transforms)):
        if mask.any():
            out[i] = cv2.warpAffine(
                mask, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0,
            )
    return out
