"""The stage functions shared by the ComfyUI nodes and the CLI.

Each function takes and returns the core types of :mod:`segtalker_core.containers` (numpy uint8
images, label maps) and a :class:`LoadedModel` where a stage has a learned twin. ``progress`` is
an optional ``progress(done, total)`` callback, called once per frame.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

import numpy as np

from . import labels as L
from .containers import FaceTrack, StyleCodes, TalkingSegmentation
from .model_handle import ENCODER, GENERATOR, PARSER, TSG, LoadedModel, require_component

log = logging.getLogger("segtalker")

Progress = Callable[[int, int], None] | None

__all__ = [
    "LoadedModel",
    "NoFaceError",
    "require_component",
    "builtin_parser_model",
    "load_model",
    "parse_faces",
    "faces_preview",
    "segmentation_preview",
    "region_mask",
]


class NoFaceError(ValueError):
    """No face in any frame of an input."""


# ---------------------------------------------------------------------------------------------
# Models


def builtin_parser_model() -> LoadedModel:
    """The MediaPipe-landmark parser (no weight files); MediaPipe loads on first use."""
    from .parsing.landmark_parser import LandmarkParser

    return LoadedModel(
        component=PARSER,
        runner=LandmarkParser(),
        source="builtin",
        description="built-in parser: MediaPipe face mesh + selfie segmentation, rasterised to 19 classes",
    )


def load_model(path: str, device="cpu", dtype=None) -> LoadedModel:
    """Load any SegTalker weight file: a BiSeNet parser checkpoint or a learned component bundle.

    What the file is comes from its header (bundle metadata, or the layout of its keys).
    """
    from . import checkpoints

    config = checkpoints.read_config(path)
    if config.component == "bisenet":
        import torch

        from .parsing.bisenet import load_bisenet

        runner = load_bisenet(path, device=device, dtype=dtype or torch.float32)
        return LoadedModel(
            component=PARSER,
            runner=runner,
            source=str(path),
            config=config,
            description=f"BiSeNet face parser (19 classes, 512 input) from {path}",
        )
    from .models import bundles

    module, config = bundles.load_component(path, expected_component=None, device=device, dtype=dtype)
    return LoadedModel(
        component=config.component,
        runner=module,
        source=str(path),
        config=config,
        description=bundles.describe(path),
    )


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_faces(
    frames: np.ndarray,
    parser: LoadedModel | None = None,
    crop_size: int = 512,
    face_index: int = -1,
    smoothing: float = 0.5,
    video: bool | None = None,
    input_name: str = "image",
    progress: Progress = None,
) -> FaceTrack:
    """Frames ``[N, H, W, 3]`` (any dtype/channels ``to_rgb_uint8_batch`` takes) -> FaceTrack.

    A batch of more than one frame is treated as consecutive video frames (MediaPipe tracking,
    transforms smoothed with a Gaussian of ``4 * smoothing`` frames). Frames without a face keep
    their slot; when no frame has a face, :class:`NoFaceError` names ``input_name``.
    """
    from .face.aligned import align_faces
    from .face.image import to_rgb_uint8_batch
    from .face.smoothing import Smoothing

    parser = parser or builtin_parser_model()
    require_component(parser, (PARSER,), slot="parser")
    rgb = to_rgb_uint8_batch(frames, input_name)
    n = len(rgb)
    video = n > 1 if video is None else video
    settings = Smoothing("gaussian", sigma=4.0 * smoothing) if video and smoothing > 0 else Smoothing("none")

    def detection_progress(done: int, total: int) -> None:
        if progress is not None:
            progress(done // 2, n)

    aligned = align_faces(
        rgb, crop_size=crop_size, face_index=face_index, video=video, smoothing=settings,
        progress=detection_progress,
    )
    if not aligned.found.any():
        raise NoFaceError(
            f"no face was found in any of the {n} frame(s) of input '{input_name}'; use a "
            "photo or video where one face is clearly visible (frontal or three-quarter view)"
        )
    missing = int((~aligned.found).sum())
    if missing:
        log.warning("no face in %d of %d frames of '%s'; those frames pass through unchanged", missing, n, input_name)

    labels = np.zeros((n, crop_size, crop_size), dtype=np.uint8)
    found = np.flatnonzero(aligned.found)
    for done, i in enumerate(found):
        labels[i] = parser.runner.parse(aligned.crops[i : i + 1], aligned.landmarks[i : i + 1])[0]
        if progress is not None:
            progress(n // 2 + (done + 1) * (n - n // 2) // len(found), n)
    if progress is not None:
        progress(n, n)
    return FaceTrack(
        frames=rgb,
        crops=aligned.crops,
        labels=labels,
        landmarks=aligned.landmarks,
        transforms=aligned.transforms,
        found=aligned.found,
        parser=getattr(parser.runner, "name", parser.component),
    )


def faces_preview(faces: FaceTrack, opacity: float = 0.6) -> np.ndarray:
    """Crops with the parsing colours over them, ``[N, S, S, 3]`` uint8 (frames without a face: black)."""
    colours = L.colorize_bisenet(faces.labels).astype(np.float32)
    blended = (1.0 - opacity) * faces.crops.astype(np.float32) + opacity * colours
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def segmentation_preview(segmentation: TalkingSegmentation) -> np.ndarray:
    """Region colours of every frame of a talking segmentation, ``[T, S, S, 3]`` uint8."""
    return L.colorize_regions(segmentation.regions)


# ---------------------------------------------------------------------------------------------
# Masks


def region_mask(
    faces: FaceTrack | None = None,
    segmentation: TalkingSegmentation | None = None,
    regions: list[str] | tuple[str, ...] = ("lips",),
    dilate_px: int = 0,
    feather_px: int = 0,
    space: str = "crop",
) -> np.ndarray:
    """Float masks ``[N, S, S]`` (crop space) or ``[N, H, W]`` (frame space) of the chosen regions.

    From ``segmentation`` when given (one mask per output frame), else from ``faces``. In frame
    space the crop mask is warped back with each frame's inverse crop transform; frames without a
    face get an empty mask.
    """
    from .masks import frame_space_masks, shape_mask

    if segmentation is None and faces is None:
        raise ValueError("connect either 'faces' or 'segmentation' to make a mask")
    if space not in ("crop", "frame"):
        raise ValueError(f"space must be 'crop' or 'frame', got {space!r}")
    indices = L.parse_region_list(list(regions))
    if not indices:
        raise ValueError(f"no region selected; choose at least one of: {', '.join(L.REGIONS_12)}")
    if segmentation is not None:
        region_maps, track, source_index = segmentation.regions, segmentation.faces, segmentation.source_index
    else:
        region_maps, track, source_index = faces.regions, faces, np.arange(len(faces))
    masks = shape_mask(np.isin(region_maps, indices), dilate_px, feather_px)
    masks[~track.found[source_index]] = 0.0
    if space == "crop":
        return masks
    return frame_space_masks(masks, track.transforms[source_index], track.frame_size)
