"""rosinality/stylegan2-pytorch checkpoints -> SegTalker generator and discriminator bundles.

What rosinality's files hold (from its ``model.py``, ``train.py`` and ``convert_weight.py``):

* ``train.py`` saves ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``: three
  state dicts, the optimisers' states and the run's ``argparse.Namespace``;
* ``convert_weight.py`` (the official TensorFlow weights, e.g. ``stylegan2-ffhq-config-f.pt``)
  saves ``{"g_ema", "latent_avg"}``, plus ``"g"`` / ``"d"`` when asked for;
* a bare ``g_ema`` (or ``d``) state dict, as ``.pt`` or plain ``.safetensors``, is accepted too.

Files are read with ``torch.load(weights_only=True)``: no pickled code runs. The one object
``train.py`` pickles besides tensors, its ``argparse.Namespace``, is allowed for that load only
(:func:`_namespace_allowed` says why that is safe); anything else pickled is refused.

Architecture, from the tensor shapes alone: ``style_dim`` is the modulation's input width,
``n_mlp`` the number of ``style.{i}`` layers, the size ``2 ** (2 + number of to_rgbs)``, the
channel multiplier the 64x64 width over 256 (rosinality's table: 512 channels up to 32x32, then
``256 * multiplier * 64 / res``; the pack's ``min(16384 * multiplier / res, 512)`` is the same
table for multipliers 1 and 2). The mapping's learning-rate multiplier (0.01) is no tensor; it is
rosinality's default unless given. Every name and shape is then checked against the layout those
numbers give (:func:`generator_layout`, :func:`discriminator_layout`), so a file of another
architecture is named as such, not half-converted.

Names, rosinality -> pack (the architectures are the same; only the layout differs):

=====================================  ==============================================
generator
``style.{i+1}.weight/bias``            ``mapping.layers.{i}.weight/bias`` (style.0 is PixelNorm)
``input.input``                        ``input``
``X.conv.weight`` ``[1, O, I, k, k]``  ``X.conv.weight`` ``[O, I, k, k]`` (fused conv's batch axis)
``X.activate.bias``                    ``X.bias`` (FusedLeakyReLU's bias)
``to_rgb*.bias`` ``[1, 3, 1, 1]``      ``to_rgb*.bias`` ``[3]``
``X.conv.modulation.*``, ``X.noise.weight``, ``noises.noise_i``: the same names
``latent_avg`` (top level)             ``latent_avg`` buffer (``GeneratorConfig.stores_latent_avg``)
discriminator (``models/discriminator.py`` needed no change)
``convs.0.0.weight`` / ``convs.0.1.bias``          ``from_rgb.conv.weight`` / ``from_rgb.bias``
``convs.{j}.conv1.0.weight`` / ``conv1.1.bias``    ``blocks.{j-1}.conv1.conv.weight`` / ``.bias``
``convs.{j}.conv2.1.weight`` / ``conv2.2.bias``    ``blocks.{j-1}.conv2.conv.weight`` / ``.bias``
``convs.{j}.skip.1.weight``                        ``blocks.{j-1}.skip.conv.weight``
``final_conv.0.weight`` / ``final_conv.1.bias``    ``final_conv.conv.weight`` / ``final_conv.bias``
``final_linear.*``                                 the same names
=====================================  ==============================================

The FIR kernels rosinality stores (``*.blur.kernel``, ``*.upsample.kernel``, ``*.0.kernel``) are
checked to be the ``[1, 3, 3, 1]`` filter the pack builds itself, then dropped.

Noise: rosinality's fixed noise buffers become the generator's ``noises.noise_i``
(``GeneratorConfig.stores_noise``); :meth:`Generator.stored_noise` gives them as the ``noise``
list, which is rosinality's ``randomize_noise=False``. The minibatch-stddev group of the
discriminator is the largest divisor of the batch up to 4 in the pack, rosinality's ``min(B, 4)``
for every batch rosinality accepts (it fails on the others).

Measured against rosinality's own model.py (outside the repository: its CPU paths, upfirdn2d_native
and the plain fused_leaky_relu; every weight random, biases and noise strengths included; sizes 64
and 128, channel multipliers 1 and 2, 2 and 8 mapping layers; batch 4), relative RMS difference:

* float32 images, the same W+ latent or z (through the mapping, with truncation 0.7 too) and the
  same noise (rosinality's stored noise / ``randomize_noise=False``, or per-sample noise given):
  1.3e-6 to 3.3e-6; the mask-guided forward with a one-region map, fast or reference: the same;
* float32 discriminator logits, batches 2, 4 and 8: 2e-7 to 7.5e-5 (the largest where the logits'
  RMS is 0.012; max |difference| below 1e-6 everywhere);
* float64: logits 1e-13 to 2e-10; images 1e-7, which is the pack computing demodulation and the
  pixel norm in float32 on purpose (layers.demodulation), and 5e-15 with those two in float64.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import pickle
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import checkpoints as ck
from ..atomic_files import check_output_path
from .outputs import bundle_paths

log = logging.getLogger("segtalker.conversion")

SOURCE = "rosinality/stylegan2-pytorch"
BLUR_TAPS = (1, 3, 3, 1)  # rosinality's blur_kernel default; its ResBlocks ignore any other
LR_MLP = 0.01  # rosinality's Generator(lr_mlp=0.01): not stored in any tensor
MEAN_LATENT_SAMPLES = 10_000  # z drawn to estimate a missing latent_avg (generate.py uses 4096)
MEAN_LATENT_SEED = 0
GENERATOR_PARTS = ("g_ema", "g")  # g_ema (the weights' moving average) is the one to render with
PARTS = GENERATOR_PARTS + ("d",)
COMPONENTS = ("generator", "discriminator")
SUFFIXES = ck.LEGACY_SUFFIXES + ck.SAFETENSORS_SUFFIXES

Layout = dict[str, tuple[int, ...]]  # state-dict name -> shape, in the module's order


class NotRosinalityError(ck.CheckpointError):
    """A readable file that is not a rosinality StyleGAN2 checkpoint; says what it looks like."""


# ----------------------------------------------------------------------------------------------
# Architecture and layout (rosinality's model.py rules).


@dataclass(frozen=True)
class RosinalityArchitecture:
    """rosinality's ``Generator(size, style_dim, n_mlp, channel_multiplier)`` and
    ``Discriminator(size, channel_multiplier)`` arguments (``style_dim``/``n_mlp``: G only)."""

    size: int  # output / input resolution, a power of two >= 8
    channel_multiplier: int = 2  # 2: StyleGAN2 config-f widths
    style_dim: int = 512  # z and w size
    n_mlp: int = 8  # mapping layers

    def __post_init__(self) -> None:
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")
        if self.channel_multiplier < 1:
            raise ValueError(f"channel_multiplier must be >= 1, got {self.channel_multiplier}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def num_noise(self) -> int:
        """Fixed noise buffers: one per styled conv."""
        return 2 * (self.log_size - 2) + 1

    def channels(self, res: int) -> int:
        """rosinality's ``channels`` table: 512 up to 32x32, then ``256 * multiplier`` at 64x64,
        halving with each doubling of the resolution."""
        return 512 if res <= 32 else 16384 * self.channel_multiplier // res

    def widths(self) -> dict[int, int]:
        """``{resolution: channels}`` from 4 to ``size``."""
        return {2**i: self.channels(2**i) for i in range(2, self.log_size + 1)}


def _fir_shape() -> tuple[int, int]:
    return (len(BLUR_TAPS), len(BLUR_TAPS))


def _styled_conv_layout(prefix: str, cin: int, cout: int, style_dim: int, upsample: bool) -> Layout:
    layout: Layout = {f"{prefix}.conv.weight": (1, cout, cin, 3, 3)}
    if upsample:
        layout[f"{prefix}.conv.blur.kernel"] = _fir_shape()
    layout[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
    layout[f"{prefix}.conv.modulation.bias"] = (cin,)
    layout[f"{prefix}.noise.weight"] = (1,)
    layout[f"{prefix}.activate.bias"] = (cout,)
    return layout


def _to_rgb_layout(prefix: str, cin: int, style_dim: int, upsample: bool) -> Layout:
    layout: Layout = {f"{prefix}.bias": (1, 3, 1, 1)}
    if upsample:
        layout[f"{prefix}.upsample.kernel"] = _fir_shape()
    layout[f"{prefix}.conv.weight"] = (1, 3, cin, 1, 1)
    layout[f"{prefix}.conv.modulation.weight"] = (cin, style_dim)
    layout[f"{prefix}.conv.modulation.bias"] = (cin,)
    return layout


def generator_layout(arch: RosinalityArchitecture, noise: bool = True) -> Layout:
    """Names and shapes of rosinality's ``Generator(...).state_dict()``, in its order.

    ``noise``: include the fixed noise buffers ``noises.noise_i`` (rosinality always has them)."""
    sd = arch.style_dim
    layout: Layout = {}
    for i in range(1, arch.n_mlp + 1):
        layout[f"style.{i}.weight"] = (sd, sd)
        layout[f"style.{i}.bias"] = (sd,)
    c4 = arch.channels(4)
    layout["input.input"] = (1, c4, 4, 4)
    layout.update(_styled_conv_layout("conv1", c4, c4, sd, upsample=False))
    layout.update(_to_rgb_layout("to_rgb1", c4, sd, upsample=False))
    convs: Layout = {}
    to_rgbs: Layout = {}
    for j, log_res in enumerate(range(3, arch.log_size + 1)):
        cin, cout = arch.channels(2 ** (log_res - 1)), arch.channels(2**log_res)
        convs.update(_styled_conv_layout(f"convs.{2 * j}", cin, cout, sd, upsample=True))
        convs.update(_styled_conv_layout(f"convs.{2 * j + 1}", cout, cout, sd, upsample=False))
        to_rgbs.update(_to_rgb_layout(f"to_rgbs.{j}", cout, sd, upsample=True))
    # Module order: the convs ModuleList is registered before to_rgbs, the noises last.
    layout.update(convs)
    layout.update(to_rgbs)
    if noise:
        for i in range(arch.num_noise):
            res = 2 ** ((i + 5) // 2)
            layout[f"noises.noise_{i}"] = (1, 1, res, res)
    return layout


def discriminator_layout(arch: RosinalityArchitecture) -> Layout:
    """Names and shapes of rosinality's ``Discriminator(size, channel_multiplier).state_dict()``."""
    top = arch.channels(arch.size)
    layout: Layout = {"convs.0.0.weight": (top, 3, 1, 1), "convs.0.1.bias": (top,)}
    for j, log_res in enumerate(range(arch.log_size, 2, -1), start=1):
        cin, cout = arch.channels(2**log_res), arch.channels(2 ** (log_res - 1))
        layout[f"convs.{j}.conv1.0.weight"] = (cin, cin, 3, 3)
        layout[f"convs.{j}.conv1.1.bias"] = (cin,)
        layout[f"convs.{j}.conv2.0.kernel"] = _fir_shape()
        layout[f"convs.{j}.conv2.1.weight"] = (cout, cin, 3, 3)
        layout[f"convs.{j}.conv2.2.bias"] = (cout,)
        layout[f"convs.{j}.skip.0.kernel"] = _fir_shape()
        layout[f"convs.{j}.skip.1.weight"] = (cout, cin, 1, 1)
    c4 = arch.channels(4)
    layout["final_conv.0.weight"] = (c4, c4 + 1, 3, 3)  # + the minibatch-stddev feature
    layout["final_conv.1.bias"] = (c4,)
    layout["final_linear.0.weight"] = (c4, c4 * 4 * 4)
    layout["final_linear.0.bias"] = (c4,)
    layout["final_linear.1.weight"] = (1, c4)
    layout["final_linear.1.bias"] = (1,)
    return layout


def on_meta(layout: Layout) -> dict[str, torch.Tensor]:
    """Shape-only tensors of a layout (no memory), for :func:`checkpoints.check_state_dict_fits`."""
    return {name: torch.empty(shape, device="meta") for name, shape in layout.items()}


# ----------------------------------------------------------------------------------------------
# Architecture from shapes.


def _count(state_dict: Mapping[str, torch.Tensor], pattern: str, start: int) -> int:
    """How many consecutive indices ``start, start+1, ...`` have ``pattern.format(i)`` names."""
    n = 0
    while pattern.format(start + n) in state_dict:
        n += 1
    return n


def _multiplier(width_at_64: int, what: str) -> int:
    """rosinality's channel multiplier from the 64x64 width (``256 * multiplier``)."""
    if width_at_64 < 256 or width_at_64 % 256:
        raise ck.CheckpointError(
            f"{what} has {width_at_64} channels at 64x64; rosinality's table gives 256 x "
            f"channel_multiplier (an integer >= 1), so this is another architecture and cannot "
            f"be converted")
    return width_at_64 // 256


def _require(state_dict: Mapping[str, torch.Tensor], names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if n not in state_dict]
    if missing:
        raise NotRosinalityError(
            f"{what} is not a rosinality StyleGAN2 network: it has no {', '.join(missing)} (it "
            f"looks like {looks_like(state_dict.keys())})")


def infer_generator(state_dict: Mapping[str, torch.Tensor], what: str
                    ) -> tuple[RosinalityArchitecture, bool]:
    """``(architecture, has fixed noise)`` of a rosinality generator state dict, checked name by
    name and shape by shape against :func:`generator_layout`. ``what`` names it in errors."""
    _require(state_dict, ("conv1.conv.modulation.weight", "input.input"), what)
    style_dim = int(state_dict["conv1.conv.modulation.weight"].shape[1])
    n_mlp = _count(state_dict, "style.{}.weight", 1)
    size = 2 ** (2 + _count(state_dict, "to_rgbs.{}.conv.weight", 0))
    multiplier = 2
    if size >= 64:  # below 64 px every width is 512 whatever the multiplier
        rgb64 = state_dict["to_rgbs.3.conv.weight"]
        multiplier = _multiplier(int(rgb64.shape[2]) if rgb64.ndim == 5 else -1, what)
    arch = RosinalityArchitecture(size, multiplier, style_dim, n_mlp)
    noise = any(k.startswith("noises.") for k in state_dict)
    ck.check_state_dict_fits(
        on_meta(generator_layout(arch, noise)), state_dict,
        f"{what} (read as a rosinality Generator({size}, {style_dim}, n_mlp={n_mlp}, "
        f"channel_multiplier={multiplier}))",
        fix="Its names or shapes differ from rosinality's model.py (a fork, or an edited "
            "file), so it cannot be converted.")
    return arch, noise


def infer_discriminator(state_dict: Mapping[str, torch.Tensor], what: str
                        ) -> RosinalityArchitecture:
    """Architecture of a rosinality discriminator state dict, checked against
    :func:`discriminator_layout`."""
    _require(state_dict, ("convs.0.0.weight", "final_linear.1.weight"), what)
    size = 2 ** (2 + _count(state_dict, "convs.{}.conv1.0.weight", 1))
    top = int(state_dict["convs.0.0.weight"].shape[0])
    multiplier = _multiplier(top * size // 64, what) if size >= 64 else 2
    arch = RosinalityArchitecture(size, multiplier)
    ck.check_state_dict_fits(
        on_meta(discriminator_layout(arch)), state_dict,
        f"{what} (read as a rosinality Discriminator({size}, channel_multiplier={multiplier}))",
        fix="Its names or shapes differ from rosinality's model.py (a fork, or an edited "
            "file), so it cannot be converted.")
    return arch


# ----------------------------------------------------------------------------------------------
# Weights in the pack's names.


def _check_fir(state_dict: Mapping[str, torch.Tensor], gain: float, what: str) -> None:
    """Refuse stored FIR kernels other than the ``[1, 3, 3, 1]`` one the pack builds (x ``gain``,
    rosinality's factor**2 for upsampling)."""
    from ..models.layers import fir_kernel

    expected = fir_kernel(BLUR_TAPS) * gain
    for name, kernel in state_dict.items():
        if kernel.is_meta:  # shapes only (a layout check): no values to compare
            continue
        if name.endswith(".kernel") and not torch.allclose(kernel.float(), expected, atol=1e-6):
            raise ck.CheckpointError(
                f"{what}: FIR kernel {name} is not the [1, 3, 3, 1] blur of rosinality's default "
                f"(nor the pack's); a network trained with another blur_kernel cannot be converted")


def generator_weights(state_dict: Mapping[str, torch.Tensor], arch: RosinalityArchitecture,
                      latent_avg: torch.Tensor | None, what: str = "generator"
                      ) -> dict[str, torch.Tensor]:
    """The pack :class:`Generator`'s state dict from a rosinality one (module docstring table).

    ``latent_avg``: ``[style_dim]``, stored as the ``latent_avg`` buffer (None: left out). Tensors
    keep their dtype and values; only names and the shapes of size-1 axes change."""
    _check_fir({k: v for k, v in state_dict.items() if k.endswith(".kernel")}, 4.0, what)
    out: dict[str, torch.Tensor] = {}
    for i in range(arch.n_mlp):
        out[f"mapping.layers.{i}.weight"] = state_dict[f"style.{i + 1}.weight"]
        out[f"mapping.layers.{i}.bias"] = state_dict[f"style.{i + 1}.bias"]
    out["input"] = state_dict["input.input"]
    styled = ["conv1"] + [f"convs.{i}" for i in range(2 * (arch.log_size - 2))]
    for prefix in styled:
        out[f"{prefix}.conv.weight"] = state_dict[f"{prefix}.conv.weight"][0]
        for name in ("conv.modulation.weight", "conv.modulation.bias", "noise.weight"):
            out[f"{prefix}.{name}"] = state_dict[f"{prefix}.{name}"]
        out[f"{prefix}.bias"] = state_dict[f"{prefix}.activate.bias"]
    for prefix in ["to_rgb1"] + [f"to_rgbs.{j}" for j in range(arch.log_size - 2)]:
        out[f"{prefix}.conv.weight"] = state_dict[f"{prefix}.conv.weight"][0]
        for name in ("conv.modulation.weight", "conv.modulation.bias"):
            out[f"{prefix}.{name}"] = state_dict[f"{prefix}.{name}"]
        out[f"{prefix}.bias"] = state_dict[f"{prefix}.bias"].reshape(3)
    out.update({k: v for k, v in state_dict.items() if k.startswith("noises.")})
    if latent_avg is not None:
        out["latent_avg"] = latent_avg
    return out


def discriminator_weights(state_dict: Mapping[str, torch.Tensor], arch: RosinalityArchitecture,
                          what: str = "discriminator") -> dict[str, torch.Tensor]:
    """The pack :class:`Discriminator`'s state dict from a rosinality one."""
    _check_fir({k: v for k, v in state_dict.items() if k.endswith(".kernel")}, 1.0, what)
    out = {"from_rgb.conv.weight": state_dict["convs.0.0.weight"],
           "from_rgb.bias": state_dict["convs.0.1.bias"]}
    for j in range(1, arch.log_size - 1):
        block, src = f"blocks.{j - 1}", f"convs.{j}"
        out[f"{block}.conv1.conv.weight"] = state_dict[f"{src}.conv1.0.weight"]
        out[f"{block}.conv1.bias"] = state_dict[f"{src}.conv1.1.bias"]
        out[f"{block}.conv2.conv.weight"] = state_dict[f"{src}.conv2.1.weight"]
        out[f"{block}.conv2.bias"] = state_dict[f"{src}.conv2.2.bias"]
        out[f"{block}.skip.conv.weight"] = state_dict[f"{src}.skip.1.weight"]
    out["final_conv.conv.weight"] = state_dict["final_conv.0.weight"]
    out["final_conv.bias"] = state_dict["final_conv.1.bias"]
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        out[f"final_linear.{name}"] = state_dict[f"final_linear.{name}"]
    return out


def _check_widths(channels: Any, arch: RosinalityArchitecture, what: str) -> None:
    """Refuse a pack config whose widths are not rosinality's (multipliers above 2)."""
    wrong = {res: (c, channels(res)) for res, c in arch.widths().items() if channels(res) != c}
    if wrong:
        res, (theirs, ours) = next(iter(wrong.items()))
        raise ck.CheckpointError(
            f"{what}: channel_multiplier {arch.channel_multiplier} gives {theirs} channels at "
            f"{res}x{res}, where the pack's StyleGAN2 has {ours} (its layers are at most 512 "
            f"wide); only multipliers 1 and 2 convert")


def _check_size(arch: RosinalityArchitecture, what: str) -> None:
    from ..models.stylegan import SIZES

    if arch.size not in SIZES:
        raise ck.CheckpointError(
            f"{what} works at {arch.size} px; the pack's StyleGAN2 works at "
            f"{', '.join(map(str, SIZES))} px, so it cannot be converted")


def generator_config(arch: RosinalityArchitecture, *, noise: bool = True,
                     mask_guided_layers: int | None = None, lr_mlp: float = LR_MLP,
                     what: str = "generator") -> Any:
    """The pack's :class:`GeneratorConfig` for a rosinality generator of ``arch``.

    It stores the average latent (always: given or estimated) and, with ``noise``, the fixed
    noise. ``mask_guided_layers``: K for mask-guided use (None: the pack's default); it adds no
    weights, and :meth:`Generator.synthesize` renders unconditionally whatever it is."""
    from ..models.stylegan import GeneratorConfig

    _check_size(arch, what)
    config = GeneratorConfig(
        size=arch.size, w_dim=arch.style_dim, n_mlp=arch.n_mlp, lr_mlp=lr_mlp,
        channel_base=16384, channel_multiplier=arch.channel_multiplier, channel_max=512,
        blur_kernel=BLUR_TAPS, mask_guided_layers=mask_guided_layers,
        stores_latent_avg=True, stores_noise=noise)
    _check_widths(config.channels, arch, what)
    return config


def discriminator_config(arch: RosinalityArchitecture, what: str = "discriminator") -> Any:
    """The pack's :class:`DiscriminatorConfig` for a rosinality discriminator of ``arch``."""
    from ..models.discriminator import DiscriminatorConfig

    _check_size(arch, what)
    config = DiscriminatorConfig(
        size=arch.size, in_channels=3, channel_base=16384,
        channel_multiplier=arch.channel_multiplier, channel_max=512, blur_kernel=BLUR_TAPS,
        stddev_group=4, stddev_feat=1)
    _check_widths(config.channels, arch, what)
    return config


# ----------------------------------------------------------------------------------------------
# Reading.


@dataclass(frozen=True)
class RosinalityCheckpoint:
    """What a rosinality file holds."""

    path: Path
    parts: Mapping[str, Mapping[str, torch.Tensor]]  # "g_ema" / "g" / "d" -> rosinality state dict
    latent_avg: torch.Tensor | None  # [style_dim] (convert_weight.py's dlatent_avg) or None
    args: Mapping[str, Any]  # train.py's argparse values ({} when the file has none)
    other: tuple[str, ...]  # further top-level entries (optimiser states...), not converted
    bare: bool  # one bare state dict, not train.py's / convert_weight.py's dict


@contextlib.contextmanager
def _namespace_allowed() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` rebuild ``argparse.Namespace`` (train.py's ``args``)
    while the block runs.

    Safe: the weights-only unpickler creates an allowlisted class with ``cls.__new__`` and fills
    its ``__dict__`` from the pickled state (Namespace has no ``__setstate__``); no constructor or
    other code runs, and the values inside must themselves be allowed (str, numbers, lists...). The
    allowlist is process-wide, so Namespace is added only when absent and removed afterwards; a
    concurrent weights-only load elsewhere may accept a Namespace meanwhile, equally harmless."""
    if argparse.Namespace in torch.serialization.get_safe_globals():
        yield
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):
            yield


def _torch_load(path: Path) -> Any:
    """The object in a ``.pt``, weights-only; zip files memory-mapped (a train.py checkpoint's
    optimiser states are then never read into memory)."""
    ck._check_pytorch_bytes(path)  # a text, HTML or empty file is named as such
    with path.open("rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    try:
        with _namespace_allowed():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        reason = ck._unpickler_reason(exc)
        if not reason:  # a damaged pickle, not one that holds objects
            raise ck.CorruptCheckpointError(ck._corrupt_msg(
                path, f"torch.load failed ({ck._first_sentence(exc)})")) from None
        raise ck.CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True): besides tensors (and "
            f"train.py's argparse arguments) it holds pickled Python objects{reason}, and "
            f"SegTalker never unpickles code. In a Python you trust, re-save its state dicts "
            f"alone, e.g. torch.save({{'g_ema': ckpt['g_ema'], 'latent_avg': "
            f"ckpt['latent_avg']}}, 'plain.pt'), and convert that") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ck.CorruptCheckpointError(ck._corrupt_msg(
            path, f"torch.load failed ({ck._first_sentence(exc)})")) from None


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    config = ck.read_config(path)
    if not config.inferred:
        raise NotRosinalityError(f"{path} is already a SegTalker {config.component_name} "
                                 f"bundle; there is nothing to convert")
    state_dict, _ = ck.load(path, allow_non_finite=True)  # convert checks finiteness per part
    return state_dict


def looks_like(keys: Collection[str]) -> str:
    """What a set of tensor names looks like, for messages (the pack's own layouts named too)."""
    names = set(keys)
    if "mapping.layers.0.weight" in names or ("input" in names and "to_rgb1.bias" in names):
        return "a generator already in SegTalker's layout (a bundle's state dict)"
    if "from_rgb.conv.weight" in names:
        return "a discriminator already in SegTalker's layout (a bundle's state dict)"
    if _is_swagan(names):
        return "a rosinality SWAGAN network (wavelet StyleGAN2, train.py --arch swagan)"
    return ck.guess_layout(names).description


def _is_swagan(names: Collection[str]) -> bool:
    return any(".iwt." in n or ".dwt." in n or n.startswith(("iwt.", "dwt.", "from_rgbs."))
               for n in names)


def _kind(names: Collection[str]) -> str | None:
    """``"g"`` (a generator), ``"d"`` (a discriminator) or None, from rosinality's names."""
    names = set(names)
    if _is_swagan(names):
        return None
    if {"conv1.conv.modulation.weight", "input.input"} <= names:
        return "g"
    if {"convs.0.0.weight", "final_linear.1.weight"} <= names:
        return "d"
    return None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _not_rosinality(path: Path, names: Collection[str]) -> NotRosinalityError:
    return NotRosinalityError(
        f"{path} is not a rosinality StyleGAN2 checkpoint: it looks like {looks_like(names)}. "
        f"Give a file written by rosinality/stylegan2-pytorch's train.py or convert_weight.py "
        f"(e.g. stylegan2-ffhq-config-f.pt)")


def _parse(path: Path, obj: Any) -> RosinalityCheckpoint:
    if not isinstance(obj, Mapping):
        raise NotRosinalityError(f"{path} holds a {type(obj).__name__}, not the dict of state "
                                 f"dicts a rosinality checkpoint is")
    if _is_state_dict(obj):
        state_dict = ck._strip_module_prefix(obj)
        kind = _kind(state_dict)
        if kind is None:
            raise _not_rosinality(path, state_dict.keys())
        part = "g_ema" if kind == "g" else "d"
        return RosinalityCheckpoint(path, {part: state_dict}, None, {}, (), bare=True)
    parts: dict[str, Mapping[str, torch.Tensor]] = {}
    for name in PARTS:
        if name not in obj:
            continue
        if not _is_state_dict(obj[name]):
            raise NotRosinalityError(f"{path}: its {name!r} entry is a {type(obj[name]).__name__}, "
                                     f"not a state dict of tensors; the file is not a rosinality "
                                     f"checkpoint (or was edited)")
        state_dict = ck._strip_module_prefix(obj[name])
        want = "g" if name in GENERATOR_PARTS else "d"
        if _kind(state_dict) != want:
            raise NotRosinalityError(
                f"{path}: its {name!r} entry is not a rosinality StyleGAN2 "
                f"{'generator' if want == 'g' else 'discriminator'}: it looks like "
                f"{looks_like(state_dict.keys())}")
        parts[name] = state_dict
    args = obj.get("args")
    args = vars(args) if isinstance(args, argparse.Namespace) else (
        dict(args) if isinstance(args, Mapping) else {})
    if args.get("arch", "stylegan2") != "stylegan2":
        raise NotRosinalityError(f"{path} was trained with train.py --arch {args['arch']}, not "
                                 f"the StyleGAN2 architecture; it cannot be converted")
    if not parts:
        inner = ck._unwrap(obj, None)
        seen = f"; its state dict looks like {looks_like(inner.keys())}" \
            if _is_state_dict(inner) else ""
        raise NotRosinalityError(
            f"{path} is not a rosinality StyleGAN2 checkpoint: it holds "
            f"{', '.join(map(repr, list(obj)[:6]))} but no 'g_ema', 'g' or 'd' state dict{seen}")
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise NotRosinalityError(f"{path}: its 'latent_avg' entry is a "
                                 f"{type(latent_avg).__name__}, not a tensor")
    other = tuple(str(k) for k in obj if k not in PARTS + ("latent_avg", "args"))
    return RosinalityCheckpoint(path, parts, latent_avg, args, other, bare=False)


def read_rosinality(path: str | os.PathLike[str]) -> RosinalityCheckpoint:
    """Read a rosinality checkpoint (``.pt``/``.pth``/``.ckpt``/``.bin``, or a plain
    ``.safetensors`` state dict) without converting it.

    Errors: :class:`checkpoints.CheckpointError` subclasses naming the file: missing, a folder,
    truncated or not a PyTorch file (``CorruptCheckpointError``), pickled objects other than
    train.py's argparse arguments, or another network (:class:`NotRosinalityError`, saying what it
    looks like)."""
    p = ck.find_checkpoint(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ck.CheckpointError(f"{p} has extension {p.suffix!r}; a rosinality checkpoint is one "
                                 f"of {', '.join(SUFFIXES)}")
    obj = _safetensors_load(p) if p.suffix.lower() in ck.SAFETENSORS_SUFFIXES else _torch_load(p)
    return _parse(p, obj)


# ----------------------------------------------------------------------------------------------
# Describing.


def _widths_text(arch: RosinalityArchitecture) -> str:
    widths = arch.widths()
    low = [r for r in widths if r <= 32]
    parts = [f"{widths[low[0]]} at {low[0]}-{low[-1]} px"]
    parts += [f"{c} at {r}" for r, c in widths.items() if r > 32]
    return ", ".join(parts)


def _human(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.1f}k"


def _describe_part(name: str, state_dict: Mapping[str, torch.Tensor], path: Path) -> str:
    # Parameters only: the fixed noise and the FIR kernels are buffers (2.8M values at 1024).
    weights = _human(sum(t.numel() for k, t in state_dict.items()
                         if not k.startswith("noises.") and not k.endswith(".kernel")))
    try:
        if name in GENERATOR_PARTS:
            arch, noise = infer_generator(state_dict, f"{path.name} {name}")
            config_f = " (config-f)" if arch.channel_multiplier == 2 else ""
            return (f"generator {name!r}: {arch.size} px, style dim {arch.style_dim}, "
                    f"{arch.n_mlp} mapping layers, channel multiplier {arch.channel_multiplier}"
                    f"{config_f}, widths {_widths_text(arch)}, {weights} weights, fixed noise "
                    f"{'stored' if noise else 'absent'}")
        arch = infer_discriminator(state_dict, f"{path.name} {name}")
        return (f"discriminator {name!r}: {arch.size} px, channel multiplier "
                f"{arch.channel_multiplier}, {weights} weights")
    except ck.CheckpointError as exc:
        return f"{name!r}: cannot be converted ({exc})"


def describe_checkpoint(ckpt: RosinalityCheckpoint) -> str:
    """One paragraph: what :func:`read_rosinality` found (parts, sizes, widths, extras)."""
    kind = "a bare state dict" if ckpt.bare else "train.py / convert_weight.py layout"
    lines = [f"{ckpt.path.name}: rosinality StyleGAN2 checkpoint ({kind})"]
    lines += [_describe_part(name, sd, ckpt.path) for name, sd in ckpt.parts.items()]
    if not any(p in ckpt.parts for p in GENERATOR_PARTS):
        lines.append("no generator")
    if "d" not in ckpt.parts:
        lines.append("no discriminator")
    if any(p in ckpt.parts for p in GENERATOR_PARTS):
        lines.append("average latent stored" if ckpt.latent_avg is not None else
                     f"no average latent (convert estimates it from {MEAN_LATENT_SAMPLES:,} z)")
    if ckpt.args:
        shown = {k: ckpt.args[k] for k in ("arch", "size", "latent", "n_mlp",
                                           "channel_multiplier", "iter") if k in ckpt.args}
        lines.append("train.py args: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if ckpt.other:
        lines.append(f"also holds (not converted): {', '.join(ckpt.other)}")
    return "; ".join(lines)


def describe_rosinality(path: str | os.PathLike[str]) -> str:
    """What a rosinality checkpoint is, e.g. ``"stylegan2-ffhq-config-f.pt: rosinality StyleGAN2
    checkpoint (train.py / convert_weight.py layout); generator 'g_ema': 1024 px, style dim 512,
    8 mapping layers, channel multiplier 2 (config-f), widths 512 at 4-32 px, 512 at 64, ...,
    30.4M weights, fixed noise stored; no discriminator; average latent stored"``.

    Raises :class:`NotRosinalityError` for a file of another layout (the message says what it
    looks like) and the other :func:`read_rosinality` errors."""
    return describe_checkpoint(read_rosinality(path))


# ----------------------------------------------------------------------------------------------
# Converting.


def output_paths(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Path]:
    """Where :func:`convert_rosinality` writes, ``{component: path}``.

    ``out`` an existing folder: ``<out>/<source stem>_generator.safetensors`` and
    ``..._discriminator.safetensors``; otherwise a prefix: ``<out>_generator.safetensors`` (a
    trailing ``.safetensors`` is dropped from ``out`` first)."""
    return bundle_paths(src, out, COMPONENTS)


def _on_meta_with(model_cls: type, config: Any, state_dict: Mapping[str, torch.Tensor],
                  what: str) -> torch.nn.Module:
    """A module of ``config`` whose persistent tensors *are* ``state_dict``'s (built on the meta
    device and assigned, so nothing is allocated or copied), after the strict name/shape check."""
    with torch.device("meta"):
        model = model_cls(config)
    ck.check_state_dict_fits(model.state_dict(), state_dict, what,
                             fix="This is a bug in the rosinality converter; please report it.")
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def _latent_avg(ckpt: RosinalityCheckpoint, style_dim: int) -> torch.Tensor | None:
    """The stored average latent as ``[style_dim]``, or None when the file has none."""
    avg = ckpt.latent_avg
    if avg is None:
        return None
    if avg.numel() != style_dim or avg.ndim > 2:
        raise ck.CheckpointError(f"{ckpt.path}: latent_avg has shape {tuple(avg.shape)}, but the "
                                 f"generator's style dim is {style_dim}; the file is inconsistent")
    ck.check_finite_weights({"latent_avg": avg}, ckpt.path)
    return avg.reshape(style_dim)


def _pick_generator(ckpt: RosinalityCheckpoint, generator_part: str | None) -> str:
    if generator_part is not None:
        if generator_part not in GENERATOR_PARTS:
            raise ValueError(f"generator_part must be one of {GENERATOR_PARTS}, got "
                             f"{generator_part!r}")
        if generator_part not in ckpt.parts:
            raise ck.CheckpointError(f"{ckpt.path} holds no {generator_part!r} generator (it holds "
                                     f"{', '.join(ckpt.parts)})")
        return generator_part
    if "g_ema" in ckpt.parts:
        return "g_ema"
    log.warning("%s has no g_ema (the weights' moving average); converting the training "
                "generator 'g', which renders noticeably worse", ckpt.path)
    return "g"


def _convert_generator(ckpt: RosinalityCheckpoint, part: str, dst: Path, *,
                       mask_guided_layers: int | None, lr_mlp: float) -> Path:
    from ..models.bundles import save_component
    from ..models.stylegan import Generator

    name = f"{ckpt.path.name} {part!r}"
    source = ckpt.parts[part]
    arch, noise = infer_generator(source, name)
    config = generator_config(arch, noise=noise, mask_guided_layers=mask_guided_layers,
                              lr_mlp=lr_mlp, what=name)
    avg = _latent_avg(ckpt, arch.style_dim)
    placeholder = torch.zeros(arch.style_dim, dtype=source["input.input"].dtype)
    weights = generator_weights(source, arch, placeholder if avg is None else avg, name)
    model = _on_meta_with(Generator, config, weights, f"generator converted from {name}")
    if avg is None:
        log.warning(
            "%s has no latent_avg: estimated as the mean of mapping(z) over %d z (seed %d); "
            "truncation around it differs slightly from the original's", ckpt.path,
            MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED)
        rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
        with torch.no_grad():
            model.latent_avg = model.mean_latent(MEAN_LATENT_SAMPLES, rng).to(placeholder.dtype)
        origin = f"estimated: mean of mapping(z), {MEAN_LATENT_SAMPLES} z, seed {MEAN_LATENT_SEED}"
    else:
        origin = "stored in the source"
    extra = {"converted_from": ckpt.path.name, "source": SOURCE, "source_part": part,
             "latent_avg": origin}
    save_component(dst, model, config, extra=extra)
    return dst


def discriminator_module(source: Mapping[str, torch.Tensor], name: str) -> tuple[Any, Any]:
    """``(module, config)``: the pack's :class:`Discriminator` holding a rosinality
    discriminator state dict's tensors (checked name by name, shape by shape and FIR kernel).
    Also what E4S's ``D_state_dict`` (the same class) converts through. ``name`` names it."""
    from ..models.discriminator import Discriminator

    arch = infer_discriminator(source, name)
    config = discriminator_config(arch, name)
    model = _on_meta_with(Discriminator, config, discriminator_weights(source, arch, name),
                          f"discriminator converted from {name}")
    return model, config


def _convert_discriminator(ckpt: RosinalityCheckpoint, dst: Path) -> Path:
    from ..models.bundles import save_component

    model, config = discriminator_module(ckpt.parts["d"], f"{ckpt.path.name} 'd'")
    save_component(dst, model, config,
                   extra={"converted_from": ckpt.path.name, "source": SOURCE, "source_part": "d"})
    return dst


def convert_rosinality(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    components: Collection[str] | None = None,
    generator_part: str | None = None,
    mask_guided_layers: int | None = None,
    lr_mlp: float = LR_MLP,
    what: str = "output",
) -> dict[str, Path]:
    """Convert a rosinality StyleGAN2 checkpoint into SegTalker bundles; returns
    ``{component: path written}`` (``"generator"``, ``"discriminator"``).

    ``out``: a folder or a path prefix (:func:`output_paths`). ``components``: which to write
    (default: each the file holds; one asked for and absent is an error). ``generator_part``:
    ``"g_ema"`` (default when present) or ``"g"``. ``mask_guided_layers``: K of the generator's
    config (:func:`generator_config`). ``lr_mlp``: the mapping's learning-rate multiplier the
    network was trained with (no tensor stores it). ``what`` names ``out`` in messages (``"-o"``).

    The generator bundle renders unconditionally with :meth:`Generator.synthesize` and carries
    the average latent (the file's ``latent_avg``; when absent, estimated with a warning on the
    ``segtalker.conversion`` logger) and rosinality's fixed noise. Every output is checked
    (not the source, not a folder, its folder exists) before the source is read, and everything
    is converted and checked before the first file is written; each file is written whole or not
    at all (:func:`checkpoints.save`)."""
    src_path = ck.find_checkpoint(src)
    wanted = tuple(COMPONENTS if components is None else components)
    unknown = [c for c in wanted if c not in COMPONENTS]
    if unknown or not wanted:
        raise ValueError(f"components must be some of {COMPONENTS}, got {tuple(wanted)!r}")
    paths = output_paths(src_path, out)
    for component in wanted:
        check_output_path(paths[component], {"checkpoint": src_path}, what)
    ckpt = read_rosinality(src_path)
    has = {"generator": any(p in ckpt.parts for p in GENERATOR_PARTS),
           "discriminator": "d" in ckpt.parts}
    if components is not None:
        missing = [c for c in wanted if not has[c]]
        if missing:
            raise ck.CheckpointError(f"{src_path} holds no {' or '.join(missing)} (it holds "
                                     f"{', '.join(ckpt.parts)}); ask only for what it has")
    todo = [c for c in wanted if has[c]]
    part = _pick_generator(ckpt, generator_part) if "generator" in todo else None
    # Check every part before writing any: a bad discriminator must not leave a lone generator.
    if part is not None:
        ck.check_finite_weights(ckpt.parts[part], src_path)
        arch, _ = infer_generator(ckpt.parts[part], f"{src_path.name} {part!r}")
        generator_config(arch, mask_guided_layers=mask_guided_layers, lr_mlp=lr_mlp,
                         what=f"{src_path.name} {part!r}")
    if "discriminator" in todo:
        ck.check_finite_weights(ckpt.parts["d"], src_path)
        discriminator_config(infer_discriminator(ckpt.parts["d"], f"{src_path.name} 'd'"))
    written: dict[str, Path] = {}
    if part is not None:
        written["generator"] = _convert_generator(
            ckpt, part, paths["generator"], mask_guided_layers=mask_guided_layers, lr_mlp=lr_mlp)
    if "discriminator" in todo:
        written["discriminator"] = _convert_discriminator(ckpt, paths["discriminator"])
    return written


__all__ = [
    "RosinalityArchitecture",
    "RosinalityCheckpoint",
    "NotRosinalityError",
    "generator_layout",
    "discriminator_layout",
    "infer_generator",
    "infer_discriminator",
    "generator_weights",
    "discriminator_weights",
    "generator_config",
    "discriminator_config",
    "discriminator_module",
    "read_rosinality",
    "describe_rosinality",
    "describe_checkpoint",
    "output_paths",
    "convert_rosinality",
    "looks_like",
]
