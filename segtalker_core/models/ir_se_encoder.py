"""E4S's encoder backbone: an IR-SE ResNet (IR-SE-50 widths) with InstanceNorm everywhere.

E4S's ``FSEncoder_PSP`` (``psp_encoders.py`` / ``helpers.py`` ``bottleneck_IR_SE_Ours``) is not
pSp's BatchNorm IR-SE-50: every norm is ``InstanceNorm2d`` without affine parameters or running
statistics (each sample is normalised by its own statistics, in training and eval alike), the
stride of a downsampling unit sits in its *second* 3x3 conv, and a unit that keeps its width has a
parameter-free shortcut (``MaxPool2d(1, s)``, a plain subsample). The layout, for a 256 input:

    stem:   conv3x3(3 -> 64) -> IN -> PReLU                           [B, 64, 256, 256]
    stages: 3 / 4 / 14 / 3 units of width 128 / 256 / 512 / 512, the first unit of each with
            stride 2 -> 128, 64, 32, 16 px; the last three stage outputs are pooled (1280-d)

A unit: ``res = SE(IN(conv3x3_s(PReLU(conv3x3(IN(x))))))``, ``out = res + shortcut(x)`` (no
activation after the sum). State-dict names (pack -> E4S, for unit u of the flat list):
``stem.0`` -> ``input_layer.0``, ``stem.2`` -> ``input_layer.2`` (PReLU),
``stages.{s}.{b}.residual.{1,2,3}`` -> ``body.{u}.res_layer.{1,2,3}``,
``stages.{s}.{b}.se.fc{1,2}`` -> ``body.{u}.res_layer.5.fc{1,2}``,
``stages.{s}.{b}.shortcut.0`` -> ``body.{u}.shortcut_layer.0`` (units that change width only).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

SE_REDUCTION = 16  # E4S's SEModule(depth, 16)


def instance_norm(channels: int) -> nn.InstanceNorm2d:
    """E4S's ``nn.InstanceNorm2d(channels)``: no affine, no running stats, eps 1e-5."""
    return nn.InstanceNorm2d(channels)


class SqueezeExcite(nn.Module):
    """Channel gate: global average -> 1x1 conv (C -> C/16) -> ReLU -> 1x1 conv -> sigmoid."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> same
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))
        return x * s


class Subsample(nn.Module):
    """Every ``stride``-th pixel (E4S's ``MaxPool2d(1, stride)``, which has a 1x1 window)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x


class IRSEUnit(nn.Module):
    """One ``bottleneck_IR_SE_Ours`` unit: ``[B, Cin, H, W] -> [B, Cout, H/s, W/s]``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.residual = nn.Sequential(
            instance_norm(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.PReLU(out_channels),
            # The stride in the second conv: the first one convolves at the input resolution.
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            instance_norm(out_channels),
        )
        self.se = SqueezeExcite(out_channels)
        if in_channels == out_channels:
            self.shortcut: nn.Module = Subsample(stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                instance_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.residual(x)) + self.shortcut(x)


class IRSEBackbone(nn.Module):
    """Stem + stages of :class:`IRSEUnit`; returns the last ``num_scales`` stage outputs, fine
    first (E4S: ``[B,256,64,64]``, ``[B,512,32,32]``, ``[B,512,16,16]`` for a 256 input)."""

    def __init__(
        self,
        in_channels: int,  # 3 (RGB)
        stem_channels: int,  # 64
        stage_channels: Sequence[int],  # (128, 256, 512, 512)
        stage_blocks: Sequence[int],  # (3, 4, 14, 3)
        num_scales: int,  # 3
    ):
        super().__init__()
        self.num_scales = num_scales
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False),
            instance_norm(stem_channels),
            nn.PReLU(stem_channels),
        )
        self.stages = build_stages(IRSEUnit, stem_channels, stage_channels, stage_blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stage_features(self.stem, self.stages, x, self.num_scales)


def build_stages(
    unit: type[nn.Module],  # unit(cin, cout, stride=...) -> a residual unit
    stem_channels: int,  # channels coming out of the stem
    stage_channels: Sequence[int],  # output width of each stage
    stage_blocks: Sequence[int],  # units per stage
) -> nn.ModuleList:
    """``stages.{i}.{j}``: stage i's units; the first of each halves the resolution and changes the
    width (the key layout both IR backbones' checkpoints use)."""
    stages = nn.ModuleList()
    cin = stem_channels
    for cout, blocks in zip(stage_channels, stage_blocks):
        units = [unit(cin, cout, stride=2)] + [unit(cout, cout, stride=1) for _ in range(blocks - 1)]
        stages.append(nn.Sequential(*units))
        cin = cout
    return stages


def stage_features(stem: nn.Module, stages: nn.ModuleList, x: torch.Tensor,
                   num_scales: int) -> list[torch.Tensor]:
    """The last ``num_scales`` stage outputs, finest first."""
    x = stem(x)
    features = []
    for stage in stages:
        x = stage(x)
        features.append(x)
    return features[-num_scales:]


__all__ = ["IRSEBackbone", "IRSEUnit", "SqueezeExcite", "Subsample", "SE_REDUCTION", "build_stages",
           "stage_features"]
