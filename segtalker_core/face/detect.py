"""Face-mesh detection (478 landmarks per face, in frame pixels), in PyTorch.

:class:`FaceMeshDetector` runs MediaPipe's face models re-implemented in PyTorch
(:mod:`segtalker_core.face.torch_models`: BlazeFace short range, then the attention face mesh with
refined lips and irises) from the weights shipped in ``segtalker_core/face/weights/``; neither
mediapipe nor TensorFlow is needed, and nothing is downloaded. The results match mediapipe
0.10.14's ``FaceMesh(refine_landmarks=True)`` (``tests/test_torch_face_models.py``). One detector
is reused across the frames of a video: in ``video=True`` mode the face is tracked from the
previous frame's landmarks (faster, steadier), as MediaPipe's solution graph does; in image mode
every frame is detected from scratch.

Image size policy:

* frames whose longer side exceeds ``max_side`` (default 1280) are detected on a downscaled copy;
  the mesh returns normalised coordinates, so landmarks scale back to the full frame exactly;
* small faces: the short-range detector misses faces narrower than ~12 % of the frame's
  long side. When the whole frame gives no face, the detector searches square windows (the
  frame's short side, then half of it, overlapping by half) and maps what it finds back; in video
  mode it first looks in a window around the previous frame's face. This costs extra time only
  on frames where the whole-frame pass found nothing (a faceless 1080p frame: ~25 windows, each
  window size in one batched detector forward); ``search_small=False`` turns it off;
* frames whose shorter side is below ``min_side`` (64) are upscaled so that side becomes 256 and a
  warning says the landmarks are coarse; frames below ``MIN_USABLE_SIDE`` (16 px) are refused
  with ``ValueError``: no face is recognisable there.

Face choice when several are present: ``face_index=-1`` (default) takes the largest face (by the
area of its landmark bounding box); ``face_index=k >= 0`` takes the k-th face counted from the
image left (by bounding-box centre x). A missing index gives no face (with a warning), not an
error, so one frame without the second person does not stop a video. The choice is made per
frame: with two faces of similar size "largest" may switch between them; give an index then.

torch and the models are loaded inside the detector, on its first frame, so importing this module
stays light. ``device`` / ``dtype`` (keyword-only) choose where the networks run (default: the CPU
in float32).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..closing import Closing
from ..logs import get_logger
from .area_resize import PartialAreaResize
from .image import to_rgb_uint8

log = get_logger("face")

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
        log.warning(
            "face_index=%d asks for face number %d from the left, but only %d face(s) were "
            "found; treating the frame as having no face", face_index, face_index + 1, len(ordered),
        )
        return None
    return ordered[face_index]


class FaceMeshDetector(Closing):
    """Reusable face-mesh detector. Use as a context manager or call :meth:`close`.

    ``video``: track across consecutive frames (feed frames in order); ``max_faces``: how many
    faces are looked for (raise it to pick among more people); ``min_confidence``: detection
    (and tracking) score threshold; ``search_small``: look for small faces in windows when the
    whole frame gives none (see the module docstring); ``redetect_every``: video mode, while a
    face is tracked, the face detector looks for further faces on every that many-th frame only
    (default 5, 0.2 s at 25 fps: it costs about a third of a tracked frame, and tracked faces
    follow their own landmarks either way; 1: every frame, as MediaPipe); ``device`` /
    ``dtype``: where and in which precision the networks run.
    """

    def __init__(
        self,
        video: bool = False,
        max_faces: int = 4,
        min_confidence: float = 0.5,
        max_side: int = 1280,
        min_side: int = 64,
        search_small: bool = True,
        *,
        redetect_every: int = 5,
        device=None,
        dtype=None,
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
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
        self.search_small = search_small
        self.redetect_every = redetect_every
        self.device = device
        self.dtype = dtype
        self._mesh = None  # whole frames (tracking in video mode)
        self._window_mesh = None  # windows: always static, they jump around the frame
        self._previous: DetectedFace | None = None  # video: last face seen, for a window search
        self._shrink: PartialAreaResize | None = None  # video: working copies around tracked faces

    def _model(self, window: bool):
        """The whole-frame landmarker, or (video mode) a separate static one for windows."""
        import torch  # heavy: only when detecting

        from .torch_models.landmarker import TorchFaceLandmarker

        def make(static_mode: bool) -> TorchFaceLandmarker:
            return TorchFaceLandmarker(
                video=not static_mode,
                max_faces=self.max_faces,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
                device=self.device if self.device is not None else "cpu",
                dtype=self.dtype if self.dtype is not None else torch.float32,
                redetect_every=1 if static_mode else self.redetect_every,
            )

        if not window or not self.video:
            if self._mesh is None:
                self._mesh = make(not self.video)
            return self._mesh
        if self._window_mesh is None:
            self._window_mesh = make(True)
        return self._window_mesh

    def detect(self, image: np.ndarray, name: str = "image") -> list[DetectedFace]:
        """All faces in one image (any layout :func:`to_rgb_uint8` accepts), left to right."""
        rgb = to_rgb_uint8(image, name)
        height, width = rgb.shape[:2]
        work = self._tracking_copy(rgb)
        if work is None:
            work = self._working_copy(rgb, name)
        faces = self._run(work, window=False, origin=(0.0, 0.0), extent=(width, height))
        if not faces and self.search_small and min(height, width) >= self.min_side:
            if self.video and self._previous is not None:
                faces = self._search_near(rgb, self._previous)
            if not faces:
                faces = self._search_windows(rgb)
        if self.video:
            self._previous = max(faces, key=lambda face: face.area) if faces else None
        return sorted(faces, key=lambda face: face.center_x)

    def _run(self, work: np.ndarray, window: bool, origin: tuple[float, float],
             extent: tuple[float, float]) -> list[DetectedFace]:
        """Run the mesh on ``work``, an image of the frame region ``origin + [0, extent]``."""
        return self._to_frame(self._model(window).process(work), origin, extent)

    @staticmethod
    def _to_frame(normalised_faces: list[np.ndarray], origin: tuple[float, float],
                  extent: tuple[float, float]) -> list[DetectedFace]:
        """Normalised landmarks of the region ``origin + [0, extent]`` -> frame pixels."""
        faces = []
        for normalised in normalised_faces:
            if normalised.shape != (NUM_LANDMARKS, 3):
                raise RuntimeError(
                    f"the face mesh returned landmarks of shape {normalised.shape} instead of "
                    f"({NUM_LANDMARKS}, 3)"
                )
            # Landmarks are normalised as MediaPipe's (x by width, y by height, z like x):
            # scaling by the region's size in the frame undoes any resize we made.
            scale = np.array([extent[0], extent[1], extent[0]], dtype=np.float32)
            offset = np.array([origin[0], origin[1], 0.0], dtype=np.float32)
            faces.append(DetectedFace(landmarks=normalised * scale + offset))
        return faces

    def _search_near(self, rgb: np.ndarray, previous: DetectedFace) -> list[DetectedFace]:
        """Video: look again in a window around where the face was in the previous frame."""
        x0, y0, x1, y1 = previous.box
        side = _FACE_WINDOW_RATIO * max(x1 - x0, y1 - y0)
        centre = (0.5 * (x0 + x1), 0.5 * (y0 + y1))
        return self._run_window(rgb, centre[0] - side / 2, centre[1] - side / 2, side)

    def _search_windows(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Small faces: square windows of the short side, then of half of it, 50 % overlap.

        The short-range detector sees the whole (letterboxed) frame at 128 px and misses
        faces narrower than about 12 % of the long side; a window makes them larger.
        """
        height, width = rgb.shape[:2]
        side = float(min(height, width))
        for _ in range(_WINDOW_LEVELS):
            if side < _SMALLEST_WINDOW:
                break
            windows = list(_windows(height, width, side))
            if len(windows) > 1 or side < min(height, width) or height != width:
                faces = _merge_duplicates(self._run_windows(rgb, windows, side))
                if faces:
                    return faces
            side /= 2.0
        return []

    def _run_window(self, rgb: np.ndarray, x0: float, y0: float, side: float) -> list[DetectedFace]:
        """Faces in the square ``[x0, x0 + side] x [y0, y0 + side]`` of the frame, frame pixels."""
        return self._run_windows(rgb, [(x0, y0)], side)

    def _run_windows(self, rgb: np.ndarray, corners: list[tuple[float, float]],
                     side: float) -> list[DetectedFace]:
        """Faces in squares of one ``side`` at top-left ``corners``: one batched forward each for
        detection and mesh (the windows have one size)."""
        views = [self._window_view(rgb, x0, y0, side) for x0, y0 in corners]
        found = self._model(window=True).process_batch(np.stack([work for work, _, _ in views]))
        faces = []
        for (_, origin, extent), normalised_faces in zip(views, found):
            faces.extend(self._to_frame(normalised_faces, origin, extent))
        return faces

    def _window_view(self, rgb: np.ndarray, x0: float, y0: float, side: float):
        """(image, origin, extent) of one window, resized to at most ``_WINDOW_PIXELS``."""
        size = int(min(_WINDOW_PIXELS, max(self.min_side, round(side))))
        scale = size / side
        if scale < 1 and _inside(rgb.shape, x0, y0, side):
            # Inside the frame and shrinking: slice + area filter (warpAffine would alias).
            crop = rgb[int(round(y0)):int(round(y0 + side)), int(round(x0)):int(round(x0 + side))]
            work = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
            x0, y0 = round(x0), round(y0)
            side_x, side_y = crop.shape[1], crop.shape[0]
        else:
            # Around a face near the frame border: warp with replicated edges.
            matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]])
            work = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
            side_x = side_y = side
        return np.ascontiguousarray(work), (x0, y0), (side_x, side_y)

    def _tracking_copy(self, rgb: np.ndarray) -> np.ndarray | None:
        """Video, a large frame, a face tracked and no detection due: the working copy filled in
        only around the tracked faces' ROIs, the only pixels the mesh reads then (exactly as the
        whole copy has them, :mod:`.area_resize`). None otherwise."""
        height, width = rgb.shape[:2]
        if not self.video or self._mesh is None or max(height, width) <= self.max_side:
            return None
        rois = self._mesh.tracking_rois()
        if rois is None:
            return None
        size = _resized_size(width, height, self.max_side / max(height, width))
        if self._shrink is None or self._shrink.frame_size != (width, height):
            self._shrink = PartialAreaResize((width, height), size)
        return self._shrink(rgb, _rois_box(rois.cpu().double().numpy(), size, _ROI_MARGIN))

    def _working_copy(self, rgb: np.ndarray, name: str) -> np.ndarray:
        height, width = rgb.shape[:2]
        short, long = min(height, width), max(height, width)
        if short < MIN_USABLE_SIDE:
            raise ValueError(
                f"{name} is {width}x{height} px; faces cannot be found below {MIN_USABLE_SIDE} px "
                f"on the shorter side. Use a larger image (at least {self.min_side} px "
                f"recommended)."
            )
        if short < self.min_side:
            factor = 256.0 / short
            log.warning(
                "%s is only %dx%d px; upscaling x%.1f for face detection (landmarks will be "
                "coarse; use at least %d px for good results)", name, width, height, factor,
                self.min_side,
            )
            return _resize(rgb, factor, cv2.INTER_CUBIC)
        if long > self.max_side:
            return _resize(rgb, self.max_side / long, cv2.INTER_AREA)
        return rgb

    def reset(self) -> None:
        """Forget the previous frame (video mode): call between unrelated clips."""
        self._previous = None
        if self.video and self._mesh is not None:
            self._mesh.reset()

    def close(self) -> None:
        # The networks are cached per device and dtype (torch_models.loading); only the
        # tracking state belongs to this detector.
        self._mesh = self._window_mesh = None
        self._previous = None
        self._shrink = None


# Pixels beyond a ROI's corners kept in a tracking copy: the mesh's bilinear crop reads the pixel
# after its last sample position.
_ROI_MARGIN = 2.0
# A window around a face: this many face sizes wide (the mesh finds faces filling ~1/3 to 1/2).
_FACE_WINDOW_RATIO = 2.5
_WINDOW_PIXELS = 384  # windows are resized to at most this (the detector itself looks at 128)
_SMALLEST_WINDOW = 160.0  # px of the frame; faces in smaller windows are too small to use
# Window sizes tried: the short side, then half of it (a faceless 1080p frame: ~25 windows).
_WINDOW_LEVELS = 2


def _windows(height: int, width: int, side: float):
    """Top-left corners of square windows covering the frame with half-window steps."""
    def starts(length: int) -> list[float]:
        if side >= length:
            return [0.0]
        count = int(np.ceil((length - side) / (side / 2.0))) + 1
        return list(np.linspace(0.0, length - side, count))

    for y0 in starts(height):
        for x0 in starts(width):
            yield x0, y0


def _inside(shape: tuple[int, ...], x0: float, y0: float, side: float) -> bool:
    return x0 >= 0 and y0 >= 0 and x0 + side <= shape[1] + 0.5 and y0 + side <= shape[0] + 0.5


def _merge_duplicates(faces: list[DetectedFace]) -> list[DetectedFace]:
    """One face per person from overlapping windows: keep the larger of two overlapping boxes."""
    kept: list[DetectedFace] = []
    for face in sorted(faces, key=lambda f: f.area, reverse=True):
        if all(_overlap(face.box, other.box) < 0.3 for other in kept):
            kept.append(face)
    return kept


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / max(smaller, 1e-9)


def _resized_size(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))


def _resize(rgb: np.ndarray, factor: float, interpolation: int) -> np.ndarray:
    size = _resized_size(rgb.shape[1], rgb.shape[0], factor)
    return np.ascontiguousarray(cv2.resize(rgb, size, interpolation=interpolation))


def _rois_box(rois: np.ndarray, size: tuple[int, int], margin: float) -> tuple[float, float, float, float]:
    """Box (x0, y0, x1, y1) in pixels of an image of ``size`` around rotated ROIs ``[R, 5]``
    (centre x, y and width, height normalised by the image size; rotation in radians), widened by
    ``margin`` px."""
    width, height = size
    centre = rois[:, None, :2] * (width, height)
    half = rois[:, None, 2:4] * (width, height) / 2
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    cos, sin = np.cos(rois[:, None, 4]), np.sin(rois[:, None, 4])
    u, v = signs[None, :, 0] * half[..., 0], signs[None, :, 1] * half[..., 1]
    corners = centre + np.stack([cos * u - sin * v, sin * u + cos * v], axis=-1)
    low, high = corners.reshape(-1, 2).min(axis=0) - margin, corners.reshape(-1, 2).max(axis=0) + margin
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])
