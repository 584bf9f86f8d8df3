"""Model bundles: safetensors + JSON config, legacy .pth import, and the errors users see."""
from __future__ import annotations

import json
import pathlib

import pytest
import torch
from safetensors.torch import save_file

from segtalker_core import checkpoints
from segtalker_core.checkpoints import BundleConfig


def _tsg_config(**overrides) -> BundleConfig:
    values = dict(
        component="tsg",
        architecture={"base_channels": 32, "levels": [1, 2, 4], "audio": {"dim": 512}},
        label_scheme="regions_12",
        resolution=128,
        audio={"sample_rate": 16000, "n_mels": 80, "hop": 200},
    )
    values.update(overrides)
    return BundleConfig(**values)


def _awkward_state_dict() -> dict[str, torch.Tensor]:
    """Tensors that trip naive savers: odd dtypes, special floats, views, aliases, scalars."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 4, generator=gen)
    special = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf"), 1e-45, 3.0])
    return {
        "f32": torch.randn(3, 5, generator=gen),
        "special": special,
        "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64_scalar": torch.tensor(79999),
        "mask": torch.tensor([True, False, True]),
        "transposed": base.t(),  # not contiguous
        "row_view": base[2],  # a view into a larger buffer
        "alias_a": base,
        "alias_b": base,  # same storage as alias_a (tied weights)
    }


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


# ---------------------------------------------------------------------------------- round trip

def test_save_load_round_trip_is_bit_identical(tmp_path):
    sd = _awkward_state_dict()
    config = _tsg_config()
    path = checkpoints.save(tmp_path / "tsg.safetensors", sd, config)
    # "special" holds NaN and inf on purpose: loading refuses them unless asked to allow them.
    loaded, loaded_config = checkpoints.load(path, expected_component="tsg", allow_non_finite=True)
    assert loaded_config == config
    assert not loaded_config.inferred
    assert loaded.keys() == sd.keys()
    for name, tensor in sd.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert loaded[name].shape == tensor.shape, name
        assert _bytes(loaded[name]) == _bytes(tensor), name
    assert loaded_config.audio["sample_rate"] == 16000
    assert loaded_config.architecture["audio"]["dim"] == 512


def test_save_leaves_no_partial_file_and_stores_json(tmp_path):
    path = checkpoints.save(tmp_path / "sub" / "g.safetensors", {"w": torch.ones(2)},
                            BundleConfig(component="generator", resolution=256))
    assert [p.name for p in path.parent.iterdir()] == ["g.safetensors"]
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8:8 + header_len])
    stored = json.loads(header["__metadata__"][checkpoints.CONFIG_METADATA_KEY])
    assert stored["format_version"] == checkpoints.FORMAT_VERSION == 1
    assert stored["component"] == "generator" and stored["resolution"] == 256
    for key in ("architecture", "label_scheme", "audio"):
        assert key in stored


def test_unknown_config_keys_survive_a_round_trip(tmp_path):
    config = BundleConfig.from_dict({**_tsg_config().to_dict(), "trained_steps": 1200})
    assert config.extra["trained_steps"] == 1200
    path = checkpoints.save(tmp_path / "t.safetensors", {"w": torch.ones(1)}, config)
    assert checkpoints.read_config(path).extra["trained_steps"] == 1200


def test_config_is_immutable():
    config = _tsg_config()
    with pytest.raises(TypeError):
        config.architecture["base_channels"] = 64
    with pytest.raises(AttributeError):
        config.resolution = 256


def test_config_rejects_unknown_component_and_scheme():
    with pytest.raises(ValueError, match="tsg, syncnet"):
        BundleConfig(component="vae")
    with pytest.raises(ValueError, match="regions_12"):
        BundleConfig(component="tsg", label_scheme="ade20k")


# ---------------------------------------------------------------------------------- header

class _CountingReader:
    def __init__(self, fh, counter):
        self._fh, self._counter = fh, counter

    def read(self, size=-1):
        data = self._fh.read(size)
        self._counter.append(len(data))
        return data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_read_config_reads_only_the_header(tmp_path, monkeypatch):
    sd = {"big": torch.zeros(1024, 1024)}  # 4 MiB of tensor data
    path = checkpoints.save(tmp_path / "enc.safetensors", sd,
                            BundleConfig(component="encoder", resolution=256))
    reads: list[int] = []
    real_open = pathlib.Path.open
    monkeypatch.setattr(pathlib.Path, "open",
                        lambda self, *a, **k: _CountingReader(real_open(self, *a, **k), reads))

    def refuse(*args, **kwargs):
        raise AssertionError("read_config loaded tensor data")

    monkeypatch.setattr(checkpoints, "load_file", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    config = checkpoints.read_config(path)
    assert config.component == "encoder" and config.resolution == 256
    assert 0 < sum(reads) < 4096


def test_read_config_identifies_plain_safetensors_by_keys(tmp_path):
    plain = tmp_path / "79999_iter.safetensors"
    save_file({"cp.resnet.conv1.weight": torch.zeros(64, 3, 7, 7),
               "conv_out.conv_out.weight": torch.zeros(19, 256, 1, 1)}, str(plain))
    config = checkpoints.read_config(plain)
    assert config.inferred
    assert config.component == "bisenet"
    assert config.label_scheme == "bisenet_19"
    assert "BiSeNet" in config.description

    other = tmp_path / "mystery.safetensors"
    save_file({"foo.weight": torch.zeros(2)}, str(other))
    config = checkpoints.read_config(other)
    assert config.inferred and config.component == "unknown"
    assert "foo.weight" in config.description


def test_inferred_config_cannot_be_saved(tmp_path):
    plain = tmp_path / "x.safetensors"
    save_file({"foo": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="inferred"):
        checkpoints.save(tmp_path / "y.safetensors", {"foo": torch.zeros(2)},
                         checkpoints.read_config(plain))


# ---------------------------------------------------------------------------------- errors

def test_truncated_file_says_truncated_and_what_to_do(tmp_path):
    path = checkpoints.save(tmp_path / "tsg.safetensors", {"w": torch.randn(256)},
                            _tsg_config())
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    for call in (checkpoints.read_config, checkpoints.load):
        with pytest.raises(checkpoints.CorruptCheckpointError) as err:
            call(path)
        message = str(err.value)
        assert "truncated" in message and "Re-download" in message and str(path) in message


def test_garbage_file_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(checkpoints.CorruptCheckpointError, match="corrupt"):
        checkpoints.load(path)


def test_corrupt_pth_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "79999_iter.pth"
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(1000)}, good)
    path.write_bytes(good.read_bytes()[:500])
    with pytest.raises(checkpoints.CorruptCheckpointError, match="Re-download"):
        checkpoints.load(path)


def test_component_mismatch_names_both_components(tmp_path):
    path = checkpoints.save(tmp_path / "tsg.safetensors", {"w": torch.ones(1)}, _tsg_config())
    with pytest.raises(checkpoints.ComponentMismatchError) as err:
        checkpoints.load(path, expected_component="generator")
    message = str(err.value)
    assert "TSG" in message and "bundle" in message and "generator" in message


def test_newer_format_version_is_refused_with_versions(tmp_path):
    path = tmp_path / "future.safetensors"
    future = {**_tsg_config().to_dict(), "format_version": 2}
    save_file({"w": torch.ones(1)}, str(path),
              metadata={checkpoints.CONFIG_METADATA_KEY: json.dumps(future)})
    for call in (checkpoints.read_config, checkpoints.load):
        with pytest.raises(checkpoints.UnsupportedFormatError) as err:
            call(path)
        message = str(err.value)
        assert "format_version 2" in message and "up to 1" in message and "newer" in message


def test_malformed_metadata_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(1)}, str(path),
              metadata={checkpoints.CONFIG_METADATA_KEY: "{not json"})
    with pytest.raises(checkpoints.CorruptCheckpointError, match="segtalker_config"):
        checkpoints.read_config(path)


def test_missing_file_names_folders_and_filename(tmp_path):
    folders = [tmp_path / "models" / "segtalker", tmp_path / "models" / "face_parsing"]
    for folder in folders:
        folder.mkdir(parents=True)
    with pytest.raises(checkpoints.CheckpointNotFoundError) as err:
        checkpoints.load("tsg_256.safetensors", search_dirs=folders)
    message = str(err.value)
    assert "tsg_256.safetensors" in message
    for folder in folders:
        assert str(folder) in message
    assert isinstance(err.value, FileNotFoundError)


def test_missing_file_without_folders_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(checkpoints.CheckpointNotFoundError, match="nope.safetensors"):
        checkpoints.read_config(path)


def test_file_is_found_in_a_search_folder(tmp_path):
    folder = tmp_path / "face_parsing"
    checkpoints.save(folder / "b.safetensors", {"w": torch.ones(1)},
                     BundleConfig(component="syncnet"))
    _, config = checkpoints.load("b.safetensors", search_dirs=[tmp_path / "empty", folder])
    assert config.component == "syncnet"


# ---------------------------------------------------------------------------------- strict load

class _TwoConvs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 8, 3)


@pytest.mark.parametrize(
    ("state_dict", "guess"),
    [
        ({"cp.resnet.conv1.weight": torch.zeros(64, 3, 7, 7),
          "cp.resnet.bn1.weight": torch.zeros(64),
          "conv_out.conv_out.weight": torch.zeros(19, 256, 1, 1)}, "BiSeNet"),
        ({"encoder.0.conv2d.weight": torch.zeros(1),
          "out_mask_conv.conv2d.weight": torch.zeros(1),
          "out_img_conv.conv2d.weight": torch.zeros(1)}, "ParseNet"),
        ({"style.1.weight": torch.zeros(1), "input.input": torch.zeros(1),
          "to_rgbs.0.conv.weight": torch.zeros(1)}, "StyleGAN2 generator"),
        ({"layer.a": torch.zeros(1), "layer.b": torch.zeros(1),
          "layer.c": torch.zeros(1)}, "unrecognised"),
    ],
)
def test_strict_load_error_counts_keys_and_guesses_the_file(state_dict, guess):
    with pytest.raises(checkpoints.StateDictMismatchError) as err:
        checkpoints.load_state_dict_strict(_TwoConvs(), state_dict, "test model from x.pth")
    message = str(err.value)
    assert message.startswith("test model from x.pth")
    assert "4 missing keys" in message and "conv1.weight" in message
    assert "3 unexpected keys" in message
    assert guess in message


def test_strict_load_reports_wrong_shapes_and_loads_when_right():
    model = _TwoConvs()
    sd = {k: v.clone() for k, v in _TwoConvs().state_dict().items()}
    sd["conv2.weight"] = torch.zeros(8, 8, 5, 5)
    with pytest.raises(checkpoints.StateDictMismatchError, match="1 tensor of the wrong shape"):
        checkpoints.load_state_dict_strict(model, sd, "m")
    sd["conv2.weight"] = torch.full((8, 8, 3, 3), 0.5)
    checkpoints.load_state_dict_strict(model, sd, "m")
    assert torch.equal(model.conv2.weight, sd["conv2.weight"])


# ---------------------------------------------------------------------------------- legacy .pth

class _Pickled:  # any non-tensor object: weights_only loading must refuse it
    pass


def test_pth_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "obj": _Pickled()}, path)
    with pytest.raises(checkpoints.CheckpointError) as err:
        checkpoints.load(path)
    message = str(err.value)
    assert "weights_only=True" in message and "_Pickled" in message
    assert "weights_only=False" not in message  # never advise the unsafe way


def test_wrapped_pth_state_dict_is_unwrapped(tmp_path):
    path = tmp_path / "ckpt.pth"
    inner = {"cp.resnet.conv1.weight": torch.randn(4)}
    torch.save({"state_dict": inner, "epoch": 3, "global_step": 10}, path)
    loaded, config = checkpoints.load(path)
    assert torch.equal(loaded["cp.resnet.conv1.weight"], inner["cp.resnet.conv1.weight"])
    assert config.inferred and config.component == "bisenet"


def test_convert_needs_a_component_for_unknown_files(tmp_path):
    from segtalker_core.models.bundles import bundle_config
    from segtalker_core.models.syncnet import SegSyncNet, SyncNetConfig
    from segtalker_core.models.audio_encoder import AudioEncoderConfig

    tiny = SyncNetConfig(resolution=64, visual_widths=(4, 4, 8, 8), embed_dim=8,
                         audio=AudioEncoderConfig(widths=(4, 4, 8, 8, 8),
                                                  residual_blocks=(1, 0, 0, 0)))
    weights = SegSyncNet(tiny).state_dict()
    src = tmp_path / "mystery.pth"
    torch.save(weights, src)  # a SyncNet's tensor names are not recognised by name alone
    with pytest.raises(checkpoints.CheckpointError, match="component="):
        checkpoints.convert_pth_to_safetensors(src, tmp_path / "out.safetensors")
    config = checkpoints.convert_pth_to_safetensors(
        src, tmp_path / "out.safetensors",
        config=bundle_config(tiny, extra={"converted_from": "mystery.pth"}))
    assert config.component == "syncnet" and config.extra["converted_from"] == "mystery.pth"
    loaded, stored = checkpoints.load(tmp_path / "out.safetensors", expected_component="syncnet")
    assert stored == config and loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_convert_refuses_a_recognised_foreign_network(tmp_path):
    src = tmp_path / "parsing_parsenet.pth"
    torch.save({"out_mask_conv.conv2d.weight": torch.ones(2)}, src)
    with pytest.raises(checkpoints.ComponentMismatchError, match="ParseNet"):
        checkpoints.convert_pth_to_safetensors(src, tmp_path / "o.safetensors",
                                               component="bisenet")
    assert not (tmp_path / "o.safetensors").exists()


def test_unsupported_extension_is_named(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\0" * 16)
    with pytest.raises(checkpoints.CheckpointError, match=r"\.onnx"):
        checkpoints.load(path)


def test_count_values_from_header(tmp_path):
    path = checkpoints.save(tmp_path / "d.safetensors",
                            {"a": torch.zeros(3, 4), "b": torch.tensor(1)},
                            BundleConfig(component="discriminator"))
    assert checkpoints.count_values(path) == 13
