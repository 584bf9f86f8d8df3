"""Renderer: rest reproduces the source, motion stays in the lower face, an independent face
tracker reads the mouth shapes we asked for, same parameters give the same pixels."""
from __future__ import annotations

import numpy as np
import pytest

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core import builtin
from segtalker_core.containers import FaceTrack
from segtalker_core.procedural.renderer import RenderOptions, SourceFace
from test_procedural_common import astronaut, closed_astronaut, detect, iod, lip_gap, params, psnr

NO_BLINK = RenderOptions(blink=False)


@pytest.fixture(scope="module")
def closed() -> SourceFace:
    return SourceFace(*closed_astronaut(), NO_BLINK)


def test_rest_renders_the_source_exactly(closed):
    crop, _, regions = closed_astronaut()
    frame = closed.frame(params())
    assert np.array_equal(frame.crop, crop)
    assert np.array_equal(frame.regions, regions)


def test_rest_with_tracked_landmarks_is_the_source():
    """Landmarks from the tracker leave closed lips a sub-pixel gap (or overlap) apart; rest
    seals them, which must not visibly change the face."""
    crop, _, regions = closed_astronaut()
    tracked = detect(crop)
    # Closed as the tracker sees it (whether the few-hundredths-of-a-pixel gap comes out above
    # or below zero depends on how soft the rendered seam is).
    assert abs(lip_gap(tracked)) < 0.02
    out = SourceFace(crop, tracked, regions, NO_BLINK).frame(params()).crop
    assert psnr(out, crop) >= 40.0


def test_motion_stays_in_the_lower_face(closed):
    crop, landmarks, _ = closed_astronaut()
    out = closed.frame(params(jaw=1.0, width=1.0, teeth=1.0)).crop
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
        gaps[name] = lip_gap(detect(closed.frame(p).crop))
    assert gaps["rest"] < 0.03
    assert gaps["sealed"] < 0.04
    assert gaps["open"] > 0.15
    driven = lip_gap(closed.rig.drive(params(jaw=0.8, teeth=0.6)))
    assert gaps["open"] == pytest.approx(driven, abs=0.06)


def test_zero_parameters_close_an_open_source(closed):
    """Rig parameters are absolute: all-zero closes a source with an open mouth (rendered at
    jaw_open 0.8) and the photo's smile. (Silence of a *portrait* is anchored at its own mouth
    before it reaches the rig: see the test below.)"""
    opened = closed.frame(params(jaw=0.8, teeth=1.0))
    assert lip_gap(detect(opened.crop)) > 0.15
    renderer = SourceFace(opened.crop, opened.landmarks, opened.regions, NO_BLINK)
    assert renderer.rig.reference_params[0] > 0.6
    rest = renderer.frame(params())
    assert lip_gap(detect(rest.crop)) < 0.04
    assert (rest.regions == L.region_index("mouth_interior")).sum() == 0
    # The photo's smile closes too.
    smile = SourceFace(*astronaut(), NO_BLINK)
    assert lip_gap(detect(smile.frame(params()).crop)) < 0.04


def _mouth_box(landmarks: np.ndarray) -> tuple[slice, slice]:
    lips = landmarks[list(T.LIPS_OUTER_UPPER + T.LIPS_OUTER_LOWER), :2]
    margin = 0.1 * iod(landmarks)
    (x0, y0), (x1, y1) = lips.min(0) - margin, lips.max(0) + margin
    return np.s_[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1]


def test_portrait_silence_is_the_source_and_speech_moves_from_it(closed):
    """Silence shows the source's own mouth (an open-mouth render, the photo's smile with teeth);
    speech opens it further and a bilabial closure still seals it."""
    opened = closed.frame(params(jaw=0.6, teeth=0.5))
    rest = builtin.ArticulationTrack.REST
    # silence (0.24 s: a rest, not a pause inside speech); an open vowel (lips apart: closure 0);
    # a bilabial (lips pressed).
    track = np.stack([rest] * 6 + [rest + params(jaw=0.5, closure=-rest[3]), rest + params(jaw=0.05, closure=0.15)])
    n = len(track)
    for crop, landmarks, regions in ((opened.crop, opened.landmarks, opened.regions), astronaut()):
        faces = _track([crop], [landmarks], [regions])
        clip = list(builtin.iter_talking_segmentation(faces, track, 25.0, np.zeros(n, int), blink=False))
        crops = [c for c, _ in builtin.iter_synthesize(iter(clip), faces)]
        box = _mouth_box(landmarks)
        for t in range(3):  # the rest, away from the speech: the source itself
            assert np.array_equal(crops[t], crop) and psnr(crops[t][box], crop[box]) == np.inf
            assert np.array_equal(clip[t].regions, regions)
        assert lip_gap(landmarks) > 0.1
        assert lip_gap(clip[-2].landmarks) > lip_gap(landmarks) + 0.05
        assert psnr(crops[-2][box], crop[box]) < 30.0
        assert lip_gap(clip[-1].landmarks) == pytest.approx(0.0, abs=1e-3)
        assert (clip[-1].regions == L.region_index("mouth_interior")).sum() == 0


def test_same_parameters_give_the_same_pixels(closed):
    p = params(jaw=0.55, width=-0.3, round_=0.4, closure=0.2, teeth=0.7)
    first = closed.frame(p).crop
    assert np.array_equal(first, closed.frame(p).crop)
    again = SourceFace(*closed_astronaut(), NO_BLINK)
    assert np.array_equal(first, again.frame(p).crop)
    assert not np.array_equal(first, closed.frame(params(jaw=0.56, width=-0.3, round_=0.4, closure=0.2, teeth=0.7)).crop)


def _track(crops, landmarks, regions) -> FaceTrack:
    """A face track of aligned crops (frames = crops, identity transforms)."""
    n = len(crops)
    return FaceTrack(
        frames=np.stack(crops), crops=np.stack(crops), labels=L.REGIONS_TO_BISENET[np.stack(regions)].astype(np.uint8),
        landmarks=np.stack(landmarks), transforms=np.tile(np.eye(2, 3), (n, 1, 1)), found=np.ones(n, bool),
    )


def test_talking_segmentation_of_a_clip_with_blinks():
    faces = _track(*[[x] for x in closed_astronaut()])
    frames = 150  # 6 s at 25 fps: at least one blink
    p = np.zeros((frames, 5))
    p[:, 0] = 0.3 * (1 + np.sin(np.arange(frames) / 3.0)) / 2
    clip = list(builtin.iter_talking_segmentation(faces, p, 25.0, np.zeros(frames, int), blink=True, seed=1))
    assert len(clip) == frames
    closure = np.array([f.eye_closure for f in clip])
    assert closure.max() == 1.0
    shut = int(np.argmax(closure))
    eyes = L.region_index("eyes")
    assert (clip[shut].regions == eyes).sum() < 0.2 * (clip[0].regions == eyes).sum()
    source = SourceFace(*closed_astronaut(), RenderOptions(blink=True, blink_seed=1))
    # The segmentation's pose is the renderer's pose for the same parameters and blink.
    again = source.frame(clip[shut].params, float(closure[shut]))
    assert np.array_equal(again.regions, clip[shut].regions)
    crops = [crop for crop, _ in builtin.iter_synthesize(iter(clip[shut : shut + 1]), faces)]
    assert np.array_equal(crops[0], again.crop)


def test_dubbing_renders_each_frame_on_its_own_crop():
    crop, landmarks, regions = closed_astronaut()
    portrait = SourceFace(crop, landmarks, regions, NO_BLINK)
    opened = portrait.frame(params(jaw=0.8, teeth=1.0))
    faces = _track([crop, opened.crop], [landmarks, opened.landmarks], [regions, opened.regions])
    driver = builtin.FrameDriver(faces, portrait=False)
    first = driver.source(0)
    assert np.array_equal(first.frame(params()).crop, crop)
    second = driver.source(1)
    assert second is not first and second.palette is first.palette  # teeth colours of the first frame
    assert np.array_equal(first.frame(params(jaw=0.6, teeth=1.0)).crop, portrait.frame(params(jaw=0.6, teeth=1.0)).crop)
    # A frame that already shows an open mouth is re-driven from its own closed rest.
    assert lip_gap(second.frame(params()).landmarks) == pytest.approx(0.0, abs=1e-3)


def test_bad_inputs_are_named():
    crop, landmarks, regions = closed_astronaut()
    with pytest.raises(TypeError, match="uint8"):
        SourceFace(crop.astype(np.float32), landmarks, regions)
    with pytest.raises(ValueError, match="square"):
        SourceFace(crop[:, :500], landmarks, regions)
    with pytest.raises(ValueError, match="merge_to_regions"):
        SourceFace(crop, landmarks, np.full_like(regions, 17))
    with pytest.raises(ValueError, match="no face"):
        SourceFace(crop, np.full_like(landmarks, np.nan), regions, NO_BLINK)
    with pytest.raises(ValueError, match="teeth_source"):
        RenderOptions(teeth_source="photo")
    with pytest.raises(ValueError, match="params"):
        SourceFace(crop, landmarks, regions, NO_BLINK).drive(np.zeros(4))


def test_any_crop_size_gives_the_same_motion(closed):
    crop, landmarks, regions = closed_astronaut()
    half = SourceFace(
        crop[::2, ::2].copy(), landmarks / 2, regions[::2, ::2].copy(), NO_BLINK
    )
    p = params(jaw=0.8, width=0.5, teeth=1.0)
    interior = L.region_index("mouth_interior")
    big = (closed.frame(p).regions == interior).sum()
    small = (half.frame(p).regions == interior).sum()
    assert small == pytest.approx(big / 4, rel=0.15)
    np.testing.assert_allclose(half.rig.drive(p)[:, :2], closed.rig.drive(p)[:, :2] / 2, atol=1e-3)


def test_a_fuller_lower_lip_shades_its_border_and_a_thinner_one_does_not(closed):
    """A lower lip the pose makes thicker than the source's (sealing from a dropped jaw) gets a
    soft shadow along its outer border, strongest just below it on the chin; at the source's
    own thickness, or thinner (the jaw opening a closed source), nothing changes."""
    from segtalker_core.procedural.mouth_shading import lower_lip_shadow

    opened = closed.frame(params(jaw=0.8, teeth=1.0))
    source = SourceFace(opened.crop, opened.landmarks, opened.regions, NO_BLINK)
    reference = source.rig.reference
    sealed = source.rig.drive(params(jaw=0.8, teeth=1.0, closure=1.0))
    outer, inner = list(T.LIPS_OUTER_LOWER), list(T.LIPS_INNER_LOWER)
    thickness = lambda p: float(np.linalg.norm(p[outer[5], :2] - p[inner[5], :2]))  # noqa: E731
    assert thickness(sealed) > 1.3 * thickness(reference)
    crop = source.crop.copy()
    lower_lip_shadow(crop, sealed, reference, source.iod)
    change = crop.astype(np.float64) - source.crop
    assert change.max() <= 0  # only darker
    x, y = np.round(sealed[outer[5], :2]).astype(int)
    below = change[y + 2 : y + 8, x - 2 : x + 3].mean()
    assert below < -8, below
    assert np.all(change[: int(sealed[list(T.LIPS_OUTER_UPPER), 1].min())] == 0)  # lower face only
    rest = source.crop.copy()
    lower_lip_shadow(rest, reference, reference, source.iod)
    assert np.array_equal(rest, source.crop)
    wide = closed.crop.copy()
    lower_lip_shadow(wide, closed.rig.drive(params(jaw=1.0)), closed.rig.reference, closed.iod)
    assert np.array_equal(wide, closed.crop)
