"""Audio input: ComfyUI AUDIO mappings, files, arrays -> 16 kHz mono; files -> ComfyUI AUDIO dicts."""
from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch

from segtalker_core.audio import audio_dict_from_file, load_audio, read_audio_file
from segtalker_core.audio.io import as_channels
from speech import speak_wave

SENTENCE = "Please bring me the blue box from the kitchen."


class LazyAudio(Mapping):
    """Like VideoHelperSuite's lazy AUDIO: a Mapping (not a dict) that decodes on first access."""

    def __init__(self, waveform, sample_rate):
        self._data = {"waveform": waveform, "sample_rate": sample_rate}
        self.loaded = False

    def __getitem__(self, key):
        self.loaded = True
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


def _upsample_stereo(wave16k: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    up = soxr.resample(wave16k, 16000, rate, quality="HQ").astype(np.float32)
    return np.stack([up, 0.5 * up])  # [2, T]: unequal channels, so the downmix is checked


def test_comfy_audio_stereo_48k_becomes_16k_mono_of_the_same_signal():
    wave, _ = speak_wave(SENTENCE)
    stereo = _upsample_stereo(wave, 48000)
    audio = {"waveform": torch.from_numpy(stereo)[None], "sample_rate": 48000}
    mono = load_audio(audio)
    assert mono.sample_rate == 16000 and mono.samples.dtype == np.float32
    assert mono.duration == Fraction(stereo.shape[1], 48000)
    assert len(mono) == -(-stereo.shape[1] // 3)
    n = min(len(mono), len(wave))
    # Downmix of (x, x/2) is 0.75 x; resampling there and back is near-transparent.
    err = mono.samples[:n] - 0.75 * wave[:n]
    assert np.sqrt(np.mean(err**2)) < 0.01 * np.sqrt(np.mean(wave**2)) + 1e-4


def test_lazy_mapping_and_batch_of_two_takes_the_first_clip_with_a_warning(caplog):
    wave, _ = speak_wave("one two three")
    other = np.zeros_like(wave)
    batch = torch.from_numpy(np.stack([wave, other])[:, None])  # [2, 1, T]
    lazy = LazyAudio(batch, 16000)
    with caplog.at_level("WARNING", logger="segtalker"):
        mono = load_audio(lazy)
    assert "AUDIO input holds a batch of 2 clips; using the first one." in caplog.text
    assert lazy.loaded
    np.testing.assert_array_equal(mono.samples, wave)


def test_numpy_waveform_in_mapping_and_integer_pcm():
    wave, _ = speak_wave("one two three")
    pcm = (wave * 32767).astype(np.int16)
    mono = load_audio({"waveform": pcm[None, None], "sample_rate": 16000})
    np.testing.assert_allclose(mono.samples, wave, atol=1e-4)


def test_array_needs_a_sample_rate_and_mapping_needs_its_keys():
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="'waveform'"):
        load_audio({"samples": np.zeros((1, 1, 10)), "sample_rate": 16000})
    with pytest.raises(ValueError, match="sample_rate"):
        load_audio({"waveform": np.zeros((1, 1, 10)), "sample_rate": -5})
    with pytest.raises(ValueError, match="no samples"):
        load_audio(np.zeros((1, 0), np.float32), sample_rate=16000)


def test_nan_samples_are_zeroed_with_one_warning_naming_the_input(caplog):
    x = np.ones(1600, np.float32) * 0.1
    x[10] = np.nan
    x[20] = np.inf
    with caplog.at_level("WARNING", logger="segtalker"):
        mono = load_audio(x, sample_rate=16000)
    assert np.isfinite(mono.samples).all() and mono.samples[10] == 0.0 and mono.samples[20] == 0.0
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("segtalker")]
    assert messages == ["audio array: 2 of 1600 samples (0.1%) are NaN/inf; they were set to 0 "
                        "(silence)."]


def test_channels_last_arrays_are_transposed_and_the_channel_axis_is_at_most_8():
    stereo = np.stack([np.linspace(-0.5, 0.5, 400), np.zeros(400)]).astype(np.float32)  # [2, T]
    np.testing.assert_array_equal(as_channels(stereo.T), stereo)  # [T, C] -> [C, T]
    np.testing.assert_array_equal(as_channels(stereo), stereo)
    np.testing.assert_array_equal(as_channels(torch.from_numpy(stereo)[None]), stereo)  # [1, C, T]
    np.testing.assert_array_equal(as_channels(stereo[0]), stereo[:1])  # [T] -> [1, T]
    assert as_channels(np.zeros((400, 8), np.float32)).shape == (8, 400)  # 7.1
    with pytest.raises(ValueError, match="at most 8"):
        as_channels(np.zeros((9, 400), np.float32), "clip")
    mono = load_audio(stereo.T, sample_rate=16000)
    np.testing.assert_allclose(mono.samples, stereo.mean(axis=0), atol=1e-7)


@pytest.mark.parametrize(
    "dtype,values,expected",
    [
        (np.int16, [-32768, 0, 16384, 32767], [-1.0, 0.0, 0.5, 32767 / 32768]),
        (np.int32, [-(2**31), 0, 2**30, 2**31 - 1], [-1.0, 0.0, 0.5, 1.0 - 2.0**-31]),
        (np.uint8, [0, 128, 192, 255], [-1.0, 0.0, 0.5, 127 / 128]),
    ],
)
def test_integer_pcm_is_scaled_by_its_dtypes_full_range(dtype, values, expected):
    pcm = np.array(values, dtype)
    np.testing.assert_allclose(as_channels(pcm)[0], expected, rtol=0, atol=1e-7)
    if dtype != np.uint8:  # torch has no uint8 audio convention; int16/int32 tensors keep it
        np.testing.assert_allclose(as_channels(torch.from_numpy(pcm))[0], expected, atol=1e-7)


def _write_with_av(path, stereo: np.ndarray, rate: int, codec: str) -> None:
    from video_clips import encode_audio

    encode_audio(path, stereo, rate, codec)


def _envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    n = len(x) // hop * hop
    return np.sqrt(np.mean(x[:n].reshape(-1, hop) ** 2, axis=1))


@pytest.mark.parametrize(
    "name,codec", [("speech.mp3", "libmp3lame"), ("speech.m4a", "aac"), ("speech.mp4", "aac"), ("speech.flac", None)]
)
def test_compressed_and_container_files_decode_to_the_same_speech(tmp_path, name, codec):
    wave, _ = speak_wave(SENTENCE)
    stereo = _upsample_stereo(wave, 44100)
    path = tmp_path / name
    if codec is None:
        sf.write(str(path), stereo.T, 44100)
    else:
        _write_with_av(path, stereo, 44100, codec)
    channels, rate = read_audio_file(path)
    assert rate == 44100 and channels.shape[0] == 2 and channels.dtype == np.float32
    mono = load_audio(path)
    # Lossy codecs pad a little; the speech itself must line up and keep its envelope.
    assert abs(mono.seconds - len(wave) / 16000) < 0.08
    a, b = _envelope(0.75 * wave), _envelope(mono.samples)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.95


def test_audio_dict_from_file_keeps_the_files_rate_and_channels(tmp_path):
    wave, _ = speak_wave("one two three")
    stereo = _upsample_stereo(wave, 22050)
    path = tmp_path / "x.wav"
    sf.write(str(path), stereo.T, 22050, subtype="FLOAT")
    audio = audio_dict_from_file(path)
    assert audio["sample_rate"] == 22050
    w = audio["waveform"]
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float32
    assert tuple(w.shape) == (1, 2, stereo.shape[1])
    np.testing.assert_array_equal(w[0].numpy(), stereo)
    # and it round-trips through the loader
    assert load_audio(audio).duration == Fraction(stereo.shape[1], 22050)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    junk = tmp_path / "junk.mp3"
    junk.write_text("this is not audio")
    with pytest.raises(ValueError, match="junk.mp3"):
        load_audio(junk)
