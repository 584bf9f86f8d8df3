"""Training losses of the TSG: cross-entropy, dice on the small mouth regions, sync loss.

Cross-entropy alone under-weights lips and mouth interior (a few percent of the pixels), which
are exactly what speech changes; a soft dice term on those classes rewards getting their *shape*
right regardless of their size. The sync loss scores the predicted lower faces against the audio
with a frozen :class:`~segtalker_core.models.syncnet.SegSyncNet` (Wav2Lip's expert-discriminator
idea on label maps).

All losses compute in float32 whatever the model dtype (AMP-safe) and return scalars.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import labels as L
from .tsg import LIPS, MOUTH_INTERIOR

SMALL_REGIONS: tuple[int, ...] = (LIPS, MOUTH_INTERIOR)


@dataclass(frozen=True)
class TSGLossWeights:
    """Weights of the TSG loss terms (``sync`` as Wav2Lip's 0.03; 0 disables a term)."""

    cross_entropy: float = 1.0
    dice: float = 1.0
    sync: float = 0.03
    # Extra weight of cross-entropy inside the masked mouth area, where the network must draw.
    mouth_area: float = 2.0


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != L.NUM_REGIONS:
        raise ValueError(f"logits must be [B, {L.NUM_REGIONS}, H, W], got {tuple(logits.shape)}")
    if target.shape != (logits.shape[0], *logits.shape[2:]) or target.is_floating_point():
        raise ValueError(f"target must be integer labels [B, H, W] = "
                         f"{(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)} "
                         f"{target.dtype}")


def cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor,
                       weight_map: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel cross-entropy, ``logits [B, 12, H, W]``, ``target [B, H, W]`` long.

    ``weight_map [B, H, W]`` (optional) weights pixels; the result is the weighted mean.
    """
    _check_pair(logits, target)
    per_pixel = F.cross_entropy(logits.float(), target.long(), reduction="none")
    if weight_map is None:
        return per_pixel.mean()
    w = weight_map.float().expand_as(per_pixel)
    return (per_pixel * w).sum() / w.sum().clamp_min(1e-6)


def dice_loss(logits: torch.Tensor, target: torch.Tensor,
              classes: tuple[int, ...] = SMALL_REGIONS, smooth: float = 1.0) -> torch.Tensor:
    """``1 - soft dice`` of the softmax on ``classes``, averaged over classes and samples.

    ``smooth`` keeps a class absent from both prediction and target at loss ~0 (not NaN).
    """
    _check_pair(logits, target)
    probs = logits.float().softmax(dim=1)[:, list(classes)]  # [B, K, H, W]
    truth = torch.stack([(target == c) for c in classes], dim=1).float()
    inter = (probs * truth).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + truth.sum(dim=(2, 3))
    return (1 - (2 * inter + smooth) / (total + smooth)).mean()


def sync_loss(syncnet: torch.nn.Module, probs_window: torch.Tensor,
              mel: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's expert sync loss on predicted maps: BCE(sync probability, 1).

    ``probs_window [B, 5, 12, H, W]``: softmax of 5 consecutive predicted frames (differentiable);
    ``mel [B, 1, 80, 16]``: the mel window of that 5-frame span. The SyncNet should be frozen
    (``requires_grad_(False)``, eval mode); the gradient reaches the TSG through the maps.
    """
    from .syncnet import sync_bce_loss

    audio_emb, visual_emb = syncnet(mel, probs_window)
    return sync_bce_loss(audio_emb, visual_emb, torch.ones(len(mel), device=mel.device))


def tsg_loss(logits: torch.Tensor, target: torch.Tensor, mouth_mask: torch.Tensor | None = None,
             weights: TSGLossWeights = TSGLossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction part of the TSG objective -> ``(total, {term: value})``.

    ``mouth_mask [B, 1, H, W]`` or ``[B, H, W]`` (``TSG.mouth_mask`` of the source) raises the
    cross-entropy weight inside it to ``weights.mouth_area``. Add :func:`sync_loss` x
    ``weights.sync`` once 5-frame windows are available.
    """
    weight_map = None
    if mouth_mask is not None:
        m = mouth_mask.float().reshape(target.shape)
        weight_map = 1 + (weights.mouth_area - 1) * m
    parts = {"cross_entropy": cross_entropy_loss(logits, target, weight_map)}
    if weights.dice:
        parts["dice"] = dice_loss(logits, target)
    total = weights.cross_entropy * parts["cross_entropy"] + weights.dice * parts.get("dice", 0.0)
    return total, {k: float(v.detach()) for k, v in parts.items()}
