"""Tiny random-initialised bundles: the learned path end to end, without trained weights.

``write_random_bundles(out_dir)`` writes narrow TSG, Seg-SyncNet, mask-guided encoder and
generator bundles with matching configs (the encoder is paired with the generator, the encoder
carries the generator's average latent). Their output is noise-like; they exist so tests and the
real-ComfyUI test can exercise loading, shapes, devices and the whole graph in seconds on a CPU.

From the command line: ``python -m segtalker_core random-bundle OUT_DIR [--resolution 64] [--seed 0]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .audio_encoder import AudioEncoderConfig
from .bundles import generator_fingerprint, save_component

RESOLUTIONS = (64, 128, 256, 512)  # powers of two both TSG and generator accept


def _tiny_audio() -> AudioEncoderConfig:
    return AudioEncoderConfig(widths=(8, 8, 16, 16, 32), residual_blocks=(1, 1, 1, 1))


def write_random_bundles(out_dir: str | os.PathLike[str], resolution: int = 64,
                         seed: int = 0) -> dict[str, Path]:
    """Write ``tsg``, ``syncnet``, ``generator`` and ``encoder`` bundles into ``out_dir``.

    Returns ``{component: path}``. Same ``seed`` and ``resolution`` -> identical files. The global
    torch RNG is left untouched. Each file is written by :func:`checkpoints.save` (whole or not at
    all, mode from the umask).
    """
    # Local imports: the StyleGAN side is heavier and not needed to import this module.
    from .encoder import EncoderConfig, MaskGuidedEncoder
    from .stylegan import Generator, GeneratorConfig
    from .syncnet import SegSyncNet, SyncNetConfig
    from .tsg import TSG, TSGConfig

    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS} (64 for tests), got "
                         f"{resolution!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)

        tsg_config = TSGConfig(resolution=resolution, base_channels=8, max_channels=32,
                               film_levels=1, audio=_tiny_audio())
        paths["tsg"] = out / f"tsg_random_{resolution}.safetensors"
        save_component(paths["tsg"], TSG(tsg_config), tsg_config)

        sync_config = SyncNetConfig(resolution=resolution, visual_widths=(8, 16, 16, 32),
                                    embed_dim=32, audio=_tiny_audio())
        paths["syncnet"] = out / f"syncnet_random_{resolution}.safetensors"
        save_component(paths["syncnet"], SegSyncNet(sync_config), sync_config)

        gen_config = GeneratorConfig(size=resolution, w_dim=32, n_mlp=2, channel_base=512,
                                     channel_multiplier=1, channel_max=32)
        generator = Generator(gen_config)
        paths["generator"] = out / f"generator_random_{resolution}.safetensors"
        gen_bundle = save_component(paths["generator"], generator, gen_config,
                                    generator_id=f"random-r{resolution}-s{seed}")

        enc_config = EncoderConfig.for_generator(
            gen_config, input_size=resolution, stem_channels=8, stage_channels=(8, 16, 16, 32),
            stage_blocks=(1, 1, 1, 1), mlp_hidden=32)
        encoder = MaskGuidedEncoder(enc_config)
        encoder.set_latent_avg(generator.mean_latent(256))
        paths["encoder"] = out / f"encoder_random_{resolution}.safetensors"
        save_component(paths["encoder"], encoder, enc_config,
                       generator=generator_fingerprint(gen_bundle))
    return paths

