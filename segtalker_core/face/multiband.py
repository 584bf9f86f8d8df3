"""Multi-band (Laplacian pyramid) blending, the optional paste-back E4S users know.

A plain alpha blend mixes every frequency across the same feather: where the generated face's
low frequencies (shading, colour) differ from the frame's, the feather shows as a soft halo.
Blending band by band (Burt & Adelson 1983) mixes each frequency band over a transition that
grows with the band's scale: fine texture switches over a few pixels, shading over tens.

The coarse bands' weights are blurred, so they reach past the mask's footprint: that is what
spreads a shading step. To keep the rest of the frame bit-exact, the change is faded out over
:func:`reach` pixels beyond the footprint (a linear ramp in the distance to it); pixels further
out are the frame's own. The paste box grows by that reach (:func:`.paste.paste_face`).
"""
from __future__ import annotations

import cv2
import numpy as np

DEFAULT_BANDS = 4  # pyramid levels: 4 at a 512 crop spans transitions of ~2..32 px
_MIN_SIDE = 8  # the coarsest level keeps at least this many pixels per side


def reach(bands: int = DEFAULT_BANDS) -> int:
    """Pixels beyond the mask's footprint that a ``bands``-level blend may change: the radius of
    the coarsest level's weights (its 5-tap kernel, 2^(bands-1) pixels a tap)."""
    return 2 * 2 ** (int(bands) - 1) + 2 ** (int(bands) - 1)


def multiband_blend(
    foreground: np.ndarray,  # [H, W, 3] uint8: what is pasted (the warped crop)
    background: np.ndarray,  # [H, W, 3] uint8: the frame under it
    alpha: np.ndarray,  # [H, W] float32 0..1: the paste weights at full resolution
    bands: int = DEFAULT_BANDS,  # pyramid levels (1: a plain alpha blend)
) -> np.ndarray:
    """``[H, W, 3]`` uint8: ``foreground`` over ``background``, blended band by band; equal to
    ``background`` more than :func:`reach` pixels from where ``alpha`` is above 0."""
    if foreground.shape != background.shape or foreground.shape[:2] != alpha.shape:
        raise ValueError(f"multiband_blend: foreground {foreground.shape}, background "
                         f"{background.shape} and alpha {alpha.shape} must cover the same pixels")
    if int(bands) < 1:
        raise ValueError(f"bands must be at least 1, got {bands}")
    levels = _usable_levels(alpha.shape, int(bands))
    fg = foreground.astype(np.float32)
    bg = background.astype(np.float32)
    weights = _gaussian_pyramid(alpha.astype(np.float32), levels)
    blended = [w[..., None] * f + (1.0 - w[..., None]) * b
               for w, f, b in zip(weights, _laplacian_pyramid(fg, levels), _laplacian_pyramid(bg, levels))]
    out = _collapse(blended)
    if levels > 1:  # one level is a plain alpha blend: exact at alpha 0 already
        out = bg + _fade(alpha, reach(levels))[..., None] * (out - bg)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _fade(alpha: np.ndarray, distance: int) -> np.ndarray:
    """1 on the footprint (alpha > 0), falling linearly to 0 at ``distance`` pixels from it."""
    outside = (alpha <= 0).astype(np.uint8)
    if not outside.any():
        return np.ones(alpha.shape, np.float32)
    if outside.all():
        return np.zeros(alpha.shape, np.float32)
    away = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
    return np.clip(1.0 - away / float(distance), 0.0, 1.0)


def _usable_levels(shape: tuple[int, int], bands: int) -> int:
    """At most ``bands`` levels, fewer when the box is too small to halve that often."""
    side = min(shape)
    levels = 1
    while levels < bands and side // 2 >= _MIN_SIDE:
        side //= 2
        levels += 1
    return levels


def _gaussian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid = [image]
    for _ in range(levels - 1):
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return pyramid


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels, finest first, and the low-pass residual last; :func:`_collapse`
    rebuilds ``image`` exactly (up to float rounding)."""
    gaussian = _gaussian_pyramid(image, levels)
    bands = [fine - _expand(coarse, fine.shape) for fine, coarse in zip(gaussian[:-1], gaussian[1:])]
    return bands + [gaussian[-1]]


def _collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    out = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        out = _expand(out, band.shape) + band
    return out


def _expand(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    up = cv2.pyrUp(image, dstsize=(shape[1], shape[0]))
    return up.reshape(shape)  # pyrUp drops a trailing channel axis of 1; keep the shape given
