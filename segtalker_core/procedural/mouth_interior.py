"""Mouth interior of the built-in renderer: cavity, tongue, gums, upper and lower teeth.

Where the driven inner-lip polygon is open, a layer is composited over the warped crop, back to
front (the soft tissue is :mod:`.mouth_shading`, the colours and grain :mod:`.mouth_palette`):

* a depth-shaded cavity, dark red-brown at the back, lighter near the lip edge;
* a tongue riding on the lower jaw, its back rising as the mouth opens (below the upper teeth);
* lower teeth on the jaw: their incisal edge drops a little less than the lower lip, so they show
  as the jaw drops and stay behind the lip (and behind the upper row) when it is shut; upper teeth
  fixed to the skull and partly hidden by the upper lip; gums beyond each row's scalloped gum line;
* the lips over all of it: the upper lip's soft shadow, the wet inner lip band, then grain like
  the source's;
* when the *source* shows teeth, its own teeth pixels are reused: the row above the gap between
  the rows stays in place (upper jaw), the row below moves by the jaw difference between the frame
  and the source. Upper teeth the source hides behind its lower lip are continued column by column
  from the lowest ones it shows; synthetic teeth (coloured like the source's) fill the rest.

``teeth_visible`` moves the teeth further behind the lips at its low end and fades them there,
less so as the jaw drops (teeth do not vanish from a wide-open mouth).

In video dubbing the interior may come from the clip itself instead: with a
:class:`~.mouth_bank.MouthBank` set as :attr:`MouthInterior.bank`, the real interior of the clip's
frame whose opening is nearest the driven one is warped into the driven opening and replaces the
synthesised layers (mixed with them as the match fades; with no entry near, nothing changes).

Synthetic teeth are drawn in the face frame of the closed rest (IOD units): a dental arch seen from
the front (a tooth's width shrinks with the cosine of its angle round the arch, far teeth are
darker), thin dark gaps between teeth, rounded incisal corners, convex crowns and a slight "smile
arc" of the upper incisal edge that the lower edge follows. A small mouth (a child's) gets a
narrower arch and teeth scaled down with it.

The layer's edge is feathered (Gaussian, ``feather`` IOD) across the polygon boundary. Everything
is a pure function of (source, driven landmarks, jaw offset, visibility) -- the grain is a fixed
seeded field -- so equal parameters give equal pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..face import mesh_topology as T
from .mouth_palette import MouthPalette, luma
from .mouth_segmentation import opening_polygon, polygon_area, polygon_mask
from .mouth_shading import Opening, add_grain, cavity, lip_shadow, polyline_distance, tongue, wet_lips
from .rig import FaceFrame
from .warp import Box

if TYPE_CHECKING:  # mouth_bank imports this module
    from .mouth_bank import MouthBank

__all__ = [
    "InteriorLayers", "MouthInterior", "MouthPalette", "MouthPixels", "SourceTeeth", "TeethGeometry",
    "analyse_mouth", "extract_source_teeth",
]

# Tooth widths along the arch, centre outwards (central incisor, lateral, canine, 2 premolars),
# in IOD units for a typical adult (8.5/6.6/7.6/7/7 mm upper over a 63 mm IOD).
_UPPER_WIDTHS = np.array([0.135, 0.105, 0.12, 0.11, 0.11], np.float32)
_LOWER_WIDTHS = np.array([0.085, 0.095, 0.11, 0.11, 0.11], np.float32)
_TOOTH_SHADE = np.array([1.0, 0.96, 0.92, 0.88, 0.85], np.float32)
_NOMINAL_ARCH = 0.40  # front-view half width of the upper arch the widths above belong to
# Crown heights (IOD, adult: ~10.5 mm upper, ~9 mm lower incisors) and the gum's dip between teeth.
_UPPER_CROWN = 0.165
_LOWER_CROWN = 0.14
_PAPILLA = 0.035
# The lower incisors sit nearer the jaw hinge than the lower lip, and the lip is pulled down as the
# jaw opens: the incisal edge drops this share of the lip's drop, so more of them shows.
_LOWER_TEETH_DROP = 0.9

@dataclass(frozen=True)
class SourceTeeth:
    """The source's own mouth interior, split into what moves with the jaw and what does not.

    All arrays cover ``box`` (the mouth with a margin of skin, where the masks are 0): ``image``
    [h, w, 3] float32 0..1; ``upper``/``lower`` [h, w] float32 soft masks of upper-jaw and
    lower-jaw teeth; ``jaw_offset`` [2] px: the source's jaw drop relative to the closed rest;
    ``rgb`` [3]: mean colour of its teeth.
    """

    box: Box
    image: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    jaw_offset: np.ndarray
    rgb: np.ndarray
    edge_rgb: np.ndarray  # [w, 3]: per column, colour of the lowest upper teeth the source shows
    edge_row: np.ndarray  # [w] int: that row in the box (-1: no upper teeth in the column)

    def extension(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Upper teeth continued below what the source shows, seen through output ``box``:
        ``(rgb [h, w, 3], where [h, w] bool)``. Teeth are nearly uniform vertically, so each
        column's lowest visible colour carries on down (tooth gaps included)."""
        cols = np.arange(box.x0, box.x1) - self.box.x0
        inside = (cols >= 0) & (cols < self.box.shape[1])
        cols = np.clip(cols, 0, self.box.shape[1] - 1)
        row = np.where(inside, self.edge_row[cols], -1)
        rows = np.arange(box.y0, box.y1)[:, None] - self.box.y0
        where = (row[None] >= 0) & (rows > row[None])
        rgb = np.broadcast_to(self.edge_rgb[cols][None], (box.shape[0], box.shape[1], 3))
        return rgb, where

    def sample(self, box: Box, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, upper, lower) seen through output ``box`` with content moved by ``shift`` px."""
        size = (box.x1 - box.x0, box.y1 - box.y0)
        centre = (
            box.x0 - self.box.x0 + (size[0] - 1) / 2.0 - float(shift[0]),
            box.y0 - self.box.y0 + (size[1] - 1) / 2.0 - float(shift[1]),
        )
        # Outside the patch the masks replicate their zero margin, so nothing leaks in.
        return tuple(cv2.getRectSubPix(a, size, centre) for a in (self.image, self.upper, self.lower))


def _mouth_box(landmarks: np.ndarray, iod: float, size: int) -> Box:
    """The mouth and some skin around it (where teeth statistics are taken)."""
    return Box.around(np.asarray(landmarks)[list(T.LIPS_OUTER), :2], 0.15 * iod, size)


@dataclass(frozen=True)
class MouthPixels:
    """What a source crop shows between its lips, over ``box`` (the mouth and skin around it):
    ``opening`` bool [h, w] (inner-lip polygon eroded by ~1 px, so no lip pixels), ``teeth`` bool
    [h, w] and ``score`` 0..1 (how clearly teeth show; 0 for a closed mouth)."""

    box: Box
    opening: np.ndarray
    teeth: np.ndarray
    score: float


def analyse_mouth(crop: np.ndarray, landmarks: np.ndarray, iod: float) -> MouthPixels:
    """Find the teeth in a source crop [S, S, 3] uint8 with landmarks [478, 2+].

    Teeth are bright, unsaturated pixels relative to the surrounding lips and skin, which are
    saturated or darker. The score is the teeth share of the opening, saturating at 35 %.
    """
    box = _mouth_box(landmarks, iod, crop.shape[0])
    empty = np.zeros(box.shape, bool)
    if polygon_area(opening_polygon(landmarks)) < 0.0015 * iod * iod:
        return MouthPixels(box, empty, empty, 0.0)
    mask = polygon_mask(opening_polygon(landmarks), box)
    erode = max(1, int(round(0.008 * iod)))
    opening = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)) > 0
    area = int(opening.sum())
    if area < 0.0015 * iod * iod:
        return MouthPixels(box, opening, empty, 0.0)
    rgb = crop[box.slices]
    value = rgb.max(axis=-1).astype(np.float32)
    saturation = (value - rgb.min(axis=-1)) / np.maximum(value, 1.0)
    reference_value = float(np.median(value[~opening]))
    teeth = opening & (saturation < 0.3) & (value > 0.7 * reference_value)
    score = float(np.clip(teeth.sum() / area / 0.35, 0.0, 1.0))
    return MouthPixels(box, opening, teeth, score)


def extract_source_teeth(
    crop: np.ndarray, mouth: MouthPixels, iod: float, jaw_offset: np.ndarray
) -> SourceTeeth | None:
    """Split the source's visible teeth into upper-jaw / lower-jaw layers, or ``None`` when it
    shows (almost) none. ``mouth``: :func:`analyse_mouth` of the crop.

    Column by column: two runs of teeth pixels separated by a gap are the two rows of teeth (split
    in the gap); a single run is the upper row (it hangs from the upper lip and hides the lower
    one) unless it starts in the lower half of the opening; columns without teeth split mid-way.
    """
    box, opening, teeth = mouth.box, mouth.opening, mouth.teeth
    if teeth.sum() < 0.0005 * iod * iod:
        return None
    rgb = crop[box.slices].astype(np.float32) / 255.0
    split = _teeth_split(opening, teeth)
    rows = np.arange(box.shape[0])[:, None]
    # Only teeth (and a pixel around them) are reused: the dark rest of the source's opening is
    # shadow of *its* pose, and the synthetic cavity is shaded for the frame's pose.
    near_teeth = opening & (cv2.dilate(teeth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    upper = cv2.GaussianBlur((near_teeth & (rows < split[None])).astype(np.float32), (0, 0), 0.8)
    lower = cv2.GaussianBlur((near_teeth & (rows >= split[None])).astype(np.float32), (0, 0), 0.8)
    pixels = rgb[teeth]
    bright = pixels[luma(pixels) >= np.quantile(luma(pixels), 0.4)]
    edge_rgb, edge_row = _lowest_teeth(rgb, teeth & (rows < split[None]))
    image = _lit_lower_edge(rgb, teeth & (rows >= split[None]), split)
    return SourceTeeth(
        box=box, image=image, upper=upper, lower=lower,
        jaw_offset=np.asarray(jaw_offset, np.float64).reshape(2), rgb=bright.mean(axis=0),
        edge_rgb=edge_rgb, edge_row=edge_row,
    )


def _lowest_teeth(rgb: np.ndarray, upper_teeth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: mean colour of the 3 rows above the lowest upper-teeth pixel (the very last
    row is blended with whatever is below it), and that row (-1 where there is none)."""
    height = rgb.shape[0]
    rows = np.arange(height)[:, None]
    last = np.where(upper_teeth, rows, -1).max(axis=0)
    picks = np.clip(last[None] - np.arange(1, 4)[:, None], 0, height - 1)
    cols = np.arange(rgb.shape[1])[None]
    colour = rgb[picks, np.broadcast_to(cols, picks.shape)].mean(axis=0)
    last = np.where(last >= 3, last, -1)  # too few rows to trust
    return colour.astype(np.float32), last


def _lit_lower_edge(rgb: np.ndarray, lower_teeth: np.ndarray, split: np.ndarray) -> np.ndarray:
    """``rgb`` [h, w, 3] with each column's lower teeth, from the split down to their first fully
    lit pixel, in that column's lit colour (mean of its brighter half of lower-teeth pixels).

    A mouth closing from the source's pose lifts the lower lip over the lower row, so only the
    top of the row peeks out: in the source that is the incisal edge's soft fall into the dark
    cavity (and the layer's blurred mask), which drawn alone reads as a grey, ghostly band between
    cavity and lip, and the face mesh then takes the lower lip's edge for higher than it is
    (re-parsed lips of the open-mouth face down to 0.49 of the source's). Teeth are nearly
    uniform vertically, so the top of each column takes its lit colour (tooth gaps, which are
    columns, stay); rows below the first lit pixel keep their own shading.
    """
    out = rgb.copy()
    y = luma(rgb)
    for x in np.flatnonzero(lower_teeth.any(axis=0)):
        ys = np.flatnonzero(lower_teeth[:, x])
        level = y[ys, x]
        lit = ys[level >= np.median(level)]
        top = int(np.floor(split[x]))
        first = int(lit.min())
        if first > top:
            out[max(top, 0):first, x] = rgb[lit, x].mean(axis=0)
    return out


def _teeth_split(opening: np.ndarray, teeth: np.ndarray) -> np.ndarray:
    """Per column of the opening [h, w] bool, the first row of lower-jaw content: float32 [w]."""
    height = opening.shape[0]
    rows = np.arange(height)[:, None]
    big = height + 1
    # Drop 1-px specks so noise does not split a run of teeth.
    teeth = cv2.morphologyEx(teeth.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 1), np.uint8)) > 0
    has_open = opening.any(axis=0)
    top = np.where(has_open, opening.argmax(axis=0), 0)
    bottom = np.where(has_open, height - 1 - opening[::-1].argmax(axis=0), 0)
    has_teeth = teeth.any(axis=0)
    first = np.where(teeth, rows, big).min(axis=0)
    last = np.where(teeth, rows, -1).max(axis=0)
    run_end = np.where((rows > first) & ~teeth, rows, big).min(axis=0)
    second = np.where((rows >= run_end) & teeth, rows, big).min(axis=0)
    two_runs = has_teeth & (second <= last) & (second - run_end >= 2) & (last - second >= 1)
    starts_low = first > top + 0.5 * (bottom - top)
    split = np.where(starts_low, top, bottom + 1).astype(np.float32)
    split = np.where(two_runs, (run_end + second) / 2.0, split)
    split = np.where(has_teeth, split, (top + bottom + 1) / 2.0)
    return cv2.medianBlur(split.astype(np.float32)[None], 5)[0] if split.size >= 5 else split


@dataclass(frozen=True)
class TeethGeometry:
    """Where the teeth sit in the closed-rest face frame (IOD units)."""

    upper_arch: float  # front-view half width of the upper dental arch
    lower_arch: float
    upper_edge: float  # v of the upper incisal edge at the centre (lips meet at v = 0)
    lower_edge: float  # v of the lower incisal edge at the centre, jaw closed
    smile_arc: float  # upper edge rises by this at the arch ends

    @staticmethod
    def for_mouth(inner_half_width: float) -> "TeethGeometry":
        arch = float(np.clip(0.85 * inner_half_width, 0.2, _NOMINAL_ARCH))
        return TeethGeometry(arch, 0.86 * arch, 0.035, -0.005, 0.05)


@dataclass(frozen=True)
class InteriorLayers:
    """One frame's interior over ``box``: ``rgb`` [h, w, 3] float32 0..1 (before blending into the
    crop), ``alpha`` [h, w] its blend weight, and how much of each part is *seen* (in front of
    everything behind it, 0..1 [h, w]): ``tongue``, ``lower_teeth``, ``upper_teeth``, ``gums``,
    ``source`` (the source's own teeth), ``bank`` (the clip's own interior from a
    :class:`~.mouth_bank.MouthBank`; None from callers that predate it)."""

    box: Box
    rgb: np.ndarray
    alpha: np.ndarray
    tongue: np.ndarray
    lower_teeth: np.ndarray
    upper_teeth: np.ndarray
    gums: np.ndarray
    source: np.ndarray
    bank: np.ndarray | None = None


class MouthInterior:
    """Renders the interior of one source's mouth for any driven pose.

    ``frame``: the closed-rest face frame (origin where the lips meet); ``palette``: colours;
    ``geometry``: teeth placement; ``source``: the source's own interior layers (or ``None``);
    ``feather``: edge softness in IOD units. ``bank``: a video's :class:`~.mouth_bank.MouthBank`
    (set by :class:`~.builtin.FrameDriver` on each frame's interior; None: synthesis only). A bank
    keeps its retrieval state, so with one set, frames are to be painted once each, in order.
    """

    def __init__(
        self, frame: FaceFrame, palette: MouthPalette, geometry: TeethGeometry,
        source: SourceTeeth | None = None, feather: float = 0.015,
    ) -> None:
        self.frame = frame
        self.palette = palette
        self.geometry = geometry
        self.source = source
        self.sigma = max(0.8, feather * frame.iod)
        self.bank: MouthBank | None = None

    def composite(
        self, image: np.ndarray, driven: np.ndarray, jaw_offset: np.ndarray,
        teeth_visible: float, seal: float = 0.0,
    ) -> np.ndarray:
        """Composite the interior into ``image`` [S, S, 3] uint8 (in place) and return it.

        ``driven`` [478, 3]: the frame's landmarks; ``jaw_offset`` [2] px: lower-jaw drop from the
        closed rest; ``teeth_visible`` 0..1; ``seal`` 0..1: strength of the dark line drawn where
        the lips meet (for sources whose own lips were apart, so no such line exists to warp).
        """
        if seal > 0:
            self._seal_line(image, driven, seal)
        layers = self.layers(driven, jaw_offset, teeth_visible, image.shape[0], image)
        if layers is None:
            return image
        box, alpha = layers.box, layers.alpha[..., None]
        window = image[box.slices].astype(np.float32) / 255.0
        blended = window + alpha * (layers.rgb - window)
        image[box.slices] = np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return image

    def layers(
        self, driven: np.ndarray, jaw_offset: np.ndarray, teeth_visible: float, size: int,
        image: np.ndarray | None = None,
    ) -> InteriorLayers | None:
        """The interior of one pose in a ``size`` crop, layer by layer (``None``: mouth shut).
        Arguments as in :meth:`composite`; ``image`` [S, S, 3] uint8, the crop it goes into: the
        lips around the opening set the light of a bank's interior (None: taken as it is)."""
        polygon = opening_polygon(driven)
        if polygon_area(polygon) < 0.5:
            return None
        box = Box.around(polygon, 3.0 * self.sigma + 1.0, size)
        mask = polygon_mask(polygon, box)
        if not mask.any():
            return None
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), self.sigma)
        alpha = np.clip((soft - 0.25) / 0.5, 0.0, 1.0)
        op = Opening.measure(self.frame, driven, box, mask)
        pick = self.bank.pick(driven) if self.bank is not None else None
        weight = pick.weight if pick is not None else 0.0
        zeros = np.zeros(box.shape, np.float32)
        bank_rgb, bank = None, np.float32(0.0)
        if weight > 0.0:
            bank_rgb, cover = self._bank_rgb(pick, op, driven, image)
            bank = np.float32(weight) * cover
        if weight >= 1.0 and cover.min() >= 1.0:
            # The clip's own interior everywhere: nothing synthesised shows, so none is made.
            layers = {k: zeros for k in ("tongue", "lower_teeth", "upper_teeth", "gums")}
            rgb, source = bank_rgb, zeros
        else:
            # With the bank fully on, its upper teeth are the real ones: no synthetic row below
            # them. While it fades in or out the synthetic row stays, so the teeth blend into
            # teeth (not into the dark cavity: grey, half-transparent teeth).
            layers = self._synthesise(op, np.asarray(jaw_offset, np.float64), float(teeth_visible), size,
                                      upper_teeth=weight < 1.0)
            rgb, source = layers["rgb"], zeros
            if self.source is not None:
                rgb, source = self._source_layers(rgb, box, jaw_offset, _opacity(teeth_visible))
            if bank_rgb is not None:
                rgb = rgb + np.asarray(bank)[..., None] * (bank_rgb - rgb)
                source = source * (1.0 - bank)
        shown = alpha * (1.0 - source) * (1.0 - bank)
        return InteriorLayers(
            box, np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha,
            *(layers[k] * shown for k in ("tongue", "lower_teeth", "upper_teeth", "gums")),
            source * alpha, alpha * bank,
        )

    def _bank_rgb(
        self, pick, op: Opening, driven: np.ndarray, image: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bank's interior (rgb [h, w, 3], cover [h, w]) over ``op``, lit like the lips
        around the driven opening in ``image`` (when given)."""
        from .mouth_bank import ring_colour

        ring = None if image is None else ring_colour(image, driven, self.frame.iod)
        return self.bank.paint(pick, op, ring)

    def _seal_line(self, image: np.ndarray, driven: np.ndarray, strength: float) -> None:
        """Darken a soft, even shadow along where the lips meet (the midline of the inner lip
        contours), only where they do meet: it fades out as the gap opens past ~1.5 px, so it
        never runs through an opening, and it thins to nothing at the inner corners.

        The shadow is a Gaussian of each pixel's exact distance to the midline polyline: a 1-px
        anti-aliased line blurred by under a pixel (as drawn before) comes out brighter and darker
        wherever it crosses pixel centres unevenly, which reads as a dotted line."""
        upper = np.asarray(driven, np.float64)[list(T.LIPS_INNER_UPPER), :2]
        lower = np.asarray(driven, np.float64)[list(T.LIPS_INNER_LOWER), :2]
        mid = 0.5 * (upper + lower)
        iod = self.frame.iod
        gap = np.linalg.norm(lower - upper, axis=1)
        touching = np.clip(1.5 - gap / max(1.0, 0.012 * iod), 0.0, 1.0)
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(mid, axis=0), axis=1))])
        ends = np.minimum(along, along[-1] - along) / max(along[-1], 1e-6)
        weight = touching * _smoothstep(ends / 0.1)
        if weight.max() <= 0.0:
            return
        sigma = max(0.7, 0.007 * iod)
        box = Box.around(mid, 3.0 * sigma + 2.0, image.shape[0])
        best, level = polyline_distance(mid, weight, box)
        line = (level * np.exp(-0.5 * best / sigma**2)).astype(np.float32)
        window = image[box.slices].astype(np.float32)
        # The warp's map jumps from the upper to the lower lip along a pixel staircase; a
        # slightly wider band is softened first, so the meeting line is smooth, not stepped.
        band = (level * np.exp(-0.5 * best / (2.0 * sigma) ** 2)).astype(np.float32)[..., None]
        window += strength * band * (cv2.GaussianBlur(window, (0, 0), 0.8) - window)
        window *= (1.0 - 0.22 * strength * line)[..., None]
        image[box.slices] = np.clip(window + 0.5, 0, 255).astype(np.uint8)

    def _synthesise(
        self, op: Opening, jaw_offset: np.ndarray, visible: float, size: int, upper_teeth: bool = True,
    ) -> dict[str, np.ndarray]:
        """Back to front: cavity, tongue, lower gums and teeth, upper gums and teeth (unless
        ``upper_teeth`` is False); then the lips' shadow over all of it, the wet inner lip band,
        and grain."""
        frame, geo, pal, iod = self.frame, self.geometry, self.palette, self.frame.iod
        u, v = op.u, op.v
        jaw = float(np.dot(jaw_offset, frame.v_axis)) / iod
        zeros = np.zeros(op.box.shape, np.float32)
        seen = {"tongue": zeros, "lower_teeth": zeros, "upper_teeth": zeros, "gums": zeros}

        rgb = cavity(op, pal)
        # Barely visible teeth sit further behind the lips; the lower row, on the jaw, follows
        # the lower lip down (less than all the way: more of it shows the wider the mouth).
        hidden = 1.0 - visible
        upper_centre = geo.upper_edge - 0.04 * hidden
        lower_centre = geo.lower_edge + _LOWER_TEETH_DROP * jaw + 0.03 * hidden
        # The tongue rides on the jaw behind the lower teeth and its back rises as the mouth
        # opens, but it stays below the upper teeth.
        tongue_top = max(lower_centre - 0.02 - 0.25 * jaw, upper_centre + 0.025)
        colour, cover = tongue(op, pal, tongue_top, iod)
        rgb = rgb + cover[..., None] * (colour - rgb)
        seen["tongue"] = cover

        # Teeth are always there; how much shows is the lips' business (their positions above).
        # The parameter only fades them at its low end, and less so as the jaw drops.
        opacity = max(_opacity(visible), 0.9 * float(_smoothstep((jaw - 0.03) / 0.12)))
        if opacity > 0:
            scale = geo.upper_arch / _NOMINAL_ARCH
            # Each row is skipped when it lies wholly outside the box (edges are highest /
            # lowest at the midline, the incisal corners only recede from there).
            if lower_centre - geo.smile_arc < v.max():
                # The lower incisal line runs parallel to the upper one (the teeth meet along
                # it), so with the jaw shut the upper row hides the lower.
                edge = lower_centre - geo.smile_arc * (u / geo.upper_arch) ** 2
                rgb = self._row(rgb, seen, "lower_teeth", u, v, geo.lower_arch, _LOWER_WIDTHS, edge,
                                _LOWER_CROWN * scale, True, opacity)
            if upper_teeth and upper_centre > v.min():
                edge = upper_centre - geo.smile_arc * (u / geo.upper_arch) ** 2
                base = self.source.extension(op.box) if self.source is not None else None
                rgb = self._row(rgb, seen, "upper_teeth", u, v, geo.upper_arch, _UPPER_WIDTHS, edge,
                                _UPPER_CROWN * scale, False, opacity, base)

        rgb = rgb * lip_shadow(op, iod)[..., None]
        colour, cover = wet_lips(op, pal, iod)
        rgb = rgb + cover[..., None] * (colour - rgb)
        in_front = 1.0 - cover
        seen = {k: c * in_front for k, c in seen.items()}
        everywhere = np.ones(op.box.shape, np.float32)
        seen["rgb"] = add_grain(rgb.astype(np.float32), op.box, size, pal.grain, everywhere)
        return seen

    def _row(
        self, rgb: np.ndarray, seen: dict[str, np.ndarray], name: str, u: np.ndarray, v: np.ndarray,
        arch: float, widths: np.ndarray, edge: np.ndarray, crown: float, below: bool,
        opacity: float, base: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Draw one row of teeth with its gums over ``rgb``; update what is seen.

        Only the box rows the row can reach are computed (teeth and gums lie on one side of the
        incisal edge), which is most of the interior's cost otherwise."""
        margin = 1.0 / self.frame.iod
        reach = (v > edge - margin) if below else (v < edge + margin)
        rows = np.flatnonzero(reach.any(axis=1))
        seen[name] = np.zeros_like(v)
        if rows.size == 0:
            return rgb
        band = slice(int(rows[0]), int(rows[-1]) + 1)
        if base is not None:
            base = (base[0][band], base[1][band])
        colour, cover, gum_colour, gum_cover = self._teeth(
            u[band], v[band], arch, widths, edge[band], crown, below, base
        )
        gum_cover = opacity * gum_cover
        teeth_cover = opacity * cover
        out = rgb[band]
        out = out + gum_cover[..., None] * (gum_colour - out)
        rgb[band] = out + teeth_cover[..., None] * (colour - out)
        front = 1.0 - np.maximum(gum_cover, teeth_cover)
        for key in seen:
            seen[key] = seen[key].copy()
            seen[key][band] *= front
        seen[name][band] = teeth_cover
        seen["gums"][band] += gum_cover * (1.0 - teeth_cover)
        return rgb

    def _teeth(
        self, u: np.ndarray, v: np.ndarray, arch: float, widths: np.ndarray, edge: np.ndarray,
        crown: float, below: bool, base: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Colour [h, w, 3] and coverage [h, w] of one row of teeth (``below``: lower row), then
        the same for its gums (from the scalloped gum line ``crown`` IOD from the edge outwards).

        ``base``: ``(rgb, where)`` colours to use instead of the synthetic shading (source teeth
        carried on), translucent edge still applied."""
        iod = self.frame.iod
        widths = widths * (arch / _NOMINAL_ARCH)
        ends = np.cumsum(widths)
        lateral = np.clip(np.abs(u) / arch, 0.0, 0.999)
        angle = np.arcsin(lateral)
        along = angle * arch  # arc length from the midline
        tooth = np.minimum(np.searchsorted(ends, along), len(widths) - 1)
        width = widths[tooth]
        frac = (along - (ends[tooth] - width)) / width
        to_gap = np.minimum(frac, 1.0 - frac).clip(0.0) * width  # arc length to nearest gap
        # Rounded incisal corners: the edge recedes near each gap.
        corner = 0.022 * (arch / _NOMINAL_ARCH) * np.clip(1.0 - to_gap / (0.3 * width), 0, 1) ** 2
        inside = (v - edge - corner) if below else (edge - corner - v)  # IOD, > 0 on the tooth
        # The gum line arches over each tooth and dips between teeth (the papillae).
        papilla = _PAPILLA * (arch / _NOMINAL_ARCH) * (1.0 - np.clip(to_gap / (0.5 * width), 0, 1)) ** 2
        to_gum = crown - papilla - inside  # IOD, > 0 on the tooth side of the gum line
        # Beyond the canines the arch turns away into the cheeks' shadow (the buccal corridor);
        # the lower row, lower in the mouth and behind the lip, fades sooner.
        in_arch = _smoothstep((1.0 - np.abs(u) / arch) / (0.3 if below else 0.12))
        cover = np.clip(inside * iod + 0.5, 0.0, 1.0) * np.clip(to_gum * iod + 0.5, 0.0, 1.0) * in_arch
        gum_cover = np.clip(-to_gum * iod + 0.5, 0.0, 1.0) * in_arch
        gap_px = to_gap * np.cos(angle) * iod
        # Neighbouring crowns touch: the gap between them is a soft line, darkest near the
        # incisal edge where the rounded corners leave a notch onto the cavity.
        notch = 0.5 + 0.5 * np.clip(1.0 - inside / 0.04, 0.0, 1.0)
        gap = 1.0 - (0.15 if below else 0.2) * notch * np.exp(-((gap_px / 0.8) ** 2))
        towards_gum = 1.0 - 0.3 * np.clip(inside / 0.18, 0.0, 1.0)
        # Incisors are the brightest; canines and premolars are a little darker and sit deeper.
        # Each crown is convex across (a little brighter mid-tooth) and teeth differ slightly.
        kind = _TOOTH_SHADE[tooth] * (1.0 + 0.025 * np.where(tooth % 2 == 0, 1.0, -1.0))
        convex = 0.94 + 0.06 * np.sin(np.pi * np.clip(frac, 0.0, 1.0))
        facing = 0.45 + 0.55 * np.cos(angle)  # the arch turns away from the light at its ends
        # x 1.1: a central incisor's mean shade is then about 1 (the palette's colour).
        shade = 1.1 * facing * kind * gap * towards_gum * convex * (0.78 if below else 1.0)
        colour = self.palette.teeth * shade[..., None]
        if below:
            # The lower row is in the upper row's and lip's shade and shows its translucent,
            # warmer dentine more: some of the gum's colour, at the same brightness.
            gum = self.palette.gum * (luma(self.palette.teeth) / max(float(luma(self.palette.gum)), 1e-3))
            colour = colour + 0.25 * (gum * shade[..., None] - colour)
        if base is not None:
            colour = np.where(base[1][..., None], base[0], colour)
        # The incisal edge is translucent: it takes some of the cavity's darkness.
        edge_mix = (0.1 if below else 0.2) * np.clip(1.0 - inside / 0.012, 0.0, 1.0)[..., None]
        colour = colour + edge_mix * (self.palette.cavity - colour)
        gum_colour = self.palette.gum * (facing * (0.8 + 0.2 * np.exp(to_gum / 0.02)))[..., None]
        return colour, cover, gum_colour, gum_cover

    def _source_layers(
        self, rgb: np.ndarray, box: Box, jaw_offset: np.ndarray, opacity: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The source's own teeth over ``rgb``, and how much of each pixel they cover [h, w]."""
        src = self.source
        shift = np.asarray(jaw_offset, np.float64) - src.jaw_offset
        lower_rgb, _, lower = src.sample(box, shift)
        rgb = rgb + (opacity * lower)[..., None] * (lower_rgb - rgb)
        upper_rgb, upper, _ = src.sample(box, np.zeros(2))
        rgb = rgb + (opacity * upper)[..., None] * (upper_rgb - rgb)
        covered = 1.0 - (1.0 - opacity * lower) * (1.0 - opacity * upper)
        return rgb, covered.astype(np.float32)


def _opacity(visible: float) -> float:
    """Teeth opacity from teeth_visible: mostly the teeth slide behind the lips (see ``hidden``);
    only low values fade them, so half-visible teeth are not grey ghosts."""
    return float(_smoothstep(np.float64(visible) / 0.5))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
