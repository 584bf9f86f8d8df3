"""rosinality/stylegan2-pytorch checkpoints -> generator and discriminator bundles.

The layouts come from tests/layouts/rosinality_stylegan2_*.json (names and shapes of rosinality's
own modules, kept as test data like the BiSeNet key list), so no upstream code runs here. The
numbers against rosinality's code itself (same W+ / z / noise -> image, same logits) were measured
outside the test suite; see segtalker_core/conversion/rosinality.py.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path, PurePosixPath

import pytest
import torch

from segtalker_core import checkpoints as ck
from segtalker_core.conversion import rosinality as ros
from segtalker_core.models.bundles import load_component, save_component
from segtalker_core.models.discriminator import Discriminator
from segtalker_core.models.layers import fir_kernel
from segtalker_core.models.stylegan import Generator, GeneratorConfig

LAYOUTS = Path(__file__).parent / "layouts"
LAYOUT_64 = LAYOUTS / "rosinality_stylegan2_64.json"
LAYOUT_1024 = LAYOUTS / "rosinality_stylegan2_ffhq_1024_config_f.json"
BISENET_KEYS = Path(__file__).parent / "data" / "bisenet_79999_keys.txt"


def read_layout(path: Path) -> tuple[ros.RosinalityArchitecture, dict, dict]:
    """(architecture, g_ema layout, d layout) of a layout file; layouts are name -> shape."""
    data = json.loads(path.read_text())
    arch = ros.RosinalityArchitecture(**data["architecture"])
    g = {name: tuple(shape) for name, shape in data["g_ema"]}
    d = {name: tuple(shape) for name, shape in data["d"]}
    return arch, g, d


def random_weights(layout: dict, seed: int, fir_gain: float) -> dict[str, torch.Tensor]:
    """A state dict of ``layout`` as a trained rosinality network could hold it: unit-variance
    weights, modulation biases near 1, non-zero noise strengths and biases, the real FIR kernels."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layout.items():
        if name.endswith(".kernel"):
            out[name] = fir_kernel((1, 3, 3, 1)) * fir_gain
        elif name.endswith("modulation.bias"):
            out[name] = 1 + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("noise.weight") or name.endswith("bias"):
            out[name] = 0.1 * torch.randn(shape, generator=gen)
        elif name.startswith("style."):
            out[name] = torch.randn(shape, generator=gen) * 100  # stored / lr_mul (0.01)
        else:
            out[name] = torch.randn(shape, generator=gen)
    return out


def rel_rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).double().square().mean() / b.double().square().mean()).sqrt().item()


@pytest.fixture(scope="module")
def layout64():
    return read_layout(LAYOUT_64)


@pytest.fixture(scope="module")
def weights64(layout64):
    _, g, d = layout64
    g_ema = random_weights(g, 1, 4.0)
    latent_avg = 0.1 * torch.randn(512, generator=torch.Generator().manual_seed(9))
    return g_ema, random_weights(d, 2, 1.0), latent_avg


@pytest.fixture(scope="module")
def train_file(tmp_path_factory, weights64) -> Path:
    """A train.py checkpoint: g, d, g_ema, optimiser states, argparse args, ada_aug_p."""
    g_ema, d, _ = weights64
    param = torch.nn.Parameter(torch.ones(3))
    optim = torch.optim.Adam([param], lr=0.002, betas=(0.0, 0.99))
    param.sum().backward()
    optim.step()
    args = argparse.Namespace(arch="stylegan2", size=64, latent=512, n_mlp=8,
                              channel_multiplier=2, path="/data/ffhq.lmdb", iter=800000,
                              ckpt=None, wandb=False, r1=10.0)
    path = tmp_path_factory.mktemp("ros_train") / "100000.pt"
    # "g" shares g_ema's tensors: torch.save stores them once, which keeps the file small.
    torch.save({"g": g_ema, "d": d, "g_ema": g_ema, "g_optim": optim.state_dict(),
                "d_optim": optim.state_dict(), "args": args, "ada_aug_p": 0.0}, path)
    return path


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, weights64) -> Path:
    """convert_weight.py's layout: g_ema and latent_avg."""
    g_ema, _, latent_avg = weights64
    path = tmp_path_factory.mktemp("ros_official") / "stylegan2-test-config-f.pt"
    torch.save({"g_ema": g_ema, "latent_avg": latent_avg}, path)
    return path


@pytest.fixture(scope="module")
def converted(train_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return ros.convert_rosinality(train_file, out)


# ---------------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("path", [LAYOUT_64, LAYOUT_1024], ids=["64", "1024-config-f"])
def test_layout_files_follow_the_rules(path):
    arch, g, d = read_layout(path)
    assert list(g.items()) == list(ros.generator_layout(arch).items())
    assert list(d.items()) == list(ros.discriminator_layout(arch).items())


def test_ffhq_1024_config_f_layout_facts():
    arch, g, d = read_layout(LAYOUT_1024)
    assert (arch.size, arch.channel_multiplier, arch.style_dim, arch.n_mlp) == (1024, 2, 512, 8)
    assert (len(g), len(d)) == (171, 64)
    # 30.37M generator parameters is the published count of stylegan2-ffhq-config-f's G.
    params = sum(math.prod(s) for k, s in g.items()
                 if not k.startswith("noises.") and not k.endswith(".kernel"))
    assert params == 30_370_060
    assert g["convs.14.conv.weight"] == (1, 32, 64, 3, 3)
    assert g["to_rgbs.7.conv.weight"] == (1, 3, 32, 1, 1)
    assert g["noises.noise_16"] == (1, 1, 1024, 1024)
    assert d["convs.0.0.weight"] == (32, 3, 1, 1)
    assert d["final_linear.0.weight"] == (512, 8192)


def test_ffhq_1024_config_f_converts_shape_only():
    """The file users have, on the meta device: architecture read back from the shapes, every
    converted tensor fits the pack's modules by name and shape (no memory, no file)."""
    _, g, d = read_layout(LAYOUT_1024)
    g_meta, d_meta = ros.on_meta(g), ros.on_meta(d)
    arch, noise = ros.infer_generator(g_meta, "ffhq g_ema")
    assert (arch.size, arch.channel_multiplier, arch.style_dim, arch.n_mlp, noise) == \
        (1024, 2, 512, 8, True)
    config = ros.generator_config(arch)
    assert (config.n_latent, config.num_mask_guided, config.channels(1024)) == (18, 13, 32)
    weights = ros.generator_weights(g_meta, arch, torch.empty(512, device="meta"))
    with torch.device("meta"):
        generator = Generator(config)
    ck.check_state_dict_fits(generator.state_dict(), weights, "converted 1024 generator")
    d_arch = ros.infer_discriminator(d_meta, "ffhq d")
    d_config = ros.discriminator_config(d_arch)
    with torch.device("meta"):
        discriminator = Discriminator(d_config)
    ck.check_state_dict_fits(discriminator.state_dict(), ros.discriminator_weights(d_meta, d_arch),
                             "converted 1024 discriminator")
    ckpt = ros.RosinalityCheckpoint(Path("stylegan2-ffhq-config-f.pt"), {"g_ema": g_meta},
                                    torch.empty(512, device="meta"), {}, (), bare=False)
    text = ros.describe_checkpoint(ckpt)
    assert "generator 'g_ema': 1024 px, style dim 512, 8 mapping layers, channel multiplier 2 " \
           "(config-f), widths 512 at 4-32 px, 512 at 64, 256 at 128, 128 at 256, 64 at 512, " \
           "32 at 1024, 30.4M weights, fixed noise stored" in text
    assert text.endswith("no discriminator; average latent stored")


# ---------------------------------------------------------------------------------- converting

def test_train_checkpoint_converts_and_renders(converted, weights64):
    assert set(converted) == {"generator", "discriminator"}
    assert converted["generator"].name == "100000_generator.safetensors"
    generator, config = load_component(converted["generator"], "generator")
    assert config.resolution == 64 and config.extra["source_part"] == "g_ema"
    assert config.extra["converted_from"] == "100000.pt"
    assert generator.config.stores_noise and generator.config.stores_latent_avg
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = generator.synthesize(generator.mapping(z), noise=generator.stored_noise())
    assert image.shape == (2, 3, 64, 64) and torch.isfinite(image).all()
    assert image.std() > 0.1


def test_weights_are_carried_bit_for_bit(converted, weights64):
    g_ema, d, _ = weights64
    state = ck.load(converted["generator"], "generator")[0]
    assert torch.equal(state["mapping.layers.0.weight"], g_ema["style.1.weight"])
    assert torch.equal(state["input"], g_ema["input.input"])
    assert torch.equal(state["convs.3.conv.weight"], g_ema["convs.3.conv.weight"][0])
    assert torch.equal(state["convs.3.bias"], g_ema["convs.3.activate.bias"])
    assert torch.equal(state["to_rgbs.2.bias"], g_ema["to_rgbs.2.bias"].reshape(3))
    assert torch.equal(state["noises.noise_8"], g_ema["noises.noise_8"])
    assert not any(k.endswith(".kernel") for k in state)
    d_state = ck.load(converted["discriminator"], "discriminator")[0]
    assert torch.equal(d_state["blocks.0.conv2.conv.weight"], d["convs.1.conv2.1.weight"])
    assert torch.equal(d_state["from_rgb.bias"], d["convs.0.1.bias"])
    assert torch.equal(d_state["final_linear.1.weight"], d["final_linear.1.weight"])


def test_converted_discriminator_gives_logits(converted):
    discriminator, config = load_component(converted["discriminator"], "discriminator")
    assert config.resolution == 64 and config.label_scheme is None
    with torch.no_grad():
        logits = discriminator(torch.rand(4, 3, 64, 64) * 2 - 1)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_unconditional_rendering_is_the_one_region_mask_guided_forward(converted):
    """Without upstream code: the plain StyleGAN2 path (synthesize) equals the mask-guided
    forward given one region everywhere, for both implementations (float rounding only)."""
    generator, _ = load_component(converted["generator"], "generator")
    w = generator.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)))
    labels = torch.full((2, 64, 64), 3)
    with torch.no_grad():
        plain = generator.synthesize(w, noise=generator.stored_noise())
        for impl in ("fast", "reference"):
            generator.set_mask_guided_impl(impl)
            guided = generator(generator.broadcast(w), labels, noise=generator.stored_noise())
            assert rel_rms(guided, plain) < 1e-5, impl


def test_official_layout_keeps_latent_avg_and_truncates_around_it(official_file, weights64,
                                                                   tmp_path, caplog):
    _, _, latent_avg = weights64
    with caplog.at_level("WARNING", logger="segtalker"):
        paths = ros.convert_rosinality(official_file, tmp_path)
    assert list(paths) == ["generator"]  # no d in the file: nothing else written
    assert not caplog.records
    generator, config = load_component(paths["generator"], "generator")
    assert config.extra["latent_avg"] == "stored in the source"
    assert torch.equal(generator.average_latent(), latent_avg)
    w = generator.mapping(torch.randn(3, 512))
    torch.testing.assert_close(generator.truncate(w, 0.0), latent_avg.expand(3, -1))
    torch.testing.assert_close(generator.truncate(w, 1.0), w)


def test_missing_latent_avg_is_estimated_with_a_warning(weights64, tmp_path, caplog):
    g_ema, _, _ = weights64
    src = tmp_path / "g_ema_only.pt"
    torch.save(g_ema, src)  # a bare g_ema state dict
    with caplog.at_level("WARNING", logger="segtalker"):
        paths = ros.convert_rosinality(src, tmp_path / "bare")
    assert paths["generator"].name == "bare_generator.safetensors"
    assert any("no latent_avg" in r.getMessage() and "g_ema_only.pt" in r.getMessage()
               for r in caplog.records)
    generator, config = load_component(paths["generator"], "generator")
    assert config.extra["latent_avg"].startswith("estimated")
    again = generator.mean_latent(ros.MEAN_LATENT_SAMPLES,
                                  torch.Generator().manual_seed(ros.MEAN_LATENT_SEED))
    torch.testing.assert_close(generator.average_latent(), again)


def test_another_resolution_converts_at_that_resolution(tmp_path):
    arch = ros.RosinalityArchitecture(256, channel_multiplier=1, style_dim=512, n_mlp=2)
    g = random_weights(ros.generator_layout(arch), 3, 4.0)
    src = tmp_path / "ros256.pt"
    torch.save({"g_ema": g, "latent_avg": torch.zeros(512)}, src)
    assert "256 px" in ros.describe_rosinality(src)
    paths = ros.convert_rosinality(src, tmp_path)
    generator, config = load_component(paths["generator"], "generator")
    assert config.resolution == 256
    assert (generator.config.n_mlp, generator.config.channels(256)) == (2, 64)
    with torch.no_grad():
        image = generator.synthesize(torch.zeros(1, 512), noise=generator.stored_noise())
    assert image.shape == (1, 3, 256, 256)


def test_components_and_generator_part_choices(train_file, official_file, tmp_path):
    only_d = ros.convert_rosinality(train_file, tmp_path / "x", components=["discriminator"])
    assert list(only_d) == ["discriminator"]
    g = ros.convert_rosinality(train_file, tmp_path / "y", components=["generator"],
                               generator_part="g", mask_guided_layers=0)
    _, config = load_component(g["generator"], "generator")
    assert config.extra["source_part"] == "g" and config.architecture["mask_guided_layers"] == 0
    with pytest.raises(ck.CheckpointError, match="holds no discriminator"):
        ros.convert_rosinality(official_file, tmp_path / "z", components=["discriminator"])


def test_output_paths():
    assert ros.output_paths("a/ffhq.pt", "out/model.safetensors") == {
        "generator": Path("out/model_generator.safetensors"),
        "discriminator": Path("out/model_discriminator.safetensors")}
    folder = Path(__file__).parent
    assert ros.output_paths("a/ffhq.pt", folder)["generator"] == folder / "ffhq_generator.safetensors"


def test_output_in_a_missing_folder_is_refused_before_reading(train_file, tmp_path, monkeypatch):
    monkeypatch.setattr(ros, "read_rosinality", lambda p: pytest.fail("source was read"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ros.convert_rosinality(train_file, tmp_path / "no" / "such" / "ffhq")


def test_describe_says_what_the_file_is(train_file, official_file):
    text = ros.describe_rosinality(train_file)
    assert text.startswith("100000.pt: rosinality StyleGAN2 checkpoint")
    for part in ("generator 'g_ema': 64 px", "style dim 512", "8 mapping layers",
                 "channel multiplier 2 (config-f)", "generator 'g'", "discriminator 'd': 64 px",
                 "no average latent", "train.py args: arch stylegan2, size 64",
                 "also holds (not converted): g_optim, d_optim, ada_aug_p"):
        assert part in text, part
    text = ros.describe_rosinality(official_file)
    assert "no discriminator" in text and "average latent stored" in text


def test_namespace_is_allowed_only_while_reading(train_file):
    ckpt = ros.read_rosinality(train_file)
    assert ckpt.args["size"] == 64 and set(ckpt.parts) == {"g_ema", "g", "d"}
    assert argparse.Namespace not in torch.serialization.get_safe_globals()


# ---------------------------------------------------------------------------------- bad input

def test_truncated_file_is_named(train_file, tmp_path):
    data = train_file.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ck.CorruptCheckpointError, match="corrupt or truncated"):
        ros.convert_rosinality(cut, tmp_path)


def test_bisenet_state_dict_is_named(tmp_path):
    layout = [line.split(" ", 1) for line in BISENET_KEYS.read_text().splitlines() if line.strip()]
    state = {name: torch.zeros(eval(shape)) for name, shape in layout}  # noqa: S307 (test data)
    src = tmp_path / "79999_iter.pth"
    torch.save(state, src)
    with pytest.raises(ros.NotRosinalityError, match="BiSeNet face parser"):
        ros.convert_rosinality(src, tmp_path)
    with pytest.raises(ros.NotRosinalityError, match="not a rosinality StyleGAN2 checkpoint"):
        ros.describe_rosinality(src)


def test_a_segtalker_bundle_is_named(tmp_path):
    config = GeneratorConfig(size=64, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    path = tmp_path / "g.safetensors"
    save_component(path, Generator(config), config)
    with pytest.raises(ros.NotRosinalityError, match="already a SegTalker .* bundle"):
        ros.convert_rosinality(path, tmp_path / "again")


def test_pickled_objects_are_refused(weights64, tmp_path):
    g_ema, _, _ = weights64
    src = tmp_path / "objects.pt"
    # The Namespace itself is allowed, a value in it that is not a plain type is not.
    torch.save({"g_ema": g_ema, "args": argparse.Namespace(path=PurePosixPath("/data"))}, src)
    with pytest.raises(ck.CheckpointError, match="pickled Python objects.*PurePosixPath"):
        ros.convert_rosinality(src, tmp_path)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a whole pickled module
    with pytest.raises(ck.CheckpointError, match="never unpickles code"):
        ros.read_rosinality(module)


def test_nan_weights_are_refused_before_anything_is_written(weights64, tmp_path):
    g_ema, d, _ = weights64
    bad = dict(d, **{"final_conv.1.bias": torch.full_like(d["final_conv.1.bias"], float("nan"))})
    src = tmp_path / "nan.pt"
    torch.save({"g_ema": g_ema, "d": bad, "latent_avg": torch.zeros(512)}, src)
    with pytest.raises(ck.NonFiniteWeightsError, match="final_conv.1.bias"):
        ros.convert_rosinality(src, tmp_path)
    assert not list(tmp_path.glob("*.safetensors"))  # not even the (good) generator


def test_other_architectures_are_refused(layout64, tmp_path):
    _, g, d = layout64
    g_meta = ros.on_meta(g)
    wide = ros.on_meta(ros.generator_layout(ros.RosinalityArchitecture(64, 4)))
    arch, _ = ros.infer_generator(wide, "wide")
    with pytest.raises(ck.CheckpointError, match="only multipliers 1 and 2 convert"):
        ros.generator_config(arch)
    missing = {k: v for k, v in g_meta.items() if k != "convs.5.noise.weight"}
    with pytest.raises(ck.StateDictMismatchError, match="convs.5.noise.weight"):
        ros.infer_generator(missing, "edited")
    small = ros.on_meta(ros.generator_layout(ros.RosinalityArchitecture(32)))
    with pytest.raises(ck.CheckpointError, match="works at 32 px"):
        ros.generator_config(ros.infer_generator(small, "tiny")[0])
    src = tmp_path / "swagan.pt"
    torch.save({"g_ema": {"input.input": torch.zeros(1)}, "args": argparse.Namespace(arch="swagan")},
               src)
    with pytest.raises(ros.NotRosinalityError, match="swagan"):
        ros.read_rosinality(src)


def test_blur_kernel_other_than_the_default_is_refused(weights64, tmp_path):
    g_ema, _, _ = weights64
    bad = dict(g_ema, **{"convs.0.conv.blur.kernel": torch.full((4, 4), 0.25)})
    src = tmp_path / "blur.pt"
    torch.save({"g_ema": bad, "latent_avg": torch.zeros(512)}, src)
    with pytest.raises(ck.CheckpointError, match="FIR kernel convs.0.conv.blur.kernel"):
        ros.convert_rosinality(src, tmp_path)


# ---------------------------------------------------------------------------------- generator

def test_generator_options_default_off_and_errors():
    config = GeneratorConfig(size=64, w_dim=32, n_mlp=2, channel_base=256, channel_max=16)
    generator = Generator(config)
    names = generator.state_dict().keys()
    assert "latent_avg" not in names and not any(n.startswith("noises.") for n in names)
    with pytest.raises(ValueError, match="stores no noise"):
        generator.stored_noise()
    with pytest.raises(ValueError, match="stores no average latent"):
        generator.average_latent()
    with pytest.raises(ValueError, match=r"latent must be \[B, 32\] or \[B, 10, 32\]"):
        generator.synthesize(torch.zeros(1, 9, 32))
    image = generator.synthesize(torch.zeros(2, 32), noise_generator=torch.Generator())
    assert image.shape == (2, 3, 64, 64)
    stored = Generator(GeneratorConfig(**{**config.to_dict(), "stores_noise": True}))
    assert [n.shape[-1] for n in stored.stored_noise()] == stored.noise_sizes()
