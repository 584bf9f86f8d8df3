"""``talk``'s model options: --face-index --parser --tsg --encoder --generator --device
--precision --batch-size, each run end to end on tiny random bundles (CPU), and their bad input."""
from __future__ import annotations

import logging

import pytest
import torch

import video_clips as V
from segtalker_core import cli, pipeline
from segtalker_core.video_io import probe_video

PORTRAIT = str(V.REPO_DIR / "examples" / "portrait.png")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    from segtalker_core.models.random_bundle import write_random_bundles

    return {k: str(v) for k, v in write_random_bundles(tmp_path_factory.mktemp("bundles"), resolution=64,
                                                       seed=0).items()}


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return str(V.speech_clip(tmp_path_factory.mktemp("speech") / "speech.wav", 0.3))  # 8 frames


@pytest.fixture(scope="module")
def bisenet_file(tmp_path_factory):
    from segtalker_core.parsing.bisenet import BiSeNet

    path = tmp_path_factory.mktemp("bisenet") / "79999_iter.pth"
    torch.manual_seed(0)
    torch.save(BiSeNet().state_dict(), path)
    return str(path)


def talk(tmp_path, speech, *options, source=("--image", PORTRAIT)):
    out = tmp_path / "out.mp4"
    code = cli.main(["talk", *source, "--audio", speech, "-o", str(out), "-q", "--size", "64", *options])
    return code, out


def test_tsg_encoder_generator_chain(tmp_path, speech, bundles):
    code, out = talk(tmp_path, speech, "--tsg", bundles["tsg"], "--encoder", bundles["encoder"],
                     "--generator", bundles["generator"])
    assert code == 0 and probe_video(out).frame_count == 8


def test_tsg_with_the_builtin_renderer(tmp_path, speech, bundles):
    code, out = talk(tmp_path, speech, "--tsg", bundles["tsg"])
    assert code == 0 and probe_video(out).frame_count == 8


def test_learned_models_dub_a_video(tmp_path, speech, bundles):
    code, out = talk(tmp_path, speech, "--tsg", bundles["tsg"], "--encoder", bundles["encoder"],
                     "--generator", bundles["generator"], source=("--video", str(V.EXAMPLE_VIDEO)))
    info = probe_video(out)
    assert code == 0 and (info.frame_count, info.width) == (8, 400)


def test_parser_file(tmp_path, speech, bisenet_file):
    code, out = talk(tmp_path, speech, "--parser", bisenet_file, source=("--video", str(V.EXAMPLE_VIDEO)))
    assert code == 0 and probe_video(out).frame_count == 8


def test_face_index(tmp_path, speech, capsys):
    code, out = talk(tmp_path, speech, "--face-index", "0")
    assert code == 0
    out.unlink()
    # There is one face: the third from the left is nobody, which is the no-face error.
    code, out = talk(tmp_path, speech, "--face-index", "2")
    assert code == 2 and not out.exists()
    assert "error: no face" in capsys.readouterr().err


def test_batch_size(tmp_path, speech, bundles, monkeypatch):
    from segtalker_core import learned, working_memory

    sizes = []
    real = learned.AdaptiveBatch

    def spy(size, what):
        sizes.append((what, size))
        return real(size, what)

    monkeypatch.setattr(learned, "AdaptiveBatch", spy)
    code, _ = talk(tmp_path, speech, "--tsg", bundles["tsg"], "--encoder", bundles["encoder"],
                   "--generator", bundles["generator"], "--batch-size", "3")
    assert code == 0 and ("TSG", 3) in sizes and ("generator", 3) in sizes
    # 0: automatic, the batch picked from the free memory (on a CPU: the models' defaults).
    sizes.clear()
    picked = []
    real_pick = working_memory.pick_batch_size

    def pick(model, *args, **kwargs):
        picked.append(model.component)
        return real_pick(model, *args, **kwargs)

    monkeypatch.setattr(working_memory, "pick_batch_size", pick)
    (tmp_path / "auto").mkdir()
    code, _ = talk(tmp_path / "auto", speech, "--tsg", bundles["tsg"], "--encoder", bundles["encoder"],
                   "--generator", bundles["generator"], "--batch-size", "0")
    assert code == 0 and sorted(picked) == ["generator", "tsg"]
    assert sorted(sizes) == [("TSG", learned.TSG_BATCH), ("generator", learned.GENERATOR_BATCH)]


def test_bundle_of_the_wrong_slot_is_refused(tmp_path, speech, bundles, capsys):
    code, out = talk(tmp_path, speech, "--tsg", bundles["encoder"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("error: --tsg: ") and "encoder" in err and "Traceback" not in err


def test_generator_without_encoder_is_refused(tmp_path, speech, bundles, capsys):
    code, _ = talk(tmp_path, speech, "--generator", bundles["generator"])
    assert code == 2 and "give the encoder bundle" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path, speech, bundles, capsys):
    code, _ = talk(tmp_path, speech, "--tsg", bundles["tsg"], "--device", "cuda")
    err = capsys.readouterr().err
    assert code == 2 and "error: --device cuda: this machine has no CUDA device" in err
    code, _ = talk(tmp_path, speech, "--device", "cuda")  # without models too
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


def test_unknown_device_and_bad_batch_size(tmp_path, speech, bundles, capsys):
    assert talk(tmp_path, speech, "--tsg", bundles["tsg"], "--device", "tpu9")[0] == 2
    assert "is not a device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage_error:  # argparse refuses it before anything runs
        talk(tmp_path, speech, "--batch-size", "-2")
    assert usage_error.value.code == 2
    err = capsys.readouterr().err
    assert "argument --batch-size: must be 0 (automatic" in err and "got -2" in err


def test_fp16_on_cpu_works_and_is_logged(tmp_path, speech, bundles, caplog):
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        code, out = talk(tmp_path, speech, "--tsg", bundles["tsg"], "--precision", "fp16")
    assert code == 0 and probe_video(out).frame_count == 8
    assert "computes in float16 on the CPU" in caplog.text


def test_models_are_loaded_for_their_slot_and_placed(bundles):
    args = cli.build_parser().parse_args(
        ["talk", "--image", PORTRAIT, "--audio", "x.wav", "-o", "x.mp4", "--tsg", bundles["tsg"],
         "--precision", "bf16", "--device", "cpu"])
    models = cli._talk_models(args)
    assert models.tsg.component == pipeline.TSG and models.tsg.precision == "bf16"
    assert models.tsg.device == torch.device("cpu") and models.tsg.compute_dtype == torch.bfloat16
    assert models.parser is None and models.learned


def test_head_motion_moves_a_portrait_and_0_keeps_it_still(tmp_path):
    """``--head-motion`` (default 0.5): the portrait's head and shoulders sway, the far background
    stays; 0: every frame is the still portrait's (as before the option)."""
    import numpy as np

    from segtalker_core.video_io import read_video

    speech = str(V.speech_clip(tmp_path / "speech.wav", 1.2))  # 30 frames: a sway to see
    runs = {}
    for name, options in (("default", ()), ("still", ("--head-motion", "0"))):
        (tmp_path / name).mkdir()
        code, out = talk(tmp_path / name, speech, *options)
        assert code == 0
        runs[name] = read_video(out)[0].astype(np.int16)
    hair = (slice(20, 90), slice(110, 250))  # the top of the head: no mouth or blink there
    corner = (slice(0, 40), slice(350, 400))  # the background beside the shuttle

    def change(run, box):  # per frame, from the first (the portrait's pose in both runs)
        return np.abs(run[(slice(None), *box)] - run[0][box]).mean(axis=(1, 2, 3))

    still, moving = change(runs["still"], hair), change(runs["default"], hair)
    assert moving.max() > 2 * still.max() + 1.0, (moving.max(), still.max())
    corners = np.abs(runs["default"][(slice(None), *corner)] - runs["still"][(slice(None), *corner)])
    assert corners.mean() < 0.5
