"""Full-reference image metrics on uint8 RGB frames: PSNR and SSIM, whole, cropped or masked.

SSIM follows Wang, Bovik, Sheikh and Simoncelli (2004): luma (BT.601) in 0..255, an 11x11
Gaussian window of sigma 1.5, K1 = 0.01, K2 = 0.03, and the map averaged over the window
positions that lie wholly inside the image ("valid" filtering, as the authors' own code). A mask
averages the map over its pixels instead (texture preservation: only what should not change).
PSNR is over the RGB values; identical inputs give ``inf``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def luma(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (or ``[H, W]``) -> float64 ``[H, W]`` BT.601 luma in 0..255."""
    if image.ndim == 2:
        return image.astype(np.float64)
    assert image.ndim == 3 and image.shape[2] == 3, image.shape
    rgb = image.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of two equal-shape uint8 images (``inf`` when equal); ``mask [H, W]`` bool:
    only those pixels (NaN when the mask is empty)."""
    _check_pair(a, b)
    diff = a.astype(np.float64) - b.astype(np.float64)
    if mask is not None:
        assert mask.shape == a.shape[:2], (mask.shape, a.shape)
        if not mask.any():
            return math.nan
        diff = diff[mask]
    return psnr_from_mse(float(np.mean(diff * diff)))


def psnr_from_mse(mse: float) -> float:
    if mse <= 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE * DATA_RANGE / mse)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM map of two equal-shape images on their luma, ``[H - 10, W - 10]`` (the window
    positions inside the image; pixel ``(y, x)`` of the map is centred on ``(y + 5, x + 5)``).
    Computed in float32 (luma 0..255: the moments keep ~6 digits, far below SSIM's 4 shown)."""
    _check_pair(a, b)
    x, y = luma(a).astype(np.float32), luma(b).astype(np.float32)
    if min(x.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} px, got "
                         f"{x.shape[1]}x{x.shape[0]}")
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _window_mean(x), _window_mean(y)
    var_x = _window_mean(x * x) - mu_x * mu_x
    var_y = _window_mean(y * y) - mu_y * mu_y
    cov = _window_mean(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).astype(np.float64)


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (1.0 for identical images); ``mask [H, W]`` bool: the map's mean over the
    window centres inside the mask (NaN when none is)."""
    return mean_ssim(ssim_map(a, b), mask)


def mean_ssim(values: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The mean of an :func:`ssim_map` ``values`` over the window centres inside ``mask [H, W]``
    (the full image's mask; all when None; NaN when none is inside)."""
    if mask is None:
        return float(values.mean())
    inner = _valid_part(mask)
    assert inner.shape == values.shape, (mask.shape, values.shape)
    if not inner.any():
        return math.nan
    return float(values[inner].mean())


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """``[H, W]`` bool, True inside ``box = (x0, y0, x1, y1)``."""
    mask = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def _window_mean(x: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means at the window positions wholly inside ``x``."""
    blurred = cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)
    return _valid_part(blurred)


def _valid_part(x: np.ndarray) -> np.ndarray:
    r = SSIM_WINDOW // 2
    return x[r:x.shape[0] - r, r:x.shape[1] - r]


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images to compare differ in shape: {a.shape} vs {b.shape}")
    assert a.dtype == np.uint8 and b.dtype == np.uint8, (a.dtype, b.dtype)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """``image[y0:y1, x0:x1]`` for ``box = (x0, y0, x1, y1)`` (already inside the image)."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
