"""Style-code refinement (E4S's per-face optimisation): it fits the source crop better than the
encoder alone, is off (bit-identical) at 0 steps, leaves the models untouched, and refuses bad
settings. Tiny random bundles on the CPU (the code is device-agnostic; CUDA when available)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from segtalker_core import checkpoints, learned, model_loading
from segtalker_core.containers import NUM_LANDMARKS, FaceTrack, TalkingSegmentation
from segtalker_core.models.random_bundle import write_random_bundles
from segtalker_core.parsing.bisenet import bisenet_bundle_config, build_bisenet
from segtalker_core.style_refinement import (MAX_STEPS, RefinementConfig, StyleRefinement,
                                             masked_ssim, multiscale_structure_loss)

SIZE = 64
STEPS = 4
LR = 0.03  # 3x E4S's: a clear gain in a few steps keeps the test short


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("refine")
    paths = write_random_bundles(out, resolution=SIZE, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_bisenet()
    bisenet = checkpoints.save(out / "bisenet.safetensors", net.state_dict(), bisenet_bundle_config())
    loaded = {slot: model_loading.load_model(paths[slot], "cpu", slot=slot)
              for slot in ("encoder", "generator")}
    loaded["parser"] = model_loading.load_model(bisenet, "cpu", slot="parser")
    loaded["parser"].runner.input_size = SIZE  # the network at the crop size: fast, still BiSeNet
    return loaded


def _faces() -> FaceTrack:
    """One smooth synthetic face: skin, hair, lips, an eye, a background, with soft shading."""
    labels = np.zeros((1, SIZE, SIZE), np.uint8)
    labels[:, 8:60, 12:52] = 1  # skin
    labels[:, 8:18, 12:52] = 17  # hair
    labels[:, 40:46, 24:40] = 12  # upper lip
    labels[:, 46:50, 24:40] = 13  # lower lip
    labels[:, 24:28, 18:28] = 4  # an eye
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    crop = np.stack([90 + 120 * xx, 60 + 100 * yy, 140 - 60 * xx * yy], -1)
    crop = np.clip(crop + 30 * (labels[0, ..., None] == 12), 0, 255).astype(np.uint8)[None]
    return FaceTrack(frames=crop.copy(), crops=crop, labels=labels,
                     landmarks=np.full((1, NUM_LANDMARKS, 3), np.nan, np.float32),
                     transforms=np.eye(2, 3)[None], found=np.ones(1, bool))


def _face_error(faces: FaceTrack, style, generator) -> float:
    """Masked mean squared error (face pixels, 0..255) of the rendered crop vs the source."""
    seg = TalkingSegmentation(faces.regions, faces, np.zeros(1, np.int64), 25.0)
    crop = learned.synthesize_learned(seg, style, generator, seed=0)[0].astype(np.float64)
    face = faces.regions[0] != 0
    return float(((crop - faces.crops[0]) ** 2)[face].mean())


def _weights(*loaded) -> list[torch.Tensor]:
    return [t.detach().clone() for m in loaded for t in m.runner.state_dict().values()]


def test_refined_codes_reproduce_the_crop_better(models):
    faces = _faces()
    before = _weights(models["encoder"], models["generator"])
    plain = learned.encode_style_learned(faces, models["encoder"], 0)
    steps = []
    refine = StyleRefinement(RefinementConfig(steps=STEPS, lr=LR), models["generator"],
                             progress=lambda done, total: steps.append((done, total)))
    refined = learned.encode_style_learned(faces, models["encoder"], 0, refine)
    info = refined.meta["refinement"]
    assert info["loss_best"] < 0.9 * info["loss_start"], info
    assert info["terms"] == ["l2", "structure"] and info["space"] == "features"
    assert steps[-1] == (STEPS, STEPS) and len(steps) == STEPS
    assert refined.codes.shape == plain.codes.shape and refined.codes.dtype == torch.float32
    np.testing.assert_array_equal(refined.valid, plain.valid)
    assert _face_error(faces, refined, models["generator"]) < 0.9 * _face_error(
        faces, plain, models["generator"])
    # The cached models are untouched: same values, no gradients left on them.
    after = _weights(models["encoder"], models["generator"])
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for m in ("encoder", "generator")
               for p in models[m].runner.parameters())


def test_zero_steps_is_the_encoder_output_bit_for_bit(models):
    faces = _faces()
    plain = learned.encode_style_learned(faces, models["encoder"], 0)
    off = learned.encode_style_learned(
        faces, models["encoder"], 0, StyleRefinement(RefinementConfig(steps=0), models["generator"]))
    assert torch.equal(plain.codes, off.codes) and "refinement" not in off.meta
    np.testing.assert_array_equal(plain.valid, off.valid)


def test_codes_space_and_parsing_term(models):
    faces = _faces()
    refine = StyleRefinement(RefinementConfig(steps=2, space="codes", lr=LR), models["generator"],
                             parser=models["parser"])
    info = learned.encode_style_learned(faces, models["encoder"], 0, refine).meta["refinement"]
    assert info["terms"] == ["l2", "structure", "parsing"]
    assert info["loss_best"] < info["loss_start"]
    assert all(p.grad is None for p in models["parser"].runner.model.parameters())


def test_cancel_leaves_nothing_behind(models):
    faces = _faces()
    before = _weights(models["encoder"], models["generator"])

    class Cancelled(Exception):
        pass

    def cancel(done: int, _total: int) -> None:
        if done == 1:
            raise Cancelled

    refine = StyleRefinement(RefinementConfig(steps=10), models["generator"], progress=cancel)
    with pytest.raises(Cancelled):
        learned.encode_style_learned(faces, models["encoder"], 0, refine)
    assert all(torch.equal(a, b) for a, b in
               zip(before, _weights(models["encoder"], models["generator"])))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_refines_and_keeps_float32_codes(models, dtype):
    faces = _faces()
    generator = models["generator"]
    try:
        generator.place("cpu", dtype)
        refine = StyleRefinement(RefinementConfig(steps=2, lr=LR), generator)
        style = learned.encode_style_learned(faces, models["encoder"], 0, refine)
    finally:
        generator.place("cpu", torch.float32)
    info = style.meta["refinement"]
    assert info["loss_best"] < info["loss_start"], info  # fp16: the scaler did not skip them all
    assert style.codes.dtype == torch.float32 and torch.isfinite(style.codes).all()
    assert all(t.dtype == torch.float32 for t in generator.runner.state_dict().values()
               if t.is_floating_point())


def test_ssim_is_one_on_equal_images_and_masks_count():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    assert float(masked_ssim(x, x, mask)) == pytest.approx(1.0, abs=1e-5)
    y = x.clone()
    y[..., 21:] = -x[..., 21:]  # changed outside the mask, beyond the 11 px window
    assert float(multiscale_structure_loss(x, y, mask, scales=1)) == pytest.approx(0, abs=1e-4)
    assert float(multiscale_structure_loss(x, y, torch.ones_like(mask))) > 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=-1), "0..5000"), (dict(steps=MAX_STEPS + 1), "0..5000"), (dict(steps=2.5), "whole"),
    (dict(steps=True), "whole"), (dict(steps=5, lr=0), "learning rate"),
    (dict(steps=5, space="w"), "space"), (dict(steps=5, parsing_weight=-1), "parsing_weight"),
    (dict(steps=5, l2_weight=0, structure_weight=0), "nothing ties"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RefinementConfig(**kwargs)


def test_a_generator_on_another_slot_is_refused(models):
    refine = StyleRefinement(RefinementConfig(steps=2), models["encoder"])
    with pytest.raises(ValueError, match="generator"):
        learned.encode_style_learned(_faces(), models["encoder"], 0, refine)


# -- the talk command and TalkSettings ------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory) -> dict:
    return {k: str(v) for k, v in write_random_bundles(tmp_path_factory.mktemp("cli"),
                                                        resolution=SIZE, seed=0).items()}


def _talk(tmp_path, *options) -> tuple[int, object]:
    import video_clips as V
    from segtalker_core import cli

    speech = V.speech_clip(tmp_path / "speech.wav", 0.12)  # 3 frames
    out = tmp_path / "out.mp4"
    code = cli.main(["talk", "--image", str(V.REPO_DIR / "examples" / "portrait.png"), "--audio",
                     str(speech), "-o", str(out), "-q", "--size", "64", *options])
    return code, out


def test_talk_optimize_steps_refines_the_portrait_codes(tmp_path, bundle_files, monkeypatch):
    from segtalker_core.video_io import probe_video

    calls = []
    original = learned._refined_codes

    def spy(*args):
        calls.append(args[-1].config)
        return original(*args)

    monkeypatch.setattr(learned, "_refined_codes", spy)
    code, out = _talk(tmp_path, "--encoder", bundle_files["encoder"], "--generator",
                      bundle_files["generator"], "--optimize-steps", "1", "--seed", "3")
    assert code == 0 and probe_video(out).frame_count == 3
    assert [(c.steps, c.seed) for c in calls] == [(1, 3)]


@pytest.mark.parametrize("value, message", [("-1", "0..5000"), ("5001", "0..5000"),
                                            ("many", "whole number")])
def test_talk_refuses_a_bad_step_count(tmp_path, capsys, value, message):
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error: one error line
        _talk(tmp_path, "--optimize-steps", value)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: argument --optimize-steps")
    assert message in err and not (tmp_path / "out.mp4").exists()


def test_talk_optimize_steps_needs_the_learned_encoder_and_generator(tmp_path, capsys, bundle_files):
    code, out = _talk(tmp_path, "--encoder", bundle_files["encoder"], "--optimize-steps", "4")
    err = capsys.readouterr().err
    assert code != 0 and "give --encoder and --generator" in err and not out.exists()


def test_talk_settings_check_the_steps(tmp_path):
    from segtalker_core import cli_options, style_refinement, talk_file

    assert cli_options.OPTIMIZE_STEPS_RANGE == (0, style_refinement.MAX_STEPS)
    with pytest.raises(ValueError, match="0..5000"):
        talk_file.TalkSettings(optimize_steps=-2)
    settings = talk_file.TalkSettings(optimize_steps=2)
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="no encoder bundle"):
        talk_file.talk_image_file(image, np.zeros(1600, np.float32), tmp_path / "x.mp4",
                                  settings=settings)


# -- E4S's own losses from the user's weight files ------------------------------------------------


class _MeanColourIdentity(torch.nn.Module):
    """A stand-in for the ArcFace identity loss (same call; the real one is 43M weights)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred.mean(dim=(2, 3)) - target.mean(dim=(2, 3))).square().mean()


class _EdgeLPIPS(torch.nn.Module):
    """A stand-in for LPIPSLoss (same call, frozen): distance of fixed edge features; the real
    VGG16 costs ~10 s of CPU a step here. The real one is built from files below."""

    def __init__(self):
        super().__init__()
        edges = torch.tensor([[-1.0, 0.0, 1.0]] * 3)
        self.weight = torch.nn.Parameter(torch.stack([edges, edges.t()])[:, None].repeat(1, 3, 1, 1),
                                         requires_grad=False)
        self.sizes: list[int] = []

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.sizes.append(pred.shape[-1])
        f = torch.nn.functional.conv2d
        return (f(pred, self.weight) - f(target, self.weight)).square().mean()


def test_lpips_replaces_ssim_and_identity_joins(models):
    lpips = _EdgeLPIPS()
    refine = StyleRefinement(RefinementConfig(steps=2, lr=LR), models["generator"], lpips=lpips,
                             identity=_MeanColourIdentity())
    info = learned.encode_style_learned(_faces(), models["encoder"], 0, refine).meta["refinement"]
    assert info["terms"] == ["l2", "lpips", "identity"]
    assert info["loss_best"] < info["loss_start"]
    assert lpips.sizes[:3] == [SIZE, SIZE // 2, SIZE // 4]  # E4S's three scales, each pass
    assert lpips.weight.grad is None


def test_talk_settings_load_the_lpips_files(models, tmp_path):
    from segtalker_core import talk_file
    from segtalker_core.train.feature_losses import LPIPS_CHANNELS, LPIPSLoss, VGG16Features

    vgg = tmp_path / "vgg16-397923af.pth"
    torch.save({f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}, vgg)
    lins = tmp_path / "vgg.pth"
    torch.save({f"lin{i}.model.1.weight": torch.full((1, c, 1, 1), 0.1)
                for i, c in enumerate(LPIPS_CHANNELS)}, lins)
    run = talk_file.TalkModels(encoder=models["encoder"], generator=models["generator"])
    settings = talk_file.TalkSettings(optimize_steps=3, lpips_weights=str(lins),
                                      lpips_vgg_weights=str(vgg))
    refine = talk_file._refinement(settings, run, None)
    assert isinstance(refine.lpips, LPIPSLoss) and refine.identity is None
    assert refine.config.steps == 3
    with pytest.raises(ValueError, match="optimize_steps is 0"):
        talk_file._check_refinement(talk_file.TalkSettings(lpips_weights=str(lins)), run)
    with pytest.raises(ValueError, match="without lpips_weights"):
        talk_file._check_refinement(
            talk_file.TalkSettings(optimize_steps=2, lpips_vgg_weights=str(vgg)), run)
    with pytest.raises(Exception, match="vgg.pth"):  # the linear layers alone: VGG16 missing
        talk_file._refinement(talk_file.TalkSettings(optimize_steps=2, lpips_weights=str(lins)),
                              run, None)
