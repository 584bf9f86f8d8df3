"""The evaluation's metrics on constructed inputs with known answers (no face detection here;
tests/test_eval_videos.py runs them on real clips)."""
from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from segtalker_core.eval import lipsync, temporal
from segtalker_core.eval.alignment import pair_frames
from segtalker_core.eval.image_metrics import luma, psnr, ssim
from segtalker_core.eval.report import _json_ready
from segtalker_core.eval.sharpness import cpbd, edge_widths, high_frequency_energy
from video_clips import REPO_DIR


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return np.asarray(Image.open(REPO_DIR / "examples" / "portrait.png").convert("RGB"))


def test_identical_images_give_psnr_inf_and_ssim_1(portrait):
    assert psnr(portrait, portrait.copy()) == math.inf
    assert ssim(portrait, portrait.copy()) == pytest.approx(1.0, abs=1e-9)


def test_ssim_is_wangs_gaussian_ssim(portrait):
    blurred = cv2.GaussianBlur(portrait, (0, 0), 1.2)
    expected = structural_similarity(luma(portrait), luma(blurred), gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
    assert ssim(portrait, blurred) == pytest.approx(expected, abs=1e-5)


def test_psnr_of_a_known_error():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = a + np.uint8(5)  # MSE 25
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / 25))
    mask = np.zeros((32, 32), bool)
    assert math.isnan(psnr(a, b, mask))


def test_blur_lowers_cpbd_ssim_and_high_frequency_energy(portrait):
    sharp = cpbd(portrait)
    previous_cpbd, previous_ssim, previous_hf = sharp, 1.0, high_frequency_energy(portrait)
    for sigma in (1.0, 2.0):
        blurred = cv2.GaussianBlur(portrait, (0, 0), sigma)
        values = cpbd(blurred), ssim(portrait, blurred), high_frequency_energy(blurred)
        assert values[0] < previous_cpbd and values[1] < previous_ssim and values[2] < previous_hf
        previous_cpbd, previous_ssim, previous_hf = values
    assert 0.0 < sharp <= 1.0


def test_edge_width_of_a_ramp_is_its_length():
    row = np.concatenate([np.zeros(20), np.linspace(0, 200, 7)[1:], np.full(20, 200.0)])
    image = np.tile(row, (40, 1))
    edges = np.zeros(image.shape, bool)
    edges[:, 22] = True  # inside the rise
    widths = edge_widths(image, edges)
    assert set(np.unique(widths[edges])) == {6.0}
    step = np.tile(np.r_[np.zeros(20), np.full(20, 200.0)], (40, 1))
    edges = np.zeros(step.shape, bool)
    edges[:, 20] = True
    assert set(np.unique(edge_widths(step, edges)[edges])) == {1.0}


def test_flat_image_has_no_cpbd():
    assert math.isnan(cpbd(np.full((128, 128, 3), 90, np.uint8)))


def test_frames_pair_by_time_across_frame_rates_and_lengths():
    pairs = pair_frames(50, Fraction(25), 100, Fraction(50))
    assert list(pairs.reference[:4]) == [0, 2, 4, 6] and len(pairs) == 50
    assert any("frame rates differ" in n for n in pairs.notes)
    shorter = pair_frames(50, Fraction(25), 30, Fraction(25))
    assert len(shorter) == 30 and list(shorter.generated) == list(range(30))
    assert any("lengths differ" in n for n in shorter.notes)
    still = pair_frames(10, Fraction(25), 1, None)
    assert len(still) == 10 and set(still.reference) == {0}
    odd = pair_frames(30, Fraction(30000, 1001), 25, Fraction(25))
    assert odd.reference[-1] == 24 and len(odd) == len(set(zip(odd.generated, odd.reference)))


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    syllables = np.repeat(rng.uniform(0, 1, n // 5 + 1), 5)[:n]
    return np.convolve(syllables, np.ones(3) / 3, mode="same")


@pytest.mark.parametrize("shift", [-4, 0, 3, 7])
def test_mouth_shifted_by_k_frames_gives_offset_k(shift):
    envelope = _speechlike(150)
    mouth = np.roll(envelope, shift) * 0.2 + 0.01  # moves `shift` frames after the sound
    result = lipsync.sync_offset(mouth, envelope, max_offset=10)
    assert result.best_offset == shift
    assert result.best_correlation > 0.9
    if shift != 0:
        assert result.correlation_at_zero < result.best_correlation - 0.2


def test_correlation_drops_with_the_shift():
    envelope = _speechlike(200, seed=1)
    result = lipsync.sync_offset(envelope.copy(), envelope, max_offset=6)
    at = dict(zip(result.offsets.tolist(), result.correlations.tolist()))
    assert at[0] == pytest.approx(1.0) and at[0] > at[2] > at[5]


def test_a_still_mouth_has_no_sync():
    envelope = _speechlike(100)
    result = lipsync.sync_offset(np.full(100, 0.05), envelope)
    assert result.correlation_at_zero == 0.0 and "does not move" in result.note


def test_frames_without_a_face_are_left_out_of_the_correlation():
    envelope = _speechlike(120)
    mouth = envelope.copy()
    mouth[10:30] = np.nan
    result = lipsync.sync_offset(mouth, envelope)
    assert result.frames_used == 100 and result.best_offset == 0


def test_speech_envelope_follows_the_loud_frames():
    rate, fps = 16000, 25
    t = np.arange(rate * 2) / rate
    wave = np.where((t > 0.5) & (t < 1.0), 0.5 * np.sin(2 * np.pi * 440 * t), 0.0).astype(np.float32)
    envelope = lipsync.speech_envelope(wave, fps, 50)
    loud, quiet = envelope[14:24], np.r_[envelope[:11], envelope[27:]]
    assert envelope.shape == (50,) and loud.min() > quiet.max() + 20


def test_flicker_frames_are_listed_and_motion_is_not():
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (1, 48, 48, 3)).astype(np.uint8)
    frames = np.repeat(base, 30, axis=0)
    frames[10] = np.clip(frames[10].astype(int) + 25, 0, 255)
    frames[20] = np.clip(frames[20].astype(int) - 25, 0, 255)
    frames[25:] = np.roll(frames[25:], 6, axis=2)  # a cut at frame 25: one neighbour differs
    changes = temporal.frame_changes(frames, [None] * 30)
    spikes = temporal.flicker_frames(temporal.flicker_scores(changes))
    assert [s.frame for s in spikes] == [10, 20]
    # The same flicker in the reference is the source's own: not listed.
    assert temporal.flicker_frames(temporal.flicker_scores(changes), temporal.flicker_scores(changes)) == []


def test_bilabial_closure_counts_closed_mouths():
    fps = 25
    mouth = np.full(50, 0.15)
    mouth[10:13] = 0.01  # closed for the first "m"
    phones = [lipsync.Phone("M", 0.40, 0.48), lipsync.Phone("AA", 0.5, 0.7), lipsync.Phone("B", 1.2, 1.28)]
    result = lipsync.bilabial_closure(mouth, fps, phones)
    assert (result.bilabials, result.closed) == (2, 1) and result.missed_at == (1.2,)
    # Locally: the shut "m" against the open frames around it, the "b" with no closing motion.
    assert result.local_ratios == pytest.approx((0.01 / 0.15, 1.0))


def test_phone_files_are_read_and_bad_lines_named(tmp_path):
    good = tmp_path / "phones.txt"
    good.write_text("# start end phone\n0.10 0.18 P\n0.18\t0.30\tAA\n")
    assert [p.phone for p in lipsync.read_phones(good)] == ["P", "AA"]
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1 0.2 P\n0.5 oops M\n")
    with pytest.raises(ValueError, match="line 2"):
        lipsync.read_phones(bad)


def test_json_has_no_bare_infinity_or_nan():
    assert _json_ready({"a": math.inf, "b": [math.nan, np.float32(2.5)], "c": np.int64(3)}) == \
        {"a": "inf", "b": [None, 2.5], "c": 3}


def test_a_transcript_is_force_aligned_with_words_missing_from_the_dictionary():
    from segtalker_core.eval.transcript import align_transcript
    from speech import speak_wave

    wave, rate = speak_wave("Zorbam mops.")  # "zorbam": not in the CMU dictionary, spelt by espeak-ng
    wave = np.concatenate([np.zeros(rate // 2, np.float32), wave])  # 0.5 s of silence first
    phones = align_transcript(wave, "Zorbam mops!")
    assert [p.phone for p in phones if p.phone in lipsync.BILABIALS] == ["B", "M", "M", "P"]
    spoken = [p for p in phones if p.phone != "SIL"]
    assert all(a.end <= b.start + 1e-9 for a, b in zip(spoken, spoken[1:]))
    # Placed on the sound: nothing is spoken in the leading silence, nothing past the end.
    assert 0.45 <= spoken[0].start < 0.6 and spoken[-1].end <= len(wave) / rate + 0.02


def test_transcript_text_or_file_and_a_missing_file_named(tmp_path):
    from segtalker_core.eval.transcript import read_transcript, transcript_words

    path = tmp_path / "clip.txt"
    path.write_text("Don't stop, Bob!\n")
    assert transcript_words(read_transcript(str(path))) == ["don't", "stop", "bob"]
    assert read_transcript("bring me the box") == "bring me the box"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_transcript(str(tmp_path / "missing.txt"))
