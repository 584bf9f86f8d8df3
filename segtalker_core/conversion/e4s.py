"""E4S (RGI) checkpoints -> a SegTalker encoder bundle and a generator bundle.

E4S (github.com/e4s2022/e4s, MIT) trains ``Net3``: an encoder ``FSEncoder_PSP`` (an IR-SE-50
with InstanceNorm), one ``LocalMLP`` per region (``MLPs.{r}``) and a mask-guided StyleGAN2
``G`` (rosinality's layout). Its trained file (``iteration_300000.pt``, ``coach.py``
``__get_save_dict``) is a dict:

* ``state_dict``: ``Net3``'s weights, ``module.``-prefixed (DDP training); the one E4S's own
  inference scripts load, so the one converted here;
* ``state_dict_ema``: an EMA of the parameters (no ``module.``; its noise buffers are random);
* ``latent_avg``: ``[18, 512]``, the FFHQ StyleGAN2's average latent repeated per row;
* ``opts``: the training options (``vars(TrainOptions)``, holding a ``torch.device``);
* ``D_state_dict`` (when trained with ``train_D``): E4S's discriminator, rosinality's
  ``Discriminator(out_size)`` unchanged (``module.``-prefixed under DDP).

It is read with ``torch.load(weights_only=True)`` (no pickled code runs; a ``torch.device`` is
among the types that allows).

What comes out (:func:`convert_e4s`):

* a generator bundle: ``G.*`` through :func:`.rosinality.generator_weights` (the same layout),
  ``mask_guided_impl="reference"`` (E4S's per-region convs), K = the checkpoint's
  ``remaining_layer_idx`` (13), the fixed noise and the average latent stored;
* an encoder bundle: :meth:`EncoderConfig.e4s` (the pack's encoder with E4S's backbone, resize,
  pooling, MLP activation and absent-region rule), the MLPs stacked per region, ``latent_avg``
  one row of the file's;
* when the file holds ``D_state_dict``, a discriminator bundle (for fine-tuning), converted with
  rosinality's discriminator mapping (:func:`.rosinality.discriminator_module`). One that is not a
  rosinality discriminator, or not finite, is left out with a warning: the encoder and generator,
  what inference needs, are still written.

Names, E4S -> pack encoder (``u`` the flat unit index, ``(s, b)`` its stage and block through the
cumulative unit counts 3, 4, 14, 3):

=======================================  ==================================================
``encoder.input_layer.0.weight``         ``backbone.stem.0.weight`` (conv 3x3)
``encoder.input_layer.2.weight``         ``backbone.stem.2.weight`` (PReLU)
``encoder.body.{u}.res_layer.{1,2,3}``   ``backbone.stages.{s}.{b}.residual.{1,2,3}.weight``
``encoder.body.{u}.res_layer.5.fc{1,2}`` ``backbone.stages.{s}.{b}.se.fc{1,2}.weight``
``encoder.body.{u}.shortcut_layer.0``    ``backbone.stages.{s}.{b}.shortcut.0.weight``
``MLPs.{r}.mlp.0.weight`` ``[512,1280]`` ``mlp.0.weight[r]`` ``[1280, 512]`` (transposed)
``MLPs.{r}.mlp.2.weight`` ``[13*512,512]`` ``mlp.1.weight[r]`` ``[512, 13*512]`` (transposed)
``MLPs.{r}.mlp.{0,2}.bias``              ``mlp.{0,1}.bias[r]``
``latent_avg`` (top level) ``[18, 512]`` ``latent_avg`` ``[512]`` (the rows are checked equal)
=======================================  ==================================================

Labels: E4S's 12 regions (background, lip, eyebrows, eyes, hair, nose, skin, ears, neck, mouth,
eye_glass, ear_rings; its ``dataset.py``) are the pack's ``REGIONS_12`` in the same order and with
the same face-parser classes, so the permutation is the identity: no MLP or code is reordered.

The generator follows E4S's rules for the rows beyond K (region 0's codes, ``global_style="first"``)
and resizes its masks with legacy ``nearest`` (``legacy_nearest_masks``), as E4S does; fed E4S's
512 px one-hot maps, it reproduces E4S's image.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import checkpoints as ck
from ..atomic_files import check_output_path
from . import rosinality as ros
from .outputs import bundle_paths

log = logging.getLogger("segtalker.conversion")

SOURCE = "e4s2022/e4s (Net3, RGI)"
COMPONENTS = ("encoder", "generator")
DISCRIMINATOR = "discriminator"  # written too when the file holds D_state_dict
DISCRIMINATOR_KEY = "D_state_dict"
# FSEncoder_PSP's IR-SE-50 body (get_blocks(50)) and LocalMLP's hidden width. E4S hard-codes
# them; read at call time (not bound as defaults), so tests can shrink them to a small network
# with the same rules.
STAGE_CHANNELS = (128, 256, 512, 512)
STAGE_BLOCKS = (3, 4, 14, 3)
STEM_CHANNELS = 64
SE_REDUCTION = 16
POOLED_STAGES = 3  # [s1 | s2 | s3]: the last three stage outputs, 256 + 512 + 512 = 1280
MLP_HIDDEN = 512
LABEL_ORDER = "identity: E4S's 12 regions are labels.REGIONS_12 in the same order"
MEAN_LATENT_SAMPLES = ros.MEAN_LATENT_SAMPLES
MEAN_LATENT_SEED = ros.MEAN_LATENT_SEED

Layout = dict[str, tuple[int, ...]]


class NotE4SError(ck.CheckpointError):
    """A readable file that is not an E4S ``Net3`` checkpoint; says what it looks like."""


# ----------------------------------------------------------------------------------------------
# Architecture and layout (E4S's networks.py / psp_encoders.py / helpers.py rules).


@dataclass(frozen=True)
class E4SArchitecture:
    """``Net3``'s shape-giving options: ``num_seg_cls``, ``remaining_layer_idx``, ``out_size``."""

    num_regions: int = 12  # num_seg_cls: MLPs and mask channels
    k: int = 13  # remaining_layer_idx: W+ rows predicted per region
    size: int = 1024  # out_size: G's resolution
    w_dim: int = 512  # style_dim

    @property
    def n_latent(self) -> int:
        return 2 * (self.size.bit_length() - 1) - 2

    @property
    def generator(self) -> ros.RosinalityArchitecture:
        return ros.RosinalityArchitecture(self.size, 2, self.w_dim, 8)


def unit_positions() -> list[tuple[int, int, int, int]]:
    """``(stage, block, in_channels, out_channels)`` of each flat unit ``body.{u}``."""
    out = []
    cin = STEM_CHANNELS
    for stage, (cout, blocks) in enumerate(zip(STAGE_CHANNELS, STAGE_BLOCKS)):
        for block in range(blocks):
            out.append((stage, block, cin if block == 0 else cout, cout))
        cin = cout
    return out


def encoder_layout() -> Layout:
    """Names and shapes of ``Net3.encoder`` (``FSEncoder_PSP('ir_se')``), ``encoder.``-prefixed,
    in its order. InstanceNorm and the parameter-free shortcuts store nothing."""
    layout: Layout = {
        "encoder.input_layer.0.weight": (STEM_CHANNELS, 3, 3, 3),
        "encoder.input_layer.2.weight": (STEM_CHANNELS,),
    }
    for u, (_, _, cin, cout) in enumerate(unit_positions()):
        p = f"encoder.body.{u}"
        if cin != cout:  # a width change: Conv1x1 + IN shortcut (else MaxPool2d(1, s))
            layout[f"{p}.shortcut_layer.0.weight"] = (cout, cin, 1, 1)
        layout[f"{p}.res_layer.1.weight"] = (cout, cin, 3, 3)
        layout[f"{p}.res_layer.2.weight"] = (cout,)
        layout[f"{p}.res_layer.3.weight"] = (cout, cout, 3, 3)
        layout[f"{p}.res_layer.5.fc1.weight"] = (cout // SE_REDUCTION, cout, 1, 1)
        layout[f"{p}.res_layer.5.fc2.weight"] = (cout, cout // SE_REDUCTION, 1, 1)
    return layout


def feature_dim() -> int:
    """The pooled style vector's size (``Net3.dim_s_code``, 1280)."""
    return sum(STAGE_CHANNELS[-POOLED_STAGES:])


def mlps_layout(arch: E4SArchitecture) -> Layout:
    """Names and shapes of ``Net3.MLPs`` (one ``LocalMLP`` per region)."""
    layout: Layout = {}
    for r in range(arch.num_regions):
        layout[f"MLPs.{r}.mlp.0.weight"] = (MLP_HIDDEN, feature_dim())
        layout[f"MLPs.{r}.mlp.0.bias"] = (MLP_HIDDEN,)
        layout[f"MLPs.{r}.mlp.2.weight"] = (arch.k * arch.w_dim, MLP_HIDDEN)
        layout[f"MLPs.{r}.mlp.2.bias"] = (arch.k * arch.w_dim,)
    return layout


def net3_layout(arch: E4SArchitecture) -> Layout:
    """Every name and shape of ``Net3(opts).state_dict()`` (without ``module.``)."""
    layout = encoder_layout()
    layout.update(mlps_layout(arch))
    layout.update({f"G.{k}": v for k, v in ros.generator_layout(arch.generator).items()})
    return layout


# ----------------------------------------------------------------------------------------------
# Reading.


@dataclass(frozen=True)
class E4SCheckpoint:
    """What an E4S file holds."""

    path: Path
    state_dict: Mapping[str, torch.Tensor]  # Net3's, without "module."
    latent_avg: torch.Tensor | None  # as stored ([18, 512], [1, 512] or [512]) or None
    opts: Mapping[str, Any]  # training options ({} when absent)
    arch: E4SArchitecture
    other: tuple[str, ...]  # further top-level entries (not converted)
    discriminator: Mapping[str, torch.Tensor] | None = None  # D_state_dict, without "module."


def _subdict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _looks_like(obj: Any) -> str:
    if isinstance(obj, Mapping):
        if any(k in obj for k in ros.PARTS):
            return ("a rosinality StyleGAN2 checkpoint (g_ema / g / d), not E4S's Net3; convert "
                    "it with the rosinality converter")
        inner = ck._unwrap(obj, None)
        if isinstance(inner, Mapping) and inner and all(
                isinstance(v, torch.Tensor) for v in inner.values()):
            return ros.looks_like(ck._strip_module_prefix(inner).keys())
        return f"a dict of {', '.join(map(repr, list(obj)[:6]))}"
    return f"a {type(obj).__name__}"


def infer_architecture(state_dict: Mapping[str, torch.Tensor], what: str) -> E4SArchitecture:
    """Regions, K and size of a ``Net3`` state dict, checked name by name and shape by shape
    against :func:`net3_layout`."""
    if not ("encoder.input_layer.0.weight" in state_dict and "MLPs.0.mlp.2.weight" in state_dict
            and "G.input.input" in state_dict):
        raise NotE4SError(f"{what} is not an E4S Net3 state dict: it lacks encoder.*, MLPs.* or "
                          f"G.* (it looks like {ros.looks_like(state_dict.keys())})")
    num_regions = 0
    while f"MLPs.{num_regions}.mlp.2.weight" in state_dict:
        num_regions += 1
    w_dim = int(state_dict["G.conv1.conv.modulation.weight"].shape[1])
    rows = int(state_dict["MLPs.0.mlp.2.weight"].shape[0])
    if rows % w_dim:
        raise ck.CheckpointError(f"{what}: MLPs.0 predicts {rows} values, not a multiple of the "
                                 f"style dim {w_dim}; the file is inconsistent")
    n_rgb = 0
    while f"G.to_rgbs.{n_rgb}.conv.weight" in state_dict:
        n_rgb += 1
    arch = E4SArchitecture(num_regions, rows // w_dim, 2 ** (2 + n_rgb), w_dim)
    ck.check_state_dict_fits(
        ros.on_meta(net3_layout(arch)), state_dict,
        f"{what} (read as E4S Net3 with {num_regions} regions, K={arch.k}, {arch.size} px)",
        fix="It is not a checkpoint of E4S's networks.py Net3 (a fork or another "
            "architecture); it cannot be converted.")
    return arch


def read_e4s(path: str | os.PathLike[str], part: str = "state_dict") -> E4SCheckpoint:
    """Read an E4S checkpoint without converting it. ``part``: ``"state_dict"`` (what E4S's
    inference uses) or ``"state_dict_ema"``.

    Errors: :class:`checkpoints.CheckpointError` subclasses naming the file: missing, truncated or
    not a PyTorch file (``CorruptCheckpointError``), pickled code, or another network
    (:class:`NotE4SError`, saying what it looks like)."""
    p = ck.find_checkpoint(path)
    if p.suffix.lower() not in ck.LEGACY_SUFFIXES:
        raise ck.CheckpointError(f"{p} has extension {p.suffix!r}; an E4S checkpoint is a "
                                 f"torch.save file ({', '.join(ck.LEGACY_SUFFIXES)})")
    obj = ros._torch_load(p)  # weights-only, damaged files named, zip files memory-mapped
    if not isinstance(obj, Mapping) or not isinstance(obj.get(part), Mapping):
        raise NotE4SError(f"{p} is not an E4S checkpoint (no {part!r} state dict): it is "
                          f"{_looks_like(obj)}")
    state_dict = ck._strip_module_prefix(obj[part])
    arch = infer_architecture(state_dict, f"{p.name} {part!r}")
    opts = obj.get("opts")
    opts = dict(opts) if isinstance(opts, Mapping) else {}
    for key, value in (("num_seg_cls", arch.num_regions), ("remaining_layer_idx", arch.k),
                       ("out_size", arch.size)):
        if key in opts and opts[key] != value:
            raise ck.CheckpointError(f"{p}: its opts say {key}={opts[key]!r} but the weights have "
                                     f"{value}; the file is inconsistent")
    latent_avg = obj.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise NotE4SError(f"{p}: its 'latent_avg' entry is a {type(latent_avg).__name__}, not a "
                          f"tensor")
    d = obj.get(DISCRIMINATOR_KEY)
    d = ck._strip_module_prefix(d) if _is_state_dict(d) else None
    used = (part, "latent_avg", "opts") + ((DISCRIMINATOR_KEY,) if d is not None else ())
    other = tuple(str(k) for k in obj if k not in used)
    return E4SCheckpoint(p, state_dict, latent_avg, opts, arch, other, d)


def _is_state_dict(value: Any) -> bool:
    return (isinstance(value, Mapping) and bool(value)
            and all(isinstance(v, torch.Tensor) for v in value.values()))


def latent_avg_row(latent_avg: torch.Tensor, arch: E4SArchitecture, path: Path) -> torch.Tensor:
    """``[w_dim]`` from the stored ``[L, w_dim]`` / ``[1, w_dim]`` / ``[w_dim]`` average latent.

    E4S repeats the StyleGAN2's one average latent over the rows; the pack stores one row, so
    rows that differ are refused rather than silently averaged."""
    avg = latent_avg[None] if latent_avg.ndim == 1 else latent_avg
    if avg.ndim != 2 or avg.shape[1] != arch.w_dim or avg.shape[0] not in (1, arch.n_latent):
        raise ck.CheckpointError(
            f"{path}: latent_avg has shape {tuple(latent_avg.shape)}; expected [{arch.w_dim}], "
            f"[1, {arch.w_dim}] or [{arch.n_latent}, {arch.w_dim}] for a {arch.size} px E4S")
    ck.check_finite_weights({"latent_avg": avg}, path)
    if not torch.equal(avg, avg[:1].expand_as(avg)):
        spread = float((avg - avg[:1]).abs().max())
        raise ck.CheckpointError(
            f"{path}: latent_avg's {avg.shape[0]} rows differ (by up to {spread:.3g}); E4S repeats "
            f"one average latent, and the pack's encoder stores one row, so this file cannot be "
            f"converted exactly (to accept an approximation, re-save it with latent_avg "
            f"replaced by one row, e.g. its mean, and convert that)")
    return latent_avg.reshape(-1, arch.w_dim)[0]


# ----------------------------------------------------------------------------------------------
# Weights in the pack's names.


def encoder_weights(state_dict: Mapping[str, torch.Tensor], arch: E4SArchitecture,
                    latent_avg: torch.Tensor) -> dict[str, torch.Tensor]:
    """The pack :class:`MaskGuidedEncoder`'s state dict (:meth:`EncoderConfig.e4s`) from a Net3
    one (module docstring table). ``latent_avg``: ``[w_dim]``."""
    out = {"backbone.stem.0.weight": state_dict["encoder.input_layer.0.weight"],
           "backbone.stem.2.weight": state_dict["encoder.input_layer.2.weight"]}
    for u, (stage, block, cin, cout) in enumerate(unit_positions()):
        src, dst = f"encoder.body.{u}", f"backbone.stages.{stage}.{block}"
        for i in (1, 2, 3):
            out[f"{dst}.residual.{i}.weight"] = state_dict[f"{src}.res_layer.{i}.weight"]
        for fc in ("fc1", "fc2"):
            out[f"{dst}.se.{fc}.weight"] = state_dict[f"{src}.res_layer.5.{fc}.weight"]
        if cin != cout:
            out[f"{dst}.shortcut.0.weight"] = state_dict[f"{src}.shortcut_layer.0.weight"]
    regions = range(arch.num_regions)
    # E4S's EqualLinear computes x @ W.T; the pack's RegionLinear x @ W: transpose per region.
    for dst, src in (("mlp.0", "mlp.0"), ("mlp.1", "mlp.2")):
        out[f"{dst}.weight"] = torch.stack(
            [state_dict[f"MLPs.{r}.{src}.weight"].t() for r in regions]).contiguous()
        out[f"{dst}.bias"] = torch.stack([state_dict[f"MLPs.{r}.{src}.bias"] for r in regions])
    out["latent_avg"] = latent_avg
    return out


def encoder_config(arch: E4SArchitecture) -> Any:
    from ..models.encoder import EncoderConfig

    return EncoderConfig.e4s(
        stem_channels=STEM_CHANNELS, stage_channels=STAGE_CHANNELS, stage_blocks=STAGE_BLOCKS,
        num_scales=POOLED_STAGES, mlp_hidden=MLP_HIDDEN, num_regions=arch.num_regions,
        w_dim=arch.w_dim, n_latent=arch.n_latent, n_styles=arch.k)


def generator_config(arch: E4SArchitecture, what: str) -> Any:
    """The pack's generator config for ``G``: rosinality's, with E4S's K and per-region convs."""
    config = ros.generator_config(arch.generator, noise=True, mask_guided_layers=arch.k,
                                  what=what)
    return dataclasses.replace(config, mask_guided_impl="reference", num_regions=arch.num_regions,
                               legacy_nearest_masks=True, global_style="first")


# ----------------------------------------------------------------------------------------------
# Describing.


def describe_checkpoint(ckpt: E4SCheckpoint) -> str:
    """One paragraph: what :func:`read_e4s` found."""
    a = ckpt.arch
    # Parameters only, as describe_rosinality: G's fixed noise and FIR kernels are buffers.
    count = sum(t.numel() for k, t in ckpt.state_dict.items()
                if not (k.startswith("G.noises.") or k.endswith(".kernel")))
    order = "E4S order = REGIONS_12" if a.num_regions == 12 else "not the 12-region scheme"
    lines = [f"{ckpt.path.name}: E4S Net3 (RGI) checkpoint",
             f"{a.num_regions} regions ({order}), K={a.k} W+ rows per region of {a.n_latent}, "
             f"generator {a.size} px, {count / 1e6:.1f}M parameters",
             "average latent stored" if ckpt.latent_avg is not None else
             f"no average latent (convert estimates it from {MEAN_LATENT_SAMPLES:,} z)"]
    shown = {k: ckpt.opts[k] for k in ("exp_dir", "max_steps", "dist_train", "train_D")
             if k in ckpt.opts}
    if shown:
        lines.append("opts: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    if ckpt.discriminator is not None:
        lines.append(f"discriminator {DISCRIMINATOR_KEY!r} ({_discriminator_text(ckpt)})")
    if ckpt.other:
        lines.append(f"also holds (not converted): {', '.join(ckpt.other)}")
    return "; ".join(lines)


def _discriminator_text(ckpt: E4SCheckpoint) -> str:
    try:
        arch = ros.infer_discriminator(ckpt.discriminator, f"{ckpt.path.name} {DISCRIMINATOR_KEY!r}")
    except ck.CheckpointError as error:
        return f"not convertible: {error}"
    return f"{arch.size} px, converted too"


def describe_e4s(path: str | os.PathLike[str]) -> str:
    """What an E4S checkpoint is, e.g. ``"iteration_300000.pt: E4S Net3 (RGI) checkpoint; 12
    regions (E4S order = REGIONS_12), K=13 W+ rows per region of 18, generator 1024 px, 164.3M
    parameters; average latent stored; ..."``. Raises the :func:`read_e4s` errors."""
    return describe_checkpoint(read_e4s(path))


# ----------------------------------------------------------------------------------------------
# Converting.


def output_paths(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Path]:
    """``{component: path}``: ``<out>/<source stem>_encoder.safetensors``,
    ``..._generator.safetensors`` and ``..._discriminator.safetensors`` (written only when the
    file holds one) for an existing folder ``out``, else ``<out>_encoder...`` (a trailing
    ``.safetensors`` dropped from ``out`` first)."""
    return bundle_paths(src, out, COMPONENTS + (DISCRIMINATOR,))


def _discriminator(ckpt: E4SCheckpoint) -> tuple[Any, Any] | None:
    """``(module, config)`` of the file's discriminator, or None (none, or not convertible:
    warned, as inference does not need it)."""
    if ckpt.discriminator is None:
        return None
    name = f"{ckpt.path.name} {DISCRIMINATOR_KEY!r}"
    try:
        ck.check_finite_weights(ckpt.discriminator, ckpt.path)
        return ros.discriminator_module(ckpt.discriminator, name)
    except ck.CheckpointError as error:
        log.warning("%s: its discriminator is not converted (%s); the encoder and generator are",
                    ckpt.path, error)
        return None


def convert_e4s(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    part: str = "state_dict",
    what: str = "output",
) -> dict[str, Path]:
    """Convert an E4S ``Net3`` checkpoint into an encoder and a generator bundle, and a
    discriminator bundle when it holds ``D_state_dict``; returns ``{"encoder": path,
    "generator": path[, "discriminator": path]}``.

    ``out``: a folder or a path prefix (:func:`output_paths`). ``part``: ``"state_dict"`` (E4S's
    inference weights, default) or ``"state_dict_ema"``. ``what`` names ``out`` in messages.

    A file without ``latent_avg`` gets the generator's mean mapping output instead (E4S trains
    from the StyleGAN2's average latent; a warning on the ``segtalker.conversion`` logger says
    so). Outputs are checked before the source is read, both bundles are built and checked before
    either is written, and each file is written whole or not at all."""
    from ..models.bundles import save_component
    from ..models.encoder import MaskGuidedEncoder
    from ..models.stylegan import Generator

    if part not in ("state_dict", "state_dict_ema"):
        raise ValueError(f"part must be 'state_dict' or 'state_dict_ema', got {part!r}")
    src_path = ck.find_checkpoint(src)
    paths = output_paths(src_path, out)
    for component in COMPONENTS:
        check_output_path(paths[component], {"checkpoint": src_path}, what)
    ckpt = read_e4s(src_path, part)
    discriminator = _discriminator(ckpt)
    if discriminator is not None:
        check_output_path(paths[DISCRIMINATOR], {"checkpoint": src_path}, what)
    arch = ckpt.arch
    name = f"{src_path.name} {part!r}"
    ck.check_finite_weights(ckpt.state_dict, src_path)

    g_source = _subdict(ckpt.state_dict, "G.")
    g_config = generator_config(arch, name)
    dtype = g_source["input.input"].dtype
    placeholder = torch.zeros(arch.w_dim, dtype=dtype)
    g_weights = ros.generator_weights(g_source, arch.generator, placeholder, name)
    generator = ros._on_meta_with(Generator, g_config, g_weights,
                                  f"generator converted from {name}")
    if ckpt.latent_avg is None:
        log.warning(
            "%s has no latent_avg: using the mean of G's mapping(z) over %d z (seed %d), the "
            "average latent E4S was trained from, up to sampling error", src_path,
            MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED)
        rng = torch.Generator().manual_seed(MEAN_LATENT_SEED)
        with torch.no_grad():
            avg = generator.mean_latent(MEAN_LATENT_SAMPLES, rng).to(dtype)
        origin = f"estimated: mean of mapping(z), {MEAN_LATENT_SAMPLES} z, seed {MEAN_LATENT_SEED}"
    else:
        avg = latent_avg_row(ckpt.latent_avg, arch, src_path).to(dtype)
        origin = "stored in the source"
    generator.latent_avg = avg

    e_config = encoder_config(arch)
    encoder = ros._on_meta_with(MaskGuidedEncoder, e_config,
                                encoder_weights(ckpt.state_dict, arch, avg),
                                f"encoder converted from {name}")
    extra = {"converted_from": src_path.name, "source": SOURCE, "source_part": part,
             "latent_avg": origin, "label_order": LABEL_ORDER}
    written = {"generator": paths["generator"], "encoder": paths["encoder"]}
    g_bundle = save_component(paths["generator"], generator, g_config,
                              extra={**extra, "mask_resize_in_e4s": "legacy nearest"})
    save_component(paths["encoder"], encoder, e_config, generator=g_bundle, extra=extra)
    if discriminator is not None:
        d_model, d_config = discriminator
        save_component(paths[DISCRIMINATOR], d_model, d_config,
                       extra={"converted_from": src_path.name, "source": SOURCE,
                              "source_part": DISCRIMINATOR_KEY})
        written[DISCRIMINATOR] = paths[DISCRIMINATOR]
    return written


__all__ = [
    "E4SArchitecture",
    "E4SCheckpoint",
    "NotE4SError",
    "encoder_layout",
    "mlps_layout",
    "feature_dim",
    "net3_layout",
    "unit_positions",
    "infer_architecture",
    "read_e4s",
    "latent_avg_row",
    "encoder_weights",
    "encoder_config",
    "generator_config",
    "describe_checkpoint",
    "describe_e4s",
    "output_paths",
    "convert_e4s",
]
