"""Speech -> mouth articulation, on real synthetic speech (espeak-ng)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import pytest

from segtalker_core.audio import REST, ArticulationTrack, articulation_from_audio
from speech import speak_wave

FPS = [24, 25, 29.97, 30, 60]
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it rests by the river."
JAW, WIDTH, ROUND, CLOSURE, TEETH = range(5)


@pytest.fixture(scope="module")
def papa() -> np.ndarray:
    return speak_wave("papa mama baba")[0]


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    return speak_wave(SENTENCE)[0]


def frame_rms(wave: np.ndarray, fps: float, n: int) -> np.ndarray:
    """``[n]`` RMS of the audio under each video frame's span."""
    f = Fraction(str(fps))
    out = np.zeros(n)
    for i in range(n):
        a, b = math.ceil(i * 16000 / f), math.ceil((i + 1) * 16000 / f)
        seg = wave[a:b]
        out[i] = np.sqrt(np.mean(seg**2)) if len(seg) else 0.0
    return out


def rms_dips_and_peaks(wave: np.ndarray) -> tuple[list[float], list[float]]:
    """Times (s) where the 10 ms level dips far below the syllables on both sides (within 150 ms),
    and times of strong syllable peaks."""
    hop = 160
    n = len(wave) // hop
    rms = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1))
    dips, peaks = [], []
    for i in range(1, n - 1):
        left, right = rms[max(0, i - 15) : i].max(), rms[i + 1 : i + 16].max()
        if rms[i] <= rms[i - 1] and rms[i] <= rms[i + 1] and rms[i] < 0.3 * min(left, right):
            if not dips or i * hop / 16000 - dips[-1] > 0.05:
                dips.append(i * hop / 16000)
        if rms[i] >= rms[max(0, i - 5) : i + 6].max() and rms[i] > 0.5 * rms.max():
            peaks.append(i * hop / 16000)
    return dips, peaks


@pytest.mark.parametrize("fps", FPS)
@pytest.mark.parametrize("text", ["papa mama baba", SENTENCE])
def test_one_row_per_frame_ceil_of_duration_times_fps(text, fps):
    wave = speak_wave(text)[0]
    track = articulation_from_audio(wave, fps, method="acoustic")
    expected = math.ceil(Fraction(len(wave), 16000) * Fraction(str(fps)))
    assert len(track) == expected
    assert track.params.shape == (expected, 5) and track.params.dtype == np.float32
    assert track.speech.shape == (expected,)
    lo = np.array([0, -1, 0, 0, 0])
    assert (track.params >= lo).all() and (track.params <= 1).all()


@pytest.mark.parametrize("method", ["acoustic", "auto"])
@pytest.mark.parametrize("fps", [25, 29.97, 60])
def test_jaw_follows_the_loudness_envelope(sentence, method, fps):
    track = articulation_from_audio(sentence, fps, method=method)
    rms = frame_rms(sentence, fps, len(track))
    r = np.corrcoef(track.jaw_open, rms)[0, 1]
    assert r >= 0.6, r
    # and within the speech alone, not just speech vs. the silence around it
    speech = rms > 0.01 * rms.max()
    assert np.corrcoef(track.jaw_open[speech], rms[speech])[0, 1] >= 0.6


def test_language_independent_acoustic_path_follows_german_too():
    wave = speak_wave("Guten Morgen, wie geht es Ihnen heute? Mir geht es gut.", voice="de")[0]
    track = articulation_from_audio(wave, 25, method="acoustic")
    assert np.corrcoef(track.jaw_open, frame_rms(wave, 25, len(track)))[0, 1] >= 0.6


@pytest.mark.parametrize("method", ["acoustic", "auto"])
@pytest.mark.parametrize("fps", [24, 25, 30])
def test_lips_close_at_p_b_m_and_open_on_the_vowels(papa, method, fps):
    track = articulation_from_audio(papa, fps, method=method)
    dips, peaks = rms_dips_and_peaks(papa)
    # "papa mama baba": six syllables with a p, m, m, b, b between them
    assert len(dips) >= 5 and len(peaks) >= 4, (dips, peaks)
    for t in dips:
        i = int(t * fps)
        near = track.params[max(0, i - 1) : i + 2]
        k = int(np.argmax(near[:, CLOSURE]))
        assert near[k, CLOSURE] >= 0.7, (t, track.lip_closure[i - 2 : i + 3])
        assert near[k, JAW] <= 0.3, (t, track.jaw_open[i - 2 : i + 3])
    for t in peaks:
        i = int(t * fps)
        near = track.params[max(0, i - 1) : i + 2]
        # lips apart (< 0.5) with the jaw visibly open (a quarter of its range), within a frame
        is_open = (near[:, CLOSURE] < 0.5) & (near[:, JAW] >= 0.25)
        assert is_open.any(), (t, near)


def test_silence_around_speech_rests_with_closed_lips(papa):
    pad = np.zeros(8000, np.float32)
    wave = np.concatenate([pad, papa, pad])
    track = articulation_from_audio(wave, 25)
    quiet = np.r_[0:10, len(track) - 10 : len(track)]  # 0.4 s at each end, inside the padding
    np.testing.assert_allclose(track.params[quiet], np.tile(REST, (len(quiet), 1)), atol=0.05)
    assert REST[CLOSURE] >= 0.5 and REST[JAW] == 0.0


def test_silent_audio_gives_a_closed_still_mouth_without_warnings(caplog):
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="segtalker"):
        warnings.simplefilter("error")
        track = articulation_from_audio(np.zeros(16000 * 2, np.float32), 25)
    assert not caplog.records
    assert len(track) == 50
    np.testing.assert_array_equal(track.params, np.tile(REST, (50, 1)))
    assert (track.speech == 0).all()


def test_audio_shorter_than_one_frame_gives_one_frame(papa):
    track = articulation_from_audio(papa[:300], 25)
    assert len(track) == 1 and track.params.shape == (1, 5)


@pytest.mark.parametrize("method", ["acoustic", "auto"])
def test_stereo_48k_comfy_audio_gives_the_same_track_as_mono_16k(sentence, method):
    import soxr
    import torch

    up = soxr.resample(sentence, 16000, 48000, quality="HQ").astype(np.float32)
    audio = {"waveform": torch.from_numpy(np.stack([up, 0.5 * up]))[None], "sample_rate": 48000}
    a = articulation_from_audio(sentence, 25, method=method)
    b = articulation_from_audio(audio, 25, method=method)
    assert len(a) == len(b) and a.method == b.method
    diff = np.abs(a.params - b.params)
    if method == "acoustic":
        assert diff.max() < 0.02
    else:
        # the recogniser may flip a phone on resampled input; the track as a whole must agree
        assert diff.mean() < 0.02


class LazyAudio(Mapping):
    def __init__(self, **kw):
        self._d = kw

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


def test_non_dict_mapping_is_accepted(papa):
    lazy = LazyAudio(waveform=papa[None, None], sample_rate=16000)
    a = articulation_from_audio(lazy, 25, method="acoustic")
    b = articulation_from_audio(papa, 25, method="acoustic")
    np.testing.assert_array_equal(a.params, b.params)


def _chord(seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    notes = [[261.63, 329.63, 392.0], [220.0, 261.63, 329.63], [174.61, 220.0, 261.63], [196.0, 246.94, 293.66]]
    out = np.zeros_like(t)
    for i, chord in enumerate(notes):  # a new chord every 0.75 s, plucked (decaying)
        s = int(i * 0.75 * sr)
        tt = t[: len(t) - s]
        out[s:] += np.exp(-3 * tt) * sum(np.sin(2 * np.pi * f * k * tt) / k for f in chord for k in range(1, 6))
    return (0.08 * out).astype(np.float32)


@pytest.mark.parametrize("kind", ["white noise", "chords"])
@pytest.mark.parametrize("method", ["acoustic", "auto"])
def test_noise_and_music_do_not_work_the_jaw(sentence, kind, method):
    wave = (
        (0.1 * np.random.default_rng(0).standard_normal(16000 * 3)).astype(np.float32)
        if kind == "white noise"
        else _chord(3.0)
    )
    track = articulation_from_audio(wave, 25, method=method)
    speech_track = articulation_from_audio(sentence, 25, method=method)
    assert track.jaw_open.max() < 0.15
    assert track.jaw_open.std() < 0.25 * speech_track.jaw_open.std()
    assert track.speech.max() < 0.3 < speech_track.speech.mean()


def test_missing_model_warns_and_falls_back_to_acoustic(sentence, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="segtalker"):
        track = articulation_from_audio(sentence, 25, method="auto", model_dir=str(tmp_path / "nope"))
    assert "phoneme recognition unavailable" in caplog.text
    assert "using the acoustic articulation, which works for any language" in caplog.text
    assert track.method == "acoustic"
    ref = articulation_from_audio(sentence, 25, method="acoustic")
    np.testing.assert_array_equal(track.params, ref.params)


def test_methods_report_what_they_used(sentence):
    assert articulation_from_audio(sentence, 25, method="acoustic").method == "acoustic"
    auto = articulation_from_audio(sentence, 25, method="auto")
    assert auto.method == "phonemes+acoustic" and auto.phones
    ph = articulation_from_audio(sentence, 25, method="phonemes")
    assert ph.method == "phonemes"
    # the phoneme path still opens on loud syllables and rests in silence
    rms = frame_rms(sentence, 25, len(ph))
    assert np.corrcoef(ph.jaw_open, rms)[0, 1] >= 0.5


def test_strength_scales_motion_around_rest(sentence):
    base = articulation_from_audio(sentence, 25, method="acoustic")
    still = articulation_from_audio(sentence, 25, method="acoustic", strength=0.0)
    np.testing.assert_allclose(still.params, np.tile(REST, (len(still), 1)), atol=1e-6)
    big = articulation_from_audio(sentence, 25, method="acoustic", strength=2.0)
    assert big.jaw_open.std() > 1.3 * base.jaw_open.std()
    half = articulation_from_audio(sentence, 25, method="acoustic", strength=0.5)
    np.testing.assert_allclose(half.jaw_open, 0.5 * base.jaw_open, atol=1e-5)


def test_n_frames_pads_with_rest_or_cuts(papa):
    full = articulation_from_audio(papa, 25, method="acoustic")
    longer = articulation_from_audio(papa, 25, n_frames=len(full) + 20, method="acoustic")
    np.testing.assert_array_equal(longer.params[: len(full)], full.params)
    np.testing.assert_array_equal(longer.params[len(full) + 1 :], np.tile(REST, (19, 1)))
    shorter = articulation_from_audio(papa, 25, n_frames=10, method="acoustic")
    np.testing.assert_array_equal(shorter.params, full.params[:10])


def test_bad_arguments_are_named(papa):
    with pytest.raises(ValueError, match="method"):
        articulation_from_audio(papa, 25, method="visemes")
    with pytest.raises(ValueError, match="strength"):
        articulation_from_audio(papa, 25, strength=3)
    with pytest.raises(ValueError, match="fps"):
        articulation_from_audio(papa, 0)


def test_track_columns_by_name(papa):
    track = articulation_from_audio(papa, 25, method="acoustic")
    assert ArticulationTrack.COLUMNS == ("jaw_open", "lip_width", "lip_round", "lip_closure", "teeth_visible")
    np.testing.assert_array_equal(track.column("lip_closure"), track.params[:, CLOSURE])
    np.testing.assert_array_equal(track.teeth_visible, track.params[:, TEETH])
    with pytest.raises(KeyError, match="tongue"):
        track.column("tongue")
