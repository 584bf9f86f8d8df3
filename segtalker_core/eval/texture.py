"""Texture preservation: what a dub should leave alone (everything outside the lower face)
compared pixel to pixel, and the detail left in the lower face against the source's (a warp
softens a chin; a generator can smear the skin)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .image_metrics import mean_ssim, psnr_from_mse
from .sharpness import high_frequency_energy


@dataclass
class TextureTotals:
    """Running sums over the compared frames (one :meth:`add` per pair with a face)."""

    squared_error: float = 0.0
    pixels: int = 0
    ssim_values: list[float] = field(default_factory=list)
    high_generated: float = 0.0
    high_reference: float = 0.0

    def add(self, generated: np.ndarray, reference: np.ndarray, squared_error: np.ndarray,
            ssim_values: np.ndarray, changed: np.ndarray, lower: np.ndarray) -> None:
        """One pair: ``squared_error [H, W]`` its per-pixel squared difference summed over the
        channels; ``ssim_values`` its :func:`.image_metrics.ssim_map`; ``changed [H, W]`` what
        a dub may change (both clips' grown lower faces); ``lower [H, W]`` the reference's
        lower face itself."""
        static = ~changed
        if static.any():
            # The changed part is the small one: subtract it rather than gather the rest.
            self.squared_error += float(squared_error.sum() - squared_error[changed].sum())
            self.pixels += int(static.sum()) * generated.shape[2]
            value = mean_ssim(ssim_values, static)
            if math.isfinite(value):
                self.ssim_values.append(value)
        if lower.any():
            self.high_generated += high_frequency_energy(generated, lower)
            self.high_reference += high_frequency_energy(reference, lower)

    def summary(self) -> dict[str, float]:
        return {
            "static_psnr_db": psnr_from_mse(self.squared_error / self.pixels) if self.pixels else math.nan,
            "static_ssim": float(np.mean(self.ssim_values)) if self.ssim_values else math.nan,
            "lower_face_high_frequency_ratio": (self.high_generated / self.high_reference
                                                if self.high_reference > 0 else math.nan),
        }
