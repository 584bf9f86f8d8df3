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
from .smoothing import Smoothing, smooth_similarity


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
) -> AlignedFaces:
    """Detect, choose, align and crop one face per frame.

    ``frames``: ``[N, H, W, 3]`` uint8 (any layout/dtype :func:`.image.to_rgb_uint8_batch`
    accepts). ``face_index``: ``-1`` largest face, ``k >= 0`` the k-th from the image left.
    ``video``: frames are consecutive (MediaPipe tracking; Gaussian smoothing by default).
    ``smoothing``: a :class:`.smoothing.Smoothing`, a method name, or ``None`` for the default
    (``"gaussian"`` for video, ``"none"`` otherwise). ``detector``: reuse a detector across calls
    (its own video/image mode is used; the caller closes it). ``progress(done, total)`` is called
    after each frame.
    """
    if crop_size < 16:
        raise ValueError(f"crop_size must be at least 16 px, got {crop_size}")
    rgb = to_rgb_uint8_batch(frames, "frames")
    settings = Smoothing.coerce(smoothing, video)
    n, height, width = rgb.shape[:3]
    owned = detector is None
    detector = detector or FaceMeshDetector(video=video)
    frame_landmarks = np.full((n, NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    try:
        for i in range(n):
            face = select_face(detector.detect(rgb[i], name=f"frames[{i}]"), face_index)
            if face is not None:
                frame_landmarks[i] = face.landmarks
                found[i] = True
            report_progress(progress, i + 1, n)
    finally:
        if owned:
            detector.close()

    params = np.zeros((n, 4))
    for i in np.flatnonzero(found):
        params[i] = ffhq_similarity(frame_landmarks[i]).as_array()
    params = smooth_similarity(params, found, settings)

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
