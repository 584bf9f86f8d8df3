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
