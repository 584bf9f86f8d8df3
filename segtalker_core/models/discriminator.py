"""StyleGAN2 residual discriminator (for training the mask-guided generator).

fromRGB 1x1 conv, residual blocks halving the resolution down to 4x4, minibatch standard deviation,
a 3x3 conv and two linear layers -> one logit per image. Equalised learning rate throughout; FIR
blur before every strided conv. ``in_channels`` may exceed 3 so a trainer can condition D on the
segmentation (RGB + one-hot masks); E4S uses the plain 3-channel D.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import Blur, EqualConv2d, EqualLinear, bias_act


@dataclass
class DiscriminatorConfig:
    """Architecture of :class:`Discriminator` (stored as JSON in checkpoints)."""

    size: int = 256  # input resolution (power of two, >= 8)
    in_channels: int = 3  # 3 (RGB) or more for a conditional D
    channel_base: int = 16384  # channels(res) = min(channel_base * multiplier // res, channel_max)
    channel_multiplier: int = 2  # as the generator's
    channel_max: int = 512  # widest layer
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)  # FIR taps before strided convs
    stddev_group: int = 4  # minibatch-stddev group size
    stddev_feat: int = 1  # channel groups of the minibatch-stddev feature

    def __post_init__(self) -> None:
        self.blur_kernel = tuple(self.blur_kernel)
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")

    def channels(self, res: int) -> int:
        return min(self.channel_base * self.channel_multiplier // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DiscriminatorConfig":
        return cls(**data)


class ConvLayer(nn.Module):
    """[FIR blur ->] equalised conv (stride 2 when downsampling) [-> bias + leaky ReLU]."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        kernel_size: int,  # square kernel
        downsample: bool = False,  # blur then stride-2 conv
        activate: bool = True,  # bias + leaky ReLU (gain sqrt 2)
        bias: bool = True,  # learned bias
        blur_kernel: Sequence[int] = (1, 3, 3, 1),  # FIR taps
    ):
        super().__init__()
        self.blur = None
        if downsample:
            # Pad so that blur + stride-2 conv maps H to exactly H / 2.
            p = len(blur_kernel) - 2 + (kernel_size - 1)
            self.blur = Blur(blur_kernel, ((p + 1) // 2, p // 2))
        padding = 0 if downsample else kernel_size // 2
        self.conv = EqualConv2d(
            in_channels, out_channels, kernel_size, 2 if downsample else 1, padding, bias=False
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        if self.activate:
            return bias_act(x, self.bias)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        return x


class ResBlock(nn.Module):
    """Two 3x3 convs (the second downsampling) plus a 1x1 downsampling skip, averaged by 1/sqrt2."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        blur_kernel: Sequence[int],  # FIR taps
    ):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(
            in_channels, out_channels, 1, True, activate=False, bias=False, blur_kernel=blur_kernel
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


def minibatch_stddev(
    x: torch.Tensor,  # [B, C, H, W]
    group_size: int,  # samples per statistics group
    num_features: int,  # channel groups (one extra feature map each)
) -> torch.Tensor:
    """Append the std over sample groups: ``[B, C + num_features, H, W]``.

    The group is the largest divisor of B not above ``group_size`` (so any batch size works; B=1
    gives a zero feature). Statistics in float32 for half-precision safety.
    """
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.float().reshape(g, b // g, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # [B/g, F, C/F, H, W]
    y = y.mean(dim=(2, 3, 4))  # [B/g, F]
    y = y[:, :, None, None].repeat(g, 1, h, w).to(x.dtype)  # sample n uses group n % (B/g)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: ``[B, in_channels, size, size]`` -> logits ``[B, 1]``."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = c = config
        log_size = int(math.log2(c.size))
        self.from_rgb = ConvLayer(c.in_channels, c.channels(c.size), 1)
        self.blocks = nn.Sequential(
            *[
                ResBlock(c.channels(2**i), c.channels(2 ** (i - 1)), c.blur_kernel)
                for i in range(log_size, 2, -1)
            ]
        )
        c4 = c.channels(4)
        self.final_conv = ConvLayer(c4 + c.stddev_feat, c4, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(c4 * 4 * 4, c4, activation=True),
            EqualLinear(c4, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        assert x.shape[1:] == (c.in_channels, c.size, c.size), (
            f"D expects [B, {c.in_channels}, {c.size}, {c.size}], got {tuple(x.shape)}"
        )
        x = self.blocks(self.from_rgb(x))
        x = minibatch_stddev(x, c.stddev_group, c.stddev_feat)
        x = self.final_conv(x)
        return self.final_linear(x.flatten(1))
