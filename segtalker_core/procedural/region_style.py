"""Built-in style codes (per-region Lab colour statistics), region style swapping, and recolouring.

Style codes of the built-in backend (``StyleCodes(kind="builtin")``): for each face and each of
the 12 regions, the mean and standard deviation of its pixels in CIE Lab (L 0..100, a/b about
-128..127), ``region_stats [B, 12, 6] = (L, a, b means, L, a, b stds)``.

* Only a region's interior counts (pixels whose 3x3 neighbourhood has the same label) when it has
  at least ``min_pixels`` of them: border pixels mix two regions' colours (lip/skin) and would
  pull the statistics toward the neighbour.
* A region with fewer than ``min_pixels`` pixels is *invalid* (``valid[b, r] = False``) and gets the
  whole crop's statistics as a neutral fallback.

Swapping (:func:`swap_regions`) sets, for the chosen regions, *target* statistics between the
source's and the reference's. ``meta`` records ``source_stats`` (the untouched source statistics,
so a swap of a swap still starts from the original face), ``edited_regions``, and per region the
last swap's reference statistics and strength (``swap_reference [12, 6]``, ``swap_strength [12]``),
used for regions the source face lacks (a closed mouth has no visible mouth interior). Learned W+ codes are interpolated the same way (the generator applies them).

Recolouring (:func:`apply_region_style`) is Reinhard's colour transfer per region in Lab,
``(x - mean_source) * std_target / std_source + mean_target``, applied to the region's *smooth*
component only: each Lab channel is split into a Gaussian low-pass (sigma :data:`DETAIL_SIGMA`) and
the rest, the fine detail (lip creases, hair strands, pores, grain), which is added back unchanged.
So the colour, the brightness and the shading contrast move while the texture stays the source's
(a flat lipstick reference no longer flattens the lips, a noisy one no longer makes them glow).
The contrast ratio may range over 1/4..4 for chroma, 1/1.5..1.5 for lightness.

The transfer weight follows the region's soft edge, a smooth function of the distance to its
boundary: about 1/2 on the boundary, 1 from ``feather / 2`` px inside, 0 from ``feather / 2`` px
outside (:func:`_soft_edge`), so the edge pixels (half lip, half skin) are half recoloured and no
rim shows. Where two chosen regions touch, the edge between them is not an edge (their union
counts); pixels outside the chosen regions go to the nearest one. Beyond ``feather`` outside,
every pixel is returned exactly as it came in.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from .. import labels as L
from ..containers import FaceTrack, StyleCodes
from ..logs import get_logger
from ..masks import distance_outside

log = get_logger("style")

MIN_REGION_PIXELS = 64
CHROMA_RATIO_LIMIT = 4.0
LUMINANCE_RATIO_LIMIT = 1.5
DETAIL_SIGMA = 1.5  # px: what a recolouring keeps as the source's own detail (finer than this)
_EDGE_LOW = 0.0228  # a Gaussian-blurred edge's value 2 sigma outside it (Phi(-2))
_MIN_STD = 0.5  # Lab units; a flat region must not turn the std ratio into a division by ~0

RegionList = Sequence[int] | Sequence[str] | str


# ---------------------------------------------------------------------------------------------
# Statistics


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """RGB uint8 ``[..., H, W, 3]`` -> float32 Lab (L 0..100), sRGB companding included."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """Float32 Lab ``[H, W, 3]`` -> RGB uint8 (out-of-gamut colours clipped)."""
    rgb = cv2.cvtColor(lab.astype(np.float32, copy=False), cv2.COLOR_Lab2RGB)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def region_lab_stats(
    crop: np.ndarray, regions12: np.ndarray, min_pixels: int = MIN_REGION_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-region Lab mean/std of one crop -> ``(stats [12, 6] float32, valid [12] bool)``.

    ``crop [S, S, 3]`` uint8, ``regions12 [S, S]`` uint8 12-region map (same size).
    """
    crop, regions12 = _check_crop_and_map(crop, regions12)
    lab = rgb_to_lab(crop).reshape(-1, 3).astype(np.float64)
    labels = regions12.reshape(-1).astype(np.int64)
    counts = np.bincount(labels, minlength=L.NUM_REGIONS)
    valid = counts >= max(int(min_pixels), 1)
    interior = _interior(regions12).reshape(-1)
    interior_counts = np.bincount(labels[interior], minlength=L.NUM_REGIONS)
    use_interior = interior_counts >= max(int(min_pixels), 1)
    # Pixels that vote: interior pixels of regions with enough interior, all pixels otherwise.
    voting = interior | ~use_interior[labels]
    vote_labels = labels[voting]
    vote_lab = lab[voting]
    n = np.maximum(np.bincount(vote_labels, minlength=L.NUM_REGIONS), 1)[:, None]
    sums = np.stack([np.bincount(vote_labels, vote_lab[:, c], L.NUM_REGIONS) for c in range(3)], 1)
    squares = np.stack(
        [np.bincount(vote_labels, vote_lab[:, c] ** 2, L.NUM_REGIONS) for c in range(3)], 1
    )
    mean = sums / n
    std = np.sqrt(np.maximum(squares / n - mean**2, 0.0))
    stats = np.concatenate([mean, std], axis=1)
    stats[~valid] = np.concatenate([lab.mean(axis=0), lab.std(axis=0)])  # neutral fallback
    return stats.astype(np.float32), valid


def style_from_crops(
    crops: np.ndarray, regions12: np.ndarray, min_pixels: int = MIN_REGION_PIXELS,
    found: np.ndarray | None = None,
) -> StyleCodes:
    """Built-in style codes of ``crops [B, S, S, 3]`` with maps ``regions12 [B, S, S]``.

    ``found [B]``: False marks a slot without a face (all its regions invalid).
    """
    crops, regions12 = np.asarray(crops), np.asarray(regions12)
    if crops.ndim != 4 or regions12.ndim != 3 or len(crops) != len(regions12):
        raise ValueError(
            f"crops must be [B, S, S, 3] and regions12 [B, S, S] with the same B; got "
            f"{crops.shape} and {regions12.shape}"
        )
    found = np.ones(len(crops), bool) if found is None else np.asarray(found, bool)
    stats = np.zeros((len(crops), L.NUM_REGIONS, 6), np.float32)
    valid = np.zeros((len(crops), L.NUM_REGIONS), bool)
    for b in range(len(crops)):
        stats[b], valid[b] = region_lab_stats(crops[b], regions12[b], min_pixels)
        valid[b] &= found[b]
    return StyleCodes(kind="builtin", valid=valid, region_stats=stats, crops=crops.copy(),
                      regions=regions12.astype(np.uint8, copy=True))


def style_from_faces(
    faces: FaceTrack, frames: int | Sequence[int] | None = None,
    min_pixels: int = MIN_REGION_PIXELS,
) -> StyleCodes:
    """Built-in style codes of one frame (``int``), some frames, or all frames (None) of a track."""
    if frames is None:
        index = np.arange(len(faces))
    else:
        index = np.atleast_1d(np.asarray(frames, dtype=np.int64))
        if index.size == 0 or index.min() < -len(faces) or index.max() >= len(faces):
            raise ValueError(f"frames {frames!r} are outside the face track's 0..{len(faces) - 1}")
    style = style_from_crops(faces.crops[index], faces.regions[index], min_pixels,
                             found=faces.found[index])
    style.meta["frames"] = index.tolist()
    return style


# ---------------------------------------------------------------------------------------------
# Swapping


def swap_regions(
    style: StyleCodes,
    reference_style: StyleCodes,
    regions: RegionList,
    strength: float = 1.0,
) -> StyleCodes:
    """Style codes whose chosen regions move toward the reference's by ``strength`` (0..1).

    Built-in: target stats ``(1 - s) * source + s * reference``; learned: the same on the W+ codes
    (both must come from the same encoder). A reference of several frames counts as their average
    over frames where the region is present. A region the reference lacks is kept, with a warning.
    ``regions``: indices or names (``"lips, hair"``).
    """
    strength = float(strength)
    if not np.isfinite(strength) or not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in 0..1 (0 keeps the source, 1 copies the reference); "
                         f"got {strength}")
    chosen = _region_indices(regions)
    if style.kind != reference_style.kind:
        raise ValueError(
            f"style is {style.kind!r} but reference_style is {reference_style.kind!r}; encode both "
            "faces with the same encoder (built-in or the same learned one)"
        )
    present = reference_style.valid.any(axis=0)
    missing = [r for r in chosen if not present[r]]
    if missing:
        log.warning(
            "the reference face has no %s; those regions keep the source's style",
            ", ".join(L.REGIONS_12[r] for r in missing),
        )
    swapped = [r for r in chosen if present[r]]
    meta = dict(style.meta)
    meta["edited_regions"] = sorted(set(meta.get("edited_regions", [])) | set(swapped))
    meta.setdefault("swaps", [])
    meta["swaps"] = meta["swaps"] + [{"regions": swapped, "strength": strength}]
    if style.kind == "builtin":
        return _swap_builtin(style, reference_style, swapped, strength, meta)
    return _swap_learned(style, reference_style, swapped, strength, meta)


def _swap_builtin(style, reference, swapped, strength, meta) -> StyleCodes:
    for name, codes in (("style", style), ("reference_style", reference)):
        if codes.region_stats is None:
            raise ValueError(f"{name} is a built-in style without region_stats; re-encode it")
    source = style.region_stats
    meta.setdefault("source_stats", source.copy())
    reference_stats = _reference_average(reference.region_stats, reference.valid)
    # The last swap of each region, for faces that lack the region (apply_style_edit).
    last_reference = np.array(meta.get("swap_reference", np.zeros((L.NUM_REGIONS, 6))), np.float32)
    last_strength = np.array(meta.get("swap_strength", np.zeros(L.NUM_REGIONS)), np.float32)
    target = source.copy()
    for r in swapped:
        target[:, r] = (1.0 - strength) * source[:, r] + strength * reference_stats[r]
        last_reference[r], last_strength[r] = reference_stats[r], strength
    meta["swap_reference"], meta["swap_strength"] = last_reference, last_strength
    return replace(style, region_stats=target.astype(np.float32), meta=meta)


def _swap_learned(style, reference, swapped, strength, meta) -> StyleCodes:
    if style.codes is None or reference.codes is None:
        raise ValueError("learned style codes are missing their W+ codes; re-encode the faces")
    if style.encoder_id and reference.encoder_id and style.encoder_id != reference.encoder_id:
        raise ValueError(
            f"style comes from encoder {style.encoder_id!r} but the reference from "
            f"{reference.encoder_id!r}; W+ codes of different encoders cannot be mixed"
        )
    if tuple(style.codes.shape[1:]) != tuple(reference.codes.shape[1:]):
        raise ValueError(f"W+ code shapes differ: style {tuple(style.codes.shape)}, reference "
                         f"{tuple(reference.codes.shape)}")
    codes = style.codes.clone() if hasattr(style.codes, "clone") else np.array(style.codes)
    for r in swapped:
        rows = reference.codes[:, r][reference.valid[:, r]]
        ref_code = rows.mean(0) if hasattr(rows, "clone") else np.asarray(rows).mean(axis=0)
        codes[:, r] = (1.0 - strength) * codes[:, r] + strength * ref_code
    return replace(style, codes=codes, meta=meta)


def _reference_average(stats: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``[12, 6]``: per region, the mean over the reference frames where it is valid."""
    weights = valid.astype(np.float64)[..., None]
    return (stats * weights).sum(0) / np.maximum(weights.sum(0), 1.0)


# ---------------------------------------------------------------------------------------------
# Recolouring


def apply_region_style(
    crop: np.ndarray,
    regions12: np.ndarray,
    source_stats: np.ndarray,
    target_stats: np.ndarray,
    regions: RegionList,
    feather: float = 6.0,
) -> np.ndarray:
    """Recolour the chosen regions of ``crop [S, S, 3]`` from ``source_stats`` to ``target_stats``.

    ``regions12 [S, S]``: the crop's 12-region map; stats ``[12, 6]`` as from
    :func:`region_lab_stats`. Regions whose target equals the source, or with no pixels in this
    crop, are left alone. ``feather``: px width of the soft edge, centred on each region's
    boundary. Returns a new uint8 crop; pixels farther than ``feather`` from every recoloured
    region are identical to the input.
    """
    crop, regions12 = _check_crop_and_map(crop, regions12)
    source_stats = _check_stats(source_stats, "source_stats")
    target_stats = _check_stats(target_stats, "target_stats")
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    active = [
        r for r in _region_indices(regions)
        if not np.allclose(source_stats[r], target_stats[r], rtol=0, atol=1e-6)
        and (regions12 == r).any()
    ]
    out = crop.copy()
    if not active:
        return out
    masks = {r: regions12 == r for r in active}
    weights = _soft_weights(masks, feather)
    total = sum(weights.values())
    touched = total > 0
    if not touched.any():
        return out
    y0, y1, x0, x1 = _bbox(touched)
    # The low-pass needs a margin of context so the box edge does not bias it.
    pad = int(np.ceil(3 * DETAIL_SIGMA))
    Y0, Y1 = max(y0 - pad, 0), min(y1 + pad, crop.shape[0])
    X0, X1 = max(x0 - pad, 0), min(x1 + pad, crop.shape[1])
    inner = (slice(y0 - Y0, y1 - Y0), slice(x0 - X0, x1 - X0))
    lab_wide = rgb_to_lab(crop[Y0:Y1, X0:X1])
    smooth = cv2.GaussianBlur(lab_wide, (0, 0), DETAIL_SIGMA)[inner]
    lab = lab_wide[inner]
    shift = np.zeros_like(lab)
    for r in active:
        w = weights[r][y0:y1, x0:x1]
        # Only the smooth component is mapped: the detail (lab - smooth) rides along as it is.
        shift += w[..., None] * (_transfer(smooth, source_stats[r], target_stats[r]) - smooth)
    box_touched = touched[y0:y1, x0:x1]
    recoloured = lab_to_rgb(lab + shift)
    out[y0:y1, x0:x1][box_touched] = recoloured[box_touched]
    return out


def region_weights(
    regions12: np.ndarray, regions: RegionList, feather: float = 6.0
) -> dict[int, np.ndarray]:
    """Transfer weight ``[S, S]`` float32 0..1 of each chosen region present in ``regions12``
    (the soft edge :func:`apply_region_style` uses; they sum to at most 1)."""
    regions12 = np.asarray(regions12)
    masks = {r: regions12 == r for r in _region_indices(regions) if (regions12 == r).any()}
    return _soft_weights(masks, feather) if masks else {}


def apply_style_edit(
    crop: np.ndarray, regions12: np.ndarray, style: StyleCodes, index: int = 0,
    feather: float = 6.0,
) -> np.ndarray:
    """Apply the region swaps recorded in built-in ``style`` to a (rendered) crop.

    ``index``: which face of the style (a one-face style serves every frame). The source
    statistics are the style's original ones, so every frame gets the same colour mapping (no
    flicker); for a region the source face lacked (e.g. the inside of a closed mouth) the crop's
    own statistics are used.
    """
    if style.kind != "builtin":
        raise ValueError("apply_style_edit recolours with built-in style codes; learned codes are "
                         "applied by the generator")
    edited = style.meta.get("edited_regions", [])
    if not edited or style.region_stats is None:
        return np.array(crop, dtype=np.uint8, copy=True)
    b = 0 if len(style.valid) == 1 else int(index)
    if not 0 <= b < len(style.valid):
        raise ValueError(f"index {index} is outside the style's {len(style.valid)} faces")
    source = np.array(style.meta.get("source_stats", style.region_stats)[b], np.float32)
    target = style.region_stats[b]
    lacking = ~style.valid[b]
    if lacking[edited].any():
        # The source's stats for such a region are only the neutral fallback: start from the
        # crop's own pixels and move toward the reference by the swap's strength instead.
        own, own_valid = region_lab_stats(crop, regions12)
        use_own = lacking & own_valid
        strength = np.asarray(style.meta["swap_strength"], np.float32)[:, None]
        reference = np.asarray(style.meta["swap_reference"], np.float32)
        source[use_own] = own[use_own]
        target = target.copy()
        target[use_own] = (own + strength * (reference - own))[use_own]
    return apply_region_style(crop, regions12, source, target, edited, feather)


# ---------------------------------------------------------------------------------------------


def _transfer(lab: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    ratio = np.maximum(target[3:], _MIN_STD) / np.maximum(source[3:], _MIN_STD)
    limits = np.array([LUMINANCE_RATIO_LIMIT, CHROMA_RATIO_LIMIT, CHROMA_RATIO_LIMIT])
    ratio = np.clip(ratio, 1.0 / limits, limits).astype(np.float32)
    return (lab - source[:3]) * ratio + target[:3]


def _soft_weights(masks: dict[int, np.ndarray], feather: float) -> dict[int, np.ndarray]:
    """Per region, its share of a soft union mask (see the module notes); ``masks`` [S, S] bool."""
    union = np.zeros(next(iter(masks.values())).shape, bool)
    for mask in masks.values():
        union |= mask
    total = _soft_edge(union, feather)
    if len(masks) == 1:
        return {r: total for r in masks}
    # Outside the union each region claims pixels by its own nearness; inside, a pixel is its
    # own region's alone.
    near = {r: np.clip(1.0 - distance_outside(m) / max(feather, 1e-6), 0.0, 1.0) for r, m in masks.items()}
    claim = sum(near.values())
    weights = {}
    for r, mask in masks.items():
        share = np.where(union, mask.astype(np.float32), near[r] / np.maximum(claim, 1e-6))
        weights[r] = (total * share).astype(np.float32)
    return weights


def _soft_edge(mask: np.ndarray, feather: float) -> np.ndarray:
    """0..1 across the boundary of ``mask`` [S, S] bool: about 1/2 on it, 1 from ``feather / 2`` px
    inside, 0 from ``feather / 2`` px outside (exactly 0 beyond ``feather``); the mask itself when
    ``feather`` is 0.

    A Gaussian (sigma ``feather / 4``) of the mask, rescaled so 2 sigma out is 0 and 2 sigma in is
    1: along a straight edge that is a smooth function of the signed distance, but unlike the
    distance to a stair-stepped parsing edge it has no radial streaks, and a region thinner than
    the feather (a lip corner) fades instead of ending in a rim.
    """
    if feather <= 0:
        return mask.astype(np.float32)
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), feather / 4.0)
    return np.clip((blurred - _EDGE_LOW) / (1.0 - 2.0 * _EDGE_LOW), 0.0, 1.0).astype(np.float32)


def _interior(regions12: np.ndarray) -> np.ndarray:
    kernel = np.ones((3, 3), np.uint8)
    low = cv2.erode(regions12, kernel, borderType=cv2.BORDER_REPLICATE)
    high = cv2.dilate(regions12, kernel, borderType=cv2.BORDER_REPLICATE)
    return low == high


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _region_indices(regions: RegionList) -> list[int]:
    if isinstance(regions, str) or (len(regions) and isinstance(next(iter(regions)), str)):
        return L.parse_region_list(regions)
    indices = sorted({int(r) for r in regions})
    bad = [r for r in indices if not 0 <= r < L.NUM_REGIONS]
    if bad:
        raise ValueError(f"region indices {bad} are outside 0..{L.NUM_REGIONS - 1} "
                         f"({', '.join(L.REGIONS_12)})")
    return indices


def _check_crop_and_map(crop: np.ndarray, regions12: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    crop, regions12 = np.asarray(crop), np.asarray(regions12)
    if crop.ndim != 3 or crop.shape[-1] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"crop must be an RGB uint8 image [S, S, 3]; got {crop.dtype} {crop.shape}")
    if regions12.shape != crop.shape[:2]:
        raise ValueError(f"regions12 must be [S, S] = {crop.shape[:2]} like the crop; got "
                         f"{regions12.shape}")
    if not np.issubdtype(regions12.dtype, np.integer) or regions12.max(initial=0) >= L.NUM_REGIONS:
        raise ValueError("regions12 must be a 12-region label map (integers 0..11); is it a "
                         "19-class map? convert it with labels.merge_to_regions")
    return crop, regions12.astype(np.uint8, copy=False)


def _check_stats(stats: np.ndarray, name: str) -> np.ndarray:
    stats = np.asarray(stats, dtype=np.float32)
    if stats.shape != (L.NUM_REGIONS, 6) or not np.isfinite(stats).all():
        raise ValueError(f"{name} must be finite [12, 6] Lab mean/std per region; got {stats.shape}")
    return stats
