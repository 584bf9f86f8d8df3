"""Mesh warp: identity where nothing moves, vertices land on their source positions, texture
survives the resampling, kept occluders and background stay in place."""
from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.detail import detail_ratio
from segtalker_core.procedural.rig import MouthRig
from segtalker_core.procedural.warp import Box, KeepMask, MeshWarp, WarpField
from test_procedural_common import astronaut, closed_astronaut, params


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


# ---------------------------------------------------------------------------------------------
# Texture: the source's fine detail survives the resampling


@functools.lru_cache(maxsize=None)
def grainy_astronaut() -> np.ndarray:
    """The photo with stubble-like grain (the photo itself is smooth: little to lose)."""
    crop = astronaut()[0]
    rng = np.random.default_rng(13)
    grain = cv2.GaussianBlur(rng.normal(0, 8, crop.shape[:2]).astype(np.float32), (0, 0), 0.6)
    return np.clip(crop + grain[..., None], 0, 255).astype(np.uint8)


def lower_face(regions: np.ndarray, landmarks: np.ndarray, box: Box) -> np.ndarray:
    """Skin of the box below the nose tip, away from the lips (whose shape changes)."""
    mask = np.zeros(regions.shape, bool)
    mask[box.slices] = regions[box.slices] == L.region_index("skin")
    mask[: int(landmarks[T.NOSE_TIP, 1])] = False
    lips = (regions == L.region_index("lips")).astype(np.uint8)
    mask &= cv2.dilate(lips, np.ones((15, 15), np.uint8)) == 0
    return cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def test_subpixel_shifts_keep_the_fine_detail_and_static_pixels_stay_exact():
    crop = grainy_astronaut()
    box = Box(150, 250, 370, 430)
    h, w = box.shape
    # A smooth field with every sub-pixel phase, exactly zero on the box's left third.
    ramp = np.clip((np.arange(w, dtype=np.float32) - w / 3) / 40, 0, 1)[None]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx = ramp * (2.0 + 1.5 * np.sin(xx / 23.0) * np.cos(yy / 17.0))
    dy = ramp * (1.0 + 1.5 * np.cos(xx / 19.0 + yy / 29.0))
    field = WarpField(box, box.x0 + xx + dx, box.y0 + yy + dy, (dx != 0) | (dy != 0))
    out = field.apply(crop)
    static = np.zeros(crop.shape[:2], bool)
    static[box.slices] = ~field.moved
    assert static.sum() > 0.3 * h * w
    assert np.array_equal(out[static], crop[static])
    # Compare where the shift is whole (the texture is the same, only displaced).
    moving = np.zeros(crop.shape[:2], bool)
    moving[box.slices] = ramp.repeat(h, 0) == 1
    moving = cv2.erode(moving.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert detail_ratio(out, crop, moving) >= 0.97  # the grain comes from the nearest source pixel
    # The measure does see resampling blur: a plain interpolating remap loses much of the grain
    # (which is why apply splits the grain off).
    plain = crop.copy()
    plain[box.slices] = cv2.remap(crop, field.map_x, field.map_y, cv2.INTER_LINEAR)
    assert detail_ratio(plain, crop, moving) < 0.85
    plain[box.slices] = cv2.remap(crop, field.map_x, field.map_y, cv2.INTER_CUBIC)
    assert detail_ratio(plain, crop, moving) < 0.95
    # Float maps (soft masks) are only interpolated: bilinear never leaves the input's range.
    soft = (crop[..., 0] / 255.0).astype(np.float32)
    warped = field.apply(soft, cv2.INTER_LINEAR)
    assert warped.min() >= soft.min() and warped.max() <= soft.max()


def test_closing_a_smile_keeps_the_lower_face_detail():
    """The photo's lips are apart: its closed frame moves the whole lower face (~10 px)."""
    _, landmarks, regions = astronaut()
    crop = grainy_astronaut()
    rig = MouthRig.fit(landmarks)
    box = Box.around(landmarks[rig.moving, :2], 0.25 * rig.frame.iod + 40, crop.shape[0])
    mesh = MeshWarp.build(landmarks, rig.drive(params(jaw=0.7, teeth=1.0)), box, 0.2 * rig.frame.iod)
    field = mesh.field(rig.drive(params()), smooth=1.5)
    mask = lower_face(regions, landmarks, box)
    shift = np.hypot(field.map_x - np.arange(box.x0, box.x1), field.map_y - np.arange(box.y0, box.y1)[:, None])
    assert np.median(shift[mask[box.slices]]) > 3  # the closed frame really moves that skin
    assert detail_ratio(field.apply(crop), crop, mask) >= 0.9


# ---------------------------------------------------------------------------------------------
# Keep mask: occluders and background stay out of the warp


def strand_and_background(crop_shape, rig, box) -> tuple[np.ndarray, np.ndarray]:
    """A 4-px hair strand down the jaw side and a 'background' under the source chin."""
    chin = rig.reference[T.CHIN, :2]
    strand = np.zeros(crop_shape[:2], bool)
    x = int(chin[0] + 0.45 * rig.frame.iod)
    strand[box.y0:int(chin[1]), x:x + 4] = True
    behind = np.zeros(crop_shape[:2], bool)
    behind[int(chin[1]) + 4:] = True
    return strand, behind


def test_kept_strand_and_background_stay_while_the_chin_moves_over_them(setup):
    crop, rig, mesh = setup
    strand, behind = strand_and_background(crop.shape, rig, mesh.box)
    feather = 0.05 * rig.frame.iod
    keep = KeepMask.build(strand, behind, feather, mesh.box)
    driven = rig.drive(params(jaw=1.0))
    free, kept = mesh.field(driven, 1.5), mesh.field(driven, 1.5, keep=keep)
    shift = lambda f: np.hypot(f.map_x - np.arange(mesh.box.x0, mesh.box.x1),
                               f.map_y - np.arange(mesh.box.y0, mesh.box.y1)[:, None])
    strand_box = strand[mesh.box.slices]
    assert shift(free)[strand_box].max() > 5  # without the mask the strand would ride along
    out = kept.apply(crop)
    assert np.array_equal(out[strand], crop[strand])
    # Nothing else samples the strand: warping its label map returns it unchanged (no copies).
    assert np.array_equal(kept.apply_labels(strand.astype(np.uint8)), strand.astype(np.uint8))
    # The motion fades out smoothly toward the strand (no tear at its edge).
    rows = slice(int(rig.reference[T.CHIN, 1]) - 60 - mesh.box.y0, int(rig.reference[T.CHIN, 1]) - 20 - mesh.box.y0)
    step = np.abs(np.diff(shift(kept)[rows], axis=1)).max()
    # A smoothstep over the feather has slope 1.5 x the displacement / feather at most.
    assert step < 2.0 * shift(free)[rows].max() / feather

    # The chin still moves down over the background (its patch lands at the driven chin) ...
    size = 6
    src = rig.reference[T.CHIN, :2].round().astype(int) - (0, 10)
    dst = (src + (driven[T.CHIN, :2] - rig.reference[T.CHIN, :2])).round().astype(int)
    patch = lambda img, p: img[p[1] - size:p[1] + size, p[0] - size:p[0] + size].astype(float)
    assert np.abs(patch(out, dst) - patch(crop, src)).mean() < 0.5 * np.abs(patch(out, src) - patch(crop, src)).mean()
    # ... while background that would only sample background (the free warp bends it) stays.
    edge = int(rig.reference[T.CHIN, 1]) + 4
    rows = np.arange(mesh.box.y0, mesh.box.y1)[:, None]
    deep = (rows >= edge + feather) & (free.map_y >= edge + feather + 1)
    assert deep.sum() > 200 and shift(free)[deep].max() > 1
    assert np.array_equal(out[mesh.box.slices][deep], crop[mesh.box.slices][deep])


def test_keep_mask_must_be_built_for_the_mesh_box(setup):
    crop, rig, mesh = setup
    strand, behind = strand_and_background(crop.shape, rig, mesh.box)
    other = Box(mesh.box.x0 + 1, mesh.box.y0, mesh.box.x1, mesh.box.y1)
    keep = KeepMask.build(strand, behind, 4.0, other)
    with pytest.raises(ValueError, match="KeepMask.build"):
        mesh.field(rig.drive(params(jaw=1.0)), 1.5, keep=keep)
    with pytest.raises(ValueError, match="same shape"):
        KeepMask.build(strand, behind[:10], 4.0, mesh.box)


def test_paste_reach_stops_the_motion_where_the_paste_back_fades(setup):
    """The paste-back shows the crop only in part within ~2 feathers of the crop border and of
    kept (unchanged) hair, so the warp must not move those pixels: moved and unmoved texture
    averaged there is a ghost. Farther in, the motion is the free warp's."""
    crop, rig, mesh = setup
    strand, _ = strand_and_background(crop.shape, rig, mesh.box)
    feather, paste = 0.05 * rig.frame.iod, 12.0
    driven = rig.drive(params(jaw=1.0))
    plain = mesh.field(driven, 1.5, keep=KeepMask.build(strand, None, feather, mesh.box))
    pasted = mesh.field(driven, 1.5, keep=KeepMask.build(strand, None, feather, mesh.box, paste_feather=paste))
    shift = lambda f: np.hypot(f.map_x - np.arange(mesh.box.x0, mesh.box.x1),
                               f.map_y - np.arange(mesh.box.y0, mesh.box.y1)[:, None])
    size = crop.shape[0]
    ys, xs = np.mgrid[mesh.box.y0:mesh.box.y1, mesh.box.x0:mesh.box.x1]
    edge = np.minimum(np.minimum(xs, size - 1 - xs), np.minimum(ys, size - 1 - ys))
    dist = np.minimum(edge, cv2.distanceTransform((~strand).astype(np.uint8), cv2.DIST_L2, 5)[mesh.box.slices])
    near, far = dist <= paste, dist >= 2 * paste
    assert (near & (shift(plain) > 0.5)).sum() > 50, "the free warp should move pixels near the border/strand"
    assert shift(pasted)[near].max() == 0.0
    assert np.array_equal(pasted.apply(crop)[mesh.box.slices][near], crop[mesh.box.slices][near])
    assert np.allclose(shift(pasted)[far], shift(plain)[far], atol=1e-4)


def test_points_inside_a_polygon_agree_with_opencv():
    """The vectorised even-odd test that picks the opening's triangles says what
    cv2.pointPolygonTest(...) > 0 says, for simple and self-crossing polygons."""
    from segtalker_core.procedural.warp import _strictly_inside

    rng = np.random.default_rng(7)
    for sort in (True, False):  # star-shaped, then crossing itself
        for _ in range(40):
            n = int(rng.integers(3, 30))
            angles = rng.uniform(0, 2 * np.pi, n)
            angles = np.sort(angles) if sort else angles
            radii = rng.uniform(20, 100, n)
            polygon = np.stack([200 + radii * np.cos(angles), 200 + radii * np.sin(angles)], 1).astype(np.float32)
            points = rng.uniform(50, 350, (300, 2))
            expected = [cv2.pointPolygonTest(polygon, (float(x), float(y)), False) > 0 for x, y in points]
            np.testing.assert_array_equal(_strictly_inside(points, polygon), expected)
