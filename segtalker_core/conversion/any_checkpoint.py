"""One entry point for ``python -m segtalker_core convert`` / ``describe``: whatever the file is.

The layouts are told apart by their tensor names, most specific first:

0. an E4S RGI checkpoint (``iteration_300000.pt``: ``state_dict`` with ``encoder.*``, ``MLPs.*``,
   ``G.*``) -> an encoder bundle and a generator bundle, and a discriminator bundle when it holds
   ``D_state_dict`` (:mod:`.e4s`);
1. a rosinality StyleGAN2 checkpoint (``g_ema`` / ``g`` / ``d`` / ``latent_avg``, e.g.
   ``stylegan2-ffhq-config-f.pt``) -> a generator bundle and a discriminator bundle
   (:mod:`.rosinality`);
2. anything else -> one bundle of the pack's own components (a BiSeNet ``79999_iter.pth``, a
   TSG / Seg-SyncNet / encoder / generator state dict; :func:`..checkpoints.convert_pth_to_safetensors`).

``component`` forces the second route (a plain state dict of one of the pack's components). Every
route reads with ``torch.load(weights_only=True)``, checks names, shapes and finiteness before
writing, never writes over its source, and writes each file whole or not at all.
"""
from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike


def default_output(src: PathLike) -> Path:
    """Where ``convert SRC`` writes without ``-o``: next to the source, as ``SRC-stem`` (a
    one-bundle conversion adds ``.safetensors``; a multi-bundle one adds ``_<component>.safetensors``)."""
    path = Path(os.fspath(src))
    return path.with_name(path.stem)


def convert_checkpoint(src: PathLike, output: PathLike | None = None, component: str | None = None,
                       what: str = "-o") -> dict[str, Path]:
    """Convert ``src`` into SegTalker bundles; returns ``{component: path written}``.

    ``output``: for a one-bundle file the ``.safetensors`` path (default: the source's name with
    that suffix); for an E4S or rosinality file a folder or a prefix (default: the source's stem
    next to it, giving e.g. ``STEM_encoder.safetensors`` and ``STEM_generator.safetensors``).
    """
    from .. import checkpoints
    from .e4s import NotE4SError, convert_e4s
    from .rosinality import NotRosinalityError, convert_rosinality

    if component is None:
        prefix = output if output is not None else default_output(src)
        for convert, not_this_layout in ((convert_e4s, NotE4SError),
                                         (convert_rosinality, NotRosinalityError)):
            try:
                return convert(src, prefix, what=what)
            except not_this_layout:
                pass  # another layout: try the next, then the pack's own components
    dst = Path(os.fspath(output)) if output is not None else default_output(src).with_suffix(".safetensors")
    config = checkpoints.convert_pth_to_safetensors(src, dst, component=component, what=what)
    return {config.component: dst}


def describe_checkpoint(path: PathLike) -> str:
    """One line saying what ``path`` is: a SegTalker bundle (component, resolution, parameters),
    an E4S RGI or rosinality StyleGAN2 checkpoint, or a legacy ``.pth`` of one of the pack's components."""
    from .. import checkpoints
    from .e4s import NotE4SError, describe_e4s
    from .rosinality import NotRosinalityError, describe_rosinality

    if Path(os.fspath(path)).suffix.lower() in checkpoints.LEGACY_SUFFIXES:
        for describe, not_this_layout in ((describe_e4s, NotE4SError),
                                          (describe_rosinality, NotRosinalityError)):
            try:
                return describe(path)
            except not_this_layout:
                pass
    from ..models.bundles import summary

    return summary(path)
