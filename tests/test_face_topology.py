"""Face-mesh index sets: valid indices, and polygons that are real regions on a real face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.face import mesh_topology as T
from segtalker_core.face.detect import FaceMeshDetector

POLYGONS = ["RIGHT_EYE", "LEFT_EYE", "RIGHT_BROW", "LEFT_BROW", "UPPER_LIP", "LOWER_LIP",
            "MOUTH_OPENING", "LIPS_OUTER", "NOSE_OUTLINE", "FACE_OVAL"]
PATHS = ["LIPS_OUTER_UPPER", "LIPS_OUTER_LOWER", "LIPS_INNER_UPPER", "LIPS_INNER_LOWER",
         "RIGHT_EYE_UPPER", "RIGHT_EYE_LOWER", "LEFT_EYE_UPPER", "LEFT_EYE_LOWER", "JAW",
         "RIGHT_BROW_UPPER", "RIGHT_BROW_LOWER", "LEFT_BROW_UPPER", "LEFT_BROW_LOWER",
         "NOSE_BRIDGE", "NOSE_BASE", "RIGHT_IRIS", "LEFT_IRIS", "CHIN_CONTOUR"]


@pytest.fixture(scope="module")
def landmarks():
    with FaceMeshDetector() as det:
        faces = det.detect(skimage.data.astronaut())
    assert len(faces) == 1
    return faces[0].landmarks[:, :2] * 4  # x4: polygon areas of hundreds of pixels


@pytest.mark.parametrize("name", POLYGONS + PATHS)
def test_indices_are_valid_and_not_repeated(name):
    indices = getattr(T, name)
    assert all(0 <= i < T.NUM_POINTS for i in indices)
    assert len(set(indices)) == len(indices)


@pytest.mark.parametrize("name", POLYGONS)
def test_polygons_are_simple_regions_on_a_real_face(landmarks, name):
    polygon = landmarks[list(getattr(T, name))].astype(np.float32)
    area = abs(cv2.contourArea(polygon))
    canvas = np.zeros((2048, 2048), np.uint8)
    cv2.fillPoly(canvas, [np.round(polygon).astype(np.int32)], 1)
    # A self-crossing polygon has a signed area well below the area it fills.
    assert area > 500 and area > 0.85 * canvas.sum()


def _inside(landmarks: np.ndarray, polygon: tuple[int, ...], point: np.ndarray) -> bool:
    contour = landmarks[list(polygon)].astype(np.float32)
    return cv2.pointPolygonTest(contour, tuple(float(v) for v in point), False) >= 0


def test_features_sit_inside_each_other_as_on_a_face(landmarks):
    assert _inside(landmarks, T.RIGHT_EYE, landmarks[T.RIGHT_IRIS_CENTER])
    assert _inside(landmarks, T.LEFT_EYE, landmarks[T.LEFT_IRIS_CENTER])
    assert _inside(landmarks, T.NOSE_OUTLINE, landmarks[T.NOSE_TIP])
    assert _inside(landmarks, T.LIPS_OUTER, landmarks[list(T.MOUTH_OPENING)].mean(0))
    for name in POLYGONS[:-1]:
        for point in landmarks[list(getattr(T, name))]:
            assert _inside(landmarks, T.FACE_OVAL, point), name
    upper = landmarks[list(T.UPPER_LIP)].mean(0)
    lower = landmarks[list(T.LOWER_LIP)].mean(0)
    assert upper[1] < lower[1]
    assert landmarks[T.UPPER_LIP_TOP, 1] < landmarks[T.UPPER_LIP_BOTTOM, 1]
    assert landmarks[T.LOWER_LIP_TOP, 1] < landmarks[T.LOWER_LIP_BOTTOM, 1]


def test_documented_image_sides(landmarks):
    centre_x = landmarks[list(T.FACE_OVAL), 0].mean()
    for name, side in T.IMAGE_SIDE.items():
        x = landmarks[list(getattr(T, name)), 0].mean()
        assert (x > centre_x) == (side == "image right"), name
    left_corner, right_corner = T.MOUTH_CORNERS
    assert landmarks[left_corner, 0] < landmarks[right_corner, 0]  # listed image-left first


def test_points_helper_keeps_order_and_batch_axes(landmarks):
    batch = np.stack([landmarks, landmarks + 1])
    out = T.points(batch, T.MOUTH_CORNERS)
    assert out.shape == (2, 2, 2)
    np.testing.assert_array_equal(out[1, 0], landmarks[T.MOUTH_CORNERS[0]] + 1)
