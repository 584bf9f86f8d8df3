"""Binary region masks -> soft masks: dilation/erosion, feathering, crop -> frame projection."""
from __future__ import annotations

import cv2
import numpy as np


def shape_mask(binary: np.ndarray, dilate_px: int = 0, feather_px: int = 0) -> np.ndarray:
    """``[N, H, W]`` bool -> float32 0..1. Positive ``dilate_px`` grows, negative shrinks;
    ``feather_px`` is the Gaussian sigma x 2 of the soft edge."""
    assert binary.ndim == 3, binary.shape
    out = np.empty(binary.shape, dtype=np.float32)
    radius = abs(int(dilate_px))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)) if radius else None
    for i, mask in enumerate(binary.astype(np.uint8)):
        if kernel is not None:
            mask = cv2.dilate(mask, kernel) if dilate_px > 0 else cv2.erode(mask, kernel)
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
