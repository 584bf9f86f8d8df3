"""Exponential moving average of a network's weights (the EMA generator StyleGAN2 exports).

``ema = beta * ema + (1 - beta) * live`` after every optimiser step, for every parameter;
buffers (a generator's stored noise and average latent, BatchNorm statistics) are *copied*, not
averaged, as StyleGAN2-ADA and rosinality do.

``beta`` is either given, or follows from a half-life counted in images (StyleGAN2: 10 k images):
after ``half_life_images`` images an old weight's share has halved, so
``beta = 0.5 ** (batch_size / half_life_images)`` per step of ``batch_size`` images (rosinality's
``0.5 ** (32 / 10_000)`` at batch 32). StyleGAN2-ADA's ramp-up (``rampup``, e.g. 0.05) caps the
half-life at ``rampup * images_seen`` so the average does not hold on to the random
initialisation early in a run (or to the starting weights of a short fine-tune).
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn

HALF_LIFE_IMAGES = 10_000  # StyleGAN2's G EMA half-life (ema_kimg = 10)


def ema_beta(
    batch_size: int,  # images per optimiser step (global, over every rank)
    half_life_images: float = HALF_LIFE_IMAGES,  # images until an old weight's share halves
    rampup: float | None = None,  # ADA's ema_rampup (e.g. 0.05); None: no ramp
    images_seen: int = 0,  # images trained on so far (for the ramp)
) -> float:
    """Decay per step, ``0.5 ** (batch_size / half_life)`` with the optional ramp."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if half_life_images < 0:
        raise ValueError(f"half_life_images must be >= 0, got {half_life_images}")
    half_life = float(half_life_images)
    if rampup is not None:
        if rampup <= 0:
            raise ValueError(f"EMA rampup must be > 0 (or None), got {rampup}")
        half_life = min(half_life, images_seen * rampup)
    if half_life <= 0:
        return 0.0  # nothing to average yet: the EMA is the live network
    return 0.5 ** (batch_size / half_life)


class ModelEMA:
    """A frozen copy of a module kept as the moving average of the live one.

    ``ema.module`` is the averaged network (eval mode, no grads); :meth:`update` folds the live
    module in after an optimiser step. Pass the unwrapped module (not a DDP wrapper)."""

    def __init__(self, model: nn.Module):
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(
        self,
        model: nn.Module,  # the live network (same architecture)
        beta: float,  # decay in [0, 1]: 0 copies the live weights, 1 keeps the average
    ) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"EMA beta must be in [0, 1], got {beta}")
        live = dict(model.named_parameters())
        for name, avg in self.module.named_parameters():
            src = live[name].detach()
            avg.lerp_(src.to(avg.dtype), 1.0 - beta)
        live_buffers = dict(model.named_buffers())
        for name, buf in self.module.named_buffers():
            buf.copy_(live_buffers[name])

    @torch.no_grad()
    def copy_from(self, model: nn.Module) -> None:
        """Reset the average to the live weights (e.g. after loading starting weights)."""
        self.update(model, 0.0)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)

    def to(self, *args, **kwargs) -> "ModelEMA":
        self.module.to(*args, **kwargs)
        return self


__all__ = ["HALF_LIFE_IMAGES", "ema_beta", "ModelEMA"]
