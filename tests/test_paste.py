"""Paste-back: round trip fidelity, footprint, seams, 4K bbox-only work, off-frame crops, passthrough."""
from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import skimage.data

from segtalker_core import labels as L
from segtalker_core.face import mesh_topology as T
from segtalker_core.face import paste as P
from segtalker_core.face.align import similarity_to_affine, warp_crop

R = {name: i for i, name in enumerate(L.REGIONS_12)}
# FFHQ crop square of the astronaut's face (centre x, y, half side, angle), found with the
# face-mesh detector once and written down so the tests do not need MediaPipe.
ASTRONAUT_FACE = np.array([225.1, 106.5, 86.6, 0.052])


def synthetic_regions(size: int) -> np.ndarray:
    """A 12-region map laid out like an FFHQ-aligned face (ellipses at the usual places)."""
    m = np.zeros((size, size), np.uint8)

    def ellipse(cx, cy, ax, ay, region):
        cv2.ellipse(m, (round(cx * size), round(cy * size)),
                    (max(round(ax * size), 1), max(round(ay * size), 1)), 0, 0, 360, R[region], -1)

    ellipse(.5, .30, .33, .22, "hair")
    cv2.rectangle(m, (int(.40 * size), int(.8 * size)), (int(.60 * size), size - 1), R["neck"], -1)
    ellipse(.5, .58, .27, .33, "skin")
    for x in (.373, .623):
        ellipse(x, .41, .07, .015, "brows")
        ellipse(x, .476, .05, .02, "eyes")
    ellipse(.5, .58, .05, .08, "nose")
    ellipse(.5, .735, .125, .04, "lips")
    ellipse(.5, .735, .08, .01, "mouth_interior")
    return m


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def frame_alpha(mask: np.ndarray, matrix: np.ndarray, frame_shape) -> np.ndarray:
    """The mask as it lands in the frame (full-frame warp: fine for a test's reference)."""
    return cv2.warpAffine(mask, matrix, (frame_shape[1], frame_shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


@pytest.fixture(scope="module")
def scene():
    frame = skimage.data.astronaut()
    matrix = similarity_to_affine(ASTRONAUT_FACE, 256)
    crop = warp_crop(frame, matrix, 256)
    regions = synthetic_regions(256)
    return frame, matrix, crop, regions


def paint_mouth(crop: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mouth = np.isin(regions, [R["lips"], R["mouth_interior"]])
    painted = crop.copy()
    painted[mouth] = (20, 40, 220)
    return painted, mouth


@pytest.mark.parametrize("color_correct", [True, False])
def test_unchanged_crop_round_trips(scene, color_correct):
    frame, matrix, crop, regions = scene
    mask = P.face_blend_mask(regions, 4)
    out = P.paste_face(frame, crop, matrix, mask, color_correct=color_correct)
    alpha = frame_alpha(mask, matrix, frame.shape)
    assert psnr(out[alpha > 0.5], frame[alpha > 0.5]) >= 40
    x0, y0, x1, y1 = P.paste_box(matrix, mask, frame.shape[:2])
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside])
    assert out is not frame and np.array_equal(frame, skimage.data.astronaut())  # input kept


def test_changed_crop_changes_only_the_footprint(scene):
    frame, matrix, crop, regions = scene
    painted, mouth = paint_mouth(crop, regions)
    mask = P.face_blend_mask(regions, 4)
    out = P.paste_face(frame, painted, matrix, mask)
    footprint = frame_alpha(mask, matrix, frame.shape) > 0
    footprint = cv2.dilate(footprint.astype(np.uint8), np.ones((3, 3))) > 0  # bicubic support
    changed = np.any(out != frame, axis=-1)
    assert changed.any() and not (changed & ~footprint).any()
    mouth_in_frame = frame_alpha(mouth.astype(np.float32), matrix, frame.shape) > 0.99
    assert np.abs(out[mouth_in_frame].astype(int) - frame[mouth_in_frame]).mean() > 50


def test_band_around_changed_pixels_keeps_the_rest_exact(scene):
    frame, matrix, crop, regions = scene
    painted, mouth = paint_mouth(crop, regions)
    mask = P.face_blend_mask(regions, 4, changed=mouth, band_px=12)
    far = cv2.dilate(mouth.astype(np.uint8), np.ones((31, 31))) == 0
    assert mask[far].max() == 0 and mask[mouth].min() > 0.5
    out = P.paste_face(frame, painted, matrix, mask)
    eyes_in_frame = frame_alpha((regions == R["eyes"]).astype(np.float32), matrix, frame.shape) > 0
    assert np.array_equal(out[eyes_in_frame], frame[eyes_in_frame])


def _seam_and_interior_gradient(frame, out, alpha):
    """Mean gradient of |out - frame| on the mask boundary ring and in the mask interior."""
    diff = np.abs(out.astype(np.float32) - frame.astype(np.float32)).sum(axis=-1)
    grad = np.hypot(cv2.Sobel(diff, cv2.CV_32F, 1, 0), cv2.Sobel(diff, cv2.CV_32F, 0, 1))
    ring = cv2.dilate((alpha > 0).astype(np.uint8), np.ones((5, 5))) > 0
    ring &= ~(cv2.erode((alpha > 0.999).astype(np.uint8), np.ones((5, 5))) > 0)
    interior = cv2.erode((alpha > 0.999).astype(np.uint8), np.ones((9, 9))) > 0
    return grad[ring].mean(), grad[interior].mean()


def test_no_visible_seam_when_the_render_drifts_in_colour(scene):
    frame, matrix, crop, regions = scene
    drifted = np.clip(crop.astype(int) + (30, -12, 18), 0, 255).astype(np.uint8)
    mask = P.face_blend_mask(regions, 4)
    alpha = frame_alpha(mask, matrix, frame.shape)
    out = P.paste_face(frame, drifted, matrix, mask, color_correct=True)
    seam, interior = _seam_and_interior_gradient(frame, out, alpha)
    assert seam <= interior
    inner = alpha > 0.99
    assert np.abs(out[inner].astype(int) - frame[inner]).mean() < 5  # the drift is corrected

    # The measure does see a seam: a hard mask without correction shows one.
    hard = (P.face_blend_mask(regions, 0, erode_px=0) > 0.5).astype(np.float32)
    out_hard = P.paste_face(frame, drifted, matrix, hard, color_correct=False)
    seam_hard, interior_hard = _seam_and_interior_gradient(
        frame, out_hard, frame_alpha(hard, matrix, frame.shape))
    assert seam_hard > 2 * interior_hard


def test_mask_is_zero_at_the_crop_border_and_outside_the_face():
    regions = np.full((128, 128), R["skin"], np.uint8)  # the face fills the whole crop
    mask = P.face_blend_mask(regions, 6)
    assert mask.dtype == np.float32 and 0 <= mask.min() and mask.max() <= 1
    border = np.ones_like(mask, bool)
    border[2:-2, 2:-2] = False
    assert mask[border].max() == 0 and mask[64, 64] == pytest.approx(1.0)

    face = synthetic_regions(256)
    mask = P.face_blend_mask(face, 4)
    by_name = P.face_blend_mask(face, 4, regions=["skin", "lips", "mouth_interior", "nose", "eyes",
                                                  "brows"])
    assert np.array_equal(mask, by_name)
    not_face = ~np.isin(face, P.FACE_REGIONS)
    assert mask[not_face].max() < 0.05 and mask[face == R["nose"]].min() > 0.99


def test_face_oval_limits_spilled_skin():
    regions = synthetic_regions(256)
    regions[225:, 60:200] = R["skin"]  # a parser spilling skin into the neck/collar
    landmarks = np.full((T.NUM_POINTS, 3), 128.0, np.float32)
    angles = np.linspace(-np.pi / 2, 1.5 * np.pi, len(T.FACE_OVAL), endpoint=False)
    landmarks[list(T.FACE_OVAL), 0] = 128 + 70 * np.cos(angles)
    landmarks[list(T.FACE_OVAL), 1] = 148 + 85 * np.sin(angles)
    plain = P.face_blend_mask(regions, 4)
    limited = P.face_blend_mask(regions, 4, landmarks=landmarks)
    assert plain[240, 128] > 0.9 and limited[240, 128] == 0
    assert limited[150, 128] > 0.99  # the face itself stays
    only_oval = P.face_blend_mask(None, 4, landmarks=landmarks, crop_size=256)
    assert only_oval[150, 128] > 0.99 and only_oval[10, 10] == 0


def test_4k_frame_touches_only_the_face_box():
    height, width = 2160, 3840
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 255, width).astype(np.uint8)[None]
    frame[..., 1] = np.linspace(0, 255, height).astype(np.uint8)[:, None]
    frame[..., 2] = 90
    face = cv2.resize(skimage.data.astronaut(), (1536, 1536), interpolation=cv2.INTER_CUBIC)
    frame[300:1836, 1100:2636] = face
    params = ASTRONAUT_FACE * np.array([3, 3, 3, 1]) + np.array([1100, 300, 0, 0])
    matrix = similarity_to_affine(params, 512)
    regions = synthetic_regions(512)
    painted, _ = paint_mouth(warp_crop(frame, matrix, 512), regions)
    mask = P.face_blend_mask(regions, 8)

    original = frame.copy()
    tracemalloc.start()
    out = P.paste_face(frame, painted, matrix, mask, inplace=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # No full-frame work: a float32 copy of the frame alone would be 4x its uint8 size.
    assert peak < 0.5 * frame.nbytes
    assert out is frame
    x0, y0, x1, y1 = P.paste_box(matrix, mask, frame.shape[:2])
    assert (x1 - x0) * (y1 - y0) < 0.05 * height * width
    changed = np.any(out != original, axis=-1)
    assert changed[y0:y1, x0:x1].any()
    changed[y0:y1, x0:x1] = False
    assert not changed.any()


def test_crop_partly_outside_the_frame(scene):
    frame, _, _, regions = scene
    matrix = similarity_to_affine(np.array([40.0, 30.0, 86.6, 0.3]), 256)  # top-left corner
    crop = warp_crop(frame, matrix, 256)  # reflected borders fill the part outside
    mask = P.face_blend_mask(regions, 4)
    x0, y0, x1, y1 = P.paste_box(matrix, mask, frame.shape[:2])
    assert x0 == 0 and y0 == 0 and x1 < 200 and y1 < 200
    out = P.paste_face(frame, crop, matrix, mask)
    alpha = frame_alpha(mask, matrix, frame.shape)
    assert psnr(out[alpha > 0.5], frame[alpha > 0.5]) >= 38
    painted, _ = paint_mouth(crop, regions)
    out = P.paste_face(frame, painted, matrix, mask)
    assert out.shape == frame.shape and (out != frame).any()


def test_passthrough_cases(scene):
    frame, matrix, crop, regions = scene
    zeros = np.zeros((256, 256), np.float32)
    out = P.paste_face(frame, crop, matrix, zeros)
    assert np.array_equal(out, frame) and out is not frame
    far_away = similarity_to_affine(np.array([5000.0, 5000.0, 86.6, 0.0]), 256)
    assert P.paste_box(far_away, P.face_blend_mask(regions, 4), frame.shape[:2]) is None
    assert np.array_equal(P.paste_face(frame, crop, far_away, P.face_blend_mask(regions, 4)), frame)


def test_stream_paste_follows_source_index_and_passes_faceless_frames(scene):
    """pipeline.iter_paste_back: each crop onto the frame its segmentation frame names."""
    from segtalker_core import pipeline
    from segtalker_core.containers import FaceTrack, SegmentationFrame

    frame, matrix, crop, regions = scene
    painted, _ = paint_mouth(crop, regions)
    frames = np.stack([frame, frame[::-1].copy()])
    faces = FaceTrack(
        frames=frames, crops=np.stack([crop, crop]), labels=L.REGIONS_TO_BISENET[np.stack([regions] * 2)].astype(np.uint8),
        landmarks=np.zeros((2, T.NUM_POINTS, 3), np.float32), transforms=np.stack([matrix, matrix]),
        found=np.array([True, False]),
    )
    pairs = [(painted, SegmentationFrame(regions, i)) for i in (0, 1, 0)]
    out = list(pipeline.iter_paste_back(pairs, faces, feather_px=4))
    assert len(out) == 3 and out[0].shape == frame.shape
    assert (out[0] != frame).any() and np.array_equal(out[0], out[2])
    assert np.array_equal(out[1], frames[1])  # no face: passthrough


def test_bad_inputs_name_the_problem(scene):
    frame, matrix, crop, regions = scene
    mask = P.face_blend_mask(regions, 4)
    with pytest.raises(ValueError, match="frame must be an RGB uint8"):
        P.paste_face(frame.astype(np.float32), crop, matrix, mask)
    with pytest.raises(ValueError, match="square"):
        P.paste_face(frame, crop[:, :200], matrix, mask)
    with pytest.raises(ValueError, match="mask must be"):
        P.paste_face(frame, crop, matrix, mask[:100])
    with pytest.raises(ValueError, match="singular"):
        P.paste_face(frame, crop, np.zeros((2, 3)), mask)
    with pytest.raises(ValueError, match="neither"):
        P.face_blend_mask(None, 4, crop_size=64)
    with pytest.raises(ValueError, match="crop_size"):
        P.face_blend_mask(None, 4, landmarks=np.zeros((T.NUM_POINTS, 3)))
