"""Idle head motion of a portrait, applied: the person moves, the background stays.

The motion of a frame (:class:`.head_motion.HeadMotion`: shift, roll, scale) is a rigid
transform ``F(x) = pivot + s R (x - pivot) + shift`` of the person about a pivot at the base of
the neck (below the chin by :data:`PIVOT_BELOW_CHIN` face heights), so a roll tilts the head on
its neck. It is applied as one backward warp: output pixel ``x`` samples the frame at
``x + w(x) (F^-1(x) - x)``, where ``w`` is the person's weight (computed once per portrait):

* 1 on the person (the selfie segmenter's mask of the whole portrait, joined with the face
  parsing's non-background pixels, which also catch hair the selfie model misses);
* fading to 0 in the background over :data:`FEATHER` face heights around the person (smoothstep
  of the distance: the background next to the person stretches a little, so no gap or seam
  opens; the fade is gentle enough that the warp never folds, see ``FEATHER``);
* fading to 0 downwards from :data:`BODY_FADE` face heights below the pivot: the head and
  shoulders move, the chest and where the frame cuts the body stay put (a body cut by the
  frame's bottom edge cannot move without showing that edge).

Pixels where ``w`` is 0 -- the far background -- keep their values bit for bit. Per frame only
the bounding box of ``w > 0`` is remapped (one ``cv2.remap``, bicubic, border replicated: hair
cut by the frame's edge continues it); the displacement is computed on a grid :data:`COARSE`
times sparser and upsampled linearly, which is exact where it is affine (where ``w`` is 1: the
person moves rigidly) and smooth elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..face.mesh_topology import CHIN, FOREHEAD_TOP
from .head_motion import HeadMotion

PIVOT_BELOW_CHIN = 0.35  # face heights: roughly where the neck meets the shoulders
# The fade around the person. The displacement at strength 1 is at most about 0.1 face heights
# (twice the sway peaks, the deepest nod, the roll at the top of the head); over a smoothstep fade
# of 0.3 face heights (slope at most 1.5 / 0.3 = 5 per face height) the warp stretches by at most
# 0.5: it never folds.
FEATHER = 0.3
# Bicubic: a sub-pixel shift by bilinear interpolation keeps only 28-42% of the finest detail
# (Laplacian energy at 0.5-0.25 px), bicubic 59-77%, at ~2.5x the cost (Lanczos: 76-87% at ~12x).
INTERPOLATION = cv2.INTER_CUBIC
COARSE = 8  # the displacement is computed on a grid this many times sparser, then upsampled
BODY_FADE = (0.3, 1.3)  # face heights below the pivot: full motion above the first, none past the second


@dataclass(frozen=True)
class PersonWarp:
    """The per-portrait part of the warp: the person's weight over the moving box.

    ``box`` (y0, y1, x0, x1): the bounding box of ``weight > 0`` in the frame; ``weight``
    [y1-y0, x1-x0] float32 0..1; ``pivot`` (x, y) frame pixels; ``face_height`` frame pixels;
    ``frame_size`` (H, W).
    """

    box: tuple[int, int, int, int]
    weight: np.ndarray
    pivot: tuple[float, float]
    face_height: float
    frame_size: tuple[int, int]

    def __post_init__(self) -> None:
        y0, y1, x0, x1 = self.box
        assert self.weight.shape == (y1 - y0, x1 - x0), (self.weight.shape, self.box)
        assert self.face_height > 0, self.face_height
        # What every frame reuses: the weight on a grid COARSE times sparser (the displacement is
        # smooth over the 0.3 face-height fade, and affine where the weight is 1, which linear
        # upsampling reproduces exactly), the box's pixel grid and its still pixels.
        height, width = y1 - y0, x1 - x0
        small = (max(2, -(-width // COARSE)), max(2, -(-height // COARSE)))
        coarse = cv2.resize(self.weight, small, interpolation=cv2.INTER_AREA) if height and width else None
        # Frame coordinates of the coarse samples, as cv2.resize (half-pixel centres) places them.
        cx = x0 + (np.arange(small[0], dtype=np.float32) + 0.5) * (width / small[0]) - 0.5
        cy = y0 + (np.arange(small[1], dtype=np.float32) + 0.5) * (height / small[1]) - 0.5
        grid_x, grid_y = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        cache = {"coarse": coarse, "cx": cx[None, :], "cy": cy[:, None], "grid": (grid_x, grid_y),
                 "still": (self.weight == 0)[..., None]}
        object.__setattr__(self, "_cache", cache)

    @classmethod
    def from_person(cls, person: np.ndarray, pivot: tuple[float, float],
                    face_height: float) -> "PersonWarp":
        """From a person mask ``[H, W]`` (bool, or probability 0..1: above 0.5 is the person)."""
        assert person.ndim == 2, person.shape
        height, width = person.shape
        inside = np.asarray(person) > 0.5
        # Distance (frame px) from the person, 0 on it; smoothstep of it is the soft weight.
        outside = np.ascontiguousarray((~inside).astype(np.uint8))
        distance = cv2.distanceTransform(outside, cv2.DIST_L2, 5)
        near = np.clip(1.0 - distance / (FEATHER * face_height), 0.0, 1.0)
        weight = near * near * (3.0 - 2.0 * near)
        start, stop = (pivot[1] + f * face_height for f in BODY_FADE)
        rows = np.clip((stop - np.arange(height, dtype=np.float32)) / max(stop - start, 1.0), 0.0, 1.0)
        weight = (weight * (rows * rows * (3.0 - 2.0 * rows))[:, None]).astype(np.float32)
        ys, xs = np.nonzero(weight > 0)
        if not len(ys):
            return cls((0, 0, 0, 0), np.zeros((0, 0), np.float32), pivot, face_height, (height, width))
        box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        y0, y1, x0, x1 = box
        return cls(box, np.ascontiguousarray(weight[y0:y1, x0:x1]), pivot, float(face_height), (height, width))

    def apply(self, frame: np.ndarray, motion: HeadMotion, t: int) -> np.ndarray:
        """``frame`` [H, W, 3] uint8 with the person moved by frame ``t`` of ``motion``: a new
        array, or ``frame`` itself when that frame has no motion or nothing moves."""
        assert frame.shape[:2] == self.frame_size, (frame.shape, self.frame_size)
        y0, y1, x0, x1 = self.box
        if motion.is_still(t) or y1 <= y0:
            return frame
        inverse = self._inverse(motion, t)
        c = self._cache
        cx, cy, coarse = c["cx"], c["cy"], c["coarse"]
        # w (F^-1(x) - x) on the coarse grid (F^-1 is affine, so is its offset from x), upsampled.
        dx = coarse * ((inverse[0, 0] - 1.0) * cx + inverse[0, 1] * cy + inverse[0, 2])
        dy = coarse * (inverse[1, 0] * cx + (inverse[1, 1] - 1.0) * cy + inverse[1, 2])
        size = (x1 - x0, y1 - y0)
        grid_x, grid_y = c["grid"]
        map_x = grid_x + cv2.resize(dx.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        map_y = grid_y + cv2.resize(dy.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        moved = cv2.remap(frame, map_x, map_y, INTERPOLATION, borderMode=cv2.BORDER_REPLICATE)
        # Pixels beyond the fade (weight 0) keep their own values exactly: the upsampled
        # displacement is not exactly 0 next to the fade.
        np.copyto(moved, frame[y0:y1, x0:x1], where=c["still"])
        out = frame.copy()
        out[y0:y1, x0:x1] = moved
        return out

    def _inverse(self, motion: HeadMotion, t: int) -> np.ndarray:
        """``F^-1`` of frame ``t`` as a 2x3 affine (frame px -> frame px), float32."""
        px, py = self.pivot
        angle = np.deg2rad(float(motion.roll[t]))
        scale = 1.0 + float(motion.scale[t])
        # F(x) = p + s R (x - p) + d  =>  F^-1(y) = p + R^T (y - p - d) / s.
        cos, sin = np.cos(angle), np.sin(angle)
        rotation_t = np.array([[cos, sin], [-sin, cos]]) / scale  # R^T / s (R: clockwise on screen, y down)
        shift = motion.shift[t].astype(np.float64) * self.face_height
        pivot = np.array([px, py])
        offset = pivot - rotation_t @ (pivot + shift)
        return np.concatenate([rotation_t, offset[:, None]], axis=1).astype(np.float32)


def face_geometry(landmarks: np.ndarray, transform: np.ndarray) -> tuple[tuple[float, float], float]:
    """(pivot (x, y), face height) in frame pixels from crop-space landmarks ``[478, 2+]`` and the
    frame -> crop affine ``[2, 3]``: the pivot lies below the chin along the face's own
    forehead-to-chin line (a tilted face pivots on its own neck)."""
    top = np.asarray(landmarks[FOREHEAD_TOP, :2], np.float64)
    chin = np.asarray(landmarks[CHIN, :2], np.float64)
    to_frame = cv2.invertAffineTransform(np.asarray(transform, np.float64))
    top_f = to_frame[:, :2] @ top + to_frame[:, 2]
    chin_f = to_frame[:, :2] @ chin + to_frame[:, 2]
    height = float(np.linalg.norm(chin_f - top_f))
    pivot = chin_f + PIVOT_BELOW_CHIN * (chin_f - top_f)
    return (float(pivot[0]), float(pivot[1])), height


def portrait_warp(frame: np.ndarray, labels: np.ndarray, landmarks: np.ndarray,
                  transform: np.ndarray, use_selfie: bool = True) -> PersonWarp:
    """The :class:`PersonWarp` of a portrait ``frame`` [H, W, 3] uint8 with its crop's parsing
    ``labels`` [S, S] (BiSeNet order: 0 is background), landmarks [478, 2+] (crop px) and frame ->
    crop affine [2, 3]. ``use_selfie``: False leaves the person to the parsing alone (the crop:
    the head, hair, neck and what the crop shows of the shoulders)."""
    height, width = frame.shape[:2]
    person = cv2.warpAffine(
        (np.asarray(labels) != 0).astype(np.uint8), np.asarray(transform, np.float64), (width, height),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    ) > 0
    if use_selfie:
        person |= selfie_person(frame) > 0.5
    pivot, face_height = face_geometry(landmarks, transform)
    return PersonWarp.from_person(person, pivot, face_height)


def selfie_person(frame: np.ndarray) -> np.ndarray:
    """MediaPipe selfie segmentation of the whole ``frame`` [H, W, 3] uint8: person probability
    [H, W] float32 (the pack's own PyTorch port; no download)."""
    import torch

    from ..face.torch_models.loading import selfie_segmenter

    image = torch.from_numpy(np.array(frame, np.uint8)).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        return selfie_segmenter()(image)[0].numpy()


@dataclass(frozen=True)
class MovingPortrait:
    """A portrait's person warp and its head motion schedule: ``apply(frame, t)`` moves the person
    in output frame ``t`` (the pasted frame of the talking portrait)."""

    warp: PersonWarp
    motion: HeadMotion

    def apply(self, frame: np.ndarray, t: int) -> np.ndarray:
        assert 0 <= t < len(self.motion), (t, len(self.motion))
        return self.warp.apply(frame, self.motion, t)
