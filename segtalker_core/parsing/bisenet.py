"""BiSeNet face parser, checkpoint-compatible with face-parsing.PyTorch's ``79999_iter.pth``.

Module and parameter names follow the published checkpoint exactly (191 state-dict entries; the
same names as facexlib's ``parsing_bisenet.pth``), so those files load with ``strict=True``.
Unlike the upstream class, constructing :class:`BiSeNet` never downloads an ImageNet ResNet-18:
the backbone is randomly initialised and always overwritten by the checkpoint.

Inference (:class:`BiSeNetParser`) reproduces the upstream test script: RGB, resize to 512
(bilinear, antialiased like PIL), /255, ImageNet mean/std, first output, argmax over the 19 classes
(BiSeNet order, :data:`segtalker_core.labels.BISENET_19`), then the map is resized back to the crop
size with nearest-neighbour sampling.

Precision: the network keeps the weights it was loaded with; a bf16/fp16 parser computes under
autocast (:func:`segtalker_core.precision.compute`), so parsing never rounds the cached weights.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints, precision
from ..batching import AdaptiveBatch
from ..components import BISENET_ARCHITECTURE
from ..labels import NUM_CLASSES_19

# The published network's constants, from the component registry (one source of truth).
IMAGENET_MEAN: tuple[float, float, float] = tuple(BISENET_ARCHITECTURE["mean"])
IMAGENET_STD: tuple[float, float, float] = tuple(BISENET_ARCHITECTURE["std"])
INPUT_SIZE: int = int(BISENET_ARCHITECTURE["input_size"])


@dataclass(frozen=True)
class BiSeNetConfig:
    """Architecture of the published face-parsing BiSeNet (ResNet-18 context path)."""

    num_classes: int = NUM_CLASSES_19
    input_size: int = INPUT_SIZE

    def to_architecture(self) -> dict:
        return {"name": "BiSeNet", "backbone": "resnet18", "num_classes": self.num_classes,
                "input_size": self.input_size, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD)}


def bisenet_config(architecture) -> BiSeNetConfig:
    """The :class:`BiSeNetConfig` a bundle's ``architecture`` describes (published defaults for
    missing entries). Loading and ``convert`` both build from it, so they check the same shapes."""
    return BiSeNetConfig(num_classes=int(architecture.get("num_classes", NUM_CLASSES_19)),
                         input_size=int(architecture.get("input_size", INPUT_SIZE)))


def bisenet_bundle_config(config: BiSeNetConfig = BiSeNetConfig()) -> checkpoints.BundleConfig:
    """Bundle metadata for a BiSeNet face-parser file."""
    return checkpoints.BundleConfig(
        component="bisenet", architecture=config.to_architecture(),
        label_scheme="bisenet_19", resolution=config.input_size,
    )


# ------------------------------------------------------------------------------ building blocks

class ConvBNReLU(nn.Module):
    """Bias-free conv + BatchNorm + ReLU (checkpoint names: ``conv``, ``bn``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; ``downsample`` (1x1 conv + BN) only where the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18Features(nn.Module):
    """ResNet-18 trunk without the classifier; returns features at strides 8, 16 and 32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(64, 64, stride=1)
        self.layer2 = self._stage(64, 128, stride=2)
        self.layer3 = self._stage(128, 256, stride=2)
        self.layer4 = self._stage(256, 512, stride=2)

    @staticmethod
    def _stage(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class AttentionRefinement(nn.Module):
    """Re-weights a feature map's channels by a gate computed from its global average."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(_global_pool(feat))))
        return feat * gate


class ContextPath(nn.Module):
    """Backbone + attention refinement; returns (feat8, context at 1/8, context at 1/16)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        # The global context is a 1x1 map; nearest upsampling of it is a broadcast.
        context = self.conv_avg(_global_pool(feat32))
        feat32_sum = self.arm32(feat32) + context
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, size=feat16.shape[2:],
                                                   mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, size=feat8.shape[2:],
                                                   mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusion(nn.Module):
    """Fuses spatial (backbone) and context features, with a squeeze-excitation style gate."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_pool(feat)))))
        return feat + feat * gate


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU then a bias-free 1x1 conv to class logits."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The face-parsing BiSeNet. ``forward`` returns (main, aux16, aux32) logits at input size."""

    def __init__(self, num_classes: int = NUM_CLASSES_19) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, num_classes)
        self.conv_out16 = SegmentationHead(128, 64, num_classes)
        self.conv_out32 = SegmentationHead(128, 64, num_classes)

    def _upsample(self, logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits only (what inference uses): ``[B, 3, H, W]`` -> ``[B, C, H, W]``."""
        feat8, context8, _ = self.cp(x)
        return self._upsample(self.conv_out(self.ffm(feat8, context8)), x.shape[2:])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, context8, context16 = self.cp(x)
        size = x.shape[2:]
        main = self._upsample(self.conv_out(self.ffm(feat8, context8)), size)
        aux16 = self._upsample(self.conv_out16(context8), size)
        aux32 = self._upsample(self.conv_out32(context16), size)
        return main, aux16, aux32


# ------------------------------------------------------------------------------ inference

class BiSeNetParser:
    """:class:`~segtalker_core.parsing.base.FaceParser` backed by a BiSeNet module.

    The module is moved to ``device`` (never cast) and put in eval mode; ``dtype`` is the
    precision it *computes* in (autocast). Crops are processed ``batch_size`` at a time; an
    out-of-memory error halves the batch (down to 1) for the rest of the run (until the next
    :meth:`place`). ``input_size`` is the network resolution; the checkpoint was trained at 512,
    other values trade accuracy for speed.
    """

    name = "bisenet"

    def __init__(self, model: BiSeNet, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4,
                 input_size: int = INPUT_SIZE) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype (float32, float16, bfloat16), "
                             f"got {dtype!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(input_size, int) or input_size < 32 or input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32 (>= 32), got {input_size!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.input_size = input_size
        self.model = model.to(self.device).eval()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._batch = AdaptiveBatch(batch_size, "BiSeNet parse")

    def place(self, device: str | torch.device, dtype: torch.dtype) -> None:
        """Move the network (and the normalisation constants) to ``device`` and compute in
        ``dtype`` from now on. The weights are moved, never cast: their values stay as loaded."""
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model.to(self.device)
        self._mean = self._mean.to(self.device)
        self._std = self._std.to(self.device)
        self._batch = AdaptiveBatch(self.batch_size, "BiSeNet parse")  # a new run, a new budget

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """``[n, S, S, 3]`` uint8 RGB -> normalised float32 ``[n, 3, input_size, input_size]``
        (autocast lowers it where the network computes)."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != self.input_size:
            # antialias=True matches PIL's bilinear resize, which the checkpoint was tested with.
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def parse(self, crops: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """``crops [N, S, S, 3]`` uint8 RGB -> ``[N, S, S]`` uint8 BiSeNet-order labels.

        ``landmarks`` are not used (accepted for the FaceParser protocol); if given, their first
        dimension must match ``N``.
        """
        _check_crops(crops)
        n, size = crops.shape[0], crops.shape[1]
        if landmarks is not None and len(landmarks) != n:
            raise ValueError(f"landmarks has {len(landmarks)} entries but crops has {n}; pass one "
                             f"landmark set per crop")
        out = np.empty((n, size, size), dtype=np.uint8)

        def step(start: int, stop: int) -> None:
            out[start:stop] = self._parse_batch(crops[start:stop], size)

        self._batch.run(n, step)
        return out

    def _parse_batch(self, crops: np.ndarray, size: int) -> np.ndarray:
        with precision.compute(self.device, self.dtype):
            logits = self.model.segment(self.preprocess(crops))
        precision.check_output(logits, "the BiSeNet face parser", self.dtype)
        # Upcast before argmax: half-precision logits tie where float32 ones do not.
        labels = logits.float().argmax(dim=1, keepdim=True).to(torch.uint8)
        if labels.shape[-1] != size:
            labels = F.interpolate(labels, size=(size, size), mode="nearest-exact")
        return labels[:, 0].cpu().numpy()


def _check_crops(crops: np.ndarray) -> None:
    if not isinstance(crops, np.ndarray):
        raise TypeError(f"crops must be a numpy array [N, S, S, 3] uint8, got "
                        f"{type(crops).__name__}")
    if crops.dtype != np.uint8:
        raise TypeError(f"crops must be uint8 RGB (0..255), got dtype {crops.dtype}; convert "
                        f"float images with (img * 255).round().astype(np.uint8)")
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise ValueError(f"crops must have shape [N, S, S, 3] (square RGB crops), got "
                         f"{tuple(crops.shape)}")


def build_bisenet(config: BiSeNetConfig = BiSeNetConfig()) -> BiSeNet:
    """An untrained BiSeNet (random init, nothing downloaded)."""
    return BiSeNet(num_classes=config.num_classes)


def load_bisenet(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, batch_size: int = 4,
                 search_dirs: tuple[str | os.PathLike[str], ...] = ()) -> BiSeNetParser:
    """A ready parser from ``79999_iter.pth`` / ``parsing_bisenet.pth`` / a ``.safetensors``.

    ``.pth`` files are read with ``torch.load(weights_only=True)``; a ``module.`` prefix is
    stripped; the state dict must fit exactly (strict) and be finite (NaN/inf weights would parse
    every pixel as background, so they are refused with the file and tensor names).

    ``dtype`` is the precision the parser computes in; the weights stay as stored (upcast to
    float32 when the file holds half precision, which is exact).
    """
    state_dict, bundle = checkpoints.load(path, expected_component="bisenet",
                                          search_dirs=search_dirs)
    config = bisenet_config(bundle.architecture)
    model = build_bisenet(config)
    checkpoints.load_state_dict_strict(model, state_dict, f"BiSeNet face parser from {path}")
    return BiSeNetParser(model, device=device, dtype=dtype, batch_size=batch_size,
                         input_size=config.input_size)
