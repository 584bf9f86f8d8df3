"""Mask-guided style encoder: an image and its 12-region segmentation -> per-region W+ codes.

After E4S's region-guided inversion: a CNN backbone gives features at three scales (64/32/16
pixels for a 256 input); at each scale the features are averaged inside each region's mask; the
per-region vectors of the three scales are concatenated (1280-d with the default widths, as E4S);
a small MLP per region (all regions in one batched einsum) predicts K W+ rows as an offset from
the average latent. Rows K..L-1 are the average latent (the generator uses a global style there).

A region absent from an image (zero area in its segmentation) has no features to pool; its
``valid`` flag is False, so a caller can tell a fallback from a real code (and, for instance, take
that region's code from another frame or a reference). Its code (``absent_region``): the average
latent in every row (the pack's), or, as E4S, what the MLP makes of a zero feature vector plus the
average latent (E4S pools zeros for a region without pixels and maps every region alike).

The average latent is the mean of the generator's mapping network output over many z
(:meth:`Generator.mean_latent`), stored here as the ``latent_avg`` buffer so a bundle carries it.

Two variants share this module (config fields ``backbone``, ``input_antialias``, ``pooling``,
``mlp_activation``, ``absent_region``; :meth:`EncoderConfig.e4s` sets all five):

* the pack's own (default): a BatchNorm IR backbone, antialiased input resize, area-resized soft
  masks, leaky ReLU 0.2 x sqrt 2 in the MLP;
* E4S's exactly (to run its trained RGI weights, :mod:`segtalker_core.conversion.e4s`): the
  InstanceNorm IR-SE-50 of :mod:`.ir_se_encoder`, bilinear resize without antialias, hard masks
  resized with legacy ``nearest`` and a plain mean per scale (a region without a pixel at a scale
  pools a zero vector there, as E4S), ``nn.LeakyReLU()`` (slope 0.01, no gain) in the MLP, and an
  absent region's code the MLP of its zero vector plus the average latent.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ir_se_encoder import IRSEBackbone, build_stages, stage_features
from .mask_guided import RegionMasks

BACKBONES = ("ir", "ir_se_instancenorm")  # pack's BatchNorm IR | E4S's IR-SE with InstanceNorm
POOLINGS = ("soft", "hard")  # area-resized masks, eps mean | E4S: legacy-nearest masks, exact mean
MLP_ACTIVATIONS = ("lrelu_0.2_gain", "lrelu_0.01")  # StyleGAN's | E4S's nn.LeakyReLU()
ABSENT_REGIONS = ("average_latent", "mlp_of_zero")  # the pack's | E4S's (MLP(0) + average latent)
# The E4S-only values of the other switches: a config stored before ``absent_region`` existed with
# all of them is E4S's converted encoder, and gets E4S's absent-region rule when read.
_E4S_MARKERS = {"backbone": "ir_se_instancenorm", "pooling": "hard", "mlp_activation": "lrelu_0.01"}


@dataclass
class EncoderConfig:
    """Architecture of :class:`MaskGuidedEncoder` (stored as JSON in checkpoints)."""

    input_size: int = 256  # images are resized to this (bilinear) before the backbone
    in_channels: int = 3  # RGB in [-1, 1]
    stem_channels: int = 64  # 3x3 conv at full resolution
    stage_channels: tuple[int, ...] = (64, 256, 512, 512)  # each stage halves the resolution
    stage_blocks: tuple[int, ...] = (1, 2, 2, 1)  # residual IR blocks per stage
    num_scales: int = 3  # the last stages whose features are pooled (E4S: 3)
    mlp_hidden: int = 512  # hidden width of each region's MLP
    num_regions: int = 12  # R
    w_dim: int = 512  # generator w size
    n_latent: int = 14  # generator W+ rows L
    n_styles: int = 13  # rows K predicted per region (the generator's mask-guided rows; E4S: 13)
    backbone: str = "ir"  # one of BACKBONES
    input_antialias: bool = True  # antialias the bilinear resize to input_size (E4S: False)
    pooling: str = "soft"  # one of POOLINGS
    mlp_activation: str = "lrelu_0.2_gain"  # one of MLP_ACTIVATIONS
    absent_region: str = "average_latent"  # one of ABSENT_REGIONS (E4S: "mlp_of_zero")

    def __post_init__(self) -> None:
        self.stage_channels = tuple(self.stage_channels)
        self.stage_blocks = tuple(self.stage_blocks)
        for name, allowed in (("backbone", BACKBONES), ("pooling", POOLINGS),
                              ("mlp_activation", MLP_ACTIVATIONS),
                              ("absent_region", ABSENT_REGIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"EncoderConfig.{name} must be one of {allowed}, got "
                                 f"{getattr(self, name)!r}")
        if len(self.stage_channels) != len(self.stage_blocks):
            raise ValueError("stage_channels and stage_blocks need the same length")
        if not 1 <= self.num_scales <= len(self.stage_channels):
            raise ValueError(f"num_scales must be in 1..{len(self.stage_channels)}")
        if not 1 <= self.n_styles <= self.n_latent:
            raise ValueError(
                f"n_styles must be in 1..n_latent ({self.n_latent}), got {self.n_styles}"
            )
        if self.input_size % 2 ** len(self.stage_channels):
            raise ValueError("input_size must be divisible by 2 ** len(stage_channels)")

    @property
    def feature_dim(self) -> int:
        """Per-region feature size after concatenating the pooled scales (1280 by default)."""
        return sum(self.stage_channels[-self.num_scales :])

    @classmethod
    def for_generator(cls, generator_config, **overrides) -> "EncoderConfig":
        """An encoder config matching a :class:`GeneratorConfig` (w size, L, K, regions)."""
        fields = dict(
            w_dim=generator_config.w_dim,
            n_latent=generator_config.n_latent,
            n_styles=max(1, generator_config.num_mask_guided),
            num_regions=generator_config.num_regions,
        )
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def e4s(cls, **overrides) -> "EncoderConfig":
        """E4S's RGI encoder (``FSEncoder_PSP`` + 12 ``LocalMLP``): IR-SE-50 widths with
        InstanceNorm, 1280-d features, 13 rows per region of an 18-row (1024 px) W+."""
        fields = dict(
            input_size=256, in_channels=3, stem_channels=64,
            stage_channels=(128, 256, 512, 512), stage_blocks=(3, 4, 14, 3), num_scales=3,
            mlp_hidden=512, num_regions=12, w_dim=512, n_latent=18, n_styles=13,
            backbone="ir_se_instancenorm", input_antialias=False, pooling="hard",
            mlp_activation="lrelu_0.01", absent_region="mlp_of_zero",
        )
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        data = dict(data)
        if "absent_region" not in data and all(data.get(k) == v for k, v in _E4S_MARKERS.items()):
            data["absent_region"] = "mlp_of_zero"  # an E4S bundle converted before the field
        return cls(**data)


class IRBlock(nn.Module):
    """Pre-activation-style residual block of IR-ResNets (BN, conv, PReLU, conv, BN + shortcut).

    The stride sits in the first conv so a downsampling block convolves at the output resolution.
    """

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        stride: int,  # 1 or 2
    ):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Backbone(nn.Module):
    """Stem + stages of IR blocks; returns the last ``num_scales`` stage outputs, fine first."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        c = config
        self.num_scales = c.num_scales
        self.stem = nn.Sequential(
            nn.Conv2d(c.in_channels, c.stem_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c.stem_channels),
            nn.PReLU(c.stem_channels),
        )
        self.stages = build_stages(IRBlock, c.stem_channels, c.stage_channels, c.stage_blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stage_features(self.stem, self.stages, x, self.num_scales)


class RegionLinear(nn.Module):
    """R independent linear layers applied at once: ``[B, R, in] -> [B, R, out]`` (einsum).

    Equalised learning rate, as the generator's layers (E4S's region MLPs are StyleGAN linears).
    """

    def __init__(
        self,
        num_regions: int,  # R
        in_dim: int,  # input features
        out_dim: int,  # output features
        activation: bool,  # apply a leaky ReLU after the linear map
        negative_slope: float = 0.2,  # its slope (E4S's MLP: 0.01)
        gain: float = math.sqrt(2),  # its output gain (E4S's MLP: 1)
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_regions, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_regions, out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activation = activation
        self.negative_slope = negative_slope
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.scale).to(x.dtype)
        x = torch.einsum("bri,rio->bro", x, weight) + self.bias.to(x.dtype)
        if self.activation:
            x = F.leaky_relu(x, self.negative_slope)
            if self.gain != 1:
                x = x * self.gain
        return x


def masked_average(
    features: torch.Tensor,  # [B, C, h, w]
    masks: torch.Tensor,  # [B, R, h, w] (soft weights allowed)
    eps: float = 1e-6,  # keeps absent regions finite (their vector is 0)
) -> torch.Tensor:
    """``[B, R, C]``: each region's mask-weighted mean feature."""
    masks = masks.to(features.dtype)
    total = torch.einsum("brhw,bchw->brc", masks, features)
    area = masks.sum(dim=(2, 3))[:, :, None]
    return total / (area + eps)


def hard_masked_mean(
    features: torch.Tensor,  # [B, C, h, w]
    masks: torch.Tensor,  # [B, R, h, w] one-hot (0/1)
) -> torch.Tensor:
    """``[B, R, C]``: each region's exact mean feature, 0 where the region has no pixel here
    (E4S's ``masked_select(...).mean()``, left at zero for an empty region)."""
    masks = masks.to(features.dtype)
    total = torch.einsum("brhw,bchw->brc", masks, features)
    area = masks.sum(dim=(2, 3))[:, :, None]
    return torch.where(area > 0, total / area.clamp_min(1), torch.zeros_like(total))


class MaskGuidedEncoder(nn.Module):
    """Image + segmentation -> (codes ``[B, R, L, w_dim]``, valid ``[B, R]`` bool)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = c = config
        if c.backbone == "ir_se_instancenorm":
            self.backbone: nn.Module = IRSEBackbone(
                c.in_channels, c.stem_channels, c.stage_channels, c.stage_blocks, c.num_scales)
        else:
            self.backbone = Backbone(c)
        slope, gain = (0.01, 1.0) if c.mlp_activation == "lrelu_0.01" else (0.2, math.sqrt(2))
        self.mlp = nn.Sequential(
            RegionLinear(c.num_regions, c.feature_dim, c.mlp_hidden, activation=True,
                         negative_slope=slope, gain=gain),
            RegionLinear(c.num_regions, c.mlp_hidden, c.n_styles * c.w_dim, activation=False),
        )
        self.register_buffer("latent_avg", torch.zeros(c.w_dim))

    @torch.no_grad()
    def set_latent_avg(
        self,
        latent: torch.Tensor,  # [w_dim], e.g. Generator.mean_latent()
    ) -> None:
        assert latent.shape == self.latent_avg.shape, (latent.shape, self.latent_avg.shape)
        self.latent_avg.copy_(latent)

    def region_features(
        self,
        image: torch.Tensor,  # [B, 3, H, W] in [-1, 1]
        masks: RegionMasks,  # region masks of the image
    ) -> torch.Tensor:
        """``[B, R, feature_dim]``: per-region pooled multi-scale features (E4S's "style
        vectors", what it swaps, interpolates and optimises)."""
        c = self.config
        size = c.input_size
        if image.shape[-2:] != (size, size):
            image = F.interpolate(image, size=(size, size), mode="bilinear",
                                  antialias=c.input_antialias)
        pool = hard_masked_mean if c.pooling == "hard" else masked_average
        pooled = [pool(f, masks.at(f.shape[-2:], f.dtype)) for f in self.backbone(image)]
        return torch.cat(pooled, dim=2)

    def region_masks(
        self,
        segmentation: torch.Tensor,  # [B, H, W] labels or [B, R, H, W] masks (any size)
    ) -> RegionMasks:
        """The masks the pooling uses: area-resized soft masks, or E4S's legacy-nearest ones."""
        if self.config.pooling == "hard":
            return RegionMasks(segmentation, self.config.num_regions, legacy_nearest=True)
        # Area resizing keeps every present region's weight at the coarse scales.
        return RegionMasks(segmentation, self.config.num_regions, hard=False)

    def forward(
        self,
        image: torch.Tensor,  # [B, 3, H, W] in [-1, 1]
        segmentation: torch.Tensor,  # [B, H', W'] labels or [B, R, H', W'] masks (any size)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``codes [B, R, L, w_dim]`` and ``valid [B, R]`` (False: region absent)."""
        c = self.config
        assert image.ndim == 4 and image.shape[1] == c.in_channels, image.shape
        masks = self.region_masks(segmentation.to(image.device))
        assert masks.batch_size == image.shape[0], (masks.batch_size, image.shape[0])
        valid = masks.area() > 0
        return self.codes_from_features(self.region_features(image, masks), valid), valid

    def codes_from_features(
        self,
        features: torch.Tensor,  # [B, R, feature_dim] from region_features (maybe edited)
        valid: torch.Tensor,  # [B, R] bool: False marks an absent region (see absent_region)
    ) -> torch.Tensor:
        """``[B, R, L, w_dim]``: the codes of pooled features (the MLP + average latent half of
        :meth:`forward`; E4S swaps, interpolates and optimises the features, then maps them)."""
        c = self.config
        b = features.shape[0]
        offsets = self.mlp(features).reshape(b, c.num_regions, c.n_styles, c.w_dim)
        avg = self.latent_avg.to(offsets.dtype)
        if c.absent_region == "mlp_of_zero":
            head = avg + offsets  # E4S: every region through its MLP, absent ones pooled zeros
        else:
            # where(), not a product: an absent region's code is exactly the average latent.
            head = torch.where(valid[:, :, None, None], avg + offsets, avg)
        tail = avg.expand(b, c.num_regions, c.n_latent - c.n_styles, c.w_dim)
        return torch.cat([head, tail], dim=2)
