"""Per-face refinement of learned style codes against the source crop (E4S's optional optimisation).

E4S (``scripts/optimization.py``) inverts a face with its encoder, then optimises for a few hundred
Adam steps (lr 1e-2, 200 by default) so that the generator, drawing the face's own segmentation,
reproduces the face better than the encoder's one-shot guess. This module does the same for the
pack's mask-guided encoder and generator (:func:`refine_codes`); :func:`.learned.encode_style_learned`
calls it when asked (``talk --optimize-steps N``; off by default).

What is optimised (``RefinementConfig.space``):

* ``"features"`` (default, E4S's choice): the pooled per-region style vectors ``[1, R, F]`` that
  the encoder's MLP maps to W+ codes (:meth:`MaskGuidedEncoder.codes_from_features`). The MLP
  keeps the codes in the part of W+ the generator was trained on; few values move (12 x 1280).
* ``"codes"``: the W+ codes ``[1, R, L, w]`` themselves (more freedom: fits the crop more
  closely, and drifts off the trained space sooner).

The losses, offline (no weights downloaded). E4S uses L2 1.0 + LPIPS 0.8 + ArcFace identity 0.1
+ face parsing 0.1; LPIPS and ArcFace need backbone weights that cannot be fetched, so by default:

* ``l2``: mean squared error over the face (every region but the background, which synthesis
  takes from the source anyway; ``include_background`` puts it in), images in [-1, 1];
* ``structure``: 1 - masked SSIM, averaged over 3 scales (full, 1/2, 1/4): weight-free and, like
  LPIPS, sensitive to local contrast and texture that L2 averages away. It stands in for LPIPS
  (same weight, 0.8); it is not LPIPS, and a texture LPIPS would call wrong may pass it;
* ``parsing`` (only with a BiSeNet parser): cross-entropy of the parser's logits on the render
  against the parser's own labels of the source crop, so a refinement that lowers the pixel
  error cannot move a lip or an eyebrow; E4S's weight 0.1. The BiSeNet is differentiable; the
  built-in parser is not, and then the term is left out (logged).

With weight files the user has (:mod:`.train.feature_losses`: ``LPIPSLoss.from_files``,
``IdentityLoss.from_file``), E4S's own terms join: ``lpips`` (0.8, at 3 scales as E4S, *in place
of* ``structure``) and ``identity`` (0.1, 1 - ArcFace cosine). Both see the render with the
background replaced by the source's, so they too count the face only (unless
``include_background``).

Where the losses are compared: at the smaller of the crop and the generator resolution (the
render is downscaled with antialiasing as :func:`.learned.synthesize_learned` does, or the crop
area-resized to the generator's size). The noise is drawn from ``seed`` as synthesis draws it,
so the codes are fitted to the noise the video is rendered with (E4S redraws it every step).

The result is the codes with the lowest loss seen (step 0 evaluates the encoder's codes), so the
refinement never returns codes that fit the crop worse than the encoder's by its own measure.

Precision: the optimised tensor and its gradient are float32; the forward passes run in the
models' compute dtype under autocast (:mod:`.precision`), the losses in float32; fp16 uses a
gradient scaler. The models' weights are never written: gradients are taken with respect to the
optimised tensor only (``torch.autograd.grad``), so no ``.grad`` lands on a cached model.

Cancelling: ``progress(step, steps)`` is called after each step; an exception it raises (ComfyUI's
interrupt) ends the run with nothing changed (the models untouched, no partial codes returned).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import precision

SPACES = ("features", "codes")
MAX_STEPS = 5000  # a few hundred is E4S's use; 5000 at 1024 px is about an hour on a GPU
SSIM_SCALES = 3
SSIM_WINDOW = 11  # Gaussian window of the SSIM statistics (sigma 1.5, Wang et al.)
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2  # stabilisers for images in [0, 1]
SSIM_C2 = 0.03 ** 2
# fp16's gradient scaler starts low: its default (2 ** 16) skips the first steps while it backs
# off from overflow, a visible share of a run of a few hundred steps.
FP16_INIT_SCALE = 2.0 ** 10


@dataclass(frozen=True)
class RefinementConfig:
    """How to refine. ``steps`` 0 is off (the encoder's codes unchanged)."""

    steps: int = 0  # Adam steps, 0..MAX_STEPS (E4S: 200)
    lr: float = 1e-2  # Adam learning rate (E4S's)
    space: str = "features"  # one of SPACES
    l2_weight: float = 1.0  # E4S's l2_lambda
    structure_weight: float = 0.8  # multi-scale SSIM, in the slot of E4S's LPIPS (0.8)
    parsing_weight: float = 0.1  # E4S's face_parsing_lambda; used only with a BiSeNet parser
    lpips_weight: float = 0.8  # E4S's lpips_lambda; used only with an LPIPS module (then no SSIM)
    identity_weight: float = 0.1  # E4S's id_lambda; used only with an ArcFace identity module
    include_background: bool = False  # fit the background region too (synthesis keeps the source's)
    seed: int = 0  # the noise, drawn as synthesize_learned draws it from its seed

    def __post_init__(self) -> None:
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_STEPS:
            raise ValueError(f"optimize steps must be a whole number in 0..{MAX_STEPS} (0: off; "
                             f"E4S uses 200), got {steps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"the refinement learning rate must be a positive number (E4S: 0.01), "
                             f"got {self.lr!r}")
        if self.space not in SPACES:
            raise ValueError(f"the refinement space must be one of {SPACES}, got {self.space!r}")
        weights = {"l2_weight": self.l2_weight, "structure_weight": self.structure_weight,
                   "parsing_weight": self.parsing_weight, "lpips_weight": self.lpips_weight,
                   "identity_weight": self.identity_weight}
        for name, value in weights.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.l2_weight == 0 and self.structure_weight == 0:
            raise ValueError("l2_weight and structure_weight are both 0: nothing ties the codes "
                             "to the source crop")

    @property
    def enabled(self) -> bool:
        return self.steps > 0


@dataclass
class ParsingTarget:
    """A differentiable face parser for the parsing term: ``logits(images [B, 3, S, S] in
    [-1, 1]) -> [B, C, S, S]`` and the labels ``[1, S, S]`` int64 it gives the source crop."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    labels: torch.Tensor


@dataclass
class RefinementResult:
    """Codes ``[1, R, L, w]`` float32 and the loss history (one value per step, float)."""

    codes: torch.Tensor
    losses: list[float] = field(default_factory=list)
    best_step: int = 0
    terms: tuple[str, ...] = ()

    @property
    def initial_loss(self) -> float:
        return self.losses[0]

    @property
    def best_loss(self) -> float:
        return self.losses[self.best_step]


# ----------------------------------------------------------------------------------------------
# Losses (float32, images in [-1, 1], mask [B, 1, H, W] in 0..1).


def masked_l2(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the mask's pixels (and the 3 channels)."""
    weight = mask.expand_as(render)
    return ((render - target).square() * weight).sum() / weight.sum().clamp_min(1.0)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """``[channels, 1, size, size]`` normalised Gaussian (depthwise conv weights)."""
    x = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def masked_ssim(render: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) over the mask's pixels, per channel then averaged."""
    c = render.shape[1]
    size = min(SSIM_WINDOW, render.shape[-1] - (1 - render.shape[-1] % 2))
    window = _gaussian_window(size, SSIM_SIGMA, c, render)
    x, y = (render + 1) / 2, (target + 1) / 2  # SSIM's constants assume [0, 1]

    # The five local statistics in one depthwise convolution (one pad, one conv per scale).
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    window = window.repeat(5, 1, 1, 1)
    stats = F.conv2d(F.pad(stacked, [size // 2] * 4, mode="replicate"), window, groups=5 * c)
    mx, my, exx, eyy, exy = stats.split(c, dim=1)
    vx = exx - mx * mx
    vy = eyy - my * my
    cov = exy - mx * my
    ssim = ((2 * mx * my + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    weight = mask.expand_as(ssim)
    return (ssim * weight).sum() / weight.sum().clamp_min(1.0)


def multiscale_structure_loss(render: torch.Tensor, target: torch.Tensor,
                              mask: torch.Tensor, scales: int = SSIM_SCALES) -> torch.Tensor:
    """``1 - masked SSIM`` averaged over ``scales`` resolutions (each half the last)."""
    total = render.new_zeros(())
    used = 0
    for s in range(scales):
        if s:
            if min(render.shape[-2:]) < 8:
                break
            render, target, mask = (F.avg_pool2d(t, 2) for t in (render, target, mask))
        total = total + (1 - masked_ssim(render, target, mask))
        used += 1
    return total / used


def multiscale_lpips(lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     render: torch.Tensor, target: torch.Tensor,
                     scales: int = SSIM_SCALES) -> torch.Tensor:
    """E4S's LPIPS term: the sum over ``scales`` resolutions (each half the last, down to 16 px,
    what LPIPS's VGG needs) of ``lpips(render, target)``."""
    total = render.new_zeros(())
    for s in range(scales):
        if s:
            if min(render.shape[-2:]) < 32:
                break
            render, target = F.avg_pool2d(render, 2), F.avg_pool2d(target, 2)
        total = total + lpips(render, target).float()
    return total


def parsing_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits [1, C, H, W]`` against ``labels [1, H, W]`` over the mask."""
    per_pixel = F.cross_entropy(logits, labels, reduction="none")
    weight = mask[:, 0]
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------------------------
# The optimisation.


def loss_size(crop_size: int, generator_size: int) -> int:
    """The resolution the losses compare at: the smaller of the two (no invented detail)."""
    return min(int(crop_size), int(generator_size))


def refine_codes(
    encoder: torch.nn.Module,  # MaskGuidedEncoder (features space: its MLP + average latent)
    generator: torch.nn.Module,  # mask-guided Generator
    image: torch.Tensor,  # [1, 3, E, E] float32 in [-1, 1]: the encoder's input
    encoder_maps: torch.Tensor,  # [1, S, S] int64 12-region labels of `image` (any size)
    target: torch.Tensor,  # [1, 3, P, P] float32 in [-1, 1]: the crop at the loss size P
    generator_maps: torch.Tensor,  # [1, G, G] int64 12-region labels at the generator's size
    loss_mask: torch.Tensor,  # [1, 1, P, P] float32: pixels the losses count
    config: RefinementConfig,
    dtype: torch.dtype,  # what the forward passes compute in (autocast)
    parsing: ParsingTarget | None = None,  # labels at the loss size P
    progress: Callable[[int, int], None] | None = None,  # (steps done, steps)
    lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,  # LPIPSLoss
    identity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,  # IdentityLoss
) -> RefinementResult:
    """Refine the encoder's codes of ``image`` so the generator redraws ``target`` (module
    docstring). Returns the best codes seen ``[1, R, L, w]`` float32 and the per-step losses."""
    device = image.device
    size = target.shape[-1]
    assert image.ndim == 4 and image.shape[:2] == (1, 3), image.shape
    assert target.shape == (1, 3, size, size), target.shape
    assert loss_mask.shape == (1, 1, size, size), loss_mask.shape
    assert generator_maps.ndim == 3 and generator_maps.shape[0] == 1, generator_maps.shape
    if parsing is not None:
        assert parsing.labels.shape == (1, size, size), parsing.labels.shape

    with torch.no_grad(), precision.compute(device, dtype):
        # As the encoder's forward: the same masks, features and codes (step 0 is its output).
        masks = encoder.region_masks(encoder_maps)
        valid = masks.area() > 0
        features = encoder.region_features(image, masks).float()
        start_codes = encoder.codes_from_features(features, valid).float()
    if config.space == "features":
        variable = features.clone().requires_grad_(True)
    else:
        variable = start_codes.clone().requires_grad_(True)

    def codes_of(v: torch.Tensor) -> torch.Tensor:
        if config.space == "features":
            return encoder.codes_from_features(v, valid)
        return v

    noise_rng = torch.Generator(device="cpu").manual_seed(int(config.seed))
    noise = [n.to(device) for n in generator.make_noise(1, noise_rng, device="cpu")]
    optimizer = torch.optim.Adam([variable], lr=config.lr)
    # fp16 gradients underflow without scaling; the scaler exists for these device types.
    scaler = torch.amp.GradScaler(device.type, init_scale=FP16_INIT_SCALE,
                                  enabled=dtype == torch.float16
                                  and device.type in ("cuda", "cpu", "xpu"))
    terms = ["l2"]
    terms += ["lpips"] if lpips is not None and config.lpips_weight > 0 else ["structure"]
    terms += ["identity"] if identity is not None and config.identity_weight > 0 else []
    terms += ["parsing"] if parsing is not None and config.parsing_weight > 0 else []
    result = RefinementResult(codes=start_codes.detach().clone(), terms=tuple(terms))
    best = math.inf

    for step in range(config.steps + 1):  # the last pass only evaluates the last update
        with precision.compute(device, dtype):
            codes = codes_of(variable)
            render = generator(codes, generator_maps, noise=noise, valid=valid)
        precision.check_output(render, "the mask-guided generator (refining the style codes)", dtype)
        render = render.float()
        if render.shape[-1] != size:
            render = F.interpolate(render, size=(size, size), mode="bilinear",
                                   align_corners=False, antialias=True)
        loss = render.new_zeros(())
        if config.l2_weight:
            loss = loss + config.l2_weight * masked_l2(render, target, loss_mask)
        if "structure" in terms and config.structure_weight:
            loss = loss + config.structure_weight * multiscale_structure_loss(render, target,
                                                                               loss_mask)
        # The feature losses see the face on the source's background: only the face differs.
        composite = render * loss_mask + target * (1 - loss_mask)
        if "lpips" in terms:
            with precision.compute(device, dtype):
                term = multiscale_lpips(lpips, composite, target)
            loss = loss + config.lpips_weight * term.float()
        if "identity" in terms:
            with precision.compute(device, dtype):
                term = identity(composite, target)
            loss = loss + config.identity_weight * term.float()
        if "parsing" in terms:
            with precision.compute(device, dtype):
                logits = parsing.logits(render)
            loss = loss + config.parsing_weight * parsing_loss(logits.float(), parsing.labels,
                                                               loss_mask)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise precision.NonFiniteOutputError(
                f"refining the style codes gave a non-finite loss at step {step} (computing in "
                f"{precision.name(dtype)}); lower the learning rate or use fp32")
        result.losses.append(value)
        if value < best:
            best = value
            result.best_step = step
            result.codes = codes.detach().float().clone()
        if step == config.steps:
            break
        (grad,) = torch.autograd.grad(scaler.scale(loss), [variable])
        variable.grad = grad
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step + 1, config.steps)
    return result


@dataclass
class StyleRefinement:
    """A refinement request for the learned encode-style path
    (:func:`.learned.encode_style_learned`): how, the generator bundle that renders the codes
    (a ``LoadedModel`` in the generator slot, on the encoder's device), the face parser whose
    BiSeNet gives the parsing term (None or the built-in parser: no parsing term), and a
    ``progress(step, steps)`` callback (ComfyUI's raises to cancel); optionally E4S's LPIPS and
    identity losses built from the user's weight files."""

    config: RefinementConfig
    generator: object  # model_handle.LoadedModel (generator slot)
    parser: object = None  # model_handle.LoadedModel (parser slot) or None
    progress: Callable[[int, int], None] | None = None
    lpips: torch.nn.Module | None = None  # train.feature_losses.LPIPSLoss (moved to the device)
    identity: torch.nn.Module | None = None  # train.feature_losses.IdentityLoss (likewise)
