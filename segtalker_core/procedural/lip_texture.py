"""Where the lips' own texture ends in a source whose mouth is open.

The face mesh's inner lip contour of an open mouth is a guess at the lip's edge: on a smile it
often lies on the teeth, on a dropped jaw over the lower teeth or the dark of the cavity. The warp
samples the lips from the mesh's lip rings, so whatever lies between the contour and the real
edge is carried as "lip": when the mouth closes, a band of teeth white and cavity dark is
stretched across the lips, which then read as pale, thin, striped -- not as lips (measured on the
dropped-jaw portrait: 0.54 of the source's lip area at the worst frame, re-parsed).

:func:`lip_edge_points` walks from inside each lip (its second ring from the outside, which lies
well within the lip) towards the mesh's inner contour and stops where the colour stops being the
lip's: too dark (cavity, the shadow in the gap) or too pale (teeth). The inner ring is put at that
edge and the ring between is squeezed with it, so the lip -- and only the lip -- is stretched over
the driven lip: its thickness and texture are carried along the contour as the mouth moves, and
the cavity and teeth are the interior's to draw.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..face import mesh_topology as T
from .rig import LIPS_LOWER_SEMI_INNER, LIPS_LOWER_SEMI_OUTER, LIPS_UPPER_SEMI_INNER, LIPS_UPPER_SEMI_OUTER

# Per lip, its rings from the opening outwards (corners left out: they stay where they are).
_LIPS = (
    (T.LIPS_INNER_UPPER, LIPS_UPPER_SEMI_INNER, LIPS_UPPER_SEMI_OUTER, T.LIPS_OUTER_UPPER),
    (T.LIPS_INNER_LOWER, LIPS_LOWER_SEMI_INNER, LIPS_LOWER_SEMI_OUTER, T.LIPS_OUTER_LOWER),
)
# The walks: (inner contour, the ring between, start) point ids. Besides each lip's points, the
# corners walk along the mouth line from the corner of the lips' second-outer rings: an open
# source's inner corner lies on the cavity too, and left there it draws dark wedges into the
# corners of a closing mouth.
_WALKS = tuple((np.array(r[0][1:-1]), np.array(r[1][1:-1]), np.array(r[2][1:-1])) for r in _LIPS) + (
    (np.array([T.LIPS_INNER_UPPER[0], T.LIPS_INNER_UPPER[-1]]),
     np.array([LIPS_UPPER_SEMI_INNER[0], LIPS_UPPER_SEMI_INNER[-1]]),
     np.array([LIPS_UPPER_SEMI_OUTER[0], LIPS_UPPER_SEMI_OUTER[-1]])),
)
_STEP = 0.25  # px between samples along a walk
# A pixel is not lip when darker than this share of the lip's luminance (cavity, the gap's
# shadow; lips shade towards the opening, so the share is generous) ...
_DARK = 0.62
# ... or when both paler (saturation below this share of the lip's) and not darker than the lip
# (teeth: bright and nearly grey; skin-toned lips stay above it).
_PALE = 0.55
_RUN = 1.0  # px of non-lip in a row that make the edge (one noisy pixel does not)
_MAX_SQUEEZE = 0.8  # the inner contour moves at most this share of the way to the start ring


def lip_colour(crop: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """(luma, saturation) medians of the lips' outer halves (between the second ring from the
    outside and the outer contour: lip whatever the mouth does)."""
    samples = []
    for rings in _LIPS:
        outer_band = np.asarray(points)[list(rings[2][1:-1]), :2]
        outer = np.asarray(points)[list(rings[3][1:-1]), :2]
        for share in (0.0, 0.25, 0.5):
            samples.append(outer_band + share * (outer - outer_band))
    rgb = _bilinear(crop, np.concatenate(samples))
    luma, saturation = _luma_saturation(rgb)
    return float(np.median(luma)), float(np.median(saturation))


def lip_edge_points(crop: np.ndarray, points: np.ndarray, share: float = 1.0) -> np.ndarray:
    """``points`` [478, 3] with each lip's inner contour moved ``share`` (0..1) of the way to
    where the lip's colour ends, the ring between squeezed with it. Points whose walk finds no
    end (the lip runs up to the contour) stay; so do all of them when ``share`` is 0."""
    out = np.array(points, np.float64, copy=True)
    if share <= 0.0:
        return out
    crop = np.asarray(crop)
    lip_luma, lip_sat = lip_colour(crop, points)
    for inner, middle, start_ids in _WALKS:
        start = out[start_ids, :2]
        end = out[inner, :2]
        length = np.linalg.norm(end - start, axis=1)
        steps = max(int(np.ceil(length.max() / _STEP)), 1)
        t = np.linspace(0.0, 1.0, steps + 1)
        path = start[:, None] + t[None, :, None] * (end - start)[:, None]  # [K, steps+1, 2]
        luma, sat = _luma_saturation(_bilinear(crop, path.reshape(-1, 2)))
        luma, sat = luma.reshape(path.shape[:2]), sat.reshape(path.shape[:2])
        not_lip = (luma < _DARK * lip_luma) | ((sat < _PALE * lip_sat) & (luma >= lip_luma))
        for k in range(len(inner)):
            step = max(length[k] / steps, 1e-6)
            hit = _first_run(not_lip[k], max(int(np.ceil(_RUN / step)), 1))
            if hit is None:
                continue
            # The edge, as a share of the walk back from the inner contour (0) to the start ring
            # (1); never all the way, so a lip misread as dark keeps some thickness.
            edge = share * min(1.0 - t[max(hit - 1, 0)], _MAX_SQUEEZE)
            if edge <= 0.0:
                continue
            keep = 1.0 - edge
            # Squeeze the inner and middle rings towards the start ring by the same factor.
            for index in (inner[k], middle[k]):
                out[index, :2] = start[k] + keep * (out[index, :2] - start[k])
    return out


def _first_run(flags: np.ndarray, run: int) -> int | None:
    """Index of the first of ``run`` consecutive True in ``flags`` [N], or None."""
    if run <= 1:
        hits = np.flatnonzero(flags)
        return int(hits[0]) if len(hits) else None
    counts = np.convolve(flags.astype(np.int32), np.ones(run, np.int32), "valid")
    hits = np.flatnonzero(counts == run)
    return int(hits[0]) if len(hits) else None


def _bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """RGB float32 [N, 3] of ``image`` at ``xy`` [N, 2] px."""
    xy = np.asarray(xy, np.float32).reshape(1, -1, 2)
    out = cv2.remap(image, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 3).astype(np.float32)


def _luma_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    value = rgb.max(axis=-1)
    return luma, (value - rgb.min(axis=-1)) / np.maximum(value, 1.0)
