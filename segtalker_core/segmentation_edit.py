"""Shape edits of a talking segmentation: a region takes a new shape in every frame.

Any region can be reshaped, the mouth too: the built-in renderer follows the map it is given, so a
painted lip shape is what the frames show (a single shape holds the mouth still in that shape; a
mask per frame animates it). An edit of any other region keeps off the animated mouth (lips and
mouth interior), so reshaping hair or brows never freezes the lips.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import labels as L
from .containers import FaceTrack, TalkingSegmentation

ANIMATED = ("lips", "mouth_interior")
FILLS = L.SHAPE_EDIT_FILLS
MASK_SPACES = ("frame", "crop")


def shape_from_faces(shape_from: FaceTrack, region: int, size: int) -> np.ndarray:
    """``[S, S]`` bool: ``region`` in the first frame of ``shape_from`` that has a face (crop space)."""
    if not shape_from.found.any():
        raise ValueError("input 'shape_from' has no frame with a face")
    frame = int(np.argmax(shape_from.found))
    shape = shape_from.regions[frame] == region
    if not shape.any():
        raise ValueError(
            f"input 'shape_from' has no {L.REGIONS_12[region]} region in frame {frame}; pick a face that has it"
        )
    if shape.shape[0] != size:
        shape = cv2.resize(shape.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return shape


def shapes_from_mask(mask: np.ndarray, segmentation: TalkingSegmentation, space: str = "frame") -> np.ndarray:
    """``[T, S, S]`` bool per output frame from a MASK ``[B, H, W]`` (``B`` is 1 or T).

    ``space="frame"``: the mask was painted on the original frames and is taken into each frame's
    crop through its transform; ``space="crop"``: it is already in crop space.
    """
    if space not in MASK_SPACES:
        raise ValueError(f"mask_space must be one of {MASK_SPACES}, got {space!r}")
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim == 2:
        mask = mask[None]
    t_total = len(segmentation)
    if mask.ndim != 3 or len(mask) not in (1, t_total):
        raise ValueError(
            f"input 'mask' must be [1, H, W] or one mask per frame [{t_total}, H, W]; got {mask.shape}"
        )
    s = segmentation.faces.crop_size
    expected = (s, s) if space == "crop" else segmentation.faces.frame_size
    if mask.shape[1:] != expected:
        raise ValueError(
            f"input 'mask' is {mask.shape[2]}x{mask.shape[1]}, but a {space}-space mask must be "
            f"{expected[1]}x{expected[0]} ({'the crop size' if space == 'crop' else 'the original frames'}); "
            "check mask_space"
        )
    out = np.empty((t_total, s, s), bool)
    for t in range(t_total):
        m = mask[t if len(mask) > 1 else 0]
        if space == "frame":
            i = int(segmentation.source_index[t])
            m = cv2.warpAffine(m, segmentation.faces.transforms[i], (s, s), flags=cv2.INTER_LINEAR)
        out[t] = m > 0.5
    return out


def edit_region(
    segmentation: TalkingSegmentation,
    region: str,
    shape_from: FaceTrack | None = None,
    mask: np.ndarray | None = None,
    fill: str = "skin",
    mask_space: str = "frame",
) -> TalkingSegmentation:
    """A copy of ``segmentation`` where ``region`` has the new shape in every frame.

    Pixels the region leaves become ``fill``. The new shape of a region other than the mouth's
    never covers the animated mouth; a mouth region's new shape covers anything.
    """
    r = L.region_index(region)
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if (shape_from is None) == (mask is None):
        raise ValueError("connect exactly one of 'shape_from' (a face) or 'mask' (a painted region)")
    s = segmentation.faces.crop_size
    if shape_from is not None:
        shapes = np.broadcast_to(shape_from_faces(shape_from, r, s), (len(segmentation), s, s))
    else:
        shapes = shapes_from_mask(mask, segmentation, mask_space)
    fill_index = L.region_index(fill)
    protected = np.zeros(segmentation.regions.shape, bool)
    if region not in ANIMATED:
        protected = np.isin(segmentation.regions, [L.region_index(n) for n in ANIMATED])
    regions = segmentation.regions.copy()
    regions[(regions == r) & ~shapes] = fill_index
    regions[shapes & ~protected] = r
    meta = dict(segmentation.meta)
    meta["shape_edits"] = list(meta.get("shape_edits", [])) + [{"region": region, "fill": fill}]
    return TalkingSegmentation(
        regions=regions,
        faces=segmentation.faces,
        source_index=segmentation.source_index,
        fps=segmentation.fps,
        landmarks=segmentation.landmarks,
        mouth_params=segmentation.mouth_params,
        eye_closure=segmentation.eye_closure,
        meta=meta,
    )
