"""Sharpness without a reference: CPBD, and high-frequency energy for comparing two regions.

CPBD, the cumulative probability of blur detection (Narvekar and Karam, IEEE TIP 2011): edges
are found (Canny), each edge pixel's width is measured along the gradient's main axis to the
nearest intensity extrema on each side (Marziliano et al. 2002), and the image is read in
64x64 blocks. A block with more than 0.2 % edge pixels has a just-noticeable-blur width of 5 px
when its contrast (max - min luma) is at most 50, else 3 px; an edge of width ``w`` is seen as
blurred with probability ``1 - exp(-(w / w_jnb) ** 3.6)``. CPBD is the share of edge pixels
whose probability is at most 63 % (``P_JNB``): 1 for a sharp image, lower as it blurs.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .image_metrics import luma

BLOCK = 64
EDGE_BLOCK_SHARE = 0.002  # a block is an edge block above this share of edge pixels
BETA = 3.6
P_JNB = 0.63
JNB_LOW_CONTRAST = 5.0  # px, blocks with contrast <= 50
JNB_HIGH_CONTRAST = 3.0
LOW_CONTRAST = 50.0
CANNY_THRESHOLDS = (40, 90)  # on 0..255 luma
HIGH_PASS_SIGMA = 1.5


def cpbd(image: np.ndarray) -> float:
    """CPBD of ``[H, W, 3]`` uint8 RGB (or ``[H, W]`` luma) in 0..1; NaN when no block has
    enough edges (a flat image has no blur to measure)."""
    gray = luma(image)
    gray8 = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    edges = cv2.Canny(gray8, *CANNY_THRESHOLDS, L2gradient=True) > 0
    widths = edge_widths(gray, edges)
    probabilities = []
    height, width = gray.shape
    for y in range(0, height - BLOCK + 1, BLOCK):
        for x in range(0, width - BLOCK + 1, BLOCK):
            block_edges = edges[y:y + BLOCK, x:x + BLOCK]
            if block_edges.sum() <= EDGE_BLOCK_SHARE * BLOCK * BLOCK:
                continue
            block = gray[y:y + BLOCK, x:x + BLOCK]
            contrast = float(block.max() - block.min())
            jnb = JNB_LOW_CONTRAST if contrast <= LOW_CONTRAST else JNB_HIGH_CONTRAST
            w = widths[y:y + BLOCK, x:x + BLOCK][block_edges]
            probabilities.append(1.0 - np.exp(-np.power(w / jnb, BETA)))
    if not probabilities:
        return math.nan
    p = np.concatenate(probabilities)
    return float(np.mean(p <= P_JNB))


def edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per pixel of ``edges [H, W]`` its width in px (0 elsewhere): along the row for edges
    whose gradient is mostly horizontal, along the column otherwise, from the nearest extremum
    before to the nearest after (the edge's rise or fall, end to end)."""
    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    along_rows = np.abs(gx) >= np.abs(gy)
    out = np.zeros(gray.shape, np.float64)
    rows = _monotone_extent(gray, gx > 0)
    cols = _monotone_extent(gray.T, (gy > 0).T).T
    out[edges & along_rows] = rows[edges & along_rows]
    out[edges & ~along_rows] = cols[edges & ~along_rows]
    return out


def _monotone_extent(signal: np.ndarray, rising: np.ndarray) -> np.ndarray:
    """``[H, W]``: per pixel, the length of the strictly monotone run through it along each row
    (rising where ``rising``, falling elsewhere), in steps."""
    step = np.diff(signal, axis=1)
    ups, downs = step > 0, step < 0
    up_left, down_left = _runs(ups), _runs(downs)
    up_right, down_right = _runs(ups[:, ::-1])[:, ::-1], _runs(downs[:, ::-1])[:, ::-1]
    height, width = signal.shape
    zeros = np.zeros((height, 1), np.int64)
    # Steps ending at pixel k (left of it) are step k-1; steps starting at k are step k.
    left_up, left_down = np.hstack([zeros, up_left]), np.hstack([zeros, down_left])
    right_up, right_down = np.hstack([up_right, zeros]), np.hstack([down_right, zeros])
    return np.where(rising, left_up + right_up, left_down + right_down).astype(np.float64)


def _runs(flags: np.ndarray) -> np.ndarray:
    """Per position the number of consecutive True values ending there along axis 1."""
    positions = np.broadcast_to(np.arange(flags.shape[1]), flags.shape)
    last_false = np.maximum.accumulate(np.where(flags, -1, positions), axis=1)
    return (positions - last_false).astype(np.int64)


def high_frequency_energy(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared high-pass luma (the image less its Gaussian blur, sigma 1.5 px) over
    ``mask [H, W]`` bool (all pixels when None; NaN when the mask is empty). Only the mask's
    bounding box (and the blur's reach around it) is filtered."""
    if mask is not None:
        assert mask.shape == image.shape[:2], (mask.shape, image.shape)
        if not mask.any():
            return math.nan
        ys, xs = np.nonzero(mask)
        pad = int(math.ceil(4 * HIGH_PASS_SIGMA))
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, mask.shape[0])
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, mask.shape[1])
        image, mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    gray = luma(image).astype(np.float32)
    high = gray - cv2.GaussianBlur(gray, (0, 0), HIGH_PASS_SIGMA, borderType=cv2.BORDER_REFLECT)
    energy = high.astype(np.float64) ** 2
    return float(energy.mean()) if mask is None else float(energy[mask].mean())
