"""The tracked face's working copy is shrunk only around its ROI: exactly the pixels the whole
frame's INTER_AREA shrink gives there, so a 1080p video's landmarks are bit-identical."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core.face import detect as detect_module
from segtalker_core.face.area_resize import PartialAreaResize
from segtalker_core.face.detect import FaceMeshDetector


@pytest.mark.parametrize("frame_size, size", [
    ((1920, 1080), (1280, 720)),  # 2/3
    ((3840, 2160), (1280, 720)),  # 1/3
    ((1440, 1080), (1280, 960)),  # 8/9
    ((1300, 800), (1280, 788)),   # 64/65 across, 197/200 down
])
@pytest.mark.parametrize("box", [(300.4, 200.7, 900.2, 700.9), (-50, -20, 130, 90),
                                 (1000, 600, 5000, 5000), (7, 3, 9, 5)])
def test_the_box_equals_the_whole_frame_shrink(frame_size, size, box):
    frame = np.random.default_rng(sum(frame_size)).integers(0, 256, (frame_size[1], frame_size[0], 3), np.uint8)
    whole = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    part = PartialAreaResize(frame_size, size)(frame, box)
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(size[0], int(np.ceil(box[2]))), min(size[1], int(np.ceil(box[3])))
    np.testing.assert_array_equal(part[y0:y1, x0:x1], whole[y0:y1, x0:x1])


def test_a_box_outside_the_frame_changes_nothing():
    shrink = PartialAreaResize((1920, 1080), (1280, 720))
    out = shrink(np.full((1080, 1920, 3), 200, np.uint8), (-40, -40, -10, -10))
    assert not out.any()


def test_a_bigger_output_is_refused():
    with pytest.raises(ValueError, match="within the frame size"):
        PartialAreaResize((640, 480), (1280, 720))


def _video_1080p(n: int) -> list[np.ndarray]:
    """The astronaut's face, 720 px, moving across a 1080p frame: a face the mesh tracks (the
    whole-frame detector finds faces wider than about 12 % of the frame)."""
    from segtalker_core.face.aligned import align_faces

    crop = align_faces(skimage.data.astronaut()[None], crop_size=256).crops[0]
    face = cv2.resize(crop, (720, 720), interpolation=cv2.INTER_CUBIC)
    frames = []
    for i in range(n):
        frame = np.full((1080, 1920, 3), 90, np.uint8)
        frame[180 + 5 * i:900 + 5 * i, 600 + 9 * i:1320 + 9 * i] = face
        frames.append(frame)
    return frames


def test_a_tracked_1080p_video_gives_the_landmarks_of_whole_working_copies(monkeypatch):
    frames = _video_1080p(8)
    used = []
    real = FaceMeshDetector._tracking_copy

    def counted(self, rgb):
        work = real(self, rgb)
        used.append(work is not None)
        return work

    monkeypatch.setattr(FaceMeshDetector, "_tracking_copy", counted)
    with FaceMeshDetector(video=True) as det:
        partial = [det.detect(f)[0].landmarks for f in frames]
    monkeypatch.setattr(FaceMeshDetector, "_tracking_copy", lambda self, rgb: None)
    with FaceMeshDetector(video=True) as det:
        whole = [det.detect(f)[0].landmarks for f in frames]
    # Frame 0 and frame 5 run the detector (redetect_every 5 while fewer than max_faces are
    # tracked) and need the whole copy; the others mesh the tracked ROI only.
    assert used == [False, True, True, True, True, False, True, True]
    for a, b in zip(partial, whole):
        np.testing.assert_array_equal(a, b)


def test_rois_box_holds_every_corner_of_a_rotated_roi():
    roi = np.array([[0.5, 0.4, 0.2, 0.3, np.pi / 6]])
    x0, y0, x1, y1 = detect_module._rois_box(roi, (1000, 500), margin=0.0)
    cx, cy, half_w, half_h = 500.0, 200.0, 100.0, 75.0
    cos, sin = np.cos(np.pi / 6), np.sin(np.pi / 6)
    corners = [(cx + cos * u - sin * v, cy + sin * u + cos * v)
               for u in (-half_w, half_w) for v in (-half_h, half_h)]
    xs, ys = zip(*corners)
    np.testing.assert_allclose([x0, y0, x1, y1], [min(xs), min(ys), max(xs), max(ys)], atol=1e-9)
