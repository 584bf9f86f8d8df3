"""The built-in parser: region geometry on a real portrait, sides, mouth, bad input."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.face import mesh_topology as T
from segtalker_core.face.aligned import align_faces
from segtalker_core.labels import BISENET_19
from segtalker_core.parsing.landmark_parser import LandmarkParser, LandmarkParserSettings

S = 512
ID = {name: i for i, name in enumerate(BISENET_19)}


@pytest.fixture(scope="module")
def aligned():
    return align_faces(skimage.data.astronaut()[None], crop_size=S)


@pytest.fixture(scope="module")
def parser():
    with LandmarkParser() as p:
        yield p


@pytest.fixture(scope="module")
def labels(parser, aligned):
    out = parser.parse(aligned.crops, aligned.landmarks)
    assert out.shape == (1, S, S) and out.dtype == np.uint8
    return out[0]


def _centre(labels: np.ndarray, name: str) -> np.ndarray:
    ys, xs = np.nonzero(labels == ID[name])
    assert len(xs) > 0, f"no {name} pixels"
    return np.array([xs.mean(), ys.mean()])


def _area(labels: np.ndarray, name: str) -> int:
    return int((labels == ID[name]).sum())


def test_face_features_are_where_faces_have_them(labels):
    nose = _centre(labels, "nose")
    l_eye, r_eye = _centre(labels, "l_eye"), _centre(labels, "r_eye")
    l_brow, r_brow = _centre(labels, "l_brow"), _centre(labels, "r_brow")
    u_lip, l_lip = _centre(labels, "u_lip"), _centre(labels, "l_lip")
    for eye in (l_eye, r_eye):
        assert eye[1] < nose[1]  # eyes above the nose
    assert r_eye[0] < nose[0] < l_eye[0]  # ... on either side of it
    assert l_brow[1] < l_eye[1] and r_brow[1] < r_eye[1]  # brows above the eyes
    assert abs(l_brow[0] - l_eye[0]) < 40 and abs(r_brow[0] - r_eye[0]) < 40
    assert nose[1] < u_lip[1] < l_lip[1]  # lips below the nose, upper above lower
    assert abs(u_lip[0] - nose[0]) < 20
    hair_rows = np.nonzero((labels == ID["hair"]).any(axis=1))[0]
    assert hair_rows.min() < min(l_brow[1], r_brow[1]) - 100  # hair above the brows


def test_left_right_labels_follow_the_person_side(labels):
    """Documented convention: l_* is the person's left = the image right."""
    assert _centre(labels, "l_eye")[0] > S / 2 > _centre(labels, "r_eye")[0]
    assert _centre(labels, "l_brow")[0] > S / 2 > _centre(labels, "r_brow")[0]


def test_skin_is_the_largest_face_region(labels):
    face_parts = ["skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip"]
    areas = {name: _area(labels, name) for name in face_parts}
    assert max(areas, key=areas.get) == "skin"
    assert areas["skin"] > 0.15 * S * S  # the FFHQ crop is mostly face


def test_body_regions(labels, aligned):
    chin_y = aligned.landmarks[0, T.CHIN, 1]
    hair = labels == ID["hair"]
    neck = labels == ID["neck"]
    rows = np.arange(S)[:, None]
    assert hair.sum() > 0.1 * S * S
    assert not (hair & (rows > chin_y + 2)).any()  # never below the chin
    mouth_corner_y = aligned.landmarks[0, list(T.MOUTH_CORNERS), 1].mean()
    assert neck.sum() > 0 and (np.nonzero(neck)[0] > mouth_corner_y - 2).all()  # under the jaw
    assert np.nonzero(neck)[0].mean() > chin_y  # mostly under the chin
    # The black collar under the astronaut's neck is clothing, not neck.
    collar = aligned.crops[0].max(axis=-1) < 40
    low = rows > chin_y
    collar_on_person = collar & low & (labels > 0)
    assert ((labels == ID["cloth"]) & collar_on_person).sum() > 0.8 * collar_on_person.sum()
    # The grey studio wall in the top corners is background.
    assert (labels[:20, :20] == 0).all() and (labels[:20, -20:] == 0).all()


def test_open_mouth_has_an_interior_between_the_lips(labels):
    """The astronaut smiles with her teeth showing: MediaPipe sees the lips apart."""
    mouth = _centre(labels, "mouth")
    assert _area(labels, "mouth") > 200
    assert _centre(labels, "u_lip")[1] < mouth[1] < _centre(labels, "l_lip")[1]


def test_closed_mouth_has_no_interior(parser, aligned):
    closed = aligned.landmarks.copy()
    # Close the lips: the inner lower contour onto the inner upper one (and the outer lower
    # contour up by the same amount, as a closing jaw does).
    gap = closed[0, list(T.LIPS_INNER_LOWER), :] - closed[0, list(T.LIPS_INNER_UPPER), :]
    closed[0, list(T.LIPS_INNER_LOWER), :] -= gap
    closed[0, list(T.LIPS_OUTER_LOWER[1:-1]), 1] -= gap[1:-1, 1]
    out = parser.parse(aligned.crops, closed)[0]
    assert _area(out, "mouth") == 0
    assert _area(out, "u_lip") > 0 and _area(out, "l_lip") > 0


def test_faceless_slot_is_all_background(parser, aligned):
    crops = np.concatenate([np.zeros_like(aligned.crops), aligned.crops])
    landmarks = np.concatenate([np.full_like(aligned.landmarks, np.nan), aligned.landmarks])
    out = parser.parse(crops, landmarks)
    assert (out[0] == 0).all() and (out[1] > 0).any()


def test_collapsed_landmarks_warn_and_give_background(parser, aligned, caplog):
    collapsed = np.full_like(aligned.landmarks, 100.0)
    with caplog.at_level("WARNING", logger="segtalker"):
        out = parser.parse(aligned.crops, collapsed)
    assert "crop 0: degenerate" in caplog.text and "labelled as background" in caplog.text
    assert (out == 0).all()


def test_other_crop_sizes_give_the_same_map(parser, labels):
    small = align_faces(skimage.data.astronaut()[None], crop_size=256)
    out = parser.parse(small.crops, small.landmarks)[0]
    down = cv2.resize(labels, (256, 256), interpolation=cv2.INTER_NEAREST)
    assert (out == down).mean() > 0.93
    for name in ("l_eye", "r_eye", "nose", "u_lip", "l_lip", "skin"):
        assert abs(_area(out, name) * 4 - _area(labels, name)) < 0.2 * _area(labels, name), name


def test_without_selfie_only_the_face_is_drawn(aligned, labels):
    with LandmarkParser(LandmarkParserSettings(use_selfie=False)) as p:
        out = p.parse(aligned.crops, aligned.landmarks)[0]
    assert _area(out, "neck") == 0 and _area(out, "cloth") == 0
    for name in ("nose", "l_eye", "r_eye", "u_lip", "mouth"):
        assert (out == ID[name]).sum() == (labels == ID[name]).sum(), name


def test_bad_input_is_refused_with_the_reason(parser, aligned):
    with pytest.raises(ValueError, match="square RGB crops"):
        parser.parse(aligned.crops[:, :, :500], aligned.landmarks)
    with pytest.raises(TypeError, match="uint8"):
        parser.parse(aligned.crops.astype(np.float32), aligned.landmarks)
    with pytest.raises(ValueError, match="landmarks must be"):
        parser.parse(aligned.crops, aligned.landmarks[:, :468])
