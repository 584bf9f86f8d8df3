"""GAN losses of the SGI stage: StyleGAN2's non-saturating logistic loss and lazy R1.

* Generator: ``softplus(-D(G(x)))`` (non-saturating: the gradient stays large while D is sure).
* Discriminator: ``softplus(-D(real)) + softplus(D(fake))``.
* R1 (Mescheder et al. 2018): ``gamma / 2 * E[ ||grad_x D(x)||^2 ]`` on real images only.
  StyleGAN2 computes it *lazily*, every ``interval`` D steps (16), and multiplies it by the
  interval so its weight per image stays the one the every-step penalty would have; the Adam
  hyper-parameters of D are adjusted for that (:func:`lazy_adam`). Path-length regularisation is
  left out (the SGI's generator is driven by region codes, not by z).

R1 is a second-order term and its gradient norm squared overflows half precision easily, so
:func:`r1_penalty` runs D's forward and the gradient in float32 even inside an autocast region.
Shapes: logits ``[B, 1]`` (or ``[B]``), images ``[B, C, H, W]``; every loss is a 0-d tensor.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

R1_GAMMA = 10.0  # StyleGAN2 / E4S at 256-1024 px
R1_INTERVAL = 16  # D steps between R1 evaluations (lazy regularisation)


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(fake)))`` (fp32)."""
    return F.softplus(-fake_logits.float()).mean()


def discriminator_loss(
    real_logits: torch.Tensor,  # D(real) [B, 1]
    fake_logits: torch.Tensor,  # D(fake) [B', 1] (fake detached from G)
) -> torch.Tensor:
    """Logistic discriminator loss ``mean(softplus(-D(real))) + mean(softplus(D(fake)))`` (fp32)."""
    return F.softplus(-real_logits.float()).mean() + F.softplus(fake_logits.float()).mean()


def r1_penalty(
    discriminator: Callable[[torch.Tensor], torch.Tensor],  # images -> logits
    real: torch.Tensor,  # [B, C, H, W] real images
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(penalty, real_logits)``: ``E_b[ sum_chw (d D(x_b) / d x_b)^2 ]`` in float32.

    D runs here with autocast off (float32 weights and input), so the squared gradient norm
    cannot overflow under fp16/bf16 AMP. The gradient graph is kept (``create_graph``) so the
    penalty trains D. ``real_logits`` are returned so a caller can reuse them."""
    x = real.detach().float().requires_grad_(True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        logits = discriminator(x).float()
        (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
        penalty = grad.square().flatten(1).sum(dim=1).mean()
    return penalty, logits


@dataclass(frozen=True)
class LazyR1:
    """When R1 runs and how much it weighs (StyleGAN2: gamma 10 every 16 D steps)."""

    gamma: float = R1_GAMMA  # R1 weight; 0 turns R1 off
    interval: int = R1_INTERVAL  # D steps between evaluations (1: every step)

    def __post_init__(self) -> None:
        if self.gamma < 0:
            raise ValueError(f"R1 gamma must be >= 0, got {self.gamma}")
        if self.interval < 1:
            raise ValueError(f"R1 interval must be >= 1, got {self.interval}")

    def due(self, d_step: int) -> bool:
        """Whether D step ``d_step`` (counted from 0) adds the penalty."""
        return self.gamma > 0 and d_step % self.interval == 0

    @property
    def weight(self) -> float:
        """Factor on :func:`r1_penalty` at a due step: ``gamma / 2 * interval``."""
        return self.gamma / 2 * self.interval

    def loss(self, discriminator: Callable[[torch.Tensor], torch.Tensor],
             real: torch.Tensor) -> torch.Tensor:
        """The weighted lazy R1 term (call it only at a :meth:`due` step)."""
        penalty, logits = r1_penalty(discriminator, real)
        # 0 * logits keeps every D parameter in the graph (DDP wants all of them to get a grad).
        return self.weight * penalty + 0.0 * logits.mean()


def lazy_adam(
    lr: float,  # learning rate as if regularised every step
    betas: tuple[float, float],  # Adam betas as if regularised every step
    interval: int,  # lazy regularisation interval (1: no adjustment)
) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's Adam adjustment for a network regularised every ``interval`` steps:
    ``c = interval / (interval + 1)``; ``lr * c`` and ``betas ** c``, so the optimiser's
    effective horizon counts the extra regularisation updates."""
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    c = interval / (interval + 1)
    return lr * c, (betas[0] ** c, betas[1] ** c)


__all__ = ["generator_loss", "discriminator_loss", "r1_penalty", "LazyR1", "lazy_adam",
           "R1_GAMMA", "R1_INTERVAL"]
