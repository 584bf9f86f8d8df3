"""Fine-detail energy: how much skin grain, stubble and pore texture an image region holds.

``E = mean((Y - G_sigma * Y)^2)`` over a mask, ``Y`` the luma (0..255) and ``G_sigma`` a Gaussian of
``sigma`` px (default 1): the energy of what a 1-px blur would remove. A warp or a recolouring
that softens texture lowers it; comparing it to the source's in the same region says how much
texture survived (``detail_ratio``). It is a *measure* used by tests and benchmarks, not part of
the rendering.
"""
from __future__ import annotations

import cv2
import numpy as np


def detail_map(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``Y - G_sigma * Y`` float32 ``[H, W]`` of an RGB ``[H, W, 3]`` or grey ``[H, W]`` image."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2:
        grey = image.astype(np.float32)
    else:
        raise ValueError(f"image must be RGB [H, W, 3] or grey [H, W]; got {image.shape}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 px, got {sigma}")
    return grey - cv2.GaussianBlur(grey, (0, 0), sigma)


def fine_detail_energy(image: np.ndarray, mask: np.ndarray, sigma: float = 1.0) -> float:
    """Mean squared :func:`detail_map` over ``mask`` ``[H, W]`` bool (grey levels squared)."""
    mask = np.asarray(mask, bool)
    if mask.shape != np.asarray(image).shape[:2] or not mask.any():
        raise ValueError(f"mask must be a non-empty [H, W] = {np.asarray(image).shape[:2]} bool "
                         f"mask; got {mask.shape} with {int(mask.sum())} pixels")
    return float(np.mean(detail_map(image, sigma)[mask] ** 2))


def detail_ratio(image: np.ndarray, source: np.ndarray, mask: np.ndarray, sigma: float = 1.0) -> float:
    """Fine-detail energy of ``image`` over that of ``source`` in the same ``mask`` (1 = all kept)."""
    reference = fine_detail_energy(source, mask, sigma)
    if reference <= 0:
        raise ValueError("the source has no fine detail in the mask (a flat region); choose a "
                         "textured region to compare")
    return fine_detail_energy(image, mask, sigma) / reference
