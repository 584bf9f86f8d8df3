"""Metrics with user-supplied weights: SyncNet v2 (LSE-C / LSE-D) loads a random state dict in
the public ``syncnet_v2.model`` layout (``tests/layouts/syncnet_v2_model.json``, the names and
shapes of joonson/syncnet_python's module) and scores; files of another network are named for
what they look like; the MFCCs it reads."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from segtalker_core import cli
from segtalker_core.eval import syncnet_v2 as sn
from segtalker_core.eval.mfcc import mfcc
from segtalker_core.eval.weights import WrongWeightsError, load_weights
from video_clips import REPO_DIR

LAYOUT = json.loads((REPO_DIR / "tests" / "layouts" / "syncnet_v2_model.json").read_text())


def random_state(layout: dict, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(100)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = 0.05 * torch.randn(shape, generator=g)
    return state


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "syncnet_v2.model"
    torch.save(random_state(LAYOUT), path)
    return path


def test_the_network_has_the_public_layout():
    mine = {k: list(v.shape) for k, v in sn.SyncNetV2().state_dict().items()}
    assert mine == LAYOUT


def test_a_random_syncnet_v2_file_loads_and_scores(syncnet_file):
    model = sn.load_syncnet_v2(syncnet_file)
    expected = torch.load(syncnet_file, weights_only=True)
    assert torch.equal(model.state_dict()["netcnnlip.0.weight"], expected["netcnnlip.0.weight"])
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (7, sn.CROP, sn.CROP, 3), np.uint8)
    wave = rng.standard_normal(16000 * 7 // 25).astype(np.float32) * 0.1
    result = sn.syncnet_v2_score(model, crops, wave, max_shift=1)
    assert result.windows == 2 and -1 <= result.offset <= 1
    assert math.isfinite(result.lse_d) and result.lse_d > 0 and result.lse_c >= 0


def test_lse_finds_the_shift_of_matching_embeddings():
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(40, 16, generator=g)
    video = torch.roll(audio, 3, dims=0)  # video window i shows audio window i - 3: video late
    result = sn.lse(video, audio, max_shift=5)
    assert result.offset == 3 and result.lse_c > 1.0


@pytest.mark.parametrize("keys, looks_like", [
    (["Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1.conv.weight"], "Inception v3"),
    (["face_encoder.0.conv_block.0.weight", "audio_encoder.0.conv_block.0.weight"], "Wav2Lip's SyncNet"),
    (["lin0.model.1.weight", "lin1.model.1.weight"], "LPIPS"),
    (["some.layer.weight"], "an unknown network"),
])
def test_a_file_of_another_network_is_named(tmp_path, keys, looks_like):
    path = tmp_path / "wrong.pth"
    torch.save({k: torch.zeros(2, 2) for k in keys}, path)
    with pytest.raises(WrongWeightsError, match=looks_like) as error:
        load_weights(path, "syncnet_v2", "LSE-C / LSE-D", "--syncnet-v2")
    assert "needs SyncNet v2" in str(error.value)


def test_not_a_weight_file_is_refused(tmp_path):
    text = tmp_path / "syncnet_v2.model"
    text.write_text("<html>404 Not Found</html>")
    with pytest.raises(WrongWeightsError, match="cannot be read as plain tensors"):
        sn.load_syncnet_v2(text)


def test_the_cli_refuses_a_wrong_weight_file_before_reading_clips(tmp_path, capsys):
    wrong = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "Mixed_5b.x": torch.zeros(1)}, wrong)
    portrait = str(REPO_DIR / "examples" / "portrait.png")
    video = str(REPO_DIR / "examples" / "video.mp4")
    code = cli.main(["eval", "--generated", video, "--reference", portrait, "--syncnet-v2", str(wrong),
                     "-o", str(tmp_path / "report")])
    assert code == 2
    assert "looks like an Inception v3 network" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_another_bundle_as_seg_syncnet_is_refused(tmp_path, capsys):
    from segtalker_core.models.random_bundle import write_random_bundles

    bundles = write_random_bundles(tmp_path / "bundles")
    video = str(REPO_DIR / "examples" / "video.mp4")
    code = cli.main(["eval", "--generated", video, "--reference", video, "--syncnet", str(bundles["tsg"]),
                     "-o", str(tmp_path / "report")])
    assert code == 2
    assert "--syncnet" in capsys.readouterr().err


def test_mfcc_frames_and_energy():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    features = mfcc(wave)
    assert features.shape == (13, 1 + math.ceil((16000 - 400) / 160))
    # The first coefficient is the log energy of the pre-emphasised 16-bit frame.
    x = wave.astype(np.float64) * 32768
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frame = x[160:560]
    assert features[0, 1] == pytest.approx(np.log((np.abs(np.fft.rfft(frame, 512)) ** 2 / 512).sum()))
    louder = mfcc(wave * 2)
    assert np.allclose(louder[0] - features[0], np.log(4.0))


FID_LAYOUT = json.loads((REPO_DIR / "tests" / "layouts" / "pt_inception_fid.json").read_text())


def test_a_random_fid_inception_file_in_pytorch_fids_layout_loads_and_gives_features(tmp_path):
    from segtalker_core.eval.fid import inception_features, load_fid_inception

    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(random_state(FID_LAYOUT), path)
    model = load_fid_inception(path)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == FID_LAYOUT
    frames = np.random.default_rng(0).integers(0, 256, (1, 64, 48, 3), np.uint8)
    features = inception_features(model, frames)
    assert features.shape == (1, 2048) and np.isfinite(features).all() and (features >= 0).all()


def test_a_syncnet_file_as_inception_is_named(syncnet_file):
    from segtalker_core.eval.fid import load_fid_inception

    with pytest.raises(WrongWeightsError, match=r"looks like SyncNet v2 .*FID needs an Inception v3"):
        load_fid_inception(syncnet_file)


def test_frechet_distance_of_known_gaussians():
    from segtalker_core.eval.fid import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 3))
    a -= a.mean(axis=0)
    assert frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0])
    assert frechet_distance(a, a + shift) == pytest.approx(5.0, rel=1e-6)
    # Same mean, covariance scaled by 4: trace terms give 3 * (1 + 4 - 2 * 2) = 3 (sample noise aside).
    assert frechet_distance(a, 2 * a) == pytest.approx(np.trace(np.cov(a, rowvar=False)), rel=1e-6)


# torchvision's ImageNet `features` convs as published: (index, out, in, kernel); the
# classifier is left out (the LPIPS loader ignores it; it is 90% of the real files' size).
ALEXNET_CONVS = ((0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3))
VGG16_CONVS = tuple((i, o, c, 3) for i, o, c in (
    (0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
    (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)))
LPIPS_WIDTHS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def random_backbone(convs, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, out, cin, k in convs:
        # He-scaled, so the random ReLU features neither vanish nor blow up through the layers.
        state[f"features.{index}.weight"] = torch.randn(out, cin, k, k, generator=g) * math.sqrt(2 / (cin * k * k))
        state[f"features.{index}.bias"] = torch.zeros(out)
    return state


def random_lpips_lins(net: str) -> dict:
    g = torch.Generator().manual_seed(1)
    return {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(LPIPS_WIDTHS[net])}


@pytest.fixture(scope="module")
def alex_lpips_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    lins, backbone = folder / "alex.pth", folder / "alexnet-owt-7be5be79.pth"
    torch.save(random_lpips_lins("alex"), lins)
    torch.save(random_backbone(ALEXNET_CONVS), backbone)
    return lins, backbone


def test_alexnet_lpips_in_the_public_layout_is_0_on_identical_and_grows_with_blur(alex_lpips_files):
    import cv2
    from PIL import Image

    from segtalker_core.eval.lpips import load_lpips, lpips_distances

    model, net = load_lpips(*alex_lpips_files)
    assert net == "alex"
    torch.testing.assert_close(model.vgg.features[10].weight, random_backbone(ALEXNET_CONVS)["features.10.weight"])
    face = np.asarray(Image.open(REPO_DIR / "examples" / "portrait.png").convert("RGB").resize((128, 128)))
    blurred = [cv2.GaussianBlur(face, (0, 0), s) for s in (1.0, 3.0)]
    values = lpips_distances(model, np.stack([face] + blurred), np.stack([face] * 3))
    assert values[0] == 0.0 and 0.0 < values[1] < values[2]


def test_a_whole_vgg_lpips_state_dict_is_read_as_one_file(tmp_path):
    from segtalker_core.eval.lpips import load_lpips, lpips_distances

    backbone = random_backbone(VGG16_CONVS)
    slice_of = {0: 1, 2: 1, 5: 2, 7: 2, 10: 3, 12: 3, 14: 3, 17: 4, 19: 4, 21: 4, 24: 5, 26: 5, 28: 5}
    whole = {**random_lpips_lins("vgg"), "scaling_layer.shift": torch.zeros(1, 3, 1, 1)}
    for name, tensor in backbone.items():
        index = int(name.split(".")[1])
        whole[f"net.slice{slice_of[index]}.{name.removeprefix('features.')}"] = tensor
    path = tmp_path / "lpips_vgg.pth"
    torch.save(whole, path)
    model, net = load_lpips(path)
    assert net == "vgg"
    torch.testing.assert_close(model.vgg.features[28].weight, backbone["features.28.weight"])
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, 48, 48, 3), np.uint8)
    assert lpips_distances(model, image, image.copy())[0] == 0.0
    assert lpips_distances(model, 255 - image, image)[0] > 0.0


def test_lpips_files_for_the_wrong_metric_are_named(alex_lpips_files, syncnet_file, tmp_path):
    from segtalker_core.eval.lpips import load_lpips

    lins, backbone = alex_lpips_files
    with pytest.raises(WrongWeightsError, match=r"looks like SyncNet v2 .*LPIPS needs LPIPS linear heads"):
        load_lpips(syncnet_file, backbone)
    with pytest.raises(WrongWeightsError, match=r"--lpips-backbone .* looks like SyncNet v2"):
        load_lpips(lins, syncnet_file)
    with pytest.raises(WrongWeightsError, match=r"only the LPIPS 'alex' linear layers.*alexnet-owt-7be5be79.pth"):
        load_lpips(lins)
    vgg = tmp_path / "vgg16-397923af.pth"
    torch.save(random_backbone(VGG16_CONVS), vgg)
    with pytest.raises(WrongWeightsError, match=r"torchvision VGG with 13 convs.*'alex' linear layers need"):
        load_lpips(lins, vgg)


def test_the_cli_refuses_a_wrong_lpips_file_before_reading_clips(syncnet_file, tmp_path, capsys):
    video = str(REPO_DIR / "examples" / "video.mp4")
    code = cli.main(["eval", "--generated", video, "--reference", video, "--lpips", str(syncnet_file),
                     "-o", str(tmp_path / "report")])
    assert code == 2
    assert "--lpips" in (err := capsys.readouterr().err) and "looks like SyncNet v2" in err
    assert not (tmp_path / "report").exists()


def test_the_cli_takes_one_source_of_phone_timing(tmp_path, capsys):
    video = str(REPO_DIR / "examples" / "video.mp4")
    code = cli.main(["eval", "--generated", video, "--reference", video, "--transcript", "hello",
                     "--recognise-phones", "-o", str(tmp_path / "report")])
    assert code == 2 and "give one of --phones FILE, --transcript, --recognise-phones" in capsys.readouterr().err
