"""Sample grids for training previews: label maps coloured with the pack's palette, tiled.

Stages build their ``samples()`` images with these: one row per sample, one column per kind of
map (reference, masked source, prediction, ground truth...), a thin grey gap between tiles.
Everything is uint8 RGB ``[H, W, 3]`` numpy, what PNG writers and TensorBoard take.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import labels as L

GAP = 2
GAP_COLOUR = (128, 128, 128)
MASK_COLOUR = (255, 255, 255)  # the hidden mouth area in a masked source map


def colour_labels(regions: torch.Tensor | np.ndarray) -> np.ndarray:
    """12-region labels ``[H, W]`` (int) -> RGB uint8 ``[H, W, 3]``."""
    arr = regions.detach().to("cpu").numpy() if isinstance(regions, torch.Tensor) else regions
    return L.colorize_regions(np.asarray(arr).astype(np.int64))


def colour_masked(regions: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Labels ``[H, W]`` with ``mask [H, W]`` (true = hidden) painted white."""
    rgb = colour_labels(regions).copy()
    rgb[mask.detach().to("cpu").numpy().astype(bool)] = MASK_COLOUR
    return rgb


def image_tile(image: torch.Tensor) -> np.ndarray:
    """An image ``[3, H, W]`` in [-1, 1] -> RGB uint8 ``[H, W, 3]``."""
    x = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 0).to("cpu").numpy()


def grid(rows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Tile ``rows`` of equally sized RGB tiles into one image (grey gaps)."""
    if not rows or not rows[0]:
        raise ValueError("a preview grid needs at least one tile")
    h, w = rows[0][0].shape[:2]
    ncols = max(len(r) for r in rows)
    out = np.empty((len(rows) * (h + GAP) - GAP, ncols * (w + GAP) - GAP, 3), np.uint8)
    out[:] = GAP_COLOUR
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if tile.shape != (h, w, 3):
                raise ValueError(f"preview tile ({i}, {j}) is {tile.shape}, expected {(h, w, 3)}")
            out[i * (h + GAP):i * (h + GAP) + h, j * (w + GAP):j * (w + GAP) + w] = tile
    return out
