"""Seg-SyncNet: embeddings, sync probability, BCE training on a toy task, TSG sync loss."""
from __future__ import annotations

import pytest
import torch

from segtalker_core.models.audio_encoder import AudioEncoderConfig
from segtalker_core.models.syncnet import (
    SegSyncNet, SyncNetConfig, sync_bce_loss, sync_probability,
)
from segtalker_core.models.tsg import LIPS, MOUTH_INTERIOR, onehot
from segtalker_core.models.tsg_losses import sync_loss


def tiny(resolution: int = 32) -> SegSyncNet:
    torch.manual_seed(0)
    audio = AudioEncoderConfig(widths=(4, 4, 8, 8, 16), residual_blocks=(0, 0, 0, 0))
    return SegSyncNet(SyncNetConfig(resolution=resolution, visual_widths=(8, 8, 16),
                                    embed_dim=16, audio=audio))


def windows(opening: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``[B]`` mouth openings (rows) -> ``[B, 5, 12, size, size]`` one-hot windows."""
    b = len(opening)
    regions = torch.full((b, 5, size, size), 6, dtype=torch.long)
    for i, rows in enumerate(opening.tolist()):
        regions[i, :, 20:22, 10:22] = LIPS
        regions[i, :, 22:22 + rows, 12:20] = MOUTH_INTERIOR
        regions[i, :, 22 + rows:24 + rows, 10:22] = LIPS
    return onehot(regions.reshape(b * 5, size, size)).reshape(b, 5, 12, size, size)


def mels(loudness: torch.Tensor) -> torch.Tensor:
    """``[B]`` loudness in 0..1 -> flat mel windows ``[B, 1, 80, 16]`` (louder: higher values)."""
    return (loudness.view(-1, 1, 1, 1) * 8 - 4).expand(-1, 1, 80, 16).clone()


def test_embeddings_are_unit_non_negative_and_probability_in_range():
    net = tiny().eval()
    with torch.no_grad():
        a, v = net(torch.randn(3, 1, 80, 16) * 2, windows(torch.tensor([0, 4, 2])))
    assert a.shape == v.shape == (3, 16)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    assert (a >= 0).all() and (v >= 0).all()
    p = sync_probability(a, v)
    assert p.shape == (3,) and (p > 0).all() and (p < 1).all()


def test_visual_input_takes_lower_half_and_resizes():
    net = tiny(32)
    maps = windows(torch.tensor([3])).repeat_interleave(2, -1).repeat_interleave(2, -2)
    x = net.visual_input(maps)
    assert x.shape == (1, 60, 16, 32)
    # The upper half (skin only) never reaches the network: lips/mouth channels carry mass.
    assert x[:, LIPS::12].sum() > 0
    with pytest.raises(ValueError, match="onehot"):
        net.visual_input(torch.zeros(1, 5, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="batch size"):
        net(mels(torch.tensor([0.1, 0.2])), maps)


def test_bce_decreases_on_toy_sync_task():
    # In sync: loudness predicts mouth opening; off sync: loudness of another sample.
    torch.manual_seed(1)
    net = tiny().train()
    openings = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    loud = openings.float() / 7
    maps = windows(torch.cat([openings, openings]))
    mel = mels(torch.cat([loud, loud.roll(4)]))
    target = torch.cat([torch.ones(8), torch.zeros(8)])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = sync_bce_loss(*net(mel, maps), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_sync_loss_sends_gradient_to_predicted_maps():
    net = tiny().eval().requires_grad_(False)
    logits = (windows(torch.tensor([2, 3])) * 5).requires_grad_(True)
    probs = logits.softmax(dim=2)
    loss = sync_loss(net, probs, mels(torch.tensor([0.3, 0.6])))
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_config_validation():
    with pytest.raises(ValueError, match="must equal embed_dim"):
        SyncNetConfig(embed_dim=64)
    cfg = SyncNetConfig(resolution=64, visual_widths=(8, 16), embed_dim=16,
                        audio=AudioEncoderConfig(widths=(4, 4, 8, 8, 16)))
    assert SyncNetConfig.from_dict(cfg.to_dict()) == cfg
