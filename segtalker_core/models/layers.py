"""StyleGAN2 building blocks in pure PyTorch (no custom CUDA ops).

Conventions follow StyleGAN2 (Karras et al. 2020) as used by rosinality/stylegan2-pytorch and the
NVlabs code: equalised learning rate (weights stored at unit variance, scaled by 1/sqrt(fan_in) at
run time), FIR resampling with the [1, 3, 3, 1] kernel, bias + leaky ReLU(0.2) with gain sqrt(2),
noise injection with a learned scalar, weight (de)modulation.

Device and dtype always come from the inputs (or from an enclosing ``torch.autocast``).
Quantities that can overflow or underflow in half precision (demodulation) are computed in
float32 and cast back. When a layer computes in fp16 (:func:`computes_in_fp16`) it also takes
NVlabs' StyleGAN2-ADA safeguards: demodulated convs pre-normalise weight and styles to a maximum
of 1 (demodulation divides the scale out again, so the result is the same up to rounding, but
the intermediate ``x * s`` and the conv sums stay far from fp16's 65504), and activations are
clamped to +-:data:`FP16_CLAMP` (times the activation gain). bf16 has float32's range and needs
neither; float32 runs are untouched.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8
# NVlabs' conv_clamp: activations of fp16 layers are clamped to this (x gain after lReLU).
FP16_CLAMP = 256.0


# ----------------------------------------------------------------------------------------------
# Pure helpers.


def computes_in_fp16(x: torch.Tensor) -> bool:
    """True when ops on ``x`` run in float16: ``x`` is fp16, or an fp16 autocast is active on its
    device (the input of the first layer is still float32 then)."""
    if x.dtype == torch.float16:
        return True
    try:
        return (torch.is_autocast_enabled(x.device.type)
                and torch.get_autocast_dtype(x.device.type) == torch.float16)
    except (TypeError, AttributeError, RuntimeError):  # torch < 2.4: no per-device query
        return x.is_cuda and torch.is_autocast_enabled() and \
            torch.get_autocast_gpu_dtype() == torch.float16


def fp16_prenormalise(
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, ..., Cin] styles (any leading dims after the batch)
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVlabs' fp16 pre-normalisation of a *demodulated* conv: each output channel's weight to a
    maximum magnitude of 1/sqrt(fan_in), each sample's styles to a maximum of 1.

    Demodulation is invariant to both scales (a per-output-channel weight scale and a per-sample
    style scale cancel in w*s / ||w*s||), so only the rounding changes. Returned in float32;
    callers cast where they use them.
    """
    w = weight.float()
    fan_in = w[0].numel()
    w = w * (fan_in ** -0.5 / w.flatten(1).abs().amax(dim=1).clamp_min(1e-30)).view(-1, 1, 1, 1)
    s = styles.float()
    peak = s.flatten(1).abs().amax(dim=1).clamp_min(1e-30)
    s = s / peak.view(-1, *([1] * (s.ndim - 1)))
    return w, s


def fir_kernel(
    taps: Sequence[float],  # 1-D (separable) or nested 2-D FIR taps
) -> torch.Tensor:
    """Normalised 2-D FIR kernel ``[k, k]`` (sums to 1) from separable 1-D taps."""
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor,  # [B, C, H, W]
    kernel: torch.Tensor,  # [kh, kw] FIR kernel (already scaled for the gain wanted)
    up: int = 1,  # zero-insertion factor
    down: int = 1,  # decimation factor
    pad: tuple[int, int] = (0, 0),  # (before, after) padding on both axes; negative crops
) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter (true convolution), downsample.

    The same operator as StyleGAN2's ``upfirdn2d`` CUDA op, written as a reshape + depthwise conv.
    """
    b, c, h, w = x.shape
    if up > 1:
        # Zero insertion: a unit axis after each row/column, padded with up-1 zeros.
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[-2:]
        x = x[:, :, max(-p0, 0) : hh - max(-p1, 0), max(-p0, 0) : ww - max(-p1, 0)]
    # conv2d is a correlation; flipping makes it the convolution the FIR definition asks for.
    weight = kernel.flip([0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def bias_act(
    x: torch.Tensor,  # [B, C, ...]
    bias: torch.Tensor | None,  # [C]
    negative_slope: float = LRELU_SLOPE,  # leaky ReLU slope
    gain: float = LRELU_GAIN,  # keeps the activation variance-preserving
    clamp: float | None = None,  # clamp the result to +-clamp (NVlabs' conv_clamp * gain)
) -> torch.Tensor:
    """StyleGAN's fused bias + leaky ReLU, as two plain ops."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    x = F.leaky_relu(x, negative_slope) * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


def demodulation(
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, Cin] input-channel scales
) -> torch.Tensor:
    """``[B, Cout]`` = rsqrt(sum_{i,k} (w_oik s_i)^2 + eps), computed in float32.

    float32 because in fp16 the sum of 4608 squared terms can overflow and eps=1e-8 underflows.
    """
    w2 = weight.float().square().sum(dim=(2, 3))  # [Cout, Cin]
    return torch.rsqrt(styles.float().square() @ w2.t() + DEMOD_EPS)


def modulated_conv2d(
    x: torch.Tensor,  # [B, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, k, k] shared weight (equalised scale applied)
    styles: torch.Tensor,  # [B, Cin] per-sample input-channel scales
    demodulate: bool = True,  # divide by the expected output std (ToRGB does not)
    up: int = 1,  # 1, or 2 for a transposed conv followed by the FIR blur
    blur: torch.Tensor | None = None,  # [kh, kw] FIR kernel for up=2 (normalised)
) -> torch.Tensor:
    """StyleGAN2 modulated conv: ``[B, Cout, H*up, W*up]``.

    Computed as scale-input, shared conv, scale-output (NVlabs' non-fused form): mathematically
    identical to modulating the weights per sample, and it is also the form the mask-guided fast
    layer generalises to per-pixel styles.
    """
    if demodulate and computes_in_fp16(x):
        weight, styles = fp16_prenormalise(weight, styles)
    x = x * styles.to(x.dtype)[:, :, None, None]
    x = shared_conv(x, weight, up=up, blur=blur)
    if demodulate:
        x = x * demodulation(weight, styles).to(x.dtype)[:, :, None, None]
    return x


def shared_conv(
    x: torch.Tensor,  # [B, Cin, H, W]
    weight: torch.Tensor,  # [Cout, Cin, k, k]
    up: int = 1,  # 1: 'same' conv; 2: transposed conv stride 2 + FIR blur
    blur: torch.Tensor | None = None,  # [kh, kw] normalised FIR kernel, needed for up=2
) -> torch.Tensor:
    """The un-modulated conv of a modulated layer: ``[B, Cout, H*up, W*up]``."""
    weight = weight.to(x.dtype)
    k = weight.shape[-1]
    if up == 1:
        return F.conv2d(x, weight, padding=k // 2)
    assert up == 2 and blur is not None, "only 2x upsampling is supported"
    # Transposed conv (zero insertion + conv) gives 2H + k - 2 pixels; the FIR blur (gain 4 to
    # keep the signal level after zero insertion) trims it back to 2H.
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    p = blur.shape[0] - 2 - (k - 1)
    return upfirdn2d(x, blur * 4, pad=((p + 1) // 2 + 1, p // 2 + 1))


# ----------------------------------------------------------------------------------------------
# Modules.


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (and an optional learning-rate multiplier)."""

    def __init__(
        self,
        in_dim: int,  # input features
        out_dim: int,  # output features
        bias: bool = True,  # add a learned bias
        bias_init: float = 0.0,  # initial bias (1 for style modulation)
        lr_mul: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        activation: bool = False,  # fused bias + leaky ReLU (gain sqrt 2)
    ):
        super().__init__()
        # Stored weight has std 1/lr_mul so that, after the run-time scale, Adam's per-parameter
        # step size moves the effective weight lr_mul times slower.
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.scale).to(x.dtype)
        bias = None if self.bias is None else (self.bias * self.lr_mul).to(x.dtype)
        if self.activation:
            return bias_act(F.linear(x, weight), bias)
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}"


class EqualConv2d(nn.Module):
    """Conv layer with equalised learning rate."""

    def __init__(
        self,
        in_channels: int,  # input channels
        out_channels: int,  # output channels
        kernel_size: int,  # square kernel
        stride: int = 1,  # conv stride
        padding: int = 0,  # zero padding
        bias: bool = True,  # add a learned bias
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight * self.scale).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)


class Upsample(nn.Module):
    """2x FIR upsampling (the skip path of the generator's ToRGB)."""

    def __init__(
        self,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps
        factor: int = 2,  # upsampling factor
    ):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(blur_kernel) * factor**2, persistent=False)
        self.factor = factor
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class Downsample(nn.Module):
    """2x FIR downsampling (the discriminator's residual skip)."""

    def __init__(
        self,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # FIR taps
        factor: int = 2,  # downsampling factor
    ):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(blur_kernel), persistent=False)
        self.factor = factor
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, down=self.factor, pad=self.pad)


class Blur(nn.Module):
    """FIR filter with explicit padding (before a strided conv in the discriminator)."""

    def __init__(
        self,
        blur_kernel: Sequence[float],  # FIR taps
        pad: tuple[int, int],  # (before, after) padding
    ):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(blur_kernel), persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class NoiseInjection(nn.Module):
    """Adds per-pixel noise (shared over channels) scaled by a learned scalar initialised to 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(
        self,
        x: torch.Tensor,  # [B, C, H, W]
        noise: torch.Tensor | None = None,  # [B or 1, 1, H, W]; None draws fresh noise
        generator: torch.Generator | None = None,  # RNG for fresh noise (reproducible runs)
    ) -> torch.Tensor:
        if noise is None:
            noise = random_noise((x.shape[0], 1, *x.shape[2:]), generator, x.device, x.dtype)
        assert noise.shape[-2:] == x.shape[-2:], (noise.shape, x.shape)
        return x + self.weight.to(x.dtype) * noise.to(device=x.device, dtype=x.dtype)


def random_noise(
    shape: Sequence[int],  # tensor shape
    generator: torch.Generator | None,  # RNG, possibly on another device than `device`
    device: torch.device | str | None,  # where the result lives
    dtype: torch.dtype | None,  # result dtype
) -> torch.Tensor:
    """Standard normal noise; drawn on the generator's device so any RNG works with any target."""
    if generator is None:
        return torch.randn(*shape, device=device, dtype=dtype)
    noise = torch.randn(*shape, generator=generator, device=generator.device)
    return noise.to(device=device, dtype=dtype)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv with a global (per-sample) style.

    Parameters: ``weight [Cout, Cin, k, k]`` (equalised) and ``modulation`` (w -> per-input-channel
    scale, bias initialised to 1 so a fresh layer starts as a plain conv).
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
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.up = 2 if upsample else 1
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.modulation = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.register_buffer("blur", fir_kernel(blur_kernel), persistent=False)

    def scaled_weight(self) -> torch.Tensor:
        """``[Cout, Cin, k, k]`` weight with the equalised-lr scale applied."""
        return self.weight * self.scale

    def forward(
        self,
        x: torch.Tensor,  # [B, Cin, H, W]
        w: torch.Tensor,  # [B, w_dim]
    ) -> torch.Tensor:
        styles = self.modulation(w)
        return modulated_conv2d(
            x, self.scaled_weight(), styles, self.demodulate, up=self.up, blur=self.blur
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, up={self.up}, "
            f"demodulate={self.demodulate}"
        )
