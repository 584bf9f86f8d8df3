"""Seg-SyncNet: Wav2Lip's expert lip-sync discriminator, on label maps instead of pixels.

Visual input: the lower half of 5 consecutive 12-region maps (one-hot, or softmax of a TSG),
stacked on the channel axis -> ``[B, 60, R/2, R]``; audio input: the mel window covering those
5 frames, ``[B, 1, 80, 16]``. Each goes through a conv encoder ending in ReLU, then L2
normalisation, so both embeddings are unit vectors with non-negative components and their cosine
similarity lies in [0, 1]: Wav2Lip reads it directly as the probability that audio and video are
in sync and trains with BCE (positives: the true window; negatives: another window of the same
video). It is also the pack's offline lip-sync score on segmentations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import labels as L
from .audio_encoder import AudioEncoder, AudioEncoderConfig, ConvBNReLU, check_mel_batch

# Keeps BCE finite when a similarity hits exactly 0 or 1.
PROBABILITY_EPS = 1e-6


@dataclass(frozen=True)
class SyncNetConfig:
    """Architecture of a Seg-SyncNet.

    ``resolution``: side of the full maps it was trained on (it reads their lower half,
    ``resolution/2 x resolution``; other sizes are resized bilinearly). ``visual_widths``: stem
    width, then one stage per entry (the first halves only the width to make the lower half
    square, the others halve both sides). ``embed_dim`` must equal ``audio.widths[-1]``.
    """

    resolution: int = 128
    num_frames: int = 5
    visual_widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    embed_dim: int = 512
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "visual_widths", tuple(int(w) for w in self.visual_widths))
        if not (isinstance(self.resolution, int) and self.resolution >= 16
                and self.resolution % 2 == 0):
            raise ValueError(f"SyncNetConfig.resolution must be an even integer >= 16, got "
                             f"{self.resolution!r}")
        if self.num_frames < 1:
            raise ValueError(f"SyncNetConfig.num_frames must be >= 1, got {self.num_frames}")
        if len(self.visual_widths) < 2 or min(self.visual_widths) < 1:
            raise ValueError(f"SyncNetConfig.visual_widths needs >= 2 positive widths, got "
                             f"{self.visual_widths}")
        if self.audio.embed_dim != self.embed_dim:
            raise ValueError(f"SyncNetConfig: audio.widths[-1] ({self.audio.embed_dim}) must equal "
                             f"embed_dim ({self.embed_dim}) so the two embeddings compare")

    @property
    def in_channels(self) -> int:
        return self.num_frames * L.NUM_REGIONS

    def to_dict(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "num_frames": self.num_frames,
                "visual_widths": list(self.visual_widths), "embed_dim": self.embed_dim,
                "audio": self.audio.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SyncNetConfig":
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"SyncNet architecture has unknown entries {sorted(unknown)}; was it "
                             f"written by a newer SegTalker?")
        if "audio" in data:
            data["audio"] = AudioEncoderConfig.from_dict(dict(data["audio"]))
        return cls(**data)


class VisualEncoder(nn.Module):
    """Lower-half window ``[B, 60, R/2, R]`` -> ``[B, embed_dim]`` (non-negative)."""

    def __init__(self, config: SyncNetConfig) -> None:
        super().__init__()
        w = config.visual_widths
        layers: list[nn.Module] = [ConvBNReLU(config.in_channels, w[0], 7, 1, padding=3)]
        for i in range(1, len(w)):
            stride = (1, 2) if i == 1 else 2
            layers.append(ConvBNReLU(w[i - 1], w[i], 3, stride, padding=1))
            layers.append(ConvBNReLU(w[i], w[i], 3, 1, padding=1, residual=True))
        self.blocks = nn.Sequential(*layers)
        self.head = ConvBNReLU(w[-1], config.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Average pooling makes the embedding independent of the remaining spatial size.
        x = F.adaptive_avg_pool2d(self.blocks(x), 1)
        return self.head(x).flatten(1)


class SegSyncNet(nn.Module):
    """``forward(mel [B,1,80,16], maps [B,5,12,H,W]) -> (audio_emb, visual_emb)``, each
    ``[B, embed_dim]``, unit L2 norm, non-negative (dtype of the inputs)."""

    def __init__(self, config: SyncNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or SyncNetConfig()
        self.audio_encoder = AudioEncoder(self.config.audio)
        self.visual_encoder = VisualEncoder(self.config)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def visual_input(self, maps: torch.Tensor) -> torch.Tensor:
        """``[B, 5, 12, H, W]`` maps -> lower halves ``[B, 60, R/2, R]`` at the model's size."""
        c = self.config
        if maps.ndim != 5 or tuple(maps.shape[1:3]) != (c.num_frames, L.NUM_REGIONS) \
                or maps.shape[3] != maps.shape[4] or not maps.is_floating_point():
            raise ValueError(
                f"SyncNet maps must be float one-hot/softmax windows [B, {c.num_frames}, "
                f"{L.NUM_REGIONS}, H, H] ({c.num_frames} consecutive square 12-region maps), got "
                f"{tuple(maps.shape)} {maps.dtype}; use tsg.onehot on integer maps"
            )
        b, _, _, h, w = maps.shape
        lower = maps[..., h // 2:, :].reshape(b, c.in_channels, h - h // 2, w)
        target = (c.resolution // 2, c.resolution)
        if tuple(lower.shape[-2:]) != target:
            lower = F.interpolate(lower, size=target, mode="bilinear", align_corners=False)
        return lower

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        check_mel_batch(mel, "mel")
        return _normalise(self.audio_encoder(mel).flatten(1))

    def embed_visual(self, maps: torch.Tensor) -> torch.Tensor:
        return _normalise(self.visual_encoder(self.visual_input(maps)))

    def forward(self, mel: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(mel) != len(maps):
            raise ValueError(f"SyncNet inputs disagree on batch size: mel {len(mel)}, maps "
                             f"{len(maps)}")
        return self.embed_audio(mel), self.embed_visual(maps)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    # In float32: squared norms of 512 half-precision values overflow/underflow easily.
    return F.normalize(x.float(), dim=1, eps=1e-12).to(x.dtype)


def sync_probability(audio_emb: torch.Tensor, visual_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of unit embeddings ``[B, D]`` -> ``[B]`` float32 in (0, 1) (clamped
    away from the ends so a BCE on it stays finite)."""
    if audio_emb.shape != visual_emb.shape or audio_emb.ndim != 2:
        raise ValueError(f"embeddings must both be [B, D], got {tuple(audio_emb.shape)} and "
                         f"{tuple(visual_emb.shape)}")
    sim = F.cosine_similarity(audio_emb.float(), visual_emb.float(), dim=1)
    return sim.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)


def sync_bce_loss(audio_emb: torch.Tensor, visual_emb: torch.Tensor,
                  target: torch.Tensor) -> torch.Tensor:
    """BCE of :func:`sync_probability` against ``target [B]`` (1 in sync, 0 off sync)."""
    prob = sync_probability(audio_emb, visual_emb)
    if target.shape != prob.shape:
        raise ValueError(f"target must be [B] = {tuple(prob.shape)} of 0/1, got "
                         f"{tuple(target.shape)}")
    return F.binary_cross_entropy(prob, target.float())
