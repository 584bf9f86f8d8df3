"""Built-in renderer: articulation parameters -> talking segmentation and rendered face crops.

Two ways in:

* :class:`PortraitRenderer` -- one source crop drives every frame. Everything that depends only on
  the source (rig, triangulation, teeth layers, colours) is prepared once in ``__init__``;
  :meth:`~PortraitRenderer.drive` makes the talking segmentation of a whole clip and
  :meth:`~PortraitRenderer.render` / :meth:`~PortraitRenderer.frame` render one frame at a time so
  callers can stream.
* :class:`DubbingRenderer` -- video dubbing: each frame is drawn on its *own* crop and landmarks,
  so the per-source preparation runs per frame (it is cheap: one ~400-point Delaunay and a few
  small image statistics). Colours of synthesised teeth are fixed at the first frame so they do
  not flicker.

Per frame: driven landmarks (:mod:`.rig`) -> piecewise-affine warp of the lower face (:mod:`.warp`)
-> mouth interior in the opening (:mod:`.mouth_interior`) -> painted lids if blinking
(:mod:`.blink`); the 12-region map follows the same warp (:mod:`.mouth_segmentation`).
Everything is deterministic: the same parameters give the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .blink import BlinkConfig, blink_schedule, close_eye_regions, close_eyelids, paint_eyelids
from .mouth_interior import (
    MouthInterior, MouthPalette, TeethGeometry, analyse_mouth, extract_source_teeth,
)
from .mouth_segmentation import drive_regions
from .rig import (
    JAW, LIPS_LOWER_SEMI_INNER, LIPS_UPPER_SEMI_INNER, NUM_PARAMS, TEETH, FaceFrame, MouthRig,
    RigConfig, check_landmarks, check_params,
)
from .warp import Box, MeshWarp

TEETH_SOURCES = ("auto", "synthetic")
_INSET = 0.5  # of the way to the next lip ring, for an open reference mouth
_INSET_MAX = 0.03  # IOD
_SMOOTH = 0.012  # IOD: sigma of the warp's displacement smoothing
_SEAMS = (T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)  # the warp may jump where the lips meet


@dataclass(frozen=True)
class RenderOptions:
    """Options of the built-in renderer.

    ``blink``: add natural blinks to portraits (``blink_seed`` picks the schedule);
    ``teeth_source``: ``"auto"`` reuses the source's own teeth when it shows them, ``"synthetic"``
    always draws teeth; ``feather``: softness of the mouth-opening edge, in inter-ocular
    distances; ``rig``: motion amplitudes.
    """

    blink: bool = True
    blink_seed: int = 0
    blink_config: BlinkConfig = field(default_factory=BlinkConfig)
    teeth_source: str = "auto"
    feather: float = 0.015
    rig: RigConfig = field(default_factory=RigConfig)

    def __post_init__(self) -> None:
        if self.teeth_source not in TEETH_SOURCES:
            raise ValueError(
                f"teeth_source must be one of {TEETH_SOURCES}, got {self.teeth_source!r}"
            )
        if not 0.0 <= self.feather <= 0.1:
            raise ValueError(f"feather is in inter-ocular distances, 0..0.1; got {self.feather}")


@dataclass
class DrivenFaces:
    """A driven clip: ``params`` [T, 5] float32 (as used, clipped to range); ``landmarks``
    [T, 478, 3] float32 (blinks included); ``regions`` [T, S, S] uint8 12-region maps;
    ``eye_closure`` [T] float32; ``fps``."""

    params: np.ndarray
    landmarks: np.ndarray
    regions: np.ndarray
    eye_closure: np.ndarray
    fps: float

    def __len__(self) -> int:
        return len(self.params)


@dataclass
class RenderedFrame:
    """One output frame: ``crop`` [S, S, 3] uint8, ``regions`` [S, S] uint8 (12-region),
    ``landmarks`` [478, 3] float32 driven points (lids included)."""

    crop: np.ndarray
    regions: np.ndarray
    landmarks: np.ndarray


class SourceFace:
    """One source crop prepared for driving; :meth:`frame` renders any parameters on it.

    ``crop`` [S, S, 3] uint8, ``landmarks`` [478, 3] crop px, ``regions12`` [S, S] uint8 12-region
    map; ``palette``: teeth/cavity colours to use instead of the crop's own (keeps a video's
    synthesised teeth steady). Attributes: ``rig`` (:class:`~.rig.MouthRig`), ``mesh``
    (:class:`~.warp.MeshWarp`), ``interior`` (:class:`~.mouth_interior.MouthInterior`),
    ``palette``, ``iod`` (px).
    """

    def __init__(
        self, crop: np.ndarray, landmarks: np.ndarray, regions12: np.ndarray,
        options: RenderOptions, palette: MouthPalette | None = None,
    ) -> None:
        self.crop = _check_crop(crop)
        size = self.crop.shape[0]
        self.regions = _check_regions(regions12, size)
        reference = check_landmarks(landmarks, "landmarks")
        self.options = options
        self.iod = FaceFrame.from_landmarks(reference).iod
        mouth = analyse_mouth(self.crop, reference, self.iod)
        self.rig = MouthRig.fit(reference, options.rig, source_teeth=mouth.score)
        self.mesh = _build_mesh(self.rig, size)
        self.smooth = _SMOOTH * self.iod
        self.seal = _openness(self.rig)
        jaw_source = self.rig.jaw_offset(self.rig.reference_params)[0]
        source_teeth = None
        if options.teeth_source == "auto" and mouth.score > 0.3:
            source_teeth = extract_source_teeth(self.crop, mouth, self.iod, jaw_source)
        if palette is None:
            teeth_rgb = source_teeth.rgb if source_teeth is not None else None
            palette = MouthPalette.from_source(self.crop, reference, self.regions, teeth_rgb)
        self.palette = palette
        rest_uv = self.rig.frame.to_face(self.rig.rest[list(T.INNER_MOUTH_CORNERS), :2])
        inner_half_width = float(abs(rest_uv[1, 0] - rest_uv[0, 0]) / 2)
        self.interior = MouthInterior(
            self.rig.frame, palette, TeethGeometry.for_mouth(inner_half_width), source_teeth,
            options.feather,
        )

    def frame(self, params: np.ndarray, eye_closure: float = 0.0, image: bool = True) -> RenderedFrame:
        """Render one frame from ``params`` [5]; ``image=False`` skips the pixels (crop ``None``)."""
        p = check_params(np.asarray(params, np.float64).reshape(1, NUM_PARAMS), "params")[0]
        driven = self.rig.drive(p)
        warp = self.mesh.field(driven, self.smooth, _SEAMS)
        regions = drive_regions(self.regions, warp, driven)
        crop = None
        if image:
            crop = warp.apply(self.crop)
            jaw = self.rig.jaw_offset(p)[0]
            self.interior.composite(crop, driven, jaw, p[TEETH], self.seal)
        if eye_closure > 0:
            driven = close_eyelids(driven, float(eye_closure))
            close_eye_regions(regions, self.rig.reference, driven, self.iod)
            if crop is not None:
                paint_eyelids(crop, self.crop, self.rig.reference, driven, self.iod)
        return RenderedFrame(crop, regions, driven)


class PortraitRenderer:
    """Talking portrait from one source crop.

    ``crop`` [S, S, 3] uint8 aligned face; ``landmarks`` [478, 3] float32 crop px; ``regions12``
    [S, S] uint8 12-region map of the crop (``labels.merge_to_regions`` of a parser's output).
    """

    def __init__(
        self, crop: np.ndarray, landmarks: np.ndarray, regions12: np.ndarray,
        options: RenderOptions | None = None,
    ) -> None:
        self.options = options or RenderOptions()
        self.source = SourceFace(crop, landmarks, regions12, self.options)

    @property
    def rig(self) -> MouthRig:
        return self.source.rig

    def eye_closure(self, num_frames: int, fps: float) -> np.ndarray:
        """The blink schedule [T] this renderer uses (zeros when blinks are off)."""
        if not self.options.blink:
            return np.zeros(num_frames, np.float32)
        return blink_schedule(num_frames, fps, self.options.blink_seed, self.options.blink_config)

    def drive(self, params: np.ndarray, fps: float) -> DrivenFaces:
        """Talking segmentation of a clip: ``params`` [T, 5] -> :class:`DrivenFaces`."""
        p = check_params(params, "params").astype(np.float32)
        closure = self.eye_closure(len(p), fps)
        size = self.source.crop.shape[0]
        regions = np.empty((len(p), size, size), np.uint8)
        landmarks = np.empty((len(p), T.NUM_POINTS, 3), np.float32)
        for t in range(len(p)):
            frame = self.source.frame(p[t], float(closure[t]), image=False)
            regions[t] = frame.regions
            landmarks[t] = frame.landmarks
        return DrivenFaces(p, landmarks, regions, closure, float(fps))

    def frame(self, params: np.ndarray, eye_closure: float = 0.0) -> RenderedFrame:
        """Crop, regions and landmarks of one frame from its ``params`` [5]."""
        return self.source.frame(params, eye_closure)

    def render(self, params: np.ndarray, eye_closure: float = 0.0) -> np.ndarray:
        """Rendered crop [S, S, 3] uint8 of one frame from its ``params`` [5]."""
        return self.source.frame(params, eye_closure).crop

    def render_driven(self, driven: DrivenFaces, index: int) -> np.ndarray:
        """Frame ``index`` of a clip made by :meth:`drive`."""
        return self.render(driven.params[index], float(driven.eye_closure[index]))

    def iter_render(self, driven: DrivenFaces) -> Iterator[np.ndarray]:
        """Rendered crops of a whole clip, one at a time."""
        for t in range(len(driven)):
            yield self.render_driven(driven, t)


class DubbingRenderer:
    """Video dubbing: re-drive the mouth of each frame on that frame's own crop.

    The mouth is driven relative to the frame's own closed rest, so ``params`` all zero close the
    mouth whatever the frame showed. ``palette``: colours of synthesised teeth (default: taken
    from the first frame rendered, then kept, so they do not flicker).
    """

    def __init__(self, options: RenderOptions | None = None, palette: MouthPalette | None = None) -> None:
        self.options = options or RenderOptions(blink=False)
        self.palette = palette

    def frame(
        self, crop: np.ndarray, landmarks: np.ndarray, regions12: np.ndarray, params: np.ndarray,
        eye_closure: float = 0.0,
    ) -> RenderedFrame:
        """Render one frame: its crop [S, S, 3], landmarks [478, 3], 12-region map [S, S] and
        articulation ``params`` [5]."""
        source = SourceFace(crop, landmarks, regions12, self.options, self.palette)
        if self.palette is None:
            self.palette = source.palette
        return source.frame(params, eye_closure)


def _build_mesh(rig: MouthRig, size: int) -> MeshWarp:
    """Triangulation of the region any parameter values can move, plus a margin."""
    corners = np.array(np.meshgrid([0, 1], [-1, 1], [0, 1], [0], [0, 1], indexing="ij")).reshape(5, -1).T
    poses = rig.drive(corners)
    moving = rig.moving
    points = np.concatenate(
        [poses[:, moving, :2].reshape(-1, 2), rig.reference[moving, :2], rig.rest[moving, :2]]
    )
    box = Box.around(points, 0.25 * rig.frame.iod, size)
    open_pose = np.zeros(NUM_PARAMS)
    open_pose[JAW], open_pose[TEETH] = 0.7, 1.0
    topology = rig.drive(open_pose)
    texture = _lip_texture_points(rig)
    return MeshWarp.build(texture, topology, box, 0.2 * rig.frame.iod)


def _lip_texture_points(rig: MouthRig) -> np.ndarray:
    """Source positions the warp samples: the reference, with the inner lip contour of an *open*
    mouth pulled into the lips.

    Face-mesh inner contours of an open mouth often sit a pixel or two over the teeth; a closing
    mouth stretches that edge across the lips as white streaks. Sampling from half way to the next
    ring of lip points avoids it. A closed reference is left exact (rest renders equal the source).
    """
    texture = rig.reference.copy()
    share = _INSET * _openness(rig)
    if share == 0.0:
        return texture
    inner = np.array(T.LIPS_INNER_UPPER + T.LIPS_INNER_LOWER)
    ring = np.array(LIPS_UPPER_SEMI_INNER + LIPS_LOWER_SEMI_INNER)
    step = share * (rig.reference[ring, :2] - rig.reference[inner, :2])
    length = np.linalg.norm(step, axis=1, keepdims=True)
    limit = _INSET_MAX * rig.frame.iod
    step *= np.minimum(1.0, limit / np.maximum(length, 1e-9))
    texture[inner, :2] += step
    return texture


def _openness(rig: MouthRig) -> float:
    """0 for a reference whose lips touch, 1 once they are clearly apart (2x the closed gap)."""
    uv = rig.frame.to_face(rig.reference)
    gap = float(uv[T.LOWER_LIP_TOP, 1] - uv[T.UPPER_LIP_BOTTOM, 1])
    closed = rig.config.closed_gap
    return float(np.clip((gap - 0.5 * closed) / closed, 0.0, 1.0))


def _check_crop(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] != crop.shape[1]:
        raise ValueError(f"crop must be a square RGB image [S, S, 3], got shape {crop.shape}")
    if crop.dtype != np.uint8:
        raise TypeError(f"crop must be uint8 (0..255), got {crop.dtype}; convert with face.image.to_rgb_uint8")
    return np.ascontiguousarray(crop)


def _check_regions(regions12: np.ndarray, size: int) -> np.ndarray:
    regions = np.asarray(regions12)
    if regions.shape != (size, size):
        raise ValueError(f"regions12 must be a [{size}, {size}] label map like the crop, got {regions.shape}")
    if not np.issubdtype(regions.dtype, np.integer) or regions.min() < 0 or regions.max() >= L.NUM_REGIONS:
        raise ValueError(
            f"regions12 must be a 12-region map (labels 0..{L.NUM_REGIONS - 1}); for a 19-class "
            f"parser output use labels.merge_to_regions first"
        )
    return regions.astype(np.uint8)
