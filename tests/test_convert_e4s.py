"""E4S (RGI) converter: the 1024 layout, a conversion end to end, and the bad inputs.

The real encoder (IR-SE-50, 85M values) is too big for a fast test, so the conversions run with
E4S's rules at small widths (the converter reads its width constants at call time); the 1024
layout is checked name by name and shape by shape on the meta device. Exactness against E4S's own
code is measured outside the tests (issue #10 report).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from segtalker_core import checkpoints as ck
from segtalker_core.conversion import e4s
from segtalker_core.conversion import rosinality as ros
from segtalker_core.conversion.rosinality import on_meta
from segtalker_core.models.bundles import load_component
from segtalker_core.models.encoder import EncoderConfig, MaskGuidedEncoder
from segtalker_core.models.layers import fir_kernel
from segtalker_core.models.stylegan import Generator

LAYOUT = Path(__file__).parent / "layouts" / "e4s_rgi_1024_12.json"
D_LAYOUT = Path(__file__).parent / "layouts" / "e4s_d_state_dict_1024.json"
SMALL = e4s.E4SArchitecture(num_regions=12, k=7, size=64, w_dim=32)  # n_latent 10


@pytest.fixture
def small_widths(monkeypatch):
    """E4S's encoder rules with narrow stages (SE needs >= 16 channels)."""
    monkeypatch.setattr(e4s, "STAGE_CHANNELS", (16, 32, 32, 48))
    monkeypatch.setattr(e4s, "STAGE_BLOCKS", (1, 2, 1, 1))
    monkeypatch.setattr(e4s, "STEM_CHANNELS", 16)
    monkeypatch.setattr(e4s, "MLP_HIDDEN", 32)


def random_net3(arch: e4s.E4SArchitecture, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in Net3's layout; the FIR kernels are the ones rosinality stores."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in e4s.net3_layout(arch).items():
        if name.endswith(".kernel"):
            out[name] = fir_kernel((1, 3, 3, 1)) * 4
        else:
            out[name] = torch.randn(shape, generator=g) * 0.1
    return out


def random_discriminator(size: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random values in rosinality's (= E4S's) discriminator layout, its FIR kernels real."""
    g = torch.Generator().manual_seed(seed)
    layout = ros.discriminator_layout(ros.RosinalityArchitecture(size, 2))
    return {name: fir_kernel((1, 3, 3, 1)) if name.endswith(".kernel")
            else torch.randn(shape, generator=g) * 0.1 for name, shape in layout.items()}


def write_e4s(path: Path, arch: e4s.E4SArchitecture, *, latent_avg: bool = True,
              discriminator: dict | None = None) -> Path:
    """A file in E4S's saved layout (coach.py __get_save_dict); ``discriminator``: its
    ``D_state_dict`` (saved ``module.``-prefixed, as under DDP)."""
    state_dict = random_net3(arch)
    obj = {"state_dict": {"module." + k: v for k, v in state_dict.items()},
           "opts": {"num_seg_cls": arch.num_regions, "remaining_layer_idx": arch.k,
                    "out_size": arch.size, "device": torch.device("cpu"), "dist_train": True}}
    if latent_avg:
        obj["latent_avg"] = torch.randn(arch.w_dim).repeat(arch.n_latent, 1)
    if discriminator is not None:
        obj["D_state_dict"] = {"module." + k: v for k, v in discriminator.items()}
    torch.save(obj, path)
    return path


def test_layout_json_is_the_rules():
    tensors = json.loads(LAYOUT.read_text())["tensors"]
    layout = e4s.net3_layout(e4s.E4SArchitecture())
    assert list(tensors) == list(layout)
    assert {k: tuple(v) for k, v in tensors.items()} == layout
    assert len(layout) == 344


def test_1024_layout_fits_the_pack_models_on_meta():
    source = on_meta(e4s.net3_layout(e4s.E4SArchitecture()))
    for name in source:
        if name.endswith(".kernel"):  # values checked by the converter
            source[name] = fir_kernel((1, 3, 3, 1)) * 4
    arch = e4s.infer_architecture(source, "layout")
    assert arch == e4s.E4SArchitecture(12, 13, 1024, 512)
    with torch.device("meta"):
        encoder = MaskGuidedEncoder(e4s.encoder_config(arch))
    weights = e4s.encoder_weights(source, arch, torch.empty(512, device="meta"))
    ck.check_state_dict_fits(encoder.state_dict(), weights, "E4S encoder")
    config = e4s.generator_config(arch, "layout")
    assert (config.size, config.num_mask_guided, config.mask_guided_impl) == (1024, 13, "reference")
    from segtalker_core.conversion.rosinality import generator_weights
    g_source = {k[2:]: v for k, v in source.items() if k.startswith("G.")}
    g_weights = generator_weights(g_source, arch.generator, torch.empty(512, device="meta"))
    with torch.device("meta"):
        generator = Generator(config)
    ck.check_state_dict_fits(generator.state_dict(), g_weights, "E4S generator")


def test_e4s_encoder_writes_codes_b_12_18_512():
    cfg = EncoderConfig.e4s(stem_channels=16, stage_channels=(16, 32, 32, 48),
                            stage_blocks=(1, 1, 1, 1), mlp_hidden=16)
    encoder = MaskGuidedEncoder(cfg).eval()
    labels = torch.randint(0, 12, (2, 64, 64))
    with torch.no_grad():
        codes, valid = encoder(torch.rand(2, 3, 128, 128) * 2 - 1, labels)
    assert codes.shape == (2, 12, 18, 512) and valid.shape == (2, 12)


def test_converts_into_strict_loading_bundles(tmp_path, small_widths):
    from segtalker_core.models.discriminator import Discriminator

    d = random_discriminator(SMALL.size)
    src = write_e4s(tmp_path / "iteration_300000.pt", SMALL, discriminator=d)
    paths = e4s.convert_e4s(src, tmp_path)
    assert paths == {"encoder": tmp_path / "iteration_300000_encoder.safetensors",
                     "generator": tmp_path / "iteration_300000_generator.safetensors",
                     "discriminator": tmp_path / "iteration_300000_discriminator.safetensors"}
    encoder, e_bundle = load_component(paths["encoder"], "encoder")
    generator, g_bundle = load_component(paths["generator"], "generator")
    source = torch.load(src, weights_only=True)
    sd, avg = source["state_dict"], source["latent_avg"][0]
    torch.testing.assert_close(encoder.mlp[0].weight[3], sd["module.MLPs.3.mlp.0.weight"].t())
    torch.testing.assert_close(encoder.mlp[1].bias[11], sd["module.MLPs.11.mlp.2.bias"])
    torch.testing.assert_close(encoder.backbone.stages[1][1].se.fc2.weight,
                               sd["module.encoder.body.2.res_layer.5.fc2.weight"])
    torch.testing.assert_close(encoder.latent_avg, avg)
    torch.testing.assert_close(generator.latent_avg, avg)
    torch.testing.assert_close(generator.conv1.bias, sd["module.G.conv1.activate.bias"])
    assert generator.config.num_mask_guided == SMALL.k
    assert generator.config.mask_guided_impl == "reference"
    # E4S's own rules: masks resized with legacy nearest, rows >= K from region 0.
    assert generator.config.legacy_nearest_masks and generator.config.global_style == "first"
    assert e_bundle.extra["label_order"].startswith("identity")
    assert e_bundle.extra["generator"]["generator_id"] == g_bundle.extra["generator_id"]
    with torch.no_grad():
        codes, valid = encoder(torch.rand(1, 3, 64, 64) * 2 - 1, torch.randint(0, 12, (1, 64, 64)))
    assert codes.shape == (1, 12, SMALL.n_latent, SMALL.w_dim)
    text = e4s.describe_e4s(src)
    for part in ("E4S Net3", "K=7", "64 px", "average latent stored",
                 "discriminator 'D_state_dict' (64 px, converted too)"):
        assert part in text
    # D_state_dict through rosinality's discriminator mapping (tested in test_convert_rosinality).
    model, bundle = load_component(paths["discriminator"], "discriminator")
    assert isinstance(model, Discriminator) and bundle.extra["source_part"] == "D_state_dict"
    torch.testing.assert_close(model.from_rgb.conv.weight, d["convs.0.0.weight"])
    torch.testing.assert_close(model.blocks[0].conv1.conv.weight, d["convs.1.conv1.0.weight"])
    torch.testing.assert_close(model.blocks[-1].skip.conv.weight, d["convs.4.skip.1.weight"])
    torch.testing.assert_close(model.final_linear[1].weight, d["final_linear.1.weight"])


def test_missing_latent_avg_uses_the_mapping_mean(tmp_path, small_widths, caplog):
    src = write_e4s(tmp_path / "no_avg.pt", SMALL, latent_avg=False)
    with caplog.at_level(logging.WARNING, logger="segtalker.conversion"):
        paths = e4s.convert_e4s(src, tmp_path / "out")
    assert "has no latent_avg" in caplog.text
    encoder, bundle = load_component(paths["encoder"], "encoder")
    generator, _ = load_component(paths["generator"], "generator")
    assert bundle.extra["latent_avg"].startswith("estimated")
    torch.testing.assert_close(encoder.latent_avg, generator.latent_avg)
    assert encoder.latent_avg.abs().sum() > 0


def test_a_rosinality_file_is_named(tmp_path):
    src = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(2)}, src)
    with pytest.raises(e4s.NotE4SError, match="rosinality StyleGAN2 checkpoint"):
        e4s.convert_e4s(src, tmp_path / "out")


def test_a_bare_state_dict_of_something_else_is_named(tmp_path):
    src = tmp_path / "other.pt"
    torch.save({"state_dict": {"module.layer.weight": torch.zeros(2, 2)}}, src)
    with pytest.raises(e4s.NotE4SError, match="not an E4S Net3"):
        e4s.describe_e4s(src)


def test_truncated_file_is_a_clear_error(tmp_path):
    src = tmp_path / "iteration_300000.pt"
    torch.save({"state_dict": {"module.a": torch.randn(4096)}, "latent_avg": torch.zeros(512)}, src)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CorruptCheckpointError, match="iteration_300000.pt"):
        e4s.convert_e4s(src, tmp_path / "out")
    assert not list(tmp_path.glob("out*"))


def test_unsupported_resolution_is_refused_with_the_reason():
    arch = e4s.E4SArchitecture(size=32, k=4)
    source = on_meta(e4s.net3_layout(arch))
    assert e4s.infer_architecture(source, "small.pt") == arch
    with pytest.raises(ck.CheckpointError, match="32 px"):
        e4s.generator_config(arch, "small.pt")


def test_other_resolutions_keep_their_size():
    arch = e4s.infer_architecture(on_meta(e4s.net3_layout(e4s.E4SArchitecture(size=256))), "x")
    assert (arch.size, arch.n_latent, e4s.generator_config(arch, "x").size) == (256, 14, 256)


def test_latent_avg_rows_must_agree(tmp_path):
    arch = e4s.E4SArchitecture()
    avg = torch.randn(512)
    torch.testing.assert_close(e4s.latent_avg_row(avg.repeat(18, 1), arch, tmp_path), avg)
    torch.testing.assert_close(e4s.latent_avg_row(avg[None], arch, tmp_path), avg)
    rows = avg.repeat(18, 1)
    rows[5] += 1
    with pytest.raises(ck.CheckpointError, match="rows differ"):
        e4s.latent_avg_row(rows, arch, tmp_path)
    with pytest.raises(ck.CheckpointError, match="latent_avg has shape"):
        e4s.latent_avg_row(torch.zeros(7, 512), arch, tmp_path)


def test_e4s_absent_region_is_the_mlp_of_a_zero_vector():
    """E4S pools zeros for a region without pixels and maps it through its MLP like any other;
    the pack's own encoder gives such a region the average latent."""
    small = dict(stem_channels=16, stage_channels=(16, 32, 32, 48), stage_blocks=(1, 1, 1, 1),
                 mlp_hidden=16, w_dim=8, n_latent=6, n_styles=4)
    torch.manual_seed(0)
    encoder = MaskGuidedEncoder(EncoderConfig.e4s(**small)).eval()
    with torch.no_grad():
        encoder.mlp[0].bias.normal_()
        encoder.mlp[1].bias.normal_()
        encoder.latent_avg.normal_()
    labels = torch.randint(0, 5, (1, 64, 64))  # regions 5..11 absent
    with torch.no_grad():
        codes, valid = encoder(torch.rand(1, 3, 64, 64) * 2 - 1, labels)
    assert valid[0, :5].all() and not valid[0, 5:].any()
    first, second = encoder.mlp
    for r in range(5, 12):  # MLP(0) by hand: only the biases act on a zero input
        hidden = torch.nn.functional.leaky_relu(first.bias[r], 0.01)
        offset = hidden @ (second.weight[r] * second.scale) + second.bias[r]
        expected = encoder.latent_avg + offset.reshape(4, 8)
        torch.testing.assert_close(codes[0, r, :4], expected)
        torch.testing.assert_close(codes[0, r, 4:], encoder.latent_avg.expand(2, 8))
    assert not torch.allclose(codes[0, 5, :4], encoder.latent_avg.expand(4, 8))
    assert EncoderConfig().absent_region == "average_latent"


def test_an_e4s_config_stored_before_absent_region_reads_as_e4s():
    stored = EncoderConfig.e4s().to_dict()
    del stored["absent_region"]
    assert EncoderConfig.from_dict(stored).absent_region == "mlp_of_zero"
    own = EncoderConfig().to_dict()
    del own["absent_region"]
    assert EncoderConfig.from_dict(own).absent_region == "average_latent"
    with pytest.raises(ValueError, match="absent_region"):
        EncoderConfig(absent_region="zeros")


def test_discriminator_layout_json_is_the_rosinality_rules():
    tensors = json.loads(D_LAYOUT.read_text())["tensors"]
    layout = ros.discriminator_layout(ros.RosinalityArchitecture(1024, 2))
    assert list(tensors) == ["module." + k for k in layout]
    assert [tuple(v) for v in tensors.values()] == list(layout.values())
    source = ck._strip_module_prefix(on_meta({k: tuple(v) for k, v in tensors.items()}))
    assert ros.infer_discriminator(source, "D_state_dict") == ros.RosinalityArchitecture(1024, 2)


def test_a_broken_discriminator_is_left_out_with_a_warning(tmp_path, small_widths, caplog):
    d = random_discriminator(SMALL.size)
    d["final_linear.1.weight"] = torch.zeros(1, 7)  # a wrong shape
    src = write_e4s(tmp_path / "iteration_300000.pt", SMALL, discriminator=d)
    with caplog.at_level(logging.WARNING, logger="segtalker.conversion"):
        paths = e4s.convert_e4s(src, tmp_path)
    assert set(paths) == {"encoder", "generator"}
    assert "discriminator is not converted" in caplog.text and "final_linear.1.weight" in caplog.text
    assert not (tmp_path / "iteration_300000_discriminator.safetensors").exists()
