"""The band-window paste mask is a pure optimisation: bit for bit the whole-crop mask it replaced.

``face_blend_mask`` with ``changed`` now works on the band's bounding box only, and
``changed_paste_mask`` finds the changed pixels with ``cv2.absdiff``. The whole-crop versions
they replaced (commit c13d685, ``face/paste.py`` and ``builtin.paste_mask``) are kept below as
the reference: every mask must be *equal*, not close, to theirs.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import paste as P
from segtalker_core.masks import dilate, erode

from test_paste import synthetic_regions


def reference_face_blend_mask(regions12, feather_px, regions=P.FACE_REGIONS, changed=None,
                              band_px=None, erode_px=None, border_px=2):
    """The pre-window ``face_blend_mask`` (maps and ``changed`` only): every step on the whole crop."""
    maps = np.asarray(regions12)
    maps = maps[None] if maps.ndim == 2 else maps
    size = maps.shape[-1]
    lut = np.zeros(256, dtype=bool)
    lut[list(regions)] = True
    area = lut[maps].any(axis=0)
    if changed is not None:
        band = dilate(changed, band_px if band_px is not None else 3.0 * feather_px)
        area = (area | changed) & band
    erode_by = feather_px if erode_px is None else float(erode_px)
    if erode_by > 0:
        area = erode(area, erode_by, shrink_from_edge=True)
    elif erode_by < 0:
        area = dilate(area, -erode_by)
    mask = area.astype(np.float32)
    if feather_px > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather_px / 2.0, borderType=cv2.BORDER_CONSTANT)
    mask *= P._border_ramp(size, int(border_px), max(float(feather_px), 1.0))
    mask[mask < P.MASK_EPSILON] = 0.0
    return mask


def reference_paste_mask(crop, regions, source_crop, source_regions, feather_px):
    """The pre-change ``builtin.paste_mask``: numpy comparison, whole-crop mask."""
    changed = np.any(crop != source_crop, axis=-1)
    if not changed.any():
        return np.zeros(changed.shape, np.float32)
    touched = set(np.unique(regions[changed]).tolist()) | set(np.unique(source_regions[changed]).tolist())
    selected = sorted(set(P.FACE_REGIONS) | touched)
    return reference_face_blend_mask(np.stack([regions, source_regions]), feather_px,
                                     regions=selected, changed=changed)


def _blocky_maps(rng, size: int) -> np.ndarray:
    """Two ``[S, S]`` 12-region maps of 8 px blocks (many region edges to erode and blur)."""
    maps = rng.integers(0, len(L.REGIONS_12), (2, size // 8 + 1, size // 8 + 1), dtype=np.uint8)
    return np.repeat(np.repeat(maps, 8, 1), 8, 2)[:, :size, :size]


def _changed_patch(rng, size: int) -> np.ndarray:
    """A sparse random patch of changed pixels anywhere in the crop (also touching its edges)."""
    changed = np.zeros((size, size), bool)
    y, x = rng.integers(0, size, 2)
    h, w = rng.integers(1, size // 2, 2)
    patch = changed[y : y + h, x : x + w]
    patch[...] = rng.random(patch.shape) < 0.6
    return changed


@pytest.mark.parametrize("size", [512, 256, 200])  # 200: not a multiple of the column alignment
def test_window_mask_equals_the_whole_crop_mask(size):
    rng = np.random.default_rng(size)
    non_empty = 0
    for trial in range(40):
        maps, changed = _blocky_maps(rng, size), _changed_patch(rng, size)
        feather = float(rng.choice([0.0, 1.5, 4.0, 8.0, 12.0]))
        erode_px = None if trial % 3 else float(rng.choice([-3.0, 0.0, 5.0]))
        band_px = None if trial % 4 else float(rng.choice([0.0, 10.0, 40.0]))
        got = P.face_blend_mask(maps, feather, changed=changed, erode_px=erode_px, band_px=band_px)
        want = reference_face_blend_mask(maps, feather, changed=changed, erode_px=erode_px,
                                         band_px=band_px)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}, feather {feather}, "
                                                          f"erode {erode_px}, band {band_px}")
        non_empty += bool(want.any())
    assert non_empty >= 20  # the cases compare real masks, not empty ones


def test_changed_paste_mask_equals_the_old_paste_mask_on_a_mouth_edit():
    """A face-like map and a re-drawn mouth (one pixel changed in one channel by one level too)."""
    size = 512
    regions = synthetic_regions(size)
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (size, size, 3), np.uint8)
    crop = source.copy()
    crop[350:410, 190:320] = rng.integers(0, 256, (60, 130, 3), np.uint8)
    crop[200, 60, 2] ^= 1  # far from the mouth: the window must stretch to it
    driven = regions.copy()
    cv2.ellipse(driven, (256, 377), (60, 28), 0, 0, 360, L.REGIONS_12.index("mouth_interior"), -1)
    got = P.changed_paste_mask(crop, driven, source, regions, 12.0)
    want = reference_paste_mask(crop, driven, source, regions, 12.0)
    assert want.max() > 0.99 and (want == 0).mean() > 0.5  # a real mask, not all or nothing
    np.testing.assert_array_equal(got, want)


def test_changed_paste_mask_of_an_unchanged_crop_is_empty():
    regions = synthetic_regions(256)
    crop = np.full((256, 256, 3), 90, np.uint8)
    mask = P.changed_paste_mask(crop, regions, crop.copy(), regions, 12.0)
    assert mask.shape == (256, 256) and mask.dtype == np.float32 and not mask.any()


def test_changed_pixels_sees_a_one_level_change_in_any_channel():
    a = np.zeros((64, 64, 3), np.uint8)
    for channel in range(3):
        b = a.copy()
        b[5, 7, channel] = 1
        changed = P.changed_pixels(a, b)
        assert changed.sum() == 1 and changed[5, 7]
    with pytest.raises(ValueError, match="must match"):
        P.changed_pixels(a, a[:32])
