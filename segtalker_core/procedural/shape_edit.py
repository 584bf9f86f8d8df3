"""Built-in rendering of region *shape* edits: pixels relabelled to region r get r's texture.

The built-in renderer warps the source face, so it has no texture for a region where the source had
another one (hair painted over the forehead, a lip shape from another face). Each such pixel copies
the nearest source pixel of its new region, which continues the region's texture outward; a
one-pixel feather hides the seam. A region the source face lacks has no texture and is left as
rendered.
"""
from __future__ import annotations

import cv2
import numpy as np

_MARGIN = 5  # px around the changed pixels: the 9-tap blur of sigma 1 reaches 4


def nearest_pixel_index(region_mask: np.ndarray) -> np.ndarray:
    """``[S, S]`` int: flat index of the nearest pixel inside ``region_mask`` for every pixel."""
    outside = (~region_mask).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(outside, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # Labels number the zero (inside) pixels in row-major scan order, starting at 1.
    inside_flat = np.flatnonzero(region_mask.ravel())
    return inside_flat[labels - 1]


def paint_shape_edits(
    crop: np.ndarray,  # [S, S, 3] uint8 rendered crop
    rendered_regions: np.ndarray,  # [S, S] uint8 regions the renderer drew
    wanted_regions: np.ndarray,  # [S, S] uint8 regions asked for (an edited segmentation)
    source_crop: np.ndarray,  # [S, S, 3] uint8 the face the texture comes from
    source_regions: np.ndarray,  # [S, S] uint8 its 12-region map
) -> np.ndarray:
    """``crop`` with every relabelled pixel filled from its new region's source texture."""
    changed = wanted_regions != rendered_regions
    if not changed.any():
        return crop
    # Work in the box of the changed pixels grown past the blur's reach (radius 4 at sigma 1):
    # outside it the feather weight is exactly zero, so the result is the same as full-frame.
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    size_y, size_x = changed.shape
    box = (
        slice(max(0, rows[0] - _MARGIN), min(size_y, rows[-1] + 1 + _MARGIN)),
        slice(max(0, cols[0] - _MARGIN), min(size_x, cols[-1] + 1 + _MARGIN)),
    )
    out = crop.copy()
    window = out[box]
    flat_source = source_crop.reshape(-1, 3)
    for region in np.unique(wanted_regions[changed]):
        inside = source_regions == region
        if not inside.any():
            continue
        target = (changed & (wanted_regions == region))[box]
        fill = flat_source[nearest_pixel_index(inside)[box]]
        weight = cv2.GaussianBlur(target.astype(np.float32), (0, 0), 1.0)[..., None]
        weight = np.maximum(weight, target[..., None])
        window[...] = (window * (1 - weight) + fill * weight + 0.5).astype(np.uint8)
    return out
