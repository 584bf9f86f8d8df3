"""Mask-guided StyleGAN2: layers, the fast vs reference mask-guided conv, generator, discriminator.

Measured fast-vs-reference tolerance (also stated in models/mask_guided.py). The two differ by
design only in the *border band*: output pixels whose footprint (radius 1 input pixel for 3x3,
2 for the upsampling conv) touches another region. There, over 5 seeds, 8x8-pixel random regions,
64 channels, region styles with per-channel std sigma_s across regions (0.25 / 0.5 / 1.0):

* RMS(fast - ref) / RMS(ref)            = 0.49-0.70 sigma_s (3x3), 0.27-0.39 sigma_s (up x2);
* max |fast - ref| / std(ref)           = 2.5-4.1 sigma_s (3x3), 2.6-4.3 sigma_s (up x2);
* RMS(fast - ref) / RMS(ref(mask shifted by one pixel) - ref) = 0.82-0.85: the fast layer is
  closer to the reference than the reference is to itself when the segmentation moves by 1 px.

`test_fast_vs_reference_tolerance_at_borders` asserts RMS <= 0.8 sigma_s RMS(ref),
max <= 5 sigma_s std(ref) and the one-pixel-shift ratio <= 1. Off the band they agree to 1e-5.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segtalker_core.models.discriminator import Discriminator, DiscriminatorConfig, minibatch_stddev
from segtalker_core.models.layers import (
    Downsample,
    ModulatedConv2d,
    Upsample,
    demodulation,
    upfirdn2d,
)
from segtalker_core.models.mask_guided import (
    MaskGuidedModulatedConv,
    RegionMasks,
    pixel_demodulation,
    style_map,
)
from segtalker_core.models.stylegan import Generator, GeneratorConfig, count_parameters

R = 12


def tiny_config(size: int = 64, **overrides) -> GeneratorConfig:
    fields = dict(size=size, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    fields.update(overrides)
    return GeneratorConfig(**fields)


def block_labels(batch: int, size: int, block: int, seed: int = 0) -> torch.Tensor:
    """``[B, size, size]`` random region labels constant on ``block x block`` tiles."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, R, (batch, size // block, size // block), generator=g)
    return coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)


def upsample_nearest(t: torch.Tensor, factor: int) -> torch.Tensor:
    return t.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def single_region_within(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """``[B, H, W]`` bool: every pixel within ``radius`` (Chebyshev, clipped at the border) has
    the same label."""
    one_hot = F.one_hot(labels, R).permute(0, 3, 1, 2).float()
    present = F.max_pool2d(one_hot, 2 * radius + 1, 1, radius)
    return present.sum(dim=1) == 1


def fused_modconv_oracle(x, weight, styles, demodulate, up=1, blur=None):
    """StyleGAN2's original form: modulate the weights per sample, demodulate, grouped conv."""
    b = x.shape[0]
    w = weight[None] * styles[:, None, :, None, None]  # [B, Cout, Cin, k, k]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4)) + 1e-8)[:, :, None, None, None]
    k = weight.shape[-1]
    xs = x.reshape(1, -1, *x.shape[2:])
    if up == 1:
        y = F.conv2d(xs, w.reshape(-1, *w.shape[2:]), padding=k // 2, groups=b)
        return y.reshape(b, -1, *y.shape[2:])
    wt = w.transpose(1, 2).reshape(-1, w.shape[1], k, k)  # [B*Cin, Cout, k, k]
    y = F.conv_transpose2d(xs, wt, stride=2, groups=b)
    y = y.reshape(b, -1, *y.shape[2:])
    return upfirdn2d(y, blur * 4, pad=(1, 1))


# ----------------------------------------------------------------------------------------------
# Layers.


def test_fir_resampling_preserves_constants_and_symmetry():
    const = torch.full((1, 2, 8, 8), 3.0)
    up = Upsample()(const)
    down = Downsample()(const)
    assert up.shape[-2:] == (16, 16) and down.shape[-2:] == (4, 4)
    # Away from the zero-padded border the signal level is kept (gain factor^2 is right).
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 3.0))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 3.0))
    # A left-right symmetric image stays symmetric: the padding is centred (no half-pixel shift).
    img = torch.randn(1, 1, 8, 8)
    img = img + img.flip(-1)
    for op in (Upsample(), Downsample()):
        out = op(img)
        torch.testing.assert_close(out, out.flip(-1))


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demod", [True, False])
def test_modulated_conv_equals_weight_modulation(up, demod):
    torch.manual_seed(0)
    layer = ModulatedConv2d(6, 5, 3, 8, demodulate=demod, upsample=up == 2)
    x, w = torch.randn(3, 6, 7, 7), torch.randn(3, 8)
    styles = layer.modulation(w)
    expected = fused_modconv_oracle(x, layer.scaled_weight(), styles, demod, up, layer.blur)
    out = layer(x, w)
    assert out.shape == (3, 5, 7 * up, 7 * up)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_demodulation_is_fp16_safe():
    # sum of w^2 over 64*9 taps of size ~100 is ~6e6: it overflows fp16 (max 65504).
    weight = torch.full((4, 64, 3, 3), 100.0)
    styles = torch.ones(2, 64)
    expected = demodulation(weight, styles)
    half = demodulation(weight.half(), styles.half())
    assert torch.isfinite(half).all() and (half > 0).all()
    torch.testing.assert_close(half, expected)
    masks = F.one_hot(block_labels(2, 8, 4), R).permute(0, 3, 1, 2).half()
    per_pixel = pixel_demodulation(weight.half(), styles.half()[:, None].expand(-1, R, -1), masks)
    torch.testing.assert_close(per_pixel, expected[:, :, None, None].expand_as(per_pixel))


# ----------------------------------------------------------------------------------------------
# Mask-guided conv: fast vs reference.


def make_layer(up: int, k: int = 3, demod: bool = True, cin: int = 16, cout: int = 12, seed=0):
    torch.manual_seed(seed)
    return MaskGuidedModulatedConv(cin, cout, k, 32, demodulate=demod, upsample=up == 2)


def run(layer, impl, x, w, masks):
    layer.impl = impl
    return layer(x, w, masks)


@pytest.mark.parametrize("up,k,demod", [(1, 3, True), (2, 3, True), (1, 1, False)])
def test_one_region_fast_equals_reference_equals_plain(up, k, demod):
    layer = make_layer(up, k, demod)
    x, w = torch.randn(2, 16, 8, 8), torch.randn(2, R, 32)
    masks = RegionMasks(torch.full((2, 8 * up, 8 * up), 5), R)
    fast = run(layer, "fast", x, w, masks)
    ref = run(layer, "reference", x, w, masks)
    plain = layer(x, w[:, 5])  # [B, w_dim]: the plain StyleGAN2 layer with region 5's style
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    styles = layer.modulation(w[:, 5])
    expected = fused_modconv_oracle(x, layer.scaled_weight(), styles, demod, up, layer.blur)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("up", [1, 2])
def test_fast_equals_reference_where_receptive_field_is_one_region(up):
    layer = make_layer(up)
    labels_in = block_labels(2, 32, 8)
    x, w = torch.randn(2, 16, 32, 32), torch.randn(2, R, 32)
    masks = RegionMasks(upsample_nearest(labels_in, up), R)
    fast = run(layer, "fast", x, w, masks)
    ref = run(layer, "reference", x, w, masks)
    # Footprint of an output pixel: radius 1 input pixel for the 3x3 conv; for the transposed
    # conv + 4-tap blur it stays within 2 input pixels.
    interior = upsample_nearest(single_region_within(labels_in, 1 if up == 1 else 2), up)
    interior = interior[:, None].expand_as(fast)
    assert interior.float().mean() > 0.3  # the check covers a real share of the image
    torch.testing.assert_close(fast[interior], ref[interior], atol=1e-5, rtol=1e-5)
    assert (fast[~interior] - ref[~interior]).abs().max() > 1e-3  # borders do differ


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("spread", [0.25, 0.5, 1.0])
def test_fast_vs_reference_tolerance_at_borders(up, spread):
    layer = make_layer(up, cin=64, cout=64)
    torch.manual_seed(1)
    x = torch.randn(4, 64, 32, 32)
    w = torch.randn(4, 1, 32) + spread * torch.randn(4, R, 32)  # regions scattered around a face
    labels_in = block_labels(4, 32, 8, seed=1)
    labels = upsample_nearest(labels_in, up)
    with torch.no_grad():
        fast = run(layer, "fast", x, w, RegionMasks(labels, R))
        ref = run(layer, "reference", x, w, RegionMasks(labels, R))
        shifted = run(layer, "reference", x, w, RegionMasks(labels.roll((1, 1), (1, 2)), R))
        sigma_s = layer.modulation(w).std(dim=1).mean()
    band = upsample_nearest(~single_region_within(labels_in, 1 if up == 1 else 2), up)
    band = band[:, None].expand_as(fast)
    diff = (fast - ref)[band]
    rms_ratio = diff.square().mean().sqrt() / ref.square().mean().sqrt()
    max_ratio = diff.abs().max() / ref.std()
    shift_ratio = diff.square().mean().sqrt() / (shifted - ref)[band].square().mean().sqrt()
    assert rms_ratio <= 0.8 * sigma_s, (rms_ratio, sigma_s)
    assert max_ratio <= 5.0 * sigma_s, (max_ratio, sigma_s)
    assert shift_ratio <= 1.0, shift_ratio


def test_to_rgb_fast_equals_reference_everywhere_even_soft():
    layer = make_layer(1, k=1, demod=False)
    x, w = torch.randn(2, 16, 16, 16), torch.randn(2, R, 32)
    hard = RegionMasks(torch.randint(0, R, (2, 16, 16)), R)
    torch.testing.assert_close(run(layer, "fast", x, w, hard), run(layer, "reference", x, w, hard))
    soft = RegionMasks(torch.softmax(torch.randn(2, R, 16, 16), dim=1), R)
    torch.testing.assert_close(
        run(layer, "fast", x, w, soft), run(layer, "reference", x, w, soft), atol=1e-5, rtol=1e-5
    )


def test_swapping_a_region_style_changes_style_map_only_inside_it():
    labels = block_labels(2, 16, 4)
    masks = RegionMasks(labels, R).at(16)
    styles = torch.randn(2, R, 8)
    swapped = styles.clone()
    swapped[:, 3] = torch.randn(2, 8)
    changed = (style_map(swapped, masks) - style_map(styles, masks)).abs().amax(dim=1) > 0
    assert torch.equal(changed, labels == 3)


@pytest.mark.parametrize("up", [1, 2])
def test_swapping_a_region_style_changes_layer_output_only_near_it(up):
    layer = make_layer(up)
    labels_in = block_labels(2, 16, 4, seed=2)
    masks = RegionMasks(upsample_nearest(labels_in, up), R)
    x, w = torch.randn(2, 16, 16, 16), torch.randn(2, R, 32)
    swapped = w.clone()
    swapped[:, 3] = torch.randn(2, 32)
    delta = (run(layer, "fast", x, swapped, masks) - run(layer, "fast", x, w, masks)).abs()
    changed = delta.amax(dim=1) > 1e-6
    # Region 3 dilated by the kernel radius (1 input pixel; 2 for the upsampling footprint).
    radius = 1 if up == 1 else 2
    near = F.max_pool2d((labels_in == 3).float()[:, None], 2 * radius + 1, 1, radius)[:, 0] > 0
    near = upsample_nearest(near, up)
    assert (labels_in == 3).any()
    assert not (changed & ~near).any()
    assert changed[upsample_nearest(labels_in == 3, up)].all()


# ----------------------------------------------------------------------------------------------
# Generator.


def test_config_conventions():
    for size, n_latent in [(64, 10), (128, 12), (256, 14), (512, 16), (1024, 18)]:
        assert GeneratorConfig(size=size).n_latent == n_latent
        # E4S: 13 per-region rows; the output resolution's layers always stay global.
        assert GeneratorConfig(size=size).num_mask_guided == min(13, n_latent - 3)
    cfg = GeneratorConfig(size=1024)
    assert [cfg.channels(2**i) for i in range(2, 11)] == [512] * 5 + [256, 128, 64, 32]
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        GeneratorConfig(size=96)
    with pytest.raises(ValueError):
        GeneratorConfig(mask_guided_impl="grouped")
    with pytest.raises(ValueError):
        GeneratorConfig(size=64, mask_guided_layers=11)


def test_parameter_counts_match_stylegan2_at_256():
    # StyleGAN2 config-f widths at 256: G 30.0 M (with mapping), D 28.9 M.
    assert round(count_parameters(Generator(GeneratorConfig(size=256))) / 1e6, 1) == 30.0
    assert round(count_parameters(Discriminator(DiscriminatorConfig(size=256))) / 1e6, 1) == 28.9


@pytest.mark.parametrize("size", [64, 128, 256, 512, 1024])
def test_generator_shapes_at_every_size(size):
    g = Generator(tiny_config(size, channel_base=1024, channel_max=8))
    assert g.n_latent == 2 * int(math.log2(size)) - 2
    assert len(g.make_noise()) == g.n_latent - 1
    codes = torch.randn(1, R, g.n_latent, 32)
    with torch.no_grad():
        img = g(codes, torch.randint(0, R, (1, 48, 48)))  # any segmentation size
    assert img.shape == (1, 3, size, size)
    assert torch.isfinite(img).all()


def test_one_region_generator_equals_unconditional():
    cfg = tiny_config()
    g = Generator(cfg)
    plain = Generator(tiny_config(mask_guided_layers=0))
    plain.load_state_dict(g.state_dict())
    codes = torch.randn(2, R, g.n_latent, 32)
    seg = torch.full((2, 64, 64), 6)
    noise = g.make_noise(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = g(codes, seg, noise=noise)
        g.set_mask_guided_impl("reference")
        ref = g(codes, seg, noise=noise)
        # The unconditional generator's global style is the area-weighted code: region 6's.
        expected = plain(codes, seg, noise=noise)
        also = plain(g.broadcast(codes[:, 6]), None, noise=noise)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, also, atol=1e-5, rtol=1e-5)


def test_reference_below_a_resolution():
    g = Generator(tiny_config(reference_max_res=8))
    impls = {(res, layer.impl) for res, layer in g.modulated_layers()}
    assert impls == {(4, "reference"), (8, "reference"), (16, "fast"), (32, "fast"), (64, "fast")}
    g.set_mask_guided_impl("reference")
    assert {layer.impl for _, layer in g.modulated_layers()} == {"reference"}
    g.set_mask_guided_impl("fast")
    assert sum(layer.impl == "fast" for _, layer in g.modulated_layers()) == 9
    # Same parameters, same images where the two implementations agree (one region).
    full = Generator(tiny_config())
    full.load_state_dict(g.state_dict())
    codes, seg = torch.randn(1, R, g.n_latent, 32), torch.full((1, 64, 64), 2)
    noise = g.make_noise(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(g(codes, seg, noise=noise), full(codes, seg, noise=noise))


def test_label_map_and_one_hot_masks_agree():
    g = Generator(tiny_config())
    labels = block_labels(2, 64, 16)  # 4x4 tiles: nearest and area resizing agree at every layer
    soft = F.one_hot(labels, R).permute(0, 3, 1, 2).float()
    codes = torch.randn(2, R, g.n_latent, 32)
    noise = g.make_noise(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(g(codes, labels, noise=noise), g(codes, soft, noise=noise))


def test_mask_guided_layers_use_region_styles():
    g = Generator(tiny_config())
    codes = torch.randn(1, R, g.n_latent, 32)
    seg = block_labels(1, 64, 16)
    assert (seg == 3).any()
    other = codes.clone()
    other[:, 3, : g.num_mask_guided] = torch.randn(g.num_mask_guided, 32)
    late = codes.clone()
    late[:, 3, g.num_mask_guided :] += 0.5  # region 3's own rows beyond K
    noise = g.make_noise(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = g(codes, seg, noise=noise)
        assert (g(other, seg, noise=noise) - base).abs().max() > 1e-3
        # A region absent from the segmentation has no say in the image at all.
        absent = codes.clone()
        absent[:, 11] = torch.randn(g.n_latent, 32)
        seg_no11 = seg.clamp_max(10)
        without = g(codes, seg_no11, noise=noise)
        torch.testing.assert_close(g(absent, seg_no11, noise=noise), without)
        # Beyond K a region's rows act only through the (area-weighted) global style.
        assert (g(late, seg, noise=noise) - base).abs().max() > 1e-4


def test_global_style_weights():
    g = Generator(tiny_config())
    codes = torch.randn(1, R, g.n_latent, 32)
    seg = torch.zeros(1, 8, 8, dtype=torch.long)
    seg[:, :, 2:] = 4  # region 4 covers 3/4, background 1/4
    masks = RegionMasks(seg, R)
    expected = 0.25 * codes[:, 0] + 0.75 * codes[:, 4]
    torch.testing.assert_close(g.global_codes(codes, masks, None), expected)
    valid = torch.ones(1, R, dtype=torch.bool)
    valid[:, 4] = False  # an invalid code is left out
    torch.testing.assert_close(g.global_codes(codes, masks, valid), codes[:, 0])
    g.config.global_style = "mean"
    torch.testing.assert_close(g.global_codes(codes, masks, None), codes.mean(dim=1))
    # Identical rows (what the encoder writes beyond K) give exactly that row.
    same = codes[:, :1].expand(-1, R, -1, -1)
    torch.testing.assert_close(g.global_codes(same, masks, None), codes[:, 0])
    g.config.global_style = "first"  # E4S: region 0's rows, whatever the masks or validity
    torch.testing.assert_close(g.global_codes(codes, masks, valid), codes[:, 0])


def test_legacy_nearest_masks_pick_other_pixels_and_change_the_image():
    """E4S's legacy-nearest mask resizing is a config switch: on a map with one-pixel detail the
    two rules sample different labels, so the images differ; the default is unchanged."""
    assert GeneratorConfig().legacy_nearest_masks is False
    plain = Generator(tiny_config(mask_guided_impl="reference"))
    legacy = Generator(tiny_config(mask_guided_impl="reference", legacy_nearest_masks=True))
    legacy.load_state_dict(plain.state_dict())
    codes = torch.randn(1, R, plain.n_latent, 32)
    seg = (torch.arange(64)[None, :, None] + torch.arange(64)[None, None, :]) % R  # diagonal stripes
    noise = plain.make_noise(1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (plain(codes, seg, noise=noise) - legacy(codes, seg, noise=noise)).abs().max()
    assert difference > 1e-3


def test_noise_fixed_per_video():
    g = Generator(tiny_config())
    with torch.no_grad():
        for module in g.modules():
            if hasattr(module, "noise"):
                module.noise.weight.fill_(0.5)
    codes = torch.randn(1, R, g.n_latent, 32).expand(3, -1, -1, -1)
    seg = block_labels(1, 64, 8).expand(3, -1, -1)
    with torch.no_grad():
        frames = g(codes, seg, noise=g.make_noise(1, torch.Generator().manual_seed(7)))
        again = g(codes[:1], seg[:1], noise_generator=torch.Generator().manual_seed(7))
        other = g(codes[:1], seg[:1], noise_generator=torch.Generator().manual_seed(8))
        fresh = g(codes, seg)
    torch.testing.assert_close(frames[0], frames[2])  # one noise list for every frame
    torch.testing.assert_close(frames[:1], again)  # a seeded generator reproduces it
    assert (other - again).abs().max() > 1e-3
    assert (fresh[0] - fresh[1]).abs().max() > 1e-3  # without either, noise is redrawn


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_half_precision_forward(dtype, impl):
    g = Generator(tiny_config(mask_guided_impl=impl))
    codes = g.broadcast(g.mapping(torch.randn(2, 32))).detach()
    codes = codes + 0.3 * torch.randn_like(codes)
    seg = block_labels(2, 64, 8)
    noise = g.make_noise(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = g(codes, seg, noise=noise)
        out = g.to(dtype)(codes.to(dtype), seg, noise=noise).float()
    assert torch.isfinite(out).all()
    assert (out - ref).square().mean().sqrt() < 0.05 * ref.square().mean().sqrt()


def test_input_validation():
    g = Generator(tiny_config())
    codes = torch.randn(1, R, g.n_latent, 32)
    with pytest.raises(ValueError, match="segmentation"):
        g(codes)
    with pytest.raises(ValueError, match="0..11"):
        g(codes, torch.full((1, 64, 64), 17))
    with pytest.raises(AssertionError):
        g(codes[:, :, :-1], torch.zeros(1, 64, 64, dtype=torch.long))


def test_mean_latent_is_mapping_mean():
    g = Generator(tiny_config())
    avg = g.mean_latent(n=300, generator=torch.Generator().manual_seed(0), chunk=128)
    rng = torch.Generator().manual_seed(0)  # the same z, drawn in the same chunks
    z = torch.cat([torch.randn(n, 32, generator=rng) for n in (128, 128, 44)])
    with torch.no_grad():
        torch.testing.assert_close(avg, g.mapping(z).mean(dim=0), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Discriminator and training signal.


def tiny_d_config(**overrides) -> DiscriminatorConfig:
    fields = dict(size=64, channel_base=256, channel_max=16)
    fields.update(overrides)
    return DiscriminatorConfig(**fields)


@pytest.mark.parametrize("batch", [1, 3, 4, 6])
def test_discriminator_output_shape(batch):
    d = Discriminator(tiny_d_config(in_channels=3 + R))
    logits = d(torch.randn(batch, 3 + R, 64, 64))
    assert logits.shape == (batch, 1) and torch.isfinite(logits).all()


def test_minibatch_stddev_groups():
    x = torch.randn(8, 4, 2, 2)
    out = minibatch_stddev(x, group_size=4, num_features=1)
    assert out.shape == (8, 5, 2, 2)
    # Samples n and n + 2, n + 4, n + 6 form a group (stride B / group).
    group = x[0::2]
    expected = group.std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(out[0, 4], torch.full((2, 2), expected.item()), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[6, 4], out[0, 4])
    assert out[1, 4, 0, 0] != out[0, 4, 0, 0]


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_one_gan_step_gradients_flow(impl):
    torch.manual_seed(0)
    g = Generator(tiny_config(mask_guided_impl=impl))
    d = Discriminator(tiny_d_config())
    z = torch.randn(2, 32)
    codes = g.broadcast(g.mapping(z)) + 0.1 * torch.randn(2, R, g.n_latent, 32)
    seg = block_labels(2, 64, 8)
    fake = g(codes, seg)
    g_loss = F.softplus(-d(fake)).mean()  # non-saturating
    g_loss.backward()
    for name, p in g.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    d.zero_grad()
    real = torch.rand(2, 3, 64, 64) * 2 - 1
    d_loss = F.softplus(d(fake.detach())).mean() + F.softplus(-d(real)).mean()
    d_loss.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.99))
    opt.step()
    with torch.no_grad():
        after = F.softplus(d(fake.detach())).mean() + F.softplus(-d(real)).mean()
    assert after < d_loss
