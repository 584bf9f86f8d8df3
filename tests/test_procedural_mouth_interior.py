"""Mouth interior: cavity and teeth drawn only in the opening, teeth follow their jaw."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.mouth_interior import analyse_mouth, extract_source_teeth
from segtalker_core.procedural.mouth_segmentation import polygon_mask
from segtalker_core.procedural.renderer import RenderOptions, SourceFace
from segtalker_core.procedural.warp import Box
from test_procedural_common import astronaut, closed_astronaut, iod, params


def luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def opening(landmarks: np.ndarray, erode: int = 0) -> np.ndarray:
    mask = polygon_mask(landmarks[list(T.MOUTH_OPENING), :2], Box(0, 0, 512, 512))
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1,) * 2, np.uint8))
    return mask > 0


@pytest.fixture(scope="module")
def closed() -> SourceFace:
    return SourceFace(*closed_astronaut(), RenderOptions(blink=False))


def test_teeth_are_found_only_where_they_show():
    crop, landmarks, _ = astronaut()
    smile = analyse_mouth(crop, landmarks, iod(landmarks))
    assert smile.score > 0.8 and smile.teeth.sum() > 0.5 * smile.opening.sum()
    crop, landmarks, _ = closed_astronaut()
    assert analyse_mouth(crop, landmarks, iod(landmarks)).score == 0.0


def test_smile_teeth_hang_from_the_upper_jaw():
    crop, landmarks, _ = astronaut()
    mouth = analyse_mouth(crop, landmarks, iod(landmarks))
    teeth = extract_source_teeth(crop, mouth, iod(landmarks), np.zeros(2))
    assert teeth is not None
    # The smile shows the upper row: nearly all of its teeth pixels go with the upper jaw.
    assert (teeth.upper * mouth.teeth).sum() > 0.8 * mouth.teeth.sum()
    assert teeth.rgb.min() > 0.6  # bright, near-white teeth colour


def test_interior_is_drawn_only_in_and_around_the_opening(closed):
    source = closed
    p = params(jaw=0.7, teeth=1.0)
    driven = source.rig.drive(p)
    warped = source.mesh.field(driven, source.smooth).apply(source.crop)
    out = source.interior.composite(warped.copy(), driven, source.rig.jaw_offset(p)[0], 1.0)
    changed = np.any(out != warped, axis=-1)
    inside = opening(driven)
    near = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert changed[inside].mean() > 0.95
    assert not changed[~near].any()
    # Soft edge: just outside the polygon some pixels are partly blended.
    ring = near & ~inside
    assert 0 < changed[ring].mean() < 1


def test_teeth_visibility_brightens_the_opening(closed):
    p_hidden, p_shown = params(jaw=0.6, teeth=0.0), params(jaw=0.6, teeth=1.0)
    inside = opening(closed.rig.drive(p_shown), erode=2)
    dark = luma(closed.frame(p_hidden).crop)[inside].mean()
    bright = luma(closed.frame(p_shown).crop)[inside].mean()
    assert bright > dark + 20
    assert dark < 100  # a dark cavity when the lips hide the teeth


def test_lower_teeth_move_with_the_jaw_upper_teeth_stay(closed):
    def bright_rows(jaw):
        p = params(jaw=jaw, teeth=1.0)
        out = closed.frame(p).crop
        inside = opening(closed.rig.drive(p), erode=2)
        rows = np.nonzero((luma(out) > 150) & inside)[0]
        return rows

    small, large = bright_rows(0.5), bright_rows(1.0)
    # Upper teeth: the top of the bright band stays; lower teeth: the bottom goes down.
    assert abs(int(small.min()) - int(large.min())) <= 3
    drop = 0.5 * closed.rig.config.jaw_drop * closed.iod
    assert large.max() - small.max() > 0.6 * drop


def test_source_teeth_are_reused(closed):
    crop, landmarks, regions = astronaut()
    smile = SourceFace(crop, landmarks, regions, RenderOptions(blink=False))
    assert smile.interior.source is not None
    synthetic = SourceFace(crop, landmarks, regions, RenderOptions(blink=False, teeth_source="synthetic"))
    assert synthetic.interior.source is None
    # Re-opening the smile to its own opening shows its own teeth where the source showed them.
    p = smile.rig.reference_params
    mouth = analyse_mouth(crop, landmarks, iod(landmarks))
    teeth = np.zeros(crop.shape[:2], bool)
    teeth[mouth.box.slices] = mouth.teeth
    teeth &= opening(smile.rig.drive(p), erode=2)
    own = np.abs(smile.frame(p).crop[teeth].astype(float) - crop[teeth]).mean()
    drawn = np.abs(synthetic.frame(p).crop[teeth].astype(float) - crop[teeth]).mean()
    assert own < 12 and own < 0.5 * drawn
