"""What each example workflow must produce when a real ComfyUI runs it.

``tests/test_comfyui_server.py`` runs every ``workflows/<name>.api.json`` and then calls the checker
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

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from comfyui_host import OutputFile


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


@dataclass
class Checker:
    name: str
    check: Callable[[WorkflowRun], None]
    timeout: float = 300.0


CHECKERS: dict[str, Checker] = {}


def register(name: str, *, timeout: float = 300.0):
    """Decorator: ``check(run)`` asserts what workflow ``name`` must have produced.
    ``timeout`` bounds the run on the CI machine (2 CPU cores, no GPU)."""
    def deco(fn: Callable[[WorkflowRun], None]):
        if name in CHECKERS:
            raise ValueError(f"two checkers registered for workflow {name!r}")
        CHECKERS[name] = Checker(name, fn, timeout)
        return fn
    return deco


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


def assert_parsing_preview(path: Path, regions=("skin", "hair", "eyes", "nose", "lips"),
                           min_fraction: float = 0.002, tolerance: int = 0,
                           size: tuple[int, int] | None = None) -> dict[str, float]:
    """A parsing preview PNG: not blank, and each of ``regions`` painted in its palette colour on at
    least ``min_fraction`` of the pixels (tolerance > 0 for blended overlays)."""
    img = assert_png(path, size=size)
    cover = palette_coverage(img, tolerance)
    missing = {r: round(cover[r], 5) for r in regions if cover[r] < min_fraction}
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
# One per workflows/<name>.api.json.
