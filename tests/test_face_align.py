"""FFHQ alignment: the transform maths, and aligned crops of a real portrait."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.containers import invert_affine
from segtalker_core.face import mesh_topology as T
from segtalker_core.face.align import (
    affine_to_similarity,
    ffhq_similarity,
    fit_frame_affine,
    similarity_to_affine,
    transform_points,
)
from segtalker_core.face.aligned import align_faces

S = 512


def _synthetic_face(eye_left, eye_right, mouth) -> np.ndarray:
    """478 points with the eye contours at the two eye centres and the mouth corners at `mouth`."""
    pts = np.zeros((T.NUM_POINTS, 3), dtype=np.float32)
    pts[list(T.RIGHT_EYE), :2] = eye_left  # person's right eye = image left
    pts[list(T.LEFT_EYE), :2] = eye_right
    half_width = np.array([15.0, 0.0])
    pts[T.MOUTH_CORNERS[0], :2] = np.asarray(mouth) - half_width
    pts[T.MOUTH_CORNERS[1], :2] = np.asarray(mouth) + half_width
    return pts


def test_ffhq_recipe_numbers_on_an_upright_face():
    face = _synthetic_face((100, 200), (160, 200), (130, 260))  # eye distance 60, eye-mouth 60
    sim = ffhq_similarity(face)
    assert sim.half == pytest.approx(max(2.0 * 60, 1.8 * 60))
    assert (sim.cx, sim.cy) == pytest.approx((130.0, 200.0 + 0.1 * 60))
    assert sim.angle == pytest.approx(0.0)
    face = _synthetic_face((100, 200), (140, 200), (120, 280))  # long face: mouth term wins
    assert ffhq_similarity(face).half == pytest.approx(1.8 * 80)


@pytest.mark.parametrize("theta", [0.3, -1.0, 2.5])
def test_alignment_rotates_with_the_face(theta):
    face = _synthetic_face((100, 200), (160, 200), (130, 260))
    pivot = np.array([300.0, 100.0])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    turned = face.copy()
    turned[:, :2] = (face[:, :2] - pivot) @ rot.T + pivot
    a, b = ffhq_similarity(face), ffhq_similarity(turned)
    assert b.half == pytest.approx(a.half)
    assert math.remainder(b.angle - a.angle - theta, 2 * math.pi) == pytest.approx(0, abs=1e-6)
    centre = rot @ (np.array([a.cx, a.cy]) - pivot) + pivot
    assert (b.cx, b.cy) == pytest.approx(tuple(centre))
    # ... and the crop sees the same face: landmarks land on the same crop pixels.
    in_crop_a = transform_points(face, similarity_to_affine(a, S))
    in_crop_b = transform_points(turned, similarity_to_affine(b, S))
    np.testing.assert_allclose(in_crop_a[:, :2], in_crop_b[:, :2], atol=1e-3)


def test_crop_square_corners_map_to_crop_edges():
    params = np.array([320.0, 200.0, 150.0, 0.4])
    m = similarity_to_affine(params, S)
    cx, cy, half, angle = params
    x = half * np.array([math.cos(angle), math.sin(angle)])
    y = np.array([-x[1], x[0]])
    corners = np.array([[cx, cy] - x - y, [cx, cy] + x + y])
    np.testing.assert_allclose(transform_points(corners, m), [[-0.5, -0.5], [S - 0.5, S - 0.5]],
                               atol=1e-9)


def test_affine_and_similarity_round_trip():
    rng = np.random.default_rng(0)
    params = np.stack([rng.uniform(0, 1000, 8), rng.uniform(0, 1000, 8), rng.uniform(20, 400, 8),
                       rng.uniform(-3, 3, 8)], axis=1)
    back = affine_to_similarity(similarity_to_affine(params, S), S)
    np.testing.assert_allclose(back, params, atol=1e-9)


def test_z_is_scaled_like_x_and_y():
    m = similarity_to_affine(np.array([0.0, 0.0, 64.0, 0.7]), 256)  # scale 2
    out = transform_points(np.array([[1.0, 2.0, -3.0]]), m)
    assert out[0, 2] == pytest.approx(-6.0)


def test_no_face_transform_is_invertible_and_fits_the_frame():
    m = fit_frame_affine((480, 640), S)
    corners = transform_points(np.array([[-0.5, -0.5], [639.5, 479.5]]), m)
    assert corners[0, 0] == pytest.approx(-0.5) and corners[1, 0] == pytest.approx(S - 0.5)
    assert 0 < corners[0, 1] < corners[1, 1] < S
    assert np.isfinite(invert_affine(m)).all()


def test_nan_landmarks_are_refused():
    face = _synthetic_face((100, 200), (160, 200), (130, 260))
    face[5, 0] = np.nan
    with pytest.raises(ValueError, match="no face"):
        ffhq_similarity(face)


# --- on a real portrait -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def aligned(astronaut):
    return align_faces(astronaut[None], crop_size=S)


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image-left eye, image-right eye) centres."""
    return (landmarks[list(T.RIGHT_EYE), :2].mean(0), landmarks[list(T.LEFT_EYE), :2].mean(0))


def test_crop_has_eyes_level_and_at_ffhq_positions(aligned):
    assert aligned.found.tolist() == [True]
    assert aligned.crops.shape == (1, S, S, 3) and aligned.crops.dtype == np.uint8
    lm = aligned.landmarks[0]
    left, right = _eye_centres(lm)
    mouth = lm[list(T.MOUTH_CORNERS), :2].mean(0)
    assert abs(left[1] - right[1]) < 0.01 * S  # eyes level
    assert 0.36 * S < left[0] < 0.40 * S and 0.60 * S < right[0] < 0.64 * S  # FFHQ: ~0.375/0.625
    assert 0.44 * S < left[1] < 0.50 * S
    assert abs(0.5 * (left[0] + right[0]) - S / 2) < 0.01 * S  # centred
    assert 0.62 * S < mouth[1] < 0.75 * S and abs(mouth[0] - S / 2) < 0.03 * S
    # Every landmark is inside the crop: the face is framed, not cut.
    assert (lm[:, :2] > 0).all() and (lm[:, :2] < S).all()


def test_inverse_transform_round_trips_landmarks_and_pixels(aligned, astronaut):
    inverse = aligned.inverse_transforms[0]
    back = transform_points(aligned.landmarks[0], inverse)
    np.testing.assert_allclose(back, aligned.frame_landmarks[0], atol=1e-3)
    # Pixels: the crop warped back into the frame matches the frame over the face.
    restored = cv2.warpAffine(aligned.crops[0], inverse, (512, 512), flags=cv2.INTER_LINEAR)
    x0, y0 = aligned.frame_landmarks[0, :, :2].min(0).astype(int)
    x1, y1 = aligned.frame_landmarks[0, :, :2].max(0).astype(int)
    diff = np.abs(restored[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 3.0


def test_faceless_frame_keeps_its_slot(astronaut):
    frames = np.stack([np.full_like(astronaut, 128), astronaut])
    out = align_faces(frames, crop_size=128)
    assert out.found.tolist() == [False, True]
    assert (out.crops[0] == 0).all() and out.crops[1].std() > 10
    assert np.isnan(out.landmarks[0]).all() and np.isfinite(out.landmarks[1]).all()
    np.testing.assert_allclose(out.transforms[0], fit_frame_affine((512, 512), 128))
    assert np.isfinite(out.inverse_transforms).all()


def test_video_crops_follow_a_moving_face_and_stay_steady(astronaut):
    shifts = [(3 * i, 2 * i) for i in range(6)]
    frames = np.stack([
        cv2.warpAffine(astronaut, np.float64([[1, 0, dx], [0, 1, dy]]), (512, 512),
                       borderMode=cv2.BORDER_REFLECT_101)
        for dx, dy in shifts
    ])
    out = align_faces(frames, crop_size=256, video=True)
    assert out.found.all()
    centres = affine_to_similarity(out.transforms, 256)[:, :2]
    moved = centres - centres[0]
    np.testing.assert_allclose(moved, np.array(shifts, dtype=float), atol=1.5)
    # In crop space the face barely moves (this is what smoothing + alignment are for).
    eyes = np.array([np.concatenate(_eye_centres(lm)) for lm in out.landmarks])
    assert eyes.std(axis=0).max() < 1.0


def test_bad_crop_size_is_refused(astronaut):
    with pytest.raises(ValueError, match="crop_size"):
        align_faces(astronaut[None], crop_size=8)


def test_device_and_dtype_reach_the_detector_made_here(astronaut, aligned, monkeypatch):
    import torch

    from segtalker_core.face import aligned as aligned_module

    made = []
    original = aligned_module.FaceMeshDetector

    def recording(*args, **kwargs):
        made.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(aligned_module, "FaceMeshDetector", recording)
    out = align_faces(astronaut[None], crop_size=S, device="cpu", dtype=torch.float32)
    assert made == [{"video": False, "device": "cpu", "dtype": torch.float32}]
    np.testing.assert_array_equal(out.crops, aligned.crops)  # the default is the CPU in fp32
    align_faces(astronaut[None], crop_size=S)
    assert made[-1] == {"video": False, "device": None, "dtype": None}


def test_device_beside_a_given_detector_is_refused(astronaut):
    from segtalker_core.face.detect import FaceMeshDetector

    with FaceMeshDetector() as detector, pytest.raises(ValueError, match="device/dtype"):
        align_faces(astronaut[None], crop_size=S, detector=detector, device="cpu")
