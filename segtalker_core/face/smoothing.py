"""Temporal smoothing of crop transforms for video.

Landmarks jitter by a pixel or two from frame to frame; an aligned crop that follows them
exactly shakes, and everything rendered in crop space shakes with it. We smooth the similarity
parameters of :mod:`.align` — centre, log of the half side, unwrapped angle — not the 2x3
matrices, so the result is still a similarity (no shear creeps in).

Parameters are put in face units before filtering (centre divided by the median crop half-size,
``log(half)``, angle in radians) so one set of filter settings fits any resolution.

Two methods:

* ``"gaussian"`` (default for video): zero-lag, offline; a Gaussian-weighted local linear fit
  over the frames that have a face (a plain weighted mean would drag steady motion towards the
  middle at the clip's ends). Frames without a face contribute nothing and keep their own
  parameters; gaps longer than the kernel (3 sigma) separate independent segments.
* ``"one_euro"``: the 1-euro filter (Casiez et al., CHI 2012), causal and stateful, for streaming
  chunk by chunk (:class:`OneEuroSmoother` keeps its state between calls). Slow motion is
  smoothed hard, fast motion passes with little lag.

``"none"`` returns the parameters unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

METHODS = ("gaussian", "one_euro", "none")


@dataclass(frozen=True)
class Smoothing:
    """Which smoothing and its settings.

    ``sigma``: Gaussian std in frames. ``min_cutoff`` (Hz) and ``beta`` (per face unit per
    second): 1-euro settings; ``fps`` converts frames to seconds for it. ``reset_after``: a gap
    of more frames than this without a face restarts the 1-euro filter (a new shot).
    """

    method: str = "gaussian"
    sigma: float = 2.0
    min_cutoff: float = 1.0
    beta: float = 1.0
    fps: float = 25.0
    reset_after: int = 12

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"smoothing method must be one of {METHODS}, got {self.method!r}")
        if self.sigma < 0 or self.min_cutoff <= 0 or self.beta < 0 or self.fps <= 0:
            raise ValueError(
                f"smoothing settings out of range: sigma={self.sigma} (>= 0), min_cutoff="
                f"{self.min_cutoff} (> 0), beta={self.beta} (>= 0), fps={self.fps} (> 0)"
            )

    @staticmethod
    def coerce(value: "Smoothing | str | None", video: bool) -> "Smoothing":
        """``None`` -> Gaussian for video, none for unrelated images; a string names the method."""
        if isinstance(value, Smoothing):
            return value
        if value is None:
            return Smoothing("gaussian" if video else "none")
        return Smoothing(str(value))


def smooth_similarity(params: np.ndarray, valid: np.ndarray, smoothing: Smoothing) -> np.ndarray:
    """Smooth ``[N, 4]`` similarity parameters ``(cx, cy, half, angle)`` over time.

    ``valid [N]`` marks frames with a face; other rows are returned unchanged and ignored.
    """
    params = np.asarray(params, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    assert params.ndim == 2 and params.shape[1] == 4, params.shape
    assert valid.shape == (len(params),), (valid.shape, params.shape)
    if smoothing.method == "none" or valid.sum() < 2:
        return params.copy()
    if smoothing.method == "gaussian":
        return _gaussian(params, valid, smoothing.sigma)
    return OneEuroSmoother(smoothing)(params, valid)


def _to_face_units(params: np.ndarray, valid: np.ndarray, unit: float) -> np.ndarray:
    out = params.copy()
    out[:, :2] /= unit
    out[:, 2] = np.log(np.maximum(params[:, 2], 1e-9))
    # Unwrap along the valid frames only, so a jump across +-pi is not smoothed into a spin.
    out[valid, 3] = np.unwrap(params[valid, 3])
    return out


def _from_face_units(values: np.ndarray, unit: float) -> np.ndarray:
    out = values.copy()
    out[:, :2] *= unit
    out[:, 2] = np.exp(values[:, 2])
    out[:, 3] = (values[:, 3] + math.pi) % (2 * math.pi) - math.pi
    return out


def _gaussian(params: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return params.copy()
    unit = float(np.median(params[valid, 2]))
    values = _to_face_units(params, valid, unit)
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    # Windows [N, 2r+1] of each frame's neighbours; frames without a face (and the padding
    # outside the clip) get weight 0.
    weights = _windows(valid.astype(np.float64), radius) * kernel
    neighbours = _windows(np.where(valid[:, None], values, 0.0), radius)  # [N, 2r+1, 4]
    # Gaussian-weighted local *linear* fit, evaluated at the centre frame: unlike a weighted mean
    # it has no lag at the clip's ends or next to gaps when the head moves steadily.
    s0 = weights.sum(1)
    s1 = (weights * offsets).sum(1)
    s2 = (weights * offsets**2).sum(1)
    t0 = np.einsum("nk,nkc->nc", weights, neighbours)
    t1 = np.einsum("nk,nkc->nc", weights * offsets, neighbours)
    determinant = s0 * s2 - s1 * s1
    linear = determinant > 1e-6 * np.maximum(s0 * s2, 1e-12)
    smoothed = values.copy()
    line_fit = (s2[:, None] * t0 - s1[:, None] * t1) / np.where(linear, determinant, 1.0)[:, None]
    mean_fit = t0 / np.maximum(s0, 1e-12)[:, None]  # a lone frame in its window: no slope
    fit = np.where(linear[:, None], line_fit, mean_fit)
    smoothed[valid] = fit[valid]
    out = _from_face_units(smoothed, unit)
    out[~valid] = params[~valid]
    return out


def _windows(signal: np.ndarray, radius: int) -> np.ndarray:
    """``[N, ...]`` -> ``[N, 2r+1, ...]`` neighbourhoods, zero-padded at both ends."""
    pad = [(radius, radius)] + [(0, 0)] * (signal.ndim - 1)
    padded = np.pad(signal, pad)
    view = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=0)
    return np.moveaxis(view, -1, 1)


class OneEuroSmoother:
    """Stateful 1-euro filter over similarity parameters; call it on consecutive chunks."""

    def __init__(self, smoothing: Smoothing | None = None) -> None:
        self.settings = smoothing or Smoothing("one_euro")
        self.reset()

    def reset(self) -> None:
        self._unit: float | None = None
        self._value: np.ndarray | None = None  # last filtered value, face units
        self._slope: np.ndarray | None = None  # last filtered derivative
        self._last_angle: float | None = None
        self._gap = 0  # frames since the last frame with a face

    def __call__(self, params: np.ndarray, valid: np.ndarray) -> np.ndarray:
        params = np.asarray(params, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool)
        assert params.ndim == 2 and params.shape[1] == 4 and valid.shape == (len(params),)
        out = params.copy()
        for i in range(len(params)):
            self._gap += 1
            if not valid[i]:
                continue
            out[i] = self._step(params[i])
        return out

    def _step(self, row: np.ndarray) -> np.ndarray:
        s = self.settings
        if self._value is None or self._gap > s.reset_after:
            self._unit = float(row[2])
            self._value = None
        angle = float(row[3])
        if self._last_angle is not None:
            # Keep the angle continuous with the previous frame (unwrap one step at a time).
            step = (angle - self._last_angle + math.pi) % (2 * math.pi) - math.pi
            angle = self._last_angle + step
        self._last_angle = angle
        x = np.array([row[0] / self._unit, row[1] / self._unit, math.log(max(row[2], 1e-9)), angle])
        if self._value is None:
            self._value, self._slope, self._gap = x, np.zeros(4), 0
        else:
            dt = self._gap / s.fps
            slope = (x - self._value) / dt
            # The derivative itself is low-passed at 1 Hz (the filter's usual setting).
            self._slope = self._slope + _alpha(1.0, dt) * (slope - self._slope)
            cutoff = s.min_cutoff + s.beta * np.abs(self._slope)
            self._value = self._value + _alpha(cutoff, dt) * (x - self._value)
            self._gap = 0
        v = self._value
        wrapped = (v[3] + math.pi) % (2 * math.pi) - math.pi
        return np.array([v[0] * self._unit, v[1] * self._unit, math.exp(v[2]), wrapped])


def _alpha(cutoff, dt: float):
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


def smoothing_radius(smoothing: Smoothing) -> int:
    """Frames on each side that a smoothed value depends on (0 for causal or no smoothing)."""
    if smoothing.method == "gaussian" and smoothing.sigma > 0:
        return max(1, int(math.ceil(3 * smoothing.sigma)))
    return 0
