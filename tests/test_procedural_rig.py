"""Landmark rig: articulation parameters move the right points, by the right amounts."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from segtalker_core.face import mesh_topology as T
from segtalker_core.procedural.rig import FaceFrame, MouthRig, check_params
from test_procedural_common import astronaut, closed_astronaut, lip_gap, params

UPPER_FACE = np.array(
    T.LEFT_EYE + T.RIGHT_EYE + T.LEFT_BROW + T.RIGHT_BROW + T.NOSE_OUTLINE + T.NOSE_BRIDGE
    + T.LEFT_IRIS + T.RIGHT_IRIS + (T.FOREHEAD_TOP,)
)


@pytest.fixture(scope="module")
def closed_rig() -> MouthRig:
    return MouthRig.fit(closed_astronaut()[1])


def test_closed_reference_is_its_own_rest(closed_rig):
    assert np.array_equal(closed_rig.reference_params, np.zeros(5))
    np.testing.assert_allclose(closed_rig.rest, closed_rig.reference, atol=1e-3)
    np.testing.assert_allclose(closed_rig.drive(params()), closed_rig.reference, atol=1e-3)


def test_jaw_drops_lower_lip_and_chin_but_not_the_upper_face(closed_rig):
    iod = closed_rig.frame.iod
    drops = []
    for jaw in (0.25, 0.5, 1.0):
        moved = closed_rig.drive(params(jaw=jaw)) - closed_rig.rest
        down = moved[:, :2] @ closed_rig.frame.v_axis / iod
        drops.append(down[[T.LOWER_LIP_TOP, T.LOWER_LIP_BOTTOM, T.CHIN]])
        assert np.abs(moved[UPPER_FACE]).max() == 0.0
    drops = np.array(drops)
    # Lower lip and chin drop together, by the configured amount, proportionally to jaw_open.
    np.testing.assert_allclose(drops[:, 0], [0.075, 0.15, 0.30], atol=1e-6)
    np.testing.assert_allclose(drops[:, 2], drops[:, 0], rtol=0.05)
    # The lips part: the gap grows with the jaw.
    gaps = [lip_gap(closed_rig.drive(params(jaw=j))) for j in (0.0, 0.25, 0.5, 1.0)]
    assert gaps[0] == pytest.approx(0.0, abs=1e-3) and np.all(np.diff(gaps) > 0.05)


def test_jaw_line_follows_less_towards_the_ears(closed_rig):
    moved = closed_rig.drive(params(jaw=1.0)) - closed_rig.rest
    down = moved[:, :2] @ closed_rig.frame.v_axis
    chin, jaw_angle, cheek_top = down[T.CHIN], down[T.JAW[4]], down[T.JAW[0]]
    assert chin > 2.0 * jaw_angle > 0.0
    assert cheek_top < 0.05 * chin


def test_width_moves_mouth_corners_symmetrically(closed_rig):
    frame = closed_rig.frame
    left, right = T.MOUTH_CORNERS
    for width, sign in ((1.0, 1.0), (-1.0, -1.0)):
        moved = closed_rig.drive(params(width=width)) - closed_rig.rest
        sideways = moved[:, :2] @ frame.u_axis / frame.iod
        assert sideways[right] == pytest.approx(sign * 0.07, abs=1e-6)
        assert sideways[left] == pytest.approx(-sign * 0.07, abs=1e-6)
        assert abs(sideways[T.UPPER_LIP_TOP]) < 0.01  # the middle of the lip stays put
        assert np.abs(moved[UPPER_FACE]).max() == 0.0


def test_rounding_narrows_and_protrudes(closed_rig):
    rest, rounded = closed_rig.rest, closed_rig.drive(params(round_=1.0))
    width = lambda lm: np.linalg.norm(lm[T.MOUTH_CORNERS[1], :2] - lm[T.MOUTH_CORNERS[0], :2])
    assert width(rounded) < 0.8 * width(rest)
    assert rounded[T.UPPER_LIP_TOP, 2] < rest[T.UPPER_LIP_TOP, 2] - 0.05 * closed_rig.frame.iod


def test_closure_seals_the_lips_even_with_the_jaw_open(closed_rig):
    sealed = closed_rig.drive(params(jaw=0.3, closure=1.0))
    upper = sealed[list(T.LIPS_INNER_UPPER), :2]
    lower = sealed[list(T.LIPS_INNER_LOWER), :2]
    np.testing.assert_allclose(upper, lower, atol=1e-3)
    # ArticulationTrack's convention: lips free up to 0.3, touching from 0.6.
    open_gap = lip_gap(closed_rig.drive(params(jaw=0.3)))
    assert lip_gap(closed_rig.drive(params(jaw=0.3, closure=0.3))) == pytest.approx(open_gap, rel=1e-4)
    assert lip_gap(closed_rig.drive(params(jaw=0.3, closure=0.45))) == pytest.approx(0.5 * open_gap, rel=1e-3)
    assert lip_gap(closed_rig.drive(params(jaw=0.3, closure=0.6))) == pytest.approx(0.0, abs=1e-3)
    # The jaw itself stays open: the chin is where jaw_open = 0.3 puts it.
    open_ = closed_rig.drive(params(jaw=0.3))
    assert sealed[T.CHIN] == pytest.approx(open_[T.CHIN])


def test_teeth_visible_parts_the_lips_a_little(closed_rig):
    gap = lip_gap(closed_rig.drive(params(teeth=1.0)))
    assert 0.04 < gap < 0.1
    assert lip_gap(closed_rig.drive(params(teeth=1.0, closure=1.0))) == pytest.approx(0.0, abs=1e-3)


def test_open_reference_is_driven_from_a_closed_rest():
    landmarks = astronaut()[1]  # smiling with lips apart
    rig = MouthRig.fit(landmarks, source_teeth=1.0)
    assert lip_gap(landmarks) > 0.1
    assert lip_gap(rig.drive(params())) == pytest.approx(0.0, abs=1e-3)
    assert rig.reference_params[4] == 1.0 and rig.reference_params[0] > 0.1
    # Driving with the estimated parameters gives the reference mouth back (roughly: the split
    # of the gap into jaw and lip retraction is a guess, the total is not).
    again = rig.drive(rig.reference_params)
    assert lip_gap(again) == pytest.approx(lip_gap(landmarks), abs=0.025)
    np.testing.assert_allclose(again[UPPER_FACE], landmarks[UPPER_FACE])


def test_estimated_opening_of_a_rendered_open_mouth(closed_rig):
    opened = closed_rig.drive(params(jaw=0.8))
    rig = MouthRig.fit(opened, source_teeth=0.0)
    assert rig.reference_params[0] == pytest.approx(0.8, abs=0.1)
    np.testing.assert_allclose(rig.rest[:, :2], closed_rig.rest[:, :2], atol=0.02 * rig.frame.iod)


def test_motion_scales_with_face_size(closed_rig):
    small = MouthRig.fit(closed_rig.reference * 0.5)
    p = np.array([[0.7, 0.5, 0.3, 0.0, 0.4]])
    big_motion = closed_rig.drive(p) - closed_rig.rest
    small_motion = small.drive(p) - small.rest
    np.testing.assert_allclose(small_motion, 0.5 * big_motion, atol=1e-3)


def test_face_frame_axes(closed_rig):
    frame = FaceFrame.from_landmarks(closed_rig.reference)
    assert frame.u_axis @ frame.v_axis == pytest.approx(0.0, abs=1e-9)
    assert frame.v_axis[1] > 0.9  # an aligned crop: "down the face" is down the image
    uv = frame.to_face(closed_rig.reference)
    np.testing.assert_allclose(frame.to_crop(uv), closed_rig.reference[:, :2], atol=1e-3)


def test_bad_inputs_are_named(closed_rig, caplog):
    with pytest.raises(ValueError, match="params"):
        closed_rig.drive(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        closed_rig.drive(np.full(5, np.nan))
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        clipped = check_params(np.array([[1.5, 0, 0, 0, 0]]), "params")
    assert "clipped (jaw_open)" in caplog.text
    assert clipped[0, 0] == 1.0
    with pytest.raises(ValueError, match="no face"):
        MouthRig.fit(np.full((478, 3), np.nan))
    with pytest.raises(ValueError, match="478"):
        MouthRig.fit(np.zeros((468, 3)))


def test_reference_params_give_the_reference_back_exactly():
    rig = MouthRig.fit(astronaut()[1], source_teeth=1.0)
    assert np.array_equal(rig.drive(rig.reference_params), rig.reference)
    assert rig.reference_weight(rig.reference_params[None])[0] == 1.0
    # Away from it the residual fades out: all-zero and a seal are the plain rig.
    assert rig.reference_weight(np.stack([params(), params(closure=1.0)])).max() == 0.0
    assert rig.residual_weight(np.stack([params(), params(closure=1.0)])).max() == 0.0
    # Opening further keeps her own mouth shape on top of the rig's motion.
    wider = rig.reference_params.astype(np.float64) + params(jaw=0.5, width=0.3)
    assert rig.residual_weight(wider[None])[0] == 1.0
    assert lip_gap(rig.drive(wider)) > lip_gap(rig.reference) + 0.1
    near = rig.reference_params.astype(np.float64) + params(jaw=0.01)
    step = np.abs(rig.drive(near) - rig.reference).max()
    assert 0.0 < step < 0.05 * rig.frame.iod  # no jump next to the reference pose


def test_silence_is_anchored_at_the_reference_and_speech_opens_from_it():
    from segtalker_core.audio.articulation import ArticulationTrack
    from segtalker_core.procedural.rig import anchor_at_reference

    rest = ArticulationTrack.REST
    reference = params(jaw=0.3, teeth=1.0)
    track = np.stack([
        rest,  # silence
        rest + params(jaw=0.5, width=0.2, closure=-0.8),  # an open vowel
        rest + params(jaw=0.05, closure=0.15),  # a bilabial: pressed lips
        rest + params(jaw=1.0, closure=-0.8),  # the widest
    ])
    out = anchor_at_reference(track, reference, rest)
    np.testing.assert_allclose(out[0], reference)
    assert out[1, 0] == pytest.approx(0.3 + 0.5 * 0.7) and out[1, 1] == pytest.approx(0.2)
    assert out[1, 3] == pytest.approx(0.0, abs=1e-6) and out[2, 3] == pytest.approx(0.95)  # p/b/m seal
    assert out[3, 0] == 1.0
    # ...and a seal is made with the articulation's own small jaw, not her open smile.
    assert out[2, 0] == pytest.approx(0.05) and out[2, 4] == pytest.approx(0.0)


def test_a_dubbed_frame_is_driven_without_its_own_shape():
    from segtalker_core.procedural.rig import RigConfig

    landmarks = astronaut()[1]
    plain = MouthRig.fit(landmarks, RigConfig(keep_reference_shape=False), source_teeth=1.0)
    own = MouthRig.fit(landmarks, source_teeth=1.0)
    assert not plain.residual.any()
    p = own.reference_params.astype(np.float64) + params(jaw=0.3)
    np.testing.assert_allclose(plain.drive(p), own.drive(p) - own.residual.astype(np.float32), atol=1e-3)
