"""Face landmarks of the frames under evaluation, from the pack's built-in face mesh, and the
measures read off them: mouth opening, face scale, landmark distance (LMD)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..face import mesh_topology as mesh
from ..face.detect import LARGEST_FACE, NUM_LANDMARKS, FaceMeshDetector, select_face

# Inner-lip point pairs facing each other across the opening (corners left out).
_GAP_UPPER = mesh.LIPS_INNER_UPPER[1:-1]
_GAP_LOWER = mesh.LIPS_INNER_LOWER[1:-1]
_EYE_OUTER = (mesh.RIGHT_EYE_CORNERS[0], mesh.LEFT_EYE_CORNERS[0])  # 33, 263


@dataclass(frozen=True)
class ClipLandmarks:
    """Per frame the chosen face's landmarks ``points [N, 478, 2]`` (frame px; NaN where
    ``found`` is False)."""

    points: np.ndarray
    found: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.points)
        assert self.points.shape == (n, NUM_LANDMARKS, 2), self.points.shape
        assert self.found.shape == (n,) and self.found.dtype == np.bool_, self.found.shape

    def __len__(self) -> int:
        return len(self.points)

    def take(self, indices: np.ndarray) -> "ClipLandmarks":
        return ClipLandmarks(self.points[indices], self.found[indices])


TRACKER_WARMUP = 5  # passes over the first frame before its mesh is kept


def detect_landmarks(frames: Iterable[np.ndarray], face_index: int = LARGEST_FACE,
                     video: bool = True) -> ClipLandmarks:
    """The face mesh of each ``[H, W, 3]`` uint8 frame (tracked across frames when ``video``)."""
    points, found = [], []
    with FaceMeshDetector(video=video) as detector:
        for i, frame in enumerate(frames):
            if video and i == 0:
                # The tracker's first mesh is fitted in the detector's box, later ones in a box from
                # the previous mesh; the first frames then drift for a few frames (a still clip's
                # mouth "closing" by 25%, which correlates with speech starting). Settle it first.
                for _ in range(TRACKER_WARMUP):
                    detector.detect(frame, "frame 0")
            face = select_face(detector.detect(frame, f"frame {i}"), face_index)
            found.append(face is not None)
            points.append(face.landmarks[:, :2] if face is not None
                          else np.full((NUM_LANDMARKS, 2), np.nan, np.float32))
    if not points:
        return ClipLandmarks(np.empty((0, NUM_LANDMARKS, 2), np.float32), np.empty(0, bool))
    return ClipLandmarks(np.stack(points).astype(np.float32), np.array(found, bool))


def face_scale(points: np.ndarray) -> np.ndarray:
    """Outer eye-corner distance ``[...]`` of ``points [..., 478, 2]``, px (the face's size)."""
    a, b = points[..., _EYE_OUTER[0], :], points[..., _EYE_OUTER[1], :]
    return np.linalg.norm(a - b, axis=-1)


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Mean gap between the inner lips ``[...]`` in eye-corner distances (0 closed, ~0.3 wide
    open), of ``points [..., 478, 2]``; NaN where the points are."""
    upper = points[..., list(_GAP_UPPER), :]
    lower = points[..., list(_GAP_LOWER), :]
    gap = np.linalg.norm(upper - lower, axis=-1).mean(axis=-1)
    return gap / np.maximum(face_scale(points), 1e-6)


def landmark_distance(a: np.ndarray, b: np.ndarray, indices: tuple[int, ...] | None = None,
                      per_face: bool = False) -> np.ndarray:
    """LMD: mean Euclidean distance between corresponding points of ``a``, ``b`` ``[N, 478, 2]``
    per frame ``[N]``, in px, or (``per_face``) in percent of ``b``'s eye-corner distance.
    ``indices``: the points compared (None: all 478)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = face_scale(b)
    if indices is not None:
        a, b = a[:, list(indices)], b[:, list(indices)]
    distance = np.linalg.norm(a - b, axis=-1).mean(axis=-1)
    return 100.0 * distance / np.maximum(scale, 1e-6) if per_face else distance
