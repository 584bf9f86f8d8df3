"""Paste rendered face crops back into the original full-resolution frames.

Mask (:func:`face_blend_mask`, crop space, float32 0..1):

* face area = the 12-region classes skin, lips, mouth interior, nose, eyes and brows (hair, ears,
  neck and background come from the original frame, where the crop is least reliable); several
  maps ``[K, S, S]`` are united, so passing the source map *and* the driven map keeps both the
  old and the new mouth/jaw shape inside; a region recoloured by a style swap that is not in
  this list (hair, ears, neck) must be added through ``regions`` or the swap will not show;
* optionally cut to the face-oval polygon of the landmarks (parsers sometimes spill "skin" into
  the neck or a hand) and/or to a band of ``band_px`` around the pixels the renderer ``changed``
  (everything else then stays the original frame bit for bit); with ``changed`` every step works
  on that band's bounding box only (grown by the blur's reach; exactly the whole-crop result,
  since the mask is 0 outside it), so a mouth-only edit costs a fraction of a whole-crop mask;
* eroded by ``erode_px`` (default ``feather_px``; negative grows), then blurred with a Gaussian of
  sigma ``feather_px / 2`` so that it has fallen to ~0 at the face-area border;
* multiplied by a ramp that is exactly 0 in the outer ``border_px`` pixels of the crop and reaches
  1 ``feather_px`` further in, so the crop's square never shows in the frame.

Paste (:func:`paste_face`): only the frame box under the mask's support is touched. The crop and
mask are warped straight into that box (one ``cv2.warpAffine`` each, the matrix shifted by the
box origin), blended there in uint8 with ``cv2.blendLinear``; no full-frame float array exists.
The picture is sampled bicubically and not low-passed first: a crop resampled from the frame
holds nothing above the frame's resolution, and a low-pass that would protect against aliasing
when a large crop lands on a small face (more than ~2 crop pixels per frame pixel) costs ~10 dB
on ordinary faces; for such small faces render a smaller crop instead.
Mask values below 1/512 are dropped: they could not change a uint8 pixel, and dropping them
makes "outside the footprint the frame is untouched" exact.

Colour correction (optional, on by default): a generated crop often drifts in colour. The
difference frame - crop is measured in the blend ring (where the mask is neither 0 nor 1), spread
by a wide normalised Gaussian (low frequencies only, so no texture is copied) and added to the
crop before blending. It is computed in crop space at 1/8 resolution: its cost does not depend on
the frame size.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

from .multiband import multiband_blend, reach as multiband_reach

from .. import labels as L
from ..containers import invert_affine
from ..masks import dilate, erode
from . import mesh_topology as T

FACE_REGIONS: tuple[int, ...] = tuple(
    L.region_index(name)
    for name in ("skin", "lips", "mouth_interior", "nose", "eyes", "brows")
)
MASK_EPSILON = 1.0 / 512.0  # below this a mask value cannot change a uint8 pixel
BLEND_MODES = ("linear", "multiband")  # paste_face(blend=...)
_CORRECTION_DOWNSCALE = 8
_WINDOW_ALIGN = 64  # columns of a band window: a multiple of any SIMD block OpenCV uses


def face_blend_mask(
    regions12: np.ndarray | None,
    feather_px: float = 8.0,
    *,
    regions: Sequence[int] | Sequence[str] = FACE_REGIONS,
    landmarks: np.ndarray | None = None,
    changed: np.ndarray | None = None,
    band_px: float | None = None,
    erode_px: float | None = None,
    border_px: int = 2,
    crop_size: int | None = None,
) -> np.ndarray:
    """Soft paste mask ``[S, S]`` float32 in 0..1 from 12-region maps and/or landmarks.

    ``regions12``: ``[S, S]`` or ``[K, S, S]`` uint8 12-region maps (united), or None to use the
    face oval of ``landmarks`` alone; ``regions``: the regions that count as face (indices or
    names). ``landmarks``: ``[478, 2+]`` crop pixels, ignored if they hold NaN (no face).
    ``changed``: ``[S, S]`` bool, pixels the renderer altered; the mask is limited to
    ``band_px`` (default ``3 * feather_px``) around them. ``crop_size`` is needed only when
    neither a map nor ``changed`` gives the size.
    """
    if feather_px < 0:
        raise ValueError(f"feather_px must be >= 0, got {feather_px}")
    size = _mask_size(regions12, changed, crop_size)
    maps = None
    if regions12 is not None:
        maps = np.asarray(regions12)
        maps = maps[None] if maps.ndim == 2 else maps
        if maps.ndim != 3 or maps.shape[1:] != (size, size):
            raise ValueError(f"regions12 must be [S, S] or [K, S, S]; got {maps.shape}")
    oval = None
    if landmarks is not None and np.isfinite(np.asarray(landmarks)[:, :2]).all():
        oval = _polygon_mask(landmarks, T.FACE_OVAL, size)
    if maps is None and oval is None:
        raise ValueError(
            "face_blend_mask needs a 12-region map or finite landmarks; got neither "
            "(a frame without a face has nothing to paste)"
        )
    band_by = band_px if band_px is not None else 3.0 * feather_px
    erode_by = feather_px if erode_px is None else float(erode_px)
    mask = np.zeros((size, size), np.float32)
    # The window every step works in: the whole crop, or with `changed` the band's bounding box
    # grown by what the later steps reach (a negative erosion grows, the blur spreads).
    window = (0, 0, size, size)
    if changed is not None:
        changed = np.asarray(changed, dtype=bool)
        if changed.shape != (size, size):
            raise ValueError(f"changed must be [S, S] = {(size, size)}; got {changed.shape}")
        window = _band_window(changed, band_by, max(-erode_by, 0.0), feather_px, size)
        if window is None:  # nothing changed: nothing to paste
            return mask
    y0, x0, y1, x1 = window
    inner = np.s_[y0:y1, x0:x1]
    area = None
    if maps is not None:
        lut = np.zeros(256, dtype=bool)
        lut[L.parse_region_list(regions) if _are_names(regions) else list(regions)] = True
        area = lut[maps[(slice(None),) + inner].astype(np.uint8, copy=False)].any(axis=0)
    if oval is not None:
        area = oval[inner] if area is None else area & oval[inner]
    if changed is not None:
        near = changed[inner]
        area = (area | near) & dilate(near, band_by)
    # Beyond the window's sides inside the crop the mask is 0 (the band does not reach there),
    # which is what erode's shrink_from_edge assumes past an edge: the erosion is exact in it.
    if erode_by > 0:
        area = erode(area, erode_by, shrink_from_edge=True)  # outside the crop is not face
    elif erode_by < 0:
        area = dilate(area, -erode_by)
    soft = area.astype(np.float32)
    if feather_px > 0:
        # BORDER_CONSTANT: zeros past the window's sides, as the crop holds there (or its edge).
        soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=feather_px / 2.0,
                                borderType=cv2.BORDER_CONSTANT)
    soft *= _border_ramp(size, int(border_px), max(float(feather_px), 1.0))[inner]
    soft[soft < MASK_EPSILON] = 0.0
    mask[inner] = soft
    return mask


def _band_window(changed: np.ndarray, band_px: float, grow_px: float, feather_px: float,
                 size: int) -> tuple[int, int, int, int] | None:
    """``(y0, x0, y1, x1)`` of the crop a mask limited to ``band_px`` around ``changed`` can
    touch, after growing by ``grow_px`` and blurring with sigma ``feather_px / 2``; None when
    nothing changed.

    Columns are widened to multiples of :data:`_WINDOW_ALIGN`: OpenCV's filters run vectorised
    in blocks along a row and finish a row's remainder in scalar code, whose rounding can differ
    in the last bit; on aligned columns (and a crop side that is a multiple) every pixel takes
    the path it takes over the whole crop, so the result is bit for bit the whole-crop one.
    """
    cols = np.flatnonzero(changed.any(axis=0))
    if len(cols) == 0:
        return None
    rows = np.flatnonzero(changed.any(axis=1))
    # +2: the distance-transform threshold is inclusive and the blur kernel's own rounding.
    reach = int(np.ceil(max(band_px, 0.0) + grow_px)) + _blur_radius(feather_px) + 2
    y0, y1 = max(int(rows[0]) - reach, 0), min(int(rows[-1]) + 1 + reach, size)
    x0, x1 = max(int(cols[0]) - reach, 0), min(int(cols[-1]) + 1 + reach, size)
    if size % _WINDOW_ALIGN == 0:
        x0 = x0 - x0 % _WINDOW_ALIGN
        x1 = min(x1 + (-x1) % _WINDOW_ALIGN, size)
    else:  # an unaligned crop: the whole width keeps every row's split where it was
        x0, x1 = 0, size
    return y0, x0, y1, x1


def _blur_radius(feather_px: float) -> int:
    """Half the Gaussian kernel OpenCV builds for sigma ``feather_px / 2`` on float images
    (``ksize = round(8 * sigma + 1) | 1``)."""
    if feather_px <= 0:
        return 0
    return (int(round(8.0 * feather_px / 2.0 + 1.0)) | 1) // 2


def changed_pixels(crop: np.ndarray, source_crop: np.ndarray) -> np.ndarray:
    """``[S, S]`` bool: where ``crop`` and ``source_crop`` (``[S, S, 3]`` uint8) differ in any
    channel. (A channel-wise absolute difference OR-ed over the channels: ~10x cheaper than
    comparing the arrays in numpy and reducing over the last axis.)"""
    crop, source_crop = _check_image(crop, "crop"), _check_image(source_crop, "source_crop")
    if crop.shape != source_crop.shape:
        raise ValueError(f"crop {crop.shape} and source_crop {source_crop.shape} must match")
    diff = cv2.absdiff(crop, source_crop)
    return cv2.bitwise_or(cv2.bitwise_or(diff[..., 0], diff[..., 1]), diff[..., 2]) != 0


def changed_paste_mask(
    crop: np.ndarray,  # [S, S, 3] rendered crop
    regions: np.ndarray,  # [S, S] its 12-region map
    source_crop: np.ndarray,  # [S, S, 3] the input frame's crop
    source_regions: np.ndarray,  # [S, S] its 12-region map
    feather_px: float,
) -> np.ndarray:
    """Paste mask ``[S, S]`` float32 of a crop rendered from ``source_crop``: the face regions
    (plus any region the crop changed) of either map, limited to a band around the pixels that
    differ from the source crop, so the rest of the frame stays untouched. All zeros when
    nothing changed. Pure (no state): safe to call from several threads at once."""
    changed = changed_pixels(crop, source_crop)
    regions, source_regions = np.asarray(regions), np.asarray(source_regions)
    if regions.shape != changed.shape or source_regions.shape != changed.shape:
        raise ValueError(f"regions {regions.shape} and source_regions {source_regions.shape} must "
                         f"be [S, S] = {changed.shape} like the crops")
    if not changed.any():
        return np.zeros(changed.shape, np.float32)
    touched = np.zeros(256, dtype=bool)
    touched[regions[changed]] = True
    touched[source_regions[changed]] = True
    touched[list(FACE_REGIONS)] = True
    return face_blend_mask(np.stack([regions, source_regions]), feather_px,
                           regions=np.flatnonzero(touched).tolist(), changed=changed)


def paste_box(
    transform: np.ndarray, mask: np.ndarray, frame_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """Frame box ``(x0, y0, x1, y1)`` (exclusive ends) that a paste with this mask can change.

    None when the mask is empty or its footprint lies outside the frame.
    """
    return _box(np.asarray(transform, dtype=np.float64), _as_mask(mask), frame_size)


def _box(
    transform: np.ndarray, mask: np.ndarray, frame_size: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    # Row/column maxima: two passes over the mask instead of listing every non-zero pixel.
    xs = np.flatnonzero(mask.max(axis=0) >= MASK_EPSILON)
    ys = np.flatnonzero(mask.max(axis=1) >= MASK_EPSILON)
    if len(xs) == 0:
        return None
    # Support of the bilinear warp: up to one crop pixel beyond the outermost non-zero centres.
    cx0, cx1 = xs[0] - 1.0, xs[-1] + 1.0
    cy0, cy1 = ys[0] - 1.0, ys[-1] + 1.0
    corners = np.array([[cx0, cy0], [cx1, cy0], [cx0, cy1], [cx1, cy1]], dtype=np.float64)
    inverse = invert_affine(transform)
    frame_pts = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = frame_size
    x0 = max(int(np.floor(frame_pts[:, 0].min())), 0)
    y0 = max(int(np.floor(frame_pts[:, 1].min())), 0)
    x1 = min(int(np.ceil(frame_pts[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(frame_pts[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def paste_face(
    frame: np.ndarray,
    crop: np.ndarray,
    transform: np.ndarray,
    mask: np.ndarray,
    *,
    color_correct: bool = True,
    inplace: bool = False,
    blend: str = "linear",
) -> np.ndarray:
    """Blend ``crop [S, S, 3]`` uint8 into ``frame [H, W, 3]`` uint8 -> new frame ``[H, W, 3]``.

    ``blend``: ``"linear"`` (one alpha blend, the default) or ``"multiband"`` (Laplacian pyramid,
    :mod:`.multiband`: spreads a shading/colour mismatch along the feather over a wider, gentler
    transition; it changes pixels up to ``multiband.reach()`` (24) past the mask's footprint).

    ``transform``: ``2x3`` frame -> crop affine. ``mask``: ``[S, S]`` paste weights (float 0..1,
    bool, or uint8 0..255), e.g. from :func:`face_blend_mask`; it must reach 0 before the crop's
    edge (that mask does) or the crop's square shows. An empty mask or a footprint outside the
    frame returns the frame unchanged. ``inplace`` writes into ``frame`` (saves one copy).
    """
    frame = _check_image(frame, "frame")
    crop = _check_image(crop, "crop")
    size = crop.shape[0]
    if crop.shape[1] != size:
        raise ValueError(f"crop must be square [S, S, 3]; got {crop.shape}")
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    mask = _as_mask(mask)
    if mask.shape != (size, size):
        raise ValueError(f"mask must be [S, S] = {(size, size)} like the crop; got {mask.shape}")
    matrix = _check_transform(transform)
    out = frame if inplace else frame.copy()
    box = _box(matrix, mask, frame.shape[:2])
    if box is None:
        return out
    if color_correct:
        crop = _colour_corrected(crop, frame, matrix, mask)

    x0, y0, x1, y1 = box
    if blend == "multiband":  # its coarse bands fade out a few pixels past the footprint
        margin = multiband_reach()
        height, width = frame.shape[:2]
        x0, y0, x1, y1 = max(x0 - margin, 0), max(y0 - margin, 0), min(x1 + margin, width), min(y1 + margin, height)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    dsize = (x1 - x0, y1 - y0)
    # Bicubic for the picture: the crop was itself resampled from the frame, and a second
    # bilinear pass would blur the face visibly (~4 dB PSNR lost); the mask stays bilinear so it
    # keeps to 0..1 and its footprint stays as tight as paste_box computes it.
    warped = cv2.warpAffine(crop, shifted, dsize, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, shifted, dsize, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    alpha[alpha < MASK_EPSILON] = 0.0
    target = out[y0:y1, x0:x1]
    if blend == "multiband":
        target[...] = multiband_blend(warped, np.ascontiguousarray(target), alpha)
    else:
        target[...] = cv2.blendLinear(warped, np.ascontiguousarray(target), alpha, 1.0 - alpha)
    return out


# ---------------------------------------------------------------------------------------------


def _colour_corrected(
    crop: np.ndarray, frame: np.ndarray, matrix: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Crop plus the low-frequency colour difference frame - crop measured in the blend ring.

    Everything but the final addition runs at 1/8 of the crop size: only low frequencies are
    wanted, and it keeps the cost a few milliseconds whatever the frame size.
    """
    size = crop.shape[0]
    small = max(size // _CORRECTION_DOWNSCALE, 8)
    mask_small = cv2.resize(mask, (small, small), interpolation=cv2.INTER_AREA)
    ring = 4.0 * mask_small * (1.0 - mask_small)  # 1 where the mask is 0.5, 0 where 0 or 1
    # Crop pixels that fall outside the frame have no frame colour to compare with.
    ring *= _inside_frame(matrix, size, small, frame.shape[:2])
    if ring.sum() < 0.5:
        return crop
    # The frame is sampled straight onto a grid twice as fine as `small` (not the full crop
    # raster, the costliest step otherwise); the 2x2 averaging and the wide blur below remove
    # what point sampling aliases.
    fine = 2 * small
    to_fine = matrix * (fine / size)
    to_fine[:, 2] += 0.5 * fine / size - 0.5  # pixel centres: fine = (crop + 0.5) * f - 0.5
    reference = cv2.warpAffine(frame, to_fine, (fine, fine), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    ref_small = cv2.resize(reference, (small, small), interpolation=cv2.INTER_AREA)
    crop_small = cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA)
    weighted = (ref_small.astype(np.float32) - crop_small.astype(np.float32)) * ring[..., None]
    # Normalised convolution; the ring-wide mean fills places far from the ring.
    sigma = small / 8.0
    mean_diff = weighted.sum(axis=(0, 1)) / float(ring.sum())
    prior = 1e-2
    num = cv2.GaussianBlur(weighted, (0, 0), sigma) + prior * mean_diff
    den = cv2.GaussianBlur(ring, (0, 0), sigma)[..., None] + prior
    offset = cv2.resize(num / den, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.add(crop, offset, dtype=cv2.CV_8U)  # rounds and saturates


def _inside_frame(
    matrix: np.ndarray, size: int, grid: int, frame_size: tuple[int, int]
) -> np.ndarray:
    """``[grid, grid]`` float32: 1 where the crop (sampled on a grid x grid raster) lies in the frame."""
    inverse = invert_affine(matrix)
    u = (np.arange(grid, dtype=np.float64) + 0.5) * (size / grid) - 0.5  # crop pixel coordinates
    xs = inverse[0, 0] * u[None, :] + inverse[0, 1] * u[:, None] + inverse[0, 2]
    ys = inverse[1, 0] * u[None, :] + inverse[1, 1] * u[:, None] + inverse[1, 2]
    height, width = frame_size
    return ((xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)).astype(np.float32)


def _are_names(regions: Sequence[int] | Sequence[str] | str) -> bool:
    return isinstance(regions, str) or any(isinstance(r, str) for r in regions)


def _mask_size(regions12, changed, crop_size) -> int:
    for arr in (regions12, changed):
        if arr is not None:
            return int(np.asarray(arr).shape[-1])
    if crop_size is None:
        raise ValueError(
            "face_blend_mask got no region map or changed mask to take the size from; "
            "pass crop_size (the crop's side in pixels) with the landmarks"
        )
    return int(crop_size)


def _polygon_mask(landmarks: np.ndarray, indices: tuple[int, ...], size: int) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)[list(indices), :2]
    canvas = np.zeros((size, size), np.uint8)
    # 4 fractional bits: sub-pixel accurate polygon edges.
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


@lru_cache(maxsize=8)
def _border_ramp(size: int, border: int, ramp: float) -> np.ndarray:
    """``[S, S]``: 0 in the outer ``border`` pixels, rising linearly to 1 over ``ramp`` pixels."""
    coords = np.arange(size, dtype=np.float32)
    edge = np.minimum(coords, size - 1 - coords)  # distance to the nearest edge pixel
    line = np.clip((edge - border + 1) / ramp, 0.0, 1.0)
    ramp2d = np.minimum(line[:, None], line[None, :])
    ramp2d.setflags(write=False)
    return ramp2d


def _as_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a single-channel [S, S] array; got shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask.astype(np.float32)
    if mask.dtype == np.uint8:
        return mask.astype(np.float32) / 255.0
    if not np.issubdtype(mask.dtype, np.floating):
        raise TypeError(f"mask must be float 0..1, bool or uint8; got {mask.dtype}")
    mask = mask.astype(np.float32, copy=False)
    low, high = float(mask.min()), float(mask.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("mask contains NaN or inf")
    return mask if 0.0 <= low and high <= 1.0 else np.clip(mask, 0.0, 1.0)


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{name} must be an RGB uint8 image [H, W, 3]; got {image.dtype} {image.shape} "
            "(convert other images with face.image.to_rgb_uint8)"
        )
    return image


def _check_transform(transform: np.ndarray) -> np.ndarray:
    matrix = np.asarray(transform, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"transform must be a finite 2x3 frame->crop affine; got {matrix.shape}")
    if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
        raise ValueError("transform is singular (zero scale); it cannot map a crop into a frame")
    return matrix
