"""TSG: shapes, audio conditioning, mouth masking, the sequence predictor and its losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segtalker_core.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from segtalker_core.models.tsg import (
    LIPS, MOUTH_INTERIOR, TSG, MouthMaskConfig, TSGConfig, mask_mouth_area, mouth_area_mask,
    onehot, predict_talking_segmentation,
)
from segtalker_core.models.tsg_losses import cross_entropy_loss, dice_loss, tsg_loss

TINY_AUDIO = AudioEncoderConfig(widths=(4, 4, 8, 8, 8), residual_blocks=(1, 0, 0, 0))
SKIN = 6


def tiny(resolution: int = 64, **kw) -> TSG:
    torch.manual_seed(0)
    cfg = TSGConfig(resolution=resolution, base_channels=4, max_channels=8, audio=TINY_AUDIO, **kw)
    return TSG(cfg).eval()


def face_maps(n: int, size: int, mouth_open: int = 2) -> torch.Tensor:
    """Crude faces: skin disc, lips bar at 70% height, mouth interior of ``mouth_open`` rows."""
    regions = torch.zeros(n, size, size, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    skin = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2
    regions[:, skin] = SKIN
    y0, x0, x1 = int(0.68 * size), int(0.38 * size), int(0.62 * size)
    regions[:, y0:y0 + 2 + mouth_open + 2, x0:x1] = LIPS
    regions[:, y0 + 2:y0 + 2 + mouth_open, x0 + 2:x1 - 2] = MOUTH_INTERIOR
    return regions


def test_audio_encoder_matches_wav2lip_layout():
    enc = AudioEncoder(AudioEncoderConfig()).eval()
    shapes = []
    x = torch.zeros(1, 1, 80, 16)
    for block in enc.blocks:
        x = block(x)
        if tuple(x.shape[1:]) not in shapes:
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(32, 80, 16), (64, 27, 16), (128, 9, 6), (256, 3, 3), (512, 1, 1)]
    with pytest.raises(ValueError, match=r"\[B, 1, 80, 16\]"):
        enc(torch.zeros(1, 80, 16))


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_logits_shape_at_each_resolution(resolution):
    model = tiny(resolution)
    src = onehot(face_maps(2, resolution))
    logits = model(src, src, torch.randn(2, 1, 80, 16))
    assert logits.shape == (2, 12, resolution, resolution)
    assert model.config.depth == {64: 3, 128: 4, 256: 5}[resolution]


def test_gradients_reach_audio_encoder_and_every_parameter():
    model = tiny(film_levels=2).train()
    src = onehot(face_maps(2, 64))
    logits = model(src, src, torch.randn(2, 1, 80, 16))
    cross_entropy_loss(logits, face_maps(2, 64)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert model.audio_encoder.blocks[0].conv.weight.grad.abs().sum() > 0
    assert model.up[0].conv1.film.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("film_levels", [0, 2])
def test_different_audio_gives_different_logits(film_levels):
    model = tiny(film_levels=film_levels)
    src = onehot(face_maps(1, 64))
    with torch.no_grad():
        a = model(src, src, torch.full((1, 1, 80, 16), -4.0))
        b = model(src, src, torch.randn(1, 1, 80, 16) * 2)
        a2 = model(src, src, torch.full((1, 1, 80, 16), -4.0))
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-4


def test_masked_area_is_invisible_to_the_network():
    model = tiny()
    regions = face_maps(1, 64, mouth_open=1)
    other = regions.clone()
    other[:, 40:, :] = torch.randint(0, 12, (1, 24, 64))  # rewrite the lower half only
    mel = torch.randn(1, 1, 80, 16)
    with torch.no_grad():
        assert torch.equal(model(onehot(regions), onehot(regions), mel),
                           model(onehot(other), onehot(regions), mel))
        other[:, 10, 10] = 4  # upper half: visible
        assert not torch.equal(model(onehot(regions), onehot(regions), mel),
                               model(onehot(other), onehot(regions), mel))


def test_lower_half_mask():
    src = onehot(face_maps(2, 64))
    masked, mask = mask_mouth_area(src)
    assert mask.shape == (2, 1, 64, 64)
    assert mask[:, :, 32:].eq(1).all() and mask[:, :, :32].eq(0).all()
    assert masked[:, :, 32:].eq(0).all() and torch.equal(masked[:, :, :32], src[:, :, :32])


def test_mouth_box_does_not_follow_mouth_opening():
    cfg = MouthMaskConfig(mode="mouth_box")
    closed = mouth_area_mask(face_maps(1, 64, mouth_open=0), cfg)
    wide = mouth_area_mask(face_maps(1, 64, mouth_open=8), cfg)
    # Same upper lip -> same box, however open the mouth: the mask leaks no articulation.
    assert torch.equal(closed, wide)
    lips_rows = torch.nonzero((face_maps(1, 64, 8)[0] == LIPS).any(1)).flatten()
    assert closed[0, lips_rows.min():lips_rows.max() + 1, 32].all()
    assert not closed[0, :10].any()
    no_lips = torch.full((1, 64, 64), SKIN)
    assert torch.equal(mouth_area_mask(no_lips, cfg), mouth_area_mask(no_lips))  # lower half


def test_onehot_refuses_19_class_maps():
    with pytest.raises(ValueError, match="merge_to_regions"):
        onehot(torch.full((1, 4, 4), 17))
    assert onehot(torch.tensor([[[0, 11]]])).sum(1).eq(1).all()


def _sequence(t: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    src = np.stack([face_maps(1, size, mouth_open=i % 4)[0].numpy() for i in range(t)]).astype(
        np.uint8)
    ref = face_maps(1, size, 3)[0].numpy().astype(np.uint8)
    mel = rng.uniform(-4, 4, size=(t, 80, 16)).astype(np.float32)
    return src, ref, mel


def test_predict_keeps_remainder_and_matches_unbatched():
    model = tiny()
    src, ref, mel = _sequence(5, 64)
    calls = []
    out = predict_talking_segmentation(model, src, ref, mel, 2, "cpu", torch.float32,
                                       progress=lambda d, t: calls.append((d, t)))
    one = predict_talking_segmentation(model, src, ref, mel, 1, "cpu", torch.float32)
    assert out.shape == (5, 64, 64) and out.dtype == np.uint8
    assert calls == [(2, 5), (4, 5), (5, 5)]
    np.testing.assert_array_equal(out, one)
    # Frame 4 (the remainder) is the network's answer for frame 4, not a leftover.
    with torch.no_grad():
        direct = model(onehot(torch.from_numpy(src[4:]).long()),
                       onehot(torch.from_numpy(ref[None]).long()),
                       torch.from_numpy(mel[4:, None])).argmax(1)[0].numpy()
    lower = np.s_[32:, :]
    np.testing.assert_array_equal(out[4][lower], direct[lower])


def test_predict_composite_and_resampling():
    model = tiny(mouth_mask=MouthMaskConfig(mode="mouth_box"))
    src, ref, mel = _sequence(3, 96)  # crop size 96, model at 64
    out = predict_talking_segmentation(model, src, ref, mel, 4, "cpu", torch.float32)
    assert out.shape == (3, 96, 96)
    keep = ~mouth_area_mask(torch.from_numpy(src).long(), model.config.mouth_mask).numpy()
    np.testing.assert_array_equal(out[keep], src[keep])
    assert out.max() < 12
    assert model.training is False


def test_predict_bfloat16():
    model = tiny().to(torch.bfloat16)
    src, ref, mel = _sequence(2, 64)
    out = predict_talking_segmentation(model, src, ref, mel, 2, "cpu", torch.bfloat16)
    assert out.shape == (2, 64, 64) and out.max() < 12


def test_predict_rejects_bad_inputs():
    model = tiny()
    src, ref, mel = _sequence(2, 64)
    bad_mel = mel.copy()
    bad_mel[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="mel_windows contains 1 NaN"):
        predict_talking_segmentation(model, src, ref, bad_mel, 2, "cpu", torch.float32)
    with pytest.raises(ValueError, match="T = 2"):
        predict_talking_segmentation(model, src, ref, mel[:1], 2, "cpu", torch.float32)
    with pytest.raises(ValueError, match="merge 19-class"):
        predict_talking_segmentation(model, src + 10, ref, mel, 2, "cpu", torch.float32)
    with pytest.raises(ValueError, match="move it first"):
        predict_talking_segmentation(model, src, ref, mel, 2, "meta", torch.float32)


def test_dice_and_weighted_cross_entropy():
    target = face_maps(2, 32, mouth_open=3)
    good = onehot(target) * 20
    bad = onehot(torch.full_like(target, SKIN)) * 20
    assert dice_loss(good, target) < 0.01
    assert dice_loss(bad, target) > 0.9
    # A class absent from prediction and target costs nothing (smoothing, no NaN).
    closed = face_maps(1, 32, mouth_open=0)
    assert dice_loss(onehot(closed) * 20, closed, classes=(MOUTH_INTERIOR,)) < 0.01
    # Errors inside the mouth area weigh more when the mask is given.
    wrong_mouth = good.clone()
    wrong_mouth[:, :, 16:] = bad[:, :, 16:]
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 16:] = 1
    plain, _ = tsg_loss(wrong_mouth, target)
    weighted, parts = tsg_loss(wrong_mouth, target, mouth_mask=mask)
    assert weighted > plain and set(parts) == {"cross_entropy", "dice"}
