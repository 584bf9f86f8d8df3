"""Natural blinks for portraits: a seeded schedule, eyelid landmarks and painted lids.

A still portrait that talks without ever blinking looks dead. :func:`blink_schedule` makes a
per-frame eyelid closure (0 open .. 1 shut): one blink every 3-5 s, 0.15-0.25 s long, fast
closing (35 %), a short hold, slower opening; none within ``margin_s`` of either end of the clip,
so a looped clip does not cut through a blink. The same seed gives the same schedule.

The lids are *painted*, not warped: the upper lid slides over the eyeball, so the iris stays
where it is and is covered. Warping the thin visible strip of lid over the whole eye instead would
smear the lashes into a broad dark band. Lid colour is taken per column from the skin just above
the source's upper lid; a dark lash line follows the driven lid edge.

Each eye can be gated (:mod:`.eye_visibility` says how far: 0 behind sunglasses or goggles):
:func:`close_eyelids` takes a per-eye strength, and the painting follows the lids it gets, so a
gated-off eye is left exactly as it is; pixels given as ``protect`` (eyeglasses) are never painted.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .mouth_segmentation import polygon_mask
from .warp import Box

EYES = L.region_index("eyes")
SKIN = L.region_index("skin")
# (upper lid path, lower lid path) of each eye, corners shared at both ends.
_LIDS = ((T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER), (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER))
_UPPER_SHARE = 0.8  # of the eye opening, the upper lid travels this part (the lower the rest)
_LASH_MARGIN = 0.025  # IOD: how far the source's upper lashes reach above its lid contour


@dataclass(frozen=True)
class BlinkConfig:
    """Timing of natural blinks, in seconds."""

    interval_s: tuple[float, float] = (3.0, 5.0)
    duration_s: tuple[float, float] = (0.15, 0.25)
    margin_s: float = 0.5


def blink_schedule(
    num_frames: int, fps: float, seed: int = 0, config: BlinkConfig | None = None
) -> np.ndarray:
    """Eyelid closure per frame, float32 ``[num_frames]`` in 0..1 (1 = shut).

    Every blink has at least one fully shut frame (its peak frame is set to 1), so a blink is
    visible even at low frame rates.
    """
    config = config or BlinkConfig()
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    lo, hi = config.interval_s
    if not 0 < lo <= hi or not 0 < config.duration_s[0] <= config.duration_s[1]:
        raise ValueError(f"blink interval/duration ranges must be positive (low <= high): {config}")
    closure = np.zeros(num_frames, np.float32)
    total = num_frames / fps
    times = np.arange(num_frames) / fps
    rng = np.random.default_rng(seed)
    start = config.margin_s + rng.uniform(0.3, 1.0) * rng.uniform(lo, hi)
    while True:
        duration = rng.uniform(*config.duration_s)
        if start + duration > total - config.margin_s:
            break
        phase = (times - start) / duration
        within = (phase >= 0) & (phase <= 1)
        if within.any():
            shape = _blink_shape(phase[within])
            shape[np.argmax(shape)] = 1.0
            closure[within] = np.maximum(closure[within], shape)
        start += duration + rng.uniform(lo, hi)
    return closure


def _blink_shape(phase: np.ndarray) -> np.ndarray:
    """Closure over one blink's phase 0..1: close in 35 %, hold 15 %, open in 50 %."""
    closing = _smoothstep(phase / 0.35)
    opening = 1.0 - _smoothstep((phase - 0.5) / 0.5)
    return np.where(phase < 0.5, closing, opening).astype(np.float32)


def close_eyelids(
    landmarks: np.ndarray, closure: np.ndarray | float,
    strength: tuple[float, float] | None = None,
) -> np.ndarray:
    """Landmarks with the lids closed by ``closure``: ``[T, 478, 3]`` + ``[T]`` (or one frame).

    Upper and lower lid points meet at 80 % of the way down the opening when ``closure`` is 1;
    eye corners and irises do not move. ``strength`` (right, left) 0..1 scales each eye's
    closure (:attr:`.eye_visibility.BlinkGate.strengths`: 0 leaves an eye that cannot be seen
    open, so nothing is painted there); default both 1.
    """
    out = np.array(landmarks, dtype=np.float32, copy=True)
    single = out.ndim == 2
    if single:
        out = out[None]
    c = np.asarray(closure, np.float32).reshape(-1, 1, 1)
    assert len(c) == len(out), (len(c), len(out))
    strength = _check_strength(strength)
    for (upper, lower), share in zip(_LIDS, strength):
        if share == 0.0:
            continue
        up, low = list(upper[1:-1]), list(lower[1:-1])
        gap = out[:, low, :2] - out[:, up, :2]
        out[:, up, :2] += share * c * _UPPER_SHARE * gap
        out[:, low, :2] -= share * c * (1.0 - _UPPER_SHARE) * gap
    return out[0] if single else out


def _check_strength(strength: tuple[float, float] | None) -> tuple[float, float]:
    if strength is None:
        return 1.0, 1.0
    values = tuple(float(s) for s in strength)
    if len(values) != 2 or not all(0.0 <= s <= 1.0 for s in values):
        raise ValueError(
            f"blink strength must be two values 0..1 (right eye, left eye), got {strength!r}"
        )
    return values


def _eye_boxes(source: np.ndarray, iod: float, size: int) -> list[Box]:
    return [
        Box.around(source[list(upper + lower), :2], 0.12 * iod, size) for upper, lower in _LIDS
    ]


def _polygon(landmarks: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]) -> np.ndarray:
    return np.asarray(landmarks)[list(T.closed_polygon(upper, lower)), :2]


def close_eye_regions(
    regions: np.ndarray, source: np.ndarray, driven: np.ndarray, iod: float
) -> np.ndarray:
    """Relabel eye pixels covered by the driven lids as skin (in place; returns ``regions``)."""
    for box, (upper, lower) in zip(_eye_boxes(source, iod, regions.shape[0]), _LIDS):
        opening = polygon_mask(_polygon(driven, upper, lower), box)
        window = regions[box.slices]
        window[(window == EYES) & (opening == 0)] = SKIN
    return regions


def paint_eyelids(
    image: np.ndarray, source_image: np.ndarray, source: np.ndarray, driven: np.ndarray,
    iod: float, protect: np.ndarray | None = None,
) -> np.ndarray:
    """Paint closed-over lids into ``image`` [S, S, 3] uint8 (in place; returns it).

    ``source_image``: the source crop (lid colours come from it); ``source``/``driven``
    [478, 2+]: lid positions in the source and in this frame (how far each eye is shut comes
    from them, so a gated eye -- ``close_eyelids(..., strength)`` -- is painted as far as it
    closed). ``protect`` [S, S] bool: pixels never painted (eyeglasses frames and lenses lie
    in front of the lids: :attr:`.eye_visibility.BlinkGate.protect`).
    """
    if protect is not None and np.shape(protect) != image.shape[:2]:
        raise ValueError(
            f"protect must be a mask [S, S] like the image {image.shape[:2]}, "
            f"got {np.shape(protect)}"
        )
    sigma = max(0.7, 0.008 * iod)
    for box, (upper, lower) in zip(_eye_boxes(source, iod, image.shape[0]), _LIDS):
        closed = _closed_share(source, driven, upper, lower)
        if closed <= 1e-3:
            continue
        # The source's own lash line lies just above its upper lid contour: cover it too, more
        # as the lid comes down.
        margin = _LASH_MARGIN * iod * float(_smoothstep(closed / 0.5))
        grown = _polygon(source, upper, lower).astype(np.float64)
        grown[: len(upper), 1] -= margin
        grown[len(upper):, 1] += 0.3 * margin
        rest = polygon_mask(grown, box).astype(np.float32)
        opening = polygon_mask(_polygon(driven, upper, lower), box)
        cover = cv2.GaussianBlur(rest, (0, 0), sigma) * (
            1.0 - cv2.GaussianBlur(opening.astype(np.float32), (0, 0), sigma)
        )
        # Fade in: the blurred edges of two equal polygons would otherwise paint a faint ring
        # the moment a blink starts.
        cover = np.clip(cover * 1.5, 0.0, 1.0) * float(_smoothstep(closed / 0.1))
        if protect is not None:
            cover[np.asarray(protect)[box.slices]] = 0.0
        if cover.max() < 1e-3:
            continue
        xs = np.arange(box.x0, box.x1, dtype=np.float64)
        colour = _lid_colour(source_image, xs, _path_y(source, upper, xs), _path_y(source, lower, xs), iod)
        ys = np.arange(box.y0, box.y1, dtype=np.float64)[:, None]
        above = _path_y(driven, upper, xs)[None] - ys  # px above the driven lid edge
        width = max(1.0, 0.012 * iod)
        lash = 1.0 - 0.5 * np.exp(-((above / width) ** 2))
        lid = colour[None] * lash[..., None]
        window = image[box.slices].astype(np.float32) / 255.0
        blended = window + cover[..., None] * (lid - window)
        image[box.slices] = np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image


def _closed_share(
    source: np.ndarray, driven: np.ndarray, upper: tuple[int, ...], lower: tuple[int, ...]
) -> float:
    """How far one eye is shut in ``driven`` relative to ``source``: 0 open .. 1 shut."""
    up, low = list(upper[1:-1]), list(lower[1:-1])
    height = np.asarray(source)[low, 1] - np.asarray(source)[up, 1]
    now = np.asarray(driven)[low, 1] - np.asarray(driven)[up, 1]
    return float(np.clip(1.0 - now.sum() / max(height.sum(), 1e-6), 0.0, 1.0))


def _path_y(landmarks: np.ndarray, path: tuple[int, ...], xs: np.ndarray) -> np.ndarray:
    """y of a lid path at each x (linear between its points, flat beyond the corners)."""
    pts = np.asarray(landmarks, np.float64)[list(path), :2]
    order = np.argsort(pts[:, 0])
    return np.interp(xs, pts[order, 0], pts[order, 1])


def _lid_colour(
    image: np.ndarray, xs: np.ndarray, upper_y: np.ndarray, lower_y: np.ndarray, iod: float
) -> np.ndarray:
    """Per column, the colour of a closed lid [W, 3] 0..1: the mean of the skin 0.05-0.10 IOD above
    the upper lid (the crease, often shadowed) and 0.04-0.08 IOD below the lower lid (lighter)."""
    size = image.shape[0]
    cols = np.clip(np.round(xs).astype(int), 0, size - 1)[None]
    bands = []
    for edge, offsets in ((upper_y, -np.linspace(0.05, 0.10, 4)), (lower_y, np.linspace(0.04, 0.08, 4))):
        rows = np.clip(np.round(edge[None] + offsets[:, None] * iod).astype(int), 0, size - 1)
        bands.append(image[rows, np.broadcast_to(cols, rows.shape)].astype(np.float32).mean(axis=0))
    colour = 0.5 * (bands[0] + bands[1]) / 255.0
    return cv2.blur(colour[None], (7, 1))[0]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def eye_pixels(regions: np.ndarray, source: np.ndarray, iod: float) -> int:
    """Eye pixels of a 12-region map [S, S] inside the eye boxes of the source's landmarks."""
    return sum(
        int((regions[box.slices] == EYES).sum()) for box in _eye_boxes(source, iod, regions.shape[0])
    )


class EyeClosureReader:
    """How far a map's eyes are shut (0 open .. 1 shut), relative to the source's own eyes.

    The built-in segmentation closes an eye by relabelling what the lids cover as skin, so the
    eye area falls monotonically with closure; the curve is sampled once for this source and
    read backwards. A source without visible eyes reads as 0 (nothing to close).

    ``strength``: the per-eye blink gate the renderer closes the lids with (see
    :func:`close_eyelids`); the curve is sampled through it, so a map the renderer made reads back
    the closure it was driven with (not the gated, smaller one, which would gate it twice). With
    both eyes gated off the areas never change and any map reads as 0.
    """

    def __init__(
        self, source_regions: np.ndarray, source: np.ndarray, iod: float, samples: int = 11,
        strength: tuple[float, float] | None = None,
    ) -> None:
        self.source = np.asarray(source)
        self.iod = float(iod)
        self.closures = np.linspace(0.0, 1.0, samples)
        strength = _check_strength(strength)
        self.areas = np.array([
            eye_pixels(
                close_eye_regions(
                    source_regions.copy(), self.source, close_eyelids(self.source, c, strength), iod
                ),
                self.source, iod,
            )
            for c in self.closures
        ], np.float64)

    def read(self, regions: np.ndarray) -> float:
        if self.areas[0] <= 0 or self.areas[-1] >= self.areas[0]:
            return 0.0
        area = eye_pixels(regions, self.source, self.iod)
        # np.interp wants increasing x: the areas fall as closure rises.
        return float(np.clip(np.interp(area, self.areas[::-1], self.closures[::-1]), 0.0, 1.0))
