"""Wav2Lip mel spectrogram, frame counts and per-frame mel windows."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from segtalker_core.audio import (
    as_fraction,
    frame_count,
    iter_mel_windows,
    load_audio,
    mel_windows,
    melspectrogram,
)
from speech import speak_wave

FPS = [24, 25, 29.97, 30, 60]


def reference_mel(wave: np.ndarray) -> np.ndarray:
    """The Wav2Lip formula written out in plain numpy (only the filter bank comes from librosa)."""
    import librosa

    emph = np.append(wave[0], wave[1:] - 0.97 * wave[:-1]).astype(np.float64)
    padded = np.pad(emph, 400, mode="reflect")
    n_steps = 1 + len(wave) // 200
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(800) / 800)  # periodic Hann, as STFTs use
    frames = np.stack([padded[200 * j : 200 * j + 800] for j in range(n_steps)])
    mag = np.abs(np.fft.rfft(frames * hann, axis=1)).T  # [401, M]
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = 20 * np.log10(np.maximum(1e-5, basis @ mag)) - 20
    return np.clip(8 * (s + 100) / 100 - 4, -4, 4)


@pytest.fixture(scope="module")
def sentence() -> np.ndarray:
    return speak_wave("The quick brown fox jumps over the lazy dog.")[0]


def test_mel_matches_the_formula_computed_independently(sentence):
    mel = melspectrogram(sentence)
    ref = reference_mel(sentence)
    assert mel.shape == ref.shape == (80, 1 + len(sentence) // 200)
    assert mel.dtype == np.float32
    np.testing.assert_allclose(mel, ref, atol=2e-4)
    # speech spans the range; silence sits at the floor
    assert mel.max() > 1.0 and mel.min() == -4.0


def test_mel_matches_librosa_stft_with_reflect_padding(sentence):
    import librosa
    import scipy.signal

    emph = scipy.signal.lfilter([1, -0.97], [1], sentence)
    stft = librosa.stft(y=emph, n_fft=800, hop_length=200, win_length=800, center=True, pad_mode="reflect")
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    s = 20 * np.log10(np.maximum(1e-5, basis @ np.abs(stft))) - 20
    np.testing.assert_allclose(melspectrogram(sentence), np.clip(8 * (s + 100) / 100 - 4, -4, 4), atol=2e-4)


@pytest.mark.parametrize("n", [1, 7, 399, 401, 1234])
def test_mel_of_very_short_audio_still_matches(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    np.testing.assert_allclose(melspectrogram(x), reference_mel(x), atol=2e-4)


def test_frame_count_uses_exact_arithmetic():
    # float products overshoot: 2.2 s * 25 = 55.00000000000001
    assert math.ceil(11 / 5 * 25) == 56
    assert frame_count(Fraction(11, 5), 25) == 55
    assert frame_count(11 / 5, 25) == 55
    for k in (1, 7, 1000, 12345):
        assert frame_count(Fraction(100, 2997) * k, 29.97) == k
        assert frame_count(Fraction(100, 2997) * k + Fraction(1, 16000), 29.97) == k + 1
        assert frame_count(Fraction(1001, 30000) * k, 30000 / 1001) == k
        assert frame_count(Fraction(k, 24), 24) == k
    assert as_fraction(29.97) == Fraction(2997, 100)
    assert as_fraction(30000 / 1001) == Fraction(30000, 1001)
    assert frame_count(Fraction(1, 16000), 25) == 1  # shorter than a frame: still one
    for bad in (0, -25, float("nan"), "fast"):
        with pytest.raises(ValueError, match="fps"):
            as_fraction(bad)


@pytest.mark.parametrize("fps", FPS)
def test_one_window_per_frame_with_wav2lip_start_and_padding(sentence, fps):
    mel = melspectrogram(sentence)
    windows = mel_windows(sentence, fps)
    n = math.ceil(Fraction(len(sentence), 16000) * Fraction(str(fps)))
    assert windows.shape == (n, 80, 16) and windows.dtype == np.float32
    for i in range(n):
        s = int(80 * i / fps + 1e-9)
        have = mel[:, s : s + 16]
        np.testing.assert_allclose(windows[i, :, : have.shape[1]], have, atol=1e-5)
        assert (windows[i, :, have.shape[1] :] == -4.0).all()  # silence past the end
    edge = mel_windows(sentence, fps, pad="edge")
    tail = edge[-1]
    s = int(80 * (n - 1) / fps + 1e-9)
    np.testing.assert_allclose(tail[:, mel.shape[1] - s :], np.broadcast_to(mel[:, -1:], (80, 16 - (mel.shape[1] - s))), atol=1e-5)


def test_centred_windows_are_centred_on_the_frame(sentence):
    mel = melspectrogram(sentence)
    w = mel_windows(sentence, 25, align="centre")
    # frame 10 of 25 fps spans 0.40..0.44 s = mel steps 32..35.2, middle 33.6 -> window 25..40
    np.testing.assert_allclose(w[10], mel[:, 25:41], atol=1e-5)
    # the first frames reach before the audio: padded, still full size
    assert w.shape[1:] == (80, 16) and (w[0][:, :4] == -4.0).all()


def test_chunked_iterator_equals_the_whole(sentence):
    full = mel_windows(sentence, 29.97)
    chunks = list(iter_mel_windows(sentence, 29.97, chunk_frames=13))
    assert [c.start for c in chunks] == list(range(0, len(full), 13))
    np.testing.assert_allclose(np.concatenate([c.windows for c in chunks]), full, atol=1e-5)
    part = mel_windows(sentence, 29.97, start=40, stop=77)
    np.testing.assert_allclose(part, full[40:77], atol=1e-5)


def test_audio_shorter_than_a_frame_gives_one_window():
    w = mel_windows(np.full(300, 0.1, np.float32), 25)
    assert w.shape == (1, 80, 16)


def test_mel_of_48k_stereo_equals_mel_of_16k_mono(sentence):
    import soxr

    up = soxr.resample(sentence, 16000, 48000, quality="HQ").astype(np.float32)
    audio = {"waveform": np.stack([up, up])[None], "sample_rate": 48000}
    a = mel_windows(sentence, 25)
    b = mel_windows(load_audio(audio), 25)
    assert a.shape == b.shape
    # resampling only touches the top of the band; mean error is tiny on a -4..4 scale
    assert np.abs(a - b).mean() < 0.02


def test_integer_pcm_is_scaled_like_float(sentence):
    pcm = np.round(sentence * 32767).astype(np.int16)
    np.testing.assert_allclose(mel_windows(pcm, 25), mel_windows(pcm / 32768.0, 25), atol=1e-5)
