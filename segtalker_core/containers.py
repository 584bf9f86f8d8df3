"""The objects that pass between stages (and between ComfyUI nodes as ``SEGTALKER_*`` sockets).

Conventions, everywhere in the core:

* images are numpy ``uint8`` RGB, ``[N, H, W, 3]`` for batches;
* label maps are numpy ``uint8``: ``[N, S, S]``; 19-class maps are in BiSeNet order
  (:mod:`segtalker_core.labels`), 12-region maps in ``REGIONS_12`` order;
* landmarks are MediaPipe face-mesh points (478, refined irises) as ``float32 [N, 478, 3]`` in
  *crop* pixel coordinates (x right, y down; z in the same pixel scale, smaller = nearer);
* a crop transform is a ``2x3`` affine that maps *frame* pixel coordinates to *crop* pixel
  coordinates (cv2 ``warpAffine`` convention).

Frames without a face keep their slot (``found[i] == False``): crops and labels are zero, landmarks
NaN, transform identity-scaled; later stages pass those frames through unchanged.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import labels as L

NUM_LANDMARKS = 478


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``2x3`` affine (``[..., 2, 3]`` batches allowed)."""
    m = np.asarray(matrix, dtype=np.float64)
    a = m[..., :2]
    t = m[..., 2:]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -a_inv @ t], axis=-1)


@dataclass
class FaceTrack:
    """Per input frame: aligned face crop, its parsing, landmarks and crop transform.

    This is the ``SEGTALKER_FACES`` socket.
    """

    frames: np.ndarray  # [N, H, W, 3] uint8: the input frames, full resolution (paste-back target)
    crops: np.ndarray  # [N, S, S, 3] uint8: aligned face crops
    labels: np.ndarray  # [N, S, S] uint8: 19-class BiSeNet-order parsing of the crops
    landmarks: np.ndarray  # [N, 478, 3] float32: face-mesh points in crop pixels (NaN: no face)
    transforms: np.ndarray  # [N, 2, 3] float64: frame pixels -> crop pixels
    found: np.ndarray  # [N] bool: a face was found in that frame
    parser: str = "builtin"  # which parser made `labels` (for previews / provenance)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.frames)
        s = self.crop_size
        assert self.frames.ndim == 4 and self.frames.shape[-1] == 3, self.frames.shape
        assert self.crops.shape == (n, s, s, 3), (self.crops.shape, n, s)
        assert self.labels.shape == (n, s, s), self.labels.shape
        assert self.landmarks.shape == (n, NUM_LANDMARKS, 3), self.landmarks.shape
        assert self.transforms.shape == (n, 2, 3), self.transforms.shape
        assert self.found.shape == (n,), self.found.shape

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[1])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the input frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def inverse_transforms(self) -> np.ndarray:
        """``[N, 2, 3]``: crop pixels -> frame pixels."""
        return invert_affine(self.transforms)

    @functools.cached_property
    def regions(self) -> np.ndarray:
        """``[N, S, S]`` 12-region maps of the crops (computed once: stages read it per frame)."""
        return L.merge_to_regions(self.labels)

    def select(self, indices: np.ndarray | list[int]) -> "FaceTrack":
        """A track of the given frames (any order, repeats allowed: used for looping a video)."""
        idx = np.asarray(indices, dtype=np.int64)
        return FaceTrack(
            frames=self.frames[idx],
            crops=self.crops[idx],
            labels=self.labels[idx],
            landmarks=self.landmarks[idx],
            transforms=self.transforms[idx],
            found=self.found[idx],
            parser=self.parser,
            meta=dict(self.meta),
        )


@dataclass
class SegmentationFrame:
    """One frame of a talking segmentation, as the streaming stages pass it on.

    ``regions`` [S, S] uint8 12-region map (crop space) -- what the frame must show;
    ``source_index``: the `FaceTrack` frame it is drawn on; ``params`` [5] float32: the articulation
    that drove it (a hint for the built-in renderer, ``None`` when unknown); ``eye_closure``: the
    blink that drove it (a hint as well); ``landmarks`` [478, 3]: the driven face-mesh points
    (built-in backend). ``pose`` is transient: the built-in rig's own pose of exactly this map
    (a ``procedural.renderer.DrivenFrame``), so a renderer straight after the rig need not pose the
    face again; it is never stored in a :class:`TalkingSegmentation`.
    """

    regions: np.ndarray
    source_index: int
    params: np.ndarray | None = None
    eye_closure: float = 0.0
    landmarks: np.ndarray | None = None
    pose: Any = None


@dataclass
class TalkingSegmentation:
    """A sequence of 12-region label maps in crop space, one per output video frame.

    This is the ``SEGTALKER_SEGMENTATION`` socket. ``source_index[t]`` is the `FaceTrack` frame that
    output frame ``t`` is drawn on (a portrait repeats frame 0; a video loops, ping-pongs or is cut).
    The maps are what the frames show. The rest is what made them, kept as hints for the built-in
    renderer (which follows the maps and uses a hint only where it agrees with them):
    ``landmarks`` the driven face-mesh points, ``mouth_params`` the per-frame articulation,
    ``eye_closure`` the blinks; each ``None`` when unknown (a learned TSG has no landmarks).
    """

    regions: np.ndarray  # [T, S, S] uint8: 12-region maps
    faces: FaceTrack  # the track the maps were made for
    source_index: np.ndarray  # [T] int64: frame of `faces` behind output frame t
    fps: float
    landmarks: np.ndarray | None = None  # [T, 478, 3] float32 driven landmarks (built-in backend)
    mouth_params: np.ndarray | None = None  # [T, 5] float32 articulation per frame
    eye_closure: np.ndarray | None = None  # [T] float32 0..1 blinks
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = len(self.regions)
        s = self.faces.crop_size
        assert self.regions.shape == (t, s, s), (self.regions.shape, s)
        assert self.source_index.shape == (t,), self.source_index.shape
        if t and (self.source_index.min() < 0 or self.source_index.max() >= len(self.faces)):
            raise ValueError("source_index points outside the face track")
        if self.landmarks is not None:
            assert self.landmarks.shape == (t, NUM_LANDMARKS, 3), self.landmarks.shape
        if self.mouth_params is not None:
            assert self.mouth_params.shape[0] == t, (self.mouth_params.shape, t)
        if self.eye_closure is not None:
            assert self.eye_closure.shape == (t,), (self.eye_closure.shape, t)

    def __len__(self) -> int:
        return len(self.regions)

    def frame(self, t: int) -> SegmentationFrame:
        """Frame ``t`` as the streaming stages take it."""
        return SegmentationFrame(
            regions=self.regions[t],
            source_index=int(self.source_index[t]),
            params=None if self.mouth_params is None else self.mouth_params[t],
            eye_closure=0.0 if self.eye_closure is None else float(self.eye_closure[t]),
            landmarks=None if self.landmarks is None else self.landmarks[t],
        )

    def frames(self):
        """All frames in order (an iterator of :class:`SegmentationFrame`)."""
        return (self.frame(t) for t in range(len(self)))

    @staticmethod
    def collect(frames, faces: FaceTrack, fps: float, meta: dict[str, Any] | None = None) -> "TalkingSegmentation":
        """A :class:`TalkingSegmentation` of a stream of :class:`SegmentationFrame`.

        Only the maps and hints are kept (each frame's transient pose is dropped as the stream
        goes); a hint is kept where every frame has it.
        """
        regions, index, params, landmarks, closure = [], [], [], [], []
        for f in frames:
            regions.append(f.regions)
            index.append(f.source_index)
            params.append(f.params)
            landmarks.append(f.landmarks)
            closure.append(f.eye_closure)
        s = faces.crop_size

        def stacked(values: list) -> np.ndarray | None:
            if not values or any(v is None for v in values):
                return None
            return np.stack(values).astype(np.float32)

        return TalkingSegmentation(
            regions=np.stack(regions).astype(np.uint8) if regions else np.empty((0, s, s), np.uint8),
            faces=faces,
            source_index=np.array(index, np.int64),
            fps=float(fps),
            landmarks=stacked(landmarks),
            mouth_params=stacked(params),
            eye_closure=np.array(closure, np.float32),
            meta=dict(meta or {}),
        )


@dataclass
class StyleCodes:
    """Per-region appearance of a face: the ``SEGTALKER_STYLE`` socket.

    ``kind == "learned"``: ``codes`` are W+ codes ``[B, 12, L, 512]`` (torch tensor, CPU) from a
    mask-guided encoder, ``encoder_id`` names the encoder so a generator can refuse foreign codes.
    ``kind == "builtin"``: ``region_stats`` are per-region colour statistics ``[B, 12, 6]``
    (Lab mean and std) and ``crops``/``regions`` the face(s) they came from, which the built-in
    renderer samples textures from.
    ``valid[b, r]`` is False where region r is absent in face b (its code is a fallback).
    """

    kind: str  # "learned" | "builtin"
    valid: np.ndarray  # [B, 12] bool
    codes: Any = None  # torch.Tensor [B, 12, L, 512] for "learned"
    region_stats: np.ndarray | None = None  # [B, 12, 6] float32 Lab mean/std for "builtin"
    crops: np.ndarray | None = None  # [B, S, S, 3] uint8 source crops ("builtin")
    regions: np.ndarray | None = None  # [B, S, S] uint8 12-region maps of `crops`
    encoder_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("learned", "builtin"):
            raise ValueError(f"StyleCodes.kind must be 'learned' or 'builtin', got {self.kind!r}")
        assert self.valid.ndim == 2 and self.valid.shape[1] == L.NUM_REGIONS, self.valid.shape
