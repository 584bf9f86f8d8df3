"""Small video clips for tests, written with PyAV: silent, with sound, variable frame rate,
rotated (display matrix), at any frame rate, noise, cut short."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
EXAMPLE_VIDEO = REPO_DIR / "examples" / "video.mp4"  # 400x400, 25 fps, 50 frames, no audio
SPEECH = REPO_DIR / "examples" / "speech.wav"


def example_frames(n: int) -> np.ndarray:
    """The first ``n`` frames of the example video (looped when it is shorter)."""
    from segtalker_core.video_io import read_video

    frames, _ = read_video(EXAMPLE_VIDEO)
    return frames[np.arange(n) % len(frames)]


def speech_clip(path: Path, seconds: float) -> Path:
    """The first ``seconds`` of the example speech as a wav."""
    import soundfile as sf

    wave, rate = sf.read(str(SPEECH), dtype="float32")
    sf.write(str(path), wave[: int(seconds * rate)], rate)
    return path


def write_clip(path: Path, frames: np.ndarray, fps: float = 25.0, audio: Path | None = None) -> Path:
    """A constant-rate H.264 mp4 of ``frames``, with ``audio``'s sound (None: no audio stream)."""
    from segtalker_core.audio.io import read_audio_file
    from segtalker_core.video_io import write_mp4

    wave, rate = read_audio_file(audio) if audio is not None else (None, None)
    write_mp4(path, frames, fps, audio=wave, sample_rate=rate)
    return path


def write_vfr_clip(path: Path, frames: np.ndarray, intervals_ms: list[int]) -> Path:
    """An mp4 whose frames are spaced ``intervals_ms[i % len]`` milliseconds apart (no audio)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        pts = 0
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = pts
            frame.time_base = Fraction(1, 1000)
            pts += intervals_ms[i % len(intervals_ms)]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_raw_clip(path: Path, frames: np.ndarray, rate: Fraction | int = 25, codec: str = "libx264",
                   rotation: tuple[int, bool, bool] | None = None) -> Path:
    """A clip written by PyAV directly, bypassing the pack's writer and its checks: any frame rate
    (240 fps, 1/2 fps) and, with ``rotation`` = (degrees counter-clockwise, hflip, vflip), a
    display matrix as phones write one (the stored frames are ``frames``; players turn them)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "1"}  # near lossless: tests compare pixels
        if rotation is not None:
            degrees, hflip, vflip = rotation
            stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def can_write_display_matrix() -> bool:
    """Whether this PyAV can write a display matrix (``set_display_rotation``, PyAV 18)."""
    import av

    return hasattr(av.video.stream.VideoStream, "set_display_rotation")


def turned(frame: np.ndarray, degrees: int, hflip: bool = False, vflip: bool = False) -> np.ndarray:
    """``frame`` as a player shows it under ``write_raw_clip``'s ``rotation``: turned
    ``degrees`` counter-clockwise, then mirrored (PyAV's documented meaning)."""
    out = np.rot90(frame, k=(degrees // 90) % 4)
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    return np.ascontiguousarray(out)


def noise_frames(n: int, height: int = 128, width: int = 128, seed: int = 0) -> np.ndarray:
    """Random frames: incompressible, so a few fill a small disk."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), np.uint8)


def truncated_copy(path: Path, out: Path, fraction: float) -> Path:
    """The first ``fraction`` of ``path``'s bytes, as a download or a copy cut short leaves it."""
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def partial_files(folder: Path) -> list[Path]:
    """The temporary files (``.NAME.partial-XXXX.EXT``) an unfinished write left in ``folder``."""
    from segtalker_core.atomic_files import PARTIAL_MARK

    return sorted(p for p in folder.iterdir() if PARTIAL_MARK in p.name)


def encode_audio(path: Path, channels: np.ndarray, rate: int, codec: str = "aac",
                 container: str | None = None, options: dict | None = None, block: int = 1152) -> Path:
    """Encode float ``channels`` ``[C, T]`` (mono or stereo) with PyAV into ``path`` (its format
    from the name unless ``container`` says), frames of ``block`` samples with exact pts, as the
    pack's writer muxes its sound track."""
    import av

    channels = np.atleast_2d(np.asarray(channels, np.float32))
    layout = "mono" if channels.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        native = stream.codec_context.format.name if stream.codec_context.format else "fltp"
        for start in range(0, channels.shape[1], block):
            chunk = np.ascontiguousarray(channels[:, start:start + block])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            if native != "fltp":
                frame = av.AudioResampler(format=native, layout=layout, rate=rate).resample(frame)[0]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
