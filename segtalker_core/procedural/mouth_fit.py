"""Read the mouth state off a 12-region map and fit the rig to it.

The built-in renderer draws what the segmentation says: whatever map reaches it (the rig's own, a
learned TSG's, or one edited by hand), the mouth is measured in the map and the rig's five
articulation parameters are solved so that the driven mouth has the same shape. The measurements
are taken in the rig's face frame (origin where the rest lips meet, ``u`` along the eyes, ``v``
down the face) and in inter-ocular distances (IOD), so they mean the same at any crop size:

* **opening** -- the mouth interior at the centre column: its height, where its middle lies, and
  its width. The built-in segmentation rasterises the interior straight from the inner lip
  polygon, so these compare directly with the driven inner lip landmarks;
* **outline** -- the top and bottom of lips + interior at the centre column and the outer width.
  The lips of a map come from the source parsing carried along by the warp, not from landmarks,
  so these are compared as *changes* from the source map, against the change of the outer lip
  landmarks from the source landmarks.

Jaw and lip retraction both open the mouth, but only the jaw moves the middle of the opening and
the bottom of the lower lip down; width and rounding move the corners; closure closes the opening
without moving the outline much. Six measurements for five parameters, solved by a damped
Gauss-Newton in the parameter box with weak pulls towards a prior (the side-channel hint, or the
previous frame) and towards the neutral mouth, which settle whatever the map leaves open (how
far a sealed mouth is rounded, or how a corner position splits into width and rounding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import labels as L
from ..face import mesh_topology as T
from .rig import CLOSURE, JAW, NUM_PARAMS, PARAM_RANGES, TEETH, MouthRig
from .warp import Box

LIPS = L.region_index("lips")
MOUTH_INTERIOR = L.region_index("mouth_interior")
_CENTRE_BAND = 0.05  # IOD: half width of the centre column
_MIN_LIPS_SHARE = 0.15  # of the source's lips area: below it a map shows no usable mouth
_ITERATIONS = 10
_STEP = 1e-3  # finite-difference step in parameter units
# Pulls (px^2 per unit^2) that settle what a map leaves open: towards the prior (the hint, or the
# previous frame: no jumps), and towards the neutral mouth for the pairs a map barely tells
# apart (width against rounding both move the corners; lip retraction against jaw both open it).
_PRIOR_WEIGHT = 0.3
_NEUTRAL_WEIGHT = np.array([0.3, 1.0, 1.0, 0.0, 0.5])
_LOW = np.array([r[0] for r in PARAM_RANGES], np.float64)
_HIGH = np.array([r[1] for r in PARAM_RANGES], np.float64)
FEATURES = ("gap", "gap_middle", "inner_width", "outline_top", "outline_bottom", "outline_width")


@dataclass(frozen=True)
class MouthMeasure:
    """The mouth of one map, in face units (IOD) of a rig's frame.

    ``lips_area`` and ``interior_area`` are px counts inside the mouth window; ``gap`` is the
    interior's height at the centre column (0 when the mouth is closed) and ``gap_middle`` its
    middle (NaN when closed); ``inner_width`` the interior's width; ``top``/``bottom``/``width``
    the extent of lips + interior (NaN when there are no lips).
    """

    lips_area: int
    interior_area: int
    gap: float
    gap_middle: float
    inner_width: float
    top: float
    bottom: float
    width: float

    @property
    def is_open(self) -> bool:
        return self.gap > 0.0


class MouthReader:
    """Measures maps in the frame of one rigged source face and fits its rig to them.

    ``rig``: the source's :class:`~.rig.MouthRig`; ``source_regions`` [S, S] uint8: the source's
    12-region map (the outline measurements are changes from it); ``window``: the crop area the
    rig can move (the mouth is looked for only there).
    """

    def __init__(self, rig: MouthRig, source_regions: np.ndarray, window: Box) -> None:
        self.rig = rig
        self.window = window
        self.iod = rig.frame.iod
        ys, xs = np.mgrid[window.y0 : window.y1, window.x0 : window.x1]
        self._uv = rig.frame.to_face(np.stack([xs, ys], axis=-1).astype(np.float64))
        rest_uv = rig.frame.to_face(rig.rest[list(T.MOUTH_CORNERS), :2])
        self._centre_u = float(rest_uv[:, 0].mean())
        self._centre = np.abs(self._uv[..., 0] - self._centre_u) < _CENTRE_BAND
        self.source = self.measure(source_regions)
        if self.source.lips_area == 0:
            raise ValueError("the source face's parsing has no lips near its mouth landmarks")
        self._source_outline = _landmark_outline(rig.frame.to_face(rig.reference[:, :2]))
        self.max_gap = float(self.predict(np.array([[1.0, 0.0, 0.0, 0.0, 1.0]]))[0, 0])

    def measure(self, regions: np.ndarray) -> MouthMeasure:
        """Measure a 12-region map [S, S] (crop space of the source)."""
        window = np.asarray(regions)[self.window.slices]
        lips = window == LIPS
        interior = window == MOUTH_INTERIOR
        mouth = lips | interior
        v, u = self._uv[..., 1], self._uv[..., 0]
        top = bottom = width = np.nan
        if mouth.any():
            column = mouth & self._centre
            if column.any():
                top, bottom = float(v[column].min()), float(v[column].max())
            width = float(np.ptp(u[mouth]))
        gap, middle, inner = 0.0, np.nan, 0.0
        centre_interior = interior & self._centre
        if centre_interior.any():
            lo, hi = float(v[centre_interior].min()), float(v[centre_interior].max())
            # Pixel centres: the opening reaches half a pixel beyond the outermost ones.
            gap = hi - lo + 1.0 / self.iod
            middle = 0.5 * (lo + hi)
            inner = float(np.ptp(u[interior])) + 1.0 / self.iod
        return MouthMeasure(
            lips_area=int(lips.sum()), interior_area=int(interior.sum()), gap=gap, gap_middle=middle,
            inner_width=inner, top=top, bottom=bottom, width=width,
        )

    def usable(self, measure: MouthMeasure) -> bool:
        """Whether a map shows a mouth to follow (lips, and an outline at the centre)."""
        return (
            measure.lips_area + measure.interior_area >= _MIN_LIPS_SHARE * self.source.lips_area
            and np.isfinite(measure.bottom) and np.isfinite(measure.width)
        )

    def predict(self, params: np.ndarray) -> np.ndarray:
        """Features [N, 6] (:data:`FEATURES` order, IOD) the map of ``params`` [N, 5] would show."""
        driven = self.rig.frame.to_face(self.rig.drive(np.atleast_2d(params))[..., :2])
        gap = driven[:, T.LOWER_LIP_TOP, 1] - driven[:, T.UPPER_LIP_BOTTOM, 1]
        middle = 0.5 * (driven[:, T.LOWER_LIP_TOP, 1] + driven[:, T.UPPER_LIP_BOTTOM, 1])
        corners = driven[:, list(T.INNER_MOUTH_CORNERS), 0]
        inner = np.abs(corners[:, 1] - corners[:, 0])
        outline = _landmark_outline(driven) - self._source_outline
        src = self.source
        return np.stack([
            np.maximum(gap, 0.0), middle, inner,
            src.top + outline[:, 0], src.bottom + outline[:, 1], src.width + outline[:, 2],
        ], axis=1)

    def targets(self, measure: MouthMeasure) -> tuple[np.ndarray, np.ndarray]:
        """(features [6], weights [6]) a map asks for; opening-shape features only count when
        the map's mouth is open, the top only where the map has one."""
        target = np.array([
            measure.gap, measure.gap_middle, measure.inner_width,
            measure.top, measure.bottom, measure.width,
        ])
        weight = np.array([4.0, 1.0, 0.5, 0.5, 1.0, 1.0])
        if not measure.is_open:
            weight[1:3] = 0.0
        weight[~np.isfinite(target)] = 0.0
        return np.nan_to_num(target), weight

    def fit(self, measure: MouthMeasure, prior: np.ndarray) -> np.ndarray:
        """Parameters [5] whose driven mouth matches ``measure``, starting from ``prior`` [5]."""
        target, weight = self.targets(measure)
        scale = np.sqrt(weight) * self.iod  # residuals in px
        prior = np.clip(np.asarray(prior, np.float64), _LOW, _HIGH)
        best = _start(prior, measure, self.max_gap)
        damping = 1e-3
        cost = self._cost(best, target, scale, prior)
        for _ in range(_ITERATIONS):
            probes = best[None] + np.vstack([np.zeros(NUM_PARAMS), _STEP * np.eye(NUM_PARAMS)])
            predicted = self.predict(probes)
            residual = (predicted[0] - target) * scale
            jacobian = (predicted[1:] - predicted[0]).T * scale[:, None] / _STEP  # [6, 5]
            normal = jacobian.T @ jacobian + np.diag(_PRIOR_WEIGHT + _NEUTRAL_WEIGHT)
            gradient = jacobian.T @ residual + _PRIOR_WEIGHT * (best - prior) + _NEUTRAL_WEIGHT * best
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-9), -gradient)
            candidate = np.clip(best + step, _LOW, _HIGH)
            new_cost = self._cost(candidate, target, scale, prior)
            if new_cost < cost:
                best, cost, damping = candidate, new_cost, damping * 0.3
                if np.abs(step).max() < 1e-4:
                    break
            else:
                damping *= 10.0
        return best.astype(np.float32)

    def _cost(self, params: np.ndarray, target: np.ndarray, scale: np.ndarray, prior: np.ndarray) -> float:
        residual = (self.predict(params[None])[0] - target) * scale
        return float(
            residual @ residual + _PRIOR_WEIGHT * np.sum((params - prior) ** 2)
            + np.sum(_NEUTRAL_WEIGHT * params**2)
        )


def _start(prior: np.ndarray, measure: MouthMeasure, max_gap: float) -> np.ndarray:
    """The prior, with closure released for an open map and set for a closed one (the cost is
    flat in closure once the lips touch, so Gauss-Newton cannot find that on its own)."""
    start = prior.copy()
    if measure.is_open:
        start[CLOSURE] = min(start[CLOSURE], 0.3)
        if start[JAW] + start[TEETH] < 1e-3:
            start[JAW] = min(1.0, measure.gap / max(max_gap, 1e-6))
    else:
        start[CLOSURE] = max(start[CLOSURE], 0.6)
    return start


def _landmark_outline(uv: np.ndarray) -> np.ndarray:
    """[..., 3]: (top, bottom, width) of the outer lip contour in face units."""
    top = uv[..., T.UPPER_LIP_TOP, 1]
    bottom = uv[..., T.LOWER_LIP_BOTTOM, 1]
    corners = uv[..., list(T.MOUTH_CORNERS), 0]
    return np.stack([top, bottom, np.abs(corners[..., 1] - corners[..., 0])], axis=-1)
