"""BiSeNet face parser: checkpoint layout, loading, inference contract."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from segtalker_core import checkpoints
from segtalker_core.parsing.bisenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BiSeNet,
    BiSeNetParser,
    load_bisenet,
)

# A copy of the published 79999_iter.pth state-dict listing (names and shapes), kept as test data.
KEYS_FILE = Path(__file__).parent / "data" / "bisenet_79999_keys.txt"


def _published_layout() -> list[tuple[str, tuple[int, ...]]]:
    entries = []
    for line in KEYS_FILE.read_text().splitlines():
        if not line.strip():
            continue
        name, shape = line.split(" ", 1)
        entries.append((name, tuple(int(v) for v in shape.strip("()").split(",") if v.strip())))
    return entries


def _random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the exact 79999 layout, with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = BiSeNet()
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in sd.items():
        if name.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
        elif name.endswith("num_batches_tracked"):
            tensor.fill_(79999)
    return {k: v.clone() for k, v in sd.items()}


@pytest.fixture(scope="module")
def pth_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.save(_random_state_dict(), path)
    return path


def _crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _small_parser(model: BiSeNet, **kwargs) -> BiSeNetParser:
    # 64 px network input keeps the CPU cost of forward tests low; layout and logic are the same.
    return BiSeNetParser(model, device="cpu", input_size=64, **kwargs)


# ---------------------------------------------------------------------------------- layout

def test_state_dict_equals_published_79999_layout():
    ours = [(k, tuple(v.shape)) for k, v in BiSeNet().state_dict().items()]
    assert ours == _published_layout()


def test_published_layout_facts():
    layout = dict(_published_layout())
    assert len(layout) == 191
    assert sum(name.endswith("num_batches_tracked") for name in layout) == 31
    assert layout["cp.resnet.conv1.weight"] == (64, 3, 7, 7)
    assert layout["cp.arm16.conv.conv.weight"] == (128, 256, 3, 3)
    assert layout["ffm.conv1.weight"] == (64, 256, 1, 1)
    assert layout["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    assert not any(name.startswith("module.") for name in layout)
    model = BiSeNet()
    values = sum(v.numel() for v in model.state_dict().values())
    assert values == sum(math.prod(s) for s in layout.values()) == 13_313_119  # "13.31 M"
    assert sum(p.numel() for p in model.parameters()) == 13_300_416


def test_construction_downloads_nothing(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("BiSeNet construction tried to download something")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    BiSeNet()


# ---------------------------------------------------------------------------------- loading

def test_pth_in_79999_layout_loads_strict(pth_file):
    parser = load_bisenet(pth_file, device="cpu", dtype=torch.float32)
    saved = torch.load(pth_file, weights_only=True)
    loaded = parser.model.state_dict()
    assert loaded.keys() == saved.keys()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
    assert not parser.model.training


def test_module_prefix_is_stripped(tmp_path):
    sd = _random_state_dict(seed=1)
    path = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    parser = load_bisenet(path)
    assert torch.equal(parser.model.state_dict()["cp.resnet.conv1.weight"],
                       sd["cp.resnet.conv1.weight"])


def test_pth_to_safetensors_round_trip_is_bit_identical_and_loads(pth_file, tmp_path):
    dst = tmp_path / "bisenet.safetensors"
    config = checkpoints.convert_pth_to_safetensors(pth_file, dst, component="bisenet")
    assert config.component == "bisenet"
    assert config.label_scheme == "bisenet_19" and config.resolution == 512

    original = torch.load(pth_file, weights_only=True)
    converted = load_file(str(dst))
    assert converted.keys() == original.keys()
    for name, tensor in original.items():
        assert converted[name].dtype == tensor.dtype, name
        assert converted[name].shape == tensor.shape, name
        assert torch.equal(converted[name].view(-1).view(torch.uint8),
                           tensor.contiguous().view(-1).view(torch.uint8)), name

    assert checkpoints.read_config(dst) == config
    from_st = _small_parser(load_bisenet(dst).model)
    from_pth = _small_parser(load_bisenet(pth_file).model)
    crops = _crops(2, 40)
    np.testing.assert_array_equal(from_st.parse(crops, None), from_pth.parse(crops, None))


def test_incomplete_checkpoint_fails_with_counts(tmp_path):
    sd = _random_state_dict()
    dropped = [k for k in sd if k.startswith("conv_out16.")]
    for k in dropped:
        del sd[k]
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(checkpoints.StateDictMismatchError) as err:
        load_bisenet(path)
    message = str(err.value)
    assert f"{len(dropped)} missing keys" in message
    assert "conv_out16." in message
    assert "BiSeNet" in message


def test_foreign_network_is_refused_before_loading(tmp_path):
    path = tmp_path / "parsing_parsenet.pth"
    torch.save({"encoder.0.conv2d.weight": torch.zeros(64, 3, 3, 3),
                "out_mask_conv.conv2d.weight": torch.zeros(19, 64, 3, 3)}, path)
    with pytest.raises(checkpoints.ComponentMismatchError, match="ParseNet"):
        load_bisenet(path)


# ---------------------------------------------------------------------------------- inference

def test_parse_at_published_resolution_returns_label_maps(pth_file):
    parser = load_bisenet(pth_file)
    assert parser.input_size == 512 and parser.name == "bisenet"
    crops = _crops(1, 48)
    labels = parser.parse(crops, np.zeros((1, 478, 3), np.float32))
    assert labels.shape == (1, 48, 48)
    assert labels.dtype == np.uint8
    assert labels.max() <= 18


def test_preprocess_resizes_to_512_and_normalises_with_imagenet_stats():
    parser = BiSeNetParser(BiSeNet(), device="cpu")
    crops = np.full((2, 40, 40, 3), 128, dtype=np.uint8)
    x = parser.preprocess(crops)
    assert x.shape == (2, 3, 512, 512)
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(x[:, channel], torch.full((2, 512, 512), value),
                                   rtol=0, atol=1e-5)


def test_preprocess_keeps_rgb_channel_order():
    parser = BiSeNetParser(BiSeNet(), device="cpu", input_size=64)
    crops = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    crops[..., 0] = 255  # pure red
    x = parser.preprocess(crops)
    assert x[0, 0].mean() > 2 and x[0, 1].mean() < -1 and x[0, 2].mean() < -1


def test_output_is_deterministic_for_a_state_dict(pth_file):
    sd = torch.load(pth_file, weights_only=True)
    parsers = []
    for _ in range(2):
        model = BiSeNet()
        model.load_state_dict(sd)
        parsers.append(_small_parser(model))
    crops = _crops(3, 32, seed=3)
    first = parsers[0].parse(crops, None)
    np.testing.assert_array_equal(first, parsers[0].parse(crops, None))
    np.testing.assert_array_equal(first, parsers[1].parse(crops, None))
    # A random network still has to separate something; a constant map would hide a dead path.
    assert len(np.unique(first)) > 1


def test_low_precision_dtypes_give_valid_maps(pth_file):
    sd = torch.load(pth_file, weights_only=True)
    crops = _crops(2, 32, seed=4)
    for dtype in (torch.bfloat16, torch.float16):
        model = BiSeNet()
        model.load_state_dict(sd)
        parser = _small_parser(model, dtype=dtype)
        # The weights stay as loaded; the network computes in dtype (autocast).
        assert parser.model.conv_out.conv_out.weight.dtype == torch.float32
        seen = []
        parser.model.conv_out.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        labels = parser.parse(crops, None)
        assert seen and set(seen) == {dtype}
        assert labels.shape == (2, 32, 32) and labels.dtype == np.uint8
        assert labels.max() <= 18


class _GreyLevelNet(torch.nn.Module):
    """Stand-in network: labels each crop with its grey level / 10, recording batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []
        levels = torch.arange(19, dtype=torch.float32) * 10 / 255
        self.register_buffer("targets", (levels - IMAGENET_MEAN[0]) / IMAGENET_STD[0])

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(x.shape[0])
        return -(x[:, :1] - self.targets.view(1, -1, 1, 1)) ** 2


def test_batches_keep_every_crop_including_the_remainder():
    net = _GreyLevelNet()
    parser = BiSeNetParser(net, device="cpu", batch_size=2, input_size=64)
    levels = [3, 0, 7, 1, 5]
    crops = np.stack([np.full((20, 20, 3), 10 * lv, dtype=np.uint8) for lv in levels])
    labels = parser.parse(crops, None)
    assert net.batch_sizes == [2, 2, 1]
    assert labels.shape == (5, 20, 20)
    for i, level in enumerate(levels):
        assert (labels[i] == level).all(), (i, np.unique(labels[i]))


def test_nan_logits_are_an_error_naming_the_precision():
    class NanNet(torch.nn.Module):
        def segment(self, x):
            logits = torch.zeros(x.shape[0], 19, *x.shape[2:], dtype=x.dtype)
            logits[:, 0] = float("nan")
            logits[:, 4] = 1.0
            return logits

    parser = BiSeNetParser(NanNet(), device="cpu", dtype=torch.float16, input_size=32)
    # A NaN label map would be silently wrong; the error says fp16 is the likely cause.
    with pytest.raises(ValueError, match="fp16 overflow is the likely cause"):
        parser.parse(_crops(1, 16), None)


def test_empty_batch():
    parser = BiSeNetParser(_GreyLevelNet(), device="cpu", input_size=32)
    labels = parser.parse(np.zeros((0, 24, 24, 3), np.uint8), np.zeros((0, 478, 3), np.float32))
    assert labels.shape == (0, 24, 24) and labels.dtype == np.uint8


@pytest.mark.parametrize(
    ("crops", "error", "words"),
    [
        (np.zeros((1, 16, 16, 3), np.float32), TypeError, "uint8"),
        (np.zeros((16, 16, 3), np.uint8), ValueError, "[N, S, S, 3]"),
        (np.zeros((1, 16, 20, 3), np.uint8), ValueError, "square"),
        ([[0]], TypeError, "numpy array"),
    ],
)
def test_bad_crops_are_named(crops, error, words):
    parser = BiSeNetParser(_GreyLevelNet(), device="cpu", input_size=32)
    with pytest.raises(error) as err:
        parser.parse(crops, None)
    assert "crops" in str(err.value) and words in str(err.value)


def test_landmark_count_must_match_crops():
    parser = BiSeNetParser(_GreyLevelNet(), device="cpu", input_size=32)
    with pytest.raises(ValueError, match="landmarks has 2 entries but crops has 1"):
        parser.parse(_crops(1, 16), np.zeros((2, 478, 3), np.float32))


def test_bad_parser_settings_are_refused():
    with pytest.raises(ValueError, match="batch_size"):
        BiSeNetParser(_GreyLevelNet(), batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        BiSeNetParser(_GreyLevelNet(), dtype=torch.int8)
