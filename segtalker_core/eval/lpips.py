"""LPIPS for the evaluation, from the user's weight files, in either published variant.

The distance is the training loss's (:class:`..train.feature_losses.LPIPSLoss`: unit-normalised
features, squared difference, learned 1x1 weights, spatial mean, summed over five taps). Both
backbones of the ``lpips`` package are read, because the papers report both: AlexNet (the
package's default ``net='alex'``, which its authors recommend as a forward metric) and VGG16
(what the training loss uses). The variant is told by the linear layers' widths:

* AlexNet: ``lin{0..4}.model.1.weight [1, C, 1, 1]``, C = 64, 192, 384, 256, 256
  (``lpips/weights/v0.1/alex.pth``) with torchvision's ``alexnet-owt-7be5be79.pth``
  (``features.{0,3,6,8,10}.*``; the taps are the ReLUs after each conv, indices 1, 4, 7, 9, 11);
* VGG16: C = 64, 128, 256, 512, 512 (``vgg.pth``) with ``vgg16-397923af.pth``;
* or one whole ``lpips.LPIPS`` state dict (``net.slice{1..5}.{i}.*`` keep torchvision's indices).

Frames go in whole (resized to :data:`SIDE` px on the long side) and as the reference's face crop
(``SIDE`` x ``SIDE``), as [-1, 1] RGB.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..train.feature_losses import LPIPS_CHANNELS, LPIPS_SCALE, LPIPS_SHIFT, LPIPSLoss, looks_like, tapped
from .weights import WrongWeightsError, load_weights

ALEX_CHANNELS = (64, 192, 384, 256, 256)
ALEX_TAPS = (1, 4, 7, 9, 11)
SIDE = 256  # px the frames and face crops are measured at (LPIPS's training patches were 64)


class AlexNetFeatures(nn.Module):
    """torchvision's ``alexnet().features`` up to its last ReLU, same indices (so same names)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five LPIPS taps of ``x`` [B, 3, H, W] (H, W >= 63)."""
        return tapped(self.features, x, ALEX_TAPS)


class AlexLPIPS(LPIPSLoss):
    """LPIPS on AlexNet: :class:`LPIPSLoss`'s distance with the AlexNet backbone and widths."""

    def __init__(self):
        nn.Module.__init__(self)  # not LPIPSLoss.__init__: it would build (and init) a VGG16
        self.vgg = AlexNetFeatures()  # LPIPSLoss.forward reads its backbone from .vgg
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in ALEX_CHANNELS])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.freeze()


@dataclass(frozen=True)
class Variant:
    net: str
    channels: tuple[int, ...]
    build: type
    backbone_file: str


VARIANTS = (Variant("alex", ALEX_CHANNELS, AlexLPIPS, "alexnet-owt-7be5be79.pth"),
            Variant("vgg", LPIPS_CHANNELS, LPIPSLoss, "vgg16-397923af.pth"))


def load_lpips(lpips_path: str | os.PathLike, backbone_path: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> tuple[LPIPSLoss, str]:
    """``(frozen LPIPS network on device, "alex" or "vgg")`` from ``lpips_path`` (the linear
    layers or a whole LPIPS state dict) and ``backbone_path`` (torchvision's ImageNet weights
    of that variant; not needed with a whole state dict)."""
    lins = load_weights(lpips_path, "lpips", "LPIPS", "--lpips")
    widths = tuple(int(lins[f"lin{i}.model.1.weight"].shape[1]) for i in range(7)
                   if f"lin{i}.model.1.weight" in lins)
    variant = next((v for v in VARIANTS if v.channels == widths), None)
    if variant is None:
        raise WrongWeightsError(
            f"--lpips {os.fspath(lpips_path)!r} looks like {looks_like(list(lins), _shapes(lins))}; the "
            "evaluation reads the 'alex' (alex.pth) or 'vgg' (vgg.pth) variant")
    whole = {re.sub(r"^net\.slice\d\.", "features.", k): v for k, v in lins.items() if k.startswith("net.slice")}
    if whole:
        backbone, option, text = whole, "--lpips", os.fspath(lpips_path)
    elif backbone_path is None:
        raise WrongWeightsError(
            f"--lpips {os.fspath(lpips_path)!r} holds only the LPIPS {variant.net!r} linear layers; LPIPS also "
            f"needs the ImageNet backbone: give torchvision's {variant.backbone_file} with --lpips-backbone")
    else:
        backbone = load_weights(backbone_path, "torchvision_backbone", "LPIPS", "--lpips-backbone")
        option, text = "--lpips-backbone", os.fspath(backbone_path)
    with torch.device("meta"):  # names and shapes only
        expected = {f"features.{k}": v.shape for k, v in variant.build().vgg.features.state_dict().items()}
    missing = [k for k in expected if k not in backbone]
    wrong = [k for k in expected if k in backbone and backbone[k].shape != expected[k]]
    if missing or wrong:
        raise WrongWeightsError(
            f"{option} {text!r} looks like {looks_like(list(backbone), _shapes(backbone))}; the LPIPS "
            f"{variant.net!r} linear layers need torchvision's {variant.backbone_file} "
            f"({len(missing)} tensors missing, {len(wrong)} of another shape, e.g. {(missing + wrong)[0]})")
    model = variant.build()
    model.vgg.load_state_dict({k: backbone[k].float() for k in expected}, strict=True)
    for i, lin in enumerate(model.lins):
        lin.data.copy_(lins[f"lin{i}.model.1.weight"])
    return model.to(device).freeze(), variant.net


def _shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


def lpips_distances(model: LPIPSLoss, generated: np.ndarray, reference: np.ndarray,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """``[N]`` LPIPS of each pair of ``[N, S, S, 3]`` uint8 RGB images (same size)."""
    assert generated.shape == reference.shape and generated.ndim == 4, (generated.shape, reference.shape)

    def tensor(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1.0

    with torch.no_grad():
        # One pair per call: the loss averages over its batch.
        return np.asarray([float(model(tensor(a), tensor(b))) for a, b in zip(generated, reference)], np.float64)
