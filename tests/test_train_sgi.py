"""SGI training stage: GAN losses, EMA, image losses, loss weight files, --init-from, and a short
reconstruction run (segtalker_core/train/: gan_losses, ema, image_losses, feature_losses,
sgi_stage)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from segtalker_core.train import ema as E
from segtalker_core.train import feature_losses as FL
from segtalker_core.train import gan_losses as G
from segtalker_core.train import image_losses as IL

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: one thread is as fast, and far faster on a busy machine (two
    threads spin-wait for each other on every small op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------- GAN losses

class SquareD(nn.Module):
    """D(x) = sum(a * x^2): grad_x D = 2 a x, so R1 = mean_b sum (2 a x_b)^2 by hand."""

    def __init__(self, shape):
        super().__init__()
        self.a = nn.Parameter(torch.randn(shape))

    def forward(self, x):
        return (self.a * x * x).flatten(1).sum(dim=1, keepdim=True)


def test_r1_penalty_matches_hand_computation_and_trains_d():
    torch.manual_seed(0)
    d = SquareD((2, 3, 3))
    x = torch.randn(4, 2, 3, 3)
    penalty, logits = G.r1_penalty(d, x)
    a = d.a.detach()
    by_hand = (2 * a * x).square().flatten(1).sum(dim=1).mean()
    torch.testing.assert_close(penalty, by_hand)
    torch.testing.assert_close(logits, d(x))
    penalty.backward()  # d/da mean_b sum 4 a^2 x^2 = mean_b 8 a x^2
    torch.testing.assert_close(d.a.grad, (8 * a * x.square()).mean(dim=0))


def test_r1_is_float32_under_autocast_and_lazy_weight():
    torch.manual_seed(1)
    d = SquareD((1, 4, 4))
    x = torch.randn(2, 1, 4, 4)
    exact, _ = G.r1_penalty(d, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        penalty, _ = G.r1_penalty(d, x.bfloat16())
    assert penalty.dtype == torch.float32
    # Only the input's rounding to bf16 differs (the computation itself ran in float32).
    exact_rounded, _ = G.r1_penalty(d, x.bfloat16().float())
    torch.testing.assert_close(penalty, exact_rounded)
    assert abs(float(penalty.detach()) - float(exact.detach())) < 0.02 * float(exact.detach())
    lazy = G.LazyR1()
    assert (lazy.gamma, lazy.interval, lazy.weight) == (10.0, 16, 80.0)
    assert [s for s in range(40) if lazy.due(s)] == [0, 16, 32]
    assert not G.LazyR1(gamma=0).due(0)
    torch.testing.assert_close(lazy.loss(d, x), 80.0 * exact)
    lr, betas = G.lazy_adam(0.002, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas[1] == pytest.approx(0.99 ** (16 / 17))
    with pytest.raises(ValueError, match="interval"):
        G.LazyR1(interval=0)


def test_non_saturating_losses_values_and_gradients():
    fake = torch.tensor([[-2.0], [0.0], [3.0]], requires_grad=True)
    real = torch.tensor([[1.0], [-1.0]], requires_grad=True)
    g = G.generator_loss(fake)
    expected = sum(math.log1p(math.exp(-v)) for v in (-2.0, 0.0, 3.0)) / 3
    assert float(g.detach()) == pytest.approx(expected, rel=1e-6)
    g.backward()
    torch.testing.assert_close(fake.grad, -torch.sigmoid(-fake.detach()) / 3)
    fake.grad = None
    d = G.discriminator_loss(real, fake)
    d_expected = (sum(math.log1p(math.exp(-v)) for v in (1.0, -1.0)) / 2
                  + sum(math.log1p(math.exp(v)) for v in (-2.0, 0.0, 3.0)) / 3)
    assert float(d.detach()) == pytest.approx(d_expected, rel=1e-6)
    d.backward()
    torch.testing.assert_close(real.grad, -torch.sigmoid(-real.detach()) / 2)
    torch.testing.assert_close(fake.grad, torch.sigmoid(fake.detach()) / 3)
    # Non-saturating: a fake D is sure about still gets a strong gradient.
    sure = torch.tensor([[-10.0]], requires_grad=True)
    G.generator_loss(sure).backward()
    assert float(sure.grad) < -0.99


# ------------------------------------------------------------------------------- EMA

def test_ema_beta_half_life_and_rampup():
    assert E.ema_beta(32) == pytest.approx(0.5 ** (32 / 10_000))
    # After half_life images (in steps of the batch), an old weight's share is one half.
    assert E.ema_beta(50, 1000) ** (1000 / 50) == pytest.approx(0.5)
    assert E.ema_beta(32, rampup=0.05, images_seen=3200) == pytest.approx(0.5 ** (32 / 160))
    assert E.ema_beta(32, rampup=0.05, images_seen=10**9) == pytest.approx(E.ema_beta(32))
    assert E.ema_beta(32, rampup=0.05, images_seen=0) == 0.0
    with pytest.raises(ValueError):
        E.ema_beta(0)


def test_model_ema_update_math_and_buffers():
    torch.manual_seed(0)
    live = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = E.ModelEMA(live)
    start = {k: v.clone() for k, v in live.state_dict().items()}
    assert all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    live.train()(torch.randn(8, 3))  # changes the BatchNorm running statistics
    ema.update(live, 0.9)
    for name, p in live.named_parameters():
        torch.testing.assert_close(ema.module.state_dict()[name], 0.9 * start[name] + 0.1 * p)
    for name, b in live.named_buffers():
        torch.testing.assert_close(ema.module.state_dict()[name], b)  # copied, not averaged
    second = {k: v.clone() for k, v in ema.state_dict().items()}
    ema.update(live, 0.5)
    w = "0.weight"
    torch.testing.assert_close(ema.state_dict()[w], 0.5 * second[w] + 0.5 * live.state_dict()[w])
    ema.copy_from(live)
    torch.testing.assert_close(ema.state_dict()[w], live.state_dict()[w])
    with pytest.raises(ValueError, match="beta"):
        ema.update(live, 1.5)


# ------------------------------------------------------------------------------- image losses

@pytest.fixture(scope="module")
def portrait64() -> torch.Tensor:
    rgb = np.asarray(Image.open(REPO / "examples" / "portrait.png").convert("RGB")
                     .resize((64, 64), Image.BICUBIC))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_pixel_losses_masks_and_psnr():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[:, :, :2] = 1.0  # top half differs by 1
    mask = torch.zeros(2, 4, 4)
    mask[:, 2:] = 1  # bottom half only
    assert float(IL.l1_loss(a, b)) == pytest.approx(0.5)
    assert float(IL.l2_loss(a, 2 * b)) == pytest.approx(2.0)
    assert float(IL.l1_loss(a, b, mask)) == 0.0
    assert float(IL.l1_loss(a, b, 1 - mask[:, None])) == pytest.approx(1.0)
    torch.testing.assert_close(IL.psnr(a, b), torch.full((2,), 10 * math.log10(4 / 0.5)))
    with pytest.raises(ValueError, match="mask"):
        IL.l1_loss(a, b, mask[:, :2])


def _shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    return torch.roll(x, shifts=(pixels, pixels), dims=(2, 3))


def test_weight_free_perceptual_zero_for_identical_and_grows_with_blur_and_shift(portrait64):
    loss = IL.WeightFreePerceptual()
    x = portrait64
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    blurs = [float(loss(IL.gaussian_blur(x, s), x)) for s in (0.5, 1.0, 2.0)]
    shifts = [float(loss(_shift(x, p), x)) for p in (1, 2, 4)]
    assert 0 < blurs[0] < blurs[1] < blurs[2], blurs
    assert 0 < shifts[0] < shifts[1] < shifts[2], shifts
    # Both terms separately, and MS-SSIM itself: 1 for identical, falling with blur.
    assert float(IL.ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    ssims = [float(IL.ms_ssim(IL.gaussian_blur(x, s), x)) for s in (0.5, 2.0)]
    assert 1 > ssims[0] > ssims[1] > 0
    assert IL.ms_ssim_scales(64) == 4 and IL.ms_ssim_scales(256) == 5
    laps = [float(IL.laplacian_l1(IL.gaussian_blur(x, s), x)) for s in (0.5, 2.0)]
    assert 0 < laps[0] < laps[1]
    # Blurring costs more than under L1 alone: a blurred image is far in MS-SSIM terms.
    pred = IL.gaussian_blur(x, 1.0).requires_grad_(True)
    loss(pred, x).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ------------------------------------------------------------------------------- weight files

def _random_vgg16() -> dict[str, torch.Tensor]:
    """torchvision vgg16's `features` names and shapes, written from its published layout."""
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    state, cin, index = {}, 3, 0
    g = torch.Generator().manual_seed(0)
    for w in widths:
        if w == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(w, cin, 3, 3, generator=g) * 0.05
        state[f"features.{index}.bias"] = torch.zeros(w)
        cin, index = w, index + 2  # conv, ReLU
    state["classifier.6.bias"] = torch.zeros(1000)  # the classifier is ignored
    return state


def _random_lpips_lins() -> dict[str, torch.Tensor]:
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
            for i, c in enumerate((64, 128, 256, 512, 512))}


def _random_treb1en_ir_se50() -> dict[str, torch.Tensor]:
    """model_ir_se50.pth names and shapes, from TreB1eN's Backbone(112, 50, 'ir_se')."""
    g = torch.Generator().manual_seed(0)

    def bn(prefix, c):
        return {f"{prefix}.weight": torch.rand(c, generator=g) + 0.5,
                f"{prefix}.bias": torch.randn(c, generator=g) * 0.1,
                f"{prefix}.running_mean": torch.randn(c, generator=g) * 0.1,
                f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
                f"{prefix}.num_batches_tracked": torch.tensor(7)}

    def conv(cout, cin, k):
        return torch.randn(cout, cin, k, k, generator=g) * (1.0 / math.sqrt(cin * k * k))

    state = {"input_layer.0.weight": conv(64, 3, 3), **bn("input_layer.1", 64),
             "input_layer.2.weight": torch.full((64,), 0.25)}
    u, cin = 0, 64
    for depth, units in ((64, 3), (128, 4), (256, 14), (512, 3)):
        for i in range(units):
            p = f"body.{u}"
            state.update(bn(f"{p}.res_layer.0", cin))
            state[f"{p}.res_layer.1.weight"] = conv(depth, cin, 3)
            state[f"{p}.res_layer.2.weight"] = torch.full((depth,), 0.25)
            state[f"{p}.res_layer.3.weight"] = conv(depth, depth, 3)
            state.update(bn(f"{p}.res_layer.4", depth))
            state[f"{p}.res_layer.5.fc1.weight"] = conv(depth // 16, depth, 1)
            state[f"{p}.res_layer.5.fc2.weight"] = conv(depth, depth // 16, 1)
            if cin != depth:
                state[f"{p}.shortcut_layer.0.weight"] = conv(depth, cin, 1)
                state.update(bn(f"{p}.shortcut_layer.1", depth))
            u, cin = u + 1, depth
    state.update(bn("output_layer.0", 512))
    state["output_layer.3.weight"] = torch.randn(512, 512 * 7 * 7, generator=g) * 0.005
    state["output_layer.3.bias"] = torch.zeros(512)
    state.update(bn("output_layer.4", 512))
    return state


@pytest.fixture(scope="module")
def ir_se50_state() -> dict[str, torch.Tensor]:
    return _random_treb1en_ir_se50()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory, ir_se50_state) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loss_weights")
    files = {"vgg": folder / "vgg16-397923af.pth", "lins": folder / "vgg.pth",
             "arcface": folder / "model_ir_se50.pth"}
    torch.save(_random_vgg16(), files["vgg"])
    torch.save(_random_lpips_lins(), files["lins"])
    # Saved without num_batches_tracked, as files from before torch 0.4.1 are.
    torch.save({k: v for k, v in ir_se50_state.items() if "num_batches" not in k},
               files["arcface"])
    return files


def test_lpips_loads_public_layouts_and_measures(weight_files, portrait64):
    loss = FL.LPIPSLoss.from_files(weight_files["lins"], weight_files["vgg"])
    vgg = _random_vgg16()
    torch.testing.assert_close(loss.vgg.features[28].weight, vgg["features.28.weight"])
    assert loss.lins[4].shape == (1, 512, 1, 1) and float(loss.lins[4].min()) >= 0
    x = portrait64
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-7)
    pred = IL.gaussian_blur(x, 1.5).requires_grad_(True)
    value = loss(pred, x)
    assert float(value.detach()) > 0
    value.backward()
    assert pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in loss.parameters())
    # A whole lpips.LPIPS state dict (backbone inside, torchvision indices in its slices).
    whole = {**_random_lpips_lins(), "scaling_layer.shift": torch.zeros(1, 3, 1, 1)}
    slices = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4, 24: 5, 26: 5,
              28: 5}
    for k, v in vgg.items():
        if k.startswith("features."):
            i = int(k.split(".")[1])
            whole[f"net.slice{slices[i]}.{k[len('features.'):]}"] = v
    path = weight_files["lins"].with_name("lpips_whole.pth")
    torch.save(whole, path)
    torch.testing.assert_close(FL.LPIPSLoss.from_files(path).vgg.features[28].weight,
                               vgg["features.28.weight"])


def test_lpips_refuses_other_files_naming_them(weight_files):
    with pytest.raises(FL.WeightFileError, match="also needs the ImageNet VGG16"):
        FL.LPIPSLoss.from_files(weight_files["lins"])
    with pytest.raises(FL.WeightFileError, match=r"InsightFace IR-SE-50.*Point this option"):
        FL.LPIPSLoss.from_files(weight_files["arcface"], weight_files["vgg"])
    with pytest.raises(FL.WeightFileError, match=r"not the LPIPS.*torchvision VGG with 13 convs"):
        FL.LPIPSLoss.from_files(weight_files["vgg"], weight_files["vgg"])
    with pytest.raises(FL.WeightFileError, match=r"not torchvision's ImageNet VGG16.*LPIPS linear"):
        FL.LPIPSLoss.from_files(weight_files["lins"], weight_files["lins"])


def test_arcface_loads_treb1en_layout_and_scores_identity(weight_files, ir_se50_state,
                                                         portrait64):
    state = ir_se50_state
    loss = FL.IdentityLoss.from_file(weight_files["arcface"])
    net = loss.net
    # Spot checks that file tensors landed where TreB1eN's module has them.
    torch.testing.assert_close(net.stages[2][0].shortcut[0].weight,
                               state["body.7.shortcut_layer.0.weight"])
    torch.testing.assert_close(net.stages[3][2].se.fc2.weight,
                               state["body.23.res_layer.5.fc2.weight"])
    torch.testing.assert_close(net.stages[1][3].residual[4].running_var,
                               state["body.6.res_layer.4.running_var"])
    torch.testing.assert_close(net.output_layer[3].weight, state["output_layer.3.weight"])
    assert isinstance(net.stages[0][0].shortcut, type(net.stages[0][1].shortcut))  # 64 -> 64
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    x = portrait64
    with torch.no_grad():
        e = loss.embed(x)
        assert e.shape == (1, 512) and torch.isfinite(e).all()
        torch.testing.assert_close(e.norm(dim=1), torch.ones(1))
        assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)


def test_identity_loss_crops_pools_and_passes_gradients(portrait64):
    """The loss around the embedding (crop, 112 px pooling, 1 - cos), on a stand-in network."""
    seen = []

    class Probe(nn.Module):
        def forward(self, face):
            seen.append(face.shape)
            return F.normalize(face.flatten(1)[:, :16], dim=1)

    with torch.device("meta"):  # its IR-SE-50 is replaced: do not draw 44M weights
        loss = FL.IdentityLoss()
    loss.net = Probe()
    x = portrait64
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    pred = torch.flip(x, dims=(3,)).requires_grad_(True)
    value = loss(pred, x)
    assert 0 < float(value.detach()) <= 2
    value.backward()
    assert pred.grad.abs().sum() > 0
    assert seen[-1] == (1, 3, 112, 112)


def test_arcface_refuses_other_files_naming_them(weight_files, ir_se50_state, tmp_path):
    with pytest.raises(FL.WeightFileError, match=r"not the ArcFace IR-SE-50.*LPIPS linear layers"):
        FL.IdentityLoss.from_file(weight_files["lins"])
    # A deeper network (more units at the end): its extra units are named.
    state = dict(ir_se50_state)
    for u in range(24, 26):
        state[f"body.{u}.res_layer.5.fc1.weight"] = torch.zeros(32, 512, 1, 1)
    path = tmp_path / "bigger.safetensors"
    save_file(state, str(path))
    with pytest.raises(FL.WeightFileError, match=r"tensors IR-SE-50 has not.*body\.24"):
        FL.IdentityLoss.from_file(path)
    text = tmp_path / "model_ir_se50.pth"
    text.write_text("<html>404</html>")
    with pytest.raises(ValueError, match="HTML"):
        FL.IdentityLoss.from_file(text)


# ------------------------------------------------------------------------------- the stage

from segtalker_core.models import bundles  # noqa: E402
from segtalker_core.models.stylegan import GeneratorConfig  # noqa: E402
from segtalker_core.train import sgi_stage as S  # noqa: E402
from segtalker_core.train.config import ConfigError, load_stage_config  # noqa: E402
from segtalker_core.train.stage import Provenance, Runtime, StepContext  # noqa: E402

CPU = Runtime(torch.device("cpu"), torch.float32)


def _stage(*overrides: str, data_root=None, init_weights=True, exporting=False) -> S.SGIStage:
    config = load_stage_config(S.SGIStageConfig, "sgi", "tiny", overrides)
    stage = S.SGIStage(config, CPU, data_root)
    stage.init_weights, stage.exporting = init_weights, exporting
    return stage


def _synthetic_batch(portrait: torch.Tensor, n: int = 2) -> dict[str, torch.Tensor]:
    """The portrait (and its mirror) with a coarse face / hair / background map."""
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    regions = torch.zeros(64, 64, dtype=torch.long)
    regions[((yy - 34) ** 2 / 22**2 + (xx - 32) ** 2 / 16**2) < 1] = 6  # skin
    regions[yy < 18] = 4  # hair
    images = [portrait[0], torch.flip(portrait[0], dims=(2,))]
    maps = [regions, torch.flip(regions, dims=(1,))]
    return {"image": torch.stack([images[i % 2] for i in range(n)]),
            "regions": torch.stack([maps[i % 2] for i in range(n)])}


def test_sgi_presets_load_and_unknown_keys_are_named():
    for preset in ("tiny", "256", "512", "personal"):
        config = load_stage_config(S.SGIStageConfig, "sgi", preset)
        assert config.loss.r1_gamma == 10.0 and config.loss.r1_interval == 16
        assert config.loss.style_mixing == 0.0
    personal = load_stage_config(S.SGIStageConfig, "sgi", "personal")
    assert (personal.model.resolution, personal.frame_step, personal.optim.lr) == (256, 2, 2e-5)
    with pytest.raises(ConfigError, match="loss.r1_gamma"):
        load_stage_config(S.SGIStageConfig, "sgi", "tiny", ["loss.r1_gama=5"])
    with pytest.raises(ConfigError, match="style_mixing"):
        load_stage_config(S.SGIStageConfig, "sgi", "tiny", ["loss.style_mixing=2"])


def test_discriminator_lr_schedule_follows_its_own_section():
    stage = _stage("optim.warmup_steps=7", "d_optim.warmup_steps=3", "d_optim.decay=cosine")
    assert stage.optim_config(S.GENERATOR).warmup_steps == 7
    d = stage.optim_config(S.DISCRIMINATOR)
    assert (d.warmup_steps, d.decay) == (3, "cosine")


def _save_generator(path: Path, size: int, w_dim: int = 32) -> Path:
    config = GeneratorConfig(size=size, w_dim=w_dim, n_mlp=2, channel_base=512,
                             channel_multiplier=1, channel_max=32)
    bundles.save_component(path, bundles.build_component("generator", config), config)
    return path


def test_init_from_refuses_wrong_component_and_resolution(tmp_path):
    stage = _stage()
    stage.build()
    encoder = stage.autoencoder.encoder
    g_bundle = _save_generator(tmp_path / "g64_generator.safetensors", 64)
    enc_path = tmp_path / "e.safetensors"
    bundles.save_component(enc_path, encoder, encoder.config, generator=g_bundle)
    with pytest.raises(ValueError, match=r"e\.safetensors is a mask-guided encoder bundle, but "
                                         r"the sgi stage trains a mask-guided StyleGAN generator"):
        _stage(f"init_from={enc_path}").build()
    g128 = _save_generator(tmp_path / "g128.safetensors", 128)
    with pytest.raises(ValueError, match=r"g128\.safetensors is a 128 px .* trains at 64 px"):
        _stage(f"init_from={g128}").build()
    with pytest.raises(ValueError, match=r"init_discriminator g64_generator\.safetensors is a "
                                         r"mask-guided StyleGAN generator bundle, but "
                                         r"init_discriminator takes a StyleGAN discriminator"):
        _stage(f"init_discriminator={g_bundle}").build()
    d128 = tmp_path / "d128.safetensors"
    d_config = S.SGIModelConfig(resolution=128, d_channel_base=256, d_channel_multiplier=1,
                                d_channel_max=32).discriminator()
    bundles.save_component(d128, bundles.build_component("discriminator", d_config), d_config)
    with pytest.raises(ValueError, match=r"d128\.safetensors is a 128 px .* trains at 64 px"):
        _stage(f"init_discriminator={d128}").build()
    # An encoder that writes codes for another generator layout is named with both layouts.
    other = _save_generator(tmp_path / "w16_generator.safetensors", 64, w_dim=16)
    with pytest.raises(ValueError, match=r"writes codes of w_dim 32.*reads w_dim 16"):
        _stage(f"init_from={other}", f"init_encoder={enc_path}").build()
    with pytest.raises(ConfigError, match="distill"):
        _stage("loss.distill=1").build()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _stage(f"init_from={tmp_path / 'missing_generator.safetensors'}").build()


def test_train_export_and_init_from_the_export(tmp_path, portrait64):
    stage = _stage("loss.style_mixing=1")
    parts = stage.build()
    ctx = StepContext(CPU, parts, {}, accumulation=2)
    batch = _synthetic_batch(portrait64)
    out = stage.train_step(ctx, [batch, batch], 0)  # step 0: R1 is due
    assert {"d_loss", "r1", "g_loss", "l2", "perceptual", "g_adv", "psnr"} <= set(out)
    assert all(math.isfinite(v) for v in out.values())
    out = stage.train_step(ctx, [batch, batch], 1)
    assert "r1" not in out and out["ema_beta"] > 0
    grid = stage.samples(ctx, batch)["reconstruction"]
    assert grid.dtype == np.uint8 and grid.shape == (2 * 64 + 2, 3 * 64 + 4, 3)
    written = stage.export(tmp_path / "person.safetensors",
                           Provenance("sgi", 2, "hash", {"loop": {"steps": 2}}))
    names = sorted(p.name for p in written)
    assert names == ["person_discriminator.safetensors", "person_encoder.safetensors",
                     "person_generator.safetensors"]
    enc, enc_cfg = bundles.load_component(tmp_path / "person_encoder.safetensors", "encoder")
    gen, gen_cfg = bundles.load_component(tmp_path / "person_generator.safetensors", "generator")
    assert gen_cfg.extra["training"]["steps"] == 2
    ema = stage.ema.module
    torch.testing.assert_close(gen.state_dict(), ema.generator.state_dict())
    torch.testing.assert_close(enc.state_dict(), ema.encoder.state_dict())
    codes, _ = enc(batch["image"], batch["regions"])
    bundles.check_style_codes(codes, enc_cfg.extra["encoder_id"], gen_cfg)  # a pair
    # Fine-tune from the export: encoder and discriminator come from beside the generator, and
    # a distillation teacher is the bundle as it is.
    again = _stage(f"init_from={tmp_path / 'person_generator.safetensors'}", "loss.distill=0.5")
    parts = again.build()
    torch.testing.assert_close(again.autoencoder.encoder.state_dict(), enc.state_dict())
    torch.testing.assert_close(again.discriminator.state_dict(),
                               stage.discriminator.state_dict())
    torch.testing.assert_close(again.teacher.state_dict(), gen.state_dict())
    out = again.train_step(StepContext(CPU, parts, {}, 1), [batch], 3)
    assert math.isfinite(out["distill"])
    # Rebuilt for export (weights from a checkpoint): architecture from the bundle, no teacher.
    rebuilt = _stage(f"init_from={tmp_path / 'person_generator.safetensors'}",
                     init_weights=False, exporting=True)
    rebuilt.build()
    assert rebuilt.teacher is None and rebuilt.perceptual is None
    assert rebuilt.autoencoder.generator.config == gen.config


class TinyEmbedding(nn.Module):
    """[B, 3, 112, 112] -> unit [B, 16]: a cheap stand-in for the IR-SE-50 in a train step."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 8, 8)
        self.linear = nn.Linear(4 * 14 * 14, 16)

    def forward(self, x):
        return F.normalize(self.linear(self.conv(x).flatten(1)), dim=1)


def test_stage_uses_lpips_and_identity_when_their_files_are_given(weight_files, portrait64):
    stage = _stage(f"loss.lpips_weights={weight_files['lins']}",
                   f"loss.vgg16_weights={weight_files['vgg']}",
                   f"loss.arcface_weights={weight_files['arcface']}", "loss.identity=0.1")
    parts = stage.build()
    assert isinstance(stage.perceptual, FL.LPIPSLoss)
    assert isinstance(stage.identity, FL.IdentityLoss)
    stage.identity.net = TinyEmbedding()  # the IR-SE-50's forward is tested above
    out = stage.train_step(StepContext(CPU, parts, {}, 1), [_synthetic_batch(portrait64, 1)], 1)
    assert out["perceptual"] > 0 and 0 < out["identity"] <= 2
    # Without files: the weight-free perceptual loss, and no identity term.
    plain = _stage("loss.identity=0.1")
    plain.build()
    assert isinstance(plain.perceptual, IL.WeightFreePerceptual) and plain.identity is None


def test_sgi_reconstruction_psnr_rises_on_a_training_clip(prepared_dataset):
    """The tiny preset on frames of one prepared clip: EMA reconstruction PSNR +6 dB in 30 steps."""
    from torch.utils.data import default_collate

    torch.manual_seed(0)
    stage = _stage("frame_step=4", data_root=prepared_dataset)
    parts = stage.build()
    train, _ = stage.datasets()
    # The first items are frames 0, 4, 8, 12 of the first clip (clips are ordered, > 12 frames).
    batch = default_collate([train[i] for i in range(4)])
    ctx = StepContext(CPU, parts, {}, 1)
    with torch.no_grad():
        before = stage.evaluate(ctx, [batch])["psnr"]
    for step in range(30):
        out = stage.train_step(ctx, [batch], step)
    with torch.no_grad():
        after = stage.evaluate(ctx, [batch])["psnr"]
    assert after - before >= 6.0, (before, after, out)
