"""Face-mesh detection on a real portrait, and every kind of awkward input."""
from __future__ import annotations

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.face import mesh_topology as T
from segtalker_core.face.aligned import align_faces
from segtalker_core.face.detect import FaceMeshDetector, select_face


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def detector():
    with FaceMeshDetector() as det:
        yield det


@pytest.fixture(scope="module")
def reference(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    return faces[0].landmarks


@pytest.fixture(scope="module")
def face_crop(astronaut):
    """A 256 px aligned crop: a face that fills the image."""
    return align_faces(astronaut[None], crop_size=256).crops[0]


def _mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean())


def test_astronaut_landmarks(reference):
    assert reference.shape == (478, 3) and reference.dtype == np.float32
    # The face of skimage's astronaut lies within x 170..280, y 60..190 of the 512 px image.
    xy = reference[:, :2]
    assert (xy[:, 0] > 165).all() and (xy[:, 0] < 285).all()
    assert (xy[:, 1] > 55).all() and (xy[:, 1] < 195).all()
    # Person-side names: MediaPipe's LEFT eye/brow/iris are on the image right.
    assert reference[list(T.LEFT_EYE), 0].mean() > reference[list(T.RIGHT_EYE), 0].mean() + 25
    assert reference[list(T.LEFT_BROW), 0].mean() > reference[list(T.RIGHT_BROW), 0].mean() + 25
    assert reference[T.LEFT_IRIS_CENTER, 0] > reference[T.RIGHT_IRIS_CENTER, 0] + 25
    # Vertical order of the features.
    brow_y = reference[list(T.LEFT_BROW + T.RIGHT_BROW), 1].mean()
    eye_y = reference[list(T.LEFT_EYE + T.RIGHT_EYE), 1].mean()
    assert brow_y < eye_y < reference[T.NOSE_TIP, 1] < reference[list(T.MOUTH_POINTS), 1].mean()
    assert reference[T.MOUTH_POINTS, 1].max() < reference[T.CHIN, 1]
    # z is scaled like x: the nose tip is nearer (smaller z) than the cheeks, by some pixels.
    assert reference[T.NOSE_TIP, 2] < reference[list(T.CHEEK_EXTREMES), 2].mean() - 20


@pytest.mark.parametrize("kind", ["grey", "noise"])
def test_frames_without_a_face(detector, kind):
    rng = np.random.default_rng(0)
    image = (np.full((256, 320, 3), 128, np.uint8) if kind == "grey"
             else rng.integers(0, 256, (256, 320, 3), dtype=np.uint8))
    assert detector.detect(image) == []
    out = align_faces(image[None], crop_size=64, detector=detector)
    assert out.found.tolist() == [False] and len(out) == 1


def test_several_faces_largest_by_default_or_by_index(detector, face_crop, caplog):
    small = cv2.resize(face_crop, (160, 160), interpolation=cv2.INTER_AREA)
    canvas = np.full((256, 160 + 40 + 256, 3), 120, np.uint8)
    canvas[48:208, :160] = small  # small face on the left
    canvas[:, 200:] = face_crop  # large face on the right
    faces = detector.detect(canvas)
    assert len(faces) == 2
    assert faces[0].center_x < faces[1].center_x  # returned left to right
    assert select_face(faces).center_x > 200  # largest: the right one
    assert select_face(faces, 0).center_x < 160  # index 0: the left one
    assert select_face(faces, 1).center_x > 200
    with caplog.at_level("WARNING", logger="segtalker"):
        assert select_face(faces, 2) is None
    assert "face_index=2 asks for face number 3 from the left, but only 2 face(s) were found" in caplog.text
    with pytest.raises(ValueError, match="face_index"):
        select_face(faces, -2)
    # Through align_faces: the chosen face is the one in the crop.
    largest = align_faces(canvas[None], crop_size=128, detector=detector)
    left = align_faces(canvas[None], crop_size=128, face_index=0, detector=detector)
    assert largest.frame_landmarks[0, :, 0].mean() > 200
    assert left.frame_landmarks[0, :, 0].mean() < 160


def test_grey_rgba_and_16_bit_inputs_give_the_same_landmarks(detector, astronaut, reference):
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], axis=-1)
    sixteen = astronaut.astype(np.uint16) * 257
    unit_float = astronaut.astype(np.float32) / 255.0
    for image in (grey, grey[..., None], rgba, sixteen, unit_float):
        faces = detector.detect(image)
        assert len(faces) == 1
        assert _mean_error(faces[0].landmarks, reference) < 1.5


def test_huge_image_is_detected_on_a_downscaled_copy(detector, astronaut, reference):
    scale = 4000 / 512
    huge = cv2.resize(astronaut, (4000, 4000), interpolation=cv2.INTER_LINEAR)
    faces = detector.detect(huge)
    assert len(faces) == 1
    # Landmarks come back in the huge image's pixels.
    assert _mean_error(faces[0].landmarks / scale, reference) < 1.5
    assert faces[0].landmarks[:, 0].max() > 1500


def test_tiny_image_is_upscaled_with_a_warning(detector, face_crop, caplog):
    tiny = cv2.resize(face_crop, (48, 48), interpolation=cv2.INTER_AREA)
    with caplog.at_level("WARNING", logger="segtalker"):
        faces = detector.detect(tiny, name="thumbnail")
    assert "thumbnail is only 48x48 px; upscaling x5.3 for face detection" in caplog.text
    assert len(faces) == 1
    xy = faces[0].landmarks[:, :2]
    assert (xy > -2).all() and (xy < 50).all()  # in the tiny image's own pixels
    # Eyes still where they are in the 256 px crop, scaled (FFHQ crop: eyes near y = 0.47).
    eye_y = xy[list(T.LEFT_EYE + T.RIGHT_EYE), 1].mean()
    assert abs(eye_y - 0.47 * 48) < 3


def test_too_tiny_image_is_refused(detector):
    with pytest.raises(ValueError, match="12x10 px"):
        detector.detect(np.zeros((10, 12, 3), np.uint8), name="image")


def test_small_face_in_a_wide_frame_is_found_by_the_window_search(astronaut, reference):
    frame = np.full((720, 1280, 3), 128, np.uint8)
    frame[104:616, 700:1212] = astronaut  # face ~100 px wide: under 8 % of the frame width
    with FaceMeshDetector(search_small=False) as plain:
        assert plain.detect(frame) == []
    with FaceMeshDetector() as det:
        faces = det.detect(frame)
    assert len(faces) == 1
    assert _mean_error(faces[0].landmarks - np.float32([700, 104, 0]), reference) < 1.5


def test_video_detector_tracks_a_small_face_across_frames(astronaut, reference):
    frames = []
    for dx in (0, 4, 8):
        frame = np.full((720, 1280, 3), 128, np.uint8)
        frame[104:616, 600 + dx:1112 + dx] = astronaut
        frames.append(frame)
    with FaceMeshDetector(video=True) as det:
        found = [det.detect(f) for f in frames]
    for dx, faces in zip((0, 4, 8), found):
        assert len(faces) == 1
        assert _mean_error(faces[0].landmarks - np.float32([600 + dx, 104, 0]), reference) < 2.0


def _count_detector_calls(det: FaceMeshDetector) -> list[int]:
    """Counts the face detector's forwards of ``det``'s whole-frame (tracking) landmarker."""
    landmarker = det._model(window=False)
    calls, detect = [0], landmarker._detect

    def counted(*args, **kwargs):
        calls[0] += 1
        return detect(*args, **kwargs)

    landmarker._detect = counted
    return calls


def test_video_tracking_runs_the_detector_every_nth_frame_with_the_same_landmarks(face_crop):
    """While a face is tracked, the detector looks for more faces every ``redetect_every``-th
    frame only; the tracked face's landmarks do not depend on it (they come from its own
    previous landmarks), and a second face that walks in is found within that many frames."""
    small = cv2.resize(face_crop, (160, 160), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(12):
        frame = np.full((256, 160 + 40 + 256, 3), 120, np.uint8)
        frame[:, 200 + i % 3:456 + i % 3] = face_crop[:, : 256 - i % 3] if i % 3 else face_crop
        if i >= 6:  # from frame 6 on, a second (smaller) face on the left
            frame[48:208, :160] = small
        frames.append(frame)
    results, calls = {}, {}
    for every in (1, 5):
        with FaceMeshDetector(video=True, redetect_every=every) as det:
            counter = _count_detector_calls(det)
            results[every] = [det.detect(f) for f in frames]
            calls[every] = counter[0]
    assert calls[1] == 12 and calls[5] == 3, calls  # frames 0, 5, 10
    for i in range(12):
        assert len(results[1][i]) == (2 if i >= 6 else 1), (i, len(results[1][i]))
        right_1 = [f for f in results[1][i] if f.center_x > 200][0].landmarks
        right_5 = [f for f in results[5][i] if f.center_x > 200][0].landmarks
        # The tracked face: the same up to rounding (one face or two in the mesh's forward,
        # then carried on through the next ROIs: 0 up to frame 5, then growing to 0.04 px by
        # frame 11): within 0.1 px.
        np.testing.assert_allclose(right_1, right_5, rtol=0, atol=0.1)
    # The newcomer (frame 6) is found by the next detection, at frame 10 (at most
    # redetect_every - 1 frames late), and tracked from there.
    assert [len(faces) for faces in results[5]] == [1] * 10 + [2] * 2


def test_bad_detector_settings_are_refused():
    with pytest.raises(ValueError, match="max_faces"):
        FaceMeshDetector(max_faces=0)
    with pytest.raises(ValueError, match="redetect_every"):
        FaceMeshDetector(video=True, redetect_every=0)
    with pytest.raises(ValueError, match="min_confidence"):
        FaceMeshDetector(min_confidence=2.0)


def test_importing_the_face_package_does_not_load_mediapipe():
    code = ("import sys, segtalker_core.face, segtalker_core.parsing.landmark_parser; "
            "print('mediapipe' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_plain_rgb_detection_warns_nothing(astronaut, caplog):
    """Not even MediaPipe's protobuf deprecation notice, which would print on every frame."""
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="segtalker"):
        warnings.simplefilter("error")
        with FaceMeshDetector() as det:  # a fresh graph: the notice comes with the first results
            assert len(det.detect(astronaut)) == 1
    assert not caplog.records
