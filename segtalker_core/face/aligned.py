"""Frames in, aligned face crops out: detection + FFHQ alignment + temporal smoothing + warping."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..containers import invert_affine
from ..progress import Progress, report_progress
from .align import (
    affine_to_similarity,
    ffhq_similarity,
    fit_frame_affine,
    similarity_to_affine,
    transform_points,
    warp_crop,
)
from .detect import LARGEST_FACE, NUM_LANDMARKS, FaceMeshDetector, select_face
from .image import to_rgb_uint8_batch
from .smoothing import OneEuroSmoother, Smoothing, smooth_similarity, smoothing_radius


@dataclass
class AlignedFaces:
    """One slot per input frame. Frames without a face: ``found`` False, crop zeros, landmarks
    NaN, transform = the whole frame scaled into the crop (:func:`.align.fit_frame_affine`)."""

    crops: np.ndarray  # [N, S, S, 3] uint8
    landmarks: np.ndarray  # [N, 478, 3] float32, crop pixels
    transforms: np.ndarray  # [N, 2, 3] float64, frame pixels -> crop pixels
    found: np.ndarray  # [N] bool
    frame_landmarks: np.ndarray  # [N, 478, 3] float32, frame pixels (unsmoothed detections)
    frame_size: tuple[int, int]  # (height, width) of the input frames

    def __post_init__(self) -> None:
        n, s = len(self.crops), self.crop_size
        assert self.crops.shape == (n, s, s, 3) and self.crops.dtype == np.uint8, self.crops.shape
        assert self.landmarks.shape == (n, NUM_LANDMARKS, 3), self.landmarks.shape
        assert self.frame_landmarks.shape == (n, NUM_LANDMARKS, 3), self.frame_landmarks.shape
        assert self.transforms.shape == (n, 2, 3), self.transforms.shape
        assert self.found.shape == (n,) and self.found.dtype == np.bool_, self.found.shape

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[1])

    @property
    def inverse_transforms(self) -> np.ndarray:
        """``[N, 2, 3]`` crop pixels -> frame pixels."""
        return invert_affine(self.transforms)


def align_faces(
    frames,
    crop_size: int = 512,
    face_index: int = LARGEST_FACE,
    video: bool = False,
    smoothing: Smoothing | str | None = None,
    detector: FaceMeshDetector | None = None,
    progress: Progress = None,
    *,
    device=None,
    dtype=None,
) -> AlignedFaces:
    """Detect, choose, align and crop one face per frame.

    ``frames``: ``[N, H, W, 3]`` uint8 (any layout/dtype :func:`.image.to_rgb_uint8_batch`
    accepts). ``face_index``: ``-1`` largest face, ``k >= 0`` the k-th from the image left.
    ``video``: frames are consecutive (MediaPipe tracking; Gaussian smoothing by default).
    ``smoothing``: a :class:`.smoothing.Smoothing`, a method name, or ``None`` for the default
    (``"gaussian"`` for video, ``"none"`` otherwise). ``detector``: reuse a detector across calls
    (its own video/image mode is used; the caller closes it). ``progress(done, total)`` is called
    after each frame. ``device`` / ``dtype``: where and in which precision the face networks of
    the detector made here run (default: the CPU in float32); a given ``detector`` keeps its
    own, and naming them beside it is an error.
    """
    if crop_size < 16:
        raise ValueError(f"crop_size must be at least 16 px, got {crop_size}")
    rgb = to_rgb_uint8_batch(frames, "frames")
    settings = Smoothing.coerce(smoothing, video)
    owned = detector is None
    if not owned and (device is not None or dtype is not None):
        raise ValueError("align_faces: device/dtype choose where the detector made here runs; "
                         "a given detector runs where it was made (pass one or the other)")
    detector = detector or FaceMeshDetector(video=video, device=device, dtype=dtype)
    try:
        frame_landmarks, found = _detect(rgb, detector, face_index, progress)
    finally:
        if owned:
            detector.close()
    params = smooth_similarity(_similarities(frame_landmarks, found), found, settings)
    return _aligned(rgb, frame_landmarks, found, params, crop_size)


class StreamingAligner:
    """:func:`align_faces` for a video that arrives in chunks, smoothing across the chunks.

    A frame's smoothed crop depends on the frames up to the smoothing radius after it, so each
    :meth:`push` returns the frames whose neighbourhood is complete and holds back the last few
    (``radius`` frames) until the next chunk or :meth:`flush`. The frames already returned stay
    as left context. The result equals one :func:`align_faces` call over the whole video (to
    float rounding), so the crop never jumps where one chunk ends and the next begins.
    ``detector`` is the caller's video-mode detector (its tracking carries over too).
    """

    def __init__(
        self, detector: FaceMeshDetector, crop_size: int = 512, face_index: int = LARGEST_FACE,
        smoothing: Smoothing | str | None = None,
    ) -> None:
        if crop_size < 16:
            raise ValueError(f"crop_size must be at least 16 px, got {crop_size}")
        self.detector = detector
        self.crop_size = crop_size
        self.face_index = face_index
        self.settings = Smoothing.coerce(smoothing, True)
        self._one_euro = OneEuroSmoother(self.settings) if self.settings.method == "one_euro" else None
        self.radius = smoothing_radius(self.settings)
        self._frames: list[np.ndarray] = []  # pending input frames [H, W, 3]
        self._landmarks = np.empty((0, NUM_LANDMARKS, 3), np.float32)  # pending detections
        self._found = np.empty(0, bool)
        self._raw = np.empty((0, 4))  # pending similarity parameters, unsmoothed
        self._context_raw = np.empty((0, 4))  # the last `radius` frames already returned
        self._context_found = np.empty(0, bool)

    def push(self, frames, progress: Progress = None) -> tuple[np.ndarray, AlignedFaces] | None:
        """Add consecutive frames ``[n, H, W, 3]``; the frames now final (``[k, H, W, 3]`` uint8
        and their alignment), or None."""
        rgb = to_rgb_uint8_batch(frames, "frames")
        landmarks, found = _detect(rgb, self.detector, self.face_index, progress)
        self._frames.extend(rgb)
        self._landmarks = np.concatenate([self._landmarks, landmarks])
        self._found = np.concatenate([self._found, found])
        self._raw = np.concatenate([self._raw, _similarities(landmarks, found)])
        return self._release(len(self._frames) - self.radius)

    def flush(self) -> tuple[np.ndarray, AlignedFaces] | None:
        """The frames still held back (the end of the video), or None."""
        return self._release(len(self._frames))

    def _release(self, count: int) -> tuple[np.ndarray, AlignedFaces] | None:
        if count <= 0:
            return None
        k = len(self._context_raw)
        raw = np.concatenate([self._context_raw, self._raw])
        found = np.concatenate([self._context_found, self._found])
        if self._one_euro is not None:
            smoothed = self._one_euro(self._raw[:count], self._found[:count])
        else:
            smoothed = smooth_similarity(raw, found, self.settings)[k : k + count]
        rgb = np.stack(self._frames[:count])
        out = _aligned(rgb, self._landmarks[:count], self._found[:count], smoothed, self.crop_size)
        # Left context for the next release: the last `radius` frames returned so far.
        keep = self.radius
        self._context_raw = np.concatenate([self._context_raw, self._raw[:count]])[max(0, len(self._context_raw) + count - keep):]
        self._context_found = np.concatenate([self._context_found, self._found[:count]])[max(0, len(self._context_found) + count - keep):]
        del self._frames[:count]
        # The frames held back are views into the caller's chunk, which they would keep alive
        # whole until the next release: keep copies of the few, and let the chunk go.
        self._frames = [f.copy() if f.base is not None else f for f in self._frames]
        self._landmarks, self._found, self._raw = self._landmarks[count:], self._found[count:], self._raw[count:]
        return rgb, out


def _detect(rgb: np.ndarray, detector: FaceMeshDetector, face_index: int, progress: Progress) -> tuple[np.ndarray, np.ndarray]:
    """Per frame the chosen face's landmarks ``[N, 478, 3]`` (frame px, NaN: none) and ``found [N]``."""
    n = len(rgb)
    frame_landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    for i in range(n):
        face = select_face(detector.detect(rgb[i], name=f"frames[{i}]"), face_index)
        if face is not None:
            frame_landmarks[i] = face.landmarks
            found[i] = True
        report_progress(progress, i + 1, n)
    return frame_landmarks, found


def _similarities(frame_landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``[N, 4]`` FFHQ crop similarity per frame (zeros where there is no face)."""
    params = np.zeros((len(found), 4))
    for i in np.flatnonzero(found):
        params[i] = ffhq_similarity(frame_landmarks[i]).as_array()
    return params


def _aligned(
    rgb: np.ndarray, frame_landmarks: np.ndarray, found: np.ndarray, params: np.ndarray, crop_size: int,
) -> AlignedFaces:
    """Crops and crop-space landmarks of frames whose (smoothed) similarities are known."""
    n, height, width = rgb.shape[:3]
    transforms = np.empty((n, 2, 3))
    transforms[:] = fit_frame_affine((height, width), crop_size)
    transforms[found] = similarity_to_affine(params[found], crop_size)
    crops = np.zeros((n, crop_size, crop_size, 3), dtype=np.uint8)
    landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
    for i in np.flatnonzero(found):
        crops[i] = warp_crop(rgb[i], transforms[i], crop_size)
        landmarks[i] = transform_points(frame_landmarks[i], transforms[i])
    return AlignedFaces(
        crops=crops,
        landmarks=landmarks,
        transforms=transforms,
        found=found,
        frame_landmarks=frame_landmarks,
        frame_size=(height, width),
    )


def crop_similarity(aligned: AlignedFaces) -> np.ndarray:
    """``[N, 4]`` (cx, cy, half, angle) of each crop square in frame pixels."""
    return affine_to_similarity(aligned.transforms, aligned.crop_size)
