r"""Mask-guided modulated convolution: every pixel is modulated by the style of its region.

Two implementations share one parameter set (:class:`MaskGuidedModulatedConv`, a StyleGAN2
:class:`~segtalker_core.models.layers.ModulatedConv2d`):

``reference`` (E4S)
    For each region r, run the whole modulated conv with that region's style ``s_r`` (its own
    demodulation ``d_r``), multiply the result by the region's mask *at the output pixel*, sum::

        y_o(p) = sum_r m_r(p) * d_ro * sum_{i,k} w_oik s_ri x_i(p+k)
        d_ro   = rsqrt(sum_{i,k} w_oik^2 s_ri^2 + eps)

    Exact by construction, but it costs one conv per region present (12x).

``fast`` (about one conv)
    Modulate the *input* with a spatial style map, run one shared conv, demodulate per pixel::

        s(q)   = sum_r m_r(q) s_r                       (style map, [B, Cin, H, W])
        y_o(p) = d_o(p) * sum_{i,k} w_oik s_i(p+k) x_i(p+k)

    Demodulation keeps StyleGAN2's rule "unit-variance input -> unit-variance output": for x
    i.i.d. with unit variance, Var y_o(p) / d_o(p)^2 = sum_{i,k} w_oik^2 s_i(p+k)^2. With hard
    (one-hot) masks s_i(q)^2 = sum_r m_r(q) s_ri^2, so

        sum_{i,k} w_oik^2 s_i(p+k)^2 = sum_k sum_r m_r(p+k) A_ork,   A_ork = sum_i w_oik^2 s_ri^2

    i.e. a k x k conv of the R-channel mask with the per-sample kernel A (R input channels instead
    of Cin: ~R/Cin of the main conv's cost). Masks are replicate-padded for this conv so a
    border pixel gets the same demodulation as the plain layer (whose demodulation ignores the
    image border). For soft masks the same formula uses the mixture's second moment
    sum_r m_r s_r^2 (>= (sum_r m_r s_r)^2), a slightly stronger normalisation on soft edges.

Where the two agree and where they do not:

* one region covering the image: identical (both reduce to the plain StyleGAN2 layer);
* a pixel whose whole receptive field (the k x k footprint, for ``up=2`` the transposed-conv +
  FIR footprint, about +-2 input pixels) lies in one region: identical;
* elsewhere (within the kernel radius of a region border) they differ: the reference picks, at
  the output pixel, the output computed with the output pixel's region style everywhere in the
  footprint; the fast layer lets each input pixel keep its own region's style inside the
  footprint (which is arguably the more local behaviour: a style never leaks past the kernel
  radius). Measured on random 8x8-pixel regions whose styles have per-channel std sigma_s across
  regions: in that border band RMS(fast - reference) is 0.5-0.7 sigma_s RMS(reference) for 3x3
  convs (0.3-0.4 sigma_s for the upsampling ones), and 0.82-0.85 of the change the reference
  itself shows when the segmentation moves by one pixel (tests/test_models_stylegan.py);
* 1x1 convs without demodulation (ToRGB): identical everywhere, even for soft masks (linearity).

Upsampling layers (``up=2``): the fast layer modulates the input with the masks at the *input*
resolution, runs the shared transposed conv + FIR blur, computes the per-pixel demodulation at the
input resolution and repeats it 2x2 (nearest) to the output resolution. The reference multiplies
its per-region outputs by the masks at the *output* resolution.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .layers import (DEMOD_EPS, ModulatedConv2d, computes_in_fp16, fp16_prenormalise,
                     modulated_conv2d, shared_conv)

IMPLEMENTATIONS = ("fast", "reference")


# ----------------------------------------------------------------------------------------------
# Region masks at any resolution.


class RegionMasks:
    """One-hot region masks of a segmentation, resized on demand and cached per size and dtype.

    ``segmentation`` is either a label map ``[B, H, W]`` (integer, values 0..R-1) or soft/one-hot
    masks ``[B, R, H, W]`` (float). Resizing:

    * label maps with ``hard=True`` (the generator): nearest-neighbour on the labels, then one-hot,
      so every pixel belongs to exactly one region at every layer (as E4S);
    * otherwise (soft masks, or ``hard=False`` as the encoder uses): one-hot at the native size,
      then area averaging when shrinking (a small region keeps its weight at coarse scales) and
      nearest when enlarging;
    * ``legacy_nearest=True`` (E4S): every resize, of label maps and float masks alike, is
      PyTorch's legacy ``nearest`` (source pixel ``floor(dst * in / out)``: shrinking 512 -> 64
      picks the top-left pixel of each 8x8 block). E4S resizes its one-hot masks so in the
      encoder's pooling and in every mask-guided layer; ``nearest-exact`` picks other pixels and
      changes E4S's images by far more than rounding.
    """

    def __init__(
        self,
        segmentation: torch.Tensor,  # [B, H, W] integer labels or [B, R, H, W] float masks
        num_regions: int,  # R
        hard: bool = True,  # nearest-resize label maps (else area-resize their one-hot)
        legacy_nearest: bool = False,  # E4S: legacy `nearest` for every resize (class docstring)
        labels_checked: bool = False,  # the caller checked 0 <= label < R (on the host)
    ):
        self.num_regions = num_regions
        self.legacy_nearest = legacy_nearest
        if segmentation.dtype.is_floating_point:
            assert segmentation.ndim == 4 and segmentation.shape[1] == num_regions, (
                f"soft masks must be [B, {num_regions}, H, W], got {tuple(segmentation.shape)}"
            )
            self.labels = None
            self.soft = segmentation
        else:
            assert segmentation.ndim == 3, f"label map must be [B, H, W], got {segmentation.shape}"
            # Reading min/max makes the host wait for the device; a caller that checked its
            # maps on the host before the copy skips it.
            lo, hi = (0, 0) if labels_checked else (int(segmentation.min()), int(segmentation.max()))
            if lo < 0 or hi >= num_regions:
                raise ValueError(
                    f"segmentation labels must be in 0..{num_regions - 1}, got {lo}..{hi} "
                    f"(is it a 19-class map? merge it with labels.merge_to_regions first)"
                )
            self.labels = segmentation.long()
            self.soft = None if hard or legacy_nearest else self._one_hot(self.labels)
        self._cache: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}

    @property
    def batch_size(self) -> int:
        return (self.labels if self.soft is None else self.soft).shape[0]

    @property
    def native_size(self) -> tuple[int, int]:
        return tuple((self.labels if self.soft is None else self.soft).shape[-2:])

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, self.num_regions).permute(0, 3, 1, 2).float()

    def at(
        self,
        size: int | tuple[int, int],  # output (H, W) or square side
        dtype: torch.dtype = torch.float32,  # mask dtype (match the features)
    ) -> torch.Tensor:
        """``[B, R, H, W]`` masks at ``size``."""
        h, w = (size, size) if isinstance(size, int) else size
        key = (h, w, dtype)
        if key not in self._cache:
            self._cache[key] = self._resize(h, w).to(dtype)
        return self._cache[key]

    def _resize(self, h: int, w: int) -> torch.Tensor:
        if self.legacy_nearest:
            return self._resize_legacy_nearest(h, w)
        if self.soft is None:
            # nearest-exact: integer factors pick a pixel of each block, others stay centred.
            return self._one_hot(self._resized_labels(h, w, "nearest-exact"))
        masks = self.soft.float()
        src_h, src_w = masks.shape[-2:]
        if (src_h, src_w) == (h, w):
            return masks
        if h <= src_h and w <= src_w:
            return F.interpolate(masks, size=(h, w), mode="area")
        return F.interpolate(masks, size=(h, w), mode="nearest-exact")

    def _resize_legacy_nearest(self, h: int, w: int) -> torch.Tensor:
        if self.soft is None:
            return self._one_hot(self._resized_labels(h, w, "nearest"))
        masks = self.soft.float()
        if masks.shape[-2:] == (h, w):
            return masks
        return F.interpolate(masks, size=(h, w), mode="nearest")

    def _resized_labels(self, h: int, w: int, mode: str) -> torch.Tensor:
        """``[B, h, w]`` long: the label map resampled with ``mode`` (no blending of labels)."""
        if self.labels.shape[-2:] == (h, w):
            return self.labels
        return F.interpolate(self.labels[:, None].float(), size=(h, w), mode=mode)[:, 0].long()

    def area(self) -> torch.Tensor:
        """``[B, R]`` float32 fraction of the image each region covers (native resolution)."""
        masks = self.at(self.native_size)
        total = masks.sum(dim=1, keepdim=True).mean(dim=(2, 3)).clamp_min(1e-12)
        return masks.mean(dim=(2, 3)) / total


# ----------------------------------------------------------------------------------------------
# Functional forms.


def style_map(
    styles: torch.Tensor,  # [B, R, C] per-region channel scales
    masks: torch.Tensor,  # [B, R, H, W] region masks
) -> torch.Tensor:
    """``[B, C, H, W]``: each pixel's channel scales, s(q) = sum_r m_r(q) s_r."""
    return torch.einsum("brc,brhw->bchw", styles.to(masks.dtype), masks)


def pixel_demodulation(
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, R, Cin] per-region channel scales
    masks: torch.Tensor,  # [B, R, H, W] masks at the conv's *input* resolution
) -> torch.Tensor:
    """``[B, Cout, H, W]`` float32: rsqrt(sum_{i,k} w_oik^2 s_i(p+k)^2 + eps), per pixel.

    Computed as a conv of the masks with A_ork = sum_i w_oik^2 s_ri^2 (see the module docstring);
    float32 throughout because the sums overflow fp16 and eps underflows it.
    """
    b, r, h, w = masks.shape
    cout, _, k, _ = weight.shape
    a = torch.einsum("oikl,bri->borkl", weight.float().square(), styles.float().square())
    m = F.pad(masks.float(), [k // 2] * 4, mode="replicate") if k > 1 else masks.float()
    # One grouped conv for the whole batch: group b sees its own masks and its own kernel A_b.
    var = F.conv2d(m.reshape(1, b * r, *m.shape[-2:]), a.reshape(b * cout, r, k, k), groups=b)
    return torch.rsqrt(var.reshape(b, cout, h, w) + DEMOD_EPS)


def mask_guided_conv_fast(
    x: torch.Tensor,  # [B, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, R, Cin] per-region channel scales
    masks_in: torch.Tensor,  # [B, R, H, W] masks at the input resolution
    demodulate: bool = True,  # per-pixel demodulation (False for ToRGB)
    up: int = 1,  # 1, or 2 for transposed conv + FIR blur
    blur: torch.Tensor | None = None,  # [kh, kw] FIR kernel for up=2
) -> torch.Tensor:
    """One-conv mask-guided modulated conv: ``[B, Cout, H*up, W*up]``.

    In fp16 a demodulated layer pre-normalises weight and styles as NVlabs does (one scale per
    sample over all regions, so the regions keep their relative styles; the per-pixel
    demodulation cancels the scales, see layers.fp16_prenormalise).
    """
    assert masks_in.shape[-2:] == x.shape[-2:], (masks_in.shape, x.shape)
    if demodulate and computes_in_fp16(x):
        weight, styles = fp16_prenormalise(weight, styles)
    y = shared_conv(x * style_map(styles, masks_in.to(x.dtype)), weight, up=up, blur=blur)
    if demodulate:
        d = pixel_demodulation(weight, styles, masks_in)
        if up > 1:
            d = d.repeat_interleave(up, dim=2).repeat_interleave(up, dim=3)
        y = y * d.to(y.dtype)
    return y


def mask_guided_conv_reference(
    x: torch.Tensor,  # [B, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, R, Cin] per-region channel scales
    masks_out: torch.Tensor,  # [B, R, H*up, W*up] masks at the output resolution
    demodulate: bool = True,  # per-region demodulation (False for ToRGB)
    up: int = 1,  # 1, or 2 for transposed conv + FIR blur
    blur: torch.Tensor | None = None,  # [kh, kw] FIR kernel for up=2
) -> torch.Tensor:
    """E4S's per-region mask-guided modulated conv: ``[B, Cout, H*up, W*up]``.

    Regions absent from every image of the batch are skipped: their mask is zero, so skipping them
    does not change the result, only the cost.
    """
    out_size = (x.shape[-2] * up, x.shape[-1] * up)
    assert masks_out.shape[-2:] == out_size, (masks_out.shape, out_size)
    masks_out = masks_out.to(x.dtype)
    present = masks_out.flatten(2).amax(dim=(0, 2)) > 0
    y = None
    for r in present.nonzero().flatten().tolist():
        yr = modulated_conv2d(x, weight, styles[:, r], demodulate, up=up, blur=blur)
        yr = yr * masks_out[:, r : r + 1]
        y = yr if y is None else y + yr
    if y is None:  # no region anywhere: the masked sum is zero
        y = x.new_zeros(x.shape[0], weight.shape[0], *out_size)
    return y


# ----------------------------------------------------------------------------------------------
# Module.


class MaskGuidedModulatedConv(ModulatedConv2d):
    """A StyleGAN2 modulated conv that also accepts per-region styles and region masks.

    Same parameters (and state-dict names) as :class:`ModulatedConv2d`, so a checkpoint works with
    either implementation and with the layer used globally. ``impl`` selects ``"fast"`` or
    ``"reference"`` (see the module docstring); it is not a parameter.
    """

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        kernel_size: int,  # square kernel (3 for convs, 1 for ToRGB)
        w_dim: int,  # style vector size
        demodulate: bool = True,  # False for ToRGB
        upsample: bool = False,  # transposed conv x2 + FIR blur
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling
        impl: str = "fast",  # "fast" | "reference"
    ):
        super().__init__(
            in_channels, out_channels, kernel_size, w_dim, demodulate, upsample, blur_kernel
        )
        self.impl = impl

    @property
    def impl(self) -> str:
        return self._impl

    @impl.setter
    def impl(self, value: str) -> None:
        if value not in IMPLEMENTATIONS:
            raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {value!r}")
        self._impl = value

    def forward(
        self,
        x: torch.Tensor,  # [B, Cin, H, W]
        w: torch.Tensor,  # [B, w_dim] global style, or [B, R, w_dim] per-region styles
        masks: RegionMasks | None = None,  # region masks (needed for per-region styles)
    ) -> torch.Tensor:
        if w.ndim == 2:
            return super().forward(x, w)
        assert w.ndim == 3 and masks is not None, "per-region styles need region masks"
        assert w.shape[1] == masks.num_regions, (w.shape, masks.num_regions)
        styles = self.modulation(w)
        h, w_ = x.shape[-2:]
        if self.impl == "fast":
            return mask_guided_conv_fast(
                x,
                self.scaled_weight(),
                styles,
                masks.at((h, w_), x.dtype),
                self.demodulate,
                up=self.up,
                blur=self.blur,
            )
        return mask_guided_conv_reference(
            x,
            self.scaled_weight(),
            styles,
            masks.at((h * self.up, w_ * self.up), x.dtype),
            self.demodulate,
            up=self.up,
            blur=self.blur,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", impl={self.impl}"
