"""Soft tissue of the built-in mouth interior: cavity, tongue, lip shadow, wet inner lips, grain.

All of it is drawn over a box of the crop from the *driven* inner-lip contours, in the closed-rest
face frame (IOD units, u along the eye line, v down the face):

* **cavity** -- dark red-brown, darkest in the middle and back (the throat, where no light gets),
  lighter within a few pixels of the lip edge where light falls in, more towards the lower lip
  (light comes from above and in front, the upper lip shades the top); the cheeks' insides at the
  corners are in shadow too;
* **tongue** -- its top edge is the back of the tongue: a dome below the upper teeth (highest at
  the midline, falling towards the cheeks), darker at the top (further back) and brighter towards
  the front, with a faint midline groove and a soft wet highlight;
* **lip shadow** -- the upper lip overhangs the opening, so everything just under it is darker
  (a soft exponential fall-off), and the lower lip leaves a thin contact shadow;
* **wet lips** -- the inner, wet surface of both lips: a thin darker-red band along the inner lip
  edge with a glossy line where the lower lip faces the light;
* **lower lip shadow** -- outside the opening: a lower lip the pose makes fuller than the
  source's is a relaxed, rounder lip, with a soft warm shadow along its outer border;
* **grain** -- a fixed, seeded noise field of the crop's size (shared by all faces: equal inputs
  give equal pixels), scaled so its fine residual matches the source skin's.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools

import cv2
import numpy as np

from ..face import mesh_topology as T
from .mouth_palette import GRAIN_SIGMA, MouthPalette
from .rig import FaceFrame
from .warp import Box

_GRAIN_SEED = 1313
# The lower lip's border shade (lower_lip_shadow): darkening at its peak, its width (sigma) and
# how far outside the border it peaks (IOD), and the thickening (share of the source's lip
# thickness) over which it grows to full.
_LOWER_LIP_SHADE = 0.18
_LOWER_LIP_SIGMA = 0.02
_LOWER_LIP_OFFSET = 0.03
_FULLER_SPAN = 0.3
_LOWER_LIP_TAPER = 0.15  # share of the contour's length at each end over which it fades in
# Shadow on skin is warmer than the lit skin (light scattered inside it comes out reddish): blue
# darkens most, red least; a neutral darkening of pale skin reads as a grey pencil line.
_SHADOW_TINT = np.array([0.8, 1.0, 1.2])


@dataclass(frozen=True)
class Opening:
    """Per-pixel geometry of a driven mouth opening over ``box``, all [h, w] float32 arrays.

    ``u``, ``v``: face-frame coordinates (IOD); ``top``/``bottom``: v of the upper / lower inner lip
    edge in the pixel's column; ``across``: -1 .. 1 from one inner mouth corner to the other;
    ``depth``: distance to the lip edge inside the opening (IOD, 0 outside); ``height``: the
    opening's height at the midline (IOD); ``centre_u``, ``centre_bottom``: the midline's u and the
    lower lip's v there.
    """

    box: Box
    u: np.ndarray
    v: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    across: np.ndarray
    depth: np.ndarray
    height: float
    centre_u: float
    centre_bottom: float

    @staticmethod
    def measure(frame: FaceFrame, driven: np.ndarray, box: Box, mask: np.ndarray) -> "Opening":
        """``driven`` [478, 2+] crop px, ``mask`` [h, w] uint8 of the inner-lip polygon over ``box``."""
        assert mask.shape == box.shape, (mask.shape, box.shape)
        xs = np.arange(box.x0, box.x1, dtype=np.float64)[None, :, None]
        ys = np.arange(box.y0, box.y1, dtype=np.float64)[:, None, None]
        # float32 per-pixel geometry: sub-1e-6 IOD precision is plenty and halves the traffic.
        uv = frame.to_face(np.concatenate(np.broadcast_arrays(xs, ys), axis=-1)).astype(np.float32)
        u, v = uv[..., 0], uv[..., 1]
        upper = frame.to_face(np.asarray(driven)[list(T.LIPS_INNER_UPPER), :2])
        lower = frame.to_face(np.asarray(driven)[list(T.LIPS_INNER_LOWER), :2])
        top = _contour(upper, u).astype(np.float32)
        bottom = _contour(lower, u).astype(np.float32)
        left = 0.5 * (upper[0, 0] + lower[0, 0])
        right = 0.5 * (upper[-1, 0] + lower[-1, 0])
        centre = 0.5 * (left + right)
        half = max(abs(right - left) / 2.0, 1.0 / frame.iod)
        depth = cv2.distanceTransform(mask, cv2.DIST_L2, 3) / np.float32(frame.iod)
        centre_top = float(np.interp(centre, *_sorted(upper)))
        centre_bottom = float(np.interp(centre, *_sorted(lower)))
        return Opening(
            box, u, v, top, bottom, np.clip((u - centre) / np.float32(half), -1.0, 1.0), depth,
            max(centre_bottom - centre_top, 1.0 / frame.iod), float(centre), centre_bottom,
        )

    @property
    def down(self) -> np.ndarray:
        """0 at the upper lip edge .. 1 at the lower lip edge, per pixel."""
        return np.clip((self.v - self.top) / np.maximum(self.bottom - self.top, 1e-3), 0.0, 1.0)


def cavity(op: Opening, palette: MouthPalette) -> np.ndarray:
    """Cavity colour [h, w, 3] float32: lit near the lip edge (more so low down), dark behind."""
    reach = 0.015 + 0.12 * op.height  # light gets further into a wider opening
    rim = np.exp(-op.depth / reach) * (0.4 + 0.6 * op.down)
    corners = 1.0 - 0.35 * _smoothstep((np.abs(op.across) - 0.55) / 0.45)
    light = (rim * corners)[..., None]
    deep = palette.cavity_deep * corners[..., None].astype(np.float32)
    return (deep + light * (palette.cavity - deep)).astype(np.float32)


def tongue(
    op: Opening, palette: MouthPalette, top_centre: float, iod: float
) -> tuple[np.ndarray, np.ndarray]:
    """Tongue colour [h, w, 3] and coverage [h, w] with its top at ``top_centre`` (v, IOD) on the
    midline, falling towards the corners down to the lower lip."""
    # A dome narrower than the opening: the cheeks' insides show beside it.
    fall = 0.9 * max(op.centre_bottom - top_centre, 0.0)
    top = top_centre + fall * (op.across / 0.8) ** 2
    soft = 1.5 / iod + 0.008  # the back of the tongue is out of focus and round: a soft edge
    cover = _smoothstep((op.v - top) / soft + 0.5)
    front = np.clip((op.v - top) / np.maximum(op.bottom - top, 0.02), 0.0, 1.0)
    shade = (0.45 + 0.55 * _smoothstep(front / 0.8)) * (1.0 - 0.5 * np.minimum(op.across**2, 1.0))
    groove = 1.0 - 0.18 * np.exp(-(((op.u - op.centre_u) * iod / max(1.0, 0.012 * iod)) ** 2)) * (1.0 - front)
    gloss = 0.22 * np.exp(-((op.across / 0.28) ** 2 + ((front - 0.45) / 0.22) ** 2))
    rgb = palette.tongue * (shade * groove)[..., None] + gloss[..., None] * palette.teeth
    return rgb.astype(np.float32), cover


def lip_shadow(op: Opening, iod: float) -> np.ndarray:
    """Multiplier [h, w] (0..1): the upper lip's soft shadow and the lower lip's contact shadow."""
    below_upper = np.maximum(op.v - op.top, 0.0)
    above_lower = np.maximum(op.bottom - op.v, 0.0)
    reach = max(0.02, 2.5 / iod)
    upper = 0.32 * np.exp(-below_upper / reach)
    lower = 0.15 * np.exp(-above_lower / max(0.012, 1.5 / iod))
    return (1.0 - upper) * (1.0 - lower)


def wet_lips(op: Opening, palette: MouthPalette, iod: float) -> tuple[np.ndarray, np.ndarray]:
    """Inner lip surface: colour [h, w, 3] and coverage [h, w] of the band along the lip edge."""
    width = max(0.011, 1.3 / iod)
    cover = 0.65 * np.exp(-op.depth / width) * (op.depth > 0)
    lower = _smoothstep((op.down - 0.35) / 0.3)  # which lip a band pixel belongs to
    line = np.exp(-(((op.depth - 0.8 * width) / (0.4 * width)) ** 2))
    gloss = line * (0.06 + 0.2 * lower)
    rgb = palette.wet * (0.75 + 0.25 * lower)[..., None] + gloss[..., None] * palette.teeth
    return rgb.astype(np.float32), cover


def lower_lip_shadow(image: np.ndarray, driven: np.ndarray, reference: np.ndarray, iod: float) -> None:
    """Shade the lower lip's outer border in ``image`` [S, S, 3] uint8 (in place) where the pose
    made that lip fuller than the source's: ``driven`` / ``reference`` [478, 2+] crop px.

    A lip that the rig thickens (sealing from a dropped jaw, less retraction than the source's)
    is a relaxed lip: rounder, its lower half turning down away from the light, with a thin shadow
    where it overhangs the chin. The warp cannot make that: it stretches the source's lip, which
    -- in an open, smiling source -- is flat and pulled over the teeth, so its border stays faint,
    and on pale lips the face mesh reads the lower lip as thinner and higher than drawn (on the
    open-mouth face the re-detected lower lip lay along the bottom of the opening). The shade grows
    with how much thicker than the source the lip is at each point of the contour (none at or
    below the source's thickness, so rest frames stay the source, full from 1.3x), fades out
    towards the corners, and is a soft band centred just outside the border.
    """
    outer_ids, inner_ids = np.array(T.LIPS_OUTER_LOWER), np.array(T.LIPS_INNER_LOWER)
    driven = np.asarray(driven, np.float64)[:, :2]
    reference = np.asarray(reference, np.float64)[:, :2]
    thick = np.linalg.norm(driven[outer_ids] - driven[inner_ids], axis=1)
    source = np.linalg.norm(reference[outer_ids] - reference[inner_ids], axis=1)
    fuller = np.clip((thick / np.maximum(source, 1.0) - 1.0) / _FULLER_SPAN, 0.0, 1.0)
    contour = driven[outer_ids]
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(contour, axis=0), axis=1))])
    ends = np.minimum(along, along[-1] - along) / max(along[-1], 1e-6)
    weight = _LOWER_LIP_SHADE * fuller * _smoothstep(ends / _LOWER_LIP_TAPER)
    if weight.max() <= 0.0:
        return
    sigma = _LOWER_LIP_SIGMA * iod
    offset = _LOWER_LIP_OFFSET * iod
    box = Box.around(contour, 4.0 * sigma + offset + 2.0, image.shape[0])
    dist2, level = polyline_distance(contour, weight, box)
    lip = np.zeros(box.shape, np.uint8)
    polygon = np.concatenate([contour, driven[inner_ids][::-1]]) - [box.x0, box.y0]
    cv2.fillPoly(lip, [np.round(polygon * 16).astype(np.int32)], 1, cv2.LINE_AA, 4)
    signed = np.where(lip > 0, -1.0, 1.0) * np.sqrt(dist2)  # > 0 outside the lip
    shade = level * np.exp(-0.5 * ((signed - offset) / sigma) ** 2)
    window = image[box.slices].astype(np.float64) * (1.0 - shade[..., None] * _SHADOW_TINT)
    image[box.slices] = np.clip(window + 0.5, 0, 255).astype(np.uint8)


def polyline_distance(points: np.ndarray, weight: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of ``box``: squared distance to the polyline ``points`` [N, 2] crop px, and
    ``weight`` [N] interpolated at the nearest point of it: two float64 [h, w] arrays."""
    ys, xs = np.mgrid[box.y0:box.y1, box.x0:box.x1].astype(np.float64)
    best = np.full(box.shape, np.inf)
    level = np.zeros(box.shape)
    for k in range(len(points) - 1):
        a, d = points[k], points[k + 1] - points[k]
        t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
        dist2 = (xs - a[0] - t * d[0]) ** 2 + (ys - a[1] - t * d[1]) ** 2
        closer = dist2 < best
        best = np.where(closer, dist2, best)
        level = np.where(closer, weight[k] + t * (weight[k + 1] - weight[k]), level)
    return best, level


def add_grain(rgb: np.ndarray, box: Box, size: int, grain: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``rgb`` [h, w, 3] plus the crop's fixed noise field over ``box``, scaled per channel by
    ``grain`` [3] and per pixel by ``weight`` [h, w]."""
    if not np.any(grain > 0):
        return rgb
    noise = grain_field(size)[box.slices]
    return rgb + (noise * weight)[..., None] * grain.astype(np.float32)


@functools.lru_cache(maxsize=4)
def grain_field(size: int) -> np.ndarray:
    """Seeded noise [size, size] float32, slightly blurred like demosaiced sensor noise, scaled
    so that its residual after a :data:`GRAIN_SIGMA` blur has unit std -- the measure the
    source's grain is given in (read-only; shared by every face of that crop size)."""
    field = np.random.default_rng(_GRAIN_SEED).standard_normal((size, size)).astype(np.float32)
    field = cv2.GaussianBlur(field, (0, 0), 0.6)
    residual = field - cv2.GaussianBlur(field, (0, 0), GRAIN_SIGMA)
    field /= max(float(residual.std()), 1e-6)
    field.flags.writeable = False
    return field


def _contour(points: np.ndarray, u: np.ndarray) -> np.ndarray:
    """v of a lip contour ``[N, 2]`` (u, v) at each u (clamped at the ends)."""
    return np.interp(u, *_sorted(points))


def _sorted(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0], kind="stable")
    return points[order, 0], points[order, 1]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
