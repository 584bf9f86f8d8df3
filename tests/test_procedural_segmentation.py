"""Talking segmentation: the mouth area re-shaped per frame, the rest of the map untouched."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.renderer import RenderOptions, SourceFace
from test_procedural_common import astronaut, closed_astronaut, params

INTERIOR = L.region_index("mouth_interior")
LIPS = L.region_index("lips")
SKIN = L.region_index("skin")


@pytest.fixture(scope="module")
def renderer() -> SourceFace:
    return SourceFace(*closed_astronaut(), RenderOptions(blink=False))


def regions(renderer, **kw) -> np.ndarray:
    return renderer.frame(params(**kw), image=False).regions


def test_rest_equals_the_reference_map(renderer):
    assert np.array_equal(regions(renderer), closed_astronaut()[2])


def test_mouth_interior_appears_and_grows_with_the_jaw(renderer):
    areas = [int((regions(renderer, jaw=j) == INTERIOR).sum()) for j in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert areas[0] == 0
    assert all(b > a for a, b in zip(areas, areas[1:])), areas
    iod = renderer.iod
    # A wide "aa": the opening is a sizeable fraction of the mouth.
    assert areas[-1] > 0.1 * iod * iod


def test_closure_leaves_no_interior(renderer):
    assert (regions(renderer, jaw=0.3, closure=1.0) == INTERIOR).sum() == 0
    assert (regions(renderer, jaw=0.3, closure=1.0, teeth=1.0) == INTERIOR).sum() == 0
    assert (regions(renderer, jaw=0.3) == INTERIOR).sum() > 0


def test_lips_frame_the_opening(renderer):
    driven = regions(renderer, jaw=0.8)
    ys, xs = np.nonzero(driven == INTERIOR)
    cx = int(np.median(xs))
    column = driven[:, cx]
    top, bottom = ys[xs == cx].min(), ys[xs == cx].max()
    # Going up from the opening one meets lips, going down too.
    assert LIPS in column[top - 6:top]
    assert LIPS in column[bottom + 1:bottom + 8]


def test_chin_moves_down_and_the_rest_of_the_map_stays(renderer):
    reference = closed_astronaut()[2]
    driven = regions(renderer, jaw=1.0)
    source = renderer
    chin = source.rig.reference[T.CHIN, :2].round().astype(int)
    drop = int(source.rig.config.jaw_drop * source.iod)
    # Below the chin: what was neck/clothing just under the chin is now face skin.
    below = (chin[1] + drop // 2, chin[0])
    assert reference[below] != SKIN and driven[below] == SKIN
    # Outside the warp box nothing changes; above the nose base nothing changes either.
    box = source.mesh.box
    outside = np.ones(reference.shape, bool)
    outside[box.slices] = False
    assert np.array_equal(driven[outside], reference[outside])
    nose = int(source.rig.reference[list(T.NOSE_BASE), 1].min())
    assert np.array_equal(driven[:nose], reference[:nose])


def test_open_reference_closes_and_its_interior_becomes_lips():
    crop, landmarks, reference = astronaut()
    assert (reference == INTERIOR).sum() > 500  # the smile shows the teeth
    renderer = SourceFace(crop, landmarks, reference, RenderOptions(blink=False))
    rest = renderer.frame(params(), image=False).regions
    assert (rest == INTERIOR).sum() == 0
    mouth = renderer.mesh.box
    assert (rest[mouth.slices] == LIPS).sum() > (reference[mouth.slices] == LIPS).sum()


def test_drive_returns_the_map_of_the_frame(renderer):
    pose = renderer.drive(params(jaw=0.5))
    assert pose.regions.shape == (512, 512) and pose.regions.dtype == np.uint8
    assert pose.landmarks.shape == (478, 3)
    assert np.array_equal(pose.regions, regions(renderer, jaw=0.5))


def test_a_hair_thin_opening_is_not_a_mouth_wide_line(renderer):
    # jaw_open 0.002 parts the lips by ~0.1 px: closed for the map, not a 1-px line of interior.
    assert (regions(renderer, jaw=0.002) == INTERIOR).sum() == 0
    # A real (if small) opening does show.
    assert (regions(renderer, jaw=0.05) == INTERIOR).sum() > 0
