"""Mask-guided StyleGAN2 generator (SegTalker's SGI renderer, after E4S).

Input: per-region W+ codes ``[B, R, L, w_dim]`` (R = 12 regions, L = ``n_latent``) and a region
segmentation (labels ``[B, H, W]`` or soft masks ``[B, R, H, W]``, any resolution). Output: an
image ``[B, 3, S, S]``, nominally in [-1, 1] (not clamped, as StyleGAN2; clamp for display).

Layers and W+ rows follow rosinality's StyleGAN2 layout: row 0 drives the 4x4 conv, row 1 the 4x4
ToRGB; at each resolution the upsampling conv uses row i, the second conv row i+1, the ToRGB row
i+2 (shared with the next upsampling conv). Layers whose row index is < K
(``GeneratorConfig.mask_guided_layers``) are *mask-guided*: each pixel is modulated by its own
region's style (:mod:`.mask_guided`). Later layers use one *global* style per sample:

* ``global_style="area"`` (default): the mean of the region codes weighted by each region's area
  in the segmentation (times the validity flag when one is given). It is continuous in the mask
  (a mouth opening by a few pixels moves it by a few pixels' worth), and when all regions carry
  the same row -- what the encoder writes beyond K, the average latent -- it is exactly that row.
* ``global_style="mean"``: the plain mean over valid regions (or all), independent of the mask.
* ``global_style="first"`` (E4S): region 0's codes (the background's; E4S's generator takes row
  ``i >= K`` from the first region). Equal to the others for codes straight from the encoder,
  whose rows beyond K are the average latent; it differs only for edited codes.

``legacy_nearest_masks`` (E4S) resizes the segmentation to each layer with PyTorch's legacy
``nearest`` (``floor(dst * scale)``) instead of ``nearest-exact``; on hard 512 px maps the two
pick different pixels, and a converted E4S generator matches E4S only with its own rule.

``reference_max_res`` mixes the two implementations: at 4x4..16x16 a 3x3 footprint spans a large
part of the face, so that is where the fast layer departs most from E4S's, and where the per-region
convs are cheapest (see benchmarks/models.py for the cost and the image-level difference).

Noise: pass ``noise`` (a list from :meth:`Generator.make_noise`, broadcastable over the batch) or a
``noise_generator`` to keep noise fixed across the frames of a video; otherwise it is redrawn.

Unconditional use (a plain StyleGAN2): :meth:`Generator.synthesize` renders a W or W+ latent
``[B, w_dim]`` / ``[B, L, w_dim]`` with every layer modulated by that row's one style, whatever K
is (a mask-guided layer given one style is the plain modulated conv, the same code). It is what a
StyleGAN2 converted from rosinality's layout (:mod:`segtalker_core.conversion.rosinality`)
renders with. Such a generator may also carry the source's average latent (``stores_latent_avg``:
a ``latent_avg`` buffer, the truncation centre, see :meth:`Generator.truncate`) and its fixed
noise (``stores_noise``: ``noises.noise_i`` buffers, what rosinality renders with under
``randomize_noise=False``; :meth:`Generator.stored_noise`). Both default to off, so bundles
written before them load unchanged.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import (FP16_CLAMP, LRELU_GAIN, EqualLinear, NoiseInjection, Upsample, bias_act,
                     computes_in_fp16, random_noise)
from .mask_guided import IMPLEMENTATIONS, MaskGuidedModulatedConv, RegionMasks

GLOBAL_STYLES = ("area", "mean", "first")
SIZES = (64, 128, 256, 512, 1024)


@dataclass
class GeneratorConfig:
    """Architecture of :class:`Generator` (stored as JSON in checkpoints)."""

    size: int = 256  # output resolution, one of SIZES
    w_dim: int = 512  # z and w size
    n_mlp: int = 8  # mapping layers
    lr_mlp: float = 0.01  # mapping learning-rate multiplier
    channel_base: int = 16384  # channels(res) = min(channel_base * multiplier // res, channel_max)
    channel_multiplier: int = 2  # rosinality's channel_multiplier (2: StyleGAN2 config-f widths)
    channel_max: int = 512  # widest layer
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)  # FIR taps for up/down-sampling
    num_regions: int = 12  # R (labels.REGIONS_12)
    mask_guided_layers: int | None = None  # K W+ rows that are per-region; None: see num_mask_guided
    mask_guided_impl: str = "fast"  # "fast" (one conv) | "reference" (one conv per region, E4S)
    reference_max_res: int = 0  # mask-guided layers at <= this resolution use "reference" anyway
    global_style: str = "area"  # style of layers >= K: "area" | "mean" | "first" (module docstring)
    legacy_nearest_masks: bool = False  # E4S's legacy `nearest` mask resizing (module docstring)
    stores_latent_avg: bool = False  # a `latent_avg` [w_dim] buffer (a converted StyleGAN2's)
    stores_noise: bool = False  # `noises.noise_i` [1, 1, res, res] buffers: fixed noise

    def __post_init__(self) -> None:
        self.blur_kernel = tuple(self.blur_kernel)
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {SIZES}, got {self.size}")
        if self.mask_guided_impl not in IMPLEMENTATIONS:
            raise ValueError(f"mask_guided_impl must be one of {IMPLEMENTATIONS}")
        if self.global_style not in GLOBAL_STYLES:
            raise ValueError(f"global_style must be one of {GLOBAL_STYLES}")
        if self.channels(self.size) < 1:
            raise ValueError(
                f"channel_base * channel_multiplier must be >= size ({self.size}) for 1+ channels"
            )
        if self.reference_max_res < 0:
            raise ValueError("reference_max_res must be >= 0")
        k = self.mask_guided_layers
        if k is not None and not 0 <= k <= self.n_latent:
            raise ValueError(f"mask_guided_layers must be in 0..{self.n_latent}, got {k}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """W+ rows L = 2 log2(size) - 2 (14 / 16 / 18 at 256 / 512 / 1024)."""
        return 2 * self.log_size - 2

    @property
    def num_mask_guided(self) -> int:
        """Resolved K: by default E4S's 13 rows (at 1024: every layer up to 256x256), and at smaller
        sizes every row but the last three (the two convs and the ToRGB of the output resolution
        keep a global style: per-pixel styles there cost more than they add)."""
        if self.mask_guided_layers is not None:
            return self.mask_guided_layers
        return min(13, self.n_latent - 3)

    def channels(self, res: int) -> int:
        return min(self.channel_base * self.channel_multiplier // res, self.channel_max)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        return cls(**data)


# ----------------------------------------------------------------------------------------------
# Pieces.


def pixel_norm(
    z: torch.Tensor,  # [..., D]
    eps: float = 1e-8,  # avoids division by zero
) -> torch.Tensor:
    """Normalise each vector to unit RMS (the mapping network's input normalisation)."""
    return z * torch.rsqrt(z.float().square().mean(dim=-1, keepdim=True) + eps).to(z.dtype)


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm then ``n_mlp`` equalised linear layers with lr multiplier and lReLU."""

    def __init__(
        self,
        w_dim: int,  # z and w size
        n_mlp: int,  # layers
        lr_mul: float,  # learning-rate multiplier (0.01)
    ):
        super().__init__()
        self.layers = nn.Sequential(
            *[EqualLinear(w_dim, w_dim, lr_mul=lr_mul, activation=True) for _ in range(n_mlp)]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_norm(z))


class StyledConv(nn.Module):
    """Modulated conv (mask-guided capable) -> noise -> bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        w_dim: int,  # style size
        upsample: bool,  # 2x transposed conv + FIR
        blur_kernel: Sequence[int],  # FIR taps
        impl: str,  # mask-guided implementation
    ):
        super().__init__()
        self.conv = MaskGuidedModulatedConv(
            in_channels, out_channels, 3, w_dim, True, upsample, blur_kernel, impl
        )
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(
        self,
        x: torch.Tensor,  # [B, Cin, H, W]
        w: torch.Tensor,  # [B, w_dim] or [B, R, w_dim]
        masks: RegionMasks | None,  # needed for per-region styles
        noise: torch.Tensor | None,  # [B or 1, 1, H', W'] or None (fresh)
        generator: torch.Generator | None,  # RNG for fresh noise
    ) -> torch.Tensor:
        x = self.conv(x, w, masks)
        x = self.noise(x, noise, generator)
        # fp16: NVlabs' conv_clamp keeps a hot activation from overflowing the next layer.
        clamp = FP16_CLAMP * LRELU_GAIN if computes_in_fp16(x) else None
        return bias_act(x, self.bias, clamp=clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias, added to the upsampled skip image."""

    def __init__(
        self,
        in_channels: int,  # input channels
        w_dim: int,  # style size
        upsample_skip: bool,  # False only at 4x4
        blur_kernel: Sequence[int],  # FIR taps for the skip upsampling
        impl: str,  # mask-guided implementation
    ):
        super().__init__()
        self.conv = MaskGuidedModulatedConv(
            in_channels, 3, 1, w_dim, False, False, blur_kernel, impl
        )
        self.bias = nn.Parameter(torch.zeros(3))
        self.upsample = Upsample(blur_kernel) if upsample_skip else None

    def forward(
        self,
        x: torch.Tensor,  # [B, Cin, H, W]
        w: torch.Tensor,  # [B, w_dim] or [B, R, w_dim]
        masks: RegionMasks | None,  # needed for per-region styles
        skip: torch.Tensor | None,  # [B, 3, H/2, W/2] image so far
    ) -> torch.Tensor:
        rgb = self.conv(x, w, masks) + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if computes_in_fp16(rgb):
            rgb = rgb.clamp(-FP16_CLAMP, FP16_CLAMP)  # NVlabs clamps ToRGB at conv_clamp too
        if skip is not None:
            rgb = rgb + self.upsample(skip)
        return rgb


# ----------------------------------------------------------------------------------------------
# Generator.


class Generator(nn.Module):
    """Mask-guided StyleGAN2 generator (skip architecture)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = c = config
        self.mapping = MappingNetwork(c.w_dim, c.n_mlp, c.lr_mlp)
        self.input = nn.Parameter(torch.randn(1, c.channels(4), 4, 4))
        impl = c.mask_guided_impl
        blur = c.blur_kernel
        self.conv1 = StyledConv(c.channels(4), c.channels(4), c.w_dim, False, blur, impl)
        self.to_rgb1 = ToRGB(c.channels(4), c.w_dim, False, blur, impl)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for log_res in range(3, c.log_size + 1):
            cin, cout = c.channels(2 ** (log_res - 1)), c.channels(2**log_res)
            self.convs.append(StyledConv(cin, cout, c.w_dim, True, blur, impl))
            self.convs.append(StyledConv(cout, cout, c.w_dim, False, blur, impl))
            self.to_rgbs.append(ToRGB(cout, c.w_dim, True, blur, impl))
        if c.stores_latent_avg:
            # Stored, not recomputed: the source's average w is what its truncation was tuned on.
            self.register_buffer("latent_avg", torch.zeros(c.w_dim))
        if c.stores_noise:
            # rosinality's names (noises.noise_i), so its fixed noise converts by name.
            self.noises = nn.Module()
            for i, s in enumerate(self.noise_sizes()):
                self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, s, s))
        self.set_mask_guided_impl(impl)

    # -- properties ----------------------------------------------------------------------------

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def num_mask_guided(self) -> int:
        return self.config.num_mask_guided

    @property
    def num_noise(self) -> int:
        """Noise inputs: one per styled conv (n_latent - 1)."""
        return 1 + len(self.convs)

    def noise_sizes(self) -> list[int]:
        return [4] + [2 ** (2 + (i + 2) // 2) for i in range(len(self.convs))]

    def modulated_layers(self) -> list[tuple[int, MaskGuidedModulatedConv]]:
        """(output resolution, layer) of every modulated conv, in forward order."""
        layers = [(4, self.conv1.conv), (4, self.to_rgb1.conv)]
        for i, to_rgb in enumerate(self.to_rgbs):
            res = 2 ** (i + 3)
            layers += [(res, self.convs[2 * i].conv), (res, self.convs[2 * i + 1].conv)]
            layers.append((res, to_rgb.conv))
        return layers

    def set_mask_guided_impl(self, impl: str) -> None:
        """Switch the mask-guided layers to ``"fast"`` or ``"reference"`` (no parameter change);
        layers at or below ``reference_max_res`` stay ``"reference"``."""
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")
        for res, layer in self.modulated_layers():
            layer.impl = "reference" if res <= self.config.reference_max_res else impl
        self.config.mask_guided_impl = impl

    # -- latents and noise ---------------------------------------------------------------------

    def make_noise(
        self,
        batch: int = 1,  # leading dim (1 broadcasts over any batch: same noise for every frame)
        generator: torch.Generator | None = None,  # RNG (a fixed seed gives fixed noise)
        device: torch.device | str | None = None,  # defaults to the parameters' device
        dtype: torch.dtype | None = None,  # defaults to float32
    ) -> list[torch.Tensor]:
        """Noise inputs ``[batch, 1, res, res]`` for every styled conv, in forward order."""
        device = self.input.device if device is None else device
        sizes = self.noise_sizes()
        return [random_noise((batch, 1, s, s), generator, device, dtype) for s in sizes]

    @torch.no_grad()
    def mean_latent(
        self,
        n: int = 4096,  # samples of z
        generator: torch.Generator | None = None,  # RNG for z
        chunk: int = 1024,  # z per mapping call (bounds memory)
    ) -> torch.Tensor:
        """``[w_dim]`` float32: the mean of mapping(z) over ``n`` random z (the average latent)."""
        device = self.input.device
        total = torch.zeros(self.config.w_dim, device=device)
        for start in range(0, n, chunk):
            z = random_noise((min(chunk, n - start), self.config.w_dim), generator, device, None)
            total += self.mapping(z).float().sum(dim=0)
        return total / n

    def stored_noise(self) -> list[torch.Tensor]:
        """The fixed noise stored with the weights (``stores_noise``): ``[1, 1, res, res]`` per
        styled conv, in forward order (broadcasts over any batch)."""
        if not self.config.stores_noise:
            raise ValueError("this generator stores no noise (GeneratorConfig.stores_noise is "
                             "False); pass noise=make_noise(...) or a noise_generator instead")
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_noise)]

    def average_latent(self) -> torch.Tensor:
        """``[w_dim]``: the stored average latent (``stores_latent_avg``)."""
        if not self.config.stores_latent_avg:
            raise ValueError("this generator stores no average latent (GeneratorConfig."
                             "stores_latent_avg is False); use mean_latent() to estimate one")
        return self.latent_avg

    def truncate(
        self,
        w: torch.Tensor,  # [B, w_dim] or [B, L, w_dim]
        psi: float,  # 1: unchanged, 0: the average latent
    ) -> torch.Tensor:
        """The truncation trick: ``avg + psi (w - avg)`` around the stored average latent."""
        avg = self.average_latent().to(w.dtype)
        return avg + psi * (w - avg)

    def broadcast(
        self,
        w: torch.Tensor,  # [B, w_dim] or [B, L, w_dim]
    ) -> torch.Tensor:
        """Codes ``[B, R, L, w_dim]`` giving every region (and every row) the same w."""
        if w.ndim == 2:
            w = w[:, None].expand(-1, self.n_latent, -1)
        return w[:, None].expand(-1, self.config.num_regions, -1, -1)

    def global_codes(
        self,
        codes: torch.Tensor,  # [B, R, L, w_dim]
        masks: RegionMasks | None,  # for area weights
        valid: torch.Tensor | None,  # [B, R] bool
    ) -> torch.Tensor:
        """``[B, L, w_dim]``: each sample's global style per row (see ``global_style``)."""
        if self.config.global_style == "first":
            return codes[:, 0]
        b, r = codes.shape[:2]
        weights = torch.ones(b, r, device=codes.device)
        if self.config.global_style == "area" and masks is not None:
            weights = masks.area().to(codes.device)
        if valid is not None:
            masked = weights * valid.to(device=codes.device, dtype=weights.dtype)
            # Keep the unmasked weights for a sample whose valid regions cover nothing.
            use = masked.sum(dim=1, keepdim=True) > 0
            weights = torch.where(use, masked, weights)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        return torch.einsum("br,brld->bld", weights.to(codes.dtype), codes)

    # -- synthesis -----------------------------------------------------------------------------

    def forward(
        self,
        codes: torch.Tensor,  # [B, R, L, w_dim] per-region W+ codes
        segmentation: torch.Tensor | None = None,  # [B, H, W] labels or [B, R, H, W] masks
        noise: Sequence[torch.Tensor | None] | None = None,  # make_noise() list; None: fresh
        noise_generator: torch.Generator | None = None,  # RNG for noise not given in `noise`
        valid: torch.Tensor | None = None,  # [B, R] bool: which region codes are real
        labels_checked: bool = False,  # integer maps already checked in 0..R-1 (host side)
    ) -> torch.Tensor:
        """``[B, 3, size, size]`` image (nominally [-1, 1], unclamped). ``labels_checked``: skip
        the label range check on the device (it makes the host wait for the device)."""
        c = self.config
        b = codes.shape[0]
        assert codes.shape[1:] == (c.num_regions, c.n_latent, c.w_dim), (
            f"codes must be [B, {c.num_regions}, {c.n_latent}, {c.w_dim}], got {tuple(codes.shape)}"
        )
        k = c.num_mask_guided
        masks = None
        if segmentation is not None:
            masks = RegionMasks(segmentation.to(codes.device), c.num_regions, hard=True,
                                legacy_nearest=c.legacy_nearest_masks,
                                labels_checked=labels_checked)
            assert masks.batch_size == b, (masks.batch_size, b)
        elif k > 0:
            raise ValueError("this generator has mask-guided layers: pass a segmentation")
        if noise is None:
            noise = [None] * self.num_noise
        assert len(noise) == self.num_noise, (len(noise), self.num_noise)

        global_codes = self.global_codes(codes, masks, valid)

        def style(row: int) -> torch.Tensor:
            return codes[:, :, row] if row < k else global_codes[:, row]

        return self._render(b, codes.dtype, style, masks, noise, noise_generator)

    def synthesize(
        self,
        w: torch.Tensor,  # [B, w_dim] W latent or [B, L, w_dim] W+ latent
        noise: Sequence[torch.Tensor | None] | None = None,  # stored_noise(); None: fresh
        noise_generator: torch.Generator | None = None,  # RNG for noise not given in `noise`
    ) -> torch.Tensor:
        """``[B, 3, size, size]``: the plain (unconditional) StyleGAN2 image of a latent.

        Every layer is modulated by the latent's row for it (row i as in the module docstring),
        the mask-guided layers included: given one style they run the plain modulated conv. A
        z goes through :attr:`mapping` first (and :meth:`truncate` if wanted)."""
        c = self.config
        if w.ndim == 2:
            w = w[:, None].expand(-1, c.n_latent, -1)
        if w.ndim != 3 or w.shape[1:] != (c.n_latent, c.w_dim):
            raise ValueError(f"latent must be [B, {c.w_dim}] or [B, {c.n_latent}, {c.w_dim}], got "
                             f"{tuple(w.shape)}")
        if noise is None:
            noise = [None] * self.num_noise
        if len(noise) != self.num_noise:
            raise ValueError(f"noise must list {self.num_noise} tensors (one per styled conv), got "
                             f"{len(noise)}")
        return self._render(w.shape[0], w.dtype, lambda row: w[:, row], None, noise,
                            noise_generator)

    def _render(
        self,
        b: int,  # batch size
        dtype: torch.dtype,  # compute dtype of the constant input
        style: Callable[[int], torch.Tensor],  # W+ row -> [B, w_dim] or [B, R, w_dim]
        masks: RegionMasks | None,  # region masks for per-region styles
        noise: Sequence[torch.Tensor | None],  # one per styled conv (None: fresh)
        noise_generator: torch.Generator | None,  # RNG for fresh noise
    ) -> torch.Tensor:
        """The synthesis network (skip architecture): ``[B, 3, size, size]``."""
        x = self.input.to(dtype).expand(b, -1, -1, -1)
        x = self.conv1(x, style(0), masks, noise[0], noise_generator)
        skip = self.to_rgb1(x, style(1), masks, None)
        row = 1
        for i, to_rgb in enumerate(self.to_rgbs):
            up, conv = self.convs[2 * i], self.convs[2 * i + 1]
            x = up(x, style(row), masks, noise[2 * i + 1], noise_generator)
            x = conv(x, style(row + 1), masks, noise[2 * i + 2], noise_generator)
            skip = to_rgb(x, style(row + 2), masks, skip)
            row += 2
        return skip

    def extra_repr(self) -> str:
        c = self.config
        return f"size={c.size}, n_latent={c.n_latent}, mask_guided_layers={c.num_mask_guided}"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "GeneratorConfig",
    "Generator",
    "MappingNetwork",
    "StyledConv",
    "ToRGB",
    "pixel_norm",
    "count_parameters",
    "GLOBAL_STYLES",
    "SIZES",
]
