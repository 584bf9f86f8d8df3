"""Mesh warp: identity where nothing moves, vertices land on their source positions."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.rig import MouthRig
from segtalker_core.procedural.warp import Box, MeshWarp
from test_procedural_common import closed_astronaut, params


@pytest.fixture(scope="module")
def setup():
    crop, landmarks, _ = closed_astronaut()
    rig = MouthRig.fit(landmarks)
    box = Box.around(landmarks[rig.moving, :2], 0.25 * rig.frame.iod + 40, crop.shape[0])
    mesh = MeshWarp.build(landmarks, rig.drive(params(jaw=0.7, teeth=1.0)), box, 0.2 * rig.frame.iod)
    return crop, rig, mesh


def test_no_motion_is_the_identity(setup):
    crop, rig, mesh = setup
    field = mesh.field(rig.reference)
    assert field.is_identity
    assert np.array_equal(field.apply(crop), crop)


def test_pixels_outside_the_box_and_above_the_nose_are_untouched(setup):
    crop, rig, mesh = setup
    field = mesh.field(rig.drive(params(jaw=1.0, width=1.0, teeth=1.0)), smooth=1.5)
    out = field.apply(crop)
    outside = np.ones(crop.shape[:2], bool)
    outside[mesh.box.slices] = False
    assert np.array_equal(out[outside], crop[outside])
    nose_base = int(rig.reference[list(T.NOSE_BASE), 1].min())
    assert np.array_equal(out[:nose_base], crop[:nose_base])
    assert not np.array_equal(out, crop)


def test_vertices_sample_their_source_positions(setup):
    crop, rig, mesh = setup
    driven = rig.drive(params(jaw=0.8, width=-0.5))
    field = mesh.field(driven)  # no smoothing: the map is piecewise affine through the vertices
    inside = [i for i in mesh.landmark_index if np.abs(driven[i] - rig.reference[i]).max() > 2]
    assert len(inside) > 50
    errors = []
    for i in inside:
        x, y = driven[i, :2]
        col, row = int(round(x)) - mesh.box.x0, int(round(y)) - mesh.box.y0
        # The map at the nearest pixel centre, corrected by the local offset from the vertex.
        sample = np.array([field.map_x[row, col], field.map_y[row, col]])
        expected = rig.reference[i, :2] + (np.array([col + mesh.box.x0, row + mesh.box.y0]) - driven[i, :2])
        errors.append(np.abs(sample - expected).max())
    # Half-resolution evaluation + bilinear upsampling: sub-pixel, except right at lip kinks.
    assert np.median(errors) < 0.5
    assert np.percentile(errors, 90) < 1.5


def test_a_translated_chin_moves_the_texture_with_it(setup):
    crop, rig, mesh = setup
    driven = rig.drive(params(jaw=1.0))
    out = mesh.field(driven, smooth=1.5).apply(crop)
    # A patch just above the chin point shows, after the warp, at the driven chin position.
    size = 6
    src = rig.reference[T.CHIN, :2].round().astype(int) - (0, 14)
    dst = (src + (driven[T.CHIN, :2] - rig.reference[T.CHIN, :2])).round().astype(int)
    patch = lambda img, p: img[p[1] - size:p[1] + size, p[0] - size:p[0] + size].astype(float)
    moved_error = np.abs(patch(out, dst) - patch(crop, src)).mean()
    unmoved_error = np.abs(patch(out, src) - patch(crop, src)).mean()
    assert moved_error < 0.5 * unmoved_error


def test_label_maps_warp_with_nearest_neighbour(setup):
    crop, rig, mesh = setup
    labels = (np.arange(crop.shape[0])[:, None] // 16 % 12).astype(np.uint8) * np.ones(crop.shape[:2], np.uint8)
    warped = mesh.field(rig.drive(params(jaw=0.6)), smooth=1.5).apply_labels(labels)
    assert warped.dtype == np.uint8
    assert set(np.unique(warped)) <= set(np.unique(labels))


def test_box_outside_the_crop_is_refused():
    with pytest.raises(ValueError, match="outside"):
        Box.around(np.array([[600.0, 600.0], [700.0, 650.0]]), 2.0, 512)
