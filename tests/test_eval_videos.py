"""The evaluation on real clips: the pack's own dub of the example portrait (``talk --eval``),
and copies of it made identical, shifted, blurred, flickering, faceless, silent, or at another
frame rate and length, each with the answer it must give."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from segtalker_core import cli
from segtalker_core.eval.evaluate import EvalOptions, evaluate_clip
from segtalker_core.video_io import read_video
from speech import speak
from video_clips import REPO_DIR, write_clip

PORTRAIT = REPO_DIR / "examples" / "portrait.png"
FAST = EvalOptions(cpbd_frames=4)
SHIFT = 3
SENTENCE = "Please bring me the blue box from the kitchen."


@dataclass(frozen=True)
class Dub:
    folder: Path
    video: Path
    speech: Path
    frames: np.ndarray
    report: dict


@pytest.fixture(scope="module")
def dub(tmp_path_factory) -> Dub:
    folder = tmp_path_factory.mktemp("eval")
    speech = speak(SENTENCE, folder / "box.wav")
    video = folder / "box.mp4"
    # A still head (--head-motion 0): the report compares the dub with the still portrait outside
    # the mouth (static PSNR, the per-region differences).
    code = cli.main(["talk", "--image", str(PORTRAIT), "--audio", str(speech), "-o", str(video),
                     "--size", "256", "--max-size", "256", "--head-motion", "0", "-q", "--eval"])
    assert code == 0
    report = json.loads((folder / "box_eval" / "report.json").read_text())
    frames, _ = read_video(video)
    return Dub(folder, video, speech, frames, report)


def test_talk_eval_reports_sync_and_texture_of_the_packs_own_dub(dub):
    clip = dub.report["clips"][0]
    metrics = clip["metrics"]
    assert metrics["frames"]["compared"] == len(dub.frames) and metrics["frames"]["without_face"] == 0
    assert any("the reference was resized" in note for note in clip["notes"])  # 400 px portrait, 256 px dub
    assert metrics["lip_sync"]["envelope_correlation"] >= 0.6
    assert abs(metrics["lip_sync"]["best_offset_frames"]) <= 1
    assert metrics["texture"]["static_psnr_db"] >= 35.0
    # The mouth is what changed: the lips differ most from the portrait, the background least.
    regions = metrics["regions"]
    assert regions["lips"] > regions["lower face"] > regions["background"]
    for kind in ("sync", "sheet", "heat"):
        assert (dub.folder / "box_eval" / clip["figures"][kind]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (dub.folder / "box_eval" / "report.md").read_text()
    assert "mouth opening vs speech envelope" in markdown and "LSE-C / LSE-D" in markdown


def test_identical_videos_through_the_cli_folders(dub, tmp_path):
    generated, reference = tmp_path / "gen", tmp_path / "ref"
    generated.mkdir()
    reference.mkdir()
    clip = write_clip(tmp_path / "box.mp4", dub.frames[:25], audio=dub.speech).read_bytes()
    (generated / "box.mp4").write_bytes(clip)
    (reference / "box.mp4").write_bytes(clip)
    (generated / "orphan.mp4").write_bytes(clip)  # no reference: listed
    out = tmp_path / "report"
    assert cli.main(["eval", "--generated", str(generated), "--reference", str(reference), "-o", str(out)]) == 0
    document = json.loads((out / "report.json").read_text())
    (clip,) = document["clips"]
    image, texture = clip["metrics"]["image"], clip["metrics"]["texture"]
    assert image["psnr_db"] == "inf" and image["face_psnr_db"] == "inf"
    assert image["ssim"] == pytest.approx(1.0) and image["lmd_mouth_px"] == 0.0
    assert texture["lower_face_high_frequency_ratio"] == pytest.approx(1.0)
    assert clip["metrics"]["temporal"]["flicker_frames"] == []
    assert clip["metrics"]["lip_sync"]["mouth_motion_vs_reference"] == pytest.approx(1.0)
    assert any("orphan" in item for item in document["unpaired"])
    assert "lpips" in document["weights_missing"]  # named, with the files it needs


def test_video_shifted_by_k_frames_gives_offset_k(dub, tmp_path):
    late = np.concatenate([np.repeat(dub.frames[:1], SHIFT, axis=0), dub.frames[:-SHIFT]])
    path = write_clip(tmp_path / "late.mp4", late)
    report = evaluate_clip(path, PORTRAIT, dub.speech, FAST)
    sync = report.metrics["lip_sync"]
    assert sync["best_offset_frames"] == SHIFT
    assert sync["envelope_correlation"] < sync["best_offset_correlation"] - 0.1


@pytest.fixture(scope="module")
def mismatched(dub, tmp_path_factory):
    """40 silent frames at 25 fps, 5 of them without a face, against the dub at 50 fps."""
    folder = tmp_path_factory.mktemp("mismatched")
    generated = dub.frames[:40].copy()
    generated[5:10] = 128
    gen_path = write_clip(folder / "gen.mp4", generated)
    ref_path = write_clip(folder / "ref50.mp4", np.repeat(dub.frames, 2, axis=0), fps=50)
    out = folder / "report"
    assert cli.main(["eval", "--generated", str(gen_path), "--reference", str(ref_path), "-o", str(out)]) == 0
    return json.loads((out / "report.json").read_text())["clips"][0], (out / "report.md").read_text()


def test_different_fps_and_length_are_compared_by_time(mismatched):
    clip, markdown = mismatched
    frames = clip["metrics"]["frames"]
    assert (frames["compared"], frames["generated_fps"], frames["reference_fps"]) == (40, 25.0, 50.0)
    assert any("frame rates differ" in n for n in clip["notes"])
    assert any("lengths differ" in n for n in clip["notes"])
    # Frame i is matched with reference frame 2i: the same picture, re-encoded.
    assert clip["metrics"]["image"]["face_psnr_db"] > 35.0
    assert "| frames compared | 40 |" in markdown


def test_frames_without_a_face_are_excluded_and_counted(mismatched):
    clip, _ = mismatched
    assert clip["metrics"]["frames"]["without_face"] == 5
    assert clip["metrics"]["frames"]["with_face"] == 35
    assert any("5 of 40 compared frames have no face" in n for n in clip["notes"])


def test_silent_video_without_audio_skips_sync_and_says_so(mismatched):
    clip, markdown = mismatched
    sync = clip["metrics"]["lip_sync"]
    assert sync["skipped"] == "no audio"
    assert "envelope_correlation" not in sync and "best_offset_frames" not in sync
    assert "lip sync skipped: the generated video has no sound track and no --audio was given" in markdown


def test_blurred_flickering_copy(dub, tmp_path):
    original = dub.frames[:25]
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in original])
    for frame in (8, 16):
        blurred[frame] = np.clip(blurred[frame].astype(int) + 30, 0, 255).astype(np.uint8)
    ref_path = write_clip(tmp_path / "ref.mp4", original)
    gen_path = write_clip(tmp_path / "gen.mp4", blurred)
    report = evaluate_clip(gen_path, ref_path, dub.speech, FAST)
    image, texture = report.metrics["image"], report.metrics["texture"]
    assert image["cpbd"] < 0.5 * image["cpbd_reference"]
    assert image["ssim"] < 0.95 and texture["lower_face_high_frequency_ratio"] < 0.5
    assert [f["frame"] for f in report.metrics["temporal"]["flicker_frames"]] == [8, 16]


def test_still_video_has_no_sync(dub, tmp_path):
    still = np.repeat(dub.frames[:1], 25, axis=0)
    path = write_clip(tmp_path / "still.mp4", still, audio=dub.speech)
    report = evaluate_clip(path, PORTRAIT, None, FAST)
    assert abs(report.metrics["lip_sync"]["envelope_correlation"]) < 0.2
    assert report.metrics["lip_sync"]["audio"] == str(path)  # its own sound track


def test_an_image_as_generated_is_refused(tmp_path, capsys):
    code = cli.main(["eval", "--generated", str(PORTRAIT), "--reference", str(PORTRAIT), "-o", str(tmp_path / "r")])
    assert code == 2
    assert "is an image; give the generated video" in capsys.readouterr().err


def test_user_weights_add_seg_syncnet_and_lse_rows(dub, tmp_path):
    import torch

    from segtalker_core.models.random_bundle import write_random_bundles
    from test_eval_weights import LAYOUT, random_state

    bundles = write_random_bundles(tmp_path / "bundles")
    syncnet_v2 = tmp_path / "syncnet_v2.model"
    torch.save(random_state(LAYOUT), syncnet_v2)
    clip = write_clip(tmp_path / "short.mp4", dub.frames[:8], audio=dub.speech)
    options = EvalOptions(cpbd_frames=2, max_offset=2,
                          weights={"syncnet": str(bundles["syncnet"]), "syncnet_v2": str(syncnet_v2)})
    sync = evaluate_clip(clip, PORTRAIT, None, options).metrics["lip_sync"]
    assert sync["segsyncnet_windows"] == 8 - 5 + 1 and abs(sync["segsyncnet_offset_frames"]) <= 2
    assert 0.0 < sync["segsyncnet_probability"] < 1.0 and sync["segsyncnet_confidence"] >= 0.0
    assert sync["lse_windows"] == 8 - 5 and sync["lse_d"] > 0 and sync["lse_c"] >= 0


def test_talk_eval_refuses_an_unwritable_report_folder_before_the_dub(tmp_path, capsys):
    (tmp_path / "clip_eval").write_text("a file where the report folder would go")
    code = cli.main(["talk", "--image", str(PORTRAIT), "--audio", str(REPO_DIR / "examples" / "speech.wav"),
                     "-o", str(tmp_path / "clip.mp4"), "-q", "--eval"])
    assert code == 2 and "is a file" in capsys.readouterr().err
    assert not (tmp_path / "clip.mp4").exists()


def test_lpips_is_0_for_identical_videos_and_positive_for_a_blurred_copy(dub, tmp_path):
    from test_eval_weights import ALEXNET_CONVS, random_backbone, random_lpips_lins
    import torch

    lins, backbone = tmp_path / "alex.pth", tmp_path / "alexnet-owt-7be5be79.pth"
    torch.save(random_lpips_lins("alex"), lins)
    torch.save(random_backbone(ALEXNET_CONVS), backbone)
    original = dub.frames[10:13]
    ref_path = write_clip(tmp_path / "ref.mp4", original)
    blurred = write_clip(tmp_path / "blurred.mp4", np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in original]))
    options = EvalOptions(cpbd_frames=1, weights={"lpips": str(lins), "lpips_backbone": str(backbone)})
    same = evaluate_clip(ref_path, ref_path, None, options)
    image = same.metrics["image"]
    assert (image["lpips"], image["lpips_face"], image["lpips_net"], image["lpips_frames"]) == (0.0, 0.0, "alex", 3)
    image = evaluate_clip(blurred, ref_path, None, options).metrics["image"]
    assert image["lpips"] > 0.0 and image["lpips_face"] > 0.0


@pytest.fixture(scope="module")
def first_words(dub, tmp_path_factory):
    """The dub's first 30 frames ("Please bring me the blue"), evaluated with the transcript."""
    path = write_clip(tmp_path_factory.mktemp("words") / "first.mp4", dub.frames[:30])
    return evaluate_clip(path, PORTRAIT, dub.speech, EvalOptions(cpbd_frames=1, transcript=SENTENCE))


def test_the_packs_own_dub_closes_the_lips_on_the_transcripts_bilabials(first_words):
    sync = first_words.metrics["lip_sync"]
    assert sync["bilabial_timing"] == "transcript, force-aligned"
    # p(lease), b(ring), m(e), b(lue): the aligner may place the 4th just past frame 30.
    assert sync["bilabials"] >= 3
    assert sync["bilabials_closed_share"] >= 0.75 and sync["bilabial_local_opening"] < 0.3


def test_a_mouth_that_never_closes_misses_the_bilabials(dub, first_words, tmp_path):
    mouth = first_words.mouth
    opened = np.flatnonzero(mouth >= 0.6 * np.nanmax(mouth))
    assert len(opened) >= 3
    # The open frames cycled: the mouth moves, but never shuts.
    path = write_clip(tmp_path / "open.mp4", dub.frames[opened[np.arange(30) % len(opened)]])
    sync = evaluate_clip(path, PORTRAIT, dub.speech, EvalOptions(cpbd_frames=1, transcript=SENTENCE)).metrics["lip_sync"]
    assert sync["bilabials"] >= 3 and sync["bilabials_closed_share"] <= 0.25
    assert sync["bilabial_local_opening"] > 0.6


def test_a_transcript_that_cannot_be_aligned_is_noted(dub, tmp_path):
    still = write_clip(tmp_path / "still.mp4", np.repeat(dub.frames[:1], 5, axis=0))
    silence = tmp_path / "silence.wav"
    import soundfile as sf

    sf.write(str(silence), np.zeros(8000, np.float32), 16000)
    report = evaluate_clip(still, PORTRAIT, silence, EvalOptions(cpbd_frames=1, transcript=SENTENCE))
    assert "bilabials" not in report.metrics["lip_sync"]
    assert any("bilabial closure not checked: the transcript (9 words) could not be aligned" in n
               for n in report.notes)


def test_talk_eval_says_when_the_head_moved(dub, tmp_path):
    """A default talk moves the portrait's head; its report says what that does to the rows that
    compare with the still portrait."""
    from segtalker_core.eval.cli_eval import evaluate_talk_output

    video = tmp_path / "moved.mp4"
    video.write_bytes(dub.video.read_bytes())
    path = evaluate_talk_output(str(video), str(PORTRAIT), str(dub.speech), head_motion=0.5)
    text = Path(path).read_text()
    assert "the head moves (idle head motion 0.5)" in text
    assert "--head-motion 0" in text
