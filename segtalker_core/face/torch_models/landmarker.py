"""Faces -> 478 landmarks, MediaPipe 0.10.14's ``FaceMesh(refine_landmarks=True)`` graph in PyTorch.

Per frame (``FaceLandmarkFrontCpu``):

1. detection runs unless the previous frame's landmarks already gave ``max_faces`` tracking
   ROIs (video mode only): BlazeFace boxes, the best ``max_faces``, each made a ROI. With
   ``redetect_every`` > 1 (not MediaPipe's), a frame that tracks some face skips detection
   unless that many frames went by since the detector last ran;
2. ROIs from the previous frame's landmarks (video mode) replace detected ROIs they overlap;
3. the mesh runs on every ROI (all in one forward); a face is kept when its presence
   probability is above ``min_tracking_confidence``;
4. video mode: each kept face's landmarks make its ROI for the next frame.

Static mode (``video=False``) takes a batch of frames through detection in one forward and all
their ROIs through the mesh in one forward (:meth:`TorchFaceLandmarker.process_batch`). Video
mode is sequential by nature (a frame's ROI comes from the previous frame).

On the CPU the frames stay uint8 arrays: OpenCV warps each network input out of them, as
MediaPipe does (:func:`.roi_crop.crop_frames`); elsewhere they go to the device once and are
sampled there.

Results are normalised like MediaPipe's (x by the width, y by the height, z by the width), one
``[478, 3]`` float32 array per face in ROI order.
"""
from __future__ import annotations

import numpy as np
import torch

from . import loading
from .blazeface import INPUT_SIZE as DETECTOR_SIZE
from .face_mesh import INPUT_SIZE as MESH_SIZE
from .rects import associate, rects_from_detections, rects_from_landmarks
from .roi_crop import crop_frames
from .tflite_graph import cpu_threads


class TorchFaceLandmarker:
    """Reusable face-mesh runner: ``process(rgb) -> list of [478, 3]`` normalised landmarks."""

    def __init__(
        self,
        video: bool = False,
        max_faces: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        redetect_every: int = 1,
    ) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if redetect_every < 1:
            raise ValueError(f"redetect_every must be >= 1, got {redetect_every}")
        self.video = video
        # Video mode, while some but fewer than max_faces faces are tracked: the detector looks
        # for more faces on every redetect_every-th frame only (1: every frame, MediaPipe's rule).
        # Tracked faces come from their own landmarks either way, so only how soon a face that
        # enters the picture is found depends on it.
        self.redetect_every = redetect_every
        self._frames_since_detection = 0
        self.max_faces = max_faces
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.device = torch.device(device)
        self.dtype = dtype
        self.detector = loading.face_detector(self.device, dtype)
        self.mesh = loading.face_mesh(self.device, dtype)
        self._tracked = torch.zeros((0, 5), device=self.device)  # video: ROIs for the next frame
        # Models on the CPU take their inputs warped out of the uint8 frames by OpenCV; elsewhere
        # the frames go to the device and are sampled there (False on the CPU runs that path).
        self.crop_on_host = self.device.type == "cpu"

    def reset(self) -> None:
        """Forget the previous frame (video mode)."""
        self._tracked = torch.zeros((0, 5), device=self.device)
        self._frames_since_detection = 0

    def _frames(self, frames: np.ndarray):
        """The frames as the crops want them: on the CPU the uint8 array itself (OpenCV warps
        it, as MediaPipe does); elsewhere ``[B, 3, H, W]`` on the device in the compute dtype,
        values 0..255 (the crops are sampled there)."""
        frames = np.asarray(frames)
        assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, (
            frames.shape, frames.dtype)
        if self.crop_on_host:
            return np.ascontiguousarray(frames)
        # torch.from_numpy wants a writable array; a read-only one (a decoded image, an IMAGE
        # batch view) is copied once here rather than warned about.
        images = torch.from_numpy(np.require(frames, requirements=["C", "W"])).to(self.device)
        return images.permute(0, 3, 1, 2).to(self.dtype)

    def _detect(self, frames, size: tuple[int, int]):
        """Detections per frame (``frames`` as :meth:`_frames` gives them)."""
        if isinstance(frames, torch.Tensor):
            return self.detector(frames, self.min_detection_confidence)
        count = len(frames)
        tensor = crop_frames(frames, range(count),
                             self.detector.letterbox_rects(count, size),
                             (DETECTOR_SIZE, DETECTOR_SIZE), (-1.0, 1.0), "zeros", self.dtype)
        return self.detector.detect_input(tensor, size, self.min_detection_confidence)

    def _mesh(self, frames, owner: list[int], rects: torch.Tensor):
        """The mesh of ``rects`` in the frames ``owner`` gives."""
        if isinstance(frames, torch.Tensor):
            return self.mesh(frames, torch.tensor(owner, dtype=torch.long, device=self.device),
                             rects)
        crops = crop_frames(frames, owner, rects, (MESH_SIZE, MESH_SIZE), (0.0, 1.0), "border",
                            self.dtype)
        return self.mesh.from_crops(crops, rects)

    def process(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Faces of one RGB uint8 frame ``[H, W, 3]`` (video mode: frames in order)."""
        with torch.inference_mode(), cpu_threads(self.device):
            return self._process(rgb)

    def tracking_rois(self) -> torch.Tensor | None:
        """Video mode: the ROIs ``[R, 5]`` (normalised as :func:`.rects.rects_from_landmarks`
        gives them) that the next :meth:`process` meshes without running the detector, or None
        when it will run the detector (which looks at the whole frame)."""
        if self.video and self._skips_detection(self._frames_since_detection + 1):
            return self._tracked
        return None

    def _skips_detection(self, frames_since_detection: int) -> bool:
        tracked = len(self._tracked) if self.video else 0
        return tracked >= self.max_faces or (
            tracked > 0 and frames_since_detection < self.redetect_every)

    def _process(self, rgb: np.ndarray) -> list[np.ndarray]:
        frames = self._frames(rgb[None])
        size = (rgb.shape[1], rgb.shape[0])
        tracked = self._tracked if self.video else self._tracked[:0]
        self._frames_since_detection += 1
        if self._skips_detection(self._frames_since_detection):
            detected = tracked[:0]
        else:
            self._frames_since_detection = 0
            found = self._detect(frames, size)[0]
            keep = slice(0, self.max_faces)
            detected = rects_from_detections(found.boxes[keep], found.keypoints[keep], size)
        rects = associate(detected, tracked)
        result = self._mesh(frames, [0] * len(rects), rects)
        kept = result.landmarks[result.presence > self.min_tracking_confidence]
        if self.video:
            self._tracked = rects_from_landmarks(kept, size)
        return [face.cpu().numpy() for face in kept]

    def process_batch(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        """Static mode: ``[B, H, W, 3]`` uint8 frames of one size -> faces per frame; one
        detector forward and one mesh forward for the whole batch."""
        if self.video:
            raise ValueError("process_batch is for static images; video mode tracks frame by "
                             "frame (use process)")
        with torch.inference_mode(), cpu_threads(self.device):
            return self._process_batch(frames)

    def _process_batch(self, frames: np.ndarray) -> list[list[np.ndarray]]:
        frames = np.asarray(frames)
        size = (frames.shape[2], frames.shape[1])
        frames = self._frames(frames)
        found = self._detect(frames, size)
        rects, owner = [], []
        for index, detections in enumerate(found):
            keep = slice(0, self.max_faces)
            rect = associate(rects_from_detections(detections.boxes[keep],
                                                   detections.keypoints[keep], size),
                             detections.boxes.new_zeros((0, 5)))
            rects.append(rect)
            owner += [index] * len(rect)
        all_rects = torch.cat(rects) if rects else torch.zeros((0, 5), device=self.device)
        result = self._mesh(frames, owner, all_rects)
        faces: list[list[np.ndarray]] = [[] for _ in range(len(found))]
        keep = (result.presence > self.min_tracking_confidence).cpu().tolist()
        for face, index, accepted in zip(result.landmarks.cpu().numpy(), owner, keep):
            if accepted:
                faces[index].append(face)
        return faces
