"""Image losses of the SGI stage that need no weight file: pixel reconstruction and a
weight-free perceptual loss.

Images are ``[B, 3, H, W]`` in [-1, 1] (the generator's range); masks are ``[B, 1, H, W]`` or
``[B, H, W]`` weights in [0, 1] (e.g. the face without the background). Every loss returns a
0-d float32 tensor; the statistics are computed in float32 whatever the autocast dtype.

**The weight-free perceptual loss** (:class:`WeightFreePerceptual`) stands in for LPIPS when the
user has no VGG weights (:mod:`.feature_losses` has LPIPS and the ArcFace identity loss when
they do). It is the sum of two terms that, unlike L1/L2 alone, punish the blur a reconstruction
drifts to:

* ``1 - MS-SSIM`` (Wang, Simoncelli & Bovik 2003): structure and contrast compared in local
  Gaussian windows (sigma 1.5, 11 taps, reflect padding so any size works) over up to five scales
  with the paper's weights (renormalised when a small image allows fewer scales: one scale per
  halving down to 8 px), per RGB channel;
* Laplacian-pyramid L1 (Bojanowski et al. 2018, "Lap1"): the mean absolute difference of each
  band-pass level, all levels weighted equally (the paper's ``2^{2j}`` on sums is equal weights on
  means), so lost high frequencies cost as much as a shifted mean colour.

It is 0 for identical images and grows with blur and with misalignment (tested).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Wang et al. 2003, finest scale first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11-tap window
SSIM_MIN_SIZE = 8  # coarsest scale's side
# Stabilisers for a data range of 1 (images are mapped from [-1, 1] to [0, 1] first).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


# ------------------------------------------------------------------------------- pixel losses

def _mask_weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` float32 weights from a ``[B, H, W]`` or ``[B, 1, H, W]`` mask."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != like.shape[0] or \
            mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask must be [B, H, W] or [B, 1, H, W] matching the images "
                         f"{tuple(like.shape)}, got {tuple(mask.shape)}")
    return mask.float()


def masked_mean(
    error: torch.Tensor,  # [B, C, H, W] per-pixel error
    mask: torch.Tensor | None = None,  # [B, (1,) H, W] weights; None: every pixel
) -> torch.Tensor:
    """Mean of ``error`` over the masked pixels and channels (0 when the mask is empty)."""
    error = error.float()
    if mask is None:
        return error.mean()
    w = _mask_weights(mask, error)
    total = (error * w).sum()
    return total / (w.sum() * error.shape[1]).clamp_min(1e-8)


def l1_loss(pred: torch.Tensor, target: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean absolute error."""
    _check_pair(pred, target)
    return masked_mean((pred.float() - target.float()).abs(), mask)


def l2_loss(pred: torch.Tensor, target: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean squared error (E4S's reconstruction term)."""
    _check_pair(pred, target)
    return masked_mean((pred.float() - target.float()).square(), mask)


def psnr(
    pred: torch.Tensor,  # [B, C, H, W] in [-1, 1] (clamped here)
    target: torch.Tensor,  # [B, C, H, W] in [-1, 1]
) -> torch.Tensor:
    """``[B]`` peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak 2)."""
    _check_pair(pred, target)
    mse = (pred.float().clamp(-1, 1) - target.float()).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape != target.shape:
        raise ValueError(f"images must be two [B, C, H, W] tensors of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")


# ------------------------------------------------------------------------------- filtering

def gaussian_taps(sigma: float, radius: int, device: torch.device | None = None) -> torch.Tensor:
    """``[2 radius + 1]`` normalised 1-D Gaussian."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def gaussian_blur(
    x: torch.Tensor,  # [B, C, H, W] float32
    sigma: float,  # standard deviation in pixels
    radius: int | None = None,  # half width (default ceil(3 sigma)), capped by the image size
) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (same size out)."""
    if radius is None:
        radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if radius < 1:
        return x
    taps = gaussian_taps(sigma, radius, x.device).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


# ------------------------------------------------------------------------------- MS-SSIM

def ms_ssim_scales(size: int) -> int:
    """How many MS-SSIM scales an image of side ``size`` allows (one per halving to 8 px, <= 5)."""
    if size < SSIM_MIN_SIZE:
        return 1
    return max(1, min(len(MS_SSIM_WEIGHTS), int(math.log2(size / SSIM_MIN_SIZE)) + 1))


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ssim [B], contrast-structure [B])``: local statistics averaged over pixels and
    channels."""
    def blur(t: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(t, SSIM_SIGMA, SSIM_RADIUS)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + SSIM_C2) / (var_x + var_y + SSIM_C2)
    luminance = (2 * mu_x * mu_y + SSIM_C1) / (mu_x**2 + mu_y**2 + SSIM_C1)
    return (luminance * cs).flatten(1).mean(dim=1), cs.flatten(1).mean(dim=1)


def ms_ssim(
    pred: torch.Tensor,  # [B, C, H, W] in [-1, 1]
    target: torch.Tensor,  # [B, C, H, W] in [-1, 1]
    scales: int | None = None,  # default: ms_ssim_scales(min(H, W))
) -> torch.Tensor:
    """``[B]`` multi-scale SSIM in [0, 1] (1: identical), float32."""
    _check_pair(pred, target)
    x = (pred.float() + 1) / 2
    y = (target.float() + 1) / 2
    n = ms_ssim_scales(min(x.shape[-2:])) if scales is None else scales
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], device=x.device)
    weights = weights / weights.sum()
    factors = []
    for level in range(n):
        ssim, cs = _ssim_terms(x, y)
        if level == n - 1:
            factors.append(ssim)
        else:
            factors.append(cs)
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    # Negative contrast-structure (anti-correlated patches) is clamped: a fractional power of a
    # negative number is undefined, and the small floor keeps the gradient finite.
    stacked = torch.stack(factors, dim=1).clamp_min(1e-6)
    return torch.prod(stacked ** weights, dim=1)


# ------------------------------------------------------------------------------- Laplacian L1

def laplacian_pyramid(
    x: torch.Tensor,  # [B, C, H, W] float32
    levels: int,  # band-pass levels before the low-pass residual
) -> list[torch.Tensor]:
    """``levels`` band-pass images (finest first) and the low-pass residual."""
    bands = []
    current = x
    for _ in range(levels):
        if min(current.shape[-2:]) < 2:
            break
        low = F.avg_pool2d(gaussian_blur(current, 1.0, 2), 2)
        up = F.interpolate(low, size=current.shape[-2:], mode="bilinear", align_corners=False)
        bands.append(current - up)
        current = low
    bands.append(current)
    return bands


def laplacian_l1(
    pred: torch.Tensor,  # [B, C, H, W]
    target: torch.Tensor,  # [B, C, H, W]
    levels: int | None = None,  # default: down to about 4 px
) -> torch.Tensor:
    """Mean L1 of every Laplacian-pyramid level, levels weighted equally (0-d)."""
    _check_pair(pred, target)
    if levels is None:
        levels = max(1, int(math.log2(max(4, min(pred.shape[-2:])) / 4)))
    diff = laplacian_pyramid(pred.float() - target.float(), levels)  # the pyramid is linear
    return torch.stack([band.abs().mean() for band in diff]).mean()


@dataclass(frozen=True)
class WeightFreePerceptual:
    """``ms_ssim_weight * (1 - MS-SSIM) + laplacian_weight * Laplacian-L1`` (module docstring)."""

    ms_ssim_weight: float = 1.0
    laplacian_weight: float = 1.0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = pred.new_zeros((), dtype=torch.float32)
        if self.ms_ssim_weight:
            loss = loss + self.ms_ssim_weight * (1 - ms_ssim(pred, target)).mean()
        if self.laplacian_weight:
            loss = loss + self.laplacian_weight * laplacian_l1(pred, target)
        return loss


__all__ = ["masked_mean", "l1_loss", "l2_loss", "psnr", "gaussian_blur", "ms_ssim",
           "ms_ssim_scales", "laplacian_pyramid", "laplacian_l1", "WeightFreePerceptual",
           "MS_SSIM_WEIGHTS"]
