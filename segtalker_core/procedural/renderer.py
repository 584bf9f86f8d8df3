"""Built-in renderer: articulation parameters or a 12-region map -> rendered face crops.

:class:`SourceFace` is one source crop prepared for driving: everything that depends only on the
source (rig, triangulation, teeth layers, colours) is built once in ``__init__``. A portrait keeps
one for every frame; video dubbing makes one per input frame (cheap: one ~400-point Delaunay and a
few small image statistics) with the teeth colours of the first frame, so they do not flicker.

Per frame, :meth:`SourceFace.drive` poses the face -- driven landmarks (:mod:`.rig`), the
piecewise-affine warp of the lower face (:mod:`.warp`) and the 12-region map that warp gives
(:mod:`.mouth_segmentation`), lids closed if blinking -- and :meth:`SourceFace.paint` draws it:
warped source, mouth interior in the opening (:mod:`.mouth_interior`), the shadow of a lower lip
made fuller than the source's (:func:`.mouth_shading.lower_lip_shadow`), painted lids (:mod:`.blink`).
The pose can come from parameters or from a map (:attr:`SourceFace.mouth_reader` and
:attr:`SourceFace.eye_reader` read it back: :mod:`.mouth_fit`). Everything is deterministic: the
same parameters give the same pixels.

At the source's own pose (``rig.reference_params``, no blink) the frame *is* the source: the rig
gives the reference landmarks back, the warp is the identity, no interior is painted and the map
is the source's. Near it the painted interior fades in with the rig's
:meth:`~.rig.MouthRig.reference_weight` (so a smile's own teeth stay until the mouth opens
further), as does the lip-edge texture of an open source (:func:`_lip_texture_points`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import functools

import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .blink import (
    BlinkConfig, EyeClosureReader, blink_schedule, close_eye_regions, close_eyelids, paint_eyelids,
)
from .mouth_interior import (
    MouthInterior, MouthPalette, TeethGeometry, analyse_mouth, extract_source_teeth,
)
from .lip_texture import lip_edge_points
from .mouth_fit import MouthReader
from .mouth_segmentation import drive_regions
from .mouth_shading import lower_lip_shadow
from .rig import (
    JAW, LIPS_LOWER_SEMI_INNER, LIPS_UPPER_SEMI_INNER, NUM_PARAMS, TEETH, FaceFrame, MouthRig,
    RigConfig, check_landmarks, check_params,
)
from .eye_visibility import BlinkGate, eye_visibility
from .warp import Box, KeepMask, MeshWarp, WarpField

TEETH_SOURCES = ("auto", "synthetic")
_INSET = 0.5  # of the way to the next lip ring, for an open reference mouth
_INSET_MAX = 0.03  # IOD
_SMOOTH = 0.012  # IOD: sigma of the warp's displacement smoothing
_SEAMS = (T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER)  # the warp may jump where the lips meet
_KEEP_FEATHER = 0.05  # IOD: soft edge of the areas the warp leaves alone
# Occluders in front of the jaw (strands of hair, earrings) stay as they are: warped, they would
# wobble with the chin. The background is not kept: where the chin rises to close a smile, a kept
# background edge shows twice (see warp.KeepMask).
_KEEP_FRONT = (L.region_index("hair"), L.region_index("earrings"))
# Feather (crop px) of the paste-back the crops go through (pipeline.iter_paste_back's
# feather_px): the warp's motion fades out where that paste shows the crop only in part
# (warp.KeepMask.build's paste_feather), so a moved chin is not averaged with the unmoved one.
_PASTE_FEATHER = 12.0


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
class DrivenFrame:
    """The pose of one frame, before any pixel is drawn.

    ``params`` [5] float32 (as used, clipped to range); ``eye_closure`` 0..1; ``landmarks``
    [478, 3] float32 driven points (lids included); ``regions`` [S, S] uint8 12-region map;
    ``warp``: the backward map of the lower face that moves the source to this pose; ``face``:
    the :class:`SourceFace` that posed it (and paints it).
    """

    params: np.ndarray
    eye_closure: float
    landmarks: np.ndarray
    regions: np.ndarray
    warp: WarpField
    face: "SourceFace"


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
        options: RenderOptions | None = None, palette: MouthPalette | None = None,
    ) -> None:
        options = options or RenderOptions()
        self.crop = _check_crop(crop)
        size = self.crop.shape[0]
        self.regions = _check_regions(regions12, size)
        reference = check_landmarks(landmarks, "landmarks")
        self.options = options
        self.iod = FaceFrame.from_landmarks(reference).iod
        mouth = analyse_mouth(self.crop, reference, self.iod)
        self.rig = MouthRig.fit(reference, options.rig, source_teeth=mouth.score)
        texture = _lip_texture_points(self.rig, self.crop)
        self.mesh = _build_mesh(self.rig, size, texture)
        # Where the warp samples each landmark, relative to the reference [478, 3] (the lips'
        # own edge): undone at the source's own pose, so that pose is the identity warp.
        self.texture_offset = texture - self.rig.reference
        self.smooth = _SMOOTH * self.iod
        self.keep = KeepMask.build(np.isin(self.regions, _KEEP_FRONT), None, _KEEP_FEATHER * self.iod,
                                   self.mesh.box, paste_feather=_PASTE_FEATHER)
        # Blinks only where the eyes can be seen (not behind dark lenses, not on eyes already
        # shut); a video has no painted blinks, so it skips the measurement.
        self.blink_gate = eye_visibility(self.crop, reference, self.regions) if options.blink else BlinkGate.open(size)
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

    @property
    def window(self) -> Box:
        """The crop area any parameters can move (outside it every frame equals the source)."""
        return self.mesh.box

    @functools.cached_property
    def mouth_reader(self) -> MouthReader:
        """Reads a map's mouth in this face's frame and fits the rig to it (built on first use)."""
        return MouthReader(self.rig, self.regions, self.window)

    @functools.cached_property
    def eye_reader(self) -> EyeClosureReader:
        """Reads how far a map's eyes are shut (built on first use)."""
        return EyeClosureReader(self.regions, self.rig.reference, self.iod, strength=self.blink_gate.strengths)

    def drive(self, params: np.ndarray, eye_closure: float = 0.0) -> DrivenFrame:
        """Pose one frame: ``params`` [5] articulation, ``eye_closure`` 0..1."""
        p = check_params(np.atleast_2d(np.asarray(params, np.float64)), "params")[0]
        driven = self.rig.drive(p)
        at_source = float(self.rig.reference_weight(p[None])[0])
        vertices = driven if at_source == 0.0 else driven + at_source * self.texture_offset
        warp = self.mesh.field(vertices, self.smooth, _SEAMS, keep=self.keep)
        regions = drive_regions(self.regions, warp, driven)
        eye_closure = float(eye_closure)
        if eye_closure > 0:
            driven = close_eyelids(driven, eye_closure, self.blink_gate.strengths)
            close_eye_regions(regions, self.rig.reference, driven, self.iod)
        return DrivenFrame(p.astype(np.float32), eye_closure, driven, regions, warp, self)

    def paint(self, pose: DrivenFrame) -> np.ndarray:
        """The crop [S, S, 3] uint8 of a pose made by :meth:`drive`."""
        crop = pose.warp.apply(self.crop)
        p = pose.params.astype(np.float64)
        # The source's own mouth (its teeth, its cavity) stands at its own pose; the painted
        # interior takes over as the pose leaves it. A closed source has no mouth of its own to
        # fade from: mixed in, its warped lips would show the stretched seam as stripes.
        at_source = float(self.rig.reference_weight(p[None])[0])
        if at_source < 1.0:
            at_source *= self.seal
            box = self.window.slices
            kept = crop[box].copy() if at_source > 0.0 else None
            # Lids move only eye points, so the mouth points of the lidded landmarks are the rig's.
            self.interior.composite(crop, pose.landmarks, self.rig.jaw_offset(p)[0], p[TEETH], self.seal)
            if kept is not None:
                painted = crop[box].astype(np.float32)
                mixed = painted + at_source * (kept.astype(np.float32) - painted)
                crop[box] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
            # After the mix: near the source pose the lip is the source's thickness and gets no
            # shade anyway, and a lip that is fuller is so whatever the interior does.
            lower_lip_shadow(crop, pose.landmarks, self.rig.reference, self.iod)
        if pose.eye_closure > 0:
            paint_eyelids(crop, self.crop, self.rig.reference, pose.landmarks, self.iod, self.blink_gate.protect)
        return crop

    def frame(self, params: np.ndarray, eye_closure: float = 0.0, image: bool = True) -> RenderedFrame:
        """Pose and draw one frame from ``params`` [5]; ``image=False`` skips the pixels (crop
        ``None``)."""
        pose = self.drive(params, eye_closure)
        crop = self.paint(pose) if image else None
        return RenderedFrame(crop, pose.regions, pose.landmarks)


def eye_closure_schedule(options: RenderOptions, num_frames: int, fps: float) -> np.ndarray:
    """The blink schedule [T] float32 of a portrait rendered with ``options`` (zeros without
    blinks)."""
    if not options.blink:
        return np.zeros(num_frames, np.float32)
    return blink_schedule(num_frames, fps, options.blink_seed, options.blink_config)


def _build_mesh(rig: MouthRig, size: int, texture: np.ndarray) -> MeshWarp:
    """Triangulation of the region any parameter values can move, plus a margin; ``texture``
    [478, 3]: where each landmark samples the source (:func:`_lip_texture_points`)."""
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
    return MeshWarp.build(texture, topology, box, 0.2 * rig.frame.iod)


def _lip_texture_points(rig: MouthRig, crop: np.ndarray) -> np.ndarray:
    """Source positions the warp samples: the reference, with the inner lip contour of an *open*
    mouth moved to where the lips' own colour ends (:func:`.lip_texture.lip_edge_points`).

    Face-mesh inner contours of an open mouth often sit over the teeth or the cavity; a closing
    mouth stretches that band across the lips as white or dark streaks, and the lips read as
    thin. At least the fixed inset of old is kept (half way to the next ring of lip points, at
    most :data:`_INSET_MAX` IOD): where the colours do not tell an edge, the mesh's contour is
    still a pixel or two off. A closed reference is left exact (rest renders equal the source).
    """
    texture = rig.reference.copy()
    openness = _openness(rig)
    if openness == 0.0:
        return texture
    inner = np.array(T.LIPS_INNER_UPPER + T.LIPS_INNER_LOWER)
    ring = np.array(LIPS_UPPER_SEMI_INNER + LIPS_LOWER_SEMI_INNER)
    step = _INSET * openness * (rig.reference[ring, :2] - rig.reference[inner, :2])
    length = np.linalg.norm(step, axis=1, keepdims=True)
    limit = _INSET_MAX * rig.frame.iod
    step *= np.minimum(1.0, limit / np.maximum(length, 1e-9))
    edge = lip_edge_points(crop, rig.reference, openness)
    texture[:, :2] = edge[:, :2]
    moved = np.linalg.norm(edge[inner, :2] - rig.reference[inner, :2], axis=1)
    inset = moved < length[:, 0]
    texture[inner[inset], :2] = rig.reference[inner[inset], :2] + step[inset]
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
