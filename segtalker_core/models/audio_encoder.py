"""Wav2Lip-style convolutional encoder of one mel window.

Input is the Wav2Lip mel window of one video frame, ``[B, 1, 80, 16]`` (80 mel bands x 16 mel
steps = 0.2 s). The layout follows Wav2Lip's audio encoder (Prajwal et al. 2020): Conv+BN+ReLU
blocks, each stage opened by a strided conv and followed by residual convs, with the strides
(1,1) -> (3,1) -> 3 -> (3,2) taking 80x16 to 3x3, then a 3x3 valid conv to 1x1 and a 1x1 conv::

    1x80x16 -> w0x80x16 -> w1x27x16 -> w2x9x6 -> w3x3x3 -> w4x1x1

Only the widths and the number of residual blocks are configurable; the strides are tied to the
80x16 window, which every SegTalker audio front end produces.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

MEL_BINS = 80
MEL_STEPS = 16

# Stride of the conv opening each of the four stages (fixed by the 80x16 window).
_STAGE_STRIDES: tuple[tuple[int, int], ...] = ((1, 1), (3, 1), (3, 3), (3, 2))


@dataclass(frozen=True)
class AudioEncoderConfig:
    """``widths``: 4 stage widths + the embedding width (Wav2Lip: 32, 64, 128, 256, 512).
    ``residual_blocks``: residual convs after each stage's opening conv (Wav2Lip: 2, 2, 2, 1)."""

    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    residual_blocks: tuple[int, ...] = (2, 2, 2, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "residual_blocks", tuple(int(n) for n in self.residual_blocks))
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ValueError(
                f"AudioEncoderConfig.widths must be 5 positive widths (4 stages + embedding), "
                f"got {self.widths}"
            )
        if len(self.residual_blocks) != 4 or min(self.residual_blocks) < 0:
            raise ValueError(
                f"AudioEncoderConfig.residual_blocks must be 4 counts >= 0 (one per stage), got "
                f"{self.residual_blocks}"
            )

    @property
    def embed_dim(self) -> int:
        return self.widths[-1]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "AudioEncoderConfig":
        return cls(**dict(data or {}))


class ConvBNReLU(nn.Module):
    """Conv + BatchNorm + ReLU; with ``residual`` the input is added before the ReLU (Wav2Lip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int] = 1,
                 padding: int = 0, residual: bool = False) -> None:
        super().__init__()
        if residual and (cin != cout or stride not in (1, (1, 1))):
            raise ValueError("a residual block must keep channels and resolution")
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        if self.residual:
            out = out + x
        return torch.relu(out)


class AudioEncoder(nn.Module):
    """Mel window ``[B, 1, 80, 16]`` -> embedding ``[B, widths[-1], 1, 1]``."""

    def __init__(self, config: AudioEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or AudioEncoderConfig()
        w = self.config.widths
        layers: list[nn.Module] = []
        cin = 1
        for stage, (stride, blocks) in enumerate(zip(_STAGE_STRIDES, self.config.residual_blocks)):
            layers.append(ConvBNReLU(cin, w[stage], 3, stride, padding=1))
            layers.extend(ConvBNReLU(w[stage], w[stage], 3, 1, 1, residual=True)
                          for _ in range(blocks))
            cin = w[stage]
        layers.append(ConvBNReLU(cin, w[4], 3, 1, padding=0))  # 3x3 -> 1x1
        layers.append(ConvBNReLU(w[4], w[4], 1, 1, padding=0))
        self.blocks = nn.Sequential(*layers)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        check_mel_batch(mel, "mel")
        out = self.blocks(mel)
        assert out.shape[1:] == (self.embed_dim, 1, 1), out.shape
        return out


def check_mel_batch(mel: torch.Tensor, name: str) -> None:
    """Refuse anything but ``[B, 1, 80, 16]`` with a message that says how to get it."""
    if not isinstance(mel, torch.Tensor) or mel.ndim != 4 or tuple(mel.shape[1:]) != (
            1, MEL_BINS, MEL_STEPS):
        shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise ValueError(
            f"{name} must be Wav2Lip mel windows of shape [B, 1, {MEL_BINS}, {MEL_STEPS}], got "
            f"{shape}; make them with segtalker_core.audio (one window per frame) and add the "
            f"channel axis with .unsqueeze(1)"
        )
