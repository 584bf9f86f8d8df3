"""Mask-guided encoder: output layout, absent-region fallback, validity, generator round trip."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segtalker_core.models.encoder import (EncoderConfig, MaskGuidedEncoder, hard_masked_mean,
                                           masked_average)
from segtalker_core.models.mask_guided import RegionMasks
from segtalker_core.models.stylegan import Generator, GeneratorConfig

R = 12


def tiny_generator_config(**overrides) -> GeneratorConfig:
    fields = dict(size=64, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    fields.update(overrides)
    return GeneratorConfig(**fields)


def tiny_encoder(gen_config: GeneratorConfig | None = None, **overrides) -> MaskGuidedEncoder:
    fields = dict(
        input_size=64,
        stem_channels=8,
        stage_channels=(8, 16, 16, 24),
        stage_blocks=(1, 1, 1, 1),
        mlp_hidden=32,
    )
    fields.update(overrides)
    cfg = EncoderConfig.for_generator(gen_config or tiny_generator_config(), **fields)
    torch.manual_seed(0)
    encoder = MaskGuidedEncoder(cfg).eval()
    encoder.set_latent_avg(torch.randn(cfg.w_dim))
    return encoder


def labels_without(region: int, batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, R, (batch, size // 8, size // 8), generator=g)
    coarse[coarse == region] = 0
    labels = coarse.repeat_interleave(8, 1).repeat_interleave(8, 2)
    for r in range(R):  # every other region present at least once
        if r != region:
            labels[:, (r // 4) * 8, (r % 4) * 8 + 1] = r
    return labels


def test_default_config_matches_e4s_layout():
    cfg = EncoderConfig.for_generator(GeneratorConfig(size=1024))
    assert cfg.feature_dim == 1280  # 256 + 512 + 512 pooled channels, as E4S
    assert (cfg.n_latent, cfg.n_styles, cfg.w_dim, cfg.num_regions) == (18, 13, 512, 12)  # E4S: K = 13
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        EncoderConfig(n_styles=15, n_latent=14)


def test_output_layout_and_average_latent_rows():
    encoder = tiny_encoder()
    cfg = encoder.config
    image = torch.rand(2, 3, 80, 80) * 2 - 1  # any image size: resized to input_size
    labels = labels_without(11)
    with torch.no_grad():
        codes, valid = encoder(image, labels)
    assert codes.shape == (2, R, cfg.n_latent, cfg.w_dim) and valid.shape == (2, R)
    assert valid.dtype == torch.bool
    avg = encoder.latent_avg
    # Rows beyond K are the average latent for every region; rows < K carry the image.
    tail = codes[:, :, cfg.n_styles :]
    torch.testing.assert_close(tail, avg.expand_as(tail))
    assert (codes[:, :11, : cfg.n_styles] - avg).abs().amax(dim=-1).min() > 1e-4


def test_absent_region_gets_average_latent_and_invalid_flag():
    encoder = tiny_encoder()
    labels = labels_without(9)  # no mouth interior
    labels[1, :8, :8] = 9  # ...except in the second image
    with torch.no_grad():
        codes, valid = encoder(torch.rand(2, 3, 64, 64) * 2 - 1, labels)
    expected = torch.ones(2, R, dtype=torch.bool)
    expected[0, 9] = False
    assert torch.equal(valid, expected)
    avg = encoder.latent_avg
    torch.testing.assert_close(codes[0, 9], avg.expand_as(codes[0, 9]), rtol=0, atol=0)
    assert (codes[1, 9, 0] - avg).abs().max() > 1e-4
    assert torch.isfinite(codes).all()


def test_one_pixel_region_is_valid_at_every_scale():
    encoder = tiny_encoder()
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 30, 30] = 10  # vanishes under nearest resizing to 8x8; area resizing keeps it
    with torch.no_grad():
        codes, valid = encoder(torch.rand(1, 3, 64, 64), labels)
        masks = RegionMasks(labels, R, hard=False)
        features = encoder.region_features(torch.rand(1, 3, 64, 64), masks)
    assert valid[0, 10] and not valid[0, 5]
    scales = encoder.config.stage_channels[-encoder.config.num_scales :]
    for chunk in features[0, 10].split(list(scales)):
        assert chunk.abs().max() > 0  # every scale saw the one pixel
    assert torch.isfinite(codes).all()


def test_label_map_equals_one_hot_masks():
    encoder = tiny_encoder()
    labels = labels_without(4)
    soft = F.one_hot(labels, R).permute(0, 3, 1, 2).float()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, va = encoder(image, labels)
        b, vb = encoder(image, soft)
    torch.testing.assert_close(a, b)
    assert torch.equal(va, vb)


def test_masked_average_is_mean_inside_region():
    features = torch.randn(2, 5, 8, 8)
    labels = torch.randint(0, R, (2, 8, 8))
    masks = F.one_hot(labels, R).permute(0, 3, 1, 2).float()
    pooled = masked_average(features, masks)
    for b in range(2):
        for r in labels[b].unique().tolist():
            inside = features[b][:, labels[b] == r]
            torch.testing.assert_close(pooled[b, r], inside.mean(dim=1))


def test_region_code_depends_on_its_own_pixels_only_through_pooling():
    encoder = tiny_encoder()
    labels = labels_without(7, batch=1)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        codes, _ = encoder(image, labels)
        swapped = labels.clone()
        swapped[labels == 3] = 5  # eyes relabelled as nose: eyes absent, nose pools more pixels
        codes2, valid2 = encoder(image, swapped)
    assert not valid2[0, 3]
    torch.testing.assert_close(codes2[0, 3], encoder.latent_avg.expand_as(codes2[0, 3]))
    assert (codes2[0, 5] - codes[0, 5]).abs().max() > 1e-5
    torch.testing.assert_close(codes2[0, 6], codes[0, 6])  # skin's pixels unchanged


def test_codes_drive_the_generator_and_gradients_flow():
    gen_cfg = tiny_generator_config()
    generator = Generator(gen_cfg)
    encoder = tiny_encoder(gen_cfg)
    encoder.set_latent_avg(generator.mean_latent(n=256, generator=torch.Generator().manual_seed(0)))
    encoder.train()
    labels = labels_without(11)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    codes, valid = encoder(image, labels)
    out = generator(codes, labels, valid=valid)
    assert out.shape == (2, 3, 64, 64)
    F.mse_loss(out, image).backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_half_precision_encoder():
    encoder = tiny_encoder()
    labels = labels_without(2)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ref, _ = encoder(image, labels)
        out, valid = encoder.to(torch.bfloat16)(image.bfloat16(), labels)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()
    assert not valid[:, 2].any()


# -- E4S variant (EncoderConfig.e4s) --------------------------------------------------------------


def tiny_e4s_encoder() -> MaskGuidedEncoder:
    cfg = EncoderConfig.e4s(input_size=64, stem_channels=16, stage_channels=(16, 32, 32, 48),
                            stage_blocks=(1, 2, 1, 1), mlp_hidden=32, w_dim=32, n_latent=10,
                            n_styles=7)
    torch.manual_seed(0)
    encoder = MaskGuidedEncoder(cfg).eval()
    encoder.set_latent_avg(torch.randn(cfg.w_dim))
    return encoder


def test_old_configs_keep_the_pack_variant():
    old = EncoderConfig().to_dict()
    for field in ("backbone", "input_antialias", "pooling", "mlp_activation"):
        del old[field]  # a bundle written before the E4S variant existed
    cfg = EncoderConfig.from_dict(old)
    assert (cfg.backbone, cfg.input_antialias, cfg.pooling, cfg.mlp_activation) == (
        "ir", True, "soft", "lrelu_0.2_gain")
    e4s = EncoderConfig.e4s()
    assert (e4s.feature_dim, e4s.n_latent, e4s.n_styles, e4s.stage_blocks) == (
        1280, 18, 13, (3, 4, 14, 3))
    assert EncoderConfig.from_dict(e4s.to_dict()) == e4s
    with pytest.raises(ValueError, match="EncoderConfig.pooling"):
        EncoderConfig(pooling="max")


def test_e4s_variant_layout_and_zero_vector_at_an_empty_scale():
    encoder = tiny_e4s_encoder()
    cfg = encoder.config
    assert not any("running" in k or "num_batches" in k for k in encoder.state_dict())  # IN
    labels = labels_without(11, batch=1)
    labels[labels == 10] = 0
    labels[0, 0, 0] = 11  # one pixel, a top-left one: legacy nearest samples it at every scale
    labels[0, 1:4, 9] = 10  # three pixels that no scale samples (rows/cols multiples of 4, 8, 16)
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes, valid = encoder(image, labels)
        features = encoder.region_features(image, encoder.region_masks(labels))
    assert codes.shape == (1, R, cfg.n_latent, cfg.w_dim) and bool(valid.all())
    tail = codes[:, :, cfg.n_styles:]
    torch.testing.assert_close(tail, encoder.latent_avg.expand_as(tail), rtol=0, atol=0)
    scales = cfg.stage_channels[-cfg.num_scales:]  # features at 16, 8, 4 px for a 64 input
    chunks = features[0, 11].split(list(scales))
    assert all(c.abs().max() > 0 for c in chunks)  # top-left pixel sampled at every scale
    chunks = features[0, 10].split(list(scales))
    # Present in the image (valid), but pooled as zero vectors at every scale, as E4S.
    assert all(c.abs().max() == 0 for c in chunks)
    with torch.no_grad():  # the two halves of forward compose to it
        torch.testing.assert_close(encoder.codes_from_features(features, valid), codes)


def test_hard_masked_mean_is_exact_and_zero_when_empty():
    features = torch.randn(1, 4, 6, 6)
    masks = torch.zeros(1, 2, 6, 6)
    masks[0, 0, :2, :3] = 1
    pooled = hard_masked_mean(features, masks)
    torch.testing.assert_close(pooled[0, 0], features[0, :, :2, :3].mean(dim=(1, 2)))
    assert torch.equal(pooled[0, 1], torch.zeros(4))
