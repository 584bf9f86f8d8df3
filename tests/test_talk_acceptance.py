"""Acceptance checks of issue #3 ("The main job, built in"): the built-in chain on real speech.

Speech is synthesised with espeak-ng at test time (``tests/speech.py``); the portrait is
``examples/portrait.png`` (she smiles showing teeth: at silence the mouth stays her own smile, and
p/b/m close it), the video ``examples/video.mp4``. Mouth opening is measured as the pixel count of
region ``mouth_interior`` in the talking segmentation; the rendered crops and full frames are
compared with the source pixels.
"""
from __future__ import annotations

import logging
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segtalker_core import labels as L
from segtalker_core import pipeline
from segtalker_core.audio.articulation import articulation_from_audio
from segtalker_core.frame_schedule import source_indices
from segtalker_core.video_io import read_video
from speech import speak, speak_wave

REPO = Path(__file__).resolve().parents[1]
FPS = 25
SR = 16000
MOUTH = L.region_index("mouth_interior")
PAPA = "papa mama baba"
SENTENCE = "The quick brown fox jumps over the lazy dog."


# ---------------------------------------------------------------------------------------------
# Helpers


def audio(wave: np.ndarray, rate: int = SR) -> dict:
    """ComfyUI AUDIO: ``waveform [1, C, T]`` torch tensor (mono ``[T]`` or ``[C, T]`` in)."""
    w = np.asarray(wave, np.float32)
    w = w[None] if w.ndim == 1 else w
    return {"waveform": torch.from_numpy(np.ascontiguousarray(w))[None], "sample_rate": rate}


def padded_speech(text: str, pad_s: float = 0.5) -> np.ndarray:
    """16 kHz speech with ``pad_s`` of digital silence at both ends."""
    wave, _ = speak_wave(text)
    pad = np.zeros(int(pad_s * SR), np.float32)
    return np.concatenate([pad, wave, pad])


def frame_rms(wave: np.ndarray, n_frames: int, fps=FPS, rate: int = SR) -> np.ndarray:
    """RMS of the samples under each video frame ``[t/fps, (t+1)/fps)`` (exact boundaries)."""
    fps = Fraction(fps)
    edges = [min(len(wave), math.floor(Fraction(t * rate) / fps)) for t in range(n_frames + 1)]
    return np.array([
        np.sqrt(np.mean(np.square(wave[a:b], dtype=np.float64))) if b > a else 0.0
        for a, b in zip(edges[:-1], edges[1:])
    ])


def mouth_area(segmentation) -> np.ndarray:
    return (segmentation.regions == MOUTH).sum(axis=(1, 2))


def sounding_span(rms: np.ndarray) -> tuple[int, int]:
    """Frames from the first to the last that carry sound (the pads are digital silence)."""
    on = np.flatnonzero(rms > 0.01 * rms.max())
    return int(on[0]), int(on[-1]) + 1


def energy_dips(wave: np.ndarray, rate: int = SR) -> list[float]:
    """Times (s) of valleys between syllables: a 10 ms-hop level minimum that falls below 35 % of
    the lower of the loudest points on either side within 250 ms. These are the closures of
    "papa mama baba" (silent for p/b, a quiet murmur for m)."""
    hop = rate // 100
    n = len(wave) // hop
    level = np.sqrt(np.mean(np.square(wave[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    level = np.convolve(level, np.ones(3) / 3, mode="same")
    reach = 25
    dips = []
    for k in range(1, n - 1):
        left, right = level[max(0, k - reach) : k], level[k + 1 : k + 1 + reach]
        if not len(left) or not len(right) or level[k] > level[k - 1] or level[k] >= level[k + 1]:
            continue
        if level[k] < 0.35 * min(left.max(), right.max()) and min(left.max(), right.max()) > 0.1 * level.max():
            if dips and k - dips[-1] < 10:  # one closure can ripple (an /m/ murmur): keep its lowest
                if level[k] < level[dips[-1]]:
                    dips[-1] = k
            else:
                dips.append(k)
    return [(k + 0.5) / 100.0 for k in dips]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def yaw_turned(image: np.ndarray, landmarks_frame: np.ndarray, degrees: float) -> np.ndarray:
    """The portrait with its head turned by ``degrees`` about a vertical axis: the face is
    projected onto a cylinder through the cheeks and rotated (one cheek disappears, the nose moves
    towards the other)."""
    h, w = image.shape[:2]
    cx = float(landmarks_frame[1, 0])  # nose tip
    radius = 0.575 * float(landmarks_frame[454, 0] - landmarks_frame[234, 0])
    xs = np.arange(w, dtype=np.float64)
    s = (xs - cx) / radius
    theta = np.arcsin(np.clip(s, -1, 1)) - math.radians(degrees)
    src = np.where(np.abs(s) <= 1, np.where(theta > -math.pi / 2, cx + radius * np.sin(theta), -1), xs)
    map_x = np.tile(src.astype(np.float32), (h, 1))
    map_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return _read_rgb(REPO / "examples" / "portrait.png")


@pytest.fixture(scope="module")
def faces(portrait):
    """The portrait parsed at the default crop size (what the CLI and the Talk node use)."""
    return pipeline.parse_faces(portrait[None])


@pytest.fixture(scope="module")
def small_faces(portrait):
    """A 256 crop for checks whose outcome does not depend on resolution (cheaper)."""
    return pipeline.parse_faces(portrait[None], crop_size=256)


@pytest.fixture(scope="module")
def papa_wave() -> np.ndarray:
    return padded_speech(PAPA)


@pytest.fixture(scope="module")
def papa_segmentation(faces, papa_wave):
    return pipeline.talking_segmentation(faces, audio(papa_wave), FPS, blink=False)


@pytest.fixture(scope="module")
def sentence_wave() -> np.ndarray:
    return padded_speech(SENTENCE)


@pytest.fixture(scope="module")
def sentence_segmentation(faces, sentence_wave):
    return pipeline.talking_segmentation(faces, audio(sentence_wave), FPS, blink=False)


@pytest.fixture(scope="module")
def video_frames() -> np.ndarray:
    frames, fps = read_video(REPO / "examples" / "video.mp4")
    assert fps == FPS and frames.shape == (50, 400, 400, 3)  # what the dubbing checks assume
    return frames


# ---------------------------------------------------------------------------------------------
# Mouth motion follows the speech


@pytest.mark.parametrize("which", ["papa", "sentence"])
def test_mouth_opening_follows_the_audio_envelope(which, request):
    wave = request.getfixturevalue(f"{which}_wave")
    segmentation = request.getfixturevalue(f"{which}_segmentation")
    area = mouth_area(segmentation)
    rms = frame_rms(wave, len(area))
    a, b = sounding_span(rms)
    # Only the spoken stretch (voiced and unvoiced sounds, pauses between words): the silent pads
    # would make any mouth that is shut in silence look well correlated.
    r = np.corrcoef(area[a:b], rms[a:b])[0, 1]
    assert r >= 0.6, (r, area[a:b].tolist(), np.round(rms[a:b], 3).tolist())
    assert area.max() > 0.003 * segmentation.faces.crop_size**2  # and it opens visibly


def test_lips_close_at_the_bilabials_of_papa_mama_baba(papa_wave, papa_segmentation):
    area = mouth_area(papa_segmentation)
    dips = energy_dips(papa_wave)
    # p, m, m, b, b between the six syllables (the first p follows silence: no energy dip).
    assert len(dips) == 5, dips
    for time_s in dips:
        t = int(time_s * FPS)
        # An energy minimum and the frame showing the lips' contact can be a frame apart (the /m/
        # murmur, the plosive burst), so the closure must show within one frame of it.
        near = area[max(0, t - 1) : t + 2]
        assert near.min() == 0, (time_s, t, area[max(0, t - 3) : t + 4].tolist())


def test_silence_shows_her_own_mouth(papa_wave, papa_segmentation, faces):
    area = mouth_area(papa_segmentation)
    rms = frame_rms(papa_wave, len(area))
    sounding = np.flatnonzero(rms > 0)
    # Frames of the 0.5 s pads more than 2 frames (80 ms) from any sound: anticipation and release
    # of the first and last syllables may legitimately reach that far.
    distance = np.abs(np.arange(len(area))[:, None] - sounding[None]).min(axis=1)
    silent = distance > 2
    assert silent.sum() >= 16  # both pads are covered
    source_area = int((faces.regions[0] == MOUTH).sum())
    assert source_area > 0  # her teeth show
    # The map of a silent frame is the source's own: her parted lips, the teeth between them
    # (the articulation's release can linger a few frames past the sound: nearly, not exactly).
    source = faces.regions[0]
    for label in (MOUTH, L.region_index("lips")):
        wrong = [int(((seg == label) != (source == label)).sum()) for seg in papa_segmentation.regions[silent]]
        assert max(wrong) <= 0.05 * (source == label).sum(), (label, wrong)
    assert np.array_equal(papa_segmentation.regions[0], source)  # deep in the lead-in: exactly
    assert area.max() > 1.5 * source_area  # speech opens beyond her smile


# ---------------------------------------------------------------------------------------------
# The rendered crop keeps the source outside the mouth


def test_rendered_crop_equals_source_away_from_the_mouth(faces, sentence_segmentation):
    crops = pipeline.synthesize(sentence_segmentation, pipeline.encode_style(faces))
    source = faces.crops[0]
    assert not np.array_equal(crops, np.broadcast_to(source, crops.shape))  # the mouth did move
    lm = faces.landmarks[0]
    iod = float(np.linalg.norm(lm[473, :2] - lm[468, :2]))  # iris centres
    size = faces.crop_size
    rows = np.arange(size)[:, None]
    cols = np.arange(size)[None, :]
    # Eyes, brows, forehead, hair: rows above the nose tip (with a margin); and the strips beside
    # the cheeks (hair, background, collar), which the jaw never reaches.
    above_nose = rows < lm[1, 1] - 0.1 * iod
    beside = (cols < lm[234, 0] - 0.25 * iod) | (cols > lm[454, 0] + 0.25 * iod)
    keep = np.broadcast_to(above_nose | beside, (size, size))
    assert keep.mean() > 0.5
    worst = min(psnr(crop[keep], source[keep]) for crop in crops)
    assert worst >= 35.0, worst


# ---------------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory) -> Path:
    return speak(PAPA, tmp_path_factory.mktemp("talk") / "papa.wav")


@pytest.mark.parametrize("fps", ["25", "30", "29.97"])
def test_cli_talk_writes_frames_and_audio_of_the_speech(fps, speech_file, tmp_path):
    import av
    import soundfile as sf

    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "segtalker_core", "talk", "--image", str(REPO / "examples" / "portrait.png"),
           "--audio", str(speech_file), "-o", str(out), "--fps", fps, "-q"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    info = sf.info(str(speech_file))
    duration = Fraction(info.frames, info.samplerate)
    expected = math.ceil(duration * Fraction(fps))
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        sound = container.streams.audio[0]
        assert abs(float(video.average_rate) - float(fps)) < 0.01
        audio_seconds = float(sound.duration * sound.time_base)
        aac_frame = sound.codec_context.frame_size / sound.codec_context.sample_rate
        decoded = [frame.to_ndarray(format="rgb24").shape for frame in container.decode(video=0)]
    assert len(decoded) == expected, (len(decoded), expected, float(duration))
    assert set(decoded) == {(400, 400, 3)}
    assert abs(audio_seconds - float(duration)) <= aac_frame, (audio_seconds, float(duration))


# ---------------------------------------------------------------------------------------------
# Bad input


def test_silent_audio_leaves_the_portrait_as_it_is(small_faces, portrait):
    silence = np.zeros(2 * SR, np.float32)
    segmentation = pipeline.talking_segmentation(small_faces, audio(silence), FPS, blink=False)
    assert len(segmentation) == 50
    source_area = int((small_faces.regions[0] == MOUTH).sum())
    assert source_area > 0 and (mouth_area(segmentation) == source_area).all()
    frames = list(pipeline.iter_talk(portrait[None], audio(silence), FPS, blink=False, crop_size=256))
    assert len(frames) == 50
    # No motion, and her own smile: every frame is the portrait itself.
    assert all(np.array_equal(frame, portrait) for frame in frames)


@pytest.mark.parametrize("samples", [1, 100])
def test_audio_shorter_than_a_frame_gives_one_frame(samples, portrait):
    wave, _ = speak_wave(PAPA)
    frames = list(pipeline.iter_talk(portrait[None], audio(wave[SR // 4 : SR // 4 + samples]), FPS, crop_size=256))
    assert len(frames) == 1
    assert frames[0].shape == portrait.shape and frames[0].dtype == np.uint8


def test_long_audio_streams_frame_by_frame(portrait):
    sentences = ["Papa made a map of the bay by the mill.", SENTENCE, "We will meet you by the river."]
    parts, n = [], 0
    while n < 60 * SR:
        wave, _ = speak_wave(sentences[len(parts) // 2 % len(sentences)])
        gap = np.zeros(int(0.4 * SR), np.float32)
        parts += [wave, gap]
        n += len(wave) + len(gap)
    long_wave = np.concatenate(parts)[: 60 * SR]
    done = []

    def progress(finished: int, total: int) -> None:
        done.append((finished, total))

    stream = pipeline.iter_talk(portrait[None], audio(long_wave), FPS, crop_size=256, progress=progress)
    count = 0
    changed = 0
    first = None
    for frame in stream:
        # Frame t arrives before frame t+1 is rendered: the chain does not work ahead.
        rendered = done[-1][0] if done else 0
        assert rendered in (count, count + 1), (count, rendered)
        assert frame.shape == portrait.shape and frame.dtype == np.uint8
        if first is None:
            first = frame.copy()
        elif count >= 1200:
            changed += not np.array_equal(frame, first)
        count += 1
        del frame  # nothing is held: only a count and the first frame
    assert count == 60 * FPS
    assert done[-1] == (60 * FPS, 60 * FPS)
    assert changed > 50  # the mouth still talks in the last 12 s


def test_stereo_48k_moves_the_mouth_like_mono_16k(small_faces):
    mono, _ = speak_wave(SENTENCE, sample_rate=SR)
    wave48, _ = speak_wave(SENTENCE, sample_rate=48000)
    # Channels differ (gain, a 0.25 ms delay) so the downmix is exercised, not just one channel.
    right = 0.6 * np.concatenate([np.zeros(12, np.float32), wave48[:-12]])
    stereo = np.stack([wave48, right])
    a16 = mouth_area(pipeline.talking_segmentation(small_faces, audio(mono), FPS, blink=False))
    a48 = mouth_area(pipeline.talking_segmentation(small_faces, audio(stereo, 48000), FPS, blink=False))
    assert len(a48) == len(a16) == math.ceil(Fraction(len(mono), SR) * FPS)
    assert np.corrcoef(a16, a48)[0, 1] >= 0.9
    assert np.abs(a16 - a48).mean() <= 0.15 * a16.max()


def _chord(seconds: float, plucked: bool) -> np.ndarray:
    """A major triad (A3 C#4 E4, five harmonics each), held or strummed twice a second."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * f * k * t) / k**1.5 for f in (220.0, 277.18, 329.63) for k in range(1, 6))
    if plucked:
        tone = tone * np.exp(-(t % 0.5) / 0.12)
    return (0.4 * tone / np.abs(tone).max()).astype(np.float32)


@pytest.mark.parametrize("kind", ["white_noise", "held_chord", "strummed_chord"])
def test_non_speech_does_not_work_the_jaw(kind, small_faces):
    if kind == "white_noise":
        wave = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
        wave = 0.3 * wave / np.abs(wave).max()
    else:
        wave = _chord(3.0, plucked=kind == "strummed_chord")
    # Opening beyond the smile she shows at rest (that much interior is always there).
    rest = int((small_faces.regions[0] == MOUTH).sum())
    area = mouth_area(pipeline.talking_segmentation(small_faces, audio(wave), FPS, blink=False)) - rest
    speech, _ = speak_wave(PAPA)
    talking = mouth_area(pipeline.talking_segmentation(small_faces, audio(speech), FPS, blink=False)) - rest
    # Small: at most a tenth of the opening that speech gives the same face.
    assert talking.max() > 0
    assert area.max() <= 0.1 * talking.max(), (area.max(), talking.max())


def test_open_mouth_portrait_keeps_its_mouth_at_rest_and_closes_for_bilabials(small_faces):
    source_interior = small_faces.regions[0] == MOUTH
    assert source_interior.sum() > 200  # the photo shows her teeth
    wave, _ = speak_wave(PAPA)
    silence = np.zeros(SR // 2, np.float32)
    segmentation = pipeline.talking_segmentation(
        small_faces, audio(np.concatenate([silence, wave])), FPS, blink=False)
    crops = pipeline.synthesize(segmentation)
    source = small_faces.crops[0]
    lips = small_faces.regions[0] == L.region_index("lips")
    ys, xs = np.nonzero(lips | source_interior)
    box = np.s_[ys.min() - 4 : ys.max() + 5, xs.min() - 4 : xs.max() + 5]
    # Silent lead-in (well before the speech's anticipation): her own mouth, teeth and all.
    for t in range(FPS // 2 - 3):
        assert psnr(crops[t][box], source[box]) >= 35.0, t
    # At the bilabials the lips meet: where the teeth were, the picture shows lips -- its colour
    # there is that of her lips, not that of her teeth and mouth.
    shut = np.flatnonzero(mouth_area(segmentation) == 0)
    assert len(shut) >= 3
    lab = lambda img, where: cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where].mean(axis=0)  # noqa: E731
    closed = lab(crops[shut[0]], source_interior)
    to_lips = np.linalg.norm(closed - lab(source, lips))
    to_teeth = np.linalg.norm(closed - lab(source, source_interior))
    assert to_lips < 0.5 * to_teeth, (closed, to_lips, to_teeth)


def test_turned_face_warns_and_still_talks(portrait, faces, caplog):
    inverse = faces.inverse_transforms[0]
    landmarks = faces.landmarks[0][:, :2] @ inverse[:, :2].T + inverse[:, 2]
    turned = yaw_turned(portrait, landmarks, 60.0)
    wave, _ = speak_wave(PAPA)
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        frames = list(pipeline.iter_talk(turned[None], audio(wave), FPS, blink=False, crop_size=256))
    # Best effort: a full clip, and the face is still animated.
    assert len(frames) == math.ceil(Fraction(len(wave), SR) * FPS)
    assert any(not np.array_equal(frame, frames[0]) for frame in frames)
    messages = [r.getMessage() for r in caplog.records]
    assert any(word in m.lower() for m in messages for word in ("profile", "turned", "yaw", "pose", "angle")), (
        "a face turned ~60 degrees gave no warning that the result will be poor; warnings: " + repr(messages)
    )


def test_missing_phoneme_model_falls_back_to_acoustic(papa_wave, caplog):
    with caplog.at_level("WARNING", logger="segtalker"):
        track = articulation_from_audio(papa_wave, FPS, model_dir="/nonexistent/pocketsphinx-model")
    assert "phoneme recognition unavailable" in caplog.text
    assert track.method == "acoustic"
    rms = frame_rms(papa_wave, len(track))
    a, b = sounding_span(rms)
    assert np.corrcoef(track.jaw_open[a:b], rms[a:b])[0, 1] >= 0.6


def test_pipeline_without_the_recogniser_uses_acoustic_articulation(monkeypatch, small_faces, papa_wave,
                                                                     caplog):
    # An environment where pocketsphinx cannot be imported (method "auto" is the default).
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    with caplog.at_level("WARNING", logger="segtalker"):
        segmentation = pipeline.talking_segmentation(small_faces, audio(papa_wave), FPS, blink=False)
    assert "phoneme recognition unavailable" in caplog.text
    assert segmentation.meta["articulation"] == "acoustic"
    area = mouth_area(segmentation)
    rms = frame_rms(papa_wave, len(area))
    a, b = sounding_span(rms)
    assert np.corrcoef(area[a:b], rms[a:b])[0, 1] >= 0.6


# ---------------------------------------------------------------------------------------------
# Video dubbing


@pytest.fixture(scope="module")
def dubbed(video_frames) -> np.ndarray:
    wave, _ = speak_wave("We will meet you by the river when the rain stops, papa.")
    wave = np.pad(wave, (0, max(0, 4 * SR - len(wave))))[: 4 * SR]  # exactly 4 s
    return np.stack(list(pipeline.iter_talk(video_frames, audio(wave), FPS)))


def test_dubbing_makes_one_frame_per_audio_frame_at_the_video_size(dubbed, video_frames):
    assert dubbed.shape == (100,) + video_frames.shape[1:]  # ceil(4 s * 25 fps)
    assert dubbed.dtype == np.uint8


def test_dubbing_pingpong_plays_the_head_pose_backwards(dubbed, video_frames):
    expected = source_indices(50, 100, "pingpong")
    assert expected[50:52].tolist() == [48, 47]  # the schedule this test expects
    flat = video_frames.reshape(50, -1).astype(np.int16)
    for t in range(100):
        # The output differs from its source frame only around the mouth, so the nearest input
        # frame is the one whose head pose it carries.
        distance = np.abs(flat - dubbed[t].reshape(1, -1).astype(np.int16)).mean(axis=1)
        assert int(np.argmin(distance)) == expected[t], (t, int(np.argmin(distance)), expected[t])
    assert not np.array_equal(dubbed[60], video_frames[10])  # dubbed, not copied


def test_dubbing_passes_faceless_frames_through(video_frames, caplog):
    grey = np.full(video_frames.shape[1:], 128, np.uint8)
    frames = np.concatenate([video_frames[:10], grey[None], grey[None], video_frames[10:30], grey[None], video_frames[30:]])
    faceless = (10, 11, 32)
    wave, _ = speak_wave(SENTENCE)
    wave = np.pad(wave, (0, max(0, 2 * SR - len(wave))))[: 2 * SR]  # 50 output frames of 53: cut
    with caplog.at_level(logging.WARNING, logger="segtalker"):
        out = list(pipeline.iter_talk(frames, audio(wave), FPS, crop_size=256))
    assert len(out) == 50
    for t in faceless:
        np.testing.assert_array_equal(out[t], grey)
    assert not any(np.array_equal(out[t], grey) for t in range(50) if t not in faceless)
    assert "no face in 3 of 53 frames" in caplog.text
