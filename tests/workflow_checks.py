"""What each example workflow must produce when a real ComfyUI runs it.

``tests/test_comfyui_server.py`` runs every ``api_workflows/<name>.api.json`` and then calls the checker
registered here under ``<name>``. A workflow without a checker fails that test, so every new
example comes with a statement of what its output must look like.

Register one with::

    @register("talk_simple", timeout=600)
    def _(run: WorkflowRun) -> None:
        (video,) = run.files(class_type="SaveVideo", suffix=".mp4")
        assert_video(video.path, size=(400, 400), audio=True)

``WorkflowRun`` gives the workflow, its history entry and the files its nodes reported; the
``assert_*`` helpers below check images, parsing previews, videos and audio files.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from comfyui_host import REPO_DIR, ComfyUIServer, OutputFile


@dataclass
class WorkflowRun:
    name: str
    api: dict                 # the API-format workflow that was queued
    history: dict             # its /history entry (status, outputs ...)
    outputs: list[OutputFile]  # every file the nodes reported, previews included
    input_dir: Path
    output_dir: Path

    def class_of(self, node_id: str) -> str:
        return self.api[str(node_id)]["class_type"]

    def files(self, *, class_type: str | None = None, node_id: str | None = None,
              suffix: str | None = None, folder_type: str | None = None) -> list[OutputFile]:
        """Reported files, filtered; each one is asserted to exist on disk."""
        picked = [
            f for f in self.outputs
            if (class_type is None or self.class_of(f.node_id) == class_type)
            and (node_id is None or f.node_id == str(node_id))
            and (suffix is None or f.suffix == suffix.lower())
            and (folder_type is None or f.folder_type == folder_type)
        ]
        for f in picked:
            assert f.path.is_file(), f"node {f.node_id} reported {f.path}, which does not exist"
        return picked

    def node_ids(self, class_type: str) -> list[str]:
        return [nid for nid, node in self.api.items() if node["class_type"] == class_type]


@dataclass(frozen=True)
class Rejection:
    """The one validation error a workflow may get from ``/prompt``: ``input`` of the node of
    ``class_type`` names a model file the test machine cannot have (``value_not_in_list``)."""

    class_type: str
    input: str


@dataclass
class Checker:
    name: str
    check: Callable[[WorkflowRun], None] | None  # None: see rejection
    timeout: float = 300.0
    prepare: Callable[["ComfyUIServer"], None] | None = None
    rejection: Rejection | None = None


CHECKERS: dict[str, Checker] = {}


def expect_rejection(name: str, rejection: Rejection) -> None:
    """Workflow ``name`` cannot run here (it needs a model file no test has): ``/prompt`` must
    refuse it for exactly ``rejection`` and nothing else."""
    if name in CHECKERS:
        raise ValueError(f"two checkers registered for workflow {name!r}")
    CHECKERS[name] = Checker(name, None, rejection=rejection)


def register(name: str, *, timeout: float = 300.0,
             prepare: Callable[["ComfyUIServer"], None] | None = None):
    """Decorator: ``check(run)`` asserts what workflow ``name`` must have produced.
    ``timeout`` bounds the run on the CI machine (2 CPU cores, no GPU). ``prepare(server)``, if
    given, runs before the workflow is queued (e.g. to put model files into ``server.models_dir``);
    the examples/ files are always staged in the input dir."""
    def deco(fn: Callable[[WorkflowRun], None]):
        if name in CHECKERS:
            raise ValueError(f"two checkers registered for workflow {name!r}")
        CHECKERS[name] = Checker(name, fn, timeout, prepare)
        return fn
    return deco


# --------------------------------------------------------------------------- test inputs

EXAMPLES_DIR = REPO_DIR / "examples"
# The tests' speech.wav: examples/speech.wav cut in the pause after its first phrases (2.44-2.56 s
# are silent), for CI time. Still longer than the 2 s examples/video.mp4, so the dubs loop it.
TEST_SPEECH_SECONDS = 2.5


def stage_test_inputs(server: ComfyUIServer) -> list[str]:
    """The repository's examples/ (portrait, reference face, video, speech) in the server's input
    dir, with speech.wav cut to ``TEST_SPEECH_SECONDS``; the checkers read the staged files, so
    their frame counts follow."""
    import soundfile

    assert EXAMPLES_DIR.is_dir(), f"{EXAMPLES_DIR} is missing"
    staged = server.stage_inputs(EXAMPLES_DIR)
    wave, rate = soundfile.read(str(EXAMPLES_DIR / "speech.wav"), dtype="float32")
    soundfile.write(str(server.input_dir / "speech.wav"), wave[: int(TEST_SPEECH_SECONDS * rate)], rate)
    return staged


# --------------------------------------------------------------------------- generic assertions


def load_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 ``[H, W, 3]``."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def assert_png(path: Path, size: tuple[int, int] | None = None, min_std: float = 4.0) -> np.ndarray:
    """A PNG that is not blank (pixel std > ``min_std``); ``size`` is (width, height)."""
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = load_rgb(path)
    if size is not None:
        assert (img.shape[1], img.shape[0]) == tuple(size), \
            f"{path}: {img.shape[1]}x{img.shape[0]}, expected {size[0]}x{size[1]}"
    std = float(img.reshape(-1, 3).astype(np.float32).std(axis=0).max())
    assert std > min_std, f"{path} is blank (largest channel std {std:.2f})"
    return img


def palette_coverage(img: np.ndarray, tolerance: int = 0) -> dict[str, float]:
    """Fraction of pixels within ``tolerance`` (max abs per channel) of each region's palette
    colour (``segtalker_core.labels.REGION_PALETTE``), by region name."""
    from segtalker_core.labels import REGION_PALETTE, REGIONS_12

    pix = img.reshape(-1, 3).astype(np.int16)
    out = {}
    for name, colour in zip(REGIONS_12, REGION_PALETTE.astype(np.int16)):
        close = np.abs(pix - colour).max(axis=1) <= tolerance
        out[name] = float(close.mean())
    return out


def hue_coverage(img: np.ndarray, hue_tolerance: float = 20.0, min_saturation: float = 0.3,
                 min_value: float = 0.15) -> dict[str, float]:
    """Fraction of pixels whose hue lies within ``hue_tolerance`` degrees of each (saturated) region
    colour, with saturation and value above the minima. Survives a translucent overlay, which
    exact colour matching does not. Unsaturated palette colours (background, eyeglasses) are left out."""
    import cv2
    from segtalker_core.labels import REGION_PALETTE, REGIONS_12

    def hsv(a):
        x = cv2.cvtColor(np.ascontiguousarray(a.reshape(-1, 1, 3), dtype=np.uint8),
                         cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32)
        return x[:, 0] * 360.0 / 256.0, x[:, 1] / 255.0, x[:, 2] / 255.0

    h, s, v = hsv(img)
    out = {}
    for name, colour in zip(REGIONS_12, REGION_PALETTE):
        ph, ps, _ = hsv(colour[None])
        if ps[0] < 0.3:
            continue
        dist = np.abs((h - ph[0] + 180.0) % 360.0 - 180.0)
        out[name] = float(((dist <= hue_tolerance) & (s >= min_saturation) & (v >= min_value)).mean())
    return out


def assert_parsing_preview(path: Path, regions=("eyes", "nose", "neck"), min_fraction: float = 0.002,
                           overlay: bool = True, size: tuple[int, int] | None = None) -> dict[str, float]:
    """A parsing preview PNG: not blank, and each of ``regions`` shown in its palette colour
    (``segtalker_core.labels.REGION_PALETTE``) on at least ``min_fraction`` of the pixels.
    ``overlay=True``: colours blended over the photo, matched by hue (the default regions have hues
    a face photo lacks: blue eyes-colour, green nose, cyan neck); ``overlay=False``: exact colours."""
    img = assert_png(path, size=size)
    cover = hue_coverage(img) if overlay else palette_coverage(img)
    missing = {r: round(cover.get(r, 0.0), 5) for r in regions if cover.get(r, 0.0) < min_fraction}
    assert not missing, (f"{path}: regions missing from the parsing preview (fraction of pixels in "
                         f"the region colour, need >= {min_fraction}): {missing}; all: "
                         f"{ {k: round(v, 4) for k, v in cover.items()} }")
    return cover


@dataclass
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float
    audio_streams: int
    audio_seconds: float
    first_frame: np.ndarray
    last_frame: np.ndarray


def probe_video(path: Path) -> VideoInfo:
    """Decode every frame (exact count) and the audio of a video file with PyAV."""
    import av

    with av.open(str(path)) as container:
        assert container.streams.video, f"{path} has no video stream"
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        frames, first, last = 0, None, None
        for frame in container.decode(video=0):
            arr = frame.to_ndarray(format="rgb24")
            if first is None:
                first = arr
            last = arr
            frames += 1
        assert first is not None, f"{path} has no decodable video frame"
    audio_seconds, audio_streams = 0.0, 0
    with av.open(str(path)) as container:
        audio_streams = len(container.streams.audio)
        if audio_streams:
            samples, rate = 0, container.streams.audio[0].rate or 0
            for aframe in container.decode(audio=0):
                samples += aframe.samples
                rate = aframe.sample_rate or rate
            audio_seconds = samples / rate if rate else 0.0
    return VideoInfo(frames, first.shape[1], first.shape[0], fps, audio_streams, audio_seconds,
                     first, last)


def assert_video(path: Path, frames: int | None = None, size: tuple[int, int] | None = None,
                 fps: float | None = None, audio: bool = True,
                 min_audio_seconds: float = 0.1) -> VideoInfo:
    """A video with ``frames`` frames of ``size`` (width, height) at ``fps``; an audio stream with at
    least ``min_audio_seconds`` of sound when ``audio``; first frame not blank."""
    info = probe_video(path)
    if frames is not None:
        assert info.frames == frames, f"{path}: {info.frames} frames, expected {frames}"
    if size is not None:
        assert (info.width, info.height) == tuple(size), \
            f"{path}: {info.width}x{info.height}, expected {size[0]}x{size[1]}"
    if fps is not None:
        assert abs(info.fps - fps) < 0.01, f"{path}: {info.fps} fps, expected {fps}"
    if audio:
        assert info.audio_streams >= 1, f"{path} has no audio stream"
        assert info.audio_seconds >= min_audio_seconds, \
            f"{path}: only {info.audio_seconds:.3f} s of audio"
    else:
        assert info.audio_streams == 0, f"{path} has an audio stream, none expected"
    std = float(info.first_frame.reshape(-1, 3).astype(np.float32).std(axis=0).max())
    assert std > 4.0, f"{path}: first frame is blank (std {std:.2f})"
    return info


def assert_audio(path: Path, min_seconds: float = 0.1, sample_rate: int | None = None) -> float:
    """An audio file PyAV can decode, at least ``min_seconds`` long and not silent."""
    import av

    with av.open(str(path)) as container:
        assert container.streams.audio, f"{path} has no audio stream"
        chunks, rate, samples = [], None, 0
        for frame in container.decode(audio=0):
            chunks.append(frame.to_ndarray().astype(np.float64).reshape(-1))
            rate = frame.sample_rate
            samples += frame.samples  # per channel
    assert chunks and rate, f"{path}: no audio decoded"
    data = np.concatenate(chunks)
    seconds = samples / rate
    if sample_rate is not None:
        assert rate == sample_rate, f"{path}: {rate} Hz, expected {sample_rate}"
    assert seconds >= min_seconds, f"{path}: {seconds:.3f} s of audio, expected >= {min_seconds}"
    assert np.abs(data).max() > 1e-4, f"{path} is silent"
    return seconds


# --------------------------------------------------------------------------- registered checkers
# One per api_workflows/<name>.api.json.


def read_video_frames(path: Path) -> np.ndarray:
    """Every frame of a video as uint8 ``[T, H, W, 3]``."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def expected_frame_count(audio_path: Path, fps: float) -> int:
    """``ceil(duration * fps)``: one video frame per 1/fps of speech (the rule of
    ``segtalker_core.audio.timing.frame_count``)."""
    import math

    import soundfile

    info = soundfile.info(str(audio_path))
    return math.ceil(info.frames / info.samplerate * fps)


def audio_seconds(audio_path: Path) -> float:
    import soundfile

    info = soundfile.info(str(audio_path))
    return info.frames / info.samplerate


# The mouth of examples/portrait.png (and of frame 0 of examples/video.mp4), measured on the image:
# rows 130-165, columns 135-195 of the 400x400 frame. Lower region: the space suit below the face,
# which talking must leave untouched.
MOUTH_BOX = (slice(130, 165), slice(135, 195))
BELOW_FACE = (slice(260, 400), slice(0, 400))


def lip_red_stats(img: np.ndarray) -> tuple[int, float, float]:
    """Lip-red pixels in MOUTH_BOX (hue within -60..+15 degrees of red, saturation > 0.3):
    (count, mean saturation, mean signed hue in degrees)."""
    import cv2

    crop = np.ascontiguousarray(img[MOUTH_BOX], dtype=np.uint8)
    hsv = cv2.cvtColor(crop, cv2.COLOR_RGB2HSV_FULL).reshape(-1, 3).astype(np.float32)
    hue = (hsv[:, 0] * 360.0 / 256.0 + 180.0) % 360.0 - 180.0
    sat, val = hsv[:, 1] / 255.0, hsv[:, 2] / 255.0
    red = (hue > -60) & (hue < 15) & (sat > 0.3) & (val > 0.2)
    if not red.any():
        return 0, 0.0, 0.0
    return int(red.sum()), float(sat[red].mean()), float(hue[red].mean())


def assert_talking_portrait(run: WorkflowRun, speech: str = "speech.wav", fps: float = 25.0) -> np.ndarray:
    """The SaveVideo output of a portrait + speech graph: one frame per 1/fps of speech at the
    portrait's size, the speech as audio, the mouth moving, the rest of the picture the portrait's."""
    (video,) = run.files(class_type="SaveVideo", suffix=".mp4", folder_type="output")
    portrait = load_rgb(run.input_dir / "portrait.png").astype(np.int16)
    seconds = audio_seconds(run.input_dir / speech)
    assert_video(video.path, frames=expected_frame_count(run.input_dir / speech, fps),
                 size=(portrait.shape[1], portrait.shape[0]), fps=fps, audio=True,
                 min_audio_seconds=0.95 * seconds)
    frames = read_video_frames(video.path).astype(np.int16)
    below = np.abs(frames[(slice(None), *BELOW_FACE)] - portrait[BELOW_FACE]).mean(axis=(1, 2, 3))
    assert below.max() < 4.0, (f"{video.path}: the picture below the face is not the portrait's "
                               f"(mean abs difference up to {below.max():.1f} levels)")
    mouth = np.abs(frames[(slice(None), *MOUTH_BOX)] - frames[0][MOUTH_BOX]).mean(axis=(1, 2, 3))
    moving = float((mouth > 5.0).mean())
    assert moving >= 0.25, (f"{video.path}: the mouth barely moves (mean abs change > 5 levels in "
                            f"{moving:.0%} of the frames, need 25%)")
    return frames


@register("face_parsing", timeout=300)
def _check_face_parsing(run: WorkflowRun) -> None:
    (preview,) = run.files(node_id="4", suffix=".png", folder_type="output")
    assert_parsing_preview(preview.path, size=(512, 512))  # crop_size 512
    (mask_png,) = run.files(node_id="7", suffix=".png", folder_type="output")
    mask = assert_png(mask_png.path, size=(400, 400), min_std=1.0)  # frame space, portrait size
    assert np.array_equal(mask[..., 0], mask[..., 1]), f"{mask_png.path}: a mask image is grey"
    on = mask[..., 0] > 127
    assert 0.0005 <= on.mean() <= 0.05, f"{mask_png.path}: lips+mouth cover {on.mean():.2%} of the frame"
    ys, xs = np.nonzero(on)
    cy, cx = ys.mean(), xs.mean()
    rows, cols = MOUTH_BOX
    assert rows.start <= cy < rows.stop and cols.start <= cx < cols.stop, (
        f"{mask_png.path}: the lips+mouth mask is centred at (x {cx:.0f}, y {cy:.0f}), not on the "
        f"portrait's mouth (x {cols.start}-{cols.stop}, y {rows.start}-{rows.stop})")


@register("talk_portrait", timeout=600)
def _check_talk_portrait(run: WorkflowRun) -> None:
    frames = assert_talking_portrait(run)
    portrait = load_rgb(run.input_dir / "portrait.png")
    base_n, base_sat, base_hue = lip_red_stats(portrait)
    n, sat, hue = lip_red_stats(frames[0])
    # No edit in this graph: the lips keep the portrait's colour.
    assert abs(hue - base_hue) < 4.0 and abs(sat - base_sat) < 0.05, (
        f"lip colour changed without an edit: hue {base_hue:.1f} -> {hue:.1f}, "
        f"saturation {base_sat:.3f} -> {sat:.3f}")


@register("lip_colour_edit", timeout=600)
def _check_lip_colour_edit(run: WorkflowRun) -> None:
    frames = assert_talking_portrait(run)
    portrait = load_rgb(run.input_dir / "portrait.png")
    base_n, base_sat, base_hue = lip_red_stats(portrait)
    assert base_n >= 50, "MOUTH_BOX no longer holds the lips of examples/portrait.png; re-measure it"
    # reference_face.png is the portrait with hue -16 degrees and saturation x1.5: the swapped
    # lips must move that way, in every sampled frame.
    for i in range(0, len(frames), max(1, len(frames) // 6)):
        n, sat, hue = lip_red_stats(frames[i])
        assert n > 0 and hue <= base_hue - 4.0 and sat >= base_sat + 0.03, (
            f"frame {i}: lips not recoloured toward the reference (hue {base_hue:.1f} -> {hue:.1f}, "
            f"need <= {base_hue - 4:.1f}; saturation {base_sat:.3f} -> {sat:.3f}, need >= "
            f"{base_sat + 0.03:.3f}; {n} lip-red pixels)")


@register("dub_video", timeout=600)
def _check_dub_video(run: WorkflowRun) -> None:
    assert_dubbed_video(run)


@register("dub_long_video", timeout=600)
def _check_dub_long_video(run: WorkflowRun) -> None:
    # Same result as dub_video, made file to file (VIDEO in, VIDEO out) instead of through IMAGE.
    assert_dubbed_video(run)


def assert_dubbed_video(run: WorkflowRun) -> None:
    """The SaveVideo output of examples/video.mp4 dubbed with speech.wav at the video's 25 fps."""
    (video,) = run.files(class_type="SaveVideo", suffix=".mp4", folder_type="output")
    seconds = audio_seconds(run.input_dir / "speech.wav")
    source = read_video_frames(run.input_dir / "video.mp4").astype(np.int16)
    assert_video(video.path, frames=expected_frame_count(run.input_dir / "speech.wav", 25.0),
                 size=(source.shape[2], source.shape[1]), fps=25.0, audio=True,
                 min_audio_seconds=0.95 * seconds)
    frames = read_video_frames(video.path).astype(np.int16)
    # The speech is longer than the video: every output frame is one of the video's frames (same
    # pose, found below the face), with a different mouth.
    matched, mouth_changes = [], []
    for i in range(0, len(frames), 3):
        below = np.abs(source[(slice(None), *BELOW_FACE)] - frames[i][BELOW_FACE]).mean(axis=(1, 2, 3))
        j = int(below.argmin())
        assert below[j] < 4.5, (f"output frame {i} matches no frame of video.mp4 below the face "
                                f"(best: frame {j}, mean abs difference {below[j]:.1f})")
        matched.append(j)
        mouth_changes.append(float(np.abs(frames[i][MOUTH_BOX] - source[j][MOUTH_BOX]).mean()))
    assert matched[0] == 0, f"the dubbed video starts at frame {matched[0]} of the source, not 0"
    assert len(set(matched)) >= 10, f"the output follows too few source frames: {sorted(set(matched))}"
    assert np.mean(mouth_changes) > 4.0, (f"the mouth is not re-animated (mean abs difference to the "
                                          f"source frame {np.mean(mouth_changes):.1f} levels)")


def write_random_bundles(server: ComfyUIServer, resolution: int = 64) -> None:
    """The tiny random-init learned bundles in the server's models/segtalker/, written by the CLI
    (``python -m segtalker_core random-bundle``), as a user following the README would."""
    out = server.models_dir / "segtalker"
    proc = subprocess.run(
        [sys.executable, "-m", "segtalker_core", "random-bundle", str(out), "--resolution", str(resolution)],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"random-bundle failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    _assert_loaders_list_only_their_files(server)


# The loader that must list each learned file the checkers put in models/segtalker/ (None: none).
LOADER_OF_FILE = {
    "tsg_random_64.safetensors": "SegTalkerLoadTSG",
    "encoder_random_64.safetensors": "SegTalkerLoadEncoder",
    "generator_random_64.safetensors": "SegTalkerLoadGenerator",
    "syncnet_random_64.safetensors": None,  # training only: no loader
    "iteration_300000_encoder.safetensors": "SegTalkerLoadEncoder",
    "iteration_300000_generator.safetensors": "SegTalkerLoadGenerator",
}
LEARNED_LOADERS = ("SegTalkerLoadTSG", "SegTalkerLoadEncoder", "SegTalkerLoadGenerator")


def _combo_options(info: dict, name: str) -> list:
    spec = info["input"]["required"][name]
    if isinstance(spec[0], list):  # V1 form: the options are the type
        return list(spec[0])
    return list((spec[1] if len(spec) > 1 else {}).get("options", []))


def _assert_loaders_list_only_their_files(server: ComfyUIServer) -> None:
    """Each learned loader lists exactly its component's files of models/segtalker/ (read from the
    headers), the parser loader none of them."""
    present = sorted(p.name for p in (server.models_dir / "segtalker").iterdir())
    unknown = [name for name in present if name not in LOADER_OF_FILE]
    assert not unknown, f"models/segtalker holds files no checker expects: {unknown}"
    info = server.object_info()
    for node_id in LEARNED_LOADERS:
        options = sorted(_combo_options(info[node_id], "model"))
        expected = sorted(f"segtalker/{n}" for n in present if LOADER_OF_FILE[n] == node_id)
        assert options == expected, f"{node_id} lists {options}, expected {expected}"
    parser_options = _combo_options(info["SegTalkerLoadParser"], "parser")
    assert not [o for o in parser_options if o.startswith("segtalker/")], parser_options


@register("learned_random", timeout=600, prepare=write_random_bundles)
def _check_learned_random(run: WorkflowRun) -> None:
    # Random weights draw no face: check the plumbing of the learned chain (frame count and size,
    # the speech as audio, frames pasted into the portrait) but not what the face looks like.
    (video,) = run.files(class_type="SaveVideo", suffix=".mp4", folder_type="output")
    portrait = load_rgb(run.input_dir / "portrait.png").astype(np.int16)
    seconds = audio_seconds(run.input_dir / "speech.wav")
    assert_video(video.path, frames=expected_frame_count(run.input_dir / "speech.wav", 25.0),
                 size=(portrait.shape[1], portrait.shape[0]), fps=25.0, audio=True,
                 min_audio_seconds=0.95 * seconds)
    frames = read_video_frames(video.path).astype(np.int16)
    below = np.abs(frames[(slice(None), *BELOW_FACE)] - portrait[BELOW_FACE]).mean(axis=(1, 2, 3))
    assert below.max() < 4.0, (f"{video.path}: the picture below the face is not the portrait's "
                               f"(mean abs difference up to {below.max():.1f} levels)")


# --------------------------------------------------------------------------- learned_e4s

# E4S's RGI checkpoint as its trainer saves it, with random values, at a size that fits CI: the
# encoder at its full widths (IR-SE-50, E4S's exact names and shapes, 134M values), the generator
# at 64 px with K=4 mask-guided W+ rows (E4S's out_size / remaining_layer_idx options; the
# converter reads both from the shapes). The 1024 file (K=13) is checked name by name and shape
# by shape in tests/test_convert_e4s.py; its generator costs 20-30 s a frame on the CI CPU.
E4S_TEST_SIZE = 64
E4S_TEST_K = 4
E4S_FILES = {"segtalker": ("iteration_300000_encoder.safetensors", "iteration_300000_generator.safetensors"),
             "face_parsing": ("79999_iter.pth",)}


def _random_e4s_checkpoint(path: Path, size: int, k: int) -> None:
    """``path``: a dict as E4S's coach saves it (``state_dict`` with DataParallel's ``module.``
    prefix, ``opts``, ``latent_avg``) with random values in ``Net3``'s layout."""
    import torch

    from segtalker_core.conversion import e4s
    from segtalker_core.models.layers import fir_kernel

    arch = e4s.E4SArchitecture(size=size, k=k)
    rng = torch.Generator().manual_seed(0)
    state_dict = {}
    for name, shape in e4s.net3_layout(arch).items():
        # The FIR kernels are fixed buffers (checked by the converter); small weights keep the
        # random 50-layer encoder finite.
        value = fir_kernel((1, 3, 3, 1)) * 4 if name.endswith(".kernel") else torch.randn(shape, generator=rng) * 0.05
        state_dict["module." + name] = value
    torch.save({"state_dict": state_dict,
                "opts": {"num_seg_cls": arch.num_regions, "remaining_layer_idx": k, "out_size": size},
                "latent_avg": torch.randn(arch.w_dim, generator=rng).repeat(arch.n_latent, 1)}, path)


def _random_bisenet_checkpoint(path: Path) -> None:
    """A face parser in the exact layout of 79999_iter.pth (random weights, BatchNorm statistics
    that are not the identity)."""
    import torch

    from segtalker_core.parsing.bisenet import build_bisenet

    state_dict = build_bisenet().state_dict()
    rng = torch.Generator().manual_seed(1)
    for name, tensor in state_dict.items():
        if name.endswith("running_mean"):
            tensor.copy_(torch.randn(tensor.shape, generator=rng) * 0.1)
        elif name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=rng) + 0.5)
    torch.save(state_dict, path)


_E4S_CACHE: list[Path] = []  # the session's one copy (in the first server's work dir)


def e4s_model_files(cache: Path) -> Path:
    """``cache/models`` with ``segtalker/iteration_300000_{encoder,generator}.safetensors``,
    converted from a random E4S-layout ``iteration_300000.pt`` by ``python -m segtalker_core
    convert`` (as the README tells a user), and ``face_parsing/79999_iter.pth``. Made once per
    test session (both servers share it)."""
    models = cache / "models"
    if all((models / folder / name).is_file() for folder, names in E4S_FILES.items() for name in names):
        return models
    for folder in E4S_FILES:
        (models / folder).mkdir(parents=True, exist_ok=True)
    source = cache / "iteration_300000.pt"
    _random_e4s_checkpoint(source, E4S_TEST_SIZE, E4S_TEST_K)
    proc = subprocess.run(
        [sys.executable, "-m", "segtalker_core", "convert", str(source), "-o", str(models / "segtalker")],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"convert failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
    source.unlink()  # 0.6 GB: only the converted bundles are needed
    _random_bisenet_checkpoint(models / "face_parsing" / "79999_iter.pth")
    return models


def put_e4s_files(server: ComfyUIServer) -> None:
    """The converted random E4S bundles and the BiSeNet file in the server's models folders
    (hard links to the session's one copy), where the README tells a user to put them."""
    import os
    import shutil

    if not _E4S_CACHE:
        _E4S_CACHE.append(server.work_dir / "e4s-random")
    models = e4s_model_files(_E4S_CACHE[0])
    for folder, names in E4S_FILES.items():
        (server.models_dir / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            target = server.models_dir / folder / name
            if not target.exists():
                try:
                    os.link(models / folder / name, target)
                except OSError:  # another file system
                    shutil.copyfile(models / folder / name, target)
    _assert_loaders_list_only_their_files(server)
    parsers = _combo_options(server.object_info()["SegTalkerLoadParser"], "parser")
    assert "face_parsing/79999_iter.pth" in parsers, f"the parser loader lists {parsers}"


def trimmed_frame_count(run: WorkflowRun, speech: str, fps: float) -> int:
    """Frames for the speech as the workflow's TrimAudioDuration node cuts it (start 0), by
    ComfyUI's rounding of the cut and the pack's frame-count rule."""
    import soundfile
    from fractions import Fraction

    from segtalker_core.audio.timing import frame_count

    (trim_id,) = run.node_ids("TrimAudioDuration")
    trim = run.api[trim_id]["inputs"]
    assert float(trim["start_index"]) == 0.0, trim
    info = soundfile.info(str(run.input_dir / speech))
    samples = min(info.frames, int(round(float(trim["duration"]) * info.samplerate)))
    return frame_count(Fraction(samples, info.samplerate), fps)


@register("learned_e4s", timeout=600, prepare=put_e4s_files)
def _check_learned_e4s(run: WorkflowRun) -> None:
    # Random E4S weights draw no face: the chain's plumbing (every stage ran on the converted
    # files, one frame per 1/fps of the cut speech at the portrait's size, the speech as audio, the
    # picture below the face the portrait's), not what the face looks like.
    (video,) = run.files(class_type="SaveVideo", suffix=".mp4", folder_type="output")
    portrait = load_rgb(run.input_dir / "portrait.png").astype(np.int16)
    frames = trimmed_frame_count(run, "speech.wav", 25.0)
    assert frames >= 2, f"the workflow's speech cut gives {frames} frame(s); a few are needed"
    assert_video(video.path, frames=frames, size=(portrait.shape[1], portrait.shape[0]), fps=25.0,
                 audio=True, min_audio_seconds=0.5 * frames / 25.0)
    out = read_video_frames(video.path).astype(np.int16)
    # Looser than for the built-in parser: a random BiSeNet's regions reach the neck, and the
    # multi-band blend fades out 24 px past the mask (measured: up to 4.5 levels).
    below = np.abs(out[(slice(None), *BELOW_FACE)] - portrait[BELOW_FACE]).mean(axis=(1, 2, 3))
    assert below.max() < 8.0, (f"{video.path}: the picture below the face is not the portrait's "
                               f"(mean abs difference up to {below.max():.1f} levels)")
    face = np.abs(out[(slice(None), *MOUTH_BOX)] - portrait[MOUTH_BOX]).mean()
    assert face > 4.0, f"{video.path}: the face is the portrait's, not the generator's ({face:.1f} levels)"


@register("fuller_hair", timeout=600)
def _check_fuller_hair(run: WorkflowRun) -> None:
    frames = assert_talking_portrait(run)
    portrait = load_rgb(run.input_dir / "portrait.png").astype(np.int16)
    # The hair grew: above the mouth, a band of pixels now shows hair where the portrait had skin
    # or background, in every frame alike (the edit is one shape for the whole video).
    above = slice(0, MOUTH_BOX[0].start - 10)
    changed = np.abs(frames[:, above] - portrait[above]).max(axis=-1) > 24
    counts = changed.sum(axis=(1, 2))
    assert counts.min() >= 200, (f"the hair edit shows in too few pixels above the mouth "
                                 f"({counts.min()} in the weakest frame, need 200)")
    steady = (changed == changed[0]).mean()
    assert steady > 0.98, f"the edited hair is not the same shape from frame to frame ({steady:.3f} agree)"


def assert_only_rejection(server: "ComfyUIServer", api: dict, rejection: Rejection) -> None:
    """``POST /prompt`` refuses ``api`` with one node error: ``rejection``'s model file is absent."""
    import urllib.error

    try:
        reply = server.post_json("/prompt", {"prompt": api, "client_id": server.client_id})
    except urllib.error.HTTPError as exc:
        assert exc.code == 400, f"/prompt answered HTTP {exc.code}"
        body = json.loads(exc.read().decode(errors="replace"))
    else:
        raise AssertionError(f"/prompt accepted a workflow whose {rejection.class_type} file cannot be "
                             f"here (prompt {reply.get('prompt_id')}); expected it to be refused")
    errors = body.get("node_errors") or {}
    assert len(errors) == 1, f"expected one refused node ({rejection.class_type}), got {json.dumps(errors)[:2000]}"
    (node_id, entry), = errors.items()
    assert api[node_id]["class_type"] == rejection.class_type, entry
    kinds = {(e.get("type"), (e.get("extra_info") or {}).get("input_name")) for e in entry.get("errors", [])}
    assert kinds == {("value_not_in_list", rejection.input)}, (
        f"{rejection.class_type} was refused for {sorted(kinds)}, expected only its missing {rejection.input!r}")


# Segmentation to Mask feeding a Stable Diffusion inpaint: no test machine has the checkpoint.
expect_rejection("lips_inpaint", Rejection("CheckpointLoaderSimple", "ckpt_name"))
