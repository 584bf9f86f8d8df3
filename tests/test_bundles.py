"""Component bundles: round trips, refusing wrong files, pairing, resize plan, random bundles."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from segtalker_core import checkpoints as ck
from segtalker_core.models import bundles
from segtalker_core.models.audio_encoder import AudioEncoderConfig
from segtalker_core.cli import main as cli_main
from segtalker_core.models.random_bundle import write_random_bundles
from segtalker_core.models.syncnet import SegSyncNet, SyncNetConfig
from segtalker_core.models.tsg import TSG, MouthMaskConfig, TSGConfig

TINY_AUDIO = AudioEncoderConfig(widths=(4, 4, 8, 8, 8), residual_blocks=(1, 0, 0, 0))


@pytest.fixture(scope="module")
def random_set(tmp_path_factory):
    return write_random_bundles(tmp_path_factory.mktemp("random"), resolution=64, seed=0)


@pytest.fixture(scope="module")
def other_set(tmp_path_factory):
    return write_random_bundles(tmp_path_factory.mktemp("other"), resolution=64, seed=1)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    # Non-default buffers/weights so a loader that re-initialises anything is caught.
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.1)
    return model


@pytest.mark.parametrize("component", ["tsg", "syncnet"])
def test_round_trip_is_bit_identical(tmp_path, component):
    torch.manual_seed(0)
    if component == "tsg":
        cfg = TSGConfig(resolution=64, base_channels=4, max_channels=8, film_levels=1,
                        audio=TINY_AUDIO, mouth_mask=MouthMaskConfig(mode="mouth_box"))
        model = _perturbed(TSG(cfg))
    else:
        cfg = SyncNetConfig(resolution=64, visual_widths=(4, 8), embed_dim=8, audio=TINY_AUDIO)
        model = _perturbed(SegSyncNet(cfg))
    written = bundles.save_component(tmp_path / "m.safetensors", model, cfg)
    loaded, config = bundles.load_component(tmp_path / "m.safetensors", component)
    assert config == written and loaded.config == cfg
    assert config.resolution == 64 and config.label_scheme == "regions_12"
    assert config.audio["hop_length"] == 200
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype
               for k in before)
    assert not loaded.training


def test_load_to_dtype(random_set):
    model, _ = bundles.load_component(random_set["tsg"], "tsg", "cpu", torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16


def test_wrong_component_in_slot(random_set):
    with pytest.raises(ck.ComponentMismatchError, match="tsg"):
        bundles.load_component(random_set["generator"], "tsg")
    with pytest.raises(ValueError, match="learned components are"):
        bundles.load_component(random_set["tsg"], "bisenet")


def test_newer_format_version_is_refused(tmp_path, random_set):
    config = ck.read_config(random_set["tsg"]).to_dict()
    config["format_version"] = ck.FORMAT_VERSION + 1
    path = tmp_path / "future.safetensors"
    save_file(load_file(random_set["tsg"]), path,
              metadata={ck.CONFIG_METADATA_KEY: json.dumps(config)})
    with pytest.raises(ck.UnsupportedFormatError, match="newer SegTalker"):
        bundles.load_component(path, "tsg")


def test_plain_file_without_config_is_refused(tmp_path, random_set):
    path = tmp_path / "plain.safetensors"
    save_file(load_file(random_set["tsg"]), path)
    with pytest.raises(ck.CheckpointError, match="no SegTalker config"):
        bundles.load_component(path, "tsg")


def test_foreign_audio_features_are_refused(tmp_path, random_set):
    config = ck.read_config(random_set["tsg"])
    changed = ck.BundleConfig.from_dict({**config.to_dict(),
                                         "audio": {**config.audio, "hop_length": 160}})
    ck.save(tmp_path / "a.safetensors", load_file(random_set["tsg"]), changed)
    with pytest.raises(ck.CheckpointError, match="hop_length: file 160 vs ours 200"):
        bundles.load_component(tmp_path / "a.safetensors", "tsg")


def test_resolution_mismatch_warns_and_plans(random_set, caplog):
    tsg = ck.read_config(random_set["tsg"])
    gen = ck.BundleConfig.from_dict({**ck.read_config(random_set["generator"]).to_dict(),
                                     "resolution": 128})
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        plan = bundles.plan_segmentation_resize(tsg, gen)
    assert re.search("64 px.*128 px", caplog.text)
    assert plan.resize and plan.mode == "nearest"
    maps = torch.randint(0, 12, (2, 64, 64), dtype=torch.uint8)
    up = plan.apply(maps)
    assert up.shape == (2, 128, 128) and up.dtype == torch.uint8
    assert torch.equal(up[:, ::2, ::2], maps)  # nearest: no label is invented
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        same = bundles.plan_segmentation_resize(tsg, ck.read_config(random_set["generator"]))
    assert not caplog.records
    assert not same.resize
    with pytest.raises(ValueError, match="expected a tsg config"):
        bundles.plan_segmentation_resize(gen, gen)


def test_random_bundles_run_end_to_end(random_set):
    assert set(random_set) == {"tsg", "syncnet", "generator", "encoder"}
    encoder, enc_cfg = bundles.load_component(random_set["encoder"], "encoder")
    generator, gen_cfg = bundles.load_component(random_set["generator"], "generator")
    tsg, _ = bundles.load_component(random_set["tsg"], "tsg")
    segmentation = torch.randint(0, 12, (1, 64, 64))
    with torch.no_grad():
        logits = tsg(torch.nn.functional.one_hot(segmentation, 12).permute(0, 3, 1, 2).float(),
                     torch.nn.functional.one_hot(segmentation, 12).permute(0, 3, 1, 2).float(),
                     torch.randn(1, 1, 80, 16))
        codes, valid = encoder(torch.rand(1, 3, 64, 64) * 2 - 1, segmentation)
        bundles.check_style_codes(codes, enc_cfg.extra["encoder_id"], gen_cfg)
        image = generator(codes, logits.argmax(1))
    assert image.shape == (1, 3, 64, 64) and torch.isfinite(image).all()
    # The encoder carries the generator's average latent (rows beyond K are exactly it).
    torch.testing.assert_close(codes[0, 0, -1], encoder.latent_avg)
    assert encoder.latent_avg.abs().sum() > 0


def test_style_codes_from_a_foreign_encoder_are_refused(random_set, other_set):
    gen_cfg = ck.read_config(random_set["generator"])
    foreign_encoder = ck.read_config(other_set["encoder"])
    fp = bundles.generator_fingerprint(gen_cfg)
    assert (fp.n_latent, fp.w_dim) == (10, 32)
    codes = torch.zeros(1, 12, fp.n_latent, fp.w_dim)
    own_id = ck.read_config(random_set["encoder"]).extra["encoder_id"]
    bundles.check_style_codes(codes, own_id, gen_cfg)
    with pytest.raises(ValueError, match="trained for generator 'random-r64-s1'"):
        bundles.check_style_codes(codes, foreign_encoder.extra["encoder_id"], gen_cfg)
    with pytest.raises(ValueError, match="no encoder id"):
        bundles.check_style_codes(codes, None, gen_cfg)
    with pytest.raises(ValueError, match=r"reads \[B, 12, 10, 32\]"):
        bundles.check_style_codes(torch.zeros(1, 12, 10, 512), own_id, gen_cfg)
    nan_codes = codes.clone()
    nan_codes[0, 3, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="style codes contains 1 NaN"):
        bundles.check_style_codes(nan_codes, own_id, gen_cfg)


def test_encoder_must_be_saved_with_its_generator(tmp_path, random_set):
    encoder, enc_cfg = bundles.load_component(random_set["encoder"], "encoder")
    with pytest.raises(ValueError, match="needs generator="):
        bundles.save_component(tmp_path / "e.safetensors", encoder, encoder.config)
    written = bundles.save_component(tmp_path / "e.safetensors", encoder, encoder.config,
                                     generator=random_set["generator"])
    assert written.extra["encoder_id"] == enc_cfg.extra["encoder_id"]


def test_check_finite():
    bundles.check_finite(torch.zeros(3), "x")
    bundles.check_finite(torch.zeros(3, dtype=torch.long), "labels")
    with pytest.raises(ValueError, match="mel contains 2 NaN/inf values"):
        bundles.check_finite(torch.tensor([1.0, float("inf"), float("nan")]), "mel")


def test_describe(random_set):
    line = bundles.describe(random_set["tsg"])
    assert line.startswith("tsg_random_64.safetensors: TSG")
    for part in ("64 px", "weights", "regions_12", "format v1"):
        assert part in line
    assert "for generator random-r64-s0" in bundles.describe(random_set["encoder"])


def test_random_bundles_are_reproducible_and_cli_writes_them(tmp_path, random_set, capsys):
    assert cli_main(["random-bundle", str(tmp_path), "--resolution", "64", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "encoder:" in out and "tsg:" in out
    for component, path in random_set.items():
        again = tmp_path / path.name
        a, b = load_file(path), load_file(again)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert ck.read_config(again) == ck.read_config(path)
