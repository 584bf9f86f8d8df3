"""Losses on pretrained networks' features, from weight files the user points at (nothing is
downloaded): VGG16-LPIPS and the ArcFace IR-SE-50 identity loss (E4S's and pSp's choices).

Files are read with :func:`segtalker_core.checkpoints.load` (``torch.load(weights_only=True)``
for ``.pth``, or ``.safetensors``; a corrupt, text or NaN file is refused there), then their
tensor names and shapes are checked against the public layouts below; a file of another layout
is refused with what it looks like (:func:`looks_like`).

**LPIPS** (Zhang et al. 2018, ``lpips`` package, VGG variant, v0.1):
``sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 )`` over the VGG16 ReLU outputs relu1_2,
relu2_2, relu3_3, relu4_3, relu5_3 (``n``: unit norm over channels; ``w_l``: learned 1x1
weights), after LPIPS's input scaling (shift ``(-.030, -.088, -.188)``, scale
``(.458, .448, .450)`` on [-1, 1] images). Two files, as published:

* the LPIPS linear layers, ``lpips/weights/v0.1/vgg.pth``: ``lin{0..4}.model.1.weight``
  ``[1, C, 1, 1]`` with C = 64, 128, 256, 512, 512;
* the ImageNet VGG16, torchvision's ``vgg16-397923af.pth``: ``features.{i}.weight/bias`` for the
  13 convs (``classifier.*`` is ignored).

A whole ``lpips.LPIPS`` state dict (``net.slice{1..5}.{i}.*`` + ``lin*`` [+ ``scaling_layer.*``])
carries both and is accepted as the one file.

**Identity** (ArcFace IR-SE-50 of TreB1eN/InsightFace_Pytorch, ``model_ir_se50.pth``, as pSp /
E4S use it): ``1 - cos(e(x), e(y))`` of the 512-d embeddings. The backbone is
:mod:`segtalker_core.models.ir_se_encoder`'s IR-SE unit with BatchNorm (affine, running
statistics) in place of E4S's InstanceNorm, widths 64/128/256/512 with 3/4/14/3 units, then
``output_layer`` (BN2d, dropout, flatten, linear 25088 -> 512, BN1d). Names: ``input_layer.*`` and
``output_layer.*`` as in the file; ``body.{u}.res_layer.{0..4}`` -> ``stages.{s}.{b}.residual.*``,
``body.{u}.res_layer.5.fc{1,2}`` -> ``.se.fc{1,2}``, ``body.{u}.shortcut_layer.{0,1}`` ->
``.shortcut.{0,1}``. The face is cut as pSp does for its 256 px FFHQ-aligned crops (rows 35:223,
columns 32:220, scaled to other sizes) and average-pooled to 112 x 112.

Both networks are frozen (eval mode, no parameter grads); gradients flow to the images.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints as ck
from ..models.ir_se_encoder import IRSEUnit, build_stages

LPIPS_CHANNELS = (64, 128, 256, 512, 512)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision VGG16 `features`: conv widths ("M": 2x2 max pool), and the ReLU indices LPIPS taps.
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_TAPS = (3, 8, 15, 22, 29)

ARCFACE_WIDTHS = (64, 128, 256, 512)
ARCFACE_UNITS = (3, 4, 14, 3)  # IR-SE-50
ARCFACE_INPUT = 112
ARCFACE_CROP_256 = (35, 223, 32, 220)  # pSp's rows / columns of a 256 px aligned face


class WeightFileError(ck.CheckpointError):
    """A loss weight file of the wrong kind or layout."""


# ------------------------------------------------------------------------------- recognition

def looks_like(keys: Sequence[str], shapes: Mapping[str, Sequence[int]] | None = None,
               config: ck.BundleConfig | None = None) -> str:
    """What a set of tensor names is, in words (for error messages)."""
    names = set(keys)
    shapes = shapes or {}
    if any(re.fullmatch(r"lin\d\.model\.1\.weight", k) for k in names):
        widths = tuple(shapes.get(f"lin{i}.model.1.weight", (0, 0))[1] for i in range(7)
                       if f"lin{i}.model.1.weight" in names)
        net = {LPIPS_CHANNELS: "vgg", (64, 192, 384, 256, 256): "alex"}.get(widths, "squeeze")
        if any(k.startswith("net.") for k in names):
            return f"a whole lpips.LPIPS model ({net} variant)"
        return f"the LPIPS linear layers of the {net!r} variant (lpips/weights/v0.1/{net}.pth)"
    if any(k.startswith("net.slice") for k in names):
        return "an LPIPS backbone without its linear layers"
    if "features.0.weight" in names:
        convs = sum(1 for k in names if re.fullmatch(r"features\.\d+\.weight", k)
                    and len(shapes.get(k, (0, 0, 0, 0))) == 4)
        bn = any(k.endswith("running_mean") for k in names)
        if not shapes:
            return "a torchvision VGG-style network (features.*)"
        return f"a torchvision VGG with {convs} convs{' and BatchNorm' if bn else ''}" + (
            " (VGG16, vgg16-397923af.pth)" if convs == 13 and not bn else "")
    if "input_layer.0.weight" in names and any(k.startswith("body.") for k in names):
        units = len({k.split(".")[1] for k in names if k.startswith("body.")})
        se = any(".res_layer.5.fc1" in k for k in names)
        depth = {24: 50, 49: 100, 50: 152}.get(units, f"{units}-unit")
        return (f"an InsightFace {'IR-SE' if se else 'IR'}-{depth} face recognition backbone "
                f"(TreB1eN / pSp layout)")
    if config is not None and not config.inferred:
        return f"a SegTalker {config.component_name} bundle"
    if config is not None and config.description:
        return config.description
    guess = ck.guess_layout(names)
    return guess.description


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Path, ck.BundleConfig]:
    p = ck.find_checkpoint(path)
    state, config = ck.load(p)
    return state, p, config


def _refuse(path: Path, state: Mapping[str, torch.Tensor], config: ck.BundleConfig, wanted: str,
            problem: str) -> WeightFileError:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return WeightFileError(
        f"{path} is not {wanted}: {problem}. It looks like "
        f"{looks_like(list(state), shapes, config)}. Point this option at {wanted}.")


def _check_layout(path: Path, state: Mapping[str, torch.Tensor], config: ck.BundleConfig,
                  expected: Mapping[str, torch.Size], wanted: str,
                  optional: tuple[str, ...] = ()) -> None:
    """Every expected name present with its shape (names ending in ``optional`` may be absent)."""
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    if missing:
        raise _refuse(path, state, config, wanted,
                      f"{len(missing)} of its {len(expected)} tensors are missing "
                      f"(e.g. {', '.join(missing[:3])})")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(s)})"
             for k, s in expected.items() if k in state and state[k].shape != s]
    if wrong:
        raise _refuse(path, state, config, wanted, f"shapes differ: {', '.join(wrong[:3])}")


# ------------------------------------------------------------------------------- VGG16 + LPIPS

class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to relu5_3, same indices (so same names)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, 1, 1), nn.ReLU()]
                cin = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five LPIPS taps of ``x`` [B, 3, H, W]."""
        return tapped(self.features, x, LPIPS_TAPS)


def tapped(features: nn.Sequential, x: torch.Tensor, taps) -> list[torch.Tensor]:
    """The outputs of ``features``' layers whose index is in ``taps``, in order (one forward)."""
    out = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in taps:
            out.append(x)
    return out


def _unit_norm(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.float().square().sum(dim=1, keepdim=True).sqrt() + eps).to(x.dtype)


class LPIPSLoss(nn.Module):
    """VGG16-LPIPS distance, mean over the batch (0-d float32). Build with :meth:`from_files`."""

    def __init__(self):
        super().__init__()
        self.vgg = VGG16Features()
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1))
                                      for c in LPIPS_CHANNELS])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.freeze()

    def freeze(self) -> "LPIPSLoss":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "LPIPSLoss":
        return super().train(False)  # a frozen metric: never in training mode

    @staticmethod
    def expected_vgg() -> dict[str, torch.Size]:
        with torch.device("meta"):  # names and shapes only: no 15M random weights drawn
            features = VGG16Features().features
        return {f"features.{k}": v.shape for k, v in features.state_dict().items()}

    @staticmethod
    def expected_lins() -> dict[str, torch.Size]:
        return {f"lin{i}.model.1.weight": torch.Size((1, c, 1, 1))
                for i, c in enumerate(LPIPS_CHANNELS)}

    @classmethod
    def from_files(
        cls,
        lpips_path: str | os.PathLike[str],  # lpips's vgg.pth (or a whole LPIPS state dict)
        vgg_path: str | os.PathLike[str] | None = None,  # torchvision's vgg16 weights
    ) -> "LPIPSLoss":
        wanted_lin = "the LPIPS VGG linear layers (lpips/weights/v0.1/vgg.pth)"
        lin_state, lin_p, lin_cfg = _read(lpips_path)
        _check_layout(lin_p, lin_state, lin_cfg, cls.expected_lins(), wanted_lin)
        whole = {k: v for k, v in lin_state.items() if k.startswith("net.slice")}
        if whole:
            # lpips.LPIPS keeps torchvision's indices inside its slices: net.slice2.5 = features.5.
            vgg_state = {re.sub(r"^net\.slice\d\.", "features.", k): v for k, v in whole.items()}
            vgg_p, vgg_cfg = lin_p, lin_cfg
        elif vgg_path is None:
            raise WeightFileError(
                f"{lin_p} holds only the LPIPS linear layers; LPIPS also needs the ImageNet VGG16 "
                f"(torchvision's vgg16-397923af.pth): give its path too")
        else:
            vgg_state, vgg_p, vgg_cfg = _read(vgg_path)
        wanted_vgg = "torchvision's ImageNet VGG16 (vgg16-397923af.pth)"
        expected = cls.expected_vgg()
        _check_layout(vgg_p, vgg_state, vgg_cfg, expected, wanted_vgg)
        loss = cls()
        loss.vgg.load_state_dict({k: vgg_state[k] for k in expected}, strict=True)
        for i, lin in enumerate(loss.lins):
            lin.data.copy_(lin_state[f"lin{i}.model.1.weight"])
        return loss.freeze()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``pred``, ``target``: ``[B, 3, H, W]`` in [-1, 1] (H, W >= 16)."""
        x = (pred - self.shift.to(pred.dtype)) / self.scale.to(pred.dtype)
        y = (target - self.shift.to(target.dtype)) / self.scale.to(target.dtype)
        total = pred.new_zeros((), dtype=torch.float32)
        for fx, fy, w in zip(self.vgg(x), self.vgg(y.detach()), self.lins):
            d = (_unit_norm(fx) - _unit_norm(fy)).float().square()
            total = total + (d * w.float()).sum(dim=1).mean(dim=(1, 2)).mean()
        return total


# ------------------------------------------------------------------------------- ArcFace

class BatchNormIRSEUnit(IRSEUnit):
    """TreB1eN's ``bottleneck_IR_SE``: the E4S unit of :mod:`..models.ir_se_encoder` with
    BatchNorm (affine, running statistics) where E4S has InstanceNorm (same layout otherwise)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, stride)
        self.residual[0] = nn.BatchNorm2d(in_channels)
        self.residual[4] = nn.BatchNorm2d(out_channels)
        if isinstance(self.shortcut, nn.Sequential):
            self.shortcut[1] = nn.BatchNorm2d(out_channels)


class ArcFaceIRSE50(nn.Module):
    """``[B, 3, 112, 112]`` in [-1, 1] -> L2-normalised ``[B, 512]`` face embeddings."""

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, ARCFACE_WIDTHS[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(ARCFACE_WIDTHS[0]),
            nn.PReLU(ARCFACE_WIDTHS[0]),
        )
        # TreB1eN's first unit keeps 64 channels and halves the size: stem width = first width.
        self.stages = build_stages(BatchNormIRSEUnit, ARCFACE_WIDTHS[0], ARCFACE_WIDTHS,
                                   ARCFACE_UNITS)
        side = ARCFACE_INPUT // 2 ** len(ARCFACE_WIDTHS)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(ARCFACE_WIDTHS[-1]),
            nn.Dropout(0.6),
            nn.Flatten(),
            nn.Linear(ARCFACE_WIDTHS[-1] * side * side, 512),
            nn.BatchNorm1d(512),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, ARCFACE_INPUT, ARCFACE_INPUT), x.shape
        x = self.input_layer(x)
        for stage in self.stages:
            x = stage(x)
        return F.normalize(self.output_layer(x).float(), dim=1)


def unit_positions() -> list[tuple[int, int]]:
    """``(stage, block)`` of each of TreB1eN's flat ``body.{u}`` units, in order."""
    return [(s, b) for s, n in enumerate(ARCFACE_UNITS) for b in range(n)]


def arcface_names(name: str) -> str:
    """TreB1eN's tensor name -> this module's (module docstring)."""
    m = re.fullmatch(r"body\.(\d+)\.(res_layer|shortcut_layer)\.(\d+)\.(.+)", name)
    if m is None:
        return name
    unit, part, index, rest = int(m[1]), m[2], int(m[3]), m[4]
    positions = unit_positions()
    if unit >= len(positions):
        return name  # an extra unit: reported as unexpected by the layout check
    s, b = positions[unit]
    if part == "shortcut_layer":
        return f"stages.{s}.{b}.shortcut.{index}.{rest}"
    if index == 5:
        return f"stages.{s}.{b}.se.{rest}"
    return f"stages.{s}.{b}.residual.{index}.{rest}"


def arcface_file_names() -> dict[str, str]:
    """This module's tensor name -> TreB1eN's (the inverse of :func:`arcface_names`)."""
    with torch.device("meta"):  # names only
        ours = ArcFaceIRSE50().state_dict().keys()
    inverse: dict[str, str] = {}
    for u, (s, b) in enumerate(unit_positions()):
        for part, theirs in (("residual", "res_layer"), ("shortcut", "shortcut_layer")):
            prefix = f"stages.{s}.{b}.{part}."
            for k in ours:
                if k.startswith(prefix):
                    inverse[k] = f"body.{u}.{theirs}.{k[len(prefix):]}"
        for k in ours:
            if k.startswith(f"stages.{s}.{b}.se."):
                inverse[k] = f"body.{u}.res_layer.5.{k[len(f'stages.{s}.{b}.se.'):]}"
    return {k: inverse.get(k, k) for k in ours}


class IdentityLoss(nn.Module):
    """``mean(1 - cos(e(pred), e(target)))`` with the ArcFace IR-SE-50 embedding (0-d float32).

    ``crop``: rows/columns of the face in a 256 px crop (pSp's FFHQ-aligned default), scaled to
    the image size."""

    def __init__(self, crop: tuple[int, int, int, int] = ARCFACE_CROP_256):
        super().__init__()
        self.net = ArcFaceIRSE50()
        self.crop = crop
        self.freeze()

    def freeze(self) -> "IdentityLoss":
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "IdentityLoss":
        return super().train(False)  # BatchNorm must use the file's running statistics

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs) -> "IdentityLoss":
        state, p, config = _read(path)
        state = {arcface_names(k): v for k, v in state.items()}
        with torch.device("meta"):  # built empty, then given the file's tensors (assign)
            loss = cls(**kwargs)
        expected = {k: v.shape for k, v in loss.net.state_dict().items()}
        theirs = arcface_file_names()
        wanted = "the ArcFace IR-SE-50 of TreB1eN/InsightFace_Pytorch (model_ir_se50.pth)"
        # Compare under the file's own names, so a message names what the user can look up.
        in_file_names = {theirs[k]: v for k, v in state.items() if k in theirs}
        in_file_names.update({k: v for k, v in state.items() if k not in theirs})
        _check_layout(p, in_file_names, config, {theirs[k]: s for k, s in expected.items()},
                      wanted, optional=("num_batches_tracked",))
        extra = sorted(k for k in state if k not in expected)
        if extra:
            raise _refuse(p, in_file_names, config, wanted,
                          f"it has {len(extra)} tensors IR-SE-50 has not (e.g. "
                          f"{', '.join(extra[:3])})")
        for k in expected:
            if k.endswith("num_batches_tracked") and k not in state:
                state[k] = torch.zeros((), dtype=torch.long)  # older torch did not save it
        # assign=True keeps the tensors as given: make them what the module holds.
        state = {k: v.to(torch.long) if k.endswith("num_batches_tracked") else v.float()
                 for k, v in state.items()}
        loss.net.load_state_dict(state, strict=True, assign=True)
        return loss.freeze()

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """``[B, 512]`` unit embeddings of ``[B, 3, H, W]`` faces in [-1, 1]."""
        if image.shape[-2:] != (256, 256):
            image = F.interpolate(image, size=(256, 256), mode="bilinear", align_corners=False,
                                  antialias=image.shape[-1] > 256)
        top, bottom, left, right = self.crop
        face = image[:, :, top:bottom, left:right]
        return self.net(F.adaptive_avg_pool2d(face, ARCFACE_INPUT))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = self.embed(target)
        return (1 - (self.embed(pred) * reference).sum(dim=1)).mean()


__all__ = ["LPIPSLoss", "IdentityLoss", "ArcFaceIRSE50", "VGG16Features", "BatchNormIRSEUnit",
           "WeightFileError", "looks_like", "arcface_names", "arcface_file_names"]
