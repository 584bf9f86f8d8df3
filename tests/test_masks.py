"""The one mask morphology: disk dilation/erosion by a Euclidean radius, and shape_mask on top."""
from __future__ import annotations

import numpy as np

from segtalker_core.masks import dilate, distance_outside, erode, shape_mask


def _point(size: int = 21) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[size // 2, size // 2] = True
    return mask


def test_dilating_a_point_gives_a_disk_of_the_radius():
    grown = dilate(_point(), 5)
    ys, xs = np.nonzero(grown)
    radii = np.hypot(ys - 10, xs - 10)
    assert radii.max() <= 5.0 + 0.25  # the 5x5 distance mask is accurate to a few percent
    assert grown[10, 5] and grown[10, 15] and not grown[10, 4] and not grown[3, 3]
    assert (dilate(_point(), 0) == _point()).all()
    assert not dilate(np.zeros((5, 5), bool), 3).any()


def test_erosion_undoes_dilation_of_a_disk_and_minds_the_edge_only_when_asked():
    disk = dilate(_point(), 6)
    np.testing.assert_array_equal(erode(disk, 6), _point())
    full = np.ones((9, 9), bool)
    assert erode(full, 2).all()  # beyond the edge counts as inside by default (OpenCV's rule)
    shrunk = erode(full, 2, shrink_from_edge=True)
    assert shrunk[2:7, 2:7].all() and shrunk.sum() == 5 * 5  # two pixels off every side


def test_distance_outside_is_zero_on_the_mask():
    distance = distance_outside(_point())
    assert distance[10, 10] == 0.0 and abs(distance[10, 13] - 3.0) < 1e-6


def test_shape_mask_grows_shrinks_and_feathers():
    binary = dilate(_point(), 4)[None]
    assert shape_mask(binary, dilate_px=2).sum() > binary.sum() > shape_mask(binary, dilate_px=-2).sum()
    soft = shape_mask(binary, feather_px=4)
    assert soft.dtype == np.float32 and 0.0 < soft[0, 10, 15] < 1.0
