"""Hostile audio and model files (issue #9): one NaN policy, sane sample rates, no AAC priming,
and model files that are refused with a message naming them, never half-written."""
from __future__ import annotations

import logging
import os
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from segtalker_core import checkpoints, model_loading, pipeline
from segtalker_core.audio import io as audio_io
from segtalker_core.audio import mel
from segtalker_core.audio.io import MonoAudio, audio_channels, load_audio, read_audio_file
from segtalker_core.models import bundles
from segtalker_core.models.random_bundle import write_random_bundles
from segtalker_core.parsing.bisenet import build_bisenet, load_bisenet

RATE = 16000


def _speech_like(seconds: float = 3.0, rate: int = RATE) -> np.ndarray:
    """Voiced syllables (a 140 Hz buzz through a few formants, 4 per second) with pauses: sound
    whose envelope a lag or an extra frame of priming would shift visibly."""
    t = np.arange(int(round(seconds * rate))) / rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25))
    formants = 0.6 * np.sin(2 * np.pi * 700 * t) + 0.4 * np.sin(2 * np.pi * 1200 * t)
    syllables = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    syllables[t < 0.3] = 0.0  # a pause at the start, as in real speech
    wave = 0.25 * syllables * (0.5 * buzz / 3 + 0.5 * formants)
    return wave.astype(np.float32)


def _segtalker_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("segtalker")]


# ============================================================================ NaN / inf audio

def _with_nan(n_bad: int, total: int = RATE) -> np.ndarray:
    wave = np.full(total, 0.1, np.float32)
    wave[:n_bad:2] = np.nan
    wave[1:n_bad:2] = np.inf
    return wave


def _as_file(wave, tmp_path, rate=RATE):
    path = tmp_path / "speech.wav"
    sf.write(str(path), wave, rate, subtype="FLOAT")
    return path


# Every way audio enters: (what the warning calls the input, how the input is made).
SOURCES = {
    "file": (lambda tmp, w: _as_file(w, tmp), "audio file '{tmp}/speech.wav'"),
    "comfy AUDIO (torch)": (lambda tmp, w: {"waveform": torch.from_numpy(w)[None, None],
                                            "sample_rate": RATE}, "AUDIO input"),
    "numpy array": (lambda tmp, w: w, "audio array"),
    "torch tensor": (lambda tmp, w: torch.from_numpy(w), "audio array"),
    "MonoAudio by hand": (lambda tmp, w: MonoAudio(w, RATE, Fraction(len(w), RATE)), "MonoAudio"),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_a_few_nan_samples_are_silenced_with_one_warning_naming_the_input(kind, tmp_path, caplog):
    make, name = SOURCES[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning anywhere on the way
        with caplog.at_level(logging.WARNING, logger="segtalker"):
            source = make(tmp_path, _with_nan(100))
            mono = load_audio(source, sample_rate=RATE)
            frames = mel.melspectrogram(mono)
    assert np.isfinite(mono.samples).all() and np.isfinite(frames).all()
    assert mono.samples[:100].max() == 0.0 and mono.samples[100] == pytest.approx(0.1)
    assert _segtalker_messages(caplog) == [
        f"{name.format(tmp=tmp_path)}: 100 of 16000 samples (0.6%) are NaN/inf; they were set "
        "to 0 (silence)."]


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("n_bad", [16000, 8002])
def test_mostly_nan_audio_is_refused_naming_the_input(kind, n_bad, tmp_path):
    make, name = SOURCES[kind]
    with pytest.raises(ValueError) as err:
        load_audio(make(tmp_path, _with_nan(n_bad)), sample_rate=RATE)
    assert str(err.value) == (
        f"{name.format(tmp=tmp_path)} holds no usable sound ({n_bad} of 16000 samples are "
        "NaN/inf); check the node or file that produced it.")


def test_half_nan_is_still_accepted_and_the_cli_path_names_the_file(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        mono = pipeline.load_mono(_as_file(_with_nan(8000), tmp_path), "speech.wav")
    assert len(mono) == RATE and "8000 of 16000 samples (50.0%)" in caplog.text
    with pytest.raises(ValueError, match=r"input 'speech\.wav': audio file .*speech\.wav' holds no "
                                         r"usable sound \(16000 of 16000"):
        pipeline.load_mono(_as_file(_with_nan(16000), tmp_path), "speech.wav")


def test_the_comfy_dict_from_a_nan_file_is_already_clean(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        audio = audio_io.audio_dict_from_file(_as_file(_with_nan(10), tmp_path))
        load_audio(audio)
    assert torch.isfinite(audio["waveform"]).all()
    assert len(_segtalker_messages(caplog)) == 1  # the file's warning, not a second one


def test_audio_channels_is_one_door_at_the_sources_own_rate(tmp_path):
    stereo = np.stack([_speech_like(0.5, 22050), 0.5 * _speech_like(0.5, 22050)])
    path = tmp_path / "stereo.wav"
    sf.write(str(path), stereo.T, 22050, subtype="FLOAT")
    sources = [path, {"waveform": torch.from_numpy(stereo)[None], "sample_rate": 22050},
               stereo, stereo.T, torch.from_numpy(stereo)]
    for source in sources:
        channels, rate = audio_channels(source, sample_rate=22050)
        assert rate == 22050
        np.testing.assert_array_equal(channels, stereo)
    mono = MonoAudio(stereo[0], 22050, Fraction(stereo.shape[1], 22050))
    assert audio_channels(mono)[1] == 22050 and audio_channels(mono)[0].shape == (1, 11025)


def test_the_clean_case_costs_no_copy():
    wave = np.zeros(RATE, np.float32)
    assert np.shares_memory(load_audio(wave, sample_rate=RATE).samples, wave)


# ============================================================================ sample rates

@pytest.mark.parametrize("rate, message", [
    (1, "sample_rate 1 Hz is outside 1000..768000 Hz"),
    (999, "sample_rate 999 Hz is outside 1000..768000 Hz"),
    (768_001, "sample_rate 768001 Hz is outside 1000..768000 Hz"),
    (0, "sample_rate 0 Hz is outside"),
    (-16000, "sample_rate -16000 Hz is outside"),
    (True, "sample_rate must be a whole number of Hz, got True (bool)"),
    (float("nan"), "sample_rate must be a whole number of Hz, got nan"),
    (float("inf"), "sample_rate must be a whole number of Hz, got inf"),
    ("16000", "sample_rate must be a whole number of Hz, got '16000' (str)"),
    (44100.5, "sample_rate must be a whole number of Hz, got 44100.5"),
    (None, "sample_rate must be a whole number of Hz, got None"),
])
def test_bad_sample_rates_are_refused_before_any_work(rate, message, monkeypatch):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the audio was converted or resampled before its rate was checked")

    monkeypatch.setattr(audio_io, "_resample", no_work)
    monkeypatch.setattr(audio_io, "as_channels", no_work)
    wave = np.zeros(10 * RATE, np.float32)
    with pytest.raises(ValueError, match="AUDIO input: " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        load_audio({"waveform": torch.from_numpy(wave)[None, None], "sample_rate": rate})
    if rate is not None:
        with pytest.raises(ValueError, match="audio array: "):
            load_audio(wave, sample_rate=rate)


@pytest.mark.parametrize("rate", [1000, 768_000, np.int64(22050), 16000.0, torch.tensor(48000)])
def test_good_sample_rates_of_any_integer_kind_are_taken(rate):
    mono = load_audio(np.zeros(4800, np.float32), sample_rate=rate)
    assert mono.duration == Fraction(4800, int(rate))


def test_a_wav_file_at_1_hz_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(str(path), np.zeros(100, np.float32), 1)
    with pytest.raises(ValueError, match=r"audio file '.*speech\.wav': sample_rate 1 Hz is outside"):
        load_audio(path)
    with pytest.raises(ValueError, match="MonoAudio: sample_rate 8 Hz"):
        MonoAudio(np.zeros(8, np.float32), 8, Fraction(1))


@pytest.mark.parametrize("make", [
    lambda tmp: _as_file(np.zeros(0, np.float32), tmp),
    lambda tmp: {"waveform": torch.zeros(1, 1, 0), "sample_rate": RATE},
    lambda tmp: np.zeros((1, 0), np.float32),
    lambda tmp: MonoAudio(np.zeros(0, np.float32), RATE, Fraction(0)),
], ids=["file", "comfy AUDIO", "array", "MonoAudio"])
def test_empty_audio_is_refused(make, tmp_path):
    with pytest.raises(ValueError, match="no samples; give a non-empty recording"):
        load_audio(make(tmp_path), sample_rate=RATE)


# ============================================================================ AAC priming

def _encode(path, wave: np.ndarray, rate: int, container: str, codec: str = "aac",
            options: dict | None = None) -> None:
    """Encode mono ``wave`` with PyAV (as video_io's writer muxes its AAC track)."""
    from video_clips import encode_audio

    encode_audio(path, wave[None], rate, codec, container=container, options=options, block=1000)


def _lag(decoded: np.ndarray, reference: np.ndarray, most: int = 4096) -> int:
    """Samples by which ``decoded`` is late against ``reference`` (peak of the cross-correlation
    within ``most`` samples either way)."""
    from scipy.signal import correlate

    n = min(len(decoded), len(reference))
    corr = correlate(decoded[:n], reference[:n], mode="full", method="fft")
    lags = np.arange(-(n - 1), n)
    near = np.abs(lags) <= most
    return int(lags[near][np.argmax(corr[near])])


# (file name, container, muxer options, how far off the length may be in samples)
CONTAINERS = [
    ("speech.mp4", "mp4", {}, 0),
    ("speech.m4a", "ipod", {}, 0),
    ("speech.mov", "mov", {}, 0),
    ("no_edit_list.mp4", "mp4", {"use_editlist": "0"}, 0),
    ("no_edit_list.m4a", "ipod", {"use_editlist": "0"}, 0),
    ("fragmented.mp4", "mp4", {"movflags": "frag_keyframe+empty_moov"}, 0),
    ("speech.mkv", "matroska", {}, 0),  # its end: the segment's duration (to the millisecond)
    # These record no end: the padding of the last AAC frame (< 1024 samples) stays.
    ("speech.aac", "adts", {}, 1023),
    ("speech.ts", "mpegts", {}, 1023),
]


@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("name, container, options, slack", CONTAINERS,
                         ids=[c[0] for c in CONTAINERS])
def test_aac_speech_is_as_long_as_the_same_speech_as_wav(tmp_path, rate, name, container, options,
                                                         slack):
    wave = _speech_like(3.0, rate)
    wav = tmp_path / "speech.wav"
    sf.write(str(wav), wave, rate)
    coded = tmp_path / name
    _encode(coded, wave, rate, container, options=options)
    from_wav, from_aac = read_audio_file(wav)[0][0], read_audio_file(coded)[0][0]
    assert 0 <= len(from_aac) - len(from_wav) <= max(slack, 4)
    assert abs(_lag(from_aac, wave)) <= 4  # the priming is gone, not just the length evened out
    if slack == 0:
        assert pipeline.audio_frame_count(coded, 25) == pipeline.audio_frame_count(wav, 25) == 75


def test_a_dub_written_by_the_pack_gives_back_its_speech_length(tmp_path):
    from segtalker_core.video_io import write_mp4

    wave = _speech_like(2.0)
    path = tmp_path / "dub.mp4"
    write_mp4(path, [np.zeros((64, 64, 3), np.uint8)] * 50, 25, audio=wave, sample_rate=RATE)
    decoded = read_audio_file(path)[0][0]
    assert len(decoded) == len(wave) and abs(_lag(decoded, wave)) <= 4
    assert pipeline.audio_frame_count(path, 25) == 50


def test_an_mp3_with_its_lame_header_has_the_exact_length(tmp_path):
    wave = _speech_like(3.0)
    path = tmp_path / "speech.mp3"
    _encode(path, wave, RATE, "mp3", codec="libmp3lame")
    decoded = read_audio_file(path)[0][0]
    assert len(decoded) == len(wave) and abs(_lag(decoded, wave)) <= 4


# ============================================================================ model files

def _bisenet_pth(path, damage: str | None = None):
    state = build_bisenet().state_dict()
    convs = [k for k, v in state.items() if v.ndim == 4]
    if damage == "nan":
        for key in convs[:3]:
            state[key] = torch.full_like(state[key], float("nan"))
        state[convs[-1]][0, 0, 0, 0] = float("inf")
    elif damage == "shape":
        state[convs[0]] = torch.zeros(state[convs[0]].shape[0] + 1, *state[convs[0]].shape[1:])
    torch.save(state, path)
    return path


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"w": torch.randn(1000)})


# (case, file name, how the file is made, what the message must say)
BROKEN_FILES = [
    ("text file named .pth", "notes.pth", lambda p: p.write_text("not a checkpoint"),
     r"is not a PyTorch checkpoint \(it is a text file starting 'not a checkpoint'\)"),
    ("zero-byte .pth", "empty.pth", lambda p: p.write_bytes(b""), r"it is empty \(0 bytes\)"),
    ("HTML page named .pth", "page.pth", lambda p: p.write_text("<html>404 Not Found</html>"),
     r"HTML/JSON/XML page, e.g. a download error page"),
    ("safetensors named .pth", "renamed.pth", lambda p: p.write_bytes(_safetensors_bytes()),
     r"it is a safetensors file: rename it to \.safetensors"),
    ("truncated .pth", "cut.pth",
     lambda p: (torch.save({"w": torch.randn(1000)}, p), p.write_bytes(p.read_bytes()[:600])),
     r"torch\.load failed \(PytorchStreamReader failed reading zip archive"),
    ("zero-byte .safetensors", "empty.safetensors", lambda p: p.write_bytes(b""),
     r"it is only 0 bytes long"),
    ("truncated .safetensors", "cut.safetensors",
     lambda p: p.write_bytes(_safetensors_bytes()[:-100]),
     r"it is truncated: its tensors need 4000 bytes of data, the file holds 3900"),
    ("bogus header length", "bogus.safetensors",
     lambda p: p.write_bytes((10 ** 12).to_bytes(8, "little") + b"{}"),
     r"its first bytes are not a safetensors header"),
    ("folder named .pth", "folder.pth", lambda p: p.mkdir(),
     r"is a folder, not a model file; give the \.safetensors or \.pth file inside it"),
    ("folder named .safetensors", "folder.safetensors", lambda p: p.mkdir(), r"is a folder"),
]


@pytest.mark.parametrize("case, name, make, message", BROKEN_FILES, ids=[c[0] for c in BROKEN_FILES])
def test_broken_model_files_give_a_checkpoint_error_naming_the_file(tmp_path, case, name, make,
                                                                    message):
    path = tmp_path / name
    make(path)
    loaders = [checkpoints.load, checkpoints.read_config, load_bisenet,
               lambda p: model_loading.load_model(p, slot="parser")]
    if name.endswith(".pth"):
        loaders.append(lambda p: checkpoints.convert_pth_to_safetensors(p, tmp_path / "o.safetensors"))
    for load in loaders:
        with pytest.raises(checkpoints.CheckpointError, match=message) as err:
            load(path)
        assert name in str(err.value)
    assert not (tmp_path / "o.safetensors").exists()


def test_an_old_style_pickle_pth_still_loads(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"cp.resnet.conv1.weight": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    loaded, config = checkpoints.load(path)
    assert config.component == "bisenet" and torch.equal(loaded["cp.resnet.conv1.weight"],
                                                          torch.ones(2))


NAN_MESSAGE = (r"model file .*{name} has NaN/inf values in 4 tensors \(conv_out32\.conv_out\.weight, "
               r"cp\.resnet\.conv1\.weight, cp\.resnet\.layer1\.0\.conv1\.weight, \.\.\.\): "
               r"the file is damaged or the training diverged; re-download or re-export it\.")


def test_a_parser_with_nan_weights_is_refused_everywhere_it_loads(tmp_path):
    pth = _bisenet_pth(tmp_path / "79999_iter.pth", damage="nan")
    message = NAN_MESSAGE.format(name=r"79999_iter\.pth")
    for load in (checkpoints.load, load_bisenet, model_loading.load_model,
                 lambda p: model_loading.load_model(p, slot="parser"),
                 lambda p: checkpoints.convert_pth_to_safetensors(p, tmp_path / "p.safetensors")):
        with pytest.raises(checkpoints.NonFiniteWeightsError, match=message):
            load(pth)
    assert not (tmp_path / "p.safetensors").exists()
    # The same weights as a bundle: refused the same way.
    state = torch.load(pth, weights_only=True)
    bundle = checkpoints.save(tmp_path / "parser.safetensors", state,
                              checkpoints.default_config("bisenet"))
    with pytest.raises(checkpoints.NonFiniteWeightsError,
                       match=NAN_MESSAGE.format(name=r"parser\.safetensors")):
        model_loading.load_model(bundle, slot="parser")
    loaded, _ = checkpoints.load(bundle, allow_non_finite=True)  # still inspectable on request
    assert torch.isnan(loaded["cp.resnet.conv1.weight"]).all()


def test_a_learned_bundle_with_nan_weights_is_refused(tmp_path):
    tsg = write_random_bundles(tmp_path, resolution=64)["tsg"]
    state, config = checkpoints.load(tsg)
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("-inf"))
    checkpoints.save(tsg, state, config)
    for load in (lambda p: bundles.load_component(p, "tsg"),
                 lambda p: model_loading.load_model(p, slot="tsg")):
        with pytest.raises(checkpoints.NonFiniteWeightsError,
                           match=rf"tsg_random_64\.safetensors has NaN/inf values in 1 tensor \({name}\)"):
            load(tsg)


def test_a_half_precision_file_with_large_values_is_not_mistaken_for_inf(tmp_path):
    big = torch.full((4096,), 60000.0, dtype=torch.float16)  # its float16 sum would overflow
    checkpoints.check_finite_weights({"running_var": big}, "x.safetensors")
    big[7] = float("inf")
    with pytest.raises(checkpoints.NonFiniteWeightsError, match=r"1 tensor \(running_var\)"):
        checkpoints.check_finite_weights({"running_var": big}, "x.safetensors")


# ============================================================================ convert

@pytest.mark.parametrize("dst", ["same path", "symlink", "hard link"])
def test_convert_onto_its_own_source_is_refused_before_reading(tmp_path, dst, monkeypatch):
    src = _bisenet_pth(tmp_path / "net.pth")
    before = src.read_bytes()
    target = {"same path": src, "symlink": tmp_path / "link.pth",
              "hard link": tmp_path / "hard.pth"}[dst]
    if dst == "symlink":
        os.symlink(src.name, target)
    elif dst == "hard link":
        os.link(src, target)

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the checkpoint was read before the output was checked")

    monkeypatch.setattr(torch, "load", no_reading)
    with pytest.raises(ValueError, match=r"is the same file as the checkpoint .*net\.pth"):
        checkpoints.convert_pth_to_safetensors(src, target)
    assert src.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_convert_checks_tensor_shapes_against_the_architecture(tmp_path):
    src = _bisenet_pth(tmp_path / "bad.pth", damage="shape")
    with pytest.raises(checkpoints.StateDictMismatchError,
                       match=r"BiSeNet face parser from .*bad\.pth: the file does not fit the model: "
                             r"1 tensor of the wrong shape \(cp\.resnet\.conv1\.weight: file "
                             r"\(65, 3, 7, 7\) vs model \(64, 3, 7, 7\)\)"):
        checkpoints.convert_pth_to_safetensors(src, tmp_path / "bad.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_convert_checks_names_for_an_asked_component(tmp_path):
    src = tmp_path / "g.pth"
    torch.save({"style.1.weight": torch.zeros(1), "input.input": torch.zeros(1)}, src)
    with pytest.raises(checkpoints.StateDictMismatchError, match=r"missing keys.*Check the file, or "
                                                                  r"the component"):
        checkpoints.convert_pth_to_safetensors(src, tmp_path / "g.safetensors")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_convert_writes_a_loadable_file_with_the_umask_mode(tmp_path, umask_022):
    src = _bisenet_pth(tmp_path / "79999_iter.pth")
    dst = tmp_path / "parser.safetensors"
    config = checkpoints.convert_pth_to_safetensors(src, dst)
    assert config.component == "bisenet" and dst.stat().st_mode & 0o777 == 0o644
    assert load_bisenet(dst).input_size == 512
    assert sorted(p.name for p in tmp_path.iterdir()) == ["79999_iter.pth", "parser.safetensors"]


# ============================================================================ saving

def test_save_follows_the_umask_and_replaces_only_when_complete(tmp_path, monkeypatch):
    config = checkpoints.default_config("discriminator")
    old = os.umask(0o027)
    try:
        path = checkpoints.save(tmp_path / "d.safetensors", {"w": torch.ones(3)}, config)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    before = path.read_bytes()

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "safetensors_bytes", lambda *a, **k: b"x" * 100)
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoints.save(path, {"w": torch.zeros(3)}, config)
    assert path.read_bytes() == before  # the old file, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]  # and no temporary file


def test_save_refuses_a_folder_or_an_input_as_target(tmp_path):
    config = checkpoints.default_config("discriminator")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        checkpoints.save(tmp_path / "dir.safetensors", {"w": torch.ones(1)}, config)
    src = tmp_path / "src.safetensors"
    src.write_bytes(b"precious")
    with pytest.raises(ValueError, match="same file as the source"):
        checkpoints.save(src, {"w": torch.ones(1)}, config, inputs={"source": src})
    assert src.read_bytes() == b"precious"


def test_random_bundles_are_written_whole_with_the_umask_mode(tmp_path, umask_022):
    paths = write_random_bundles(tmp_path / "bundles", resolution=64)
    names = sorted(p.name for p in (tmp_path / "bundles").iterdir())
    assert names == sorted(p.name for p in paths.values())  # no temporary file left
    for path in paths.values():
        assert path.stat().st_mode & 0o777 == 0o644, path
        bundles.load_component(path, checkpoints.read_config(path).component)
