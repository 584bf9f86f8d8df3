"""SGI stage: the mask-guided encoder + generator (segmentation-guided GAN injection), trained
as an autoencoder of face crops with a StyleGAN2 discriminator (after E4S's RGI training).

Per sample (:class:`.datasets.FaceImageDataset`: an image and its 12-region map) the encoder
turns the image into per-region W+ codes, the generator renders them inside the same map, and
the result is compared with the image. Losses, each weighted in ``loss.*``:

* reconstruction: ``l2`` (E4S: 1.0) and ``l1`` (0), background pixels weighted by
  ``background_weight``;
* ``perceptual`` (E4S: 0.8): VGG16-LPIPS when ``loss.lpips_weights`` (+ ``loss.vgg16_weights``)
  name the user's files (:mod:`.feature_losses`), otherwise the documented weight-free
  alternative, MS-SSIM + Laplacian-pyramid L1 (:class:`.image_losses.WeightFreePerceptual`);
* ``identity`` (E4S: 0.1): ArcFace IR-SE-50 cosine, only when ``loss.arcface_weights`` is set
  (no weight-free stand-in: it is skipped, with a log line);
* ``adversarial`` (E4S: 0.01): non-saturating GAN loss against the discriminator, which trains
  with the logistic loss and lazy R1 (gamma 10 every 16 steps, its own D step, float32:
  :mod:`.gan_losses`), Adam adjusted for the lazy interval as StyleGAN2 does;
* ``style_mixing`` (probability, 0 = off as in E4S): a second fake whose W+ rows from a random
  crossover on come from another sample of the micro-batch; it has no target, so only the
  adversarial loss sees it (on both sides of the game);
* ``distill``: the image the *initial* generator renders from the same codes, noise and map in
  its own mask-guided mode (a frozen copy). With an E4S generator (``"reference"`` layers) as
  ``init_from`` and ``model.mask_guided_impl: fast`` this distils E4S's per-region layers into
  the one-conv fast layer; a reconstruction target that keeps its look where the data is thin.

The mapping network is frozen (codes come from the encoder, never from z); with
``train_generator: false`` the whole generator is (only the encoder learns, pSp-style).

EMA: a moving average of encoder *and* generator (:class:`.ema.ModelEMA`, half-life
``ema.half_life_images``, StyleGAN2's 10 k images; ADA's ramp with ``ema.rampup``), so the
exported encoder writes codes for the exported generator. Evaluation, samples and export use it.

Starting weights (``init_from`` = ``--init-from``): a *generator* bundle -- one the pack
converted (rosinality's StyleGAN2, E4S's RGI generator: ``python -m segtalker_core convert``) or
one this stage exported. Its architecture is read from the bundle (the ``model.*`` generator
fields are then not used; its resolution must be ``model.resolution``). ``init_encoder`` and
``init_discriminator`` name the other bundles; with ``init_siblings`` a ``NAME_generator
.safetensors`` brings ``NAME_encoder`` / ``NAME_discriminator`` beside it when they exist (the
converters' and this stage's export names), with a log line. A bundle of another component or
resolution is an error naming both (:func:`.stage.check_init_bundle`). On ``--resume`` and for
export the bundles' headers are read again for the architecture (their weights come from the
checkpoint), so they must still exist.

Export (``export RUN OUT.safetensors``) writes ``OUT_encoder``, ``OUT_generator`` (the EMA
weights, the nodes' pair) and ``OUT_discriminator`` (for a later fine-tune) ``.safetensors``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import Discriminator, DiscriminatorConfig
from ..models.encoder import EncoderConfig, MaskGuidedEncoder
from ..models.stylegan import Generator, GeneratorConfig
from . import previews
from .config import ConfigError, OptimConfig, StageConfig
from .ema import HALF_LIFE_IMAGES, ModelEMA, ema_beta
from .gan_losses import LazyR1, discriminator_loss, generator_loss, lazy_adam
from .image_losses import WeightFreePerceptual, l1_loss, l2_loss, psnr
from .stage import Batch, Provenance, Stage, StepContext, TrainedPart, check_init_bundle

log = logging.getLogger("segtalker.train")

GENERATOR = "generator"  # trained part: encoder + generator (SGIAutoencoder)
DISCRIMINATOR = "discriminator"
EXPORTED = ("encoder", "generator", "discriminator")
NUM_REGIONS = 12


# ------------------------------------------------------------------------------------ config

@dataclass
class SGIModelConfig:
    """Architecture of a run started from scratch (the generator's is read from ``init_from``
    when one is given). Widths follow StyleGAN2: ``channels(res) = min(channel_base *
    channel_multiplier // res, channel_max)``."""

    resolution: int = 256  # generator output, discriminator input, dataset crops
    w_dim: int = 512  # style size
    n_mlp: int = 8  # mapping layers (frozen here; kept so the bundle renders unconditionally)
    channel_base: int = 16384
    channel_multiplier: int = 2  # 2: StyleGAN2 config-f widths
    channel_max: int = 512
    mask_guided_layers: int | None = None  # K per-region W+ rows (None: min(13, L - 3))
    mask_guided_impl: str = "fast"  # "fast" (one conv) | "reference" (E4S, one conv per region)
    global_style: str = "area"  # style of rows >= K (GeneratorConfig.global_style)
    encoder_input_size: int = 256  # the encoder resizes images to this
    encoder_stem_channels: int = 64
    encoder_stage_channels: tuple[int, ...] = (64, 256, 512, 512)
    encoder_stage_blocks: tuple[int, ...] = (1, 2, 2, 1)
    encoder_mlp_hidden: int = 512
    d_channel_base: int = 16384
    d_channel_multiplier: int = 2
    d_channel_max: int = 512
    d_regions: bool = False  # D also sees the one-hot region map (a conditional D; E4S: no)

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(
            size=self.resolution, w_dim=self.w_dim, n_mlp=self.n_mlp,
            channel_base=self.channel_base, channel_multiplier=self.channel_multiplier,
            channel_max=self.channel_max, num_regions=NUM_REGIONS,
            mask_guided_layers=self.mask_guided_layers, mask_guided_impl=self.mask_guided_impl,
            global_style=self.global_style)

    def encoder(self, generator: GeneratorConfig) -> EncoderConfig:
        return EncoderConfig.for_generator(
            generator, input_size=self.encoder_input_size,
            stem_channels=self.encoder_stem_channels,
            stage_channels=self.encoder_stage_channels,
            stage_blocks=self.encoder_stage_blocks, mlp_hidden=self.encoder_mlp_hidden)

    def discriminator(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            size=self.resolution, in_channels=3 + (NUM_REGIONS if self.d_regions else 0),
            channel_base=self.d_channel_base, channel_multiplier=self.d_channel_multiplier,
            channel_max=self.d_channel_max)


@dataclass
class SGILossConfig:
    """Loss weights (E4S's by default) and the files of the feature losses."""

    l2: float = 1.0
    l1: float = 0.0
    background_weight: float = 1.0  # reconstruction weight of background pixels (region 0)
    perceptual: float = 0.8  # LPIPS with its files, else the weight-free MS-SSIM + Laplacian L1
    lpips_weights: str = ""  # lpips's weights/v0.1/vgg.pth (or a whole lpips.LPIPS state dict)
    vgg16_weights: str = ""  # torchvision's vgg16-397923af.pth (with the linear layers' file)
    weight_free_ms_ssim: float = 1.0  # the weight-free alternative's two terms
    weight_free_laplacian: float = 1.0
    identity: float = 0.1  # ArcFace cosine; only with arcface_weights
    arcface_weights: str = ""  # TreB1eN's model_ir_se50.pth
    adversarial: float = 0.01  # non-saturating G loss (0: no discriminator at all)
    r1_gamma: float = 10.0
    r1_interval: int = 16
    style_mixing: float = 0.0  # probability of a mixed fake per micro-batch (0: off)
    distill: float = 0.0  # L1 + perceptual towards the initial generator's image (init_from)

    def __post_init__(self) -> None:
        for name in ("l2", "l1", "background_weight", "perceptual", "weight_free_ms_ssim",
                     "weight_free_laplacian", "identity", "adversarial", "r1_gamma", "distill"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.r1_interval < 1:
            raise ConfigError(f"loss.r1_interval must be >= 1, got {self.r1_interval}")
        if not 0 <= self.style_mixing <= 1:
            raise ConfigError(f"loss.style_mixing is a probability in [0, 1], got "
                              f"{self.style_mixing}")
        if self.vgg16_weights and not self.lpips_weights:
            raise ConfigError("loss.vgg16_weights is set but loss.lpips_weights is not: LPIPS "
                              "needs its linear layers (lpips's vgg.pth) too")


@dataclass
class EMAConfig:
    """Moving average of encoder + generator (:mod:`.ema`)."""

    half_life_images: float = HALF_LIFE_IMAGES  # StyleGAN2: 10 k images
    rampup: float | None = None  # ADA's ema_rampup (e.g. 0.05); None: none
    beta: float | None = None  # a fixed decay per step instead of the half-life

    def __post_init__(self) -> None:
        if self.half_life_images < 0:
            raise ConfigError(f"ema.half_life_images must be >= 0, got {self.half_life_images}")
        if self.beta is not None and not 0 <= self.beta <= 1:
            raise ConfigError(f"ema.beta must be in [0, 1], got {self.beta}")
        if self.rampup is not None and self.rampup <= 0:
            raise ConfigError(f"ema.rampup must be > 0 (or none), got {self.rampup}")


def _d_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, betas=(0.0, 0.99))


@dataclass
class SGIStageConfig(StageConfig):
    model: SGIModelConfig = field(default_factory=SGIModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)  # encoder + generator (E4S: 1e-4)
    d_optim: OptimConfig = field(default_factory=_d_optim)  # before the lazy-R1 adjustment
    loss: SGILossConfig = field(default_factory=SGILossConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    init_encoder: str = ""  # encoder bundle to start from
    init_discriminator: str = ""  # discriminator bundle to start from
    init_siblings: bool = True  # NAME_generator -> NAME_encoder / NAME_discriminator beside it
    train_generator: bool = True  # false: only the encoder learns
    frame_step: int = 1  # every n-th face frame of the dataset's clips

    def __post_init__(self) -> None:
        if self.frame_step < 1:
            raise ConfigError(f"frame_step must be >= 1, got {self.frame_step}")


# ------------------------------------------------------------------------------------ networks

class SGIAutoencoder(nn.Module):
    """Encoder + generator as one trained part: ``forward(image, regions)`` ->
    ``(fake [B, 3, S, S], mixed fake or None, codes [B, R, L, w_dim], valid [B, R])``."""

    def __init__(self, encoder: MaskGuidedEncoder, generator: Generator):
        super().__init__()
        self.encoder = encoder
        self.generator = generator

    def forward(
        self,
        image: torch.Tensor,  # [B, 3, S, S] in [-1, 1]
        regions: torch.Tensor,  # [B, S, S] int64 12-region labels
        noise: list[torch.Tensor] | None = None,  # Generator.make_noise(); None: fresh
        mix_from: int = 0,  # > 0: also render rows >= mix_from from another sample's codes
        noise_generator: torch.Generator | None = None,  # RNG for fresh noise
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        codes, valid = self.encoder(image, regions)
        fake = self.generator(codes, regions, noise=noise, valid=valid,
                              noise_generator=noise_generator)
        mixed = None
        if mix_from > 0:
            other = codes.roll(1, dims=0)
            mixed_codes = torch.cat([codes[:, :, :mix_from], other[:, :, mix_from:]], dim=2)
            mixed = self.generator(mixed_codes, regions, valid=valid)
        return fake, mixed, codes, valid


def region_onehot(regions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, S, S]`` labels -> ``[B, 12, S, S]`` one-hot."""
    return F.one_hot(regions.long(), NUM_REGIONS).permute(0, 3, 1, 2).to(dtype)


def sibling(path: str, component: str) -> Path | None:
    """``NAME_<component>.safetensors`` beside a ``NAME_generator.safetensors``, if it exists."""
    p = Path(path)
    suffix = "_generator.safetensors"
    if not p.name.lower().endswith(suffix):
        return None
    candidate = p.with_name(p.name[: -len(suffix)] + f"_{component}.safetensors")
    return candidate if candidate.is_file() else None


# ------------------------------------------------------------------------------------ stage

class SGIStage(Stage):
    name = "sgi"
    config_class = SGIStageConfig
    components = EXPORTED

    # -- building ------------------------------------------------------------------------------

    def _init_paths(self) -> dict[str, str]:
        """Bundles to start each network from (empty: none)."""
        c = self.config
        paths = {"generator": c.init_from, "encoder": c.init_encoder,
                 "discriminator": c.init_discriminator}
        if c.init_from and c.init_siblings:
            for component in ("encoder", "discriminator"):
                found = sibling(c.init_from, component)
                if not paths[component] and found is not None:
                    paths[component] = str(found)
                    if self.runtime.is_main and self.init_weights:
                        log.info("sgi: starting the %s from %s (beside --init-from; "
                                 "--set init_siblings=false to start it fresh)", component, found)
        return paths

    def _bundle_model(self, path: str, component: str, resolution: int | None) -> nn.Module:
        """A module of ``component`` with the bundle's architecture (and weights when this run
        initialises from it; else they come from the checkpoint)."""
        from ..models import bundles

        if component == "generator":
            check_init_bundle(path, component, int(resolution or 0), self.name)
        else:
            check_init_bundle(path, component, resolution, self.name, option=f"init_{component}")
        if self.init_weights:
            module, _ = bundles.load_component(path, component, device=self.runtime.device)
            return module.train()
        from .. import checkpoints as ck

        config = bundles.model_config_from_architecture(component, ck.read_config(path)
                                                        .architecture)
        return bundles.build_component(component, config).to(self.runtime.device)

    def _generator(self, path: str) -> Generator:
        c = self.config.model
        if not path:
            return Generator(c.generator()).to(self.runtime.device)
        generator = self._bundle_model(path, "generator", c.resolution)
        if self.config.loss.distill > 0 and not self.exporting:
            # The teacher is the bundle as it is, in its own mask-guided mode; frozen, so not
            # checkpointed: on --resume it is read from the bundle again.
            if self.init_weights:
                self.teacher = copy.deepcopy(generator)
            else:
                from ..models import bundles

                self.teacher, _ = bundles.load_component(path, "generator",
                                                         device=self.runtime.device)
            self.teacher.eval().requires_grad_(False)
        generator.set_mask_guided_impl(c.mask_guided_impl)
        return generator

    def _encoder(self, path: str, generator: Generator) -> MaskGuidedEncoder:
        g = generator.config
        if not path:
            encoder = MaskGuidedEncoder(self.config.model.encoder(g)).to(self.runtime.device)
            if self.init_weights:
                with torch.no_grad():
                    avg = (generator.average_latent() if g.stores_latent_avg
                           else generator.mean_latent(4096, torch.Generator(
                               device=self.runtime.device).manual_seed(0)))
                encoder.set_latent_avg(avg.float())
            return encoder
        encoder = self._bundle_model(path, "encoder", None)
        e = encoder.config
        want = (g.w_dim, g.n_latent, max(1, g.num_mask_guided), g.num_regions)
        have = (e.w_dim, e.n_latent, e.n_styles, e.num_regions)
        if want != have:
            raise ValueError(
                f"init_encoder {Path(path).name} writes codes of w_dim {have[0]}, {have[1]} rows, "
                f"{have[2]} per-region rows, {have[3]} regions, but the generator "
                f"({Path(self.config.init_from).name if self.config.init_from else 'new'}) reads "
                f"w_dim {want[0]}, {want[1]} rows, {want[2]} per-region rows, {want[3]} regions; "
                f"give the encoder trained for this generator (or none)")
        return encoder

    def _discriminator(self, path: str) -> Discriminator:
        c = self.config.model
        if not path:
            return Discriminator(c.discriminator()).to(self.runtime.device)
        d = self._bundle_model(path, "discriminator", c.resolution)
        want = c.discriminator().in_channels
        if d.config.in_channels != want:
            raise ValueError(
                f"init_discriminator {Path(path).name} reads {d.config.in_channels} input "
                f"channels, but this run's D reads {want} (model.d_regions="
                f"{str(c.d_regions).lower()}); set model.d_regions="
                f"{str(d.config.in_channels > 3).lower()} or start D fresh")
        return d

    def build(self) -> dict[str, TrainedPart]:
        c = self.config
        self.teacher: Generator | None = None
        paths = self._init_paths()
        generator = self._generator(paths["generator"])
        encoder = self._encoder(paths["encoder"], generator)
        generator.mapping.requires_grad_(False)  # codes come from the encoder, never from z
        if not c.train_generator:
            generator.requires_grad_(False)
        if c.loss.distill > 0 and self.teacher is None and not self.exporting:
            raise ConfigError("loss.distill > 0 distils the initial generator: it needs "
                              "--init-from GENERATOR_BUNDLE")
        self.autoencoder = SGIAutoencoder(encoder, generator).train()
        self.ema = ModelEMA(self.autoencoder)
        self.r1 = LazyR1(c.loss.r1_gamma, c.loss.r1_interval)
        params = [p for p in self.autoencoder.parameters() if p.requires_grad]
        g_opt = torch.optim.Adam(params, lr=c.optim.lr, betas=c.optim.betas,
                                 weight_decay=c.optim.weight_decay)
        parts = {GENERATOR: TrainedPart(self.autoencoder, g_opt)}
        self.discriminator = None
        if c.loss.adversarial > 0:
            self.discriminator = self._discriminator(paths["discriminator"]).train()
            lr, betas = lazy_adam(c.d_optim.lr, c.d_optim.betas,
                                  c.loss.r1_interval if c.loss.r1_gamma > 0 else 1)
            d_opt = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas,
                                     weight_decay=c.d_optim.weight_decay)
            # StyleGAN2's D has no buffers worth broadcasting (and must not resync per forward).
            parts[DISCRIMINATOR] = TrainedPart(self.discriminator, d_opt, broadcast_buffers=False)
        self.perceptual, self.identity = (None, None) if self.exporting else self._feature_losses()
        return parts

    def _feature_losses(self) -> tuple[Any, Any]:
        c = self.config.loss
        device = self.runtime.device
        perceptual = None
        if c.perceptual > 0 and c.lpips_weights:
            from .feature_losses import LPIPSLoss

            perceptual = LPIPSLoss.from_files(c.lpips_weights, c.vgg16_weights or None).to(device)
        elif c.perceptual > 0:
            perceptual = WeightFreePerceptual(c.weight_free_ms_ssim, c.weight_free_laplacian)
            if self.runtime.is_main and self.init_weights:
                log.info("sgi: perceptual loss without weight files: MS-SSIM + Laplacian-pyramid "
                         "L1 (set loss.lpips_weights and loss.vgg16_weights for LPIPS)")
        identity = None
        if c.identity > 0 and c.arcface_weights:
            from .feature_losses import IdentityLoss

            identity = IdentityLoss.from_file(c.arcface_weights).to(device)
        elif c.identity > 0 and self.runtime.is_main and self.init_weights:
            log.info("sgi: no identity loss (loss.arcface_weights is not set; it takes "
                     "TreB1eN's model_ir_se50.pth)")
        return perceptual, identity

    @property
    def resolution(self) -> int:
        return int(self.config.model.resolution)

    # -- data ----------------------------------------------------------------------------------

    def _dataset(self, split: str):
        from .datasets import FaceImageDataset

        return FaceImageDataset(self.data_root, split=split, resolution=self.resolution,
                                frame_step=self.config.frame_step)

    def datasets(self):
        return self.train_and_val(self._dataset)

    # -- losses --------------------------------------------------------------------------------

    def _d_input(self, image: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        if not self.config.model.d_regions:
            return image
        return torch.cat([image, region_onehot(regions, image.dtype)], dim=1)

    def _mix_from(self) -> int:
        """A crossover row for style mixing this micro-batch, or 0."""
        p = self.config.loss.style_mixing
        if p <= 0 or float(torch.rand(())) >= p:
            return 0
        n = self.autoencoder.generator.n_latent
        return int(torch.randint(1, n, ()))

    def reconstruction_terms(self, fake: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """The unweighted reconstruction-side terms of ``fake`` against the batch's images."""
        c = self.config.loss
        image = batch["image"]
        mask = None
        if c.background_weight != 1.0:
            mask = torch.where(batch["regions"] == 0, c.background_weight, 1.0)
        terms: dict[str, torch.Tensor] = {}
        if c.l2:
            terms["l2"] = l2_loss(fake, image, mask)
        if c.l1:
            terms["l1"] = l1_loss(fake, image, mask)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(fake, image)
        if self.identity is not None:
            terms["identity"] = self.identity(fake, image)
        return terms

    def _generator_loss(self, ctx: StepContext, batch: Batch, step: int
                        ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config.loss
        noise = None
        if self.teacher is not None:
            noise = self.autoencoder.generator.make_noise(batch["image"].shape[0])
        fake, mixed, codes, valid = ctx.module(GENERATOR)(
            batch["image"], batch["regions"], noise=noise, mix_from=self._mix_from())
        terms = self.reconstruction_terms(fake, batch)
        weights = {"l2": c.l2, "l1": c.l1, "perceptual": c.perceptual, "identity": c.identity}
        loss = fake.new_zeros((), dtype=torch.float32)
        for k, v in terms.items():
            loss = loss + weights[k] * v
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(codes.detach(), batch["regions"], noise=noise, valid=valid)
            distill = l1_loss(fake, target)
            if self.perceptual is not None:
                distill = distill + self.perceptual(fake, target)
            terms["distill"] = distill
            loss = loss + c.distill * distill
        if self.discriminator is not None:
            fakes = fake if mixed is None else torch.cat([fake, mixed])
            regions = batch["regions"] if mixed is None else batch["regions"].repeat(2, 1, 1)
            adv = generator_loss(ctx.raw(DISCRIMINATOR)(self._d_input(fakes, regions)))
            terms["g_adv"] = adv
            loss = loss + c.adversarial * adv
        with torch.no_grad():
            terms["psnr"] = psnr(fake.detach(), batch["image"]).mean()
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    # -- the step ------------------------------------------------------------------------------

    def optim_config(self, part: str) -> OptimConfig:
        """D's warm-up and decay follow its own section (``d_optim``), G's follow ``optim``."""
        return self.config.d_optim if part == DISCRIMINATOR else self.config.optim

    def train_step(self, ctx: StepContext, micro_batches: list[Batch], step: int
                   ) -> dict[str, float]:
        out: dict[str, float] = {}
        n = len(micro_batches)
        if self.discriminator is not None:
            out.update(self._discriminator_step(ctx, micro_batches, step))
        for i, batch in enumerate(micro_batches):
            with ctx.sync(GENERATOR, i):
                with ctx.autocast():
                    loss, terms = self._generator_loss(ctx, batch, step)
                ctx.backward(GENERATOR, loss / n)
            for k, v in {"g_loss": float(loss.detach()), **terms}.items():
                out[k] = out.get(k, 0.0) + v / n
        norm = ctx.step(GENERATOR, step)
        if norm == norm:  # not NaN: clipping is on
            out["g_grad_norm"] = norm
        beta = self.ema_beta(step)
        self.ema.update(self.autoencoder, beta)
        out["ema_beta"] = beta
        return out

    def _discriminator_step(self, ctx: StepContext, micro_batches: list[Batch], step: int
                            ) -> dict[str, float]:
        out: dict[str, float] = {}
        n = len(micro_batches)
        ctx.requires_grad(DISCRIMINATOR, True)
        for i, batch in enumerate(micro_batches):
            with ctx.sync(DISCRIMINATOR, i):
                with ctx.autocast():
                    with torch.no_grad():
                        fake, mixed, _, _ = ctx.raw(GENERATOR)(
                            batch["image"], batch["regions"], mix_from=self._mix_from())
                    fakes = fake if mixed is None else torch.cat([fake, mixed])
                    regions = batch["regions"]
                    if mixed is not None:
                        regions = regions.repeat(2, 1, 1)
                    d = ctx.module(DISCRIMINATOR)
                    real_logits = d(self._d_input(batch["image"], batch["regions"]))
                    fake_logits = d(self._d_input(fakes.detach(), regions))
                    loss = discriminator_loss(real_logits, fake_logits)
                ctx.backward(DISCRIMINATOR, loss / n)
            out["d_loss"] = out.get("d_loss", 0.0) + float(loss.detach()) / n
            out["d_real"] = out.get("d_real", 0.0) + float(real_logits.detach().float().mean()) / n
            out["d_fake"] = out.get("d_fake", 0.0) + float(fake_logits.detach().float().mean()) / n
        ctx.step(DISCRIMINATOR, step)
        if self.r1.due(step):
            for i, batch in enumerate(micro_batches):
                regions = batch["regions"]
                d = ctx.module(DISCRIMINATOR)

                def critic(x: torch.Tensor, d=d, regions=regions) -> torch.Tensor:
                    return d(self._d_input(x, regions))  # R1 on the image channels only

                with ctx.sync(DISCRIMINATOR, i):
                    loss = self.r1.loss(critic, batch["image"])  # float32, autocast off inside
                    ctx.backward(DISCRIMINATOR, loss / n)
                out["r1"] = out.get("r1", 0.0) + float(loss.detach()) / self.r1.weight / n
            ctx.step(DISCRIMINATOR, step)
        ctx.requires_grad(DISCRIMINATOR, False)
        return out

    def ema_beta(self, step: int) -> float:
        e = self.config.ema
        if e.beta is not None:
            return float(e.beta)
        batch = self.config.loop.batch_size
        return ema_beta(batch, e.half_life_images, e.rampup, images_seen=(step + 1) * batch)

    # -- evaluation and samples ----------------------------------------------------------------

    def _reconstruct(self, batch: Batch) -> torch.Tensor:
        """EMA reconstruction with fixed noise (seed 0), so evaluations compare."""
        rng = torch.Generator(device=batch["image"].device).manual_seed(0)
        fake, _, _, _ = self.ema.module(batch["image"], batch["regions"], noise_generator=rng)
        return fake

    def evaluate(self, ctx: StepContext, batches: list[Batch]) -> dict[str, float]:
        if not batches:
            return {}
        values: dict[str, float] = {"psnr": 0.0, "l1": 0.0}
        with ctx.autocast():
            for batch in batches:
                fake = self._reconstruct(batch)
                values["psnr"] += float(psnr(fake, batch["image"]).mean()) / len(batches)
                values["l1"] += float(l1_loss(fake.clamp(-1, 1), batch["image"])) / len(batches)
        return values

    def samples(self, ctx: StepContext, batch: Batch) -> dict[str, np.ndarray]:
        count = min(4, batch["image"].shape[0])
        with torch.no_grad(), ctx.autocast():
            fake = self._reconstruct({k: v[:count] for k, v in batch.items()})
        rows = [[previews.image_tile(batch["image"][i]),
                 previews.colour_labels(batch["regions"][i]),
                 previews.image_tile(fake[i])] for i in range(count)]
        return {"reconstruction": previews.grid(rows)}

    # -- state and export ----------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state) - {"ema"})
        if unknown:
            raise ValueError(f"the sgi checkpoint holds unknown extra state {unknown}")
        if "ema" in state:
            self.ema.load_state_dict(state["ema"])

    def export(self, path: Path, provenance: Provenance) -> list[Path]:
        from ..conversion.outputs import bundle_paths
        from ..models.bundles import save_component

        paths = bundle_paths(path, path, EXPORTED)
        extra = provenance.extra()
        ema = self.ema.module
        generator = ema.generator
        written = []
        g_bundle = save_component(paths["generator"], generator, generator.config, extra=extra)
        written.append(paths["generator"])
        save_component(paths["encoder"], ema.encoder, ema.encoder.config, generator=g_bundle,
                       extra=extra)
        written.append(paths["encoder"])
        if self.discriminator is not None:
            save_component(paths["discriminator"], self.discriminator, self.discriminator.config,
                           extra=extra)
            written.append(paths["discriminator"])
        return written


STAGE = SGIStage

__all__ = ["SGIStage", "SGIStageConfig", "SGIModelConfig", "SGILossConfig", "EMAConfig",
           "SGIAutoencoder", "STAGE"]
