"""Renderer: rest reproduces the source, motion stays in the lower face, an independent face
tracker reads the mouth shapes we asked for, same parameters give the same pixels."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.renderer import (
    DubbingRenderer, PortraitRenderer, RenderOptions, SourceFace,
)
from test_procedural_common import astronaut, closed_astronaut, detect, iod, lip_gap, params, psnr

NO_BLINK = RenderOptions(blink=False)


@pytest.fixture(scope="module")
def closed() -> PortraitRenderer:
    return PortraitRenderer(*closed_astronaut(), NO_BLINK)


def test_rest_renders_the_source_exactly(closed):
    crop, _, regions = closed_astronaut()
    frame = closed.frame(params())
    assert np.array_equal(frame.crop, crop)
    assert np.array_equal(frame.regions, regions)


def test_rest_with_tracked_landmarks_is_the_source():
    """Landmarks from the tracker leave a sub-pixel gap between closed lips; rest seals it,
    which must not visibly change the face."""
    crop, _, regions = closed_astronaut()
    tracked = detect(crop)
    assert 0 < lip_gap(tracked) < 0.02
    out = PortraitRenderer(crop, tracked, regions, NO_BLINK).render(params())
    assert psnr(out, crop) >= 40.0


def test_motion_stays_in_the_lower_face(closed):
    crop, landmarks, _ = closed_astronaut()
    out = closed.render(params(jaw=1.0, width=1.0, teeth=1.0))
    # Eyes, brows, forehead, nose: bit-identical above the nose base.
    nose = int(landmarks[list(T.NOSE_BASE), 1].min())
    assert np.array_equal(out[:nose], crop[:nose])
    # Outside a band round the mouth and jaw (face oval below the nose, grown by the largest
    # jaw drop) the image is the source.
    scale = iod(landmarks)
    oval = landmarks[list(T.FACE_OVAL), :2]
    x0, x1 = oval[:, 0].min() - 0.15 * scale, oval[:, 0].max() + 0.15 * scale
    y1 = landmarks[T.CHIN, 1] + 0.6 * scale
    band = np.zeros(crop.shape[:2], bool)
    band[nose:int(y1), int(x0):int(x1)] = True
    assert psnr(out, crop, ~band) >= 35.0
    # ...and inside the band things did move.
    assert psnr(out, crop, band) < 25.0


def test_tracker_reads_the_driven_mouth(closed):
    """MediaPipe, run on our renders, sees the mouth opening we drove (and closed when closed)."""
    gaps = {}
    for name, p in {"rest": params(), "open": params(jaw=0.8, teeth=0.6),
                    "sealed": params(jaw=0.3, closure=1.0)}.items():
        gaps[name] = lip_gap(detect(closed.render(p)))
    assert gaps["rest"] < 0.03
    assert gaps["sealed"] < 0.04
    assert gaps["open"] > 0.15
    driven = lip_gap(closed.rig.drive(params(jaw=0.8, teeth=0.6)))
    assert gaps["open"] == pytest.approx(driven, abs=0.06)


def test_open_source_closes_at_rest(closed):
    """A source with an open mouth (rendered at jaw_open 0.8) is closed by silence."""
    opened = closed.frame(params(jaw=0.8, teeth=1.0))
    assert lip_gap(detect(opened.crop)) > 0.15
    renderer = PortraitRenderer(opened.crop, opened.landmarks, opened.regions, NO_BLINK)
    assert renderer.rig.reference_params[0] > 0.6
    rest = renderer.frame(params())
    assert lip_gap(detect(rest.crop)) < 0.04
    assert (rest.regions == L.region_index("mouth_interior")).sum() == 0
    # The photo's smile closes too.
    smile = PortraitRenderer(*astronaut(), NO_BLINK)
    assert lip_gap(detect(smile.render(params()))) < 0.04


def test_same_parameters_give_the_same_pixels(closed):
    p = params(jaw=0.55, width=-0.3, round_=0.4, closure=0.2, teeth=0.7)
    first = closed.render(p)
    assert np.array_equal(first, closed.render(p))
    again = PortraitRenderer(*closed_astronaut(), NO_BLINK)
    assert np.array_equal(first, again.render(p))
    assert not np.array_equal(first, closed.render(params(jaw=0.56, width=-0.3, round_=0.4, closure=0.2, teeth=0.7)))


def test_drive_and_render_a_clip_with_blinks():
    renderer = PortraitRenderer(*closed_astronaut(), RenderOptions(blink=True, blink_seed=1))
    frames = 150  # 6 s at 25 fps: at least one blink
    p = np.zeros((frames, 5))
    p[:, 0] = 0.3 * (1 + np.sin(np.arange(frames) / 3.0)) / 2
    driven = renderer.drive(p, fps=25.0)
    assert driven.eye_closure.max() == 1.0
    shut = int(np.argmax(driven.eye_closure))
    eyes = L.region_index("eyes")
    assert (driven.regions[shut] == eyes).sum() < 0.2 * (driven.regions[0] == eyes).sum()
    rendered = renderer.render_driven(driven, shut)
    assert rendered.shape == (512, 512, 3) and rendered.dtype == np.uint8
    assert np.array_equal(rendered, renderer.render(driven.params[shut], float(driven.eye_closure[shut])))
    assert sum(1 for _ in renderer.iter_render(driven)) == frames


def test_dubbing_renders_each_frame_on_its_own_crop():
    crop, landmarks, regions = closed_astronaut()
    dubber = DubbingRenderer()
    assert np.array_equal(dubber.frame(crop, landmarks, regions, params()).crop, crop)
    palette = dubber.palette
    assert palette is not None
    out = dubber.frame(crop, landmarks, regions, params(jaw=0.6, teeth=1.0))
    assert dubber.palette is palette  # teeth colours fixed after the first frame
    portrait = PortraitRenderer(crop, landmarks, regions, NO_BLINK)
    assert np.array_equal(out.crop, portrait.render(params(jaw=0.6, teeth=1.0)))
    # A frame that already shows an open mouth is re-driven from its own closed rest.
    opened = portrait.frame(params(jaw=0.8, teeth=1.0))
    closed_again = dubber.frame(opened.crop, opened.landmarks, opened.regions, params())
    assert lip_gap(closed_again.landmarks) == pytest.approx(0.0, abs=1e-3)


def test_bad_inputs_are_named():
    crop, landmarks, regions = closed_astronaut()
    with pytest.raises(TypeError, match="uint8"):
        PortraitRenderer(crop.astype(np.float32), landmarks, regions)
    with pytest.raises(ValueError, match="square"):
        PortraitRenderer(crop[:, :500], landmarks, regions)
    with pytest.raises(ValueError, match="merge_to_regions"):
        PortraitRenderer(crop, landmarks, np.full_like(regions, 17))
    with pytest.raises(ValueError, match="no face"):
        SourceFace(crop, np.full_like(landmarks, np.nan), regions, NO_BLINK)
    with pytest.raises(ValueError, match="teeth_source"):
        RenderOptions(teeth_source="photo")
    with pytest.raises(ValueError, match="params"):
        PortraitRenderer(crop, landmarks, regions, NO_BLINK).drive(np.zeros((3, 4)), fps=25.0)


def test_any_crop_size_gives_the_same_motion(closed):
    crop, landmarks, regions = closed_astronaut()
    half = PortraitRenderer(
        crop[::2, ::2].copy(), landmarks / 2, regions[::2, ::2].copy(), NO_BLINK
    )
    p = params(jaw=0.8, width=0.5, teeth=1.0)
    interior = L.region_index("mouth_interior")
    big = (closed.frame(p).regions == interior).sum()
    small = (half.frame(p).regions == interior).sum()
    assert small == pytest.approx(big / 4, rel=0.15)
    np.testing.assert_allclose(half.rig.drive(p)[:, :2], closed.rig.drive(p)[:, :2] / 2, atol=1e-3)
