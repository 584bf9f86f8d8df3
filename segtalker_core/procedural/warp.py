"""Piecewise-affine image warp driven by landmark motion, computed only where the face moves.

A *backward* map (output pixel -> source pixel) over a box around the lower face:

1. vertices are the landmarks inside the box plus fixed anchors on its border (zero
   displacement), triangulated once per source (:meth:`MeshWarp.build`) on an *open-mouth* pose,
   so upper and lower lip triangles stay separate and the mouth opening has triangles of its own
   (they collapse, without folding anything, when the mouth closes);
2. per frame each triangle's affine map driven -> source is solved in one vectorised step,
   triangle ids are rasterised with ``cv2.fillConvexPoly`` and each pixel evaluates its
   triangle's affine;
3. two levels: the whole box at half resolution, Gaussian-smoothed (a piecewise-affine map has
   kinks that stretched texture shows as facets) and upsampled; a small full-resolution window
   around the *seams* (the lips' meeting line, where the map legitimately jumps from upper to lower
   lip) replaces it within a few pixels of the seam, unsmoothed;
4. one ``cv2.remap`` of the box with a bicubic kernel (:data:`SAMPLING`).

Texture. Only the *displacement* is smoothed and evaluated at half resolution; the source itself is
sampled once, at full resolution. What still blurs is the resampling kernel at sub-pixel offsets:
bilinear at a 0.25 px offset keeps ~55% of the fine-detail energy of a grainy skin (image minus its
sigma-1 Gaussian), bicubic ~87%, Lanczos-4 ~93% but at ~15-20x the cost of bicubic in OpenCV. So
images are sampled bicubically with sub-pixel phases pulled toward whole pixels (at most 0.16 px,
:func:`_phase_table`): over a field with all phases 59% (bilinear) -> 86% (bicubic) -> 91%; on
the astronaut with synthetic stubble, closed frames keep 78% (bilinear) vs 97% -- see
:mod:`.detail` and ``tests/test_procedural_warp.py``. Bicubic interpolates (weights 0/1 at whole
offsets), so unmoved pixels stay exact.

Occluders and background (:class:`KeepMask`, optional). Hair strands and earrings beside the jaw
must not ride along with it, nor be copied into the skin that moves past them; the background
must not bend. A pixel's displacement is scaled by ``1 - k`` with
``k = max(front(p), front(q), behind(p) * behind(q))``, ``p`` the output pixel and ``q`` the source
position it would sample: hair/earrings (``front``) stay put and are never sampled elsewhere; the
background and the neck (``behind``) stay put only where they would also sample their own kind, so
a dropping chin still moves over them (and covers the top of the neck, as a real one does). Both
masks are soft (smoothstep over ``feather`` px) and the weight is spread a little further, so the
motion fades out instead of tearing. Caveat of ``behind``: where the face moves *away* from it
(a smile's chin rising to close the mouth), the uncovered face pixels still sample the kept area
beyond the old edge while that area also stays, so its edge shows twice (a neck's shadow line
doubled, which MediaPipe then reads as a lower jaw); keep the neck out of ``behind`` unless the
source's mouth is closed.

Alternatives measured or rejected: per-parameter basis fields summed per frame are wrong at the
lip line (a weighted sum of backward fields misplaces a discontinuity whose position depends on
the jaw); a full-resolution map everywhere cost ~2.5x more (the box is ~330x230 px at 512) for no
visible gain once smoothed; Delaunay of the *driven* points per frame would join upper and lower
lip across a closed mouth.

Pixels whose triangles do not move get an exact identity map, and ``cv2.remap`` at integer
coordinates returns the source pixel exactly: outside the moving area the output is bit-identical.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from ..masks import distance_outside
from .rig import check_landmarks

_SHIFT = 4  # sub-pixel precision of the rasteriser (cv2 drawing ``shift``): 1/16 px
_MOVED_EPS = 1e-4  # px: vertices closer than this to their source position count as static
_IDENTITY = np.array([1, 0, 0, 1, 0, 0], np.float64)
_SPREAD = 0.75  # Gaussian sigma of the keep weight's spread, in feathers (KeepMask.weight)
_KEEP_FULL = 1.0 - 1e-4  # keep weights above this are exactly 1 (float noise of the resampling)

# Resampling kernel of images (labels use nearest neighbour): bicubic keeps stubble and pores that
# bilinear visibly softens, at ~1 ms per frame more (Lanczos-4 costs ~30 ms in OpenCV).
SAMPLING = cv2.INTER_CUBIC


def _phase_table(steps: int = 32) -> np.ndarray:
    """Remap of cv2's sub-pixel phase indices ``ty * steps + tx`` (uint16 [steps**2]) that pulls each
    phase toward the whole pixel: ``s(t) = t - sin(2 pi t) / (2 pi)``.

    Any kernel blurs most at half-pixel phases (bicubic keeps ~75% of the grain's energy there,
    ~97% at 0.1 px); a smooth displacement field has every phase, so on average ~86% survives.
    ``s`` has zero slope at whole pixels: more samples fall near them and ~91% survives. The map
    stays continuous and monotone (no tears), the position moves by at most 1/(2 pi) px and
    whole-pixel positions (the static face) are unchanged.
    """
    t = np.arange(steps) / steps
    s = np.clip(np.round((t - np.sin(2 * np.pi * t) / (2 * np.pi)) * steps), 0, steps - 1)
    s = s.astype(np.uint16)
    return (s[:, None] * steps + s[None, :]).reshape(-1)


_PHASE_TABLE = _phase_table()
_GRAIN_SIGMA = 1.0  # px: Gaussian that splits an image into its smooth part and its grain
_GRAIN_MARGIN = 4  # px around the area a map reads, so the split has no border effect there


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int) -> np.ndarray:
    """``cv2.remap`` with the sub-pixel phases pulled toward whole pixels (:func:`_phase_table`)."""
    whole, phase = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
    return cv2.remap(image, whole, _PHASE_TABLE[phase], interpolation, borderMode=cv2.BORDER_REPLICATE)


def _sample_keeping_grain(
    image: np.ndarray,  # [S, S, C] uint8 source
    map_x: np.ndarray,  # [h, w] float32 absolute source x of each output pixel
    map_y: np.ndarray,  # [h, w] float32
    interpolation: int,
) -> np.ndarray:
    """The warped box ``[h, w, C]`` uint8 with the source's grain at full strength.

    Any interpolating kernel averages neighbours at sub-pixel offsets, and stubble, pores and
    beard strands are exactly what that averages away (bicubic keeps ~90%, less where the chin
    stretches). So the image is split at :data:`_GRAIN_SIGMA`: the smooth part is interpolated as
    before (no facets, no jaggies at lip edges), the grain is taken from the nearest source pixel
    (all of its energy; it moves at most half a pixel off, which grain does not show). Where the
    map is the identity both give back the source pixel exactly.
    """
    height, width = image.shape[:2]
    x0 = max(int(np.floor(map_x.min())) - _GRAIN_MARGIN, 0)
    y0 = max(int(np.floor(map_y.min())) - _GRAIN_MARGIN, 0)
    x1 = min(int(np.ceil(map_x.max())) + _GRAIN_MARGIN + 1, width)
    y1 = min(int(np.ceil(map_y.max())) + _GRAIN_MARGIN + 1, height)
    source = image[y0:y1, x0:x1].astype(np.float32)
    smooth = cv2.GaussianBlur(source, (0, 0), _GRAIN_SIGMA, borderType=cv2.BORDER_REPLICATE)
    grain = source - smooth
    local_x, local_y = map_x - np.float32(x0), map_y - np.float32(y0)
    out = _sample(smooth, local_x, local_y, interpolation)
    out += cv2.remap(grain, local_x, local_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Box:
    """Pixel rectangle ``[x0, x1) x [y0, y1)`` in crop coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @staticmethod
    def around(points: np.ndarray, margin: float, size: int) -> "Box":
        """Bounding box of ``[N, 2]`` points grown by ``margin`` px, clipped to a ``size`` crop."""
        lo = np.floor(np.asarray(points).min(axis=0) - margin).astype(int)
        hi = np.ceil(np.asarray(points).max(axis=0) + margin).astype(int) + 1
        x0, y0 = np.clip(lo, 0, size)
        x1, y1 = np.clip(hi, 0, size)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise ValueError(
                f"the moving face region lies outside the {size}x{size} crop; are the landmarks "
                f"in crop pixels of this crop?"
            )
        return Box(int(x0), int(y0), int(x1), int(y1))

    def intersect(self, other: "Box") -> "Box | None":
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.x1, other.x1), min(self.y1, other.y1)
        return Box(x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


@dataclass
class WarpField:
    """Backward map over ``box``: output pixel (x, y) samples the source at (map_x, map_y).

    ``map_x``/``map_y`` float32 ``[h, w]`` (absolute crop coordinates) or ``None`` for the identity;
    ``moved`` bool ``[h, w]``: pixels whose map is not the identity.
    """

    box: Box
    map_x: np.ndarray | None
    map_y: np.ndarray | None
    moved: np.ndarray | None

    @property
    def is_identity(self) -> bool:
        return self.map_x is None

    def apply(self, image: np.ndarray, interpolation: int = SAMPLING) -> np.ndarray:
        """Warped copy of ``image`` ``[S, S, ...]``; only the box changes.

        The default kernel is bicubic, which overshoots at hard edges: for soft masks or other
        0..1 maps pass ``cv2.INTER_LINEAR``."""
        out = image.copy()
        if self.map_x is None:
            return out
        if interpolation == cv2.INTER_NEAREST:
            out[self.box.slices] = cv2.remap(
                image, self.map_x, self.map_y, interpolation, borderMode=cv2.BORDER_REPLICATE
            )
            return out
        if image.dtype == np.uint8 and image.ndim == 3:
            out[self.box.slices] = _sample_keeping_grain(image, self.map_x, self.map_y, interpolation)
            return out
        out[self.box.slices] = _sample(image, self.map_x, self.map_y, interpolation)
        return out

    def apply_labels(self, labels: np.ndarray) -> np.ndarray:
        """Warped copy of a label map ``[S, S]`` (nearest neighbour)."""
        return self.apply(labels, cv2.INTER_NEAREST)


@dataclass(frozen=True)
class KeepMask:
    """Where the warp must leave the source as it is, over one mesh's ``box``.

    ``front`` float32 ``[h, w]`` 0..1: occluders (hair, earrings) that stay in place and are never
    sampled elsewhere; ``behind`` float32 ``[h, w]`` 0..1: background (and neck) that stays in place
    unless the face moves over it; ``spread``: px, Gaussian sigma by which the per-frame weight is spread;
    ``reach`` float32 ``[h, w]`` 0..1 or None: a static factor on the displacement, 0 where the
    paste-back will not show the crop whole (see :meth:`build`'s ``paste_feather``).
    Build with :meth:`build`.
    """

    box: Box
    front: np.ndarray
    behind: np.ndarray
    spread: float = 0.0
    reach: np.ndarray | None = None

    @staticmethod
    def build(
        front: np.ndarray, behind: np.ndarray | None, feather: float, box: Box,
        paste_feather: float = 0.0,
    ) -> "KeepMask":
        """Soft keep weights from crop masks ``front``/``behind`` ``[S, S]`` bool (``behind``
        ``None``: no background is kept).

        ``front`` is 1 on its mask and fades to 0 over ``feather`` px outside it (the skin next
        to a strand moves less, so the strand's edge does not wobble); ``behind`` is 0 at its
        mask's edge and reaches 1 ``feather`` px inside it (the face silhouette keeps all of its
        motion over the background).

        ``paste_feather`` (px, 0: off): the feather of the paste-back the crops go through
        (``face.paste.changed_paste_mask``). That paste leaves out unchanged non-face pixels (the
        kept ``front``) and the crop's border, erodes its area by the feather and blurs it, so
        within ~2 feathers of them the frame gets ``a * warped + (1 - a) * source``: a moved
        texture averaged with its unmoved self, a ghost that halves stubble and pore energy
        (the portrait's chin, 0.2 IOD from the crop's bottom edge, kept 0.89 of its fine detail
        on closed frames). ``reach`` fades the motion out there instead: 0 up to one feather
        from the crop border and ``front``, 1 from two feathers on (smoothstep).
        """
        front = np.asarray(front, bool)
        behind = np.zeros_like(front) if behind is None else np.asarray(behind, bool)
        if front.shape != behind.shape or front.ndim != 2:
            raise ValueError(
                f"keep masks front and behind must be [S, S] crop masks of the same shape; got "
                f"{front.shape} and {behind.shape}"
            )
        if feather < 0 or not np.isfinite(feather):
            raise ValueError(f"keep feather must be >= 0 px, got {feather}")
        # Distances are taken on the box grown by the feather, so masks just outside the box
        # still count.
        reach = int(np.ceil(feather)) + 1
        size = front.shape[0]
        grown = Box(max(box.x0 - reach, 0), max(box.y0 - reach, 0),
                    min(box.x1 + reach, front.shape[1]), min(box.y1 + reach, size))
        inner = (slice(box.y0 - grown.y0, box.y1 - grown.y0),
                 slice(box.x0 - grown.x0, box.x1 - grown.x0))
        f = _fade(distance_outside(front[grown.slices]), feather)
        b = 1.0 - _fade(distance_outside(~behind[grown.slices]), feather)
        reach_weight = None
        if paste_feather > 0:
            reach_weight = _paste_reach(front, box, float(paste_feather))
        return KeepMask(box, np.ascontiguousarray(f[inner]), np.ascontiguousarray(b[inner]),
                        _SPREAD * feather, reach_weight)

    def weight(self, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
        """``k`` [h, w] float32 for a backward map over the box (crop coordinates)."""
        bx, by = map_x - self.box.x0, map_y - self.box.y0
        pair = cv2.merge([self.front, self.behind])
        sampled = cv2.remap(pair, bx, by, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        k = np.maximum(np.maximum(self.front, sampled[..., 0]), self.behind * sampled[..., 1])
        if self.spread > 0:
            # k follows the sample positions, so it can still change within a pixel or two where
            # a thin strip of face (a mis-parsed jaw edge) lies between kept areas: the strip
            # would slide past its static neighbours and tear. Spreading k (never lowering it)
            # calms such strips while kept pixels stay exactly kept. (At half resolution: the
            # spread is smooth, and this costs a quarter.)
            half = cv2.resize(k, ((k.shape[1] + 1) // 2, (k.shape[0] + 1) // 2),
                              interpolation=cv2.INTER_AREA)
            half = cv2.GaussianBlur(half, (0, 0), self.spread / 2)
            k = np.maximum(k, cv2.resize(half, (k.shape[1], k.shape[0]),
                                         interpolation=cv2.INTER_LINEAR))
        k[k > _KEEP_FULL] = 1.0
        return k


def _paste_reach(front: np.ndarray, box: Box, feather: float) -> np.ndarray:
    """``[h, w]`` float32 over ``box``: 0 within ``feather`` px of the crop border or of
    ``front`` ``[S, S]`` bool, a smoothstep to 1 at ``2 * feather`` px (KeepMask.build)."""
    height, width = front.shape
    reach = int(np.ceil(2 * feather)) + 2
    grown = Box(max(box.x0 - reach, 0), max(box.y0 - reach, 0),
                min(box.x1 + reach, width), min(box.y1 + reach, height))
    inner = (slice(box.y0 - grown.y0, box.y1 - grown.y0), slice(box.x0 - grown.x0, box.x1 - grown.x0))
    ys = np.arange(box.y0, box.y1, dtype=np.float32)[:, None]
    xs = np.arange(box.x0, box.x1, dtype=np.float32)[None]
    edge = np.minimum(np.minimum(xs, width - 1 - xs), np.minimum(ys, height - 1 - ys))
    part = front[grown.slices]
    if part.any():
        edge = np.minimum(edge, distance_outside(part)[inner])
    t = np.clip(edge / feather - 1.0, 0.0, 1.0)
    return np.ascontiguousarray((t * t * (3.0 - 2.0 * t)).astype(np.float32))


def _fade(distance: np.ndarray, feather: float) -> np.ndarray:
    """1 at distance 0, a smoothstep to exactly 0 at ``feather`` px (a step when 0)."""
    if feather <= 0:
        return (distance <= 0).astype(np.float32)
    t = np.clip(1.0 - distance / float(feather), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


@dataclass
class MeshWarp:
    """Fixed triangulation of the moving face region of one source image. Build with :meth:`build`.

    Vertices are ``landmarks[landmark_index]`` followed by ``anchors`` [A, 2] (float64 crop px);
    ``triangles`` [K, 3] int32 index them; ``source_vertices`` [P + A, 2]: where each vertex
    lies in the source image.
    """

    box: Box
    landmark_index: np.ndarray
    anchors: np.ndarray
    triangles: np.ndarray
    source_vertices: np.ndarray

    @staticmethod
    def build(
        source_landmarks: np.ndarray, topology_landmarks: np.ndarray, box: Box,
        anchor_spacing: float,
    ) -> "MeshWarp":
        """Triangulate the landmarks inside ``box``.

        ``source_landmarks`` [478, 3]: positions in the source image; ``topology_landmarks``
        [478, 3]: a pose with the mouth open, only used to choose the triangles;
        ``anchor_spacing``: px between border anchors.
        """
        source = check_landmarks(source_landmarks, "source_landmarks")[:, :2].astype(np.float64)
        topology = check_landmarks(topology_landmarks, "topology_landmarks")[:, :2].astype(np.float64)
        anchors = _border_anchors(box, anchor_spacing)
        # Keep landmarks off the border so no vertex sits on an anchor (Qhull drops duplicates).
        inside = np.ones(len(source), bool)
        for pts in (source, topology):
            inside &= (
                (pts[:, 0] > box.x0 + 1) & (pts[:, 0] < box.x1 - 2)
                & (pts[:, 1] > box.y0 + 1) & (pts[:, 1] < box.y1 - 2)
            )
        index = np.nonzero(inside)[0]
        triangles = Delaunay(np.concatenate([topology[index], anchors])).simplices
        return MeshWarp(
            box=box, landmark_index=index, anchors=anchors,
            triangles=triangles.astype(np.int32),
            source_vertices=np.concatenate([source[index], anchors]),
        )

    def field(
        self, driven_landmarks: np.ndarray, smooth: float = 0.0,
        seams: tuple[tuple[int, ...], ...] = (), keep: KeepMask | None = None,
    ) -> WarpField:
        """Backward map for one frame's driven landmarks ``[478, 2+]`` (crop px).

        ``smooth``: Gaussian sigma (px) applied to the displacements away from the seams;
        ``seams``: landmark paths where the map may jump (kept exact at full resolution);
        ``keep``: occluders and background to leave in place (built for this mesh's box).
        """
        if keep is not None and keep.box != self.box:
            raise ValueError(f"keep was built for box {keep.box}, not this mesh's {self.box}; "
                             "build it with KeepMask.build(..., box=mesh.box)")
        landmarks = np.asarray(driven_landmarks, dtype=np.float64)
        vertices = np.concatenate([landmarks[self.landmark_index, :2], self.anchors])
        moved_vertex = np.abs(vertices - self.source_vertices).max(axis=1) > _MOVED_EPS
        moving = moved_vertex[self.triangles].any(axis=1)
        if not moving.any():
            return WarpField(self.box, None, None, None)
        coef, valid = _affines(vertices, self.source_vertices, self.triangles)
        coef = np.concatenate([coef, _IDENTITY[None]]).astype(np.float32)
        # Only moving triangles are drawn; every other pixel keeps the exact identity row (index
        # K), so the static face stays bit-exact. Slivers first: the rasteriser also paints pixels
        # just outside a triangle, which then extrapolate its affine; for a sliver (a collapsed
        # mouth opening) that lands far away, so well-shaped triangles are drawn last and win
        # the shared edges. (The drawn triangles tile the moving area without gaps: checked.)
        drawn = np.nonzero(moving & valid)[0]
        stretch = np.abs(coef[drawn, :4]).sum(axis=1)
        order = drawn[np.argsort(-stretch, kind="stable")]
        corners = vertices[self.triangles]
        box = self.box
        h, w = box.shape
        half = (np.array([box.x0, box.y0]) + 0.5, 2.0)  # half-res pixel i sits at full x0 + 2i + 0.5
        slivers = self._collapsed_openings(vertices, seams)
        ids = _nearest_kept(_rasterise(corners, order, half, ((h + 1) // 2, (w + 1) // 2)), slivers)
        xs = box.x0 + 0.5 + 2.0 * np.arange((w + 1) // 2, dtype=np.float32)
        ys = box.y0 + 0.5 + 2.0 * np.arange((h + 1) // 2, dtype=np.float32)
        dx, dy = _evaluate(coef, ids, xs, ys)
        if smooth > 0:
            dx = cv2.GaussianBlur(dx, (0, 0), smooth / 2)
            dy = cv2.GaussianBlur(dy, (0, 0), smooth / 2)
        dx = cv2.resize(dx, (2 * dx.shape[1], 2 * dx.shape[0]), interpolation=cv2.INTER_LINEAR)[:h, :w]
        dy = cv2.resize(dy, (2 * dy.shape[1], 2 * dy.shape[0]), interpolation=cv2.INTER_LINEAR)[:h, :w]

        if seams:
            self._exact_near_seams(dx, dy, coef, corners, order, landmarks, seams, max(smooth, 1.0), slivers)
        xs = np.arange(box.x0, box.x1, dtype=np.float32)[None]
        ys = np.arange(box.y0, box.y1, dtype=np.float32)[:, None]
        if keep is not None:
            free = 1.0 - keep.weight(xs + dx, ys + dy)
            if keep.reach is not None:
                free *= keep.reach
            dx *= free
            dy *= free
        moved = (np.abs(dx) + np.abs(dy)) > 1e-3
        return WarpField(box, xs + dx, ys + dy, moved)

    def _collapsed_openings(
        self, vertices: np.ndarray, seams: tuple[tuple[int, ...], ...]
    ) -> np.ndarray | None:
        """Per triangle id (the identity id last, never one): True for a triangle that samples
        the source's mouth opening (its centroid lies between the two seam paths, in the source)
        and that the pose squeezes to a sliver.

        Such a triangle maps a hairline of output onto the source's whole opening: where the
        lips meet, its pixels (and the rasteriser's stair-steps along it) would sample the
        source's cavity and teeth -- a dark dotted line, dark wedges in the corners. Those pixels
        take the map of the lip beside them instead; an opening that is open keeps its triangles
        (the interior is painted there)."""
        opening = self._opening_triangles(seams)
        if opening is None or not opening.any():
            return None
        area = _areas(vertices, self.triangles)
        sliver = opening & (area < _COLLAPSED * self._source_areas)
        return np.concatenate([sliver, [False]])

    def _opening_triangles(self, seams: tuple[tuple[int, ...], ...]) -> np.ndarray | None:
        """[K] bool: triangles whose source centroid lies inside the polygon the two seam paths
        enclose in the source (cached per seams)."""
        if len(seams) != 2:
            return None
        cache = self.__dict__.setdefault("_opening_cache", {})
        key = tuple(tuple(int(i) for i in path) for path in seams)
        if key not in cache:
            where = {int(k): j for j, k in enumerate(self.landmark_index)}
            path = list(seams[0]) + list(reversed(seams[1]))
            if not all(int(k) in where for k in path):
                cache[key] = None
            else:
                polygon = self.source_vertices[[where[int(k)] for k in path]].astype(np.float32)
                centroids = self.source_vertices[self.triangles].mean(axis=1)
                cache[key] = _strictly_inside(centroids, polygon)
        return cache[key]

    @functools.cached_property
    def _source_areas(self) -> np.ndarray:
        """Unsigned area [K] of each triangle where it lies in the source."""
        return _areas(self.source_vertices, self.triangles)

    def _exact_near_seams(
        self, dx: np.ndarray, dy: np.ndarray, coef: np.ndarray, corners: np.ndarray,
        order: np.ndarray, landmarks: np.ndarray, seams: tuple[tuple[int, ...], ...],
        sigma: float, slivers: np.ndarray | None = None,
    ) -> None:
        """Overwrite ``dx``/``dy`` (box-sized, in place) with the exact full-resolution map
        within ~2 sigma of the seams, blending softly into the smooth map."""
        points = np.concatenate([landmarks[list(path), :2] for path in seams])
        # The smoothed map mixes displacements from ~2 sigma around; across the seam that mixes
        # upper and lower lip (sampling the source's opening), so the exact band reaches 3 sigma
        # on each side, then fades over one more sigma.
        reach = int(np.ceil(5 * sigma)) + 2
        window = Box.around(points, reach, 1 << 20).intersect(self.box)
        if window is None:
            return
        low, high = corners[order].min(axis=1), corners[order].max(axis=1)
        near = (
            (high[:, 0] >= window.x0 - 1) & (low[:, 0] <= window.x1)
            & (high[:, 1] >= window.y0 - 1) & (low[:, 1] <= window.y1)
        )
        origin = np.array([window.x0, window.y0], float)
        ids = _nearest_kept(_rasterise(corners, order[near], (origin, 1.0), window.shape), slivers)
        xs = np.arange(window.x0, window.x1, dtype=np.float32)
        ys = np.arange(window.y0, window.y1, dtype=np.float32)
        exact_x, exact_y = _evaluate(coef, ids, xs, ys)
        lines = np.zeros(window.shape, np.uint8)
        paths = [
            np.round((landmarks[list(path), :2] - (window.x0, window.y0)) * (1 << _SHIFT)).astype(np.int32)
            for path in seams
        ]
        cv2.polylines(lines, paths, False, 1, max(1, int(np.ceil(7 * sigma))), cv2.LINE_8, _SHIFT)
        weight = np.clip(cv2.GaussianBlur(lines.astype(np.float32), (0, 0), sigma) * 2.0, 0.0, 1.0)
        rows = slice(window.y0 - self.box.y0, window.y1 - self.box.y0)
        cols = slice(window.x0 - self.box.x0, window.x1 - self.box.x0)
        dx[rows, cols] += weight * (exact_x - dx[rows, cols])
        dy[rows, cols] += weight * (exact_y - dy[rows, cols])


_COLLAPSED = 0.4  # an opening triangle drawn at under this share of its source area is a sliver


def _nearest_kept(ids: np.ndarray, slivers: np.ndarray | None) -> np.ndarray:
    """``ids`` [h, w] with every pixel of a triangle in ``slivers`` (bool per triangle id, the
    identity id included) given the id of the nearest pixel of any other triangle."""
    if slivers is None or not slivers.any():
        return ids
    bad = slivers[ids]
    if not bad.any() or bad.all():
        return ids
    _, label = cv2.distanceTransformWithLabels(bad.astype(np.uint8), cv2.DIST_L2, 3,
                                               labelType=cv2.DIST_LABEL_PIXEL)
    good = ids.reshape(-1)[np.flatnonzero(~bad.reshape(-1))]
    out = ids.copy()
    out[bad] = good[label[bad] - 1]
    return out


def _rasterise(
    corners: np.ndarray, order: np.ndarray, grid: tuple[np.ndarray, float], shape: tuple[int, int]
) -> np.ndarray:
    """Triangle id per pixel of a grid (``shape``) int32, ``len(corners)`` where none is drawn.

    ``corners`` [K, 3, 2] crop px; ``order``: triangles to draw, in drawing order; ``grid``:
    ``(origin, step)``: grid pixel (i, j) is centred at crop ``origin + step * (i, j)``.
    """
    origin, step = grid
    polys = np.round((corners[order] - origin) / step * (1 << _SHIFT)).astype(np.int32)
    ids = np.full(shape, len(corners), np.int32)
    for k, poly in zip(order.tolist(), polys):
        cv2.fillConvexPoly(ids, poly, k, cv2.LINE_8, _SHIFT)
    return ids


def _evaluate(
    coef: np.ndarray, ids: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Displacements ``(dx, dy)`` [h, w] float32 at grid points ``xs`` [w] x ``ys`` [h] (crop px)
    of the affine rows ``coef`` [K + 1, 6] picked by ``ids`` [h, w]. Identity rows give exactly 0."""
    c = coef[ids]
    x, y = xs[None], ys[:, None]
    dx = (c[..., 0] - 1) * x + c[..., 1] * y + c[..., 4]
    dy = c[..., 2] * x + (c[..., 3] - 1) * y + c[..., 5]
    return dx, dy


def _strictly_inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """[N] bool: ``points`` [N, 2] inside the closed ``polygon`` [P, 2] (even-odd rule, one
    vectorised crossing count; ``cv2.pointPolygonTest(...) > 0`` point by point cost ~2 ms per
    video frame). Points on an edge may fall either way."""
    x, y = points[:, None, 0], points[:, None, 1]
    x0, y0 = polygon[None, :, 0].astype(np.float64), polygon[None, :, 1].astype(np.float64)
    x1, y1 = np.roll(x0, -1, axis=1), np.roll(y0, -1, axis=1)
    spans = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (spans & (x < crossing_x)).sum(axis=1) % 2 == 1


def _areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unsigned area [K] of each triangle of ``points`` [N, 2]."""
    p = points[triangles]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _affines(
    driven: np.ndarray, source: np.ndarray, triangles: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle, the affine taking driven to source positions: coefficients ``[K, 6]``
    ``(a, b, c, d, e, f)`` with ``x_src = a x + b y + e``, ``y_src = c x + d y + f``; and which
    triangles are non-degenerate ``[K]``."""
    p0 = driven[triangles[:, 0]]
    e1 = driven[triangles[:, 1]] - p0
    e2 = driven[triangles[:, 2]] - p0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid = np.abs(det) > 1e-6
    safe = np.where(valid, det, 1.0)
    # Inverse of the 2x2 edge matrix [e1 e2] (edges as columns).
    inv = np.stack(
        [np.stack([e2[:, 1], -e2[:, 0]], 1), np.stack([-e1[:, 1], e1[:, 0]], 1)], 1
    ) / safe[:, None, None]
    q0 = source[triangles[:, 0]]
    edges = np.stack([source[triangles[:, 1]] - q0, source[triangles[:, 2]] - q0], axis=2)
    linear = edges @ inv
    offset = q0 - np.einsum("kij,kj->ki", linear, p0)
    coef = np.concatenate([linear[:, 0, :], linear[:, 1, :], offset], axis=1)
    coef[~valid] = _IDENTITY
    return coef, valid


def _border_anchors(box: Box, spacing: float) -> np.ndarray:
    """Points every ``spacing`` px around the box border (corners included), float64 [A, 2]."""
    x0, y0, x1, y1 = box.x0, box.y0, box.x1 - 1, box.y1 - 1
    nx = max(2, int(np.ceil((x1 - x0) / spacing)) + 1)
    ny = max(2, int(np.ceil((y1 - y0) / spacing)) + 1)
    xs = np.linspace(x0, x1, nx)
    ys = np.linspace(y0, y1, ny)[1:-1]
    return np.concatenate([
        np.stack([xs, np.full(nx, y0)], 1),
        np.stack([xs, np.full(nx, y1)], 1),
        np.stack([np.full(len(ys), x0), ys], 1),
        np.stack([np.full(len(ys), x1), ys], 1),
    ]).astype(np.float64)
