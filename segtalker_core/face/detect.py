"""Face-mesh detection with MediaPipe (478 landmarks per face, in frame pixels).

:class:`FaceMeshDetector` wraps ``mediapipe.solutions.face_mesh.FaceMesh`` (the model ships in the
``mediapipe==0.10.14`` wheel; nothing is downloaded). One detector is reused across the frames of
a video: in ``video=True`` mode MediaPipe tracks the face from the previous frame's landmarks
(faster, steadier); in image mode every frame is detected from scratch.

Image size policy:

* frames whose longer side exceeds ``max_side`` (default 1280) are detected on a downscaled copy;
  MediaPipe returns normalised coordinates, so landmarks scale back to the full frame exactly;
* frames whose shorter side is below ``min_side`` (64) are upscaled so that side becomes 256 and a
  warning says the landmarks are coarse; frames below ``MIN_USABLE_SIDE`` (16 px) are refused
  with ``ValueError``: no face is recognisable there.

Face choice when several are present: ``face_index=-1`` (default) takes the largest face (by the
area of its landmark bounding box); ``face_index=k >= 0`` takes the k-th face counted from the
image left (by bounding-box centre x). A missing index gives no face (with a warning), not an
error, so one frame without the second person does not stop a video.

``mediapipe`` is imported inside the detector, so importing this module stays light.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from .image import to_rgb_uint8

NUM_LANDMARKS = 478
MIN_USABLE_SIDE = 16
LARGEST_FACE = -1


@dataclass(frozen=True)
class DetectedFace:
    """One face: ``landmarks`` float32 ``[478, 3]`` in frame pixels (z scaled like x)."""

    landmarks: np.ndarray

    def __post_init__(self) -> None:
        assert self.landmarks.shape == (NUM_LANDMARKS, 3), self.landmarks.shape

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) bounding box of the landmarks."""
        xy = self.landmarks[:, :2]
        x0, y0 = xy.min(axis=0)
        x1, y1 = xy.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)

    @property
    def center_x(self) -> float:
        x0, _, x1, _ = self.box
        return 0.5 * (x0 + x1)


def select_face(faces: list[DetectedFace], face_index: int = LARGEST_FACE) -> DetectedFace | None:
    """The face to use: the largest for ``-1``, else the ``face_index``-th from the image left."""
    if face_index < LARGEST_FACE:
        raise ValueError(
            f"face_index must be -1 (largest face) or a face number >= 0 counted from the image "
            f"left, got {face_index}"
        )
    if not faces:
        return None
    if face_index == LARGEST_FACE:
        return max(faces, key=lambda face: face.area)
    ordered = sorted(faces, key=lambda face: face.center_x)
    if face_index >= len(ordered):
        warnings.warn(
            f"face_index={face_index} asks for face number {face_index + 1} from the left, but only "
            f"{len(ordered)} face(s) were found; treating the frame as having no face",
            stacklevel=2,
        )
        return None
    return ordered[face_index]


class FaceMeshDetector:
    """Reusable MediaPipe face-mesh detector. Use as a context manager or call :meth:`close`.

    ``video``: track across consecutive frames (feed frames in order); ``max_faces``: how many
    faces MediaPipe looks for (raise it to pick among more people); ``min_confidence``: detection
    (and tracking) score threshold.
    """

    def __init__(
        self,
        video: bool = False,
        max_faces: int = 4,
        min_confidence: float = 0.5,
        max_side: int = 1280,
        min_side: int = 64,
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in 0..1, got {min_confidence}")
        if max_side < min_side or min_side < MIN_USABLE_SIDE:
            raise ValueError(
                f"need {MIN_USABLE_SIDE} <= min_side <= max_side, got min_side={min_side}, "
                f"max_side={max_side}"
            )
        self.video = video
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.max_side = max_side
        self.min_side = min_side
        self._mesh = None

    def _model(self):
        if self._mesh is None:
            from mediapipe.python.solutions import face_mesh  # heavy: only when detecting

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=not self.video,
                max_num_faces=self.max_faces,
                refine_landmarks=True,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
            )
        return self._mesh

    def detect(self, image: np.ndarray, name: str = "image") -> list[DetectedFace]:
        """All faces in one image (any layout :func:`to_rgb_uint8` accepts), left to right."""
        rgb = to_rgb_uint8(image, name)
        height, width = rgb.shape[:2]
        work = self._working_copy(rgb, name)
        result = self._model().process(work)
        faces = []
        for face in result.multi_face_landmarks or ():
            normalised = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
            if len(normalised) != NUM_LANDMARKS:
                raise RuntimeError(
                    f"MediaPipe returned {len(normalised)} landmarks instead of {NUM_LANDMARKS}; "
                    f"is mediapipe==0.10.14 installed (refined irises)?"
                )
            # MediaPipe normalises x by width and y by height, and gives z "in roughly the same
            # scale as x": multiplying by the full frame's size undoes any resize we made.
            scale = np.array([width, height, width], dtype=np.float32)
            faces.append(DetectedFace(landmarks=normalised * scale))
        return sorted(faces, key=lambda face: face.center_x)

    def _working_copy(self, rgb: np.ndarray, name: str) -> np.ndarray:
        height, width = rgb.shape[:2]
        short, long = min(height, width), max(height, width)
        if short < MIN_USABLE_SIDE:
            raise ValueError(
                f"{name} is {width}x{height} px; faces cannot be found below {MIN_USABLE_SIDE} px "
                f"on the shorter side. Use a larger image (at least {self.min_side} px recommended)."
            )
        if short < self.min_side:
            factor = 256.0 / short
            warnings.warn(
                f"{name} is only {width}x{height} px; upscaling x{factor:.1f} for face detection "
                f"(landmarks will be coarse; use at least {self.min_side} px for good results)",
                stacklevel=3,
            )
            return _resize(rgb, factor, cv2.INTER_CUBIC)
        if long > self.max_side:
            return _resize(rgb, self.max_side / long, cv2.INTER_AREA)
        return rgb

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: MediaPipe may already be gone
            pass


def _resize(rgb: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=interpolation))
